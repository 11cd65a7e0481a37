"""The rollout-engine seam and the typed record one rollout produces.

An engine samples G completions per prompt (training) or one greedy answer (evaluation), and is told
after every optimizer step that the weights changed (a no-op for engines that run in-process on the
policy itself; an engine with its own copy of the weights syncs there).

Adding an engine: one module in this package with a :class:`RolloutEngine` subclass, plus its entry
in :data:`r1aqa_pl.rollout.ENGINES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import Tensor

from r1aqa_pl.models.base import PolicyFamily
from r1aqa_pl.records import Question


class RolloutEngine:
    """Samples completions from the policy being trained."""

    def sample(self, family: PolicyFamily, model, inputs: dict[str, Tensor], G: int, **generate_kwargs) -> Tensor:
        """G completions per prompt: completion ids [B·G, T], group-contiguous (rows b·G … b·G+G−1 are prompt b's)."""
        raise NotImplementedError

    def answer(self, family: PolicyFamily, model, inputs: dict[str, Tensor], tokenizer, stop: str | None,
               **generate_kwargs) -> Tensor:
        """One greedy completion per prompt [B, T], ending a row once its text contains ``stop``."""
        raise NotImplementedError

    def after_step(self, model) -> None:
        """Called after every optimizer step: the policy's weights changed."""


@dataclass
class Rollout:
    """One batch of B prompts × G sampled completions, scored, with what the update needs.

    Rows are group-contiguous; ``inputs`` are the processor's tensors for the B prompts.
    ``old_logp`` is set when the rollout is reused for several updates (``num_iterations`` > 1),
    ``ref_logp`` when the KL term is on.
    """

    questions: list[Question]
    inputs: dict[str, Tensor]
    completion_ids: Tensor
    mask: Tensor
    texts: list[str]
    rewards: Tensor
    per_fn: dict[str, Tensor]
    advantages: Tensor
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None

    def micro_batches(self, G: int, prompts: int) -> Iterator[tuple[dict[str, Tensor], slice]]:
        """(inputs of ``prompts`` whole groups, their completion rows), in order."""
        B = self.inputs["input_ids"].shape[0]
        for b0 in range(0, B, prompts):
            yield {k: v[b0:b0 + prompts] for k, v in self.inputs.items()}, slice(b0 * G, min(B, b0 + prompts) * G)
