"""``r1aqa eval`` / ``make eval`` and ``r1aqa eval-all``: score checkpoints on a benchmark.

Evaluation is ``trainer.validate`` with the same :class:`~r1aqa_pl.benchmarks.callback.BenchmarkEvaluation`
callback that scores during training, so the numbers are the ones a training run logs (and Lightning's
progress bar shows the way). Records are never scored as wrong or dropped behind the user's back:
a record whose audio is missing or unreadable is kept in ``predictions.json`` without a prediction
(the official scorers skip such records) and with ``not_scored: <reason>``, and the counts per
reason are printed and stored in ``results.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from r1aqa_pl.benchmarks import Benchmark, benchmark_for, get
from r1aqa_pl.benchmarks.callback import record_identity
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.data.formats import check_audio
from r1aqa_pl.eval.checkpoints import _sibling_ckpt, default_out, is_deepspeed_dir, is_hf_dir, load_for_eval
from r1aqa_pl.models import Dtype
from r1aqa_pl.records import DataError, Question

DEFAULT_DATA = "data/mmau/mmau-test-mini.json"


def _data_file(data: str) -> str:
    """``data`` if it exists; otherwise a message that says where a benchmark's files come from."""
    if Path(data).is_file():
        return data
    raise FileNotFoundError(
        f"{data}: benchmark file not found. MMAU test-mini: download mmau-test-mini.json and test-mini-audios.tar.gz "
        "from the MMAU project (github.com/Sakshi113/MMAU), unpack the audio beside the JSON so that its "
        "audio_id paths resolve, and pass --data path/to/mmau-test-mini.json (make eval DATA=...); "
        f"the default is {DEFAULT_DATA} under the working directory")


