"""Data-parallel GRPO: 2 processes (DDP, gloo, CPU) on the tiny policy.

Checks that each rank rolls out its own prompts (no prompt seen twice in a step or an epoch), that
gradients are synchronised (both replicas hold identical weights after the updates), and that the
MMAU validation accuracy computed across the 2 ranks equals a single-process validation of the
same weights on the same data.

The DDP run happens in a subprocess running this file as a script (``python tests/training/test_scaleout.py
worker ...``): Lightning's "ddp" launcher starts rank 1 by re-running that same command line, as it
does for ``lightning fit`` (``ddp_spawn`` would have to pickle the module back to the test). The same worker
as 2 nodes x 1 process on this host (``num_nodes=2``), started by two torchrun agents (c10d rendezvous) or with
srun's SLURM_* variables, must reproduce that 1 node x 2 processes run exactly; under DDP and under ZeRO-3 (Lightning's
DeepSpeedStrategy on DeepSpeed's CPU accelerator, :func:`cpu_deepspeed`: its CUDA-only checks bypassed).
``scripts/gpu_smoke.sh`` runs the DeepSpeed configuration on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the DDP worker (a script)

def speech_constant(completions, questions):
    """Stub reward for dynamic sampling: speech groups constant, the others alternate 0 / 1."""
    return [1.0 if q.domain == "speech" else float(i % 2) for i, q in enumerate(questions)]


def cpu_deepspeed(config: dict):
    """Lightning's DeepSpeedStrategy on DeepSpeed's CPU accelerator (gloo): the strategy's CUDA-only checks bypassed,
    everything else the real code path."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    class CPUDeepSpeed(DeepSpeedStrategy):
        @property
        def root_device(self):
            return torch.device("cpu", 0)

        def setup_environment(self):  # skips the "CUDA only" check
            DDPStrategy.setup_environment(self)

        def setup_distributed(self):  # skips the CUDA device-index check
            from lightning.fabric.utilities.seed import reset_seed

            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

    return CPUDeepSpeed(config=config, process_group_backend="gloo")


def zero3() -> dict:
    """ZeRO-3 in fp32 on the CPU, partitioning even the tiny policy's weights (below the threshold ZeRO-3 keeps them
    whole on every rank, as it keeps a 7B's norms and biases): what is gathered when is then observable."""
    from r1aqa_pl.training.strategy import deepspeed_config

    cfg = deepspeed_config(stage=3, offload_optimizer=False, offload_parameters=False, bf16=False,
                           max_grad_norm=None, pin_memory=False)
    cfg.pop("gradient_clipping")  # filled in from the module's max_grad_norm
    cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return cfg


