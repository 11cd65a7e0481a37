"""Which training questions, how often and in what order: audio-contribution labels and curriculum.

The labels come from ``r1aqa audio-contribution`` (one JSON line per question: ``id``,
``pass_with_audio``, ``pass_without_audio``, ``label``). ``label_weights`` keeps each question
``weight`` times (0 drops it: filtering; a fraction keeps it with that probability, seeded: a
question answerable without audio at 0.5 is seen half as often). The curriculum (SARI) orders
questions from easy to hard by the policy's pass rate with audio.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from r1aqa_pl.task.files import read_entries
from r1aqa_pl.task.question import DataError, Question


def read_labels(path: str | Path) -> dict[str, dict]:
    """{question id: its line} from an audio-contribution JSONL, every line checked."""
    out: dict[str, dict] = {}
    for where, _, rec in read_entries(path)[1]:
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec, dict):
            raise DataError(str(path), where, "malformed_json", f"expected a JSON object, got {rec!r}")
        missing = [k for k in ("id", "pass_with_audio", "pass_without_audio", "label") if k not in rec]
        if missing:
            raise DataError(str(path), where, "missing_field", f"missing {', '.join(missing)}")
        out[str(rec["id"])] = rec
    return out


def labels_for(questions: list[Question], labels: dict[str, dict], path: str) -> list[dict]:
    """Each question's label line; a question the file does not cover is an error naming it."""
    missing = [q for q in questions if str(q.id) not in labels]
    if missing:
        raise DataError(path, "file", "unlabelled", f"{len(missing)} training questions have no label, e.g. id "
                        f"{missing[0].id} ({missing[0].source}); run r1aqa audio-contribution on the training file")
    return [labels[str(q.id)] for q in questions]


def weight_by_label(lines: list[dict], weights: dict[str, float], seed: int = 0) -> list[int]:
    """Indices of the questions to train on: each repeated floor(w) times, plus once more with
    probability frac(w) (seeded); w = ``weights[label]`` (a label not named keeps weight 1)."""
    bad = {k: w for k, w in weights.items() if w < 0}
    if bad:
        raise ValueError(f"label_weights must be >= 0: {bad}")
    rng = random.Random(seed)
    out = []
    for i, line in enumerate(lines):
        w = float(weights.get(line["label"], 1.0))
        n = math.floor(w) + (1 if rng.random() < w - math.floor(w) else 0)
        out.extend([i] * n)
    return out


def easy_to_hard(lines: list[dict]) -> list[int]:
    """Indices by decreasing pass rate with audio (ties keep file order)."""
    return sorted(range(len(lines)), key=lambda i: -float(lines[i]["pass_with_audio"]))
