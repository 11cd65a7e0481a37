"""Rollout engines: how completions are sampled from the policy (one module each)."""

from __future__ import annotations

from r1aqa_pl.rollout.base import Rollout, RolloutEngine
from r1aqa_pl.rollout.hf import HFEngine

__all__ = ["ENGINES", "Rollout", "RolloutEngine", "make_engine"]

# name -> engine class; a new engine is one module plus one line here
ENGINES: dict[str, type[RolloutEngine]] = {"hf": HFEngine}


def make_engine(name: str, **kwargs) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {', '.join(ENGINES)}")
    return ENGINES[name](**kwargs)