def worker(out: str, root: str, warm: str, steps: int = 2, dynamic: bool = False, num_nodes: int = 1,
           engine: str = "ddp") -> None:
    """2 ranks in all: ``num_nodes=1`` is 1 node x 2 devices (Lightning's launcher starts rank 1), ``num_nodes=2``
    is 2 nodes x 1 device, each node's process started outside (torchrun or SLURM: Lightning starts none).
    ``engine``: ddp, or z3 (ZeRO-3 on DeepSpeed's CPU accelerator; the weights digest is of the gathered weights)."""
    import contextlib
    import hashlib

    import lightning as L
    import torch
    from lightning.pytorch.strategies import DDPStrategy

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training import strategy
    from r1aqa_pl.training.grpo_module import GRPOModule

    torch.set_num_threads(1)
    out_dir = Path(out)

    class Seen(L.Callback):
        """Prompts of each rank per optimizer step, and a digest of the final weights."""

        def __init__(self):
            self.prompts: dict[int, list[str]] = {}
            self.batches = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.prompts.setdefault(trainer.global_step + 1, []).extend(q.source for q in batch["questions"])
            self.batches += 1

        def on_train_end(self, trainer, pl_module):
            digest = hashlib.sha256()
            gathered = contextlib.nullcontext()
            if engine == "z3":  # the whole weights from the partitions (a collective: every rank is here)
                import deepspeed

                gathered = deepspeed.zero.GatheredParameters(list(pl_module.policy.parameters()))
            with gathered:
                weights = pl_module.policy.state_dict()
                for k, v in sorted(weights.items()):
                    digest.update(k.encode() + v.detach().cpu().numpy().tobytes())
                numel = sum(v.numel() for v in weights.values())
            (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(
                {"prompts": self.prompts, "weights": digest.hexdigest(), "world_size": trainer.world_size,
                 "steps": trainer.global_step, "batches": self.batches, "updates": updates,
                 "num_nodes": trainer.num_nodes, "node_rank": trainer.node_rank, "local_rank": trainer.local_rank,
                 "environment": type(trainer.strategy.cluster_environment).__name__,
                 "zero_stage": strategy.zero_stage(pl_module), "numel": numel,
                 "pid": os.getpid(), "parent": os.getppid()}))

    L.seed_everything(0)
    dm = AudioQADataModule(train_file=f"{root}/data/train.jsonl", val_file=f"{root}/data/test-mini.json",
                           feature_extractor=warm, batch_size=2, val_batch_size=1, seed=0)
    extra = {}
    if dynamic:
        from r1aqa_pl.algo import rewards

        stub = type("Stub", (rewards.Reward,), {"name": "stub", "score": staticmethod(speech_constant)})()
        extra = {"selection": dict(dynamic_sampling=True, max_extra_draws=6), "rewards": [stub]}
    module = GRPOModule(
        warm,
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, micro_batch_prompts=1, gradient_accumulation_steps=1),
        evaluation=dict(max_new_tokens=8),
        **extra,
    )
    updates, update = [], module.update

    def recording(rollouts, **kw):  # the domains each optimizer step was built from, on this rank
        updates.append([q.domain for ro in rollouts for q in ro.questions])
        update(rollouts, **kw)

    module.update = recording
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2 // num_nodes,
        num_nodes=num_nodes,
        strategy=cpu_deepspeed(zero3()) if engine == "z3" else DDPStrategy(process_group_backend="gloo"),
        max_steps=steps,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[
            BenchmarkEvaluation(write_predictions=False),
            Seen(),
            L.pytorch.callbacks.ModelCheckpoint(dirpath=f"{out}/ckpt", filename="last", every_n_train_steps=steps),
        ],
    )
    trainer.fit(module, dm)
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        if engine == "ddp":
            module.export_hf(str(out_dir / "final"))
    # gloo: the module registered the process group's destruction at exit (strategy.destroy_process_group_at_exit)
    assert torch.distributed.get_backend() == "gloo" and strategy.destroy_process_group_at_exit.registered


def deepspeed_worker(out: str) -> None:
    """Real DeepSpeed engines on the CPU (gloo, one process): GRPO's micro-batch accumulation, the
    engine's clipping, and gathering ZeRO-3 partitions for generation. Results go to ``out`` as JSON."""
    for k, v in (
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", str(29500 + os.getpid() % 1000)),
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("DS_ACCELERATOR", "cpu"),
    ):
        os.environ.setdefault(k, v)
    import deepspeed
    import torch

    from r1aqa_pl.training.strategy import _gathered, deepspeed_config, mark_micro_batch

    deepspeed.init_distributed(dist_backend="gloo")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    def flat(model):
        return torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    xs = [torch.randn(3, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    results = {}
    for name, stage, offload, mark in (
        ("z2", 2, False, True),
        ("z3", 3, False, True),
        ("z3_offload", 3, True, True),
        ("z2_unmarked", 2, False, False),
        ("z3_unmarked", 3, False, False),
    ):
        torch.manual_seed(0)
        model, ref = Net(), Net()
        ref.load_state_dict(model.state_dict())
        for x in xs:  # the reference: plain autograd sums the 4 micro-batches' gradients
            ref(x).pow(2).mean().backward()
        grad = torch.cat([p.grad.flatten() for p in ref.parameters()])
        clip = 0.5 * grad.norm().item()  # so that the engine's clipping bites
        cfg = deepspeed_config(
            stage=stage,
            offload_optimizer=offload,
            offload_parameters=offload,
            bf16=False,
            max_grad_norm=clip,
            micro_batch_size=1,
            pin_memory=False,
        )
        cfg["gradient_accumulation_steps"] = 1  # what Lightning sets under manual optimization
        cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even these tiny weights
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            opt = DeepSpeedCPUAdam(model.parameters(), lr=1e-3)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=1.0)
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), optimizer=opt, config=cfg)
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            before = flat(engine.module)
        res = {"expected_norm": grad.norm().item(), "clip": clip}
        if stage == 3:
            res["partitioned_numel"] = engine.module.a.weight.numel()
            with _gathered(engine):  # what generation_context does under ZeRO-3
                res["gathered_numel"] = engine.module.a.weight.numel()
                with torch.no_grad():
                    res["gathered_forward"] = list(engine.module(xs[0]).shape)
            with _gathered(engine, [engine.module.b]):  # b idle, as an Omni thinker's vision encoder in a rollout
                res["idle_numel"] = [engine.module.a.weight.numel(), engine.module.b.weight.numel()]
                with torch.no_grad():
                    res["idle_forward_a"] = list(engine.module.a(xs[0]).shape)
            with torch.no_grad():
                res["after_idle_forward"] = list(engine.module(xs[0]).shape)  # the fetch hooks are back
        engine(xs[0])  # Lightning's one engine.forward per training_step ...
        for i, x in enumerate(xs):  # ... then GRPO's micro-batches call submodules directly
            if mark:
                mark_micro_batch(engine, last=i == len(xs) - 1)
            engine.backward(engine.module.b(torch.tanh(engine.module.a(x))).pow(2).mean())
        engine.step()
        res["engine_norm"] = float(engine.get_global_grad_norm())
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            res["update_norm"] = (flat(engine.module) - before).norm().item()
        results[name] = res
    Path(out).write_text(json.dumps(results))


