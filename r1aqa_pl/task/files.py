"""Question and prediction files, read one way: a JSON list of records or JSON lines, one set of error codes.

Training sets, benchmark files, prediction files and preparation inputs all come through
:func:`read_entries` (record by record: a broken JSON line is that record's error) or :func:`read_records`
(the first error raises). Error codes (:class:`DataError` ``reason``):

* file level, always raised: ``missing_file``, ``unreadable``, ``malformed_json`` (a JSON list that does
  not parse, or a top level that is not a list), ``no_records`` (an empty file or list);
* record level: ``malformed_json`` (a JSON line that does not parse, or a record that is not an object),
  ``missing_field``, ``bad_field``, ``too_few_choices``, ``answer_not_in_choices`` (from the field checks below).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1aqa_pl.task.question import DataError

Entry = tuple[str, str, Any]  # (where: "line 4" / "record 3", source: "file:4" / "file[3]", record or DataError)


def is_jsonl(path: Path, text: str) -> bool:
    """JSON lines (one object per line) rather than one JSON list: by suffix, else by the first character."""
    return path.suffix == ".jsonl" or text.lstrip().startswith("{")


def read_entries(path: str | Path) -> tuple[str, list[Entry]]:
    """("jsonl" | "json", one entry per record, in order); file-level problems raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file", "missing_file", "file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(str(path), "file", "unreadable", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise DataError(str(path), "file", "no_records", "no records: the file is empty")
    if is_jsonl(path, text):
        out: list[Entry] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rec = DataError(str(path), f"line {n}", "malformed_json", f"not valid JSON ({e.msg}, column {e.colno})")
            out.append((f"line {n}", f"{path}:{n}", rec))
        kind = "jsonl"
    else:
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:  # a broken list cannot be split into records: the whole file
            raise DataError(str(path), f"line {e.lineno}", "malformed_json",
                            f"not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(recs, list):
            raise DataError(str(path), "file", "malformed_json",
                            f"expected a JSON list of records (or JSON lines), got a JSON {type(recs).__name__}")
        out = [(f"record {i}", f"{path}[{i}]", r) for i, r in enumerate(recs)]
        kind = "json"
    if not out:
        raise DataError(str(path), "file", "no_records", "no records: the file holds an empty list")
    return kind, out


def read_records(path: str | Path) -> list:
    """Every record of a JSON list or JSON-lines file; the first broken line raises, naming it."""
    _, entries = read_entries(path)
    for _, _, rec in entries:
        if isinstance(rec, DataError):
            raise rec
    return [rec for _, _, rec in entries]


# ---------------------------------------------------------------- field checks of one record
# ``err(reason, message)`` builds the record's DataError (it knows the file and the line or record).

def field(rec: dict, key: str, err, types=(str,)):
    """``rec[key]``, which must be present and of one of ``types``."""
    if rec.get(key) is None:
        raise err("missing_field", f"missing field '{key}'")
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, types):
        raise err("bad_field", f"field '{key}' should be {'/'.join(t.__name__ for t in types)}, got {v!r}")
    return v


def choice_list(rec: dict, key: str, err) -> list[str]:
    """``rec[key]``: a list of at least two strings."""
    v = field(rec, key, err, (list,))
    if not all(isinstance(c, str) for c in v):
        raise err("bad_field", f"'{key}' must be a list of strings, got {v!r}")
    if len(v) < 2:
        raise err("too_few_choices", f"'{key}' has {len(v)} choice(s), need at least 2")
    return list(v)


def answer_choice(rec: dict, choices: list[str], rid: str, err) -> str:
    """A benchmark record's ``answer``: one of its choice strings."""
    answer = field(rec, "answer", err)
    if answer not in choices:
        raise err("answer_not_in_choices", f"id={rid}: answer {answer!r} is not one of {choices}")
    return answer


def resolve(p: str, base: Path) -> str:
    """A record's audio path: absolute as given, else relative to ``base``."""
    return str(Path(p) if Path(p).is_absolute() else base / p)


def audio_paths(rec: dict, key: str, err, base: Path) -> str | list[str]:
    """``rec[key]`` resolved (:func:`resolve`): one path, or a non-empty list of paths (a question over
    several clips, heard in that order)."""
    v = field(rec, key, err, (str, list))
    if isinstance(v, str):
        return resolve(v, base)
    if not v or not all(isinstance(p, str) and p for p in v):
        raise err("bad_field", f"'{key}' must be a path or a non-empty list of paths, got {v!r}")
    return [resolve(p, base) for p in v]
