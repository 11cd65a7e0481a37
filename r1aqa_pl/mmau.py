"""The official MMAU scoring rule (GUIDE §4) as pure functions, and the ``r1aqa score`` command.

Kept free of torch so the scorer that grades papers is the same few lines everywhere: the
training-time metric (:mod:`r1aqa_pl.metrics`), the validation callback and the offline scorer
all call :func:`is_correct`.
"""

from __future__ import annotations

import json as _json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from r1aqa_pl.records import DOMAINS, DataError

DIFFICULTIES = ("easy", "medium", "hard")
OTHER = "other"  # bucket for names not known up-front (the metric's states have fixed shapes)
# The 27 sub-categories of MMAU test-mini: the metric's default when the data is not at hand.
MMAU_SUB_CATEGORIES = (
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
GROUPS = ("task", "difficulty", "sub-category")

_WORD = re.compile(r"\w+")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


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


def extract_answer(output: str) -> str:
    """The text inside the first ``<answer>...</answer>``, else the whole output; stripped (R1-AQA eval)."""
    match = _ANSWER.search(output)
    return (match.group(1) if match else output).strip()


def _ordered(names: Counter, first: tuple[str, ...]) -> list[str]:
    """Known names in their canonical order, then the rest alphabetically."""
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def _check(record: Any, i: int, key: str, source: str) -> None:
    where = f"record {i}"
    if not isinstance(record, dict):
        raise DataError(source, where, "not-an-object", f"expected a JSON object, got {type(record).__name__}")
    for field in ("answer", "choices"):
        if field not in record:
            raise DataError(source, where, "missing-field", f"no {field!r} (id={record.get('id')!r})")
    choices = record["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DataError(source, where, "bad-choices", f"'choices' must be a list of strings (id={record.get('id')!r})")
    if not isinstance(record["answer"], str):
        raise DataError(source, where, "bad-answer", f"'answer' must be a string (id={record.get('id')!r})")
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(source, where, "bad-prediction",
                        f"{key!r} must be a string, got {type(value).__name__} (id={record.get('id')!r})")


def score_records(records: list[dict], key: str = "model_prediction", source: str = "<records>") -> dict:
    """Score MMAU records that carry a prediction under ``key``; those without it are skipped.

    Returns ``{"key", "scored", "skipped", "total": {correct, total, acc},
    "task" | "difficulty" | "sub-category": {name: {correct, total, acc}}}`` with ``acc`` in [0, 1].
    A record lacking task / difficulty / sub-category is counted under "other" (the official
    scorer would crash); ``source`` names the file in errors.
    """
    if not isinstance(records, list):
        raise DataError(source, "top level", "not-a-list",
                        f"expected a JSON list of records, got {type(records).__name__}")
    correct: dict[str, Counter] = {g: Counter() for g in GROUPS}
    total: dict[str, Counter] = {g: Counter() for g in GROUPS}
    sub_task: dict[str, str] = {}
    skipped = 0
    for i, record in enumerate(records):
        _check(record, i, key, source)
        if key not in record:
            skipped += 1
            continue
        ok = is_correct(record[key], record["answer"], record["choices"])
        for group in GROUPS:
            name = str(record.get(group) or OTHER)
            total[group][name] += 1
            correct[group][name] += ok
        sub_task.setdefault(str(record.get("sub-category") or OTHER), str(record.get("task") or OTHER))

    def cell(c: int, t: int) -> dict:
        return {"correct": c, "total": t, "acc": c / t if t else 0.0}

    tasks = _ordered(total["task"], DOMAINS)
    task_rank = {t: i for i, t in enumerate(tasks)}
    order = {
        "task": tasks,
        "difficulty": _ordered(total["difficulty"], DIFFICULTIES),
        "sub-category": sorted(total["sub-category"], key=lambda s: (task_rank.get(sub_task[s], 99), s)),
    }
    n = sum(total["task"].values())
    result: dict[str, Any] = {"key": key, "scored": n, "skipped": skipped,
                              "total": cell(sum(correct["task"].values()), n)}
    for group in GROUPS:
        result[group] = {name: cell(correct[group][name], total[group][name]) for name in order[group]}
    return result


def format_table(result: dict) -> str:
    """A plain-text table of a :func:`score_records` result: task, difficulty, sub-category, total."""
    lines = [f"MMAU accuracy ({result.get('key', 'model_prediction')}): "
             f"{result['scored']} scored, {result['skipped']} skipped",
             f"{'group':<13}{'name':<36}{'correct':>8}{'total':>7}{'acc %':>8}"]
    rows = [(g, name, c) for g in GROUPS for name, c in result[g].items()] + [("total", "", result["total"])]
    for group, name, c in rows:
        if group == "total" or name == next(iter(result[group])):
            lines.append("-" * 72)
        lines.append(f"{group:<13}{name[:35]:<36}{c['correct']:>8}{c['total']:>7}{100 * c['acc']:>8.2f}")
    return "\n".join(lines)


def load_records(path: str | Path) -> list[dict]:
    """Read a JSON list of MMAU records; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(str(path), "file", "unreadable", f"cannot read: {e.strerror or e}") from e
    try:
        return _json.loads(text)
    except _json.JSONDecodeError as e:
        raise DataError(str(path), f"line {e.lineno}", "bad-json", f"not valid JSON: {e.msg}") from e


def score(predictions: str, key: str = "model_prediction", json: bool = False) -> None:
    """Score an MMAU prediction file with the official rule and print the per-domain table.

    Args:
        predictions: the MMAU JSON list with a prediction added to each record.
        key: the record key holding the prediction (R1-AQA writes ``model_prediction``);
            records without it are skipped, as the official scorer does.
        json: print the result as JSON instead of a table.
    """
    try:
        result = score_records(load_records(predictions), key=key, source=predictions)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(_json.dumps(result, indent=2) if json else format_table(result))
    sys.stdout.flush()
