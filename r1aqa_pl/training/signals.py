"""What one optimizer step measures, micro-batch by micro-batch, for its log: the rollout engine's agreement with the
update's log-probs (and, for a mixture of experts, routing), the truncated importance weights, the audio-relevance mask
(per domain).

Pure bookkeeping: the values come from :mod:`r1aqa_pl.algo.losses` and :mod:`r1aqa_pl.algo.grounding`; nothing here
outlives the step (a checkpoint never needs it).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from r1aqa_pl.algo.grounding import relevance_summary
from r1aqa_pl.algo.losses import behaviour_disagreement, routing_disagreement


class StepSignals:
    """Real-token values gathered over a step's micro-batches; :meth:`log` reduces them over the whole step."""

    def __init__(self):
        self.delta: list[Tensor] = []  # logp_old - logp_rollout
        self.flips: list[Tensor] = []  # per real token and layer: 1 where the update chose other experts
        self.tis: list[Tensor] = []
        self.relevance: dict[str, list[Tensor]] = defaultdict(list)  # domain -> [relevance, weight, mask] triples
        self.cap = None

    def agreement(self, old_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> None:
        self.delta.append((old_logp.detach().float() - rollout_logp.detach().float())[mask.bool()])

    def routing(self, rollout_routes: Tensor, routes: Tensor, mask: Tensor) -> None:
        """The experts the rollout and this update chose, [n, T, layers, k] each (see ``routing_disagreement``)."""
        self.flips.append((rollout_routes != routes.to(rollout_routes)).any(-1)[mask.bool()].float())

    def tis_weights(self, weights: Tensor, mask: Tensor, cap: float) -> None:
        self.tis.append(weights.detach().float()[mask.bool()])
        self.cap = cap

    def relevance_mask(self, relevance: Tensor, weights: Tensor, mask: Tensor, domains: list[str]) -> None:
        """One micro-batch's relevance and relevance weights [n, T], ``domains`` one per row."""
        for d in sorted(set(domains)):
            rows = torch.tensor([x == d for x in domains], device=mask.device)
            self.relevance[d].append(torch.stack([relevance[rows].float(), weights[rows].float(),
                                                  mask[rows].float()]).reshape(3, -1))

    def log(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.delta:
            d = torch.cat(self.delta)
            zero = torch.zeros_like(d)
            for k, v in behaviour_disagreement(d, zero, torch.ones_like(d)).items():
                out[f"train/rollout_agreement/{k}"] = v
        if self.flips:
            f = torch.cat(self.flips)  # [real tokens, layers]: the step's pairs reduced as routing_disagreement does
            ones = torch.ones(f.shape[0], device=f.device)
            for k, v in routing_disagreement(f.unsqueeze(-1), torch.zeros_like(f).unsqueeze(-1), ones).items():
                out[f"train/rollout_agreement/{k}"] = v
        if self.tis:
            w = torch.cat(self.tis)
            out["train/tis/weight"] = w.mean() if w.numel() else torch.zeros(())
            out["train/tis/capped_fraction"] = (w >= self.cap).float().mean() if w.numel() else torch.zeros(())
        if self.relevance:
            per_domain = {d: torch.cat(v, 1) for d, v in self.relevance.items()}
            for scope, x in [("", torch.cat(list(per_domain.values()), 1)),
                             *((f"{d}/", v) for d, v in sorted(per_domain.items()))]:
                for k, v in relevance_summary(x[0], x[1], x[2]).items():
                    out[f"train/relevance/{scope}{k}"] = v
        return out
