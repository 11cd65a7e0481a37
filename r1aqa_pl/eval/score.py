"""``r1aqa score``: a benchmark's official rule on a prediction file, as a table or JSON."""

from __future__ import annotations

import json as _json
import sys

from r1aqa_pl.benchmarks import get
from r1aqa_pl.records import DataError


def score(predictions: str, benchmark: str = "mmau", key: str | None = None, json: bool = False) -> None:
    """Score a prediction file with a benchmark's official rule and print the per-domain table.

    Args:
        predictions: the benchmark's records with a prediction added to each (MMAU: the JSON list).
        benchmark: the benchmark's name (``mmau``).
        key: the record key holding the prediction (default: the benchmark's own, MMAU ``model_prediction``);
            records without it are skipped, as the official scorers do.
        json: print the result as JSON instead of a table.
    """
    bench = get(benchmark)
    try:
        result = bench.score_records(bench.load_records(predictions), key=key, source=predictions)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(_json.dumps(result, indent=2) if json else bench.format_table(result))
    sys.stdout.flush()
