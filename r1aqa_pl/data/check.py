"""``r1aqa check-data``: scan data files before a run, so a broken file shows up now, not an hour in."""

from __future__ import annotations

from collections import Counter
from itertools import chain
from typing import Literal

import numpy as np

from r1aqa_pl.benchmarks import BENCHMARKS
from r1aqa_pl.data.audio import audio_info, load_audio
from r1aqa_pl.data.card import show_card
from r1aqa_pl.data.formats import detect_format, iter_questions, record_error
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError, Question


def _benchmark_line(fmt: str, path: str, version: str | None) -> str | None:
    """"benchmark: MMAU, version ...", and whether its answers are withheld; None for a training format."""
    bench = BENCHMARKS.get(fmt)
    if bench is None:
        return None
    records = read_records(path)
    line = f"  benchmark: {bench.title}, version {bench.version(records, version)}"
    if bench.withheld(records):
        line += "; answers withheld (a test split): `r1aqa eval` writes its submission file, no local score"
    return line


def _check_file(name: str, path: str, audio_dir: str | None, on_error: str, max_skip_fraction: float,
                domain: str, avqa_naming: str, decode: bool, examples: int, fmt: str = "auto",
                version: str | None = None) -> int:
    """One file's report. Records are checked as they are read and only counts and a few examples per
    problem are kept, so a large file costs its parsed records once, not copies of them."""
    from tqdm import tqdm

    print(f"== {name}: {path}")
    show_card(path)  # what the set was prepared from, when a prepare-* command wrote a card beside it
    try:
        fmt = detect_format(path) if fmt == "auto" else fmt
        line = _benchmark_line(fmt, path, version)
        items = iter_questions(path, audio_dir, fmt, domain, avqa_naming)
        first = next(items)  # file-level problems raise here
    except DataError as e:
        print(f"  FAIL: {e}")
        return 1
    if line:
        print(line)
    domains, seconds, rates, n, multi, most = Counter(), [], Counter(), 0, 0, 0
    by_reason: dict[str, list] = {}  # reason -> [count, first examples]
    for item in tqdm(chain([first], items), desc=f"check {name}", unit="rec"):
        n += 1
        if isinstance(item, Question):
            domains[item.domain] += 1
            multi += len(item.clips) > 1
            most = max(most, len(item.clips))
            try:
                for clip in item.clips or [""]:
                    info = audio_info(clip)
                    if decode:  # catches corrupt or NaN samples that the header cannot show
                        load_audio(clip, info["sample_rate"])
                    seconds.append(info["seconds"])
                    rates[info["sample_rate"]] += 1
            except DataError as e:
                item = record_error(item, e)
        if isinstance(item, DataError):
            seen = by_reason.setdefault(item.reason, [0, []])
            seen[0] += 1
            if len(seen[1]) < examples:
                seen[1].append(item)
            if on_error == "raise":
                break
    bad = sum(c for c, _ in by_reason.values())
    print(f"  format: {fmt}; records: {n}; usable: {n - bad}; problems: {bad}")
    print("  domains: " + (", ".join(f"{d} {c}" for d, c in sorted(domains.items())) or "-"))
    if multi:
        print(f"  several clips: {multi} questions (up to {most} clips each, heard in order)")
    if seconds:
        s = np.array(seconds)
        print(f"  audio: {len(s)} clips; seconds min {s.min():.2f} / mean {s.mean():.2f} / max {s.max():.2f}")
        print("  sample rates: " + ", ".join(f"{r} Hz x{c}" for r, c in sorted(rates.items())))
    else:
        print("  audio: no readable clips")
    for reason, (count, errs) in sorted(by_reason.items(), key=lambda kv: -kv[1][0]):
        print(f"  {count} {reason}")
        for e in errs:
            print(f"      e.g. {e}")
    if not bad:
        print("  OK: a run with on_error=raise starts")
        return 0
    if on_error == "raise":
        print("  FAIL: stopped at the first problem (on_error=raise)")
    else:
        frac = bad / n
        verdict = "would start" if frac <= max_skip_fraction else "would fail"
        print(f"  FAIL: on_error=raise stops at the first problem; on_error=skip loses {bad}/{n} "
              f"({frac:.1%}) and {verdict} (max_skip_fraction={max_skip_fraction})")
    return 1


def check_data(train: str | None = None, val: str | None = None, test: str | None = None,
               audio_dir: str | None = None, on_error: Literal["raise", "skip"] = "skip",
               max_skip_fraction: float = 0.1, domain: str = "sound",
               avqa_naming: Literal["r1aqa", "video_name"] = "r1aqa", decode: bool = True, examples: int = 3,
               benchmark: str | None = None, benchmark_version: str | None = None) -> int:
    """Scan data files before a run: counts, domains, audio durations and rates, problems by reason.

    Exits non-zero when a run with on_error=raise would fail, so a broken file shows up now,
    not an hour into training.

    Args:
        train: training file (AVQA JSONL / train_qa.json / MMAU JSON).
        val: validation file (a benchmark's: MMAU JSON, MMAR JSONL; its version is reported).
        test: test file.
        audio_dir: folder for relative audio paths; default: each file's folder.
        on_error: "skip" scans every record and reports all problems; "raise" stops at the first.
        max_skip_fraction: used to say whether an on_error=skip run would start.
        domain: domain of AVQA records without a "task" field.
        avqa_naming: AVQA video_name -> wav naming, "r1aqa" or "video_name".
        decode: also decode every clip fully (finds corrupt or NaN samples; slower).
        examples: how many examples to print per problem reason.
        benchmark: read the files as this benchmark's (``mmau``, ``mmar``); default: recognised per file.
        benchmark_version: the version of a benchmark file that is not an official release.
    """
    files = [(n, p) for n, p in (("train", train), ("val", val), ("test", test)) if p]
    if not files:
        print("check-data: nothing to check; give --train, --val and/or --test")
        return 2
    status = 0
    for name, path in files:
        status |= _check_file(name, path, audio_dir, on_error, max_skip_fraction, domain, avqa_naming, decode, examples,
                              benchmark or "auto", benchmark_version)
    return status
