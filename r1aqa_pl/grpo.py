"""GRPO mathematics as small pure functions on tensors (the paper's objective, its variants as options).

Layout: a rollout holds N = B*G completions, group-contiguous (prompt b owns rows b*G .. b*G+G-1).
Per-token tensors are [N, T] with a 0/1 ``mask`` over the completion tokens; ``logp`` are the
log-probabilities of the sampled tokens under the policy being trained (with grad), ``old_logp``
under the policy that sampled them, ``ref_logp`` under the frozen reference model.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALES = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
IMPORTANCE_LEVELS = ("token", "sequence")


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


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def log_importance_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor | None = None, level: str = "token") -> Tensor:
    """log of the importance ratio pi/pi_old, [N,T].

    token (GRPO/PPO): logp - old_logp per token. sequence (GSPO, Zheng et al. 2025): the length-normalised
    sequence ratio s_i = (pi(o_i)/pi_old(o_i))^(1/|o_i|), i.e. the masked mean of the token log-ratios
    over completion i, the same for each of its tokens: one importance weight and one clip decision
    per completion, matching the reward's unit (GSPO's paper finds it steadier, mixture-of-experts
    policies in particular). Gradients reach every token of the completion through the mean.
    """
    if level not in IMPORTANCE_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {level!r}; known: {', '.join(IMPORTANCE_LEVELS)}")
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    m = torch.ones_like(log_ratio) if mask is None else mask.to(log_ratio.dtype)
    masked = torch.where(m.bool(), log_ratio, torch.zeros_like(log_ratio))
    seq = masked.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    return seq.expand_as(log_ratio)


def clipped_objective(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, epsilon_low: float = 0.2, epsilon_high: float | None = None,
    mask: Tensor | None = None, importance_sampling_level: str = "token",
) -> tuple[Tensor, Tensor]:
    """PPO-clipped surrogate per token: min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A).

    ratio = exp(:func:`log_importance_ratio`) at ``importance_sampling_level`` (``mask`` is needed for
    "sequence"); A ([N]) is broadcast over the completion's tokens;
    ``epsilon_high`` defaults to ``epsilon_low`` (set it higher for DAPO's clip-higher; GSPO's
    sequence ratios stay near 1, its paper clips at 3e-4 / 4e-4).
    Returns (objective [N,T], is_clipped [N,T]), is_clipped counted as TRL does:
    (ratio < 1-eps_low and A < 0) or (ratio > 1+eps_high and A > 0).
    """
    eps_high = epsilon_low if epsilon_high is None else epsilon_high
    A = advantages.unsqueeze(-1) if advantages.dim() == logp.dim() - 1 else advantages
    ratio = torch.exp(log_importance_ratio(logp, old_logp, mask, importance_sampling_level))
    objective = torch.min(ratio * A, torch.clamp(ratio, 1 - epsilon_low, 1 + eps_high) * A)
    is_clipped = ((ratio < 1 - epsilon_low) & (A < 0)) | ((ratio > 1 + eps_high) & (A > 0))
    return objective, is_clipped


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    loss_type: str = "grpo",
    num_completions: int | None = None,
    num_tokens: int | float | Tensor | None = None,
    max_completion_length: int | None = None,
) -> Tensor:
    """Reduce a [N,T] per-token loss to a scalar.

    grpo:        (1/N) sum_i (1/|o_i|) sum_t l_it            (the paper: per-completion mean)
    bnpo, dapo:  sum_i sum_t l_it / sum_i |o_i|               (token-level mean)
    dr_grpo:     sum_i sum_t l_it / (N * max_completion_length)

    N and sum |o_i| default to this call's rows and ``mask.sum()``; when a rollout is split into
    micro-batches pass the whole rollout's totals so that the micro-batch losses sum to the full
    loss. ``max_completion_length`` defaults to T (pass the configured maximum when micro-batches
    are padded to different lengths). Completions with no tokens contribute 0.
    """
    masked = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))
    mask = mask.to(per_token_loss.dtype)
    N = per_token_loss.shape[0] if num_completions is None else num_completions
    if loss_type == "grpo":
        per_completion = masked.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_completion.sum() / max(N, 1)
    if loss_type in ("bnpo", "dapo"):
        n_tok = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=mask.dtype, device=mask.device)
        return masked.sum() / n_tok.clamp(min=1)
    if loss_type == "dr_grpo":
        L = per_token_loss.shape[-1] if max_completion_length is None else max_completion_length
        return masked.sum() / max(N * L, 1)
    raise ValueError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    num_completions: int | None = None,
    num_tokens: int | float | Tensor | None = None,
    max_completion_length: int | None = None,
    importance_sampling_level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss: aggregate of l_it = -(min(ratio*A, clip(ratio)*A) - beta * KL_k3(pi || pi_ref)).

    With one update per rollout pass ``old_logp = logp.detach()`` (ratio = 1). ``ref_logp=None``
    or ``beta=0`` drops the KL term. Returns (loss, stats), stats detached masked means over this
    call's tokens: ``kl`` (reported whenever ``ref_logp`` is given, else 0), ``clip_ratio``
    (fraction of clipped tokens), ``ratio`` (at ``importance_sampling_level``: per token, or GSPO's
    per-sequence ratio counted once per token).
    """
    objective, is_clipped = clipped_objective(logp, old_logp, advantages, epsilon_low, epsilon_high, mask,
                                              importance_sampling_level)
    per_token = -objective
    kl = torch.zeros_like(logp) if ref_logp is None else k3_kl(logp, ref_logp)
    if ref_logp is not None and beta != 0:
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, num_completions, num_tokens, max_completion_length)
    with torch.no_grad():
        stats = {
            "kl": _masked_mean(kl, mask),
            "clip_ratio": _masked_mean(is_clipped.to(logp.dtype), mask),
            "ratio": _masked_mean(torch.exp(log_importance_ratio(logp, old_logp, mask, importance_sampling_level)),
                                  mask),
        }
    return loss, stats


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)
