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

import lightning as L
import numpy as np
import torch

from r1aqa_pl.benchmarks import Benchmark, benchmark_for, get
from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation, record_identity
from r1aqa_pl.benchmarks.provenance import provenance, write_provenance
from r1aqa_pl.benchmarks.stats import RESAMPLES, SEED, permuted
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.data.formats import check_audio, iter_questions
from r1aqa_pl.eval.checkpoints import (
    _sibling_ckpt,
    checkpoint_kind,
    default_out,
    is_deepspeed_dir,
    is_hf_dir,
    load_for_eval,
)
from r1aqa_pl.eval.robust import (
    check_settings,
    format_robust,
    robust_provenance,
    robust_scores,
    write_extra,
)
from r1aqa_pl.models import Dtype
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError, Question

DEFAULT_BENCHMARK = "mmau"


def resolve_data(data: str | None, benchmark: str | None) -> tuple[str, Benchmark]:
    """The benchmark file (``data``, else the benchmark's default path) and its benchmark (named, else
    recognised from the file); a missing file raises a message that says where the benchmark comes from."""
    named = get(benchmark or DEFAULT_BENCHMARK)
    data = data or named.default_data
    if not Path(data).is_file():
        raise FileNotFoundError(
            f"{data}: benchmark file not found. {named.title}: download {named.download}, and pass "
            f"--data path/to/file (make eval DATA=...); the default for --benchmark {named.name} is "
            f"{named.default_data} under the working directory")
    return data, benchmark_for(data, benchmark)


class EvalDataModule(AudioQADataModule):
    """The training data module's reading and start-up checks; a validation clip that fails to decode is
    reported in the batch's ``failed`` list, never replaced by the next record (which would score that
    record twice). A file without answers (a test split) is answered for its submission file."""

    allow_withheld = True

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if "val" in self.datasets:
            self.datasets["val"].on_error = "report"

    def val_dataloader(self):
        return self._loader("val", self.hparams.val_batch_size, collate_fn=_collate)


def batch_seed(seed: int, batch_idx: int) -> int:
    """torch's seed for one batch's samples: the run's seed and the batch's index (same batches, same samples)."""
    return int(np.random.SeedSequence([seed, batch_idx]).generate_state(1)[0])


class RobustAnswers(L.Callback):
    """After each validation batch's greedy answers: the same questions greedily under K - 1 other choice orders,
    and K sampled answers each, kept as prediction records by the question's source record
    (``answers[identity] = {"orders": [...], "samples": [...]}``).

    The samples are drawn under ``torch.manual_seed(batch_seed(seed, batch_idx))`` in a forked generator, so the
    greedy answers and anything after are untouched, and the same seed, batch size and device give the same samples.
    """

    def __init__(self, benchmark: Benchmark, permutations: int = 1, samples: int = 0, temperature: float = 1.0,
                 seed: int = SEED):
        self.benchmark, self.permutations, self.samples = benchmark, permutations, samples
        self.temperature, self.seed = temperature, seed
        self.answers: dict[str, dict[str, list[dict]]] = {}  # record_identity of the source record -> answers

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        questions, audio = batch["questions"], batch.get("audio")
        if not questions:  # every clip of the batch failed to decode
            return
        audio = [None] * len(questions) if audio is None else audio
        bench = self.benchmark
        entries = [{"orders": [], "samples": []} for _ in questions]
        if self.permutations > 1:
            orders = [permuted(q, self.permutations, self.seed) for q in questions]
            for j in range(1, self.permutations):
                asked = [o[j] for o in orders]
                for e, q, text in zip(entries, asked, pl_module.answer(asked, audio)):
                    e["orders"].append(bench.prediction_record(q, text))
        if self.samples:
            cuda = pl_module.device.type == "cuda"
            with torch.random.fork_rng(devices=[pl_module.device] if cuda else []):
                torch.manual_seed(batch_seed(self.seed, batch_idx))
                texts = pl_module.sample_answers(questions, audio, self.samples, self.temperature)
            for e, q, answers in zip(entries, questions, texts):
                e["samples"] = [bench.prediction_record(q, t) for t in answers]
        for q, e in zip(questions, entries):
            self.answers[record_identity(q.raw or q.to_dict())] = e


