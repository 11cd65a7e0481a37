"""Rule-based rewards (the reward seam) and their weighted sum.

Every reward function has the signature ``f(completions, questions) -> list[float]`` where
``questions[i]`` is the :class:`~r1aqa_pl.task.question.Question` that ``completions[i]`` answers
(the caller repeats each question G times, so the lists are aligned 1:1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from r1aqa_pl.benchmarks.mmau import is_correct
from r1aqa_pl.registry import Registry
from r1aqa_pl.task import answer_format
from r1aqa_pl.task.question import Question


def _aligned(completions: Sequence[str], questions: Sequence[Question]) -> None:
    if len(completions) != len(questions):
        raise ValueError(f"{len(completions)} completions but {len(questions)} questions; repeat each question G times")


def accuracy(completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
    """1.0 iff the stripped text inside the first ``<answer>...</answer>`` equals ``question.answer``.

    Exact, case-sensitive string match; no ``<answer>`` tag gives 0. (R1-AQA's code also tried
    math_verify and fell back to the whole completion when the tag was missing; the paper's
    rule, used here, is the tag-only exact match.)
    """
    _aligned(completions, questions)
    inside = [answer_format.tagged(c) for c in completions]
    return [1.0 if a is not None and a.strip() == q.answer else 0.0 for a, q in zip(inside, questions)]


def format(completions: Sequence[str], questions: Sequence[Question]) -> list[float]:  # noqa: A001
    """1.0 iff ``re.fullmatch(r"<answer>.*?</answer>", completion, re.DOTALL)``, as R1-AQA / TRL.

    The completion is *not* stripped: any text or whitespace outside the tags gives 0.
    """
    _aligned(completions, questions)
    return [1.0 if answer_format.is_answer_format(c) else 0.0 for c in completions]


def think_format(completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
    """1.0 iff ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", completion, re.DOTALL)``."""
    _aligned(completions, questions)
    return [1.0 if answer_format.is_think_format(c) else 0.0 for c in completions]


