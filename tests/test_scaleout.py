"""Data-parallel GRPO: 2 processes (DDP, gloo, CPU) on the tiny policy.

Checks that each rank rolls out its own prompts (no prompt seen twice in a step or an epoch), that
gradients are synchronised (both replicas hold identical weights after the updates), and that the
MMAU validation accuracy computed across the 2 ranks equals a single-process validation of the
same weights on the same data.

The DDP run happens in a subprocess running this file as a script (``python tests/test_scaleout.py
worker ...``): Lightning's "ddp" launcher starts rank 1 by re-running that same command line, as it
does for ``lightning fit`` (``ddp_spawn`` would have to pickle the module back to the test).
The DeepSpeed configuration is checked without a GPU here (Lightning's DeepSpeedStrategy needs CUDA);
``scripts/gpu_smoke.sh`` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the DDP worker (a script)

def worker(out: str, root: str, warm: str, steps: int = 2) -> None:
    import hashlib

    import lightning as L
    import torch
    from lightning.pytorch.strategies import DDPStrategy

    from r1aqa_pl.callbacks import MMAUEvaluation
    from r1aqa_pl.data import AudioQADataModule
    from r1aqa_pl.module import GRPOModule

    torch.set_num_threads(1)
    out_dir = Path(out)

    class Seen(L.Callback):
        """Prompts of each rank per optimizer step, and a digest of the final weights."""

        def __init__(self):
            self.prompts: dict[int, list[str]] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.prompts.setdefault(trainer.global_step + 1, []).extend(q.source for q in batch["questions"])

        def on_train_end(self, trainer, pl_module):
            digest = hashlib.sha256()
            for k, v in sorted(pl_module.policy.state_dict().items()):
                digest.update(k.encode() + v.detach().cpu().numpy().tobytes())
            (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"prompts": self.prompts, "weights": digest.hexdigest(), "world_size": trainer.world_size}))

    L.seed_everything(0)
    dm = AudioQADataModule(train_file=f"{root}/data/train.jsonl", val_file=f"{root}/data/test-mini.json",
                           feature_extractor=warm, batch_size=2, val_batch_size=1, seed=0)
    module = GRPOModule(warm, G=4, max_new_tokens=8, eval_max_new_tokens=8, lr=1e-3, micro_batch_prompts=1,
                        gradient_accumulation_steps=1)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo"),
                        max_steps=steps, val_check_interval=steps, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=out,
                        callbacks=[MMAUEvaluation(write_predictions=False), Seen()])
    trainer.fit(module, dm)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        module.export_hf(str(out_dir / "final"))


# ---------------------------------------------------------------- the test

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from r1aqa_pl.demo import prepare

    root = tmp_path_factory.getbasetemp() / "r1aqa_demo_small"
    return root, prepare(out=str(root), n_train=48, n_test=24, warm_steps=20)


@pytest.mark.slow
def test_ddp_two_processes(demo, tmp_path):
    import lightning as L
    import torch

    from r1aqa_pl.callbacks import MMAUEvaluation
    from r1aqa_pl.data import AudioQADataModule
    from r1aqa_pl.module import GRPOModule

    root, warm = demo
    steps = 2
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "tests/test_scaleout.py", "worker", str(tmp_path), str(root), warm,
                           str(steps)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    t_ddp = time.time() - t0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # each rank trains on its own prompts: disjoint within every step, nothing repeated in the epoch
    seen = []
    for step in map(str, range(1, steps + 1)):
        a, b = ranks[0]["prompts"][step], ranks[1]["prompts"][step]
        assert len(a) == len(b) == 2 and not set(a) & set(b), (step, a, b)
        seen += a + b
    assert len(seen) == len(set(seen)) == 2 * 2 * steps
    # gradients were all-reduced: the two replicas ended with identical weights
    assert ranks[0]["weights"] == ranks[1]["weights"]

    # validation across 2 ranks == validation in one process, same weights, same data
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    assert ddp["val/count/total"] == 24
    torch.set_num_threads(1)
    dm = AudioQADataModule(val_file=str(root / "data" / "test-mini.json"), feature_extractor=warm, val_batch_size=1)
    module = GRPOModule(str(tmp_path / "final"), G=4, eval_max_new_tokens=8)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[MMAUEvaluation(write_predictions=False)])
    (single,) = trainer.validate(module, dm)
    val_ddp = {k: v for k, v in ddp.items() if k.startswith("val/acc/")}
    val_single = {k: v for k, v in single.items() if k.startswith("val/acc/")}
    assert "val/acc/total" in val_ddp and val_single == pytest.approx(val_ddp, abs=1e-6)
    print(f"DDP 2 x CPU: {steps} steps + validation in {t_ddp:.1f} s; val/acc/total {val_ddp['val/acc/total']:.3f}")


def test_deepspeed_config_for_the_paper_run():
    """The engine config: ZeRO-3, optimizer and parameters offloaded to the CPU, bf16, clipping = max_grad_norm,
    no gradient accumulation inside the engine, and a micro-batch that counts completions."""
    from r1aqa_pl.distributed import check_deepspeed_config, deepspeed_config

    G, prompts, accumulation = 8, 1, 2
    cfg = check_deepspeed_config(deepspeed_config(), max_grad_norm=1.0, micro_batch_size=prompts * accumulation * G)
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert cfg["bf16"] == {"enabled": True} and cfg["gradient_clipping"] == 1.0
    assert cfg["train_micro_batch_size_per_gpu"] == 16 and "gradient_accumulation_steps" not in cfg
    assert "optimizer" not in cfg and "scheduler" not in cfg
    assert z["stage3_gather_16bit_weights_on_model_save"]  # HF export from a ZeRO-3 run
    # DeepSpeed itself accepts it, parsed as the engine parses it (with gradient_accumulation_steps=1, as Lightning
    # sets it; one process here: on 8 ranks train_batch_size = 8 x 16 = the paper's 128 completions per step)
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig({**cfg, "gradient_accumulation_steps": 1})
    assert parsed.zero_optimization_stage == 3 and parsed.bfloat16_config.enabled
    assert parsed.gradient_clipping == 1.0 and parsed.train_batch_size == 16
    assert parsed.zero_config.offload_optimizer.device == "cpu" and parsed.zero_config.offload_param.device == "cpu"
    # stage 2 (the smoke test's other engine): no parameter offload section
    assert "offload_param" not in deepspeed_config(stage=2, offload_optimizer=False)["zero_optimization"]


def test_deepspeed_config_refuses_what_would_change_the_algorithm():
    from r1aqa_pl.distributed import check_deepspeed_config, deepspeed_config

    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        check_deepspeed_config({**deepspeed_config(), "gradient_accumulation_steps": 2}, 1.0)
    with pytest.raises(ValueError, match="gradient_clipping"):
        check_deepspeed_config(deepspeed_config(max_grad_norm=0.5), 1.0)
    with pytest.raises(ValueError, match="optimizer"):
        check_deepspeed_config({**deepspeed_config(), "optimizer": {"type": "AdamW"}}, 1.0)
    cfg = {"zero_optimization": {"stage": 3}}
    check_deepspeed_config(cfg, 1.0, micro_batch_size=16)  # a user's bare config is completed
    assert cfg["gradient_clipping"] == 1.0 and cfg["train_micro_batch_size_per_gpu"] == 16


def test_without_a_sharded_strategy_the_helpers_do_nothing():
    import torch

    from r1aqa_pl import distributed
    from r1aqa_pl.module import GRPOModule

    m = GRPOModule("unused", G=2)
    assert distributed.zero_stage(m) is None and distributed.deepspeed_engine(m) is None
    with distributed.generation_context(m) as kw:
        assert kw == {}
    distributed.begin_micro_batch(m, last=True)
    assert distributed.engine_grad_norm(m) is None and distributed.all_ranks(m, True)
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(distributed.adamw(m, p, 1e-3, 0.0)) is torch.optim.AdamW


if __name__ == "__main__" and len(sys.argv) >= 5 and sys.argv[1] == "worker":
    worker(*sys.argv[2:5], steps=int(sys.argv[5]) if len(sys.argv) > 5 else 2)
