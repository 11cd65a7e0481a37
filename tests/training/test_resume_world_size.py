"""Resuming on another world size (a pre-empted job restarted on another allocation): a GRPO run checkpointed on 2
processes resumes on 1, one checkpointed on 1 resumes on 2, under DDP and under ZeRO-3 (DeepSpeed's CPU backend).

Carried over exactly, each asserted on tensors and counts:

* the weights, AdamW's moments (``exp_avg``, ``exp_avg_sq``) and step, the LR and the scheduler's position: the state
  the resumed run starts from equals the state the interrupted run saved, tensor for tensor (ZeRO-3: through
  DeepSpeed's universal checkpoint, converted once inside the checkpoint folder);
* the data position, in prompts: every new rank is served the epoch order's prompts not yet seen, dealt over the new
  ranks (none twice, none skipped), and the epoch ends when they are all served;
* the dynamic-sampling pool: its groups dealt over the new ranks, those beyond a rank's step dropped and counted.

Not exact, and said so in one warning line: the per-rank random streams (the new ranks start from the run's seed)
and rollouts waiting for their step (dropped; their prompts served again).

The fits run in subprocesses (``python tests/training/test_resume_world_size.py worker ...``), as in
tests/training/test_scaleout.py.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BATCH = 2  # prompts per rank and batch in every run here


# ---------------------------------------------------------------- the fit (a script)


def full_state(trainer, module) -> dict:
    """Weights, AdamW's moments and step, the LR and the scheduler's position, whole (under ZeRO-3 gathered from the
    partitions: a collective, every rank calls it)."""
    from r1aqa_pl.training import strategy

    opt, sched = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
    named = [(n, p) for n, p in module.policy.named_parameters() if p.requires_grad]
    out = {"global_step": trainer.global_step, "lr": float(sched.get_last_lr()[0]), "sched_epoch": sched.last_epoch,
           "weights": {}, "exp_avg": {}, "exp_avg_sq": {}}
    if strategy.zero_stage(module) == 3:
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        for n, p in named:
            out["weights"][n] = safe_get_full_fp32_param(p).detach().cpu().clone()
            for k in ("exp_avg", "exp_avg_sq"):
                out[k][n] = safe_get_full_optimizer_state(p, k).detach().cpu().clone()
        base = opt.optimizer  # the ZeRO optimizer's torch AdamW over the flat fp32 partitions
        steps = {float(s["step"]) for s in base.state.values()}
    else:
        base = opt
        for n, p in named:
            out["weights"][n] = p.detach().cpu().clone()
            for k in ("exp_avg", "exp_avg_sq"):
                out[k][n] = opt.state[p][k].detach().cpu().clone()
        steps = {float(opt.state[p]["step"]) for _, p in named}
    assert len(steps) == 1, steps
    out["step"], out["param_group_lr"] = steps.pop(), float(base.param_groups[0]["lr"])
    return out


def worker(out: str, root: str, warm: str, engine: str, devices: int, max_steps: int, stop_at: int,
           ckpt: str | None = None) -> None:
    """The tiny policy's GRPO fit on ``devices`` CPU processes under DDP or ZeRO-3 (``engine``: ddp | z3) with
    ``max_steps`` in its LR schedule: stopped after ``stop_at`` steps (a crash after the checkpoint written there),
    or resumed from ``ckpt``. Writes per rank the prompts of every step and the torch RNG state's digest at the first
    batch (and at the save); on rank 0 the whole training state at the save or where the resumed run starts."""
    import hashlib

    if engine == "z3":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training.grpo_module import GRPOModule
    from r1aqa_pl.training.strategy import deepspeed_config

    torch.set_num_threads(1)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rng() -> str:
        return hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()

    class CPUDeepSpeed(DeepSpeedStrategy):  # as in test_scaleout.py: Lightning's strategy minus its CUDA checks
        @property
        def root_device(self):
            return torch.device("cpu", 0)

        def setup_environment(self):
            DDPStrategy.setup_environment(self)

        def setup_distributed(self):
            from lightning.fabric.utilities.seed import reset_seed

            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

    class Probe(L.Callback):
        def __init__(self):
            self.prompts: dict[int, list[str]] = {}
            self.rng: dict[str, str] = {}

        def on_train_start(self, trainer, pl_module):
            if trainer.ckpt_path:  # restored: weights, optimizer, schedulers and loops
                state = full_state(trainer, pl_module)
                if trainer.is_global_zero:
                    torch.save(state, out_dir / "resumed_state.pt")

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            self.rng["saved"] = rng()
            state = full_state(trainer, pl_module)
            if trainer.is_global_zero:
                torch.save(state, out_dir / "saved_state.pt")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.rng.setdefault("first_batch", rng())  # after GRPOModule.on_train_start has restored (or not)
            self.prompts.setdefault(trainer.global_step + 1, []).extend(q.source for q in batch["questions"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if stop_at and trainer.global_step >= stop_at:
                trainer.should_stop = True

        def on_train_end(self, trainer, pl_module):
            (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"prompts": self.prompts, "rng": self.rng, "world_size": trainer.world_size,
                 "steps": trainer.global_step}))

    L.seed_everything(0)
    dm = AudioQADataModule(train_file=f"{root}/data/train.jsonl", feature_extractor=warm, batch_size=BATCH, seed=0)
    module = GRPOModule(
        warm,
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, max_grad_norm=0.5, micro_batch_prompts=2, gradient_accumulation_steps=1),
        evaluation=dict(max_new_tokens=8),
    )
    if engine == "z3":
        cfg = deepspeed_config(stage=3, offload_optimizer=False, offload_parameters=False, bf16=False,
                               max_grad_norm=None, pin_memory=False)
        cfg.pop("gradient_clipping")  # filled in from the module's max_grad_norm
        cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even these tiny weights
        strategy = CPUDeepSpeed(config=cfg, process_group_backend="gloo")
    else:
        strategy = DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto"
    saving = [] if ckpt else [L.pytorch.callbacks.ModelCheckpoint(
        dirpath=f"{out}/ckpt", filename="step{step}", save_top_k=-1, every_n_train_steps=stop_at,
        auto_insert_metric_name=False)]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=not ckpt,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[Probe(), *saving],
    )
    trainer.fit(module, dm, ckpt_path=ckpt)


# ---------------------------------------------------------------- the data position, in prompts (no fit)


def fake_trainer(world: int, rank: int = 0, dm=None, epoch: int = 0, processed: int = 0):
    """What the data module and resume code read from a Trainer."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
    return SimpleNamespace(world_size=world, global_rank=rank, datamodule=dm, current_epoch=epoch,
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))


