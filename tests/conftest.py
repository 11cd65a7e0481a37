"""Shared fixtures: the real MMAU test-mini metadata (from ../shared) and a small synthetic set."""

from pathlib import Path

import pytest

SHARED = Path(__file__).parents[1].parent / "shared"
MMAU_JSON = SHARED / "data" / "mmau" / "mmau-test-mini.json"


@pytest.fixture(scope="session")
def mmau_json() -> Path:
    """The real MMAU test-mini JSON (1000 records, one real clip); skips only if shared/ is absent."""
    if not MMAU_JSON.is_file():
        pytest.skip(f"{MMAU_JSON} not present")
    return MMAU_JSON


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic set (48 train / 24 test, 2 s clips at 16 kHz), built once per session."""
    from r1aqa_pl.data.synth import synth

    d = tmp_path_factory.mktemp("synth")
    synth(str(d), n_train=48, n_test=24, seed=0)
    return d


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2-Audio (vocabulary covering the synthetic set), saved with save_pretrained."""
    from r1aqa_pl.data.synth import synth_vocabulary
    from r1aqa_pl.models import build_tiny_model

    d = tmp_path_factory.mktemp("tiny")
    build_tiny_model(str(d), words=synth_vocabulary(), seed=0)
    return d


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny GRPO run, trained once per session: ``demo.prepare`` (synthetic data, tiny policy,
    20-step SFT warm start) then 4 GRPO steps (G=4) validated every 2 steps, with BenchmarkEvaluation,
    HFCheckpoint (every validation kept, plus last) and TensorBoard, as ``configs/demo.yaml`` wires them.

    Returns a namespace: ``root``, ``data`` (the MMAU-format test file), ``warm``, ``run`` (the run
    folder), ``log_dir`` (TensorBoard version folder), ``ckpts`` ({global_step: .ckpt path}), ``val_batch_size``.
    """
    import time
    from types import SimpleNamespace

    import lightning as L
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.recipes.demo import prepare
    from r1aqa_pl.training.checkpointing import HFCheckpoint
    from r1aqa_pl.training.grpo_module import GRPOModule

    t0 = time.time()
    root = tmp_path_factory.mktemp("tiny_run")
    warm = prepare(out=str(root), n_train=48, n_test=24, warm_steps=20)
    data, run, val_batch_size = root / "data" / "test-mini.json", root / "run", 8
    L.seed_everything(0, workers=True)
    dm = AudioQADataModule(train_file=str(root / "data" / "train.jsonl"), val_file=str(data), feature_extractor=warm,
                           batch_size=4, val_batch_size=val_batch_size)
    module = GRPOModule(
        warm,
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, micro_batch_prompts=4),
        evaluation=dict(max_new_tokens=8),
    )
    ckpt = HFCheckpoint(
        dirpath=str(run / "checkpoints"),
        monitor="val/acc/total",
        mode="max",
        save_top_k=-1,
        save_last=True,
        filename="step{step}-acc{val/acc/total:.3f}",
        auto_insert_metric_name=False,
    )
    logger = TensorBoardLogger(str(run), name="grpo")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[BenchmarkEvaluation(), ckpt],
        enable_model_summary=False,
        enable_progress_bar=False,
        deterministic=True,
        default_root_dir=str(run),
    )
    trainer.fit(module, dm)
    ckpts = {}
    for p in sorted((run / "checkpoints").glob("step*.ckpt")):
        ckpts[int(torch.load(p, map_location="cpu", weights_only=False, mmap=True)["global_step"])] = p
    print(f"[tiny_run] built in {time.time() - t0:.1f} s: {sorted(ckpts)}")
    return SimpleNamespace(
        root=root,
        data=data,
        warm=Path(warm),
        run=run,
        log_dir=Path(logger.log_dir),
        ckpts=ckpts,
        val_batch_size=val_batch_size,
        seconds=time.time() - t0,
    )
