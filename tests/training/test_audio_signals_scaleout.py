"""Every audio-grounding and rollout-agreement knob on, under dynamic sampling, in 2 processes: DDP (gloo) and ZeRO-3
(DeepSpeed's CPU accelerator). The extra passes and samples run on every rank in step (under ZeRO-3 a forward is a
collective), the gradients are reduced: both ranks end with the same weights, and every knob's series is logged.

The run is this file as a script (``python tests/training/test_audio_signals_scaleout.py worker OUT ROOT WARM
ENGINE``), as in ``test_scaleout.py``, whose CPU DeepSpeed strategy it borrows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def worker(out: str, root: str, warm: str, engine: str) -> None:
    import contextlib
    import hashlib

    import lightning as L
    import torch
    from lightning.pytorch.strategies import DDPStrategy
    from test_scaleout import cpu_deepspeed, zero3

    from r1aqa_pl.algo.rewards import Reward
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training.grpo_module import GRPOModule

    torch.set_num_threads(1)

    def alternating(completions, questions):
        return [1.0 if q.domain == "speech" else float(i % 2) for i, q in enumerate(questions)]

    class Done(L.Callback):
        def on_train_end(self, trainer, pl_module):
            digest, gathered = hashlib.sha256(), contextlib.nullcontext()
            if engine == "z3":
                import deepspeed

                gathered = deepspeed.zero.GatheredParameters(list(pl_module.policy.parameters()))
            with gathered:
                for k, v in sorted(pl_module.policy.state_dict().items()):
                    digest.update(k.encode() + v.detach().cpu().numpy().tobytes())
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"weights": digest.hexdigest(), "steps": trainer.global_step, "metrics": metrics}))

    L.seed_everything(0)
    stub = type("Stub", (Reward,), {"name": "stub", "score": staticmethod(alternating)})()
    module = GRPOModule(
        dict(model_name_or_path=warm, think=True),
        sampling=dict(G=4, max_new_tokens=8, keep_logprobs=True),
        optimization=dict(lr=1e-3, micro_batch_prompts=1, behaviour_correction="tis"),
        grounding=dict(relevance="logp_gap", contribution=True, contribution_samples=2,
                       contribution_weights={"unsolved": 0.5}),
        selection=dict(dynamic_sampling=True, max_extra_draws=2),
        rewards=[stub, "accuracy", {"class_path": "think_length", "init_args": {"weight": 0.1}}],
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=2, max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[Done()],
        strategy=cpu_deepspeed(zero3()) if engine == "z3" else DDPStrategy(process_group_backend="gloo"),
    )
    trainer.fit(module, AudioQADataModule(train_file=f"{root}/data/train.jsonl", feature_extractor=warm, batch_size=2,
                                          seed=0))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from r1aqa_pl.recipes.demo import prepare

    root = tmp_path_factory.getbasetemp() / "r1aqa_demo_small"
    return root, {f: prepare(out=str(root), n_train=48, n_test=24, warm_steps=20, family=f)
                  for f in ("qwen2_audio", "qwen3_omni")}


@pytest.mark.slow
@pytest.mark.parametrize("engine,family", [("ddp", "qwen2_audio"), ("z3", "qwen2_audio"), ("ddp", "qwen3_omni"),
                                           ("z3", "qwen3_omni")])
def test_every_knob_in_two_processes(demo, tmp_path, engine, family):
    """qwen3_omni, a mixture of experts: the routing agreement too (the routers' hooks on every rank, ZeRO-3's
    partitioned weights gathered for the rollout)."""
    root, warms = demo
    warm = warms[family]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "tests/training/test_audio_signals_scaleout.py", "worker", str(tmp_path),
                           str(root), warm, engine], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [2, 2] and ranks[0]["weights"] == ranks[1]["weights"]
    logged = ranks[0]["metrics"]
    for key in ("train/rollout_agreement/max_abs", "train/tis/weight", "train/relevance/kept_fraction",
                "train/contribution/pass_without", "train/dynamic/ungrounded_fraction", "train/rewards/think_length"):
        assert key in logged and logged[key] == logged[key], key
    assert logged["train/rollout_agreement/max_abs"] < 1e-4  # fp32
    if family == "qwen3_omni":
        assert logged["train/rollout_agreement/routed_flips"] == 0.0


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "worker":
    worker(*sys.argv[2:6])
