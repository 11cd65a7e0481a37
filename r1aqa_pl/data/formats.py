"""Reading question files: AVQA / MMAU records -> :class:`Question`, and the bad-record policy.

Formats (auto-detected):

* ``avqa_jsonl`` -- R1-AQA's AVQA file, one JSON object per line (``answer`` is an index into
  ``multi_choice``); a relative ``audio_path`` is resolved against ``audio_dir`` or the file's folder.
* ``avqa_json``  -- the original AVQA ``train_qa.json``: a JSON list of the same records without
  ``audio_path``; the clip is found from ``video_name`` in ``audio_dir`` (or the file's folder),
  see :func:`avqa_audio_name`.
* a benchmark's own file (``mmau``: the MMAU JSON list; ``mmar``: MMAR's JSONL): recognised and parsed
  by the benchmark (:mod:`r1aqa_pl.benchmarks`), so a new benchmark adds no code here. A file in which
  no record has ``answer`` has its answers withheld (MMAU's test set): its questions carry
  ``answer=""`` and can be answered for a submission, never scored here.

AVQA records may carry optional ``task`` (domain), ``difficulty`` and ``sub-category`` fields (the
synthetic set does); otherwise they count as ``domain`` ("sound") and dataset "AVQA".

Bad records are never dropped silently. ``on_error="raise"`` stops at the first problem;
``on_error="skip"`` leaves bad records out, counts them per reason, logs the counts and still
raises once more than ``max_skip_fraction`` of a file is lost. Records are checked twice: at
start-up (fields + a header-only audio check with ``soundfile.info``) and while reading (full
decode in :class:`r1aqa_pl.data.datamodule.AudioQADataset`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r1aqa_pl.benchmarks import BENCHMARKS, Benchmark, detect_benchmark
from r1aqa_pl.data.audio import audio_info
from r1aqa_pl.task.files import audio_paths, choice_list, field, read_entries
from r1aqa_pl.task.question import DataError, Question

log = logging.getLogger(__name__)

AVQA_FORMATS = ("avqa_jsonl", "avqa_json")
NAMINGS = ("r1aqa", "video_name")
# record-level reasons (skippable); file-level problems (:mod:`r1aqa_pl.task.files`'s, and too_many_skipped)
# always raise.
REASONS = ("malformed_json", "missing_field", "bad_field", "answer_index_out_of_range",
           "answer_not_in_choices", "too_few_choices", "missing_audio", "unreadable_audio",
           "empty_audio", "non_finite_audio", "truncated_audio")


# ---------------------------------------------------------------- reading records

def avqa_audio_name(video_name: str, naming: str = "r1aqa") -> str:
    """The wav file name of an AVQA clip.

    ``naming="r1aqa"``: R1-AQA's extraction names a clip by YouTube id and integer start second,
    so ``"-HG3Omg_89c_000030"`` -> ``"-HG3Omg_89c_30.wav"``; ``naming="video_name"``:
    ``"<video_name>.wav"``. (The reader falls back to the latter when the former does not exist.)
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    m = re.fullmatch(r"(.+)_(\d+)", video_name)
    if naming == "r1aqa" and m:
        return f"{m[1]}_{int(m[2])}.wav"
    return f"{video_name}.wav"


def formats() -> tuple[str, ...]:
    """Every ``fmt`` value: "auto", AVQA's two layouts, and each benchmark's name."""
    return ("auto", *AVQA_FORMATS, *BENCHMARKS)


