"""The rollout-engine seam and the typed record one rollout produces.

An engine samples G completions per prompt (training) or one greedy answer (evaluation), and is told
after every optimizer step that the weights changed (a no-op for engines that run in-process on the
policy itself; an engine with its own copy of the weights syncs there).

Adding an engine: a :class:`RolloutEngine` subclass in a module of your own, named in the config by its
``class_path`` (``engine: my_module.MyEngine``); a built-in registers with ``@ENGINES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from r1aqa_pl.models.base import PolicyFamily
from r1aqa_pl.registry import Registry
from r1aqa_pl.task.question import Question


class RolloutEngine:
    """Samples completions from the policy being trained."""

    def sample(self, family: PolicyFamily, model, inputs: dict[str, Tensor], G: int, share_prompt: bool = True,
               **generate_kwargs) -> Tensor:
        """G completions per prompt: completion ids [B·G, T], group-contiguous (rows b·G … b·G+G−1 are prompt b's).

        ``share_prompt``: the trainer's setting; an engine may compute each prompt once for its G samples.
        ``with_logprobs=True`` (passed only when ``sampling.keep_logprobs`` or a behaviour correction asks for it):
        return (ids, the log-probability of each sampled token under the distribution it was drawn from, [B·G, T],
        at the sampling temperature before any top-k/top-p filtering): the behaviour policy's. ``with_routes=True``
        (asked of a mixture-of-experts family, with ``with_logprobs``): return (ids, log-probs, the experts each layer
        chose at the position that predicted each token, [B·G, T, layers, k] sorted); an engine that cannot see
        its routers may refuse it."""
        raise NotImplementedError

    def answer(self, family: PolicyFamily, model, inputs: dict[str, Tensor], tokenizer, stop: str | None,
               **generate_kwargs) -> Tensor:
        """One greedy completion per prompt [B, T], ending a row once its text contains ``stop``."""
        raise NotImplementedError

    def after_step(self, model) -> None:
        """Called after every optimizer step: the policy's weights changed."""


ENGINES: Registry[RolloutEngine] = Registry("rollout engine", RolloutEngine)


@dataclass
class ScoredGroup:
    """One prompt's G scored completions, waiting in dynamic sampling's pool for its optimizer step.

    The audio travels with it (one clip, or a list of clips for a multi-audio question): the step's prompts
    are encoded again together once the step is full.
    """

    question: Question
    audio: Tensor | list[Tensor] | None
    completion_ids: Tensor
    mask: Tensor
    texts: list[str]
    rewards: Tensor
    per_fn: dict[str, Tensor]
    rollout_logp: Tensor | None = None
    pass_with: float | None = None
    pass_without: float | None = None
    weight: float = 1.0
    rollout_routes: Tensor | None = None

    def informative(self, metric: str = "total") -> bool:
        """Rewards that differ: a group whose G rewards are equal has zero advantage and no policy gradient; so has
        a group whose advantages the audio contribution weighs by 0 (``weight``, answerable without the audio).

        ``metric``: "total" (the weighted reward) or one reward function's name, e.g. "accuracy" (DAPO's
        rule: all right or all wrong carries no signal about the answer, whatever the format reward says).
        """
        r = self.rewards if metric == "total" else self.per_fn[metric]
        return bool(r.max() > r.min()) and self.weight != 0


@dataclass
class Rollout:
    """One batch of B prompts × G sampled completions, scored, with what the update needs.

    Rows are group-contiguous; ``inputs`` are the processor's tensors for the B prompts.
    ``old_logp`` is set when the rollout is reused for several updates (``num_iterations`` > 1),
    ``ref_logp`` when the KL term is on, ``rollout_logp`` (the engine's, [B·G, T]) with ``sampling.keep_logprobs``
    and, for a mixture of experts, ``rollout_routes`` (the experts the engine's forwards chose, [B·G, T, layers, k]),
    ``no_audio_logp`` (the sampling policy's without the audio) with ``grounding.relevance``, and with
    ``grounding.contribution`` each prompt's ``pass_with`` / ``pass_without`` and ``group_weight`` [B] (already
    multiplied into ``advantages``).
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
    rollout_logp: Tensor | None = None
    no_audio_logp: Tensor | None = None
    pass_with: Tensor | None = None
    pass_without: Tensor | None = None
    group_weight: Tensor | None = None
    rollout_routes: Tensor | None = None

    def groups(self, G: int, audio: list) -> list[ScoredGroup]:
        """This rollout's prompts one by one with their G scored completions (``audio``: the batch's clips)."""
        out = []
        for b, q in enumerate(self.questions):
            rows = slice(b * G, (b + 1) * G)
            a = audio[b]
            clip = None if a is None else [torch.as_tensor(c) for c in a] if isinstance(a, list) else torch.as_tensor(a)
            out.append(
                ScoredGroup(
                    q,
                    clip,
                    self.completion_ids[rows],
                    self.mask[rows],
                    self.texts[rows],
                    self.rewards[rows],
                    {k: v[rows] for k, v in self.per_fn.items()},
                    None if self.rollout_logp is None else self.rollout_logp[rows],
                    None if self.pass_with is None else float(self.pass_with[b]),
                    None if self.pass_without is None else float(self.pass_without[b]),
                    1.0 if self.group_weight is None else float(self.group_weight[b]),
                    None if self.rollout_routes is None else self.rollout_routes[rows],
                )
            )
        return out

    def micro_batches(self, G: int, prompts: int) -> Iterator[tuple[dict[str, Tensor], slice]]:
        """(inputs of ``prompts`` whole groups, their completion rows), in order."""
        B = self.inputs["input_ids"].shape[0]
        for b0 in range(0, B, prompts):
            yield {k: v[b0 : b0 + prompts] for k, v in self.inputs.items()}, slice(b0 * G, min(B, b0 + prompts) * G)
