"""Exact resume: what Lightning does not checkpoint for GRPO.

Every rank's RNG state (rollouts sample from it), every rank's rollouts still waiting for their
optimizer step and, under dynamic sampling, every rank's pool of groups mid-refill, saved in the
checkpoint's ``grpo_resume`` entry and restored right before the first rollout after a resume.
"""

from __future__ import annotations

import dataclasses
import logging

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


def load_resume_state(module, state: dict) -> tuple[dict | None, list, dict | None]:
    """(this rank's RNG state, buffered rollouts, pool state), tensors on the CPU, from :func:`resume_state`."""
    if not state:
        return None, [], None
    trainer = getattr(module, "_trainer", None)
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    if state["world_size"] != world:
        log.warning(
            "resuming on %d processes from a checkpoint written by %d: RNG streams and buffered rollouts "
            "are not restored (the run continues, but not bit-for-bit)",
            world,
            state["world_size"],
        )
        return None, [], None
    mine = state["ranks"][rank]
    return mine["rng"], to_device(mine["buffer"], "cpu"), to_device(mine.get("pool"), "cpu")
