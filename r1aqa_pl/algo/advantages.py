"""Advantages: a rollout's rewards -> one advantage per completion (the estimator seam).

Rewards are [N] with N = B*G, group-contiguous (prompt b owns rows b*G .. b*G+G-1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from r1aqa_pl.registry import Registry

SCALES = ("group", "batch", "none")


def group_advantages(rewards: Tensor, G: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """A_i = (r_i - mean(r_group)) / (std + eps), per group of G completions.

    ``scale``: "group" uses the unbiased std of the group (the paper / TRL), "batch" the unbiased
    std over all N rewards, "none" no division (Dr. GRPO). An undefined std (one element) counts
    as 0, and a group whose rewards are all equal gets exactly 0 advantage.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    if G < 1 or rewards.numel() % G:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of G={G}")
    r = rewards.float().view(-1, G)
    A = r - r.mean(dim=1, keepdim=True)
    A = torch.where(r.amax(1, keepdim=True) == r.amin(1, keepdim=True), torch.zeros_like(A), A)
    if scale == "group":
        std = r.std(dim=1, keepdim=True) if G > 1 else torch.zeros_like(A)
        A = A / (std + eps)
    elif scale == "batch":
        std = r.std() if r.numel() > 1 else r.new_zeros(())
        A = A / (std + eps)
    return A.reshape(-1)


class AdvantageEstimator:
    """Turns a rollout's rewards [B*G] into advantages [B*G]; subclass and give its ``class_path`` in the config."""

    def __call__(self, rewards: Tensor, G: int) -> Tensor:
        raise NotImplementedError


ADVANTAGES: Registry[AdvantageEstimator] = Registry("advantage estimator", AdvantageEstimator)


@ADVANTAGES.register("none", scale="none")
@ADVANTAGES.register("batch", scale="batch")
@ADVANTAGES.register("group", scale="group")
class GroupRelative(AdvantageEstimator):
    """GRPO's group-relative advantage, :func:`group_advantages` (names: group, batch, none -- the ``scale``)."""

    def __init__(self, scale: str = "group", eps: float = 1e-4):
        if scale not in SCALES:
            raise ValueError(f"advantage scale {scale!r}: known {', '.join(SCALES)}")
        if eps <= 0:
            raise ValueError(f"advantage eps must be > 0, got {eps}")
        self.scale, self.eps = scale, eps

    def __call__(self, rewards: Tensor, G: int) -> Tensor:
        return group_advantages(rewards, G, self.scale, self.eps)


AdvantageName = ADVANTAGES.literal()
