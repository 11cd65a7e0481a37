"""Exact resume: what Lightning does not checkpoint for GRPO.

Every rank's RNG state (rollouts sample from it), every rank's rollouts still waiting for their
optimizer step and, under dynamic sampling, every rank's pool of groups mid-refill, saved in the
checkpoint's ``grpo_resume`` entry and restored right before the first rollout after a resume.

On another number of processes (a pre-empted job restarted on another allocation) the resume is
detected (``grpo_resume["world_size"]``) and one warning says what carries over and what does not:

* exactly: weights, optimizer moments and step, LR schedule (Lightning; under ZeRO the universal
  checkpoint, :func:`r1aqa_pl.training.strategy.reshard_on_load`), and the data position counted in
  prompts of the epoch's order (:func:`reposition_data`: the prompts not yet served are dealt over
  the new ranks, never the per-rank batch count applied to another sharding);
* redistributed: the dynamic-sampling pools' groups, dealt over the new ranks (beyond a rank's
  step, dropped and counted);
* not exact: each rank's random stream (a rank of the new run has no saved one: it continues from the
  run's seed), and rollouts waiting for their step (sampled per rank: dropped, their prompts served
  again).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from r1aqa_pl.rollout.base import Rollout, ScoredGroup
from r1aqa_pl.task.question import Question

log = logging.getLogger(__name__)

# dataclasses a checkpoint may hold, stored as plain dicts (what torch.load(weights_only=True) reads)
_TYPES = {
    "Question": Question,
    "Rollout": Rollout,
    "ScoredGroup": ScoredGroup,
    "Group": ScoredGroup,
}  # "Group": its earlier name


def rng_state() -> dict:
    """This process's torch / CUDA / numpy / Python RNG states, in types ``torch.load(weights_only=True)`` reads."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(py_state), py_gauss],
    }


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def _pack(obj):
    """Tensors to the CPU and the dataclasses in ``_TYPES`` to tagged plain dicts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if type(obj).__name__ in _TYPES and dataclasses.is_dataclass(obj):
        fields = {f.name: _pack(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__type__": type(obj).__name__, "fields": fields}
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_pack(v) for v in obj)
    return obj


def to_device(obj, device):
    """Undo :func:`_pack` (tagged dicts back to dataclasses) with the tensors on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        if set(obj) == {"__type__", "fields"}:
            return _TYPES[obj["__type__"]](**{k: to_device(v, device) for k, v in obj["fields"].items()})
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _gather(module, obj) -> list:
    """``obj`` from every rank, in rank order (a collective when distributed)."""
    import torch.distributed as dist

    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * trainer.world_size
    dist.all_gather_object(out, obj)
    return out


def resume_state(module, buffer: list, pool: dict | None = None) -> dict:
    """What Lightning does not checkpoint: every rank's RNG state (rollouts sample from it), every
    rank's rollouts still waiting for their optimizer step and its dynamic-sampling ``pool`` state.
    Called on all ranks (Lightning's ``on_save_checkpoint``); rank 0's copy is the one written."""
    per_rank = _gather(module, {"rng": rng_state(), "buffer": _pack(buffer), "pool": _pack(pool)})
    return {"world_size": len(per_rank), "ranks": per_rank}


def load_resume_state(module, state: dict, checkpoint: dict | None = None) -> tuple[dict | None, list, dict | None]:
    """(this rank's RNG state, buffered rollouts, pool state), tensors on the CPU, from :func:`resume_state`.

    ``checkpoint`` (Lightning's, as ``on_load_checkpoint`` gets it): on another world size or batch size, its data
    position and loop counters are rewritten in place (:func:`reposition_data`) before Lightning restores them."""
    if not state:
        return None, [], None
    trainer = getattr(module, "_trainer", None)
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    old = state["world_size"]
    if old == world:
        data = reposition_data(module, checkpoint, old) if checkpoint is not None else None
        if data and rank == 0:  # the same processes, another data.batch_size
            log.warning("batch size changed: the data position is carried over in prompts (%s)", data)
        mine = state["ranks"][rank]
        return mine["rng"], to_device(mine["buffer"], "cpu"), to_device(mine.get("pool"), "cpu")
    buffered = [ro for r in state["ranks"] for ro in to_device(r["buffer"], "cpu")]
    prompts = sum(len(ro.questions) for ro in buffered)
    target = getattr(module, "prompts_per_batch", 1) * module.accumulation()  # a rank's prompts per optimizer step
    pool, pools = reshard_pools([to_device(r.get("pool"), "cpu") for r in state["ranks"]], world, rank, target)
    data = reposition_data(module, checkpoint, old, rewind=prompts) if checkpoint is not None else None
    if rank == 0:
        log.warning(
            "world size changed: checkpoint written by %d processes, resumed on %d. Carried over exactly: weights, "
            "optimizer moments and step, LR schedule, data position (%s). Not exact: per-rank random streams (not "
            "restored: each rank continues from the run's seed); %d buffered rollouts (%d prompts) dropped%s; "
            "dynamic-sampling pool: %s",
            old, world, data or "not converted: the checkpoint holds no data module position", len(buffered), prompts,
            ", their prompts served again" if prompts and data else "", pools,
        )
    return None, [], pool


