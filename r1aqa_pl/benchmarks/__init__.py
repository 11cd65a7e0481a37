"""Benchmarks (one module each, registered by name) and the calls that pick one by name, class path or file."""

from __future__ import annotations

from pathlib import Path

from r1aqa_pl.benchmarks import mmar, mmau, mmau_pro, mmsu  # noqa: F401  (register)
from r1aqa_pl.benchmarks.base import BENCHMARKS, Benchmark
from r1aqa_pl.task.files import read_entries

__all__ = ["BENCHMARKS", "Benchmark", "benchmark_for", "get"]



def get(name: str | Benchmark) -> Benchmark:
    """A registered benchmark by name, a user's by class path (``my_module.MyBench``), or the instance given."""
    return BENCHMARKS.build(name)


def detect_benchmark(kind: str, first: dict) -> Benchmark | None:
    """The benchmark whose files look like this (``kind``: "json" list or "jsonl"; ``first``: the first record)."""
    return next((b for b in map(BENCHMARKS.build, BENCHMARKS) if b.matches(first, kind)), None)


def benchmark_for(path: str | Path, name: str | None = None, read: tuple[str, list] | None = None) -> Benchmark:
    """The benchmark named ``name``, else the one that recognises the file (``read``: its :func:`read_entries`,
    when the caller has it already); an error names both otherwise."""
    if name is not None:
        return get(name)
    kind, entries = read or read_entries(path)
    bench = detect_benchmark(kind, next((r for _, _, r in entries if isinstance(r, dict)), {}))
    if bench is not None:
        return bench
    raise ValueError(f"{path}: not a file of any known benchmark ({', '.join(BENCHMARKS)}); "
                     "name one with --benchmark, or check the file's format")