def mmau_accuracy(completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
    """1.0 iff the official MMAU rule accepts the extracted answer (see :mod:`r1aqa_pl.benchmarks.mmau`)."""
    _aligned(completions, questions)
    return [1.0 if is_correct(answer_format.extract_answer(c), q.answer, q.choices) else 0.0
            for c, q in zip(completions, questions)]


def _groups(questions: Sequence[Question]) -> list[range]:
    """Runs of consecutive rows answering the same question: the caller's groups of G."""
    runs, start = [], 0
    for i in range(1, len(questions) + 1):
        if i == len(questions) or questions[i] != questions[start]:
            runs.append(range(start, i))
            start = i
    return runs


def majority_answer(answers: Sequence[str | None], choices: Sequence[str] = ()) -> str | None:
    """The group's most common answer, or None when there is no majority.

    Only non-empty answers vote (no ``<answer>`` tag or an empty one abstains), and with ``choices``
    only answers that are one of them. A tie for the most votes is no majority: a pseudo-label
    picked by chance would teach noise (test-time RL's reward comes from agreement alone).
    """
    votes = [a for a in answers if a and (not choices or a in choices)]
    if not votes:
        return None
    top = Counter(votes).most_common(2)
    return None if len(top) == 2 and top[0][1] == top[1][1] else top[0][0]


def majority_vote(completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
    """Test-time RL (TTRL / AQA-TTRL): 1.0 iff the completion's answer is its group's majority answer.

    No label is read: ``question.answer`` is ignored. A group is a run of consecutive completions
    answering the same question (the caller repeats each question G times). A group without a
    majority (all abstain, or a tie; see :func:`majority_answer`) gets 0 everywhere.
    """
    _aligned(completions, questions)
    inside = [answer_format.tagged(c) for c in completions]
    answers = [a.strip() if a is not None else None for a in inside]
    out = [0.0] * len(completions)
    for rows in _groups(questions):
        top = majority_answer([answers[i] for i in rows], questions[rows[0]].choices)
        for i in rows:
            out[i] = 1.0 if top is not None and answers[i] == top else 0.0
    return out


class Reward:
    """A reward: ``score(completions, questions) -> list[float]``, one per completion, times ``weight`` in the sum.

    ``questions[i]`` is the :class:`~r1aqa_pl.task.question.Question` that ``completions[i]`` answers (each
    question repeated G times, consecutively). Its name in logs and in ``selection.metric`` is the name it
    was registered under, else the class's ``name`` attribute, else the class name. A user's reward is a
    subclass in the user's own module, given by ``class_path`` (with ``init_args``) in the config.
    """

    name: str | None = None

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    @property
    def label(self) -> str:
        return self.name or vars(type(self)).get("registered_as") or type(self).__name__  # not a base class's name

    def score(self, completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
        raise NotImplementedError


REWARDS: Registry[Reward] = Registry("reward", Reward)


@REWARDS.register("accuracy")
class Accuracy(Reward):
    """:func:`accuracy`, the paper's exact match inside ``<answer>``."""

    score = staticmethod(accuracy)


@REWARDS.register("format")
class Format(Reward):
    """:func:`format`: the whole completion is ``<answer>...</answer>``."""

    score = staticmethod(format)


@REWARDS.register("think_format")
class ThinkFormat(Reward):
    """:func:`think_format`: ``<think>...</think>`` then ``<answer>...</answer>``."""

    score = staticmethod(think_format)


@REWARDS.register("mmau_accuracy")
class MMAUAccuracy(Reward):
    """:func:`mmau_accuracy`: the official MMAU rule on the extracted answer."""

    score = staticmethod(mmau_accuracy)


@REWARDS.register("majority_vote")
class MajorityVote(Reward):
    """:func:`majority_vote`: test-time RL's agreement with the group's majority answer (no label read)."""

    score = staticmethod(majority_vote)


def think_budget(pass_rate: float, min_words: float, max_words: float) -> float:
    """B = min_words + (max_words - min_words) * (1 - p): the group's pass rate p decides how long it may think
    (a question the group always answers right gets ``min_words``, one it never does ``max_words``)."""
    return min_words + (max_words - min_words) * (1.0 - pass_rate)


def think_length_penalty(words: float, budget: float, slack: float = 1.0) -> float:
    """R = -min(1, max(0, words - B) / (slack * B)): 0 within the budget B, falling linearly to -1 at
    (1 + slack) * B words and beyond."""
    return -min(1.0, max(0.0, words - budget) / (slack * budget))


PASS_RULES = {"accuracy": accuracy, "mmau_accuracy": mmau_accuracy, "majority_vote": majority_vote}


@REWARDS.register("think_length")
class ThinkLength(Reward):
    """Length-aware reasoning: a budget on the think part's words that grows with the question's difficulty.

    For completion i of group g (one prompt's G completions) with l_i words of thinking
    (:func:`~r1aqa_pl.task.answer_format.think_words`) and the group's pass rate p_g (the fraction of its G
    completions that ``rule`` accepts):

        B_g = min_words + (max_words - min_words) * (1 - p_g)
        R_i = -min(1, max(0, l_i - B_g) / (slack * B_g))

    A penalty in [-1, 0] rather than a bonus, so that a short wrong answer earns nothing: short adaptive thinking
    (Ke-Omni-R keeps it under 50 words) where the group already answers right, room where it does not (a length
    reward adapted to difficulty, arXiv 2509.21960). Composes with the others by its ``weight``; a completion with
    no ``<think>`` part has 0 words (the think-format reward judges the format).

    Args:
        weight: its weight in the total.
        min_words: the budget of a question every completion of the group answers right (p_g = 1).
        max_words: the budget of a question none does (p_g = 0).
        slack: the penalty reaches -1 at (1 + slack) * B_g words.
        rule: what counts as right for p_g: accuracy, mmau_accuracy or majority_vote (no label read).
    """

    def __init__(self, weight: float = 1.0, min_words: float = 50, max_words: float = 150, slack: float = 1.0,
                 rule: str = "accuracy"):
        super().__init__(weight)
        if not 0 < min_words <= max_words:
            raise ValueError(f"think_length: need 0 < min_words <= max_words, got {min_words}, {max_words}")
        if slack <= 0:
            raise ValueError(f"think_length: slack must be > 0, got {slack}")
        if rule not in PASS_RULES:
            raise ValueError(f"think_length rule {rule!r}: known {', '.join(PASS_RULES)}")
        self.min_words, self.max_words, self.slack, self.rule = min_words, max_words, slack, rule

    def budgets(self, completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
        """B_g of each completion's group."""
        right = PASS_RULES[self.rule](completions, questions)
        out = [0.0] * len(completions)
        for rows in _groups(questions):
            b = think_budget(sum(right[i] for i in rows) / len(rows), self.min_words, self.max_words)
            for i in rows:
                out[i] = b
        return out

    def score(self, completions: Sequence[str], questions: Sequence[Question]) -> list[float]:
        _aligned(completions, questions)
        return [think_length_penalty(answer_format.think_words(c), b, self.slack)
                for c, b in zip(completions, self.budgets(completions, questions))]


RewardName = REWARDS.literal()


def build_rewards(specs: Sequence[str | dict | Reward], think: bool = False) -> list[Reward]:
    """Reward objects from names, class paths or instances; with ``think`` the format reward checks the think
    format (at the same weight). Two rewards with one name are refused (their logs would collide)."""
    out = [REWARDS.build(s) for s in specs]
    if think:
        out = [ThinkFormat(r.weight) if type(r) is Format else r for r in out]
    names = [r.label for r in out]
    if len(set(names)) != len(names):
        raise ValueError(f"rewards {names}: each reward must have its own name (set ``name`` on a subclass)")
    if not out:
        raise ValueError("rewards: at least one reward is needed")
    return out


def score_completions(
    completions: Sequence[str], questions: Sequence[Question], rewards: Sequence[Reward]
) -> tuple[Tensor, dict[str, Tensor]]:
    """total_i = sum_f f.weight * f.score(completions, questions)_i.

    Returns (total [N], {name: unweighted rewards [N]}) as float32 tensors.
    """
    _aligned(completions, questions)
    per_function = {}
    for r in rewards:
        values = r.score(completions, questions)
        if len(values) != len(completions):
            raise ValueError(f"reward {r.label!r} returned {len(values)} values for {len(completions)} completions")
        per_function[r.label] = torch.tensor(values, dtype=torch.float32)
    total = torch.zeros(len(completions), dtype=torch.float32)
    for r in rewards:
        total = total + r.weight * per_function[r.label]
    return total, per_function
