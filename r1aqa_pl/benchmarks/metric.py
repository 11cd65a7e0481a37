"""Benchmark accuracy as a torchmetrics Metric, exact under DDP.

Per-bucket correct/total *counts* are summed across processes (not per-rank accuracies averaged),
so a run on 8 GPUs reports the same numbers as the offline scorer on the gathered predictions.
Summed states need fixed shapes, hence the bucket names are given at construction; a name not in
the lists lands in an "other" bucket, so every question is counted in the total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric

from r1aqa_pl.benchmarks.base import OTHER, Benchmark, cell
from r1aqa_pl.task.question import Question


class BenchmarkAccuracy(Metric):
    """Accuracy per bucket of each of the benchmark's groups (for MMAU: task, difficulty, sub-category)
    and in total, by the benchmark's own rule.

    ``update(predictions, questions)`` takes the *extracted* answers (:meth:`Benchmark.extract`).
    ``compute()`` returns a flat dict of tensors: ``acc/<key>`` (in [0, 1]) with ``<key>`` from
    :meth:`Group.key` (for MMAU ``acc/sound``, ``acc/easy``, ``acc/sub/<name>``) and ``acc/total``,
    and the same names under ``correct/``, ``count/`` and ``chance/`` (the expected number right of a
    uniform guess among each item's choices). Empty buckets are left out (all ranks
    agree, since compute runs after the sync).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, benchmark: Benchmark, names: Mapping[str, Sequence[str]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.benchmark = benchmark
        names = dict(names or {})
        self.names = {g.name: [*dict.fromkeys(names.get(g.name, g.known or benchmark.metric_fallback.get(g.name, ())))]
                      for g in benchmark.groups}
        self._index = {g: {n: i for i, n in enumerate(ns)} for g, ns in self.names.items()}
        for i, g in enumerate(benchmark.groups):
            for kind in ("correct", "total"):
                zeros = torch.zeros(len(self.names[g.name]) + 1, dtype=torch.long)  # last slot: "other"
                self.add_state(f"g{i}_{kind}", zeros, dist_reduce_fx="sum")
            # expected correct answers of a uniform guess (the chance level), summed like the counts
            self.add_state(f"g{i}_chance", torch.zeros(len(self.names[g.name]) + 1, dtype=torch.float64),
                           dist_reduce_fx="sum")

    @classmethod
    def from_questions(cls, benchmark: Benchmark, questions: Sequence[Question], **kwargs) -> BenchmarkAccuracy:
        """Buckets for every name in ``questions`` (known names first, empty names -> other).

        Under DDP build it from the *whole* evaluation set on every rank, so the state shapes agree.
        """
        names = {}
        for g in benchmark.groups:
            extra = sorted({getattr(q, g.attr) for q in questions if getattr(q, g.attr)} - set(g.known))
            names[g.name] = [*g.known, *extra]
        return cls(benchmark, names, **kwargs)

    def bucket_keys(self, q: Question) -> list[str]:
        """The question's bucket in each group, as :meth:`compute` names it (``sound``, ``easy``, ``sub/<name>``;
        a name outside the lists: the group's "other"): the cells its verdict counts in."""
        keys = []
        for g in self.benchmark.groups:
            name = getattr(q, g.attr)
            keys.append(g.key(name) if name in self._index[g.name] else g.key(OTHER, other=True))
        return keys

    def _states(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"g{i}_correct"), getattr(self, f"g{i}_total")

    def update(self, predictions: Sequence[str], questions: Sequence[Question]) -> None:
        if len(predictions) != len(questions):
            raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
        oks = [self.benchmark.is_correct(p, q.answer, q.choices) for p, q in zip(predictions, questions)]
        guesses = [self.benchmark.chance(q.answer, q.choices) for q in questions]
        for i, g in enumerate(self.benchmark.groups):
            n = len(self.names[g.name])
            correct, total, chance = [0] * (n + 1), [0] * (n + 1), [0.0] * (n + 1)
            for ok, guess, q in zip(oks, guesses, questions):
                j = self._index[g.name].get(getattr(q, g.attr), n)
                total[j] += 1
                correct[j] += ok
                chance[j] += guess
            c, t = self._states(i)
            c += torch.tensor(correct, device=c.device)
            t += torch.tensor(total, device=t.device)
            expected = getattr(self, f"g{i}_chance")
            expected += torch.tensor(chance, dtype=expected.dtype, device=expected.device)

    def _buckets(self):
        """(group, name, metric key, correct, total, chance sum) of every non-empty bucket."""
        for i, g in enumerate(self.benchmark.groups):
            c, t = self._states(i)
            guess = getattr(self, f"g{i}_chance")
            names = self.names[g.name]
            for j, name in enumerate([*names, OTHER]):
                if t[j] > 0:
                    yield g, name, g.key(name, other=j == len(names)), c[j], t[j], guess[j]

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for _, _, key, c, t, guess in self._buckets():
            self._put(out, key, c, t, guess)
        c, t = self._states(0)  # each question is in one bucket of the first group
        self._put(out, "total", c.sum(), t.sum(), self.g0_chance.sum())
        return out

    @staticmethod
    def _put(out: dict, name: str, correct: torch.Tensor, total: torch.Tensor, chance: torch.Tensor) -> None:
        out[f"acc/{name}"] = correct.float() / total.clamp(min=1)
        out[f"correct/{name}"] = correct
        out[f"count/{name}"] = total
        out[f"chance/{name}"] = chance

    def result(self) -> dict:
        """The synced counts in :meth:`Benchmark.score_records`'s layout, for ``format_table``."""
        computed = self.compute()  # synced
        values = {k: int(v) for k, v in computed.items() if k.startswith(("correct/", "count/"))}

        def bucket(key: str) -> dict:
            return cell(values[f"correct/{key}"], values[f"count/{key}"], float(computed[f"chance/{key}"]))

        result: dict = {"benchmark": self.benchmark.name, "key": self.benchmark.prediction_key,
                        "scored": values["count/total"], "skipped": 0, "total": bucket("total")}
        for g in self.benchmark.groups:
            names = self.names[g.name]
            result[g.name] = {name: bucket(g.key(name, j == len(names))) for j, name in enumerate([*names, OTHER])
                              if f"count/{g.key(name, j == len(names))}" in values}
        return result
