"""Small builders shared by the module-level tests (tiny policy + synthetic set)."""

import lightning as L

from r1aqa_pl.data.datamodule import AudioQADataModule


def datamodule(synth_dir, tiny_dir, **kw):
    args = dict(train_file=str(synth_dir / "train.jsonl"), val_file=str(synth_dir / "test-mini.json"),
                feature_extractor=str(tiny_dir), batch_size=2, val_batch_size=12, seed=0)
    args.update(kw)
    return AudioQADataModule(**args)


def batch_of(dm, n=3):
    dm.setup("fit")
    ds = dm.datasets["train"]
    items = [ds[i] for i in range(n)]
    return {"questions": [x["question"] for x in items], "audio": [x["audio"] for x in items]}


def fit(module, dm, steps=2, callbacks=(), validate=False, **kw):
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=None if validate else 0, val_check_interval=steps if validate else None,
                        check_val_every_n_epoch=None if validate else 1, deterministic=True,
                        callbacks=list(callbacks), **kw)
    trainer.fit(module, dm)
    return trainer


class SaveMidRefill(L.Callback):
    """Writes one checkpoint after the first batch (past step 1) that leaves groups waiting in the pool."""

    def __init__(self, path):
        self.path, self.step = path, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.step is None and trainer.global_step >= 1 and pl_module.pool.groups:
            trainer.save_checkpoint(self.path)
            self.step = trainer.global_step


class Record(L.Callback):
    """The train/ metrics logged at each optimizer step."""

    def __init__(self):
        self.train, self._last = {}, None

    def on_train_start(self, trainer, pl_module):
        self._last = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self._last:
            self._last = trainer.global_step
            self.train[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                               if k.startswith("train/")}