def data_module(synth_dir, tiny_dir, world: int, rank: int, processed: int = 0, state: dict | None = None,
                batch_size: int = BATCH):
    from helpers import datamodule

    dm = datamodule(synth_dir, tiny_dir, batch_size=batch_size)
    dm.setup("fit")
    dm.trainer = fake_trainer(world, rank, dm, processed=processed)
    if state is not None:
        dm.load_state_dict(copy.deepcopy(state))
    return dm


def checkpoint_after(dm, batches: int) -> dict:
    """What Lightning saves at ``on_train_batch_end`` of batch ``batches``: the data module's position, its batch
    size and the epoch loop's per-rank batch counters."""
    dm.trainer.fit_loop.epoch_loop.batch_progress.current.processed = batches
    count = {"ready": batches, "started": batches, "processed": batches, "completed": batches - 1}
    return {type(dm).__qualname__: dm.state_dict(),
            "datamodule_hyper_parameters": {"batch_size": dm.hparams.batch_size},
            "loops": {"fit_loop": {"epoch_loop.batch_progress": {"total": dict(count), "current": dict(count),
                                                                  "is_last_batch": False}}}}


def epoch_order(dm) -> list[str]:
    from r1aqa_pl.data.datamodule import ResumableSampler

    ds = dm.datasets["train"]
    return [ds.questions[i].source for i in ResumableSampler(ds, seed=0, epoch=0)]


