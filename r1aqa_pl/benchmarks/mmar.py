"""MMAR: 1,000 questions over sound, music, speech and their mixes, scored by MMAU's string rule.

``MMAR-meta.jsonl``: one object per line with ``id``, ``audio_path`` (relative to the file),
``question``, ``choices``, ``answer`` (the choice string), ``modality`` (one of :data:`MODALITIES`),
``category`` (one of :data:`CATEGORIES`), ``sub-category``, ``language`` and fields scoring ignores.
The official scorer reads the prediction from ``answer_prediction`` (its README names
``model_prediction``), skips records without it, and reports per modality, category, sub-category
and in total; the prediction file carries both keys, in the source's own layout, so it runs unchanged.
"""

from __future__ import annotations

from pathlib import Path

from r1aqa_pl.benchmarks.base import BENCHMARKS, Benchmark, Group
from r1aqa_pl.benchmarks.mmau import is_correct
from r1aqa_pl.task.files import answer_choice, audio_paths, choice_list, field
from r1aqa_pl.task.question import Question

MODALITIES = ("sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech",
              "mix-sound-music-speech")
CATEGORIES = ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")


@BENCHMARKS.register("mmar")
class MMAR(Benchmark):
    """MMAR's JSONL; accuracy per modality (the question's domain), category and sub-category."""

    name = "mmar"
    title = "MMAR"
    prediction_key = "answer_prediction"
    extra_prediction_keys = ("model_prediction",)
    groups = (Group("modality", "modality", "domain", MODALITIES),
              Group("category", "category", "category", CATEGORIES),
              Group("sub-category", "sub-category", "sub_category", prefix="sub/"))
    default_data = "data/mmar/MMAR-meta.jsonl"
    download = ("MMAR (github.com/ddlBoJack/MMAR, audio on huggingface.co/datasets/BoJack/MMAR): MMAR-meta.jsonl "
                "with the audio folder beside it so that its audio_path entries resolve")

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        return is_correct(prediction, answer, choices)

    def matches(self, record: dict, kind: str) -> bool:
        return "modality" in record and "choices" in record

    def parse(self, rec: dict, rid: str, err, base: Path, withheld: bool, domain: str, extra: dict) -> Question:
        text, choices = field(rec, "question", err), choice_list(rec, "choices", err)
        answer = "" if withheld else answer_choice(rec, choices, rid, err)
        modality = str(field(rec, "modality", err)).lower()
        audio = audio_paths(rec, "audio_path", err, base)
        return Question(rid, audio, text, choices, answer, domain=modality, dataset="MMAR", **extra)
