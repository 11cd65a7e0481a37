"""Reward functions and their weighted sum."""

import pytest
import torch

from r1aqa_pl.algo.rewards import (
    REWARDS,
    Format,
    accuracy,
    build_rewards,
    format,
    majority_answer,
    majority_vote,
    score_completions,
    think_format,
)
from r1aqa_pl.task.question import Question


def q(answer="Sailboat set sail", choices=("motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car")):
    return Question(
        id="1", audio_path=None, question="What happened in the audio?", choices=list(choices), answer=answer
    )


def test_accuracy_exact_match_inside_first_answer_tag():
    cases = {
        "<answer>Sailboat set sail</answer>": 1.0,
        "<answer>  Sailboat set sail \n</answer>": 1.0,  # stripped inside the tags
        "<think>sails flap</think> <answer>Sailboat set sail</answer> trailing": 1.0,  # tags anywhere
        "<answer>\nSailboat set sail\n</answer>": 1.0,  # multi-line content
        "<answer>motorboat</answer><answer>Sailboat set sail</answer>": 0.0,  # only the first counts
        "<answer>Sailboat set sail</answer><answer>motorboat</answer>": 1.0,
        "Sailboat set sail": 0.0,  # no tags
        "<answer>Sailboat set sail": 0.0,  # unclosed
        "<answer>sailboat set sail</answer>": 0.0,  # case matters
        "<answer>Sailboat  set sail</answer>": 0.0,  # inner whitespace matters
        "<answer>Sailboat set sail.</answer>": 0.0,
        "": 0.0,
    }
    assert accuracy(list(cases), [q()] * len(cases)) == list(cases.values())


def test_format_is_fullmatch_on_the_unstripped_completion():
    cases = {
        "<answer>motorboat</answer>": 1.0,
        "<answer>\nmulti\nline\n</answer>": 1.0,  # DOTALL
        "<answer></answer>": 1.0,
        "<answer>a</answer><answer>b</answer>": 1.0,  # .*? still lets fullmatch span both
        " <answer>motorboat</answer>": 0.0,  # not stripped
        "<answer>motorboat</answer>\n": 0.0,
        "The answer is <answer>motorboat</answer>": 0.0,
        "<think>x</think><answer>motorboat</answer>": 0.0,
        "motorboat": 0.0,
    }
    assert format(list(cases), [q()] * len(cases)) == list(cases.values())


def test_think_format():
    cases = {
        "<think>it sounds like sails</think><answer>Sailboat set sail</answer>": 1.0,
        "<think>\nline one\nline two\n</think>\n\n <answer>x</answer>": 1.0,  # \s* between, DOTALL
        "<answer>x</answer>": 0.0,  # no think
        "<think>x</think> so <answer>y</answer>": 0.0,  # text between
        "<answer>y</answer><think>x</think>": 0.0,  # wrong order
        "<think>x</think><answer>y</answer> ": 0.0,  # trailing space
    }
    assert think_format(list(cases), [q()] * len(cases)) == list(cases.values())


def weighted(**weights):
    return build_rewards([{"class_path": name, "init_args": {"weight": w}} for name, w in weights.items()])


def test_registry_and_unknown_names():
    assert set(REWARDS) == {"accuracy", "format", "think_format", "mmau_accuracy", "majority_vote", "think_length"}
    assert [(r.label, r.weight) for r in weighted(accuracy=1.0, format=0.5)] == [("accuracy", 1.0), ("format", 0.5)]
    with pytest.raises(ValueError, match=r"unknown reward 'acc'; known: accuracy, format, think_format"):
        build_rewards(["acc", "format"])
    with pytest.raises(ValueError, match="each reward must have its own name"):
        build_rewards(["format", {"class_path": "format", "init_args": {"weight": 2.0}}])
    # think: the format reward checks the think format, at its weight
    assert [(r.label, r.weight) for r in build_rewards([Format(0.5)], think=True)] == [("think_format", 0.5)]


