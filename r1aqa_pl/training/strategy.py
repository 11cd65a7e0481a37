"""GRPO under DeepSpeed ZeRO (the paper's engine), next to plain DDP.

Under DDP nothing here does anything. What changes under DeepSpeed, and where it is handled:

* **Config** (:func:`deepspeed_config`, :func:`check_deepspeed_config`, :func:`configure_deepspeed`):
  one optimizer step of GRPO is many ``engine.backward`` calls and one ``engine.step``. Lightning
  writes ``Trainer.accumulate_grad_batches`` (always 1 under manual optimization) into the engine's
  ``gradient_accumulation_steps`` and refuses a config that sets it, so the engine never divides our
  losses (they are already normalised over the whole step). Gradient clipping is the engine's job
  (``gradient_clipping`` = the module's ``max_grad_norm``, filled in if missing, an error if it
  disagrees); ``train_micro_batch_size_per_gpu`` is the completions one rank contributes to one
  optimizer step (prompts × gradient_accumulation_steps × G), used by DeepSpeed only for its
  sample counters.
* **Accumulation** (:func:`begin_micro_batch`): our forwards bypass ``engine.forward`` (one
  ``training_step`` runs many micro-batches), so before each micro-batch we do the per-forward
  bookkeeping ``engine.forward`` would do (``clear_backward_seen_flag``: without it ZeRO-3 *overwrites*
  instead of accumulating partitioned gradients) and mark the last micro-batch as the accumulation
  boundary (``set_gradient_accumulation_boundary``), the pattern DeepSpeed documents for one
  ``step()`` after several ``backward()`` calls.
* **Optimizer** (:func:`adamw`): with ``offload_optimizer`` DeepSpeed refuses torch's AdamW and wants
  its own ``DeepSpeedCPUAdam`` (same AdamW update, built on first use).
* **Loading under ZeRO-3** (:func:`zero3_hf_config`): ``from_pretrained`` must partition while it
  loads; registering the engine's config with transformers (``HfDeepSpeedConfig``) makes it do so.
* **Generation** (:func:`generation_context`): under ZeRO-3 every weight is partitioned and would be
  all-gathered for every generated token; the weights are gathered once per rollout instead
  (DeepSpeed's ``unwrap_model_for_generation``, TRL's default), a full bf16 copy for the duration of
  ``generate``.
* **Reference model** (:func:`reference_copy`): a frozen, unsharded bf16 copy on every GPU (16 GB for
  the 7B). Under ZeRO-3 it is loaded from disk once the engine exists (a deep copy of partitioned
  weights would copy empty shards; :func:`define_model_classes` keeps its classes whole). R1-AQA/TRL instead
  wrapped the reference in a second ZeRO-3 engine (partitioned, offloaded, gathered layer by layer on every
  forward): less GPU memory, much slower.
* **Export under ZeRO-3** (:func:`zero3_state_dict`): rank 0 consolidates the weights from the
  sharded checkpoint Lightning has just written (no collective needed).
* **Resuming on another world size** (:func:`universal_checkpoint`, :func:`reshard_on_load`): a ZeRO checkpoint is
  sharded per rank and DeepSpeed refuses to load it on another number of processes; it is converted once into
  DeepSpeed's universal checkpoint (inside the checkpoint folder) and loaded from there, which restores the fp32
  weights, Adam's moments and step whole.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import logging
import os
from pathlib import Path
from typing import Any

import torch

from r1aqa_pl.models import family_for, load_policy

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- what are we running under

def destroy_process_group_at_exit() -> bool:
    """Under a gloo process group (DDP on CPUs), destroy it when the interpreter exits, as Lightning does for
    NCCL only: gloo's threads still alive at interpreter exit can race its teardown and crash a finished run.
    Returns whether it was registered (once per process)."""
    import atexit

    from lightning.fabric.utilities.distributed import _destroy_dist_connection

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() != "gloo":
        return False
    if not getattr(destroy_process_group_at_exit, "registered", False):
        atexit.register(_destroy_dist_connection)
        destroy_process_group_at_exit.registered = True
    return True


def _strategy(module):
    trainer = getattr(module, "_trainer", None)
    return None if trainer is None else trainer.strategy


def is_deepspeed(module) -> bool:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(_strategy(module), DeepSpeedStrategy)


def zero_stage(module) -> int | None:
    """The ZeRO stage when training under Lightning's DeepSpeedStrategy, else None."""
    if not is_deepspeed(module):
        return None
    cfg = _strategy(module).config or {}
    return int((cfg.get("zero_optimization") or {}).get("stage", 0))


