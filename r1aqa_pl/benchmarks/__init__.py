"""Benchmarks (one module each) and the calls that pick one by name or by file."""

from __future__ import annotations

from pathlib import Path

from r1aqa_pl.benchmarks.base import Benchmark
from r1aqa_pl.benchmarks.mmar import MMAR
from r1aqa_pl.benchmarks.mmau import MMAU

__all__ = ["BENCHMARKS", "Benchmark", "benchmark_for", "get"]

# name -> benchmark; a new benchmark is one module plus one line here
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (MMAU(), MMAR())}


def get(name: str | Benchmark) -> Benchmark:
    if isinstance(name, Benchmark):
        return name
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_for(path: str | Path, name: str | None = None) -> Benchmark:
    """The benchmark named ``name``, else the one that recognises the file; an error names both otherwise."""
    if name is not None:
        return get(name)
    from r1aqa_pl.data.formats import detect_format

    fmt = detect_format(path)  # one read of the file; each benchmark's `matches` decides inside
    if fmt in BENCHMARKS:
        return BENCHMARKS[fmt]
    raise ValueError(f"{path}: not a file of any known benchmark ({', '.join(BENCHMARKS)}); "
                     "name one with --benchmark, or check the file's format")
