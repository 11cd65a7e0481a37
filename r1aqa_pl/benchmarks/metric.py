"""Benchmark accuracy as a torchmetrics Metric, exact under DDP.

Per-bucket correct/total *counts* are summed across processes (not per-rank accuracies averaged),
so a run on 8 GPUs reports the same numbers as the offline scorer on the gathered predictions.
Summed states need fixed shapes, hence the bucket names are given at construction; a name not in
the lists lands in an "other" bucket, so every question the rule scores is counted in the total.

Each question is judged as ``r1aqa score`` judges its line of the prediction file: the benchmark's own
per-record verdict (:meth:`Benchmark.outcome`) on the source record with the prediction added, so a question
the rule leaves out (MMSU's unreadable answer, MMAU-Pro's open question without a judge) is in no count but
``left_out``, and a judged question counts its fraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torchmetrics import Metric

from r1aqa_pl.benchmarks.base import OTHER, Benchmark, Outcome, cell
from r1aqa_pl.task.question import DataError, Question


class Verdict(NamedTuple):
    """One question's verdict as the metric counts it: ``ok`` right (1), wrong (0), a fraction (a judged open
    question) or None (left out of every count, ``reason`` says why); ``chance`` the expected score of a uniform
    guess; ``slots`` its bucket's index in each group's states (the last: "other"); ``keys`` those buckets as
    :meth:`BenchmarkAccuracy.compute` names them."""

    ok: bool | float | None
    chance: float
    reason: str
    slots: tuple[int, ...]
    keys: tuple[str, ...]


class BenchmarkAccuracy(Metric):
    """Accuracy per bucket of each of the benchmark's groups (for MMAU: task, difficulty, sub-category)
    and in total, by the benchmark's own rule.

    ``update(predictions, questions)`` takes the *extracted* answers (:meth:`Benchmark.extract`) and judges
    each question by :meth:`verdicts`: the benchmark's :meth:`~Benchmark.outcome` on the question's source
    record (``raw``, else the question's own fields) with the prediction under :attr:`Benchmark.prediction_key`,
    i.e. the record the prediction file holds; where that record is not one the rule can score
    (:meth:`Benchmark.check_record` refuses it: a synthetic question, another benchmark's record) the question's
    answer and choices go to :meth:`Benchmark.is_correct`. A question whose verdict is None is in no bucket,
    counted in ``left_out`` by its reason.
    ``compute()`` returns a flat dict of tensors: ``acc/<key>`` (in [0, 1]) with ``<key>`` from
    :meth:`Group.key` (for MMAU ``acc/sound``, ``acc/easy``, ``acc/sub/<name>``) and ``acc/total``,
    and the same names under ``correct/`` (a float: a judged question counts a fraction), ``count/`` and
    ``chance/`` (the expected number right of a uniform guess among each item's choices); ``count/left_out``, the
    questions the rule left out, and ``left_out/<reason>`` for each reason that occurred. Empty buckets are left
    out (all ranks agree, since compute runs after the sync).
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
            # last slot: "other"; right answers as float64 (a judged question counts a fraction; exact for counts)
            for kind, dtype in (("correct", torch.float64), ("total", torch.long)):
                zeros = torch.zeros(len(self.names[g.name]) + 1, dtype=dtype)
                self.add_state(f"g{i}_{kind}", zeros, dist_reduce_fx="sum")
            # expected correct answers of a uniform guess (the chance level), summed like the counts
            self.add_state(f"g{i}_chance", torch.zeros(len(self.names[g.name]) + 1, dtype=torch.float64),
                           dist_reduce_fx="sum")
        # questions the rule leaves out, per reason (the benchmark's own reasons, then "other")
        self.reasons = [*dict.fromkeys(benchmark.left_out_reasons)]
        self.add_state("left_out", torch.zeros(len(self.reasons) + 1, dtype=torch.long), dist_reduce_fx="sum")

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
        return [key for _, key in self._slots(q)]

    def _slots(self, q: Question) -> list[tuple[int, str]]:
        """(state index, metric key) of the question's bucket in each group."""
        out = []
        for g in self.benchmark.groups:
            name = getattr(q, g.attr)
            j = self._index[g.name].get(name)
            out.append((len(self.names[g.name]), g.key(OTHER, other=True)) if j is None else (j, g.key(name)))
        return out

    def outcome(self, prediction: str | None, q: Question) -> Outcome:
        """The benchmark's verdict on the question's line of the prediction file (the source record, else the
        question's fields, with the prediction added), as ``r1aqa score`` reads it; a record the rule cannot
        score (:meth:`Benchmark.check_record`) falls back to :meth:`Benchmark.is_correct` on the question."""
        bench, key = self.benchmark, self.benchmark.prediction_key
        record = {**(q.raw or q.to_dict()), key: prediction}
        try:
            bench.check_record(record, q.source or f"id={q.id}", key, "<validation>")
        except DataError:
            return Outcome(bench.is_correct(prediction, q.answer, q.choices), chance=bench.chance(q.answer, q.choices))
        return bench.outcome(record, key)

    def verdicts(self, predictions: Sequence[str | None], questions: Sequence[Question]) -> list[Verdict]:
        """Each question's :class:`Verdict` (what :meth:`update` counts; the callback's intervals resample them)."""
        if len(predictions) != len(questions):
            raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
        out = []
        for p, q in zip(predictions, questions):
            o, slots = self.outcome(p, q), self._slots(q)
            out.append(Verdict(o.ok, o.chance, o.reason, tuple(j for j, _ in slots), tuple(k for _, k in slots)))
        return out

    def _states(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"g{i}_correct"), getattr(self, f"g{i}_total")

    def update(self, predictions: Sequence[str | None], questions: Sequence[Question],
               verdicts: Sequence[Verdict] | None = None) -> None:
        """Count the questions' verdicts (``verdicts``: :meth:`verdicts` of these, when the caller has them)."""
        if len(predictions) != len(questions):
            raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
        verdicts = self.verdicts(predictions, questions) if verdicts is None else verdicts
        if len(verdicts) != len(questions):
            raise ValueError(f"{len(verdicts)} verdicts for {len(questions)} questions")
        scored = [v for v in verdicts if v.ok is not None]
        for i, g in enumerate(self.benchmark.groups):
            n = len(self.names[g.name])
            correct, total, chance = [0.0] * (n + 1), [0] * (n + 1), [0.0] * (n + 1)
            for v in scored:
                j = v.slots[i]
                total[j] += 1
                correct[j] += float(v.ok)
                chance[j] += v.chance
            c, t = self._states(i)
            c += torch.tensor(correct, dtype=c.dtype, device=c.device)
            t += torch.tensor(total, device=t.device)
            expected = getattr(self, f"g{i}_chance")
            expected += torch.tensor(chance, dtype=expected.dtype, device=expected.device)
        left = [0] * (len(self.reasons) + 1)
        for v in verdicts:
            if v.ok is None:
                left[self.reasons.index(v.reason) if v.reason in self.reasons else len(self.reasons)] += 1
        self.left_out += torch.tensor(left, device=self.left_out.device)

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
        out["count/left_out"] = self.left_out.sum()
        for reason, n in zip([*self.reasons, OTHER], self.left_out):
            if n > 0:
                out[f"left_out/{reason}"] = n
        return out

    @staticmethod
    def _put(out: dict, name: str, correct: torch.Tensor, total: torch.Tensor, chance: torch.Tensor) -> None:
        out[f"acc/{name}"] = correct.float() / total.clamp(min=1)
        out[f"correct/{name}"] = correct
        out[f"count/{name}"] = total
        out[f"chance/{name}"] = chance

    def result(self) -> dict:
        """The synced counts in :meth:`Benchmark.score_records`'s layout, for ``format_table``: ``skipped`` (and
        ``left_out``, where the benchmark's rule has one) the questions the rule left out."""
        computed = self.compute()  # synced
        values = {k: _number(v) for k, v in computed.items() if k.startswith(("correct/", "count/"))}

        def bucket(key: str) -> dict:
            return cell(values[f"correct/{key}"], values[f"count/{key}"], float(computed[f"chance/{key}"]))

        left = {k.split("/", 1)[1]: int(v) for k, v in sorted(computed.items()) if k.startswith("left_out/")}
        result: dict = {"benchmark": self.benchmark.name, "key": self.benchmark.prediction_key,
                        "scored": values["count/total"], "skipped": sum(left.values())}
        if self.benchmark.left_out_rule:
            result["left_out"] = {"records": sum(left.values()), "by_reason": left,
                                  "rule": self.benchmark.left_out_rule}
        result["total"] = bucket("total")
        for g in self.benchmark.groups:
            names = self.names[g.name]
            result[g.name] = {name: bucket(g.key(name, j == len(names))) for j, name in enumerate([*names, OTHER])
                              if f"count/{g.key(name, j == len(names))}" in values}
        return result


def _number(x: torch.Tensor) -> int | float:
    """A synced count as an int; a sum of judged fractions to 4 decimals (as ``r1aqa score``'s tables)."""
    v = float(x)
    return int(v) if v.is_integer() else round(v, 4)
