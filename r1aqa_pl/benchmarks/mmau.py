"""MMAU (test-mini and test): the official scoring rule as pure functions, and the benchmark object.

The rule is a few lines kept free of torch, so that the scorer that grades papers is the same
everywhere: the training-time metric, the validation callback, the offline scorer and the
``mmau_accuracy`` reward all call :func:`is_correct`.
"""

from __future__ import annotations

import re
from pathlib import Path

from r1aqa_pl.benchmarks.base import BENCHMARKS, Benchmark, Group
from r1aqa_pl.task.files import answer_choice, audio_paths, choice_list, field
from r1aqa_pl.task.question import Question

DOMAINS = ("sound", "music", "speech")
DIFFICULTIES = ("easy", "medium", "hard")
# The 27 sub-categories of MMAU test-mini: the metric's buckets when the data is not at hand.
SUB_CATEGORIES = (
    # sound
    "Acoustic Scene Reasoning", "Acoustic Source Inference", "Ambient Sound Interpretation",
    "Eco-Acoustic Knowledge", "Event-Based Sound Reasoning", "Sound-Based Event Recognition",
    "Temporal Event Reasoning",
    # music
    "Emotional Tone Interpretation", "Harmony and Chord Progressions", "Instrumentation",
    "Lyrical Reasoning", "Melodic Structure Interpretation", "Musical Genre Reasoning",
    "Musical Texture Interpretation", "Rhythm and Tempo Understanding",
    "Socio-cultural Interpretation", "Temporal Reasoning",
    # speech
    "Conversational Fact Retrieval", "Counting", "Dissonant Emotion Interpretation",
    "Emotion Flip Detection", "Emotion State summarisation", "Event-Based Knowledge Retrieval",
    "Key highlight Extraction", "Multi Speaker Role Mapping", "Phonemic Stress Pattern Analysis",
    "Phonological Sequence Decoding",
)

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters, digits, underscore), as the official scorer splits."""
    return _WORD.findall(text.lower())


def is_correct(prediction: str | None, answer: str, choices: list[str]) -> bool:
    """The MMAU rule: every answer token in the prediction and no token that only a wrong choice has.

    Choices whose token set equals the answer's (e.g. "Man" vs "man.") are not "wrong"; tokens a
    wrong choice shares with the answer ("C" in "C major" / "C minor") are allowed.
    """
    predicted = set(tokenize(prediction or ""))
    if not predicted:
        return False
    wanted = set(tokenize(answer))
    incorrect: set[str] = set()
    for choice in choices:
        tokens = set(tokenize(choice))
        if tokens != wanted:
            incorrect |= tokens - wanted
    return wanted <= predicted and predicted.isdisjoint(incorrect)


# content_digest of the official test-mini files -> their version. MMAU was revised on 2025-05-15
# (about a quarter of the questions and answers changed); R1-AQA's 64.5 % is on the earlier one.
VERSIONS = {
    "90f5910866ce7133e54fe1129425d01c65bcc4f11d7e25660b02dc1bf9a394bb": "test-mini (original, before v05.15.25)",
    "4439d45c2d942c1a98ed17e6762d5a6fa1d31a057b02c5d9f0cf956425c75545": "test-mini v05.15.25",
}


@BENCHMARKS.register("mmau")
class MMAU(Benchmark):
    """MMAU's JSON list (``audio_id`` relative to the file, ``answer`` the choice string, ``task`` the domain);
    R1-AQA's prediction key ``model_prediction``, accuracy per task, difficulty and sub-category. The test
    split (no answers) is answered for the evaluation server: the same list with ``model_prediction`` added."""

    name = "mmau"
    title = "MMAU"
    default_data = "data/mmau/mmau-test-mini.json"
    download = ("MMAU (github.com/Sakshi113/MMAU): mmau-test-mini.json and test-mini-audios.tar.gz, unpacked "
                "beside the JSON so that its audio_id paths resolve")
    versions = VERSIONS
    groups = (Group("task", "task", "domain", DOMAINS),
              Group("difficulty", "difficulty", "difficulty", DIFFICULTIES),
              Group("sub-category", "sub-category", "sub_category", prefix="sub/", by_first=True))
    metric_fallback = {"sub-category": SUB_CATEGORIES}

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        return is_correct(prediction, answer, choices)

    def matches(self, record: dict, kind: str) -> bool:
        return kind == "json" and "audio_id" in record

    def parse(self, rec: dict, rid: str, err, base: Path, withheld: bool, domain: str, extra: dict) -> Question:
        text, choices = field(rec, "question", err), choice_list(rec, "choices", err)
        answer = "" if withheld else answer_choice(rec, choices, rid, err)
        audio = audio_paths(rec, "audio_id", err, base)
        return Question(rid, audio, text, choices, answer, domain=str(rec.get("task") or domain).lower(),
                        dataset=str(rec.get("dataset") or ""), **extra)
