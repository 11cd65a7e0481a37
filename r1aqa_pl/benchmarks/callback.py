"""Benchmark accuracy per domain during validation and test, plus that epoch's prediction file.

Evaluation is generation (greedy answers), not a loss, so it lives in a callback that any
LightningModule honouring a one-method protocol can use, and training code stays about training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from r1aqa_pl import benchmarks
from r1aqa_pl.benchmarks.base import Benchmark
from r1aqa_pl.benchmarks.metric import BenchmarkAccuracy
from r1aqa_pl.records import Question


def record_identity(record: dict, added: Sequence[str] = ()) -> str:
    """The source record itself identifies a question (ids are not unique across data sets); the
    fields evaluation ``added`` to it are left out."""
    return json.dumps({k: v for k, v in record.items() if k not in added}, sort_keys=True, default=str)


class BenchmarkEvaluation(pl.Callback):
    """Greedy-answer every val/test batch, score it by the benchmark's rule, log per-domain accuracy.

    Contract:
      * a val/test batch is ``{"questions": list[Question], "audio": list[np.ndarray | None], ...}``;
      * the module implements ``answer(questions, audio) -> list[str]``: the raw generated text per
        question (greedy; max_new_tokens and stopping come from the module's own config). It runs
        here, under Lightning's eval mode and no-grad, after ``validation_step`` (which may be a no-op);
      * at epoch end it logs ``{val|test}/acc/<bucket>`` for every bucket of the benchmark's groups
        (MMAU: ``val/acc/{sound,music,speech}``, per difficulty ``val/acc/easy``..., per sub-category
        ``val/acc/sub/<name>``), ``val/acc/total`` and ``val/count/total`` (monitor ``val/acc/total``
        with ModelCheckpoint), and writes the source records with the benchmark's output and
        prediction keys added (MMAU: ``model_output``, ``model_prediction``) to
        ``<log_dir or default_root_dir>/predictions/<stage>_step<global_step>.json`` on rank 0.

    Counts are summed across ranks (torchmetrics), so numbers are exact under DDP, provided the
    sampler does not pad: a question seen twice is counted twice (a warning says so; the file is
    de-duplicated). A question whose audio is None is still scored (audio-free ablations are
    legitimate) and counted in ``val/count/no_audio``. The sanity-check pass generates (to catch
    errors early) but neither logs nor writes, unless ``log_before_training``.

    Args:
        benchmark: the benchmark's name (see ``r1aqa_pl.benchmarks.BENCHMARKS``): its rule, groups and keys.
        names: bucket names per group (e.g. ``{"sub-category": [...]}``); by default taken from the
            dataloader's ``dataset.questions`` when it has them, else the benchmark's own lists.
        write_predictions: write the per-epoch prediction file.
        dirpath: folder for the prediction files instead of ``<log_dir>/predictions``.
        log_before_training: log and write the sanity-check pass as step 0 (set the trainer's
            ``num_sanity_val_steps: -1`` so it covers the whole validation set): the curves' start.
    """

    def __init__(self, benchmark: str = "mmau", names: dict[str, list[str]] | None = None,
                 write_predictions: bool = True, dirpath: str | None = None, log_before_training: bool = False):
        self.benchmark: Benchmark = benchmarks.get(benchmark)
        self.log_before_training = log_before_training
        self.names = names
        self.write_predictions = write_predictions
        self.dirpath = dirpath
        self.metrics: dict[str, BenchmarkAccuracy] = {}
        self._records: list[dict] = []
        self._no_audio = 0

    # ---- hooks -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module):
        self._start(trainer, pl_module, "val", trainer.val_dataloaders)

    def on_test_epoch_start(self, trainer, pl_module):
        self._start(trainer, pl_module, "test", trainer.test_dataloaders)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch(pl_module, "val", batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._batch(pl_module, "test", batch)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._end(trainer, pl_module, "test")

    # ---- work --------------------------------------------------------------------------------
    def _start(self, trainer, pl_module, stage: str, dataloaders: Any) -> None:
        if stage not in self.metrics:
            self.metrics[stage] = self._build_metric(dataloaders)
        self.metrics[stage].to(pl_module.device).reset()
        self._records, self._no_audio = [], 0

    def _build_metric(self, dataloaders: Any) -> BenchmarkAccuracy:
        """Same names on every rank: from the whole dataset (not the rank's shard) or fixed lists."""
        if self.names is not None:
            return BenchmarkAccuracy(self.benchmark, self.names)
        loaders = dataloaders if isinstance(dataloaders, (list, tuple)) else [dataloaders]
        questions = [q for dl in loaders for q in getattr(getattr(dl, "dataset", None), "questions", None) or []]
        if questions and all(isinstance(q, Question) for q in questions):
            return BenchmarkAccuracy.from_questions(self.benchmark, questions)
        return BenchmarkAccuracy(self.benchmark)

    def _batch(self, pl_module, stage: str, batch: dict) -> None:
        questions, audio = batch["questions"], batch.get("audio")
        audio = [None] * len(questions) if audio is None else audio
        outputs = pl_module.answer(questions, audio)
        if len(outputs) != len(questions):
            raise RuntimeError(f"{type(pl_module).__name__}.answer returned {len(outputs)} texts "
                               f"for {len(questions)} questions")
        self.metrics[stage].update([self.benchmark.extract(text) for text in outputs], questions)
        self._no_audio += sum(a is None for a in audio)
        if self.write_predictions:
            self._records += [self.benchmark.prediction_record(q, text) for q, text in zip(questions, outputs)]

    def _end(self, trainer, pl_module, stage: str) -> None:
        metric = self.metrics[stage]
        if trainer.sanity_checking and not self.log_before_training:
            metric.reset()
            return
        values = metric.compute()  # syncs counts across ranks
        logged = {f"{stage}/{k}": v.float() for k, v in values.items() if k.startswith("acc/")}
        logged[f"{stage}/count/total"] = values["count/total"].float()
        self.last_logged = {k: float(v) for k, v in logged.items()}  # the sanity pass's too (RunSummary's start)
        if trainer.sanity_checking:  # the starting point of the curves, at step 0
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics({k: float(v) for k, v in logged.items()}, step=trainer.global_step)
            rank_zero_info(f"{self.benchmark.title}: before training {stage}/acc/total = {float(logged[f'{stage}/acc/total']):.4f}")
            if self.write_predictions:
                self._write(trainer, stage)
            metric.reset()
            self._records = []
            return
        # identical on every rank after the sync; "max" keeps them exact and silences Lightning's warning
        total = logged.pop(f"{stage}/acc/total")
        pl_module.log_dict(logged, sync_dist=True, reduce_fx="max")
        pl_module.log(f"{stage}/acc/total", total, sync_dist=True, reduce_fx="max", prog_bar=True)
        no_audio = torch.tensor(float(self._no_audio), device=pl_module.device)
        pl_module.log(f"{stage}/count/no_audio", no_audio, sync_dist=True, reduce_fx="sum")
        # the loggers' x is the optimizer step (Lightning's own would be the batches stepped so far,
        # one behind here, several per step with accumulation): the checkpoint's and prediction file's step
        pl_module.log("step", float(trainer.global_step), reduce_fx="max")
        if self._no_audio:
            rank_zero_info(f"{self.benchmark.title}: {self._no_audio} {stage} question(s) on rank 0 had no audio")
        if self.write_predictions:
            self._write(trainer, stage)
        metric.reset()
        self._records = []

    def _write(self, trainer, stage: str) -> None:
        records = self._records
        # trainer.log_dir broadcasts under DDP: every rank must ask for it
        folder = Path(self.dirpath or os.path.join(trainer.log_dir or trainer.default_root_dir, "predictions"))
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shards: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, records)
            records = [r for shard in shards for r in shard]
        if not trainer.is_global_zero:
            return
        added = (self.benchmark.output_key, self.benchmark.prediction_key)
        unique = {record_identity(r, added): r for r in records}
        if len(unique) < len(records):
            rank_zero_warn(f"{self.benchmark.title}: {len(records) - len(unique)} duplicated question(s) (a padding "
                           f"sampler?) were counted twice in {stage}/acc; the prediction file keeps one of each")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}_step{trainer.global_step}.json"
        path.write_text(json.dumps(list(unique.values()), indent=1, ensure_ascii=False), encoding="utf-8")
        rank_zero_info(f"{self.benchmark.title}: wrote {len(unique)} predictions to {path}")