def save_world(module) -> dict:
    """What a run without GRPO's per-rank state (SFT) records for its resume: the number of processes."""
    trainer = getattr(module, "_trainer", None)
    return {"world_size": trainer.world_size if trainer is not None else 1}


def load_world(module, state: dict | None, checkpoint: dict) -> str | None:
    """SFT's resume on another world size or batch size: the data position carried over in prompts
    (:func:`reposition_data`, in place), said in one warning; a checkpoint from before the world size was recorded
    counts as written on this one. Returns the summary, None when nothing changed."""
    trainer = getattr(module, "_trainer", None)
    world = trainer.world_size if trainer is not None else 1
    old = int((state or {}).get("world_size", world))
    data = reposition_data(module, checkpoint, old)
    if data and (trainer is None or trainer.global_rank == 0):
        what = f"world size changed: checkpoint written by {old} processes, resumed on {world}" if old != world \
            else "batch size changed"
        log.warning("%s: the data position is carried over in prompts (%s); weights, optimizer and LR schedule "
                    "exactly", what, data)
    return data


def reshard_pools(pools: list[dict | None], world: int, rank: int, target: int) -> tuple[dict | None, str]:
    """This rank's dynamic-sampling pool when ``len(pools)`` ranks' pools are dealt over ``world`` ranks: the groups
    (informative, then the spare zero-variance ones) of every old rank in rank order, dealt round-robin; a rank keeps
    at most ``target`` (its step's prompts) of each, the rest dropped. The draws of the step so far (equal on every
    rank: they draw in step) stay; the drawn / dropped counts (the logged fraction) are split. Returns (this rank's
    pool state or None, a summary for the log)."""
    pools = [p for p in pools if p]
    if not any(p["groups"] or p["spare"] for p in pools):
        return None, "empty"
    out: dict = {}
    for key in ("groups", "spare"):
        every = [g for p in pools for g in p[key]]
        mine = every[rank::world]
        out[key] = mine[:target] if key == "groups" else mine[-target:]
        if key == "groups":
            total, kept = len(every), sum(min(len(every[r::world]), target) for r in range(world))
    for key in ("drawn", "dropped", "ungrounded"):  # ungrounded: absent from a checkpoint of before the knob
        n = sum(int(p.get(key, 0)) for p in pools)
        out[key] = n // world + (rank < n % world)
    out["draws"] = max(int(p["draws"]) for p in pools)
    return out, f"{total} groups from {len(pools)} ranks dealt over {world}: {kept} kept, {total - kept} dropped"


def _per_rank(prompts: int, world: int) -> int:
    """Prompts of ``prompts`` a rank serves when they are dealt over ``world`` ranks (padded, as DistributedSampler)."""
    return math.ceil(prompts / world)


def reposition_data(module, checkpoint: dict, old_world: int, rewind: int = 0) -> str | None:
    """The data position on another world size or batch size, in prompts: the checkpoint's data-module entry gains
    ``prompts`` (of this epoch's order already served, ``rewind`` of them given back) and Lightning's batch counters
    are set to this run's per-rank batches, so that the epoch ends when the prompts not yet served have been dealt
    over the new ranks (:class:`~r1aqa_pl.data.datamodule.ResumableSampler`'s ``consumed``), and the next epochs
    run whole. In place; returns a summary for the log, None when nothing changed (or nothing can be told)."""
    trainer = getattr(module, "_trainer", None)
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    pos = checkpoint.get(type(dm).__qualname__) if dm is not None else None
    datasets = getattr(dm, "datasets", {})
    if not isinstance(pos, dict) or "train" not in datasets or "batches" not in pos:
        return None
    n, world, batch = len(datasets["train"]), trainer.world_size, int(dm.hparams.batch_size)
    old_batch = int((checkpoint.get("datamodule_hyper_parameters") or {}).get("batch_size", batch))
    if (old_world, old_batch) == (world, batch) and not rewind:
        return None
    seen = pos["prompts"] if "prompts" in pos else min(pos["batches"] * old_batch, _per_rank(n, old_world)) * old_world
    served = max(0, seen - rewind)
    remaining = _per_rank(n - served, world) if served < n else 0  # this run's per-rank prompts left in the epoch
    per_epoch, left = math.ceil(_per_rank(n, world) / batch), math.ceil(remaining / batch)
    done = per_epoch - left
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    if progress is not None:  # Lightning's per-rank batch counters, in this run's batches
        shift = done - progress["current"]["processed"]
        for part in ("total", "current"):
            for k in ("ready", "started", "processed", "completed"):
                progress[part][k] = max(0, progress[part][k] + shift)
        progress["is_last_batch"] = left == 0
    pos.update(prompts=served, batches=done)
    return (f"{served} of {n} prompts of epoch {pos.get('epoch', 0)} served, {n - served if served < n else 0} "
            f"left, dealt over {world} ranks: {left} batches of {batch} each")