class EvalDataModule(AudioQADataModule):
    """The training data module's reading and start-up checks; a validation clip that fails to decode is
    reported in the batch's ``failed`` list, never replaced by the next record (which would score that
    record twice)."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if "val" in self.datasets:
            self.datasets["val"].on_error = "report"

    def val_dataloader(self):
        return self._loader("val", self.hparams.val_batch_size, collate_fn=_collate)


def _collate(batch: list[dict]) -> dict:
    ok = [b for b in batch if "error" not in b]
    return {"questions": [b["question"] for b in ok], "audio": [b["audio"] for b in ok],
            "failed": [(b["question"], b["error"]) for b in batch if "error" in b]}


def _reasons(bench: Benchmark, data: str, audio_dir: str | None, with_audio: bool) -> list[str | None]:
    """Per source record: why it cannot be scored at start-up (bad fields, missing/unreadable audio), or None."""
    out = []
    for item in bench.iter_questions(data, audio_dir):
        if isinstance(item, Question) and with_audio:
            item = check_audio(item)
        out.append(item.reason if isinstance(item, DataError) else None)
    return out



def evaluate(
    *,
    checkpoint: str,
    data: str = DEFAULT_DATA,
    benchmark: str | None = None,
    audio_dir: str | None = None,
    out: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    accelerator: str = "auto",
    num_workers: int = 0,
    dtype: Dtype | None = None,
) -> dict:
    """Score a checkpoint on a benchmark file (greedy answers) and print the per-domain table.

    Writes ``OUT/predictions.json`` (the benchmark's records, each with the benchmark's output and
    prediction keys, for MMAU ``model_output`` and ``model_prediction``; records that could not be
    scored keep neither and carry ``not_scored`` with the reason) and ``OUT/results.json`` (the
    benchmark scorer's result plus checkpoint, step, data and the counts of records not scored, by reason).

    Args:
        checkpoint: a Lightning ``.ckpt`` file, a DeepSpeed checkpoint folder, a Hugging Face model
            folder (e.g. the ``_hf`` folder beside a checkpoint) or a hub id.
        data: the benchmark file (MMAU: the JSON list, relative ``audio_id`` paths resolved against its folder).
        benchmark: the benchmark's name (``mmau``); default: recognised from the file.
        audio_dir: folder the audio paths are relative to, instead of the data file's folder.
        out: output folder; default ``<ckpt stem>_eval/`` beside a ``.ckpt`` file, ``<folder>/eval/``
            for a folder, ``./eval_<name>`` for a hub id.
        batch_size: questions per generation batch.
        max_new_tokens: generation length; default: the checkpoint's ``eval_max_new_tokens`` (256 for
            an HF folder, the paper's setting).
        limit: score only the first N records that can be scored (a quick look); the rest are
            reported as not scored (``beyond_limit``).
        with_audio: False asks the questions without their audio (the audio-free ablation).
        accelerator: Lightning accelerator ("auto" takes a GPU when there is one).
        num_workers: DataLoader worker processes for audio decoding.
        dtype: weights dtype (``bfloat16`` on a GPU); default: the checkpoint's (float32 for a hub id).

    Returns:
        The dict written to ``results.json``.
    """
    import lightning as L

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation

    t0 = time.time()
    bench = benchmark_for(_data_file(data), benchmark)
    out_dir = Path(out) if out else default_out(checkpoint)
    module, info = load_for_eval(checkpoint, max_new_tokens, with_audio, dtype)
    dm = EvalDataModule(val_file=data, audio_dir=audio_dir, feature_extractor=None,
                        val_batch_size=batch_size, num_workers=num_workers, on_error="skip", max_skip_fraction=1.0,
                        with_audio=with_audio, limit_val=limit)
    # sampling rate and window from the loaded model's own processor (no second download)
    fe = module.processor.feature_extractor
    dm.sampling_rate = int(fe.sampling_rate)
    dm.max_samples = int(getattr(fe, "n_samples", None) or 30 * fe.sampling_rate)
    dm.setup("validate")
    n_questions = len(dm.datasets["val"])

    failed: list[tuple[Question, str]] = []
    logged: dict[str, float] = {}
    written: list[dict] = []
    if n_questions:
        class _Failures(L.Callback):
            def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
                failed.extend(batch.get("failed", []))

        with tempfile.TemporaryDirectory(prefix="r1aqa_eval_") as tmp:
            trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                enable_model_summary=False, num_sanity_val_steps=0,
                                callbacks=[BenchmarkEvaluation(bench.name, dirpath=tmp), _Failures()])
            metrics = trainer.validate(module, datamodule=dm, verbose=False)
            logged = {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}
            files = sorted(Path(tmp).glob("val_step*.json"))
            written = json.loads(files[-1].read_text(encoding="utf-8")) if files else []

    # the source list, in order: each record with its prediction or the reason it has none
    source = bench.load_records(data)
    reasons = _reasons(bench, data, audio_dir, with_audio)
    added = (bench.output_key, bench.prediction_key, "not_scored")
    by_identity = {record_identity(r, added): r for r in written}
    read_failures = {record_identity(q.raw, added): reason for q, reason in failed if q.raw}
    predictions: list[dict] = []
    not_scored: Counter = Counter()
    for rec, reason in zip(source, reasons):
        key = record_identity(rec, added) if isinstance(rec, dict) else None
        if key in by_identity:
            predictions.append(by_identity[key])
            continue
        reason = reason or read_failures.get(key) or ("beyond_limit" if limit else "not_answered")
        not_scored[reason] += 1
        predictions.append({**rec, "not_scored": reason} if isinstance(rec, dict) else rec)

    # the scorer's own rule skips records without a prediction; a record too broken to parse
    # (no choices, not an object) would stop it, so only answered records go in
    result = bench.score_records([r for r in predictions if isinstance(r, dict) and bench.prediction_key in r],
                                 source=str(out_dir / "predictions.json"))
    result["skipped"] = len(predictions) - result["scored"]
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "kind": info["kind"], "model": info.get("model"), "step": info.get("step"),
        "data": str(data), "audio_dir": audio_dir, "with_audio": with_audio, "limit": limit,
        "batch_size": batch_size, "max_new_tokens": module.hparams.eval_max_new_tokens,
        "records": len(source), "not_scored": dict(not_scored), "logged": logged,
        "seconds": round(time.time() - t0, 2), **result,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "predictions.json").write_text(json.dumps(predictions, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")

    step = "" if results["step"] is None else f" (step {results['step']})"
    print(f"{checkpoint}{step} on {data}")
    print(bench.format_table(result))
    print(not_scored_line(results, out_dir / "results.json"))
    print(f"predictions: {out_dir / 'predictions.json'}")
    return results


def not_scored_line(results: dict, where: str | Path = "results.json") -> str:
    """E.g. ``999 of 1000 records NOT scored: missing_audio (see eval/results.json)``."""
    counts = results.get("not_scored") or {}
    n, total = sum(counts.values()), results.get("records", results.get("scored", 0))
    if not n:
        return f"all {total} records scored"
    why = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{n} of {total} records NOT scored: {why} (see {where})"


# ---------------------------------------------------------------- eval-all

def find_checkpoints(run: str | Path) -> list[Path]:
    """Every checkpoint of a run folder: ``*.ckpt`` files and DeepSpeed ``*.ckpt`` folders, recursively,
    each replaced by its ``_hf`` folder when that exists (no state-dict conversion needed)."""
    found = []
    for p in sorted(Path(run).rglob("*.ckpt")):
        if any(part.startswith(".") for part in p.relative_to(run).parts) or not (p.is_file() or is_deepspeed_dir(p)):
            continue  # hidden folders hold temporary conversions
        hf = p.with_name(p.name[: -len(".ckpt")] + "_hf")
        found.append(hf if is_hf_dir(hf) else p)
    return found


def accuracy_table(rows: list[dict], root: str | Path | None = None) -> str:
    """One line per evaluated checkpoint, best total first: step, each bucket of the benchmark's first
    group (MMAU: sound, music, speech), total (%), as R1-AQA's ``show_acc.py`` prints them."""
    first = get(rows[0].get("benchmark", "mmau") if rows else "mmau").groups[0]
    columns = (*first.known, "total")

    def acc(r: dict, name: str) -> float:
        cell = r["total"] if name == "total" else r.get(first.name, {}).get(name)
        return 100 * cell["acc"] if cell and cell.get("total") else float("nan")

    def label(r: dict) -> str:
        p = Path(r["checkpoint"])
        try:
            return str(p.relative_to(root)) if root else str(p)
        except ValueError:
            return str(p)

    rows = sorted(rows, key=lambda r: acc(r, "total"), reverse=True)
    width = max([10] + [len(label(r)) for r in rows]) + 2
    head = f"{'checkpoint':<{width}}{'step':>7}" + "".join(f"{d:>9}" for d in columns) + f"{'scored':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        step = "" if r.get("step") is None else str(r["step"])
        lines.append(f"{label(r):<{width}}{step:>7}" + "".join(f"{acc(r, d):>9.2f}" for d in columns)
                     + f"{r.get('scored', 0):>8}")
    return "\n".join(lines)


def evaluate_all(
    *,
    run: str,
    data: str = DEFAULT_DATA,
    benchmark: str | None = None,
    audio_dir: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    force: bool = False,
    dtype: Dtype | None = None,
) -> list[dict]:
    """Evaluate every checkpoint of a run folder on a benchmark and print one table, best total accuracy first.

    Each ``*.ckpt`` (file or DeepSpeed folder) found recursively is evaluated through its ``_hf``
    folder when there is one; results go to that checkpoint's default output folder (see
    :func:`evaluate`). Checkpoints whose ``results.json`` already exists are not evaluated again.

    Args:
        run: the run folder (e.g. ``checkpoints/demo``).
        data: the benchmark file.
        benchmark: the benchmark's name; default: recognised from the file.
        audio_dir: folder the audio paths are relative to, instead of the data file's folder.
        batch_size: questions per generation batch.
        max_new_tokens: generation length; default: each checkpoint's own.
        limit: score only the first N scorable records.
        with_audio: False asks the questions without their audio.
        force: evaluate again even where ``results.json`` exists.
        dtype: weights dtype (``bfloat16`` on a GPU); default: each checkpoint's own.

    Returns:
        The results of every checkpoint (stored ones included), best total accuracy first.
    """
    rows = []
    checkpoints = find_checkpoints(run)
    if not checkpoints:
        print(f"no *.ckpt under {run}")
        return []
    for ckpt in checkpoints:
        # an earlier `r1aqa eval` of the .ckpt itself counts as well as one of its _hf folder
        done = [d / "results.json" for d in (default_out(ckpt), default_out(_sibling_ckpt(ckpt) or ckpt))
                if (d / "results.json").is_file()]
        if done and not force:
            print(f"[eval-all] {ckpt}: already evaluated ({done[0]}), skipped")
            rows.append(json.loads(done[0].read_text(encoding="utf-8")))
            continue
        print(f"[eval-all] {ckpt}")
        rows.append(evaluate(checkpoint=str(ckpt), data=data, benchmark=benchmark, audio_dir=audio_dir, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, limit=limit, with_audio=with_audio, dtype=dtype))
    rows.sort(key=lambda r: r["total"]["acc"] if r["total"]["total"] else -1.0, reverse=True)
    print()
    print(accuracy_table(rows, run))
    return rows
