"""What produced a prediction file, written beside it, so that two numbers can be compared and a
mismatch explained: the model and its family, the prompt (template and the first item rendered), the
decoding settings, the answer-extraction rule, the benchmark and its version, the seed and the
package versions."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from r1aqa_pl.task import answer_format

PACKAGES = ("r1aqa-pl", "torch", "transformers", "lightning", "torchmetrics", "torchaudio", "peft", "deepspeed")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a score depends on (None where absent), and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(benchmark, version: str, data: str | None, module: Any = None, first=None, **extra) -> dict:
    """The record: ``module.describe_evaluation(first)`` (model, family, prompt, decoding) where the module
    has it, the benchmark's name, version, answer key and extraction rule, the seed and the packages."""
    rule = (benchmark.extract.__doc__ or "").strip().splitlines()[0]
    record = {
        "benchmark": benchmark.name, "version": version, "data": data,
        "prediction_key": benchmark.prediction_key,
        "answer_extraction": rule + " " + (answer_format.extract_answer.__doc__ or "").strip().replace("\n    ", " "),
        "seed": os.environ.get("PL_GLOBAL_SEED"),
        **extra,
    }
    describe = getattr(module, "describe_evaluation", None)
    if describe is not None and first is not None:
        record.update(describe(first))
    record["packages"] = package_versions()
    return record


def write_provenance(record: dict, predictions: str | Path) -> Path:
    """``<predictions stem>.provenance.json`` beside the prediction file."""
    predictions = Path(predictions)
    path = predictions.with_name(predictions.name.split(".")[0] + ".provenance.json")
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return path