def served(loader, limit: int | None = None) -> list[list[str]]:
    """The batches ``loader`` serves (the first ``limit``), as the prompts' sources."""
    out = []
    for batch in loader:
        out.append([q.source for q in batch["questions"]])
        if limit is not None and len(out) == limit:
            break
    return out


@pytest.mark.parametrize("old, new, batches", [(2, 1, 2), (1, 2, 3), (1, 3, 5), (3, 2, 1)])
def test_the_epoch_continues_with_the_prompts_not_yet_served(synth_dir, tiny_dir, old, new, batches):
    """``batches`` batches per rank served on ``old`` ranks, the run resumed on ``new``: each new rank serves its deal
    of the prompts not yet seen, all of them and none seen, Lightning's counters end the epoch exactly there; saved
    again mid-way and resumed (same new world size), the run continues with the rest."""
    from r1aqa_pl.training.resume import reposition_data

    old_dms = [data_module(synth_dir, tiny_dir, old, r) for r in range(old)]
    order = epoch_order(old_dms[0])
    n = len(order)
    seen = [p for dm in old_dms for b in served(dm.train_dataloader(), batches) for p in b]
    assert sorted(seen) == sorted(order[: old * batches * BATCH])  # the ranks' deal: a prefix of the order
    ckpt = checkpoint_after(old_dms[0], batches)
    assert ckpt["AudioQADataModule"] == {"epoch": 0, "batches": batches}  # as before: no count in prompts

    new_dms = [data_module(synth_dir, tiny_dir, new, r) for r in range(new)]
    note = reposition_data(SimpleNamespace(_trainer=new_dms[0].trainer), ckpt, old)
    position, progress = ckpt["AudioQADataModule"], ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    P = old * batches * BATCH
    assert position["prompts"] == P and f"{P} of {n} prompts of epoch 0 served" in note
    rest = order[P:]
    per_rank = -(-len(rest) // new)
    for r, dm in enumerate(new_dms):
        dm.load_state_dict(copy.deepcopy(position))
        loader = dm.train_dataloader()
        got = [p for b in served(loader) for p in b]
        padded = rest + order[: new * per_rank - len(rest)]  # padded from the epoch's start, as DistributedSampler
        assert got == padded[r::new]
        # Lightning's counter after the rewrite + this rank's batches left == the loader's length: the epoch ends here
        assert progress["current"]["processed"] + -(-per_rank // BATCH) == len(loader)
    # the ranks served every prompt not yet seen, once, plus fewer than `new` of the order's first (DistributedSampler
    # pads so) that every rank serves as many
    assert len(padded) - len(rest) < new
    assert not set(rest) & set(seen) and len(rest) + len(seen) == n

    # saved again after one more batch on the new ranks, resumed on them: the rest of the rest, in prompts
    again = checkpoint_after(new_dms[0], progress["current"]["processed"] + 1)
    assert again["AudioQADataModule"]["prompts"] == P + new * BATCH
    for r in range(new):
        dm = data_module(synth_dir, tiny_dir, new, r, state=again["AudioQADataModule"])
        assert [p for b in served(dm.train_dataloader()) for p in b] == padded[r::new][BATCH:]


def test_another_batch_size_on_the_same_ranks_counts_prompts_too(synth_dir, tiny_dir, caplog):
    """2 ranks, 2 batches of 2 each served, resumed on 2 ranks with batches of 3 (e.g. to keep the prompts per step):
    the position is 8 prompts, not 2 batches of 3; said in a warning; RNG streams and buffers stay exact."""
    old = [data_module(synth_dir, tiny_dir, 2, r) for r in range(2)]
    order = epoch_order(old[0])
    for dm in old:
        served(dm.train_dataloader(), 2)
    ckpt = checkpoint_after(old[0], 2)
    ckpt["grpo_resume"] = state = saved_state([{}, {}])
    for rank in (0, 1):
        new = data_module(synth_dir, tiny_dir, 2, rank, batch_size=3)
        module = grpo_module(2, rank, dm=new)
        loaded = copy.deepcopy(ckpt)
        with caplog.at_level(logging.WARNING, logger="r1aqa_pl.training.resume"):
            module.on_load_checkpoint(loaded)  # rewrites the data position in place, as Lightning then restores it
        assert torch.equal(module._resume_rng["torch"], state["ranks"][rank]["rng"]["torch"])
        new.load_state_dict(loaded["AudioQADataModule"])
        batches = served(new.train_dataloader())
        assert [p for b in batches for p in b] == order[8 + rank :: 2] and len(batches) == 7  # 20 prompts, by 3
    assert "batch size changed: the data position is carried over in prompts (8 of 48 prompts" in caplog.text


def test_sampler_dealing_from_a_position_on_the_same_ranks_is_the_plain_resume():
    from r1aqa_pl.data.datamodule import ResumableSampler

    data = list(range(11))
    for world in (1, 2, 3):
        for r in range(world):
            plain = list(ResumableSampler(data, world, r, seed=4, epoch=2, start=2))
            dealt = ResumableSampler(data, world, r, seed=4, epoch=2, consumed=2 * world)
            assert list(dealt) == plain and len(dealt) == len(ResumableSampler(data, world, r))
            assert list(dealt) == list(ResumableSampler(data, world, r, seed=4, epoch=2))  # one pass only


# ---------------------------------------------------------------- the resume state on another world size (no fit)


def group(q, seed: int):
    from r1aqa_pl.rollout.base import ScoredGroup

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (2, 3), generator=g)
    return ScoredGroup(q, torch.rand(16, generator=g), ids, torch.ones_like(ids), ["a", "b"], torch.tensor([0.0, 1.0]),
                       {"accuracy": torch.tensor([0.0, 1.0])})


def saved_state(ranks: list[dict]) -> dict:
    """A ``grpo_resume`` entry as ``torch.load(weights_only=True)`` reads it back."""
    from r1aqa_pl.training import resume

    return {"world_size": len(ranks), "ranks": [
        {"rng": resume.rng_state(), "buffer": resume._pack(r.get("buffer", [])), "pool": resume._pack(r.get("pool"))}
        for r in ranks]}


def grpo_module(world: int, rank: int = 0, dm=None, **kw):
    from r1aqa_pl.training.grpo_module import GRPOModule

    module = GRPOModule("unused", sampling=dict(G=2), **kw)
    module._trainer = fake_trainer(world, rank, dm)
    return module


def test_the_dynamic_sampling_pool_is_dealt_over_the_new_ranks(caplog):
    """2 ranks' pools (3 informative groups) onto 1 rank stepping on 2 prompts: 2 kept, 1 dropped, counted in the
    warning; 1 rank's pool onto 2 ranks: dealt round-robin, nothing lost. The groups' tensors come back unchanged."""
    from r1aqa_pl.task.question import Question
    from r1aqa_pl.training import resume
    from r1aqa_pl.training.dynamic_sampling import GroupPool

    qs = [Question(str(i), None, f"q{i}", ["x", "y"], "y") for i in range(5)]
    g = [group(q, i) for i, q in enumerate(qs)]
    pools = [GroupPool(), GroupPool()]
    pools[0].groups, pools[0].spare, pools[0].draws, pools[0].drawn, pools[0].dropped = g[:2], [g[3]], 2, 6, 3
    pools[1].groups, pools[1].spare, pools[1].draws, pools[1].drawn, pools[1].dropped = g[2:3], [g[4]], 2, 6, 4
    state = saved_state([{"pool": p.state_dict()} for p in pools])

    module = grpo_module(1, selection=dict(dynamic_sampling=True))
    module.prompts_per_batch = 2  # x gradient_accumulation_steps 1: the step's prompts
    with caplog.at_level(logging.WARNING, logger="r1aqa_pl.training.resume"):
        module.on_load_checkpoint({"grpo_resume": state})
    assert module._resume_rng is None and module.buffer == []
    kept = module.pool
    assert [x.question.id for x in kept.groups] == ["0", "1"]  # in rank order; beyond the step's 2, dropped
    assert all(torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.audio, b.audio)
               for a, b in zip(kept.groups, g[:2]))
    assert [x.question.id for x in kept.spare] == ["3", "4"]
    assert (kept.draws, kept.drawn, kept.dropped) == (2, 12, 7)
    (line,) = [r.getMessage() for r in caplog.records if "world size changed" in r.getMessage()]
    assert "checkpoint written by 2 processes, resumed on 1" in line
    assert "dynamic-sampling pool: 3 groups from 2 ranks dealt over 1: 2 kept, 1 dropped" in line

    one = GroupPool()
    one.groups, one.draws, one.drawn, one.dropped = g[:3], 1, 5, 1
    state = saved_state([{"pool": one.state_dict()}])
    dealt = []
    for rank in (0, 1):
        pool, note = resume.reshard_pools([resume.to_device(r["pool"], "cpu") for r in state["ranks"]], 2, rank, 2)
        dealt.append(pool)
    assert [[x.question.id for x in p["groups"]] for p in dealt] == [["0", "2"], ["1"]]
    assert [(p["draws"], p["drawn"], p["dropped"]) for p in dealt] == [(1, 3, 1), (1, 2, 0)]
    assert note == "3 groups from 1 ranks dealt over 2: 3 kept, 0 dropped"