def watch_generation() -> list[dict]:
    """Wraps the strategy's generation context to record, inside it, how many elements the family's idle modules'
    parameters hold (0: left partitioned) and how many of the other parameters are empty (0: all gathered)."""
    import contextlib

    from r1aqa_pl.training import strategy

    seen, plain = [], strategy.generation_context

    @contextlib.contextmanager
    def watched(module):
        with plain(module) as sync:
            idle = {id(p) for m in module.family.idle_modules(module.policy) for p in m.parameters()}
            params = list(module.policy.parameters())
            seen.append(
                {
                    "idle_numel": sum(p.numel() for p in params if id(p) in idle),
                    "idle_params": len(idle),
                    "empty_others": sum(p.numel() == 0 for p in params if id(p) not in idle),
                }
            )
            yield sync

    strategy.generation_context = watched
    return seen


def lightning_deepspeed_worker(out: str, root: str, warm: str, engine: str, steps: int = 2) -> None:
    """GRPOModule under Lightning's DeepSpeedStrategy on the CPU (DeepSpeed's CPU accelerator, gloo): the
    strategy's CUDA-only checks are bypassed, everything else - zero.Init loading, the unsharded reference,
    gathered generation, micro-batch accumulation, the engine's clipping, the sharded checkpoint and its
    HF export - is the real code path. ``engine``: single (no DeepSpeed), z2, z3 or z3_offload."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import lightning as L
    import torch

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.models import family_for
    from r1aqa_pl.training.checkpointing import HFCheckpoint
    from r1aqa_pl.training.grpo_module import GRPOModule
    from r1aqa_pl.training.strategy import deepspeed_config

    torch.set_num_threads(1)

    class Steps(L.Callback):
        def __init__(self):
            self.steps, self._last = {}, 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step != self._last:
                self._last = trainer.global_step
                self.steps[trainer.global_step] = {
                    k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")
                }

    L.seed_everything(0)
    dm = AudioQADataModule(
        train_file=f"{root}/data/train.jsonl",
        val_file=f"{root}/data/test-mini.json",
        feature_extractor=warm,
        batch_size=2,
        val_batch_size=12,
        seed=0,
        max_clips=family_for(warm).max_clips,  # Audio Flamingo 3 takes one clip per question
    )
    module = GRPOModule(
        warm,
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3, max_grad_norm=0.5, micro_batch_prompts=1, gradient_accumulation_steps=2),
        evaluation=dict(max_new_tokens=8),
    )
    if engine == "single":
        strategy = "auto"
    else:
        stage, offload = (2 if engine == "z2" else 3), engine.endswith("offload")
        cfg = deepspeed_config(
            stage=stage,
            offload_optimizer=offload,
            offload_parameters=offload,
            bf16=False,
            max_grad_norm=None,
            pin_memory=False,
        )
        cfg.pop("gradient_clipping")  # filled in from the module's max_grad_norm
        # partition even these tiny weights (below the threshold ZeRO-3 keeps them whole on every rank, as it keeps a
        # 7B's norms and biases): what is gathered when is then observable
        cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        strategy = cpu_deepspeed(cfg)
    rec = Steps()
    generation = watch_generation()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        max_steps=steps,
        val_check_interval=2 * steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        callbacks=[
            BenchmarkEvaluation(write_predictions=False),
            rec,
            HFCheckpoint(
                dirpath=f"{out}/ckpt",
                every_n_train_steps=steps,
                save_top_k=-1,
                filename="step{step}",
                auto_insert_metric_name=False,
            ),
        ],
    )
    trainer.fit(module, dm)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/acc/")}
    ds_cfg = trainer.strategy.config if engine != "single" else {}
    Path(out, "result.json").write_text(
        json.dumps(
            {
                "steps": rec.steps,
                "val": val,
                "generation": generation,
                "config": {
                    "gradient_clipping": ds_cfg.get("gradient_clipping"),
                    "micro": ds_cfg.get("train_micro_batch_size_per_gpu"),
                    "accumulation": ds_cfg.get("gradient_accumulation_steps"),
                },
            }
        )
    )


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from r1aqa_pl.recipes.demo import prepare

    root = tmp_path_factory.getbasetemp() / "r1aqa_demo_small"
    return root, prepare(out=str(root), n_train=48, n_test=24, warm_steps=20)


def small_demo(tmp_path_factory, family: str):
    """The demo's inputs in miniature for a policy family (cached per session)."""
    from r1aqa_pl.recipes.demo import prepare

    root = tmp_path_factory.getbasetemp() / f"r1aqa_demo_small_{family}"
    return root, prepare(out=str(root), family=family, n_train=48, n_test=24, warm_steps=20)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "qwen3_omni"])