def deepspeed_engine(module):
    """The DeepSpeedEngine wrapping ``module`` once Lightning has built it, else None."""
    if not is_deepspeed(module):
        return None
    engine = _strategy(module).model
    return engine if engine is not module and hasattr(engine, "optimizer") else None


# ---------------------------------------------------------------- DeepSpeed config

def deepspeed_config(stage: int = 3, offload_optimizer: bool = True, offload_parameters: bool = True,
                     max_grad_norm: float = 1.0, micro_batch_size: int | None = None, bf16: bool = True,
                     pin_memory: bool = True) -> dict[str, Any]:
    """The paper's engine as a DeepSpeed config dict (R1-AQA ran TRL with the usual ZeRO-3 + CPU offload
    template; its ``"auto"`` entries are resolved here, since only the HF Trainer understands "auto").

    Pass it as ``DeepSpeedStrategy(config=...)``. ``gradient_accumulation_steps`` is deliberately
    absent (Lightning sets it; see the module docstring).
    """
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 5e8,
        "allgather_bucket_size": 5e8,
    }
    if stage == 3:
        zero.update({
            "sub_group_size": 1e9,
            "stage3_prefetch_bucket_size": 5e8,
            "stage3_param_persistence_threshold": 1e6,
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        })
        if offload_parameters:
            zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    cfg: dict[str, Any] = {
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": max_grad_norm,
        "steps_per_print": 1e9,  # Lightning logs; keep DeepSpeed's own progress lines out of the way
        "wall_clock_breakdown": False,
    }
    if bf16:
        cfg["bf16"] = {"enabled": True}
    if micro_batch_size is not None:
        cfg["train_micro_batch_size_per_gpu"] = micro_batch_size
    return cfg


def check_deepspeed_config(cfg: dict[str, Any], max_grad_norm: float | None = None,
                           micro_batch_size: int | None = None) -> dict[str, Any]:
    """Fill in and check (in place) what GRPO's manual optimization needs from a DeepSpeed config.

    Raises ValueError on a setting that would silently change the algorithm.
    """
    if "gradient_accumulation_steps" in cfg:
        raise ValueError(
            "do not set gradient_accumulation_steps in the DeepSpeed config: GRPO accumulates "
            "inside one optimizer step itself (model optimization.gradient_accumulation_steps) and the engine "
            "must not rescale the loss; Lightning sets it to 1"
        )
    for key in ("optimizer", "scheduler"):
        if key in cfg:
            raise ValueError(
                f"remove the '{key}' section from the DeepSpeed config: the optimizer and the "
                "paper's linear decay come from the module (lr, weight_decay, warmup_steps)"
            )
    if max_grad_norm is not None:
        cfg.setdefault("gradient_clipping", float(max_grad_norm or 0.0))
        if float(cfg["gradient_clipping"]) != float(max_grad_norm or 0.0):
            raise ValueError(
                f"DeepSpeed gradient_clipping={cfg['gradient_clipping']} but the module's "
                f"max_grad_norm={max_grad_norm}: the engine clips, so they must agree"
            )
    if micro_batch_size is not None:
        cfg.setdefault("train_micro_batch_size_per_gpu", int(micro_batch_size))
    cfg.setdefault("zero_allow_untested_optimizer", True)
    if (cfg.get("fp16") or {}).get("enabled"):
        log.warning("DeepSpeed fp16 with dynamic loss scaling: bf16 is what the paper used and is safer")
    return cfg


def configure_deepspeed(module, micro_batch_size: int | None = None) -> None:
    """Called from ``setup()``: complete the strategy's DeepSpeed config before the engine is built, and let it
    resume from a checkpoint written on another number of processes (:func:`reshard_on_load`)."""
    if is_deepspeed(module):
        check_deepspeed_config(_strategy(module).config, module.optimization.max_grad_norm, micro_batch_size)
        reshard_on_load(_strategy(module))
    if zero_stage(module) == 3:
        define_model_classes(module.policy_config.model_name_or_path, module.policy_config.family)


def define_model_classes(model_name_or_path: str, family: str | None = None) -> None:
    """Import the policy's modeling modules (its sub-models' too) before ``zero.Init`` (``configure_model``) does.

    A class first defined inside ``zero.Init`` gets its bare ``__init__`` back when the context exits, without what a
    class decorator wrapped around it (transformers 5.25's ``use_kernelized_func`` sets ``_kernel_funcs`` there and
    reads it in ``forward``), so the unsharded reference built afterwards would fail in its first forward."""
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    family_for(model_name_or_path, family).model_class()
    configs = [AutoConfig.from_pretrained(model_name_or_path)]
    while configs:
        cfg = configs.pop()
        if type(cfg) in MODEL_MAPPING:
            MODEL_MAPPING[type(cfg)]  # imports the module that defines it
        configs += [v for v in vars(cfg).values() if isinstance(v, PretrainedConfig)]


