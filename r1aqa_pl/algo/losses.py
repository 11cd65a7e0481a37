"""The policy loss: GRPO's objective and its variants as small pure functions on tensors, and the loss seam.

Layout: a rollout holds N = B*G completions, group-contiguous (prompt b owns rows b*G .. b*G+G-1).
Per-token tensors are [N, T] with a 0/1 ``mask`` over the completion tokens; ``logp`` are the
log-probabilities of the sampled tokens under the policy being trained (with grad), ``old_logp``
under the policy that sampled them (as the trainer computes them), ``ref_logp`` under the frozen reference model,
``rollout_logp`` as the rollout engine computed them while sampling (the behaviour policy, which differs from
``old_logp`` by rounding: bf16, other kernels and shapes, a mixture of experts' routing).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from r1aqa_pl.registry import Registry

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
TOKEN_WEIGHTED = ("bnpo", "dapo", "dr_grpo")  # aggregations in which a completion counts by its length
IMPORTANCE_LEVELS = ("token", "sequence")


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def truncated_importance_weights(old_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling (TIS) for a rollout engine whose probabilities differ from the trainer's:
    w_t = min(exp(old_logp_t - rollout_logp_t), cap), no gradient, multiplying the policy-gradient term only.

    The formula of verl (``verl/trainer/ppo/core_algos.py``, ``compute_policy_loss_vanilla``, PR #2953:
    ``tis_imp_ratio = clamp(exp(old_log_prob - rollout_log_probs), max=tis_imp_ratio_cap)``; ``pg_losses *= tis``)
    and of TRL (``trl/trainer/grpo_trainer.py``, ``vllm_importance_sampling_correction``: the same ratio clamped at
    ``vllm_importance_sampling_cap``, multiplied into ``per_token_loss`` before ``beta * per_token_kl`` is added).
    """
    return torch.exp(old_logp.detach().float() - rollout_logp.detach().float()).clamp(max=cap).to(old_logp.dtype)


AGREEMENT_BAND = (0.5, 2.0)  # a token whose rollout/trainer probability ratio leaves it counts as disagreeing


def behaviour_disagreement(logp: Tensor, rollout_logp: Tensor, mask: Tensor,
                           band: tuple[float, float] = AGREEMENT_BAND) -> dict[str, Tensor]:
    """How far the rollout engine's log-probs are from the trainer's, over the real tokens: mean and max
    |logp - rollout_logp| and the fraction of tokens whose ratio exp(logp - rollout_logp) leaves ``band``."""
    real = mask.bool()
    delta = (logp.detach().float() - rollout_logp.detach().float())[real]
    if delta.numel() == 0:
        zero = torch.zeros((), device=logp.device)
        return {"mean_abs": zero, "max_abs": zero, "outside_band": zero}
    ratio = delta.exp()
    return {"mean_abs": delta.abs().mean(), "max_abs": delta.abs().max(),
            "outside_band": ((ratio < band[0]) | (ratio > band[1])).float().mean()}