def test_ddp_two_processes(demo, tmp_path, tmp_path_factory, family):
    import lightning as L
    import torch

    from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.training.grpo_module import GRPOModule

    root, warm = demo if family == "qwen2_audio" else small_demo(tmp_path_factory, family)
    steps = 2
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "tests/training/test_scaleout.py", "worker", str(tmp_path), str(root), warm, str(steps)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
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
    # the checkpoint carries both ranks' RNG streams (gathered in on_save_checkpoint) and the data position
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["grpo_resume"]["world_size"] == 2 and len(saved["grpo_resume"]["ranks"]) == 2
    assert saved["AudioQADataModule"] == {"epoch": 0, "batches": steps}

    # validation across 2 ranks == validation in one process, same weights, same data
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    assert ddp["val/count/total"] == 24
    torch.set_num_threads(1)
    dm = AudioQADataModule(val_file=str(root / "data" / "test-mini.json"), feature_extractor=warm, val_batch_size=1)
    module = GRPOModule(str(tmp_path / "final"), sampling=dict(G=4), evaluation=dict(max_new_tokens=8))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BenchmarkEvaluation(write_predictions=False)],
    )
    (single,) = trainer.validate(module, dm)
    val_ddp = {k: v for k, v in ddp.items() if k.startswith("val/acc/")}
    val_single = {k: v for k, v in single.items() if k.startswith("val/acc/")}
    assert "val/acc/total" in val_ddp and val_single == pytest.approx(val_ddp, abs=1e-6)
    print(f"DDP 2 x CPU: {steps} steps + validation in {t_ddp:.1f} s; val/acc/total {val_ddp['val/acc/total']:.3f}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(commands: list[tuple[list[str], dict]], timeout: float) -> list[tuple[int, str]]:
    """Starts the commands at once (each in its own session) and waits for all; on a timeout kills them, their
    children included, and fails. Returns (return code, output) per command."""
    import signal
    import tempfile

    procs = []
    for cmd, env in commands:
        log = tempfile.TemporaryFile("w+")
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True), log))
    deadline, results = time.monotonic() + timeout, []
    try:
        for p, _ in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the session of the process started here: it and its workers
                p.wait()
        pytest.fail("timed out:\n" + "\n".join(log.seek(0) or log.read()[-3000:] for _, log in procs))
    for p, log in procs:
        log.seek(0)
        results.append((p.returncode, log.read()))
        log.close()
    return results


def clean_env() -> dict:
    """This environment without any launcher's variables (SLURM's, torchrun's, a master address)."""
    launcher = ("SLURM_", "TORCHELASTIC_", "PET_")
    plain = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
             "LOCAL_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher) and k not in plain}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def slurm_env(port: int, node: int) -> dict:
    """The variables ``srun --nodes 2 --ntasks-per-node 1`` sets for the task on ``node`` (with MASTER_ADDR/PORT)."""
    return {**clean_env(), "SLURM_JOB_ID": str(port), "SLURM_JOB_NAME": "r1aqa", "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_NODELIST": "localhost,localhost", "SLURM_LOCALID": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "SLURM_PROCID": str(node), "SLURM_NODEID": str(node)}


def one_node_two_processes(demo, tmp_path_factory, name: str, *extra: str) -> tuple[Path, float]:
    """The worker as 1 node x 2 processes (Lightning's launcher starts rank 1): (its folder, seconds)."""
    root, warm = demo
    out = tmp_path_factory.mktemp(name)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "tests/training/test_scaleout.py", "worker", str(out), str(root), warm, "2", *extra],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out, time.time() - t0


@pytest.fixture(scope="module")
def single_node_run(demo, tmp_path_factory):
    """The 1 x 2 DDP run, run once for the multi-node tests."""
    return one_node_two_processes(demo, tmp_path_factory, "ddp_1x2")


