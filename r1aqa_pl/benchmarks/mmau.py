"""MMAU (test-mini and test): the official scoring rule as pure functions, and the benchmark object.

The rule is a few lines kept free of torch, so that the scorer that grades papers is the same
everywhere: the training-time metric, the validation callback, the offline scorer and the
``mmau_accuracy`` reward all call :func:`is_correct`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from r1aqa_pl.benchmarks.base import Benchmark, Group
from r1aqa_pl.records import DataError, Question

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


class MMAU(Benchmark):
    """MMAU's JSON list (``audio_id`` relative to the file, ``answer`` the choice string, ``task`` the domain);
    R1-AQA's prediction key ``model_prediction``, accuracy per task, difficulty and sub-category."""

    name = "mmau"
    title = "MMAU"
    groups = (Group("task", "task", "domain", DOMAINS),
              Group("difficulty", "difficulty", "difficulty", DIFFICULTIES),
              Group("sub-category", "sub-category", "sub_category", prefix="sub/", by_first=True))
    metric_fallback = {"sub-category": SUB_CATEGORIES}

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        return is_correct(prediction, answer, choices)

    def recognises(self, path: str | Path) -> bool:
        from r1aqa_pl.data.formats import detect_format

        return detect_format(path) == "mmau"

    def iter_questions(self, path: str | Path, audio_dir: str | Path | None = None) -> Iterator[Question | DataError]:
        from r1aqa_pl.data.formats import iter_questions

        return iter_questions(path, audio_dir, fmt="mmau")