def test_score_completions_weighted_sum():
    completions = [
        "<answer>Sailboat set sail</answer>",  # right, formatted
        "<answer>motorboat</answer>",  # wrong, formatted
        "I think <answer>Sailboat set sail</answer>",  # right, unformatted
        "no idea",  # neither
    ]
    total, per = score_completions(completions, [q()] * 4, weighted(accuracy=1.0, format=0.5))
    assert per["accuracy"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert per["format"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(total, torch.tensor([1.0 + 0.5, 0.5, 1.0, 0.0]))
    assert total.dtype == torch.float32 and set(per) == {"accuracy", "format"}


def test_questions_align_one_to_one_with_completions():
    qs = [q("motorboat"), q("motorboat"), q("Consignment car"), q("Consignment car")]  # B=2 repeated G=2
    c = ["<answer>motorboat</answer>", "<answer>Consignment car</answer>"] * 2
    assert accuracy(c, qs) == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="2 completions but 1 questions"):
        accuracy(c[:2], qs[:1])


def test_mmau_accuracy_uses_the_official_rule():
    from r1aqa_pl.algo.rewards import mmau_accuracy

    mq = q("Woman", ["Man", "Woman", "Child"])
    cases = {
        "<answer>Woman</answer>": 1.0,
        "<answer> the woman. </answer>": 1.0,  # lower-cased tokens; extra words allowed
        "It is a woman speaking.": 1.0,  # no tag: the whole output is the prediction
        "<answer>Man</answer>": 0.0,
        "<answer>man or woman</answer>": 0.0,  # a wrong choice's token
        "<answer>woman</answer> not a man": 1.0,  # only the first tag's text is judged
        "<answer></answer>": 0.0,  # empty prediction
    }
    assert mmau_accuracy(list(cases), [mq] * len(cases)) == list(cases.values())
    total, per = score_completions(list(cases), [mq] * len(cases), weighted(mmau_accuracy=2.0, format=1.0))
    assert per["mmau_accuracy"].tolist() == list(cases.values())
    assert total.tolist() == [3.0, 3.0, 2.0, 1.0, 1.0, 2.0, 1.0]


# ---- test-time RL: majority vote ----------------------------------------------------------------------


def test_majority_vote_hand_cases():
    a, b = q(), q(answer="motorboat")  # two questions (different records); their answers are never read
    b.id = "2"
    A = lambda x: f"<answer>{x}</answer>"
    group_a = [A("motorboat"), A("Yacht consignment"), A(" motorboat "), "no tags"]  # majority motorboat (2 of 3)
    group_b = [A("Consignment car"), A("motorboat"), "", A("")]  # 1-1 tie: no majority
    rewards = majority_vote(group_a + group_b, [a] * 4 + [b] * 4)
    assert rewards == [1.0, 0.0, 1.0, 0.0] + [0.0] * 4
    # answers outside the choices abstain: "boat" x2 does not beat "motorboat" x1
    assert majority_vote([A("boat"), A("boat"), A("motorboat")], [a] * 3) == [0.0, 0.0, 1.0]
    assert majority_vote(["", "<answer></answer>"], [a] * 2) == [0.0, 0.0]  # all abstain
    assert majority_vote([A("x"), A("x")], [Question("3", None, "?", [], "")] * 2) == [
        1.0,
        1.0,
    ]  # no choices: any answer votes
    assert REWARDS["majority_vote"].score is majority_vote


def test_majority_answer_ties_and_abstentions():
    assert majority_answer(["x", "y", "x"]) == "x"
    assert majority_answer(["x", "y", None, ""]) is None  # tie
    assert majority_answer([None, ""]) is None
    assert majority_answer(["x", "y", "y"], choices=["x"]) == "x"


def test_a_subclass_of_a_built_in_reward_logs_under_its_own_name():
    """A user's subclass of a registered reward is not logged under its parent's name (both could be used)."""
    from r1aqa_pl.algo.rewards import Accuracy

    class StrictAccuracy(Accuracy):
        pass

    assert [r.label for r in build_rewards(["accuracy", StrictAccuracy()])] == ["accuracy", "StrictAccuracy"]