def assert_same_run(two_nodes: Path, one_node: Path, environment: str) -> dict:
    """The 2 x 1 run equals the 1 x 2 run: per global rank the same prompts per step and the same rollout domains,
    the same final weights on both ranks, the same train / val metrics; and no process launched by Lightning."""
    ranks = [json.loads((two_nodes / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = [json.loads((one_node / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world_size"], r["num_nodes"], r["node_rank"], r["local_rank"]) for r in ranks] == [
        (2, 2, 0, 0),
        (2, 2, 1, 0),
    ]
    assert [r["environment"] for r in ranks] == [environment] * 2
    # neither rank started the other (under the 1 x 2 run, Lightning's launcher started rank 1 from rank 0)
    assert ranks[1]["parent"] != ranks[0]["pid"] and ranks[0]["parent"] != ranks[1]["pid"]
    assert [(r["num_nodes"], r["node_rank"], r["local_rank"]) for r in single] == [(1, 0, 0), (1, 0, 1)]
    assert single[1]["parent"] == single[0]["pid"]
    for r, s in zip(ranks, single):
        assert (r["prompts"], r["updates"], r["steps"], r["batches"]) == (
            s["prompts"], s["updates"], s["steps"], s["batches"]
        )
    seen = [p for r in ranks for step in r["prompts"].values() for p in step]
    assert len(seen) == len(set(seen)) == 2 * 2 * 2  # 2 ranks x 2 prompts x 2 steps, none twice
    assert ranks[0]["weights"] == ranks[1]["weights"] == single[0]["weights"] == single[1]["weights"]
    metrics = json.loads((two_nodes / "metrics.json").read_text())
    expected = json.loads((one_node / "metrics.json").read_text())
    assert "train/grad_norm" in metrics and metrics["val/count/total"] == 24
    assert metrics == expected  # bit for bit: the same all-reduces, in the same order, over gloo
    return metrics


@pytest.mark.slow
def test_two_nodes_on_one_host_equal_the_two_process_run(demo, single_node_run, tmp_path):
    """2 nodes x 1 process (torchrun's c10d rendezvous on 127.0.0.1, one agent per "node", started at once) give
    the run of 1 node x 2 processes: same prompts per rank, same weights, same metrics. Under torchrun Lightning
    detects TorchElasticEnvironment and starts no process itself. (c10d assigns node ranks in the order the agents
    join, not from --node-rank: the comparison is per global rank, as the worker writes its files.)"""
    root, warm = demo
    one_node, t_single = single_node_run
    port, env, t0 = free_port(), clean_env(), time.time()
    results = run_together(
        [
            (
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                 "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                 "--rdzv-id", f"r1aqa-{port}", "--max-restarts", "0",
                 "tests/training/test_scaleout.py", "worker", str(tmp_path), str(root), warm, "2", "num_nodes=2"],
                env,
            )
            for node in (0, 1)
        ],
        timeout=300,
    )
    assert all(rc == 0 for rc, _ in results), "\n".join(out[-4000:] for _, out in results)
    metrics = assert_same_run(tmp_path, one_node, "TorchElasticEnvironment")
    print(f"2 nodes x 1 (torchrun c10d) {time.time() - t0:.1f} s vs 1 node x 2 {t_single:.1f} s: "
          f"grad_norm {metrics['train/grad_norm']:.6f} loss {metrics['train/loss']:.6g} "
          f"val/acc/total {metrics['val/acc/total']:.4f}")


@pytest.mark.slow
def test_two_slurm_nodes_on_one_host_equal_the_two_process_run(demo, single_node_run, tmp_path):
    """The same 2 x 1 run with the processes started as ``srun --nodes 2 --ntasks-per-node 1`` would (its SLURM_*
    variables set by hand, MASTER_ADDR/MASTER_PORT given): Lightning's SLURMEnvironment reads them."""
    root, warm = demo
    one_node, t_single = single_node_run
    port, t0 = free_port(), time.time()
    cmd = [sys.executable, "tests/training/test_scaleout.py", "worker", str(tmp_path), str(root), warm, "2",
           "num_nodes=2"]
    results = run_together([(cmd, slurm_env(port, node)) for node in (0, 1)], timeout=300)
    assert all(rc == 0 for rc, _ in results), "\n".join(out[-4000:] for _, out in results)
    metrics = assert_same_run(tmp_path, one_node, "SLURMEnvironment")
    print(f"2 nodes x 1 (SLURM variables) {time.time() - t0:.1f} s vs 1 node x 2 {t_single:.1f} s: "
          f"grad_norm {metrics['train/grad_norm']:.6f} loss {metrics['train/loss']:.6g}")


@pytest.fixture(scope="module")
def single_node_zero3_run(demo, tmp_path_factory):
    """The 1 x 2 run under ZeRO-3, run once for the multi-node ZeRO-3 tests."""
    return one_node_two_processes(demo, tmp_path_factory, "z3_1x2", "engine=z3")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_two_nodes_on_one_host_under_zero3_equal_the_two_process_run(demo, single_node_zero3_run, tmp_path, launcher):
    """The same 2 nodes x 1 process launches (torchrun c10d, srun's variables) under ZeRO-3 on DeepSpeed's CPU
    accelerator: the weights partitioned over the two "nodes", gathered for each rollout, the gradients
    reduce-scattered between them. Equal to the 1 node x 2 processes ZeRO-3 run: same prompts per rank, same
    gathered weights, same logged numbers (the same collectives in the same order over gloo)."""
    pytest.importorskip("deepspeed")
    root, warm = demo
    one_node, t_single = single_node_zero3_run
    port, env, t0 = free_port(), clean_env(), time.time()
    args = ["tests/training/test_scaleout.py", "worker", str(tmp_path), str(root), warm, "2", "num_nodes=2",
            "engine=z3"]
    if launcher == "torchrun":
        commands = [([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                      "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"r1aqa-{port}",
                      "--max-restarts", "0", *args], env) for _ in (0, 1)]
    else:
        commands = [([sys.executable, *args], slurm_env(port, node)) for node in (0, 1)]
    results = run_together(commands, timeout=300)
    assert all(rc == 0 for rc, _ in results), "\n".join(out[-4000:] for _, out in results)
    environment = "TorchElasticEnvironment" if launcher == "torchrun" else "SLURMEnvironment"
    metrics = assert_same_run(tmp_path, one_node, environment)
    from transformers import Qwen2AudioForConditionalGeneration

    whole = sum(v.numel() for v in Qwen2AudioForConditionalGeneration.from_pretrained(warm).state_dict().values())
    for run in (tmp_path, one_node):  # ZeRO-3 indeed, and the digests are of the whole (gathered) weights
        ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [(r["zero_stage"], r["numel"]) for r in ranks] == [(3, whole), (3, whole)]
    print(f"ZeRO-3 2 nodes x 1 ({launcher}) {time.time() - t0:.1f} s vs 1 node x 2 {t_single:.1f} s: "
          f"grad_norm {metrics['train/grad_norm']:.6f} loss {metrics['train/loss']:.6g} "
          f"val/acc/total {metrics['val/acc/total']:.4f}")


@pytest.mark.slow
def test_ddp_dynamic_sampling_every_rank_fills_its_own_batch_and_steps_together(demo, tmp_path):
    """Each rank drops its own constant groups and draws its own extra batches; all step together."""
    root, warm = demo
    steps = 3
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "tests/training/test_scaleout.py",
            "worker",
            str(tmp_path),
            str(root),
            warm,
            str(steps),
            "dynamic",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [steps, steps] and ranks[0]["batches"] == ranks[1]["batches"]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the same optimizer steps, gradients all-reduced
    for r in ranks:
        assert len(r["updates"]) == steps
        assert all(len(u) == 2 and "speech" not in u for u in r["updates"])  # full, no constant group
    assert ranks[0]["batches"] > steps  # refills happened
    drawn = ranks[0]["prompts"]["1"] + ranks[1]["prompts"]["1"]
    assert len(drawn) == len(set(drawn))  # the ranks draw disjoint prompts


def test_deepspeed_engine_accumulates_clips_and_gathers_on_cpu(tmp_path):
    """Real DeepSpeed ZeRO-2 / ZeRO-3 (/ + CPU offload) engines, CPU only: with begin_micro_batch the engine's
    gradient is the sum over GRPO's micro-batches (without it DeepSpeed keeps only the last one), the engine
    clips at gradient_clipping (our own clipping is off under DeepSpeed), and ZeRO-3 weights are whole
    inside generation_context's gather and partitioned again after it."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "ds.json"
    proc = subprocess.run(
        [sys.executable, "tests/training/test_scaleout.py", "deepspeed", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r = json.loads(out.read_text())
    for name in ("z2", "z3", "z3_offload"):
        assert r[name]["engine_norm"] == pytest.approx(r[name]["expected_norm"], rel=1e-5), name
    for name in ("z2", "z3"):  # SGD(lr=1): the applied update is the gradient clipped to max_grad_norm
        assert r[name]["update_norm"] == pytest.approx(r[name]["clip"], rel=1e-4), name
    for name in ("z2_unmarked", "z3_unmarked"):  # the bug begin_micro_batch prevents
        assert r[name]["engine_norm"] < 0.5 * r[name]["expected_norm"], name
    assert r["z3"]["partitioned_numel"] == 0 and r["z3"]["gathered_numel"] == 16 * 8
    assert r["z3"]["gathered_forward"] == [3, 4]
    assert r["z3"]["idle_numel"] == [16 * 8, 0] and r["z3"]["idle_forward_a"] == [3, 16]
    assert r["z3"]["after_idle_forward"] == [3, 4]


@pytest.mark.slow
def test_grpo_under_lightning_deepspeed_matches_single_process(demo, tmp_path):
    """The whole GRPO step under Lightning's DeepSpeedStrategy (ZeRO-2, ZeRO-3, ZeRO-3 + CPU offload; run on
    DeepSpeed's CPU accelerator) against the same run without DeepSpeed: same completions and rewards, same
    gradient norm and loss (fp32), a validation, and an HF export that loads and moved away from the warm start."""
    pytest.importorskip("deepspeed")
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    root, warm = demo
    results = {}
    for engine in ("single", "z2", "z3", "z3_offload"):
        out = tmp_path / engine
        proc = subprocess.run(
            [
                sys.executable,
                "tests/training/test_scaleout.py",
                "lightning_deepspeed",
                str(out),
                str(root),
                warm,
                engine,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, engine + proc.stdout[-3000:] + proc.stderr[-6000:]
        results[engine] = json.loads((out / "result.json").read_text())
    single = results["single"]["steps"]
    start = Qwen2AudioForConditionalGeneration.from_pretrained(warm).state_dict()
    for engine in ("z2", "z3", "z3_offload"):
        r = results[engine]
        assert r["config"] == {"gradient_clipping": 0.5, "micro": 2 * 2 * 4, "accumulation": 1}
        for step in ("1", "2"):
            for k in ("train/reward", "train/completion_length"):
                assert r["steps"][step][k] == single[step][k], (engine, step, k)
        for k in ("train/grad_norm", "train/loss", "train/kl"):  # step 1: same weights, same rollouts
            assert r["steps"]["1"][k] == pytest.approx(single["1"][k], rel=1e-4, abs=1e-6), (engine, k)
        assert "val/acc/total" in r["val"]
        hf = Qwen2AudioForConditionalGeneration.from_pretrained(str(tmp_path / engine / "ckpt" / "step2_hf"))
        assert any(not torch.equal(v, start[k]) for k, v in hf.state_dict().items())


def test_deepspeed_config_for_the_paper_run():
    """The engine config: ZeRO-3, optimizer and parameters offloaded to the CPU, bf16, clipping = max_grad_norm,
    no gradient accumulation inside the engine, and a micro-batch that counts completions."""
    from r1aqa_pl.training.strategy import check_deepspeed_config, deepspeed_config

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
    from r1aqa_pl.training.strategy import check_deepspeed_config, deepspeed_config

    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        check_deepspeed_config({**deepspeed_config(), "gradient_accumulation_steps": 2}, 1.0)
    with pytest.raises(ValueError, match="gradient_clipping"):
        check_deepspeed_config(deepspeed_config(max_grad_norm=0.5), 1.0)
    with pytest.raises(ValueError, match="optimizer"):
        check_deepspeed_config({**deepspeed_config(), "optimizer": {"type": "AdamW"}}, 1.0)
    cfg = {"zero_optimization": {"stage": 3}}
    check_deepspeed_config(cfg, 1.0, micro_batch_size=16)  # a user's bare config is completed
    assert cfg["gradient_clipping"] == 1.0 and cfg["train_micro_batch_size_per_gpu"] == 16


@pytest.mark.parametrize("configs", [["configs/grpo.yaml"], ["configs/grpo.yaml", "configs/1gpu_lora.yaml"]])
def test_paper_configs_resolve(configs):
    """``fit --print_config`` resolves without loading any weights (configure_model is lazy)."""
    import yaml

    args = [a for c in configs for a in ("--config", c)]
    proc = subprocess.run(
        [sys.executable, "-m", "r1aqa_pl", "fit", *args, "--print_config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DeepSpeed prints an accelerator warning on stdout when imported on a machine without a GPU
    cfg = yaml.safe_load("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("[20")))
    model, d, t = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    p, s, m, loss = model["policy"], model["sampling"], model["optimization"], model["loss"]["init_args"]
    assert p["model_name_or_path"] == "Qwen/Qwen2-Audio-7B-Instruct" and p["dtype"] == "bfloat16"
    assert (s["G"], s["temperature"], s["max_new_tokens"], loss["beta"], m["max_grad_norm"]) == (8, 1.0, 256, 0.04, 1.0)
    assert (loss["aggregation"], loss["importance_sampling_level"], loss["epsilon_low"]) == ("grpo", "token", 0.2)
    assert model["rewards"] == ["accuracy", "format"] and model["evaluation"]["max_new_tokens"] == 256
    assert t["max_steps"] == 1000 and d["val_batch_size"] == 32
    ckpt = next(c for c in t["callbacks"] if c["class_path"].endswith("HFCheckpoint"))["init_args"]
    assert ckpt["every_n_train_steps"] == 100 and ckpt["save_top_k"] == -1
    assert any(c["class_path"].endswith("BenchmarkEvaluation") for c in t["callbacks"])
    prompts_per_step = t["devices"] * t["num_nodes"] * d["batch_size"] * m["gradient_accumulation_steps"]
    assert prompts_per_step == 16  # the paper's 16 prompts = 128 completions per optimizer step
    assert t["val_check_interval"] == 100 * m["gradient_accumulation_steps"]  # batches: every 100 steps
    if configs == ["configs/grpo.yaml"]:
        assert m["lr"] == 1e-6 and t["precision"] == "bf16-true" and t["devices"] == 8
        strategy = t["strategy"]
        assert strategy["class_path"].endswith("DeepSpeedStrategy")
        from r1aqa_pl.training.strategy import check_deepspeed_config

        ds = json.loads((REPO / strategy["init_args"]["config"]).read_text())
        check_deepspeed_config(ds, m["max_grad_norm"])  # consistent with the model: raises otherwise
        z = ds["zero_optimization"]
        assert z["stage"] == 3 and z["offload_optimizer"]["device"] == z["offload_param"]["device"] == "cpu"
    else:
        assert t["devices"] == 1 and p["lora"]["r"] == 64 and p["gradient_checkpointing"]
        assert t["precision"] == "bf16-mixed" and t["strategy"] == "auto" and m["lr"] == 1e-5


@pytest.mark.slow
def test_zero3_export_reads_a_real_sharded_checkpoint(tmp_path, tiny_run):
    """The HF export under ZeRO-3 consolidates the weights from the sharded folder on one process:
    a real ZeRO-3 folder (DeepSpeed engine on CPU/gloo, laid out as Lightning writes it) gives back the
    policy's weights, which save_pretrained / from_pretrained round-trip."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from r1aqa_pl.training.strategy import zero3_state_dict

    src, ds = tiny_run.ckpts[2], tmp_path / "step2.ckpt"
    res = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_make_deepspeed_ckpt.py"), str(src), str(ds), "3"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sd = zero3_state_dict(str(ds), dtype=torch.float32)
    expected = {
        k[len("policy.") :]: v
        for k, v in torch.load(src, map_location="cpu", weights_only=False)["state_dict"].items()
        if k.startswith("policy.")
    }
    assert sd.keys() == expected.keys()
    assert all(torch.equal(sd[k], expected[k].float()) for k in sd)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(tiny_run.warm))
    model.save_pretrained(tmp_path / "hf", state_dict=sd)
    back = Qwen2AudioForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).state_dict()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_without_a_sharded_strategy_the_helpers_do_nothing():
    import torch

    from r1aqa_pl.training import strategy
    from r1aqa_pl.training.grpo_module import GRPOModule

    m = GRPOModule("unused", sampling=dict(G=2))
    assert strategy.zero_stage(m) is None and strategy.deepspeed_engine(m) is None
    with strategy.generation_context(m) as kw:
        assert kw == {}
    strategy.begin_micro_batch(m, last=True)
    assert strategy.engine_grad_norm(m) is None and strategy.all_ranks(m, True)
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(strategy.adamw(m, p, 1e-3, 0.0)) is torch.optim.AdamW


if __name__ == "__main__" and len(sys.argv) >= 5 and sys.argv[1] == "worker":
    # worker OUT ROOT WARM [STEPS] [dynamic] [num_nodes=N] [engine=ddp|z3]
    worker(
        *sys.argv[2:5],
        steps=int(sys.argv[5]) if len(sys.argv) > 5 else 2,
        dynamic="dynamic" in sys.argv[6:],
        num_nodes=next((int(a.split("=", 1)[1]) for a in sys.argv[6:] if a.startswith("num_nodes=")), 1),
        engine=next((a.split("=", 1)[1] for a in sys.argv[6:] if a.startswith("engine=")), "ddp"),
    )
elif __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "deepspeed":
    deepspeed_worker(sys.argv[2])
elif __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "lightning_deepspeed":
    lightning_deepspeed_worker(*sys.argv[2:6])
