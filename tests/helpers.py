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
