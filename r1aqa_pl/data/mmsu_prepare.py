"""``r1aqa prepare-mmsu``: MMSU's release laid out as the benchmark reads it.

The release (huggingface.co/datasets/ddwang2000/MMSU) ships parquet files whose ``audio`` column holds each
clip's encoded bytes (and its file name); a JSON-lines copy names its clips by ``audio_path`` instead. This
command writes ``mmsu.jsonl`` (one record per question, choices and answers as released, ``audio_path``
relative to the file) with the clips under ``audio/`` beside it, as WAV files, and the data card.

Every record is checked before anything is written: the columns, the fields the official scorer reads (two
to four non-empty choices, no choice twice, ``answer_gt`` one of them), unique ids, and each clip found and
decoded. The first problem stops the command with its file, row or line, and reason: no question is dropped
without a word, since a score on part of the benchmark is not comparable. Re-running keeps clips already in place.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from r1aqa_pl.benchmarks.mmsu import CHOICE_KEYS, options
from r1aqa_pl.data.audio import audio_info, load_audio
from r1aqa_pl.data.card import source_entry, split_summary, write_card, write_text_atomic
from r1aqa_pl.task.files import field, read_entries
from r1aqa_pl.task.question import DataError

OUT_FILE = "mmsu.jsonl"
TEXT_FIELDS = ("question", "task_name", "category", "sub-category", "sub-sub-category")
COLUMNS = ("id", "audio", *TEXT_FIELDS, *CHOICE_KEYS.values(), "answer_gt")  # a release parquet file's columns
_WAV_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32")  # kept as they are when a clip is rewritten as WAV; others: FLOAT


# ---------------------------------------------------------------- reading the release

def _sources(data: Path) -> list[Path]:
    """The question files: ``data`` itself, or the parquet files in a folder (a download's ``data/``) by name."""
    if data.is_dir():
        files = sorted(data.glob("*.parquet"))
        if not files:
            raise DataError(str(data), "file", "missing_file", "no .parquet file in this folder")
        return files
    if not data.is_file():
        raise DataError(str(data), "file", "missing_file", "file not found")
    return [data]


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """("row N", row) of a release parquet file, its columns checked first; the audio column stays a
    ``{"bytes", "path"}`` dict, read a batch at a time (the release holds about 1.2 GB of audio)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(str(path), "file", "unreadable", f"not a parquet file ({e})") from None
    names = f.schema_arrow.names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(str(path), "file", "missing_column", f"no column {', '.join(map(repr, missing))}: "
                        f"an MMSU file has {list(COLUMNS)}, this one {names}")
    audio = f.schema_arrow.field("audio").type
    if not pa.types.is_struct(audio) or audio.get_field_index("bytes") < 0:
        raise DataError(str(path), "file", "bad_column",
                        f"column 'audio' should be a struct of the clip's bytes and path, got {audio}")
    i = 0
    for batch in f.iter_batches(batch_size=64):
        for row in batch.to_pylist():
            yield f"row {i}", row
            i += 1


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    for where, _, rec in read_entries(path)[1]:
        if isinstance(rec, DataError):
            raise rec
        if not isinstance(rec, dict):
            raise DataError(str(path), where, "malformed_json", f"expected a JSON object, got {type(rec).__name__}")
        yield where, rec


def _rows(sources: list[Path]) -> Iterator[tuple[Path, str, dict]]:
    for src in sources:
        rows = _parquet_rows(src) if src.suffix == ".parquet" else _jsonl_rows(src)
        for where, row in rows:
            yield src, where, row


# ---------------------------------------------------------------- one record

def record(row: dict, err) -> dict:
    """A release row as ``mmsu.jsonl`` holds it (without ``audio_path``): the fields the benchmark and its
    official scorer read, checked; an empty choice as ""; other columns kept as they are."""
    rid = field(row, "id", err, (str, int))
    found = options(row, err)
    texts = [t for _, t in found]
    twice = next((t for t in texts if texts.count(t) > 1), None)
    if twice is not None:
        raise err("duplicate_choice", f"id={rid}: choice {twice!r} is listed twice: {texts}")
    rec = {"id": rid, "question": field(row, "question", err)}
    rec.update({key: row.get(key) or "" for key in CHOICE_KEYS.values()})
    rec["answer_gt"] = row["answer_gt"]
    rec.update({key: field(row, key, err) for key in TEXT_FIELDS if key != "question"})
    rec.update({k: v for k, v in row.items() if k not in rec and k not in ("audio", "audio_path")})
    return rec


def _clip_name(rid, suffix: str, used: set[str]) -> str:
    """``audio/<id><suffix>``, the id made safe as a file name (and unique among the set's)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(rid)).lstrip(".") or "clip"
    name, n = f"audio/{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"audio/{stem}_{n}{suffix}"
    used.add(name)
    return name


def _find_clip(rel: str, audio_dir: Path) -> Path | None:
    """A clip named by a record: as given when absolute, else under ``audio_dir`` by its path or its file name."""
    p = Path(rel)
    candidates = [p] if p.is_absolute() else [audio_dir / p, audio_dir / p.name]
    return next((c for c in candidates if c.is_file()), None)


def as_wav(data: bytes) -> tuple[bytes, dict]:
    """Encoded audio bytes as a WAV file's bytes, and its info (``seconds``, ``sample_rate``). A WAV stays byte
    for byte; another format is decoded and written as WAV, 16/24/32-bit PCM kept as it was, else float.
    Raises DataError ``unreadable_audio`` / ``empty_audio`` / ``non_finite_audio``."""
    try:
        info = sf.info(io.BytesIO(data))
        subtype = info.subtype if info.subtype in _WAV_SUBTYPES else "FLOAT"
        samples, rate = sf.read(io.BytesIO(data), dtype="int32" if subtype != "FLOAT" else "float32", always_2d=True)
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/TypeError for bytes it cannot read
        raise DataError("<audio bytes>", "audio", "unreadable_audio", f"cannot decode the clip ({e})") from None
    if samples.size == 0:
        raise DataError("<audio bytes>", "audio", "empty_audio", "the clip has no samples")
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise DataError("<audio bytes>", "audio", "non_finite_audio", "the clip holds NaN or infinite samples")
    if info.format != "WAV":
        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="WAV", subtype=subtype)
        data = buf.getvalue()
    return data, {"seconds": len(samples) / rate, "sample_rate": int(rate)}


def _clip(row: dict, audio_dir: Path, err) -> tuple[bytes | Path, dict]:
    """The row's clip, checked: (WAV bytes, info) for embedded audio, (file, info) for a clip named by path."""
    audio = row.get("audio")
    if isinstance(audio, dict) and audio.get("bytes"):
        try:
            return as_wav(audio["bytes"])
        except DataError as e:
            raise err(e.reason, f"id={row.get('id')}: {str(e).split(': ', 1)[1]}") from None
    rel = audio.get("path") if isinstance(audio, dict) else row.get("audio_path")
    if not isinstance(rel, str) or not rel:
        raise err("missing_audio", f"id={row.get('id')}: no audio bytes and no audio path")
    path = _find_clip(rel, audio_dir)
    if path is None:
        raise err("missing_audio", f"id={row.get('id')}: clip {rel!r} not found in {audio_dir}")
    try:
        info = audio_info(path)
        load_audio(path, info["sample_rate"])  # full decode: corrupt or NaN samples show here
    except DataError as e:
        raise err(e.reason, f"id={row.get('id')}: {e}") from None
    return path, info


def _write_clip(clip: bytes | Path, dst: Path) -> bool:
    """Write a clip under a temporary name, then rename; one already there with the same size is kept (False)."""
    size = len(clip) if isinstance(clip, bytes) else clip.stat().st_size
    if dst.is_file() and dst.stat().st_size == size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    if isinstance(clip, bytes):
        part.write_bytes(clip)
    else:
        shutil.copyfile(clip, part)
    os.replace(part, dst)
    return True


# ---------------------------------------------------------------- the command

def prepare_mmsu(*, data: str, out: str, audio: str | None = None) -> int:
    """MMSU: the release's questions and audio as ``mmsu.jsonl`` with its clips beside it, and the data card.

    Every record and clip is checked first: a bad one (a missing column, fewer than two choices, a choice
    listed twice, an answer that is not a choice, a clip missing or not decoding) stops the command with its
    file, row and reason, before anything is written.

    Args:
        data: the release's questions: a parquet file, a folder of them (the download's ``data/``, read in name
            order), or a JSON-lines file whose ``audio_path`` entries name the clips.
        out: output folder: mmsu.jsonl, audio/ (one WAV per question for parquet input, the clip as it was for
            JSON lines), data_card.json/.md.
        audio: the folder the clips named by path are in (JSON lines' ``audio_path``, or a parquet row without
            audio bytes); default: the questions file's folder.
    """
    sources, out_dir = _sources(Path(data)), Path(out)
    audio_dir = Path(audio) if audio else sources[0].parent
    ids: dict = {}
    used: set[str] = set()
    plan: list[tuple[dict, str]] = []
    infos: dict[str, dict] = {}
    for src, where, row in _rows(sources):  # first pass: check everything, write nothing
        err = lambda reason, msg, s=src, w=where: DataError(str(s), w, reason, msg)  # noqa: E731
        rec = record(row, err)
        if str(rec["id"]) in ids:
            raise err("duplicate_id", f"id={rec['id']} is also {ids[str(rec['id'])]}")
        ids[str(rec["id"])] = f"{src.name} {where}"
        clip, info = _clip(row, audio_dir, err)
        name = _clip_name(rec["id"], ".wav" if isinstance(clip, bytes) else clip.suffix.lower(), used)
        plan.append(({**rec, "audio_path": name}, str(clip) if isinstance(clip, Path) else ""))
        infos[name] = info
    if not plan:
        raise DataError(str(data), "file", "no_records", "no records")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write_all(sources, audio_dir, out_dir, plan)
    records = [rec for rec, _ in plan]
    target = out_dir / OUT_FILE
    write_text_atomic(target, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
    summary = split_summary(OUT_FILE, records, [], "category", "task_name", list(infos.values()))
    write_card(out_dir, "MMSU", "r1aqa prepare-mmsu", {"mmsu": summary},
               [source_entry(s, "questions and audio" if s.suffix == ".parquet" else "questions") for s in sources])
    print(f"prepare-mmsu: {len(records)} questions, {written} clips written -> {target}; "
          f"card: {out_dir / 'data_card.md'}")
    return 0


def _write_all(sources: list[Path], audio_dir: Path, out_dir: Path, plan: list[tuple[dict, str]]) -> int:
    """Second pass: each checked row's clip under its name (embedded audio is read again rather than held)."""
    written = 0
    for (src, where, row), (rec, copied) in zip(_rows(sources), plan):
        dst = out_dir / rec["audio_path"]
        err = lambda reason, msg, s=src, w=where: DataError(str(s), w, reason, msg)  # noqa: E731
        clip = Path(copied) if copied else _clip(row, audio_dir, err)[0]
        written += _write_clip(clip, dst)
        audio_info(dst)  # header and length as written (a cut WAV shows here)
    return written
