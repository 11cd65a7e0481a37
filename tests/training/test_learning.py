"""GRPO visibly learns on the synthetic task (slow: a few minutes on 2 cores)."""

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.recipes.demo import prepare
from r1aqa_pl.training.grpo_module import GRPOModule


class Rewards(Callback):
    def __init__(self):
        self.accuracy = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.accuracy.append(float(trainer.callback_metrics["train/rewards/accuracy"]))


@pytest.mark.slow
def test_grpo_raises_the_accuracy_reward(tmp_path_factory):
    out = tmp_path_factory.mktemp("learn")
    warm = prepare(str(out), n_train=300, n_test=30, warm_steps=150)
    L.seed_everything(0)
    dm = AudioQADataModule(train_file=str(out / "data" / "train.jsonl"), feature_extractor=warm, batch_size=16, seed=0)
    module = GRPOModule(
        warm,
        sampling=dict(G=16, max_new_tokens=8),
        optimization=dict(lr=1e-3, micro_batch_prompts=4),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
    )
    rec = Rewards()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=100,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
        callbacks=[rec],
    )
    trainer.fit(module, dm)
    first, last = rec.accuracy[:20], rec.accuracy[-20:]
    assert sum(last) / 20 > sum(first) / 20 + 0.05, (first, last)
