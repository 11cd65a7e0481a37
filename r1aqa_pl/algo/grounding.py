"""Audio grounding: which completion tokens depend on the audio, and which questions need it, as small functions.

Layout as in :mod:`r1aqa_pl.algo.losses`: a rollout holds N = B*G completions, group-contiguous (prompt b owns
rows b*G .. b*G+G-1); per-token tensors are [N, T] with a 0/1 ``mask`` over the completion tokens.

* **Token relevance** (MAPO's idea: concentrate the policy gradient on the tokens the audio decides). The
  divergence used is the sampled token's log-probability gap between the prompt with and without the audio,
  ``r_t = |log pi(y_t | q, a, y_<t) - log pi(y_t | q, y_<t)|``: it needs one audio-free forward over the
  completions and only the sampled token's log-probability (a full-vocabulary KL would materialise the LM head
  over the vocabulary at every completion position of both passes). :func:`relevance_weights` turns it into a
  mask (or a down-weighting) of the policy-gradient term.
* **Audio contribution** (AudioMCQ's labels, online): a prompt's pass rate with the audio (its group's own G
  answers) against its pass rate without (k audio-free samples); :func:`contribution_label` is the rule
  ``r1aqa audio-contribution`` writes offline, so the labels are the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

RELEVANCE_SCOPES = ("sequence", "group")
LABELS = ("needs_audio", "answerable_without_audio", "unsolved")


# -- token relevance --------------------------------------------------------------------------------------------
def audio_relevance(logp_audio: Tensor, logp_no_audio: Tensor) -> Tensor:
    """r_t = |log pi(y_t | q, a, y_<t) - log pi(y_t | q, y_<t)| per completion token, [N, T], no gradient."""
    return (logp_audio.detach().float() - logp_no_audio.detach().float()).abs()


def relevance_weights(relevance: Tensor, mask: Tensor, keep: float = 1.0, threshold: float | None = None,
                      scope: str = "sequence", G: int = 1, floor: float = 0.0) -> Tensor:
    """Per-token weight on the policy-gradient term: 1 for the kept tokens, ``floor`` for the others, 0 on padding.

    ``threshold`` set: a token is kept iff r_t >= threshold. Otherwise the top ``keep`` fraction of each scope's real
    tokens by relevance, k = ceil(keep * n) of its n tokens ("sequence": each completion; "group": a prompt's G
    completions together, so that the completions that listen most get most of the gradient); equal relevance is
    broken by position, the earlier token first. ``keep = 1`` keeps every token: the weight is then the mask itself.
    """
    if scope not in RELEVANCE_SCOPES:
        raise ValueError(f"relevance scope {scope!r}: known {', '.join(RELEVANCE_SCOPES)}")
    real = mask.bool()
    if threshold is not None:
        kept = real & (relevance >= threshold)
    else:
        N, T = relevance.shape
        rows = N // G if scope == "group" else N
        r = relevance.float().masked_fill(~real, -math.inf).reshape(rows, -1)  # padding ranks last
        order = torch.sort(r, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(r.shape[1], device=r.device).expand_as(order))
        n = real.reshape(rows, -1).sum(1, keepdim=True).float()
        k = torch.ceil(keep * n - 1e-6)  # keep * n within rounding of an integer keeps that integer
        kept = (rank < k).reshape(N, T) & real
    return kept.float() + floor * (real & ~kept).float()


def relevance_summary(relevance: Tensor, weights: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Fraction of real tokens kept (weight 1) and the mean relevance of the kept and the dropped ones (a mean over
    no tokens is left out)."""
    real = mask.bool()
    kept = real & (weights == 1)
    dropped = real & ~kept
    out = {"kept_fraction": kept.sum() / real.sum().clamp(min=1)}
    for name, sel in (("kept_relevance", kept), ("dropped_relevance", dropped)):
        if sel.any():
            out[name] = relevance[sel].float().mean()
    return out


# -- audio contribution -----------------------------------------------------------------------------------------
def contribution_label(pass_with: float, pass_without: float, margin: float = 0.25) -> str:
    """needs_audio: the audio raises the pass rate by at least ``margin``; unsolved: the policy passes less than
    ``margin`` of the time either way; else answerable_without_audio (the audio adds little)."""
    if pass_with - pass_without >= margin:
        return "needs_audio"
    return "unsolved" if max(pass_with, pass_without) < margin else "answerable_without_audio"


def pass_rates(correct: Sequence[float] | Tensor, k: int) -> Tensor:
    """Each prompt's pass rate, [B], from its k consecutive 0/1 scores [B*k]."""
    c = torch.as_tensor(correct, dtype=torch.float32)
    if k < 1 or c.numel() % k:
        raise ValueError(f"{c.numel()} scores do not split into groups of {k}")
    return c.view(-1, k).mean(1)


def contribution_weights(pass_with: Tensor, pass_without: Tensor, margin: float,
                         weights: Mapping[str, float]) -> tuple[list[str], Tensor]:
    """(label per prompt, the weight its group's advantages are multiplied by: ``weights[label]``, else 1)."""
    labels = [contribution_label(float(w), float(wo), margin) for w, wo in zip(pass_with, pass_without)]
    return labels, torch.tensor([float(weights.get(lb, 1.0)) for lb in labels])
