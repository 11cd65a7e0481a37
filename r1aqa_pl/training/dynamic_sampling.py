"""Dynamic sampling (DAPO, Yu et al. 2025): build each optimizer step from groups that carry a gradient.

A group whose G completions all got the same reward has zero advantage: in plain GRPO it only
dilutes the step (and with few prompts per step the policy stalls). Here such groups are dropped
(the same reward: the total, or one reward function's, e.g. accuracy as DAPO)
and more batches are drawn until the step has its prompts. The step is taken once every rank has
them (so that every rank takes the same number of optimizer steps and runs the same number of
forwards and backwards), or once the bound on extra draws is reached; a step still short then is
topped up with the latest dropped groups (zero advantage: plain GRPO's step, KL term only) and the
shortfall is logged. Extra informative groups of the last draw are discarded: the next step
samples afresh from the updated policy (on-policy, as DAPO).

With ``grounding.contribution`` a group whose advantages its audio contribution weighs by 0 (answerable
without the audio) carries no policy gradient either: it is dropped the same way, counted apart
(``ungrounded``), and more is drawn in its place.

The pool is plain state (:meth:`state_dict`), saved in the checkpoint with the other resume state,
so a run interrupted in the middle of a refill continues with the same next step.
"""

from __future__ import annotations

from r1aqa_pl.rollout.base import ScoredGroup


class GroupPool:
    """Informative groups waiting for their optimizer step, and the counts logged for it."""

    def __init__(self, max_extra_draws: int = 4, metric: str = "total", grounded: bool = False):
        """``grounded``: the groups carry an audio-contribution weight; the step's stats add the fraction dropped
        for it (``ungrounded_fraction``)."""
        if max_extra_draws < 0:
            raise ValueError(f"max_extra_draws must be >= 0, got {max_extra_draws}")
        self.max_extra_draws, self.metric, self.grounded = max_extra_draws, metric, grounded
        self.groups: list[ScoredGroup] = []
        self.spare: list[ScoredGroup] = []  # the latest zero-variance groups, for a step that stays short
        self.draws = self.drawn = self.dropped = self.ungrounded = 0

    def add(self, groups: list[ScoredGroup], target: int) -> None:
        """One drawn batch: keep its informative groups, remember up to ``target`` dropped ones."""
        self.draws += 1
        self.drawn += len(groups)
        for g in groups:
            if g.informative(self.metric):
                self.groups.append(g)
            else:
                self.dropped += 1
                self.ungrounded += g.weight == 0
                self.spare = (self.spare + [g])[-target:]

    def full(self, target: int) -> bool:
        return len(self.groups) >= target

    def out_of_draws(self, base_draws: int) -> bool:
        """The step has had its ``base_draws`` (gradient accumulation) plus every allowed extra draw."""
        return self.draws >= base_draws + self.max_extra_draws

    def take(self, target: int, base_draws: int) -> tuple[list[ScoredGroup], dict[str, float]]:
        """The step's ``target`` groups (informative first, topped up from the spare ones) and its counts."""
        step = self.groups[:target]
        shortfall = target - len(step)
        if shortfall > 0:
            step = step + self.spare[-shortfall:]
        stats = {"dropped_fraction": self.dropped / max(1, self.drawn),
                 "extra_draws": float(max(0, self.draws - base_draws)),
                 "shortfall": float(max(0, shortfall))}
        if self.grounded:
            stats["ungrounded_fraction"] = self.ungrounded / max(1, self.drawn)
        self.groups, self.spare = [], []
        self.draws = self.drawn = self.dropped = self.ungrounded = 0
        return step, stats

    def state_dict(self) -> dict:
        return {"groups": self.groups, "spare": self.spare, "draws": self.draws, "drawn": self.drawn,
                "dropped": self.dropped, "ungrounded": self.ungrounded}

    def load_state_dict(self, state: dict) -> None:
        self.groups, self.spare = list(state["groups"]), list(state["spare"])
        self.draws, self.drawn, self.dropped = int(state["draws"]), int(state["drawn"]), int(state["dropped"])
        self.ungrounded = int(state.get("ungrounded", 0))  # absent from a checkpoint of before the knob
