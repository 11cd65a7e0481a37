"""GPU smoke test of GRPO under each training engine (run by scripts/gpu_smoke.sh).

    r1aqa gpu-smoke run --strategy deepspeed_stage_3_offload --root RUN/demo --out RUN/ds3o
    r1aqa gpu-smoke compare RUN            # the table, and the cross-engine check

One ``run`` trains the tiny policy (made by ``r1aqa demo-prepare``) in bf16 for a few optimizer steps
of 2 rollouts x 2 prompts x G=4 with one prompt per micro-batch (4 backward passes per step), validates
once (greedy generation: under ZeRO-3 with the weights gathered), writes a checkpoint with its Hugging
Face export, and fails on a non-finite or zero loss / gradient norm, a missing validation metric or
an export that does not load. It records per-step time, loss, reward and gradient norm and the peak
GPU memory in ``summary.json``.

``compare`` prints one line per engine and checks the first optimizer step against DDP: with the same
seed the engines sample the same completions (same reward), and then the engines' gradient norms must
agree - a ZeRO stage that overwrote instead of accumulating the 4 micro-batches' gradients would not.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

STRATEGIES = ("ddp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload")


def make_strategy(name: str):
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    from r1aqa_pl.training.strategy import deepspeed_config

    if name == "ddp":
        return DDPStrategy()
    stage = 2 if name == "deepspeed_stage_2" else 3
    offload = name.endswith("offload")
    return DeepSpeedStrategy(
        config=deepspeed_config(stage=stage, offload_optimizer=offload, offload_parameters=offload)
    )


def run(strategy: str, root: str, out: str, steps: int = 3, accelerator: str = "gpu") -> dict:
    import lightning as L
    import torch

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training.checkpointing import HFCheckpoint
    from r1aqa_pl.training.grpo_module import GRPOModule

    out_dir, warm = Path(out), str(Path(root) / "warm")
    out_dir.mkdir(parents=True, exist_ok=True)

    class StepStats(L.Callback):
        def __init__(self):
            self.steps, self._last, self._t = [], 0, None

        def on_train_start(self, trainer, pl_module):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self._last:
                return
            if accelerator == "gpu":
                torch.cuda.synchronize()
            now, self._last = time.perf_counter(), trainer.global_step
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            self.steps.append({"step": trainer.global_step, "seconds": now - self._t, **m})
            self._t = now

    t0 = time.time()
    L.seed_everything(0)
    dm = AudioQADataModule(
        train_file=f"{root}/data/train.jsonl",
        val_file=f"{root}/data/test-mini.json",
        feature_extractor=warm,
        batch_size=2,
        val_batch_size=8,
        seed=0,
    )
    module = GRPOModule(
        dict(model_name_or_path=warm, dtype="bfloat16"),
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=1),
        evaluation=dict(max_new_tokens=8),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
    )
    stats = StepStats()
    ckpt = HFCheckpoint(
        dirpath=str(out_dir / "checkpoints"),
        every_n_train_steps=steps,
        save_top_k=-1,
        filename="step{step}",
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision="bf16-true",
        strategy=make_strategy(strategy) if accelerator == "gpu" else "auto",
        max_steps=steps,
        val_check_interval=2 * steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
        callbacks=[BenchmarkEvaluation(write_predictions=False), stats, ckpt],
    )
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, dm)
    peak = torch.cuda.max_memory_allocated() if accelerator == "gpu" else 0
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/acc/")}

    problems = []
    if len(stats.steps) != steps:
        problems.append(f"{len(stats.steps)} optimizer steps recorded, expected {steps}")
    for s in stats.steps:
        if not all(math.isfinite(s.get(k, math.nan)) for k in ("train/loss", "train/grad_norm", "train/reward")):
            problems.append(f"step {s['step']}: non-finite or missing loss / grad norm / reward: {s}")
        elif s["train/grad_norm"] <= 0:
            problems.append(f"step {s['step']}: zero gradient norm (nothing was accumulated?)")
    if "val/acc/total" not in val:
        problems.append("no val/acc/total after validation")
    hf = out_dir / "checkpoints" / f"step{steps}_hf"
    # Loaded in a fresh process: after a ZeRO-3 fit the HfDeepSpeedConfig that made the policy load
    # partitioned is still registered in this one, so from_pretrained here gives empty tensors.
    res = subprocess.run([sys.executable, __file__, "check-export", str(hf), warm], capture_output=True, text=True)
    if res.returncode != 0:
        last = ((res.stderr or res.stdout).strip().splitlines() or ["no output"])[-1]
        problems.append(f"HF export at {hf}: {last}")
    summary = {
        "strategy": strategy,
        "steps": stats.steps,
        "peak_memory_mb": peak / 2**20,
        "val": val,
        "seconds": time.time() - t0,
        "problems": problems,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if problems:
        raise SystemExit(f"[gpu_smoke] {strategy} FAILED:\n  " + "\n  ".join(problems))
    print(f"[gpu_smoke] {strategy} OK in {summary['seconds']:.0f} s")
    return summary


def check_export(hf: str, warm: str) -> None:
    """The export loads with ``from_pretrained``, has the warm start's shapes, and differs from it
    (the optimizer steps were applied)."""
    from transformers import Qwen2AudioForConditionalGeneration

    exported = Qwen2AudioForConditionalGeneration.from_pretrained(hf).state_dict()
    start = Qwen2AudioForConditionalGeneration.from_pretrained(warm).state_dict()
    wrong = [k for k in start if k not in exported or exported[k].shape != start[k].shape]
    if wrong:
        raise SystemExit(f"{hf}: missing or mis-shaped weights: {wrong[:5]}")
    moved = max((exported[k].float() - start[k].float()).abs().max().item() for k in start)
    if not moved > 0:
        raise SystemExit(f"{hf}: exported weights equal the warm start")
    print(f"export OK: {len(start)} tensors, largest change {moved:.3g}")


def compare(run_dir: str) -> int:
    rows = {}
    for name in STRATEGIES:
        p = Path(run_dir) / name / "summary.json"
        if p.is_file():
            rows[name] = json.loads(p.read_text())
    print(
        f"{'engine':28s} {'step s (median)':>16s} {'peak MB':>9s} {'loss 1..n':>28s} {'grad norm 1':>12s} "
        f"{'reward 1':>9s} {'val acc':>8s}"
    )
    for name, r in rows.items():
        steps = r["steps"]
        times = [s["seconds"] for s in steps[1:]] or [s["seconds"] for s in steps]
        losses = " ".join(f"{s['train/loss']:.4f}" for s in steps)
        print(
            f"{name:28s} {statistics.median(times):16.2f} {r['peak_memory_mb']:9.1f} {losses:>28s} "
            f"{steps[0]['train/grad_norm']:12.4f} {steps[0]['train/reward']:9.3f} "
            f"{r['val'].get('val/acc/total', -1):8.3f}"
        )
    failures = []
    ref = rows.get("ddp")
    for name, r in rows.items():
        if name == "ddp" or ref is None:
            continue
        a, b = ref["steps"][0], r["steps"][0]
        if abs(a["train/reward"] - b["train/reward"]) > 1e-6:
            print(
                f"note: {name} sampled other completions than ddp at step 1 (reward {b['train/reward']:.3f} vs "
                f"{a['train/reward']:.3f}); gradient norms not compared"
            )
            continue
        if a["train/grad_norm"] < 1e-3:
            print(
                f"note: step-1 gradient norm {a['train/grad_norm']:.1e} is rounding noise (no reward variance at "
                f"step 1: KL only, zero at the start); {name} not compared"
            )
            continue
        ratio = b["train/grad_norm"] / a["train/grad_norm"]
        print(f"{name}: step-1 gradient norm / ddp's = {ratio:.3f}")
        if not 0.8 < ratio < 1.25:
            failures.append(
                f"{name}: step-1 gradient norm {b['train/grad_norm']:.4f} vs ddp {a['train/grad_norm']:.4f} "
                "for the same completions: micro-batch gradients not accumulated correctly?"
            )
    if failures:
        print("[gpu_smoke] FAILED:\n  " + "\n  ".join(failures))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--strategy", choices=STRATEGIES, required=True)
    r.add_argument("--root", required=True, help="folder made by `r1aqa demo-prepare` (data/, warm/)")
    r.add_argument("--out", required=True)
    r.add_argument("--steps", type=int, default=3)
    r.add_argument("--accelerator", default="gpu", help="cpu: dry-run of the script's own logic (ddp only)")
    e = sub.add_parser("check-export")
    e.add_argument("hf")
    e.add_argument("warm")
    c = sub.add_parser("compare")
    c.add_argument("run_dir")
    args = ap.parse_args(argv)
    if args.cmd == "check-export":
        check_export(args.hf, args.warm)
        return 0
    if args.cmd == "run":
        run(args.strategy, args.root, args.out, args.steps, args.accelerator)
        return 0
    return compare(args.run_dir)


if __name__ == "__main__":
    sys.exit(main())