def routing_disagreement(rollout_routes: Tensor, routes: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """How often the update routed a real token to other experts than the rollout did, from the chosen experts of
    both ([N, T, layers, k], each set sorted): the fraction of (token, layer) pairs whose expert set differs, and
    the fraction of tokens with such a layer. A flip sends the token through other weights: its log-prob
    difference is no longer rounding."""
    real = mask.bool()
    flipped = (rollout_routes != routes).any(-1)[real].float()  # [real tokens, layers]
    if flipped.numel() == 0:
        zero = torch.zeros((), device=mask.device)
        return {"routed_flips": zero, "routed_flips_tokens": zero}
    return {"routed_flips": flipped.mean(), "routed_flips_tokens": flipped.amax(-1).mean()}


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
    num_micro_batches: int = 1,
) -> Tensor:
    """Reduce a [N,T] per-token loss to a scalar.

    grpo:     (1/N) sum_i (1/|o_i|) sum_t l_it            (the paper: per-completion mean)
    dapo:     sum_i sum_t l_it / sum_i |o_i|               (token mean over the whole optimizer step)
    bnpo:     (sum_i sum_t l_it / sum_i |o_i|) / M         (TRL's: token mean of this micro-batch, over M of them)
    dr_grpo:  sum_i sum_t l_it / (N * max_completion_length)

    N and sum |o_i| default to this call's rows and ``mask.sum()``; when an optimizer step is split into
    micro-batches pass the whole step's totals (and ``num_micro_batches`` M) so that the micro-batch losses
    sum to the step's loss. bnpo equals dapo when a step is one micro-batch; otherwise a micro-batch's
    tokens weigh by its own token count. ``max_completion_length`` defaults to T (pass the configured
    maximum when micro-batches are padded to different lengths). Completions with no tokens contribute 0.
    """
    masked = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))
    mask = mask.to(per_token_loss.dtype)
    N = per_token_loss.shape[0] if num_completions is None else num_completions
    if loss_type == "grpo":
        per_completion = masked.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_completion.sum() / max(N, 1)
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1) / max(num_micro_batches, 1)
    if loss_type == "dapo":
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
    num_micro_batches: int = 1,
    pg_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss: aggregate of l_it = -w_it * min(ratio*A, clip(ratio)*A) + beta * KL_k3(pi || pi_ref).

    With one update per rollout pass ``old_logp = logp.detach()`` (ratio = 1). ``ref_logp=None``
    or ``beta=0`` drops the KL term. ``pg_weight`` w ([N,T], no gradient; None: w = 1) weighs the policy-gradient
    term only (the audio-relevance mask, truncated importance weights), the KL term and the aggregation's token
    counts unchanged: where TRL applies its entropy mask and its importance weights. Returns (loss, stats), stats
    detached masked means over this call's tokens: ``kl`` (reported whenever ``ref_logp`` is given, else 0),
    ``clip_ratio`` (fraction of clipped tokens), ``ratio`` (at ``importance_sampling_level``: per token, or GSPO's
    per-sequence ratio counted once per token).
    """
    objective, is_clipped = clipped_objective(logp, old_logp, advantages, epsilon_low, epsilon_high, mask,
                                              importance_sampling_level)
    per_token = -objective if pg_weight is None else -objective * pg_weight
    kl = torch.zeros_like(logp) if ref_logp is None else k3_kl(logp, ref_logp)
    if ref_logp is not None and beta != 0:
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, num_completions, num_tokens, max_completion_length, num_micro_batches)
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


class PolicyLoss:
    """The loss of one micro-batch of an optimizer step; subclass and give its ``class_path`` in the config.

    Called with per-token log-probs [n, T] under the policy being trained (with grad), the sampling
    policy and the reference (None when ``beta`` is 0), advantages [n], the completion mask [n, T] and
    the step's totals (``num_completions``, ``num_tokens``, ``max_completion_length``,
    ``num_micro_batches``: the micro-batch losses of a step are summed). Returns (loss, detached stats
    to log). ``beta`` > 0 makes the trainer compute the reference policy's log-probs.

    ``pg_weight`` ([n, T], no gradient) is passed only when a knob weighs the policy-gradient term per token
    (``grounding.relevance``, ``optimization.behaviour_correction``); a loss that takes those knobs names the
    parameter in its ``__call__`` (the trainer refuses the knobs otherwise, rather than have them ignored).
    """

    beta: float = 0.0

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor, mask: Tensor,
                 pg_weight: Tensor | None = None, **totals) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


LOSSES: Registry[PolicyLoss] = Registry("policy loss", PolicyLoss)


@LOSSES.register("gspo", importance_sampling_level="sequence", epsilon_low=3e-4, epsilon_high=4e-4)
@LOSSES.register("dr_grpo", aggregation="dr_grpo")
@LOSSES.register("dapo", aggregation="dapo")
@LOSSES.register("bnpo", aggregation="bnpo")
@LOSSES.register("grpo", aggregation="grpo")
class ClippedSurrogateLoss(PolicyLoss):
    """:func:`grpo_loss`: the clipped surrogate with a k3 KL penalty, at a ratio level and an aggregation.

    Names: grpo, bnpo, dapo, dr_grpo (the aggregation, token-level ratios) and gspo (sequence-level
    ratios, per-completion mean, GSPO's clip range 3e-4 / 4e-4).

    Args:
        aggregation: grpo | bnpo | dapo | dr_grpo (see :func:`aggregate`).
        importance_sampling_level: token (GRPO) or sequence (GSPO: one length-normalised ratio per completion).
        epsilon_low: lower clip range, ratio >= 1 - epsilon_low.
        epsilon_high: upper clip range (default: epsilon_low; DAPO's clip-higher sets it above).
        beta: weight of the k3 KL penalty to the frozen initial policy (0: no reference model).
    """

    def __init__(self, aggregation: str = "grpo", importance_sampling_level: str = "token", epsilon_low: float = 0.2,
                 epsilon_high: float | None = None, beta: float = 0.04):
        if aggregation not in LOSS_TYPES:
            raise ValueError(f"loss aggregation {aggregation!r}: known {', '.join(LOSS_TYPES)}")
        if importance_sampling_level not in IMPORTANCE_LEVELS:
            raise ValueError(f"loss importance_sampling_level {importance_sampling_level!r}: known "
                             f"{', '.join(IMPORTANCE_LEVELS)}")
        if not 0 < epsilon_low < 1:
            raise ValueError(f"loss epsilon_low must be in (0, 1), got {epsilon_low}")
        if epsilon_high is not None and epsilon_high <= 0:
            raise ValueError(f"loss epsilon_high must be > 0 (or null: epsilon_low), got {epsilon_high}")
        if beta < 0:
            raise ValueError(f"loss beta (the KL weight) must be >= 0, got {beta}")
        if importance_sampling_level == "sequence" and aggregation in TOKEN_WEIGHTED:
            warnings.warn(f"sequence-level ratios (GSPO) with the {aggregation!r} aggregation weight each completion "
                          "by its length, unlike GSPO's per-sequence mean: use aggregation 'grpo' (the 'gspo' loss)",
                          stacklevel=2)
        self.aggregation, self.importance_sampling_level = aggregation, importance_sampling_level
        self.epsilon_low, self.epsilon_high, self.beta = epsilon_low, epsilon_high, beta

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, pg_weight=None, **totals):
        return grpo_loss(logp, old_logp, ref_logp, advantages, mask, beta=self.beta, epsilon_low=self.epsilon_low,
                         epsilon_high=self.epsilon_high, loss_type=self.aggregation,
                         importance_sampling_level=self.importance_sampling_level, pg_weight=pg_weight, **totals)


def takes_pg_weight(loss: PolicyLoss) -> bool:
    """Whether ``loss`` names ``pg_weight`` in its ``__call__`` (a ``**totals`` catch-all would drop it silently)."""
    import inspect

    return "pg_weight" in inspect.signature(loss.__call__).parameters


LossName = LOSSES.literal()
