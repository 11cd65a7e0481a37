"""Checkpoints a user can evaluate straight away: a Hugging Face folder beside every Lightning one."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl


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
            shutil.rmtree(self._hf_dir(filepath), ignore_errors=True)

    @staticmethod
    def _hf_dir(filepath: str) -> str:
        return str(filepath)[: -len(".ckpt")] + "_hf" if str(filepath).endswith(".ckpt") else f"{filepath}_hf"
