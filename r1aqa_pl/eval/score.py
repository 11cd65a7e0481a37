"""``r1aqa score``: a benchmark's official rule on a prediction file, as a table or JSON."""

from __future__ import annotations

import difflib
import json as _json
import sys

from r1aqa_pl.benchmarks import benchmark_for
from r1aqa_pl.benchmarks.stats import RESAMPLES, SEED
from r1aqa_pl.task.files import read_entries
from r1aqa_pl.task.question import DataError


def score(predictions: str, benchmark: str | None = None, key: str | None = None, json: bool = False,
          benchmark_version: str | None = None, bootstrap: int = RESAMPLES, seed: int = SEED) -> dict:
    """Score a prediction file with a benchmark's official rule and print the per-domain table.

    Fails (exit 1) when no record could be scored: a score of nothing is not a score. Every accuracy carries
    its 95 % interval (percentile bootstrap over questions; docs/benchmarks.md, "Robust scores").

    Args:
        predictions: the benchmark's records with a prediction added to each (MMAU: the JSON list;
            MMAR: its JSONL).
        benchmark: the benchmark's name (``mmau``, ``mmar``); default: recognised from the file.
        key: the record key holding the prediction (default: the benchmark's own, MMAU ``model_prediction``,
            MMAR ``answer_prediction``); records without it are skipped, as the official scorers do.
        json: print the result as JSON instead of a table.
        benchmark_version: the file's version when it is not an official release (those are recognised).
        bootstrap: bootstrap resamples of every interval (0: no intervals).
        seed: bootstrap seed.
    """
    read = read_entries(predictions)
    bench, entries = benchmark_for(predictions, benchmark, read), read[1]
    # records named as check-data names them: "line N" (1-based) in JSON lines, "record N" (0-based) in a list
    where = [w if w.startswith("line") else f"{w} (0-based)" for w, _, _ in entries]
    records = [rec for _, _, rec in entries]
    if broken := next((rec for rec in records if isinstance(rec, DataError)), None):
        raise broken
    if bench.withheld(records):
        raise DataError(predictions, "file", "answers_withheld",
                        f"no record has an answer ({bench.title} test split?): no score can be computed "
                        "locally; submit the file to the benchmark's evaluation server")
    if bootstrap < 0:
        raise ValueError(f"--bootstrap {bootstrap}: 0 (no intervals) or more resamples")
    result = bench.score_records(records, key=key, source=predictions, where=where, bootstrap=bootstrap, seed=seed)
    result["version"] = bench.version(records, benchmark_version)
    print(_json.dumps(result, indent=2) if json else bench.format_table(result))
    sys.stdout.flush()
    if not result["scored"]:
        raise DataError(predictions, "file", "nothing_scored", f"0 of {len(records)} records scored: "
                        f"{_no_key(records, result['key'], bench)}")
    return result


def _no_key(records: list[dict], key: str, bench) -> str:
    """Why no record has ``key``: the keys the records do have that look like a prediction (a typo in --key)."""
    seen: dict[str, int] = {}
    for r in records:
        for k in r:
            seen[k] = seen.get(k, 0) + 1
    own = {bench.prediction_key, bench.output_key, *bench.extra_prediction_keys}
    likely = [k for k in seen if k in own or any(w in k.lower() for w in ("pred", "output", "response"))]
    likely += [k for k in difflib.get_close_matches(key, list(seen), n=3, cutoff=0.6) if k not in likely]
    found = ", ".join(f"{k!r} ({seen[k]} records)" for k in likely)
    return (f"no record has the prediction key {key!r}; " +
            (f"prediction-like keys in the records: {found}: pass one with --key" if found else
             "no prediction-like key in the records either (the benchmark's file without predictions?)"))
