"""The answer contract, stated once: the tags a completion answers in, how an answer is read back,
where evaluation may stop generating, and what the supervised baseline is trained to write.

Prompts ask for it (:mod:`r1aqa_pl.task.prompts`), rewards check it (:mod:`r1aqa_pl.algo.rewards`), benchmarks
extract from it, the rollout engine stops at it, the tiny tokenizer keeps its tags whole.
"""

from __future__ import annotations

import re

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TAGS = (ANSWER_OPEN, ANSWER_CLOSE, THINK_OPEN, THINK_CLOSE)
# evaluation stops a row once its completion contains this: nothing after it is ever read
STOP = ANSWER_CLOSE
# the supervised baseline's target ({answer}: the right choice string; {choices}, {question} and {options}, the
# choices joined by spaces, may be used too)
SFT_TARGET = ANSWER_OPEN + "{answer}" + ANSWER_CLOSE
# a warm start that thinks before it answers, at one of three lengths drawn per question (the options; the question;
# both: 2 to 12 words on the synthetic set), so that a think-mode run samples thoughts of several lengths within one
# group, which a length reward's group-relative advantage can then tell apart
THINK_SFT_TARGETS = tuple(THINK_OPEN + thought + THINK_CLOSE + SFT_TARGET
                          for thought in ("{options}", "{question}", "{question} {options}"))

_ANSWER_FORMAT = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_THINK_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


def tagged(text: str, tag: str = "answer") -> str | None:
    """The text inside the first ``<tag>…</tag>`` of ``text`` (unstripped), None if there is none."""
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return m.group(1) if m else None


def think_words(text: str) -> int:
    """Words of the thinking: inside the first ``<think>…</think>``, or after a ``<think>`` never closed (a completion
    cut at the length limit mid-thought counts in full); 0 without ``<think>``."""
    inside = tagged(text, "think")
    if inside is None:
        i = text.find(THINK_OPEN)
        inside = "" if i < 0 else text[i + len(THINK_OPEN):]
    return len(inside.split())


def extract_answer(output: str) -> str:
    """What a benchmark scores: the text inside the first ``<answer>…</answer>``, else the whole
    output, stripped (R1-AQA's evaluation)."""
    inside = tagged(output)
    return (output if inside is None else inside).strip()


def is_answer_format(completion: str) -> bool:
    """The whole completion is ``<answer>…</answer>``: nothing outside the tags, not even whitespace."""
    return _ANSWER_FORMAT.fullmatch(completion) is not None


def is_think_format(completion: str) -> bool:
    """The whole completion is ``<think>…</think>`` then ``<answer>…</answer>``."""
    return _THINK_FORMAT.fullmatch(completion) is not None


def cut_at_stop(text: str) -> str:
    """``text`` up to and including the first :data:`STOP` (a row may run a token or two past it)."""
    i = text.find(STOP)
    return text if i < 0 else text[: i + len(STOP)]
