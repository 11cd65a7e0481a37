"""``r1aqa score``: a benchmark's official rule on a prediction file, as a table or JSON."""

from __future__ import annotations

import json as _json
import sys

from r1aqa_pl.benchmarks import get
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError


def score(predictions: str, benchmark: str = "mmau", key: str | None = None, json: bool = False,
          benchmark_version: str | None = None) -> dict:
    """Score a prediction file with a benchmark's official rule and print the per-domain table.

    Args:
        predictions: the benchmark's records with a prediction added to each (MMAU: the JSON list;
            MMAR: its JSONL).
        benchmark: the benchmark's name (``mmau``, ``mmar``).
        key: the record key holding the prediction (default: the benchmark's own, MMAU ``model_prediction``,
            MMAR ``answer_prediction``); records without it are skipped, as the official scorers do.
        json: print the result as JSON instead of a table.
        benchmark_version: the file's version when it is not an official release (those are recognised).
    """
    bench = get(benchmark)
    try:
        records = read_records(predictions)
        if bench.withheld(records):
            raise DataError(predictions, "file", "answers_withheld",
                            f"no record has an answer ({bench.title} test split?): no score can be computed "
                            "locally; submit the file to the benchmark's evaluation server")
        result = bench.score_records(records, key=key, source=predictions)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    result["version"] = bench.version(records, benchmark_version)
    print(_json.dumps(result, indent=2) if json else bench.format_table(result))
    sys.stdout.flush()
    return result
