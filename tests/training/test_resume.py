"""Exact resume: a GRPO run interrupted at an optimizer step and resumed from its checkpoint ends
bit-for-bit where the uninterrupted run ends (data order, rollouts, rewards, loss, weights, val acc).

What makes it exact: Lightning restores weights, AdamW, the LR schedule and the loop counters;
the data module's ResumableSampler continues mid-epoch in the same order (DataModule.state_dict);
GRPOModule.on_save_checkpoint keeps every rank's RNG state (rollouts sample from it) and any
rollouts still waiting for their optimizer step. The checkpoint is one the uninterrupted run wrote
mid-way (an interruption is a crash, not a shorter ``max_steps``, which would change the LR decay).
"""

import time

import lightning as L
import pytest
import torch

from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.data.datamodule import AudioQADataModule, ResumableSampler
from r1aqa_pl.training.grpo_module import GRPOModule


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Synthetic data + tiny policy + 20-step SFT warm start (cached across this session's test files)."""
    from r1aqa_pl.recipes.demo import prepare

    root = tmp_path_factory.getbasetemp() / "r1aqa_demo_small"
    return root, prepare(out=str(root), n_train=48, n_test=24, warm_steps=20)


class Recorder(L.Callback):
    """Train metrics after each optimizer step, val metrics after each validation, prompts per step."""

    def __init__(self):
        self.train, self.val, self.prompts, self._last = {}, {}, {}, None

    def on_train_start(self, trainer, pl_module):
        self._last = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.prompts.setdefault(trainer.global_step + 1, []).extend(q.source for q in batch["questions"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self._last:
            self._last = trainer.global_step
            self.train[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                               if k.startswith("train/")}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                             if k.startswith("val/")}


def run(demo, out, steps, ckpt_path=None, every=None, batch_size=4, val_every=8):
    root, warm = demo
    L.seed_everything(0)
    torch.set_num_threads(1)
    # 48 questions / 4 per batch = 12 batches = 6 optimizer steps per epoch: 8 steps cross an epoch
    dm = AudioQADataModule(
        train_file=str(root / "data" / "train.jsonl"),
        val_file=str(root / "data" / "test-mini.json"),
        feature_extractor=warm,
        batch_size=batch_size,
        val_batch_size=12,
        seed=0,
    )
    module = GRPOModule(
        warm,
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=2),
        evaluation=dict(max_new_tokens=8),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
    )
    rec = BenchmarkEvaluation(write_predictions=False)
    recorder = Recorder()
    callbacks = [rec, recorder]
    if every:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=str(out),
                filename="step{step}",
                save_top_k=-1,
                every_n_train_steps=every,
                auto_insert_metric_name=False,
            )
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        val_check_interval=val_every,  # in batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=bool(every),
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(out),
        callbacks=callbacks,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    weights = {k: v.detach().clone() for k, v in module.policy.state_dict().items()}
    return recorder, weights, trainer


def test_resumed_run_matches_uninterrupted_run(demo, tmp_path):
    """8 steps interrupted after 4 (mid-epoch), the resumed part crossing into the next epoch."""
    t0 = time.time()
    full, w_full, _ = run(demo, tmp_path / "full", steps=8, every=4)
    ckpt = tmp_path / "full" / "step4.ckpt"
    assert ckpt.is_file()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # our additions load safely
    assert saved["global_step"] == 4 and saved["grpo_resume"]["world_size"] == 1
    assert saved["AudioQADataModule"] == {"epoch": 0, "batches": 8}
    t1 = time.time()
    resumed, w_res, trainer = run(demo, tmp_path / "resumed", steps=8, ckpt_path=str(ckpt))
    assert trainer.global_step == 8 and sorted(resumed.train) == [5, 6, 7, 8]

    # the same prompts, in the same order, for every step after the resume (steps 7-8 are in epoch 2)
    for step in (5, 6, 7, 8):
        assert resumed.prompts[step] == full.prompts[step], step
    assert full.prompts[7] != full.prompts[1]  # a new epoch reshuffles
    # the same rollouts and updates: rewards, loss, KL, grad norm, lr ... at every step after the resume
    for step in (5, 6, 7, 8):
        assert resumed.train[step].keys() == full.train[step].keys()
        for k, v in full.train[step].items():
            assert resumed.train[step][k] == pytest.approx(v, rel=1e-6, abs=1e-7), (step, k)
    assert {"train/reward", "train/loss", "train/kl", "train/grad_norm"} <= full.train[8].keys()
    # the same weights and the same validation accuracy at the end
    assert w_full.keys() == w_res.keys()
    for k in w_full:
        assert torch.allclose(w_full[k], w_res[k], rtol=0, atol=1e-7), k
    assert resumed.val[8] == pytest.approx(full.val[8])
    assert "val/acc/total" in full.val[8]
    print(f"uninterrupted 8 steps {t1 - t0:.1f} s, resumed 4 steps {time.time() - t1:.1f} s")


