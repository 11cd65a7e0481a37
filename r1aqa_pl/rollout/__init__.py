"""Rollout engines: how completions are sampled from the policy (one module each, registered by name)."""

from __future__ import annotations

from r1aqa_pl.rollout import hf  # noqa: F401  (registers "hf")
from r1aqa_pl.rollout.base import ENGINES, Rollout, RolloutEngine

__all__ = ["ENGINES", "EngineName", "Rollout", "RolloutEngine"]

EngineName = ENGINES.literal()