def test_buffered_rollouts_are_dropped_and_their_prompts_served_again(synth_dir, tiny_dir, caplog):
    """2 ranks had each rolled out 1 batch of a 2-batch step (4 prompts waiting) after 3 batches each: on 1 rank
    those rollouts are dropped (counted in the warning) and the data position gives their 4 prompts back: the
    resumed rank is served order[8:] (the last 4 seen, then the 36 never seen)."""
    from r1aqa_pl.rollout import Rollout

    old = [data_module(synth_dir, tiny_dir, 2, r) for r in range(2)]
    order = epoch_order(old[0])
    last = [served(dm.train_dataloader(), 3)[-1] for dm in old]  # each rank's buffered batch
    ds = old[0].datasets["train"]
    by_source = {q.source: q for q in ds.questions}
    buffers = []
    for batch in last:
        ids = torch.zeros(4, 2, dtype=torch.long)
        questions = [by_source[s] for s in batch]
        buffers.append([Rollout(questions, {"input_ids": torch.ones(2, 3)}, ids, torch.ones_like(ids), ["a"] * 4,
                                torch.zeros(4), {}, torch.zeros(4))])
    ckpt = checkpoint_after(old[0], 3)
    ckpt["grpo_resume"] = saved_state([{"buffer": b} for b in buffers])

    new = data_module(synth_dir, tiny_dir, 1, 0)
    module = grpo_module(1, dm=new, optimization=dict(gradient_accumulation_steps=2))
    with caplog.at_level(logging.WARNING, logger="r1aqa_pl.training.resume"):
        module.on_load_checkpoint(ckpt)
    assert module.buffer == [] and module._resume_rng is None
    assert sorted(last[0] + last[1]) == sorted(order[8:12])
    new.load_state_dict(ckpt["AudioQADataModule"])
    assert [p for b in served(new.train_dataloader()) for p in b] == order[8:]
    (line,) = [r.getMessage() for r in caplog.records if "world size changed" in r.getMessage()]
    assert "2 buffered rollouts (4 prompts) dropped, their prompts served again" in line
    assert "data position (8 of 48 prompts of epoch 0 served, 40 left" in line