def zero3_hf_config(module):
    """Under ZeRO-3, an ``HfDeepSpeedConfig`` that makes ``from_pretrained`` partition while loading.

    transformers keeps only a weak reference: the caller keeps the returned object alive.
    """
    if zero_stage(module) != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(_strategy(module).config)


def adamw(module, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; under DeepSpeed with ``offload_optimizer``, DeepSpeedCPUAdam (the same update on the CPU)."""
    if is_deepspeed(module):
        cfg = _strategy(module).config or {}
        if (cfg.get("zero_optimization") or {}).get("offload_optimizer"):
            try:
                from deepspeed.ops.adam import DeepSpeedCPUAdam

                return DeepSpeedCPUAdam(params, lr=lr, weight_decay=weight_decay, adamw_mode=True)
            except Exception as e:  # the op is compiled on first use; no compiler -> torch's AdamW on the CPU
                log.warning(
                    "DeepSpeedCPUAdam unavailable (%s); using torch.optim.AdamW on the offloaded "
                    "fp32 partitions (slower optimizer step)",
                    e,
                )
                cfg["zero_force_ds_cpu_optimizer"] = False
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ---------------------------------------------------------------- the GRPO step under DeepSpeed


def begin_micro_batch(module, last: bool) -> None:
    """Before each micro-batch forward of an optimizer step: DeepSpeed's per-forward bookkeeping
    and whether this micro-batch's backward closes the accumulation (a no-op without DeepSpeed)."""
    engine = deepspeed_engine(module)
    if engine is not None:
        mark_micro_batch(engine, last)


def mark_micro_batch(engine, last: bool) -> None:
    """:func:`begin_micro_batch` on a DeepSpeedEngine (without this, ZeRO 2/3 keep only the last
    micro-batch's gradient when forwards bypass ``engine.forward``; tests/training/test_scaleout.py shows it)."""
    if hasattr(engine.optimizer, "clear_backward_seen_flag"):  # what engine.forward does first
        engine.optimizer.clear_backward_seen_flag()
    engine.set_gradient_accumulation_boundary(last)


def engine_grad_norm(module) -> torch.Tensor | None:
    """The global gradient norm (before clipping) of the engine's last step, or None without DeepSpeed."""
    engine = deepspeed_engine(module)
    if engine is None:
        return None
    norm = engine.get_global_grad_norm()
    return torch.as_tensor(float("nan") if norm is None else float(norm))


def all_ranks(module, flag: bool) -> bool:
    """True only if ``flag`` holds on every rank (so that all ranks skip or all step)."""
    strategy = _strategy(module)
    return bool(flag) if strategy is None else bool(strategy.reduce_boolean_decision(bool(flag), all=True))


# ---------------------------------------------------------------- generation and the reference model


@contextlib.contextmanager
def generation_context(module):
    """Around ``generate``: yields extra ``generate`` kwargs (``synced_gpus``) for the strategy in use."""
    engine = deepspeed_engine(module)
    if engine is not None and zero_stage(module) == 3:
        with _gathered(engine, module.family.idle_modules(module.policy)):
            yield {"synced_gpus": False}  # every weight it runs is local now: no collective inside generate
        return
    yield {}


@contextlib.contextmanager
def _gathered(engine, idle=()):
    """The ZeRO-3 partitions gathered and the fetch hooks removed for the duration (then restored), as DeepSpeed's
    ``unwrap_model_for_generation`` does, except the ``idle`` modules' (a 7B Omni thinker's vision encoder, 0.67 B
    parameters, stays partitioned: generation never runs it)."""
    import deepspeed

    skip = {id(p) for m in idle for p in m.parameters()}
    params = [p for p in engine.module.parameters() if id(p) not in skip]
    offload = getattr(engine.optimizer, "parameter_offload", engine.optimizer)
    with deepspeed.zero.GatheredParameters(params):
        if not hasattr(offload, "forward_hooks"):  # no hooks to lift: gathered weights, fetch hooks left in place
            yield
            return
        for hook in [*offload.forward_hooks, *offload.backward_hooks]:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            offload._register_deepspeed_module(offload.module)


def reference_copy(module, load_kwargs: dict | None = None):
    """A frozen, unsharded copy of the initial policy for the KL term (see the module docstring).

    Without ZeRO-3 it is a deep copy of ``module.policy``; under ZeRO-3 it is loaded again from
    ``model_name_or_path`` with transformers' ZeRO-3 loading switched off for the call.
    """
    if zero_stage(module) != 3:
        return copy.deepcopy(module.policy).eval().requires_grad_(False)
    from transformers.integrations import deepspeed as hf_ds

    h = module.policy_config
    keep = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        ref, _, _ = load_policy(
            h.model_name_or_path, h.dtype, h.attn_implementation, family=h.family, **(load_kwargs or {})
        )
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = keep
    return ref.eval().requires_grad_(False)


# ---------------------------------------------------------------- export under ZeRO-3


def zero3_state_dict(checkpoint_dir: str, prefix: str = "policy.", dtype: torch.dtype | None = None) -> dict:
    """Consolidated weights (``prefix`` stripped) from a Lightning DeepSpeed checkpoint folder, on one
    process, from disk (no collective). Needs the fp32 model in host memory (33 GB for the 7B)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    sd = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir)
    sd = {k.removeprefix("_forward_module."): v for k, v in sd.items()}  # Lightning < 2.1 wrapped the module
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"{checkpoint_dir}: no '{prefix}*' weights in this DeepSpeed checkpoint")
    return {k: v.to(dtype) for k, v in out.items()} if dtype is not None else out


# ---------------------------------------------------------------- resuming on another world size


def checkpoint_world_size(checkpoint_dir: str | Path) -> int | None:
    """How many data-parallel ranks wrote a Lightning DeepSpeed checkpoint folder (its ZeRO optimizer shards);
    None for anything else (a single-file checkpoint)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    tag = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else "checkpoint"
    shards = glob.glob(str(folder / tag / "*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    return len(shards) or None


def universal_checkpoint(checkpoint_dir: str | Path, workers: int | None = None) -> Path:
    """DeepSpeed's universal checkpoint of a Lightning DeepSpeed checkpoint folder, written once beside its shards
    (``<folder>/universal`` and ``<folder>/latest_universal``, removed with the folder): every parameter's fp32 weight,
    ``exp_avg`` and ``exp_avg_sq`` whole, the optimizer's step and param groups, and Lightning's own state (loops,
    LR scheduler, the data position, ``grpo_resume``) as it was. Any number of processes loads it. Returns
    ``<folder>/universal``. Takes the model's fp32 weights and both moments on disk again (12 bytes a parameter)."""
    import argparse

    from deepspeed.checkpoint import ds_to_universal

    folder = Path(checkpoint_dir)
    out = folder / "universal"
    if (folder / "latest_universal").is_file() and out.is_dir():
        return out
    tag = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else "checkpoint"
    n = workers or max(1, min(4, os.cpu_count() or 1))
    args = argparse.Namespace(input_folder=str(folder / tag), output_folder=str(out), num_extract_workers=n,
                              num_merge_workers=max(1, n // 2), keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    ds_to_universal.main(args)  # writes <folder>/latest_universal last
    return out


def reshard_on_load(strategy) -> None:
    """Make Lightning's DeepSpeedStrategy resume from a ZeRO checkpoint written by another number of processes: when
    the folder's shard count differs from the world size, rank 0 converts it (:func:`universal_checkpoint`, once)
    and the engine loads the universal checkpoint. On the same world size the load is DeepSpeed's own, unchanged.
    Installed on the strategy instance (its ``load_checkpoint``), once."""
    if getattr(strategy, "_r1aqa_reshard", False):
        return
    load = strategy.load_checkpoint

    def load_checkpoint(checkpoint_path, *args, **kwargs):
        saved = checkpoint_world_size(checkpoint_path)
        engine = getattr(strategy, "model", None)
        if saved is not None and saved != strategy.world_size and hasattr(engine, "_config"):
            if strategy.is_global_zero:
                there = (Path(checkpoint_path) / "latest_universal").is_file()
                log.warning("DeepSpeed checkpoint written by %d processes, resuming on %d: loading DeepSpeed's "
                            "universal checkpoint %s/universal (%s)", saved, strategy.world_size, checkpoint_path,
                            "converted before" if there else "converting the shards now, once")
                universal_checkpoint(checkpoint_path)
            strategy.barrier("r1aqa_universal_checkpoint")
            engine._config.load_universal_checkpoint = True
        return load(checkpoint_path, *args, **kwargs)

    strategy.load_checkpoint = load_checkpoint
    strategy._r1aqa_reshard = True
