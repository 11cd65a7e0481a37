"""Benchmark accuracy per domain during validation and test, plus that epoch's prediction file.

Evaluation is generation (greedy answers), not a loss, so it lives in a callback that any
LightningModule honouring a one-method protocol can use, and training code stays about training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from r1aqa_pl import benchmarks
from r1aqa_pl.benchmarks.base import Benchmark
from r1aqa_pl.benchmarks.metric import BenchmarkAccuracy
from r1aqa_pl.benchmarks.provenance import provenance, write_provenance
from r1aqa_pl.benchmarks.stats import bootstrap_ci, bootstrap_settings
from r1aqa_pl.task.question import Question


def record_identity(record: dict, added: Sequence[str] = ()) -> str:
    """The source record itself identifies a question (ids are not unique across data sets); the
    fields evaluation ``added`` to it are left out."""
    return json.dumps({k: v for k, v in record.items() if k not in added}, sort_keys=True, default=str)


@dataclass
class EvalSet:
    """One validation/test dataloader's benchmark: its label (None for a run's only set), rule, metric and version."""

    label: str | None
    benchmark: Benchmark
    metric: BenchmarkAccuracy
    version: str = "unknown"
    data: str | None = None
    first: Question | None = None
    records: list = field(default_factory=list)
    no_audio: int = 0
    verdicts: list = field(default_factory=list)  # (right, bucket keys) per question, for the intervals

    def prefix(self, stage: str) -> str:
        return f"{stage}/" if self.label is None else f"{stage}/{self.label}/"


class BenchmarkEvaluation(pl.Callback):
    """Greedy-answer every val/test batch, score it by its benchmark's rule, log per-domain accuracy.

    Contract:
      * a val/test batch is ``{"questions": list[Question], "audio": list[np.ndarray | None], ...}``;
      * the module implements ``answer(questions, audio) -> list[str]``: the raw generated text per
        question (greedy; max_new_tokens and stopping come from the module's own config). It runs
        here, under Lightning's eval mode and no-grad, after ``validation_step`` (which may be a no-op);
      * each dataloader's dataset may name its ``benchmark``, ``label``, ``version`` and ``data`` file
        (:class:`~r1aqa_pl.data.datamodule.AudioQADataModule` sets them); otherwise ``benchmark`` applies.

    One validation set logs ``{val|test}/acc/<bucket>`` for every bucket of the benchmark's groups
    (MMAU: ``val/acc/{sound,music,speech}``, ``val/acc/easy``..., ``val/acc/sub/<name>``),
    ``val/acc/total`` and ``val/count/total`` (the questions scored), and writes the source records with the
    benchmark's output and prediction keys added to
    ``<log_dir or default_root_dir>/predictions/<stage>_step<global_step>.json`` (``.jsonl`` for a JSON-lines
    source) on rank 0, with ``<stage>_step<N>.provenance.json`` beside it (model, family, prompt, decoding,
    answer rule, benchmark version, seed, packages).
    Several sets (a data module given ``val_file: {mmau: ..., mmar: ...}``) log each under its label,
    ``val/mmau/acc/sound``, ``val/mmar/acc/mix-sound-speech``, ..., write ``predictions/<label>/...``, and
    log the ``monitor`` set's numbers also under the plain names (``val/acc/total``: the checkpoint
    monitor and progress bar; ``val/acc/sound``, ...), so that one-set tools read a multi-set run.
    Every set's benchmark and version go to the loggers' hyperparameters and TensorBoard's text
    (``benchmarks/<label>``). With ``bootstrap`` resamples, every logged accuracy also logs its 95 % interval,
    ``val/ci_low/<bucket>`` and ``val/ci_high/<bucket>`` (percentile bootstrap over the set's questions,
    gathered from every rank; :mod:`r1aqa_pl.benchmarks.stats`).

    Each question is judged by its benchmark's own per-record verdict on the record the prediction file holds
    (:meth:`Benchmark.outcome`, through :class:`BenchmarkAccuracy`), so the logged numbers are ``r1aqa score``'s on
    that file: a question the rule leaves out (MMSU's unreadable answer, MMAU-Pro's open question without a
    judge) is in no accuracy and no interval, and a benchmark with such a rule also logs ``val/count/left_out``.

    Counts are summed across ranks (torchmetrics), so numbers are exact under DDP, provided the
    sampler does not pad: a question seen twice is counted twice (a warning says so; the file is
    de-duplicated). A question whose audio is None is still scored (audio-free ablations are
    legitimate) and counted in ``val/count/no_audio``. The sanity-check pass generates (to catch
    errors early) but neither logs nor writes, unless ``log_before_training``.

    Args:
        benchmark: a registered benchmark's name (mmau, mmar) or the class path of a ``Benchmark`` subclass: it
            scores a set whose file is not recognised, and every set whose recognised benchmark it is or subclasses
            (a user's own rule on MMAU's files); other sets keep their own (an MMAR file under ``benchmark: mmau``).
        names: bucket names per group (e.g. ``{"sub-category": [...]}``) for sets of ``benchmark``; by default
            taken from the dataloader's ``dataset.questions`` when it has them, else the benchmark's own lists.
        write_predictions: write the per-epoch prediction file.
        dirpath: folder for the prediction files instead of ``<log_dir>/predictions``.
        log_before_training: log and write the sanity-check pass as step 0 (set the trainer's
            ``num_sanity_val_steps: -1`` so it covers the whole validation set): the curves' start.
        monitor: with several sets, the label whose numbers are also logged under the plain names
            (``<stage>/acc/total``, ...; default: the first set).
        bootstrap: resamples of a 95 % interval on every logged accuracy (0: none; 1000 as ``r1aqa score``).
        bootstrap_seed: the intervals' seed.
    """

    def __init__(self, benchmark: str | Benchmark = "mmau", names: dict[str, list[str]] | None = None,
                 write_predictions: bool = True, dirpath: str | None = None, log_before_training: bool = False,
                 monitor: str | None = None, bootstrap: int = 0, bootstrap_seed: int = 0):
        self.benchmark: Benchmark = benchmarks.get(benchmark)
        self.log_before_training = log_before_training
        self.names = names
        self.write_predictions = write_predictions
        self.dirpath = dirpath
        self.monitor = monitor
        if bootstrap < 0:
            raise ValueError(f"BenchmarkEvaluation(bootstrap={bootstrap}): 0 (no intervals) or more resamples")
        self.bootstrap, self.bootstrap_seed = bootstrap, bootstrap_seed
        self.sets: dict[str, list[EvalSet]] = {}
        self.written: dict[str | None, Path] = {}  # label -> the last prediction file written
        self._announced = False

    # ---- hooks -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module):
        self._start(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_start(self, trainer, pl_module):
        self._start(trainer, pl_module, "test", trainer.test_dataloaders)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch(pl_module, "val", batch, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch(pl_module, "test", batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._end(trainer, pl_module, "test")

    # ---- work --------------------------------------------------------------------------------
    def _start(self, trainer, pl_module, stage: str, dataloaders: Any) -> None:
        if stage not in self.sets:
            loaders = dataloaders if isinstance(dataloaders, (list, tuple)) else [dataloaders]
            self.sets[stage] = [self._build_set(dl) for dl in loaders]
            labels = [s.label for s in self.sets[stage]]
            if len(labels) > 1 and (None in labels or len(set(labels)) < len(labels)):
                raise ValueError(f"{len(labels)} {stage} dataloaders need distinct labels (dataset.label), "
                                 f"got {labels}")
            if self.monitor is not None and len(labels) > 1 and self.monitor not in labels:
                raise ValueError(f"BenchmarkEvaluation(monitor={self.monitor!r}): not one of the {stage} sets {labels}")
            self._announce(trainer, stage)
        for s in self.sets[stage]:
            s.metric.to(pl_module.device).reset()
            s.records, s.no_audio, s.verdicts = [], 0, []

    def _build_set(self, loader: Any) -> EvalSet:
        """Same bucket names on every rank: from the whole dataset (not the rank's shard) or fixed lists."""
        ds = getattr(loader, "dataset", None)
        name = getattr(ds, "benchmark", None)  # what the set's file was recognised as
        bench = benchmarks.get(name) if name else self.benchmark
        if isinstance(self.benchmark, type(bench)):  # this callback's benchmark is that one or refines it (own rule)
            bench = self.benchmark
        questions = getattr(ds, "questions", None) or []
        if self.names is not None and bench is self.benchmark:
            metric = BenchmarkAccuracy(bench, self.names)
        elif questions and all(isinstance(q, Question) for q in questions):
            metric = BenchmarkAccuracy.from_questions(bench, questions)
        else:
            metric = BenchmarkAccuracy(bench)
        first = questions[0] if questions and isinstance(questions[0], Question) else None
        return EvalSet(
            getattr(ds, "label", None),
            bench,
            metric,
            getattr(ds, "version", None) or "unknown",
            getattr(ds, "data", None),
            first,
        )

    def _announce(self, trainer, stage: str) -> None:
        """Each set's benchmark and version in the loggers' hyperparameters, and as TensorBoard text
        (``benchmarks/<label>``) beside the curves."""
        if self._announced or not trainer.is_global_zero:
            return
        self._announced = True
        params = {
            f"benchmarks/{s.label or s.benchmark.name}": f"{s.benchmark.name} {s.version} ({s.data})"
            for s in self.sets[stage]
        }
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
            add_text = getattr(getattr(logger, "experiment", None), "add_text", None)
            if add_text is not None:
                for tag, text in params.items():
                    add_text(tag, text, trainer.global_step)

    def _batch(self, pl_module, stage: str, batch: dict, dataloader_idx: int = 0) -> None:
        s = self.sets[stage][dataloader_idx]
        questions, audio = batch["questions"], batch.get("audio")
        audio = [None] * len(questions) if audio is None else audio
        outputs = pl_module.answer(questions, audio)
        if len(outputs) != len(questions):
            raise RuntimeError(
                f"{type(pl_module).__name__}.answer returned {len(outputs)} texts for {len(questions)} questions"
            )
        predictions = [s.benchmark.extract(text) for text in outputs]
        # each question judged once (a judge or an embedding model may be slow), as `r1aqa score` judges its record
        verdicts = s.metric.verdicts(predictions, questions)
        s.metric.update(predictions, questions, verdicts)
        if self.bootstrap:  # left out by the rule: in no interval either
            s.verdicts += [(v.ok, v.keys) for v in verdicts if v.ok is not None]
        s.no_audio += sum(a is None for a in audio)
        if s.first is None and questions:
            s.first = questions[0]
        if self.write_predictions:
            s.records += [s.benchmark.prediction_record(q, text) for q, text in zip(questions, outputs)]

    def _monitor(self, stage: str) -> EvalSet:
        sets = self.sets[stage]
        return next((s for s in sets if s.label == self.monitor), sets[0])

    def _end(self, trainer, pl_module, stage: str) -> None:
        sets = self.sets[stage]
        if trainer.sanity_checking and not self.log_before_training:
            for s in sets:
                s.metric.reset()
            return
        logged: dict[str, torch.Tensor] = {}
        primary = self._monitor(stage)
        for s in sets:
            values = s.metric.compute()  # syncs counts across ranks
            # several sets: each under its label, and the monitor's also under the plain names
            for prefix in {s.prefix(stage), f"{stage}/"} if s is primary else {s.prefix(stage)}:
                logged.update({f"{prefix}{k}": v.float() for k, v in values.items() if k.startswith("acc/")})
                logged[f"{prefix}count/total"] = values["count/total"].float()
                if s.benchmark.left_out_rule:  # the questions its rule left out of every count
                    logged[f"{prefix}count/left_out"] = values["count/left_out"].float()
            if self.bootstrap:
                for key, (lo, hi) in self._intervals(trainer, s).items():
                    for prefix in {s.prefix(stage), f"{stage}/"} if s is primary else {s.prefix(stage)}:
                        logged[f"{prefix}ci_low/{key}"] = torch.tensor(lo, device=pl_module.device)
                        logged[f"{prefix}ci_high/{key}"] = torch.tensor(hi, device=pl_module.device)
        total_key = f"{stage}/acc/total"
        self.last_logged = {k: float(v) for k, v in logged.items()}  # the sanity pass's too (RunSummary's start)
        total = logged.pop(total_key)
        if trainer.sanity_checking:  # the starting point of the curves, at step 0
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(
                        {**{k: float(v) for k, v in logged.items()}, total_key: float(total)}, step=trainer.global_step
                    )
            for s in sets:
                rank_zero_info(
                    f"{s.benchmark.title}{'' if s.label is None else f' ({s.label})'}: before training "
                    f"{s.prefix(stage)}acc/total = {float(s.metric.compute()['acc/total']):.4f}"
                )
        else:
            # identical on every rank after the sync; "max" keeps them exact and silences Lightning's warning
            pl_module.log_dict(logged, sync_dist=True, reduce_fx="max", add_dataloader_idx=False)
            pl_module.log(total_key, total, sync_dist=True, reduce_fx="max", prog_bar=True, add_dataloader_idx=False)
            for s in sets:
                no_audio = torch.tensor(float(s.no_audio), device=pl_module.device)
                pl_module.log(
                    f"{s.prefix(stage)}count/no_audio",
                    no_audio,
                    sync_dist=True,
                    reduce_fx="sum",
                    add_dataloader_idx=False,
                )
                if s.no_audio:
                    rank_zero_info(f"{s.benchmark.title}: {s.no_audio} {stage} question(s) on rank 0 had no audio")
            # the loggers' x is the optimizer step (Lightning's own would be the batches stepped so far,
            # one behind here, several per step with accumulation): the checkpoint's and prediction file's step
            pl_module.log("step", float(trainer.global_step), reduce_fx="max")
        for s in sets:
            if self.write_predictions:
                self._write(trainer, pl_module, stage, s)
            s.metric.reset()
            s.records = []

    def _intervals(self, trainer, s: EvalSet) -> dict[str, list[float]]:
        """Each bucket's and the total's interval from every rank's verdicts (the same on every rank)."""
        verdicts = s.verdicts
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, verdicts)
            verdicts = [v for shard in shards for v in shard]
        cells: dict[str, list[bool]] = {"total": [ok for ok, _ in verdicts]}
        for ok, keys in verdicts:
            for key in keys:
                cells.setdefault(key, []).append(ok)
        return {k: bootstrap_ci(v, self.bootstrap, self.bootstrap_seed) for k, v in cells.items() if v}

    def _write(self, trainer, pl_module, stage: str, s: EvalSet) -> None:
        records = s.records
        # trainer.log_dir broadcasts under DDP: every rank must ask for it
        folder = Path(self.dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "predictions"))
        if s.label is not None:
            folder = folder / s.label
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, records)
            records = [r for shard in shards for r in shard]
        if not trainer.is_global_zero:
            return
        bench = s.benchmark
        added = (bench.output_key, bench.prediction_key, *bench.extra_prediction_keys)
        unique = {record_identity(r, added): r for r in records}
        if len(unique) < len(records):
            rank_zero_warn(
                f"{bench.title}: {len(records) - len(unique)} duplicated question(s) (a padding "
                f"sampler?) were counted twice in {s.prefix(stage)}acc; the prediction file keeps one of each"
            )
        jsonl = str(s.data or "").endswith(".jsonl")
        path = folder / f"{stage}_step{trainer.global_step}.{'jsonl' if jsonl else 'json'}"
        bench.write_records(list(unique.values()), path, jsonl)
        intervals = {"bootstrap": bootstrap_settings(self.bootstrap, self.bootstrap_seed)} if self.bootstrap else {}
        write_provenance(
            provenance(bench, s.version, s.data, pl_module, s.first, stage=stage, step=trainer.global_step,
                       **intervals), path
        )
        self.written[s.label] = path
        rank_zero_info(f"{bench.title}: wrote {len(unique)} predictions to {path}")