def test_same_world_size_restores_this_ranks_streams_without_a_warning(caplog):
    from r1aqa_pl.training import resume

    torch.manual_seed(3)
    state = saved_state([{}, {}])
    module = grpo_module(2, rank=1)
    with caplog.at_level(logging.WARNING):
        rng, buffer, pool = resume.load_resume_state(module, state, {})
    assert torch.equal(rng["torch"], state["ranks"][1]["rng"]["torch"]) and buffer == [] and pool is None
    assert not [r for r in caplog.records if "world size" in r.getMessage()]


def test_deepspeed_loads_the_universal_checkpoint_on_another_world_size(tmp_path, monkeypatch):
    """The strategy's load: a folder of 2 ZeRO shards on 1 process is converted (rank 0, once) and loaded as
    DeepSpeed's universal checkpoint; on 2 processes DeepSpeed's own load runs unchanged."""
    from r1aqa_pl.training import strategy

    folder = tmp_path / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    for r in range(2):
        (folder / "checkpoint" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"")
    assert strategy.checkpoint_world_size(folder) == 2 and strategy.checkpoint_world_size(tmp_path / "x.ckpt") is None
    converted = []
    monkeypatch.setattr(strategy, "universal_checkpoint", lambda path: converted.append(str(path)))
    for world in (2, 1):
        engine = SimpleNamespace(_config=SimpleNamespace(load_universal_checkpoint=False))
        fake = SimpleNamespace(world_size=world, is_global_zero=True, barrier=lambda name: None, model=engine,
                               load_checkpoint=lambda path, *a, **k: {"loaded": str(path)})
        strategy.reshard_on_load(fake)
        strategy.reshard_on_load(fake)  # installed once
        assert fake.load_checkpoint(str(folder)) == {"loaded": str(folder)}
        assert engine._config.load_universal_checkpoint == (world == 1)
    assert converted == [str(folder)]


