"""Checkpoints a user can evaluate straight away: a Hugging Face folder beside every Lightning one, and a
record of the base model each was trained from."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import lightning.pytorch as pl

BASE_KEY = "r1aqa_base"  # in a checkpoint: {"model_name_or_path", "sha256"} of the base the run started from
# what a rebuilt base changes under the same path: architecture, vocabulary, audio features
BASE_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
              "merges.txt", "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "chat_template.json",
              "chat_template.jinja")


def base_fingerprint(model_name_or_path: str | Path) -> str | None:
    """sha256 of a local model folder's config, processor and tokenizer files (None for a hub id): a Lightning
    checkpoint is rebuilt from its base folder, so ``r1aqa eval`` checks that this has not changed since."""
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for name in BASE_FILES:
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()


class HFCheckpoint(pl.callbacks.ModelCheckpoint):
    """ModelCheckpoint that also writes a Hugging Face folder (``<ckpt stem>_hf``) beside each save,
    so that ``r1aqa eval`` and ``from_pretrained`` take either; it is removed with its checkpoint. Each
    checkpoint records the base model's :func:`base_fingerprint` as it was when the run started (:data:`BASE_KEY`).

    With ``save_last`` the ``last`` checkpoint is the run's latest state after every validation and
    at the end of training (Lightning 2.6 writes it only beside a top-k save, so a run resumed from
    ``last`` could restart hundreds of steps back, and the final steps could be saved nowhere).
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        base = getattr(getattr(pl_module, "policy_config", None), "model_name_or_path", None)
        self._base = {"model_name_or_path": base, "sha256": base_fingerprint(base)} if base else None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if getattr(self, "_base", None):  # what the base was when the run started: `r1aqa eval` compares
            checkpoint[BASE_KEY] = self._base

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
