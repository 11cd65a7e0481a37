"""Per-domain MMAU accuracy during validation and test, plus that epoch's prediction file.

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

from r1aqa_pl.metrics import MMAUAccuracy
from r1aqa_pl.mmau import MMAU_SUB_CATEGORIES, extract_answer
from r1aqa_pl.records import Question


def _identity(record: dict) -> str:
    """The source record itself identifies a question (ids are not unique across data sets)."""
    source = {k: v for k, v in record.items() if k not in ("model_output", "model_prediction")}
    return json.dumps(source, sort_keys=True, default=str)


class MMAUEvaluation(pl.Callback):
    """Greedy-answer every val/test batch, score it by the MMAU rule, log per-domain accuracy.

    Contract:
      * a val/test batch is ``{"questions": list[Question], "audio": list[np.ndarray | None], ...}``;
      * the module implements ``answer(questions, audio) -> list[str]``: the raw generated text per
        question (greedy; max_new_tokens and stopping come from the module's own config). It runs
        here, under Lightning's eval mode and no-grad, after ``validation_step`` (which may be a no-op);
      * at epoch end it logs ``{val|test}/acc/{sound,music,speech,total}``, per difficulty
        (``val/acc/easy``...), per sub-category (``val/acc/sub/<name>``) and ``val/count/total``
        (monitor ``val/acc/total`` with ModelCheckpoint), and writes the MMAU JSON list with
        ``model_output`` (raw) and ``model_prediction`` (extracted) added to each source record to
        ``<log_dir or default_root_dir>/predictions/<stage>_step<global_step>.json`` on rank 0.

    Counts are summed across ranks (torchmetrics), so numbers are exact under DDP, provided the
    sampler does not pad: a question seen twice is counted twice (a warning says so; the file is
    de-duplicated). A question whose audio is None is still scored (audio-free ablations are
    legitimate) and counted in ``val/count/no_audio``. The sanity-check pass generates (to catch
    errors early) but neither logs nor writes, unless ``log_before_training``.

    Args:
        sub_categories: bucket names for ``acc/sub/...``; by default taken from the dataloader's
            ``dataset.questions`` when it has them, else MMAU test-mini's 27 sub-categories.
        write_predictions: write the per-epoch prediction file.
        dirpath: folder for the prediction files instead of ``<log_dir>/predictions``.
        log_before_training: log and write the sanity-check pass as step 0 (set the trainer's
            ``num_sanity_val_steps: -1`` so it covers the whole validation set): the curves' start.
    """

    def __init__(self, sub_categories: Sequence[str] | None = None, write_predictions: bool = True,
                 dirpath: str | None = None, log_before_training: bool = False):
        self.log_before_training = log_before_training
        self.sub_categories = None if sub_categories is None else list(sub_categories)
        self.write_predictions = write_predictions
        self.dirpath = dirpath
        self.metrics: dict[str, MMAUAccuracy] = {}
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

    def _build_metric(self, dataloaders: Any) -> MMAUAccuracy:
        """Same names on every rank: from the whole dataset (not the rank's shard) or fixed lists."""
        if self.sub_categories is not None:
            return MMAUAccuracy(self.sub_categories)
        loaders = dataloaders if isinstance(dataloaders, (list, tuple)) else [dataloaders]
        questions = [q for dl in loaders for q in getattr(getattr(dl, "dataset", None), "questions", None) or []]
        if questions and all(isinstance(q, Question) for q in questions):
            return MMAUAccuracy.from_questions(questions)
        return MMAUAccuracy(MMAU_SUB_CATEGORIES)

    def _batch(self, pl_module, stage: str, batch: dict) -> None:
        questions, audio = batch["questions"], batch.get("audio")
        audio = [None] * len(questions) if audio is None else audio
        outputs = pl_module.answer(questions, audio)
        if len(outputs) != len(questions):
            raise RuntimeError(f"{type(pl_module).__name__}.answer returned {len(outputs)} texts "
                               f"for {len(questions)} questions")
        predictions = [extract_answer(text) for text in outputs]
        self.metrics[stage].update(predictions, questions)
        self._no_audio += sum(a is None for a in audio)
        if self.write_predictions:
            self._records += [
                {**(q.raw or q.to_dict()), "model_output": text, "model_prediction": pred}
                for q, text, pred in zip(questions, outputs, predictions)
            ]

    def _end(self, trainer, pl_module, stage: str) -> None:
        metric = self.metrics[stage]
        if trainer.sanity_checking and not self.log_before_training:
            metric.reset()
            return
        values = metric.compute()  # syncs counts across ranks
        logged = {f"{stage}/{k}": v.float() for k, v in values.items() if k.startswith("acc/")}
        logged[f"{stage}/count/total"] = values["count/total"].float()
        if trainer.sanity_checking:  # the starting point of the curves, at step 0
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics({k: float(v) for k, v in logged.items()}, step=trainer.global_step)
            rank_zero_info(f"MMAUEvaluation: before training {stage}/acc/total = {float(logged[f'{stage}/acc/total']):.4f}")
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
            rank_zero_info(f"MMAUEvaluation: {self._no_audio} {stage} question(s) on rank 0 had no audio")
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
        unique = {_identity(r): r for r in records}
        if len(unique) < len(records):
            rank_zero_warn(f"MMAUEvaluation: {len(records) - len(unique)} duplicated question(s) (a padding "
                           f"sampler?) were counted twice in {stage}/acc; the prediction file keeps one of each")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage}_step{trainer.global_step}.json"
        path.write_text(json.dumps(list(unique.values()), indent=1, ensure_ascii=False), encoding="utf-8")
        rank_zero_info(f"MMAUEvaluation: wrote {len(unique)} predictions to {path}")


class HFCheckpoint(pl.callbacks.ModelCheckpoint):
    """ModelCheckpoint that also writes a Hugging Face folder (``<ckpt stem>_hf``) beside each save,
    so that ``r1aqa eval`` and ``from_pretrained`` take either; it is removed with its checkpoint.

    With ``save_last`` the ``last`` checkpoint is the run's latest state after every validation and
    at the end of training (Lightning 2.6 writes it only beside a top-k save, so a run resumed from
    ``last`` could restart hundreds of steps back, and the final steps could be saved nowhere).
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)

    def _refresh_last(self, trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skips if saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and hasattr(trainer.lightning_module, "export_hf"):
            trainer.lightning_module.export_hf(self._hf_dir(filepath))

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            import shutil

            shutil.rmtree(self._hf_dir(filepath), ignore_errors=True)

    @staticmethod
    def _hf_dir(filepath: str) -> str:
        return str(filepath)[: -len(".ckpt")] + "_hf" if str(filepath).endswith(".ckpt") else f"{filepath}_hf"