def _collate(batch: list[dict]) -> dict:
    ok = [b for b in batch if "error" not in b]
    return {"questions": [b["question"] for b in ok], "audio": [b["audio"] for b in ok],
            "failed": [(b["question"], b["error"]) for b in batch if "error" in b]}


def _reasons(bench: Benchmark, data: str, audio_dir: str | None, with_audio: bool) -> list[str | None]:
    """Per source record: why it cannot be scored at start-up (bad fields, missing/unreadable audio), or None."""
    out = []
    for item in iter_questions(data, audio_dir, fmt=bench):
        if isinstance(item, Question) and with_audio:
            item = check_audio(item)
        out.append(item.reason if isinstance(item, DataError) else None)
    return out



def evaluate(
    *,
    checkpoint: str,
    data: str | None = None,
    benchmark: str | None = None,
    benchmark_version: str | None = None,
    audio_dir: str | None = None,
    out: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    accelerator: str = "auto",
    num_workers: int = 0,
    dtype: Dtype | None = None,
    permutations: int = 1,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = SEED,
    bootstrap: int = RESAMPLES,
) -> dict:
    """Score a checkpoint on a benchmark file (greedy answers) and print the per-domain table.

    Writes ``OUT/predictions.json`` (``.jsonl`` for a JSON-lines benchmark such as MMAR: the benchmark's
    records, each with the benchmark's output and prediction keys, for MMAU ``model_output`` and
    ``model_prediction``; records that could not be scored keep neither and carry ``not_scored`` with
    the reason), ``OUT/predictions.provenance.json`` (model, family, prompt, decoding, answer rule,
    benchmark version, seed, packages) and ``OUT/results.json`` (the scorer's result with chance levels,
    plus checkpoint, step, data, version and the counts of records not scored, by reason). On a file
    without answers (the MMAU test set) it writes ``OUT/submission.json`` for the benchmark's evaluation
    server and prints counts instead of accuracy: no score can be computed locally. When no record can be
    scored (every clip missing or unreadable) it fails and writes nothing: there is no accuracy to report.

    Every accuracy carries a 95 % interval (percentile bootstrap over questions, ``cells: ci: [lo, hi]``).
    ``--permutations K`` and ``--samples K`` add the robust scores (docs/benchmarks.md, "Robust scores"):
    ``results.json``'s ``robust``, a table, and the extra answers as prediction files beside
    ``predictions.json`` (``predictions.order<j>.json``, ``predictions.sample<i>.json``,
    ``predictions.majority.json``), each re-scorable with ``r1aqa score``.

    Args:
        checkpoint: a Lightning ``.ckpt`` file, a DeepSpeed checkpoint folder, a Hugging Face model
            folder (e.g. the ``_hf`` folder beside a checkpoint) or a hub id.
        data: the benchmark file (MMAU: the JSON list, relative ``audio_id`` paths resolved against its
            folder); default: the benchmark's usual place (``data/mmau/mmau-test-mini.json``,
            ``data/mmar/MMAR-meta.jsonl``).
        benchmark: the benchmark's name (``mmau``, ``mmar``); default: recognised from the file.
        benchmark_version: the file's version when it is not an official release (those are recognised).
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
        permutations: answer each question under K orders of its choices (the given one, then K - 1 seeded
            permutations; the answer is the choice string, so it follows): accuracy per order, their mean, the
            worst order and consistency (right under all K). 1: the given order only.
        samples: K sampled answers per question at ``temperature`` (seeded): their mean accuracy, majority-vote
            accuracy and pass@K beside greedy. 0: none.
        temperature: the sampling temperature of ``--samples`` (top_p 1, top_k 0).
        seed: seeds the permutations, the samples and the bootstrap.
        bootstrap: bootstrap resamples of every interval (0: no intervals).

    Returns:
        The dict written to ``results.json``.
    """
    t0 = time.time()
    check_settings(permutations, samples, temperature, bootstrap)
    checkpoint_kind(checkpoint)  # a mistyped path fails now, before the data is read
    data, bench = resolve_data(data, benchmark)
    robust = permutations > 1 or samples > 0
    if robust and bench.withheld(read_records(data)):
        raise DataError(data, "file", "answers_withheld", "no record has an answer: --permutations and --samples "
                        "score the answers, and this file's are with the benchmark; evaluate it without them")
    out_dir = Path(out) if out else default_out(checkpoint)
    reasons = _reasons(bench, data, audio_dir, with_audio)
    if all(reasons):  # before loading the model: nothing to answer
        _nothing_scored(data, Counter(reasons), audio_dir)
    module, info = load_for_eval(checkpoint, max_new_tokens, with_audio, dtype)
    dm = EvalDataModule(val_file=data, audio_dir=audio_dir, feature_extractor=None,
                        val_batch_size=batch_size, num_workers=num_workers, on_error="skip", max_skip_fraction=1.0,
                        with_audio=with_audio, limit_val=limit,
                        val_versions={bench.name: benchmark_version} if benchmark_version else None)
    # sampling rate and window from the loaded model's own processor (no second download)
    fe = module.processor.feature_extractor
    dm.sampling_rate = int(fe.sampling_rate)
    dm.max_samples = int(getattr(fe, "n_samples", None) or 30 * fe.sampling_rate)
    dm.setup("validate")
    n_questions = len(dm.datasets["val"])

    failed: list[tuple[Question, str]] = []
    logged: dict[str, float] = {}
    written: list[dict] = []
    extra = RobustAnswers(bench, permutations, samples, temperature, seed) if robust else None
    if n_questions:
        class _Failures(L.Callback):
            def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
                failed.extend(batch.get("failed", []))

        with tempfile.TemporaryDirectory(prefix="r1aqa_eval_") as tmp:
            scorer = BenchmarkEvaluation(bench, dirpath=tmp)
            callbacks = [scorer, extra, _Failures()] if extra else [scorer, _Failures()]
            trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks)
            metrics = trainer.validate(module, datamodule=dm, verbose=False)
            logged = {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}
            if None in scorer.written:
                try:
                    written = read_records(scorer.written[None])
                except DataError as e:  # every clip failed to decode: an empty list, said below
                    if e.reason != "no_records":
                        raise

    # the source list, in order: each record with its prediction or the reason it has none
    source = read_records(data)
    version = bench.version(source, benchmark_version)
    withheld = bench.withheld(source)
    added = (bench.output_key, bench.prediction_key, *bench.extra_prediction_keys, "not_scored")
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

    answered = [r for r in predictions if isinstance(r, dict) and bench.prediction_key in r]
    if not answered:  # every clip failed to decode: a 0.00 % table would be a score of nothing
        _nothing_scored(data, not_scored, audio_dir)
    if withheld:  # counts per bucket of the first group; the answers are the benchmark's
        first = bench.groups[0]
        result = {"benchmark": bench.name, "answers_withheld": True, "answered": len(answered),
                  first.name: dict(Counter(str(r.get(first.record_key) or "other") for r in answered))}
    else:
        # the scorer's own rule skips records without a prediction; a record too broken to parse
        # (no choices, not an object) would stop it, so only answered records go in
        result = bench.score_records(answered, source=str(out_dir / "predictions.json"), bootstrap=bootstrap,
                                     seed=seed)
        result["skipped"] = len(predictions) - result["scored"]
    result["version"] = version
    jsonl = data.endswith(".jsonl")
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "kind": info["kind"], "model": info.get("model"), "step": info.get("step"),
        "data": str(data), "audio_dir": audio_dir, "with_audio": with_audio, "limit": limit,
        "batch_size": batch_size, "max_new_tokens": module.evaluation.max_new_tokens,
        "records": len(source), "not_scored": dict(not_scored), "logged": logged,
        "seconds": round(time.time() - t0, 2),
        "settings": score_settings(permutations, samples, temperature, seed, bootstrap), **result,
    }
    if extra is not None:
        keys = [record_identity(r, added) if isinstance(r, dict) and bench.prediction_key in r else None
                for r in predictions]
        results["robust"] = robust_scores(bench, predictions, keys, extra.answers, result,
                                          permutation_seed=seed, temperature=temperature, sample_seed=seed,
                                          bootstrap=bootstrap, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_path = bench.write_records(predictions, out_dir / f"predictions.{'jsonl' if jsonl else 'json'}", jsonl)
    if extra is not None:
        results["robust"]["files"] = write_extra(bench, predictions, keys, extra.answers, out_dir, jsonl)
    first_q = dm.datasets["val"].questions[0] if n_questions else None
    write_provenance(provenance(bench, version, data, module, first_q, checkpoint=str(checkpoint),
                                step=info.get("step"), limit=limit,
                                **robust_provenance(permutations, samples, temperature, seed, bootstrap)), pred_path)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")

    step = "" if results["step"] is None else f" (step {results['step']})"
    print(f"{checkpoint}{step} on {data} ({bench.title}, version {version})")
    if withheld:
        submission = bench.write_records([bench.submission_record(r) for r in predictions],
                                         out_dir / f"submission.{'jsonl' if jsonl else 'json'}", jsonl)
        per = ", ".join(f"{k} {v}" for k, v in result[bench.groups[0].name].items())
        print(f"{bench.title}: answers withheld: NO score can be computed locally. Answered {len(answered)} of "
              f"{len(source)} questions ({per}).\nsubmission file for the benchmark's evaluation server: {submission}")
    else:
        print(bench.format_table(result))
    if extra is not None:
        print(format_robust(bench, results["robust"]))
    print(not_scored_line(results, out_dir / "results.json"))
    print(f"predictions: {pred_path}")
    return results


def _nothing_scored(data: str, reasons: Counter, audio_dir: str | None) -> None:
    """Stop, writing nothing: no record could be answered, so there is no accuracy to report."""
    why = ", ".join(f"{k} {v}" for k, v in reasons.most_common())
    check = f"r1aqa check-data --val {data}" + (f" --audio_dir {audio_dir}" if audio_dir else "")
    raise DataError(data, "file", "nothing_scored", f"none of its {sum(reasons.values())} records could be scored "
                    f"({why}): no accuracy written; `{check}` lists why record by record")


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
    group (MMAU: sound, music, speech), total (%), as R1-AQA's ``show_acc.py`` prints them; then the
    chance level of a uniform guess among each item's choices. Titled with the benchmark and its version; the
    total's 95 % interval where the results have one."""
    bench = get(rows[0].get("benchmark", "mmau") if rows else "mmau")
    first = bench.groups[0]
    seen = [n for r in rows for n in r.get(first.name, {})]
    columns = (*bench.ordered(first, set(seen)), "total")

    def acc(r: dict, name: str, key: str = "acc") -> float:
        cell = r["total"] if name == "total" else r.get(first.name, {}).get(name)
        return 100 * cell[key] if cell and cell.get("total") and key in cell else float("nan")

    def label(r: dict) -> str:
        p = Path(r["checkpoint"])
        try:
            return str(p.relative_to(root)) if root else str(p)
        except ValueError:
            return str(p)

    rows = sorted(rows, key=lambda r: acc(r, "total"), reverse=True)
    width = max([10] + [len(label(r)) for r in rows]) + 2
    versions = sorted({str(r.get("version", "unknown")) for r in rows})
    with_ci = any("ci" in r.get("total", {}) for r in rows)

    def ci(r: dict) -> str:
        lo_hi = r.get("total", {}).get("ci")
        return f"{f'[{100 * lo_hi[0]:.2f}, {100 * lo_hi[1]:.2f}]' if lo_hi else '':>18}" if with_ci else ""

    head = (f"{'checkpoint':<{width}}{'step':>7}" + "".join(f"{d[:10]:>11}" for d in columns)
            + (f"{'total 95 % CI':>18}" if with_ci else "") + f"{'scored':>8}")
    lines = [f"{bench.title} ({', '.join(versions)}), accuracy %", head, "-" * len(head)]
    for r in rows:
        step = "" if r.get("step") is None else str(r["step"])
        lines.append(f"{label(r):<{width}}{step:>7}" + "".join(f"{acc(r, d):>11.2f}" for d in columns)
                     + ci(r) + f"{r.get('scored', 0):>8}")
    if rows and "chance" in rows[0].get("total", {}):
        lines.append(f"{'chance (uniform guess)':<{width}}{'':>7}" + "".join(f"{acc(rows[0], d, 'chance'):>11.2f}"
                                                                           for d in columns))
    return "\n".join(lines)


def score_settings(permutations: int = 1, samples: int = 0, temperature: float = 1.0, seed: int = SEED,
                   bootstrap: int = RESAMPLES) -> dict:
    """What, beside the checkpoint and the data, decides a ``results.json``: the robust scores asked for and the
    intervals' resampling (an earlier result is reused by ``eval-all`` only when they are the same)."""
    return {"permutations": permutations, "samples": samples, "temperature": temperature if samples else None,
            "seed": seed, "bootstrap": bootstrap}


def evaluate_all(
    *,
    run: str,
    data: str | list[str] | None = None,
    benchmark: str | None = None,
    audio_dir: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    force: bool = False,
    dtype: Dtype | None = None,
    permutations: int = 1,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = SEED,
    bootstrap: int = RESAMPLES,
) -> dict[str, list[dict]]:
    """Evaluate every checkpoint of a run folder on one or more benchmark files and print one table per
    file, best total accuracy first.

    Each ``*.ckpt`` (file or DeepSpeed folder) found recursively is evaluated through its ``_hf``
    folder when there is one; results go to that checkpoint's default output folder (see
    :func:`evaluate`), in a subfolder per file (its name without extension) when there are several.
    Checkpoints whose ``results.json`` already exists with the same robust-score settings are not evaluated again.

    Args:
        run: the run folder (e.g. ``checkpoints/demo``).
        data: a benchmark file or several (``--data '[mmau-test-mini.json, MMAR-meta.jsonl]'``); default:
            the benchmark's usual place.
        benchmark: the benchmark's name for every file; default: recognised from each file.
        audio_dir: folder the audio paths are relative to, instead of the data file's folder.
        batch_size: questions per generation batch.
        max_new_tokens: generation length; default: each checkpoint's own.
        limit: score only the first N scorable records.
        with_audio: False asks the questions without their audio.
        force: evaluate again even where ``results.json`` exists.
        dtype: weights dtype (``bfloat16`` on a GPU); default: each checkpoint's own.
        permutations, samples, temperature, seed, bootstrap: the robust scores and intervals, as :func:`evaluate`
            takes them, for every checkpoint.

    Returns:
        Per data file, the results of every checkpoint (stored ones included), best total accuracy first.
    """
    check_settings(permutations, samples, temperature, bootstrap)
    settings = score_settings(permutations, samples, temperature, seed, bootstrap)
    files = [resolve_data(d, benchmark)[0] for d in ([data] if isinstance(data, str) or data is None else data)]
    if not Path(run).is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    checkpoints = find_checkpoints(run)
    if not checkpoints:  # nothing evaluated is not a result
        raise FileNotFoundError(f"{run}: no checkpoint under it (*.ckpt files or DeepSpeed *.ckpt folders, "
                                "searched recursively); give the run's folder, e.g. checkpoints/demo")
    tables: dict[str, list[dict]] = {}
    for f in files:
        rows = []
        for ckpt in checkpoints:
            outs = [default_out(ckpt), default_out(_sibling_ckpt(ckpt) or ckpt)]
            if len(files) > 1:
                outs = [o / Path(f).name.split(".")[0] for o in outs]
            # an earlier `r1aqa eval` of the .ckpt itself counts as well as one of its _hf folder
            done = [d / "results.json" for d in outs if (d / "results.json").is_file()]
            stored = json.loads(done[0].read_text(encoding="utf-8")) if done and not force else None
            # a result from before settings were recorded had the defaults
            if stored is not None and stored.get("settings", score_settings()) == settings:
                print(f"[eval-all] {ckpt} on {f}: already evaluated ({done[0]}), skipped")
                rows.append(stored)
                continue
            why = " (evaluated before with other robust-score settings: again)" if stored is not None else ""
            print(f"[eval-all] {ckpt} on {f}{why}")
            rows.append(evaluate(checkpoint=str(ckpt), data=f, benchmark=benchmark, audio_dir=audio_dir,
                                 out=str(outs[0]) if len(files) > 1 else None, batch_size=batch_size,
                                 max_new_tokens=max_new_tokens, limit=limit, with_audio=with_audio, dtype=dtype,
                                 permutations=permutations, samples=samples, temperature=temperature, seed=seed,
                                 bootstrap=bootstrap))
        rows.sort(key=lambda r: r["total"]["acc"] if r.get("total", {}).get("total") else -1.0, reverse=True)
        tables[f] = rows
    for f, rows in tables.items():
        print(f"\n{f}")
        if rows and rows[0].get("answers_withheld"):
            print("answers withheld: submission files written, no accuracy")
        else:
            print(accuracy_table(rows, run))
    return tables