def _detect(kind: str, entries: list, fmt: str | Benchmark) -> str | Benchmark:
    if isinstance(fmt, Benchmark):  # a benchmark given as an object: a user's own, not registered
        return fmt
    if fmt not in formats():
        raise ValueError(f"fmt must be one of {formats()}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    first = next((r for _, _, r in entries if isinstance(r, dict)), {})
    if "multi_choice" in first:
        return "avqa_jsonl" if kind == "jsonl" else "avqa_json"
    bench = detect_benchmark(kind, first)
    if bench is not None:
        return bench.name
    return "avqa_jsonl" if kind == "jsonl" else "mmau"  # the closest layout, whose field errors then explain


def answers_withheld(entries: list) -> bool:
    """No record has an ``answer``: a test split whose answers the benchmark keeps (MMAU test)."""
    return not any(isinstance(r, dict) and "answer" in r for _, _, r in entries)


def detect_format(path: str | Path) -> str:
    """The format :func:`iter_questions` would use for ``path`` with ``fmt="auto"``."""
    return _detect(*read_entries(path), "auto")


def _parse(rec: Any, fmt: str, err, source: str, base: Path, domain: str, naming: str, withheld: bool) -> Question:
    if not isinstance(rec, dict):
        raise err("malformed_json", f"expected a JSON object, got {type(rec).__name__}")
    rid = str(field(rec, "id", err, (str, int)))
    extra = dict(difficulty=str(rec.get("difficulty") or ""), sub_category=str(rec.get("sub-category") or ""),
                 category=str(rec.get("category") or ""), source=source, raw=rec)
    if fmt not in AVQA_FORMATS:
        return (fmt if isinstance(fmt, Benchmark) else BENCHMARKS[fmt]).parse(
            rec, rid, err, base, withheld, domain, extra
        )
    text, choices = field(rec, "question_text", err), choice_list(rec, "multi_choice", err)
    idx = field(rec, "answer", err, (int,))
    if not 0 <= idx < len(choices):
        raise err(
            "answer_index_out_of_range", f"id={rid}: answer index {idx} is outside multi_choice (0..{len(choices) - 1})"
        )
    if rec.get("audio_path"):
        audio = audio_paths(rec, "audio_path", err, base)
    elif rec.get("video_name"):
        name = field(rec, "video_name", err)
        audio = str(base / avqa_audio_name(name, naming))
        if not Path(audio).exists() and (base / f"{name}.wav").exists():
            audio = str(base / f"{name}.wav")
    else:
        raise err("missing_field", f"id={rid}: needs 'audio_path' or 'video_name'")
    return Question(
        rid,
        audio,
        text,
        choices,
        choices[idx],
        domain=str(rec.get("task") or domain).lower(),
        dataset=str(rec.get("dataset_name") or "AVQA"),
        **extra,
    )


def iter_questions(
    path: str | Path,
    audio_dir: str | Path | None = None,
    fmt: str | Benchmark = "auto",
    domain: str = "sound",
    naming: str = "r1aqa",
) -> Iterator[Question | DataError]:
    """One :class:`Question` or record-level :class:`DataError` per record (no audio check); file-level problems
    raise. ``fmt`` may be a :class:`Benchmark` object: a user's own, read by its ``parse``."""
    path = Path(path)
    kind, entries = read_entries(path)
    fmt = _detect(kind, entries, fmt)
    withheld = answers_withheld(entries)
    base = Path(audio_dir) if audio_dir else path.parent
    for where, source, rec in entries:
        if isinstance(rec, DataError):
            yield rec
            continue
        err = lambda reason, msg, w=where: DataError(str(path), w, reason, msg)  # noqa: E731
        try:
            yield _parse(rec, fmt, err, source, base, domain, naming, withheld)
        except DataError as e:
            yield e


def record_error(q: Question, e: DataError) -> DataError:
    """An audio error re-issued under the record's file and line/record, so the message points at the data."""
    m = re.fullmatch(r"(.*)\[(\d+)\]", q.source) or re.fullmatch(r"(.*):(\d+)", q.source)
    file, where = (m[1], f"record {m[2]}" if q.source.endswith("]") else f"line {m[2]}") if m else (q.source, "?")
    return DataError(file, where, e.reason, f"id={q.id}: {e}")


def check_audio(q: Question) -> Question | DataError:
    """The cheap start-up check: every clip exists, its header reads, it has frames."""
    try:
        for clip in q.clips or [""]:
            audio_info(clip)
        return q
    except DataError as e:
        return record_error(q, e)


def _enforce(path, total: int, problems: list[DataError], max_skip_fraction: float) -> Counter:
    """Skip policy: log the per-reason counts; raise when more than ``max_skip_fraction`` is lost."""
    counts = Counter(e.reason for e in problems)
    if problems:
        log.warning("%s: skipped %d of %d records %s; first: %s", path, len(problems), total, dict(counts), problems[0])
        if len(problems) > max_skip_fraction * total:
            raise DataError(
                str(path),
                "file",
                "too_many_skipped",
                f"{len(problems)} of {total} records are bad ({len(problems) / total:.1%} > "
                f"max_skip_fraction={max_skip_fraction}): {dict(counts)}; first: {problems[0]}",
            )
    return counts


def apply_policy(
    path, items, on_error: str = "raise", max_skip_fraction: float = 0.1, check_audio_files: bool = True
) -> tuple[list[Question], Counter]:
    """The error policy over parsed records (:func:`iter_questions`'s output): (kept questions, skipped per reason)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kept, problems, total = [], [], 0
    for item in items:
        total += 1
        if isinstance(item, Question) and check_audio_files:
            item = check_audio(item)
        if isinstance(item, DataError):
            if on_error == "raise":
                raise item
            problems.append(item)
        else:
            kept.append(item)
    return kept, _enforce(path, total, problems, max_skip_fraction)


def load_questions(
    path: str | Path,
    audio_dir: str | Path | None = None,
    fmt: str = "auto",
    domain: str = "sound",
    naming: str = "r1aqa",
    on_error: str = "raise",
    max_skip_fraction: float = 0.1,
    check_audio_files: bool = True,
) -> tuple[list[Question], Counter]:
    """Read and validate a file under the error policy; returns (kept questions, skipped counts per reason)."""
    return apply_policy(
        path, iter_questions(path, audio_dir, fmt, domain, naming), on_error, max_skip_fraction, check_audio_files
    )


def read_questions(
    path: str | Path,
    audio_dir: str | Path | None = None,
    fmt: str = "auto",
    domain: str = "sound",
    naming: str = "r1aqa",
    on_error: str = "raise",
    max_skip_fraction: float = 0.1,
    check_audio_files: bool = False,
) -> list[Question]:
    """All questions of an AVQA (JSONL or JSON list) or benchmark file; by default fields only (a scorer needs no
    audio)."""
    return load_questions(path, audio_dir, fmt, domain, naming, on_error, max_skip_fraction, check_audio_files)[0]