def test_resume_without_rng_restore_differs(demo, tmp_path, monkeypatch):
    """The check above has teeth: without the saved RNG streams the resumed rollouts differ."""
    full, w_full, _ = run(demo, tmp_path / "full", steps=3, every=2, batch_size=2, val_every=6)
    monkeypatch.setattr("r1aqa_pl.training.resume.set_rng_state", lambda state: torch.manual_seed(12345))
    resumed, w_res, _ = run(
        demo, tmp_path / "resumed", steps=3, batch_size=2, val_every=6, ckpt_path=str(tmp_path / "full" / "step2.ckpt")
    )
    assert resumed.prompts[3] == full.prompts[3]  # same data ...
    assert any(not torch.equal(w_full[k], w_res[k]) for k in w_full)  # ... other samples, other update


def test_buffered_rollouts_survive_a_checkpoint(tmp_path):
    """A checkpoint written between the rollouts of one optimizer step keeps them (weights_only-safe)."""
    from r1aqa_pl.rollout import Rollout
    from r1aqa_pl.task.question import Question
    from r1aqa_pl.training import resume

    q = Question("7", "/a.wav", "What?", ["x", "y"], "y", domain="music", raw={"id": 7})
    ids = torch.tensor([[5, 6], [5, 7], [8, 9], [8, 8]])
    buffer = [
        Rollout(
            [q],
            {"input_ids": torch.tensor([[1, 2, 3]])},
            ids,
            torch.ones_like(ids),
            ["a", "b", "c", "d"],
            torch.ones(4),
            {"accuracy": torch.zeros(4)},
            torch.tensor([1.0, -1.0, 0.5, -0.5]),
            ref_logp=torch.full((4, 2), -0.25),
        )
    ]
    module = GRPOModule("unused", sampling=dict(G=4))
    torch.save({"grpo_resume": resume.resume_state(module, buffer)}, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)["grpo_resume"]
    module.on_load_checkpoint({"grpo_resume": state})
    back = module.buffer
    assert isinstance(back[0], Rollout) and back[0].questions == [q] and back[0].texts == buffer[0].texts
    assert back[0].old_logp is None and torch.equal(back[0].ref_logp, buffer[0].ref_logp)
    assert torch.equal(back[0].inputs["input_ids"], buffer[0].inputs["input_ids"])
    assert torch.equal(back[0].advantages, buffer[0].advantages) and torch.equal(back[0].completion_ids, ids)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    module.on_load_checkpoint({"grpo_resume": resume.resume_state(module, [])})  # RNG state at seed 1
    torch.rand(5)
    module.on_train_start()  # applies the saved RNG state (no trainer: device stays CPU)
    assert torch.equal(torch.rand(3), expected)


def test_sampler_order_depends_only_on_seed_epoch_and_start():
    data = list(range(10))
    a = list(ResumableSampler(data, seed=3, epoch=1))
    b = ResumableSampler(data, seed=3, epoch=1, start=4)
    assert list(b) == a[4:] and list(b) == a  # start applies to one pass only
    assert list(ResumableSampler(data, seed=3, epoch=2)) != a
    shards = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=3, epoch=1)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == data and not set(shards[0]) & set(shards[1])