# ---------------------------------------------------------------- the fits


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from r1aqa_pl.recipes.demo import prepare

    root = tmp_path_factory.getbasetemp() / "r1aqa_demo_small"
    return root, prepare(out=str(root), n_train=48, n_test=24, warm_steps=20)


def launch(out: Path, demo, engine: str, devices: int, stop_at: int = 0, ckpt: Path | None = None) -> str:
    """The worker in a subprocess (4 steps in the LR schedule); returns its output."""
    root, warm = demo
    launcher = ("SLURM_", "TORCHELASTIC_", "PET_", "MASTER_", "LOCAL_RANK", "WORLD_SIZE", "RANK", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    cmd = [sys.executable, "tests/training/test_resume_world_size.py", "worker", str(out), str(root), warm, engine,
           str(devices), "4", str(stop_at), *([str(ckpt)] if ckpt else [])]
    proc = subprocess.run(cmd, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "z3"])
@pytest.mark.parametrize("saved_on, resumed_on", [(2, 1), (1, 2)])
def test_resume_on_another_world_size(demo, tmp_path, engine, saved_on, resumed_on):
    """Checkpointed after 2 of 4 steps on ``saved_on`` processes, resumed on ``resumed_on``: the resumed run starts
    from the saved weights, moments, step and LR exactly, serves the prompts not yet seen (counted globally), and
    says in one warning what is not exact; its random streams start afresh from the seed."""
    if engine == "z3":
        pytest.importorskip("deepspeed")
    from r1aqa_pl.data.datamodule import AudioQADataModule

    t0 = time.time()
    launch(tmp_path / "saved", demo, engine, saved_on, stop_at=2)
    t1 = time.time()
    ckpt = tmp_path / "saved" / "ckpt" / "step2.ckpt"
    log = launch(tmp_path / "resumed", demo, engine, resumed_on, ckpt=ckpt)
    t2 = time.time()

    # weights, AdamW's moments and step, LR: the state saved, tensor for tensor
    saved = torch.load(tmp_path / "saved" / "saved_state.pt", weights_only=True)
    start = torch.load(tmp_path / "resumed" / "resumed_state.pt", weights_only=True)
    for k in ("global_step", "step", "sched_epoch", "lr", "param_group_lr"):
        assert start[k] == saved[k], k
    assert (saved["global_step"], saved["step"], saved["sched_epoch"]) == (2, 2.0, 2)
    assert saved["lr"] == saved["param_group_lr"] == pytest.approx(1e-3 * (4 - 2) / 4)  # linear decay over 4 steps
    for k in ("weights", "exp_avg", "exp_avg_sq"):
        assert start[k].keys() == saved[k].keys() and len(saved[k]) > 60, k
        for name, v in saved[k].items():
            assert torch.equal(start[k][name], v), (k, name)
    assert sum(float(v.abs().sum()) for v in saved["exp_avg_sq"].values()) > 0  # two real Adam steps

    # the data position in prompts: the next prompts are the order's not yet seen, dealt over the new ranks
    root, warm = demo
    dm = AudioQADataModule(train_file=str(root / "data" / "train.jsonl"), feature_extractor=warm)
    dm.setup("fit")
    order = epoch_order(dm)
    before = [json.loads((tmp_path / "saved" / f"rank{r}.json").read_text()) for r in range(saved_on)]
    after = [json.loads((tmp_path / "resumed" / f"rank{r}.json").read_text()) for r in range(resumed_on)]
    P = saved_on * 2 * BATCH
    seen = [p for r in before for step in ("1", "2") for p in r["prompts"][step]]
    assert sorted(seen) == sorted(order[:P])
    for r, rank in enumerate(after):
        assert rank["steps"] == 4 and sorted(rank["prompts"]) == ["3", "4"]
        assert rank["prompts"]["3"] + rank["prompts"]["4"] == order[P + r :: resumed_on][: 2 * BATCH], r
    assert f"data position ({P} of 48 prompts of epoch 0 served, {48 - P} left" in log

    # detected and said: one warning naming both world sizes and what is not exact
    assert f"world size changed: checkpoint written by {saved_on} processes, resumed on {resumed_on}" in log
    assert "Not exact: per-rank random streams" in log
    # random streams: not the saved ones; each new rank's is the one a fresh start of this run has
    assert all(r["rng"]["first_batch"] == before[0]["rng"]["first_batch"] for r in after)
    assert not {r["rng"]["first_batch"] for r in after} & {r["rng"]["saved"] for r in before}
    if engine == "z3":  # converted once, inside the checkpoint folder, and loaded from there
        assert (ckpt / "latest_universal").read_text().strip() == "universal"
        assert (f"DeepSpeed checkpoint written by {saved_on} processes, resuming on {resumed_on}: loading DeepSpeed's "
                f"universal checkpoint {ckpt}/universal (converting the shards now, once)") in log
    print(f"{engine} {saved_on} -> {resumed_on}: saved run {t1 - t0:.1f} s, resumed {t2 - t1:.1f} s")


if __name__ == "__main__" and len(sys.argv) >= 9 and sys.argv[1] == "worker":
    # worker OUT ROOT WARM ENGINE DEVICES MAX_STEPS STOP_AT [CKPT]
    a = sys.argv[2:]
    worker(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]), int(a[6]), a[7] if len(a) > 7 else None)


def test_sft_resumed_on_another_world_size_carries_the_data_position_in_prompts(synth_dir, tiny_dir, caplog):
    """SFT records its world size; 2 ranks × 2 batches of 2 served, resumed on 1 rank: the one rank serves the 40
    prompts not yet seen, in the epoch's order, said in one warning. A checkpoint from before the world size was
    recorded counts as written on this one (the position as saved)."""
    from r1aqa_pl.training.sft_module import SFTModule

    old = [data_module(synth_dir, tiny_dir, 2, r) for r in range(2)]
    order = epoch_order(old[0])
    for dm in old:
        served(dm.train_dataloader(), 2)
    ckpt = checkpoint_after(old[0], 2)
    saving = SFTModule("unused")
    saving._trainer = fake_trainer(2)
    saving.on_save_checkpoint(ckpt)
    assert ckpt["sft_resume"] == {"world_size": 2}

    new = data_module(synth_dir, tiny_dir, 1, 0)
    module = SFTModule("unused")
    module._trainer = new.trainer
    loaded = copy.deepcopy(ckpt)
    with caplog.at_level(logging.WARNING, logger="r1aqa_pl.training.resume"):
        module.on_load_checkpoint(loaded)
    new.load_state_dict(loaded["AudioQADataModule"])
    assert [p for b in served(new.train_dataloader()) for p in b] == order[8:]
    assert "world size changed: checkpoint written by 2 processes, resumed on 1" in caplog.text
    assert "8 of 48 prompts of epoch 0 served" in caplog.text

    caplog.clear()
    legacy = copy.deepcopy(ckpt)
    del legacy["sft_resume"]
    module.on_load_checkpoint(legacy)  # read as 1 process: 2 batches of 2 on this one rank, nothing rewritten
    assert legacy["AudioQADataModule"] == ckpt["AudioQADataModule"] and "changed" not in caplog.text
