"""MMAU accuracy as a torchmetrics Metric, exact under DDP.

Per-bucket correct/total *counts* are summed across processes (not per-rank accuracies averaged),
so a run on 8 GPUs reports the same numbers as the offline scorer on the gathered predictions.
Summed states need fixed shapes, hence the category names are given at construction; a name not
in the lists lands in an "other" bucket, so every question is counted in the total.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from r1aqa_pl.mmau import DIFFICULTIES, GROUPS, OTHER, is_correct
from r1aqa_pl.records import DOMAINS, Question


class MMAUAccuracy(Metric):
    """Accuracy per task, difficulty, sub-category and in total, by the official MMAU rule.

    ``update(predictions, questions)`` takes the *extracted* answers (see
    :func:`r1aqa_pl.mmau.extract_answer`). ``compute()`` returns a flat dict of tensors:
    ``acc/<task>``, ``acc/<difficulty>``, ``acc/sub/<sub-category>``, ``acc/total`` (in [0, 1]) and
    the same names under ``correct/`` and ``count/``. Empty buckets are left out (all ranks agree,
    since compute runs after the sync); the "other" buckets are ``acc/other_task``,
    ``acc/other_difficulty`` and ``acc/sub/other``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        sub_categories: Sequence[str] = (),
        tasks: Sequence[str] = DOMAINS,
        difficulties: Sequence[str] = DIFFICULTIES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.names = {
            "task": [*dict.fromkeys(tasks)],
            "difficulty": [*dict.fromkeys(difficulties)],
            "sub-category": [*dict.fromkeys(sub_categories)],
        }
        self._index = {g: {n: i for i, n in enumerate(names)} for g, names in self.names.items()}
        for g, names in self.names.items():
            for kind in ("correct", "total"):
                zeros = torch.zeros(len(names) + 1, dtype=torch.long)  # last slot: "other"
                self.add_state(f"{_attr(g)}_{kind}", zeros, dist_reduce_fx="sum")

    @classmethod
    def from_questions(cls, questions: Sequence[Question], **kwargs) -> "MMAUAccuracy":
        """Buckets for every name in ``questions`` (default tasks/difficulties first, empty names -> other).

        Under DDP build it from the *whole* evaluation set on every rank, so the state shapes agree.
        """
        def seen(attr: str, first: Sequence[str] = ()) -> list[str]:
            extra = sorted({getattr(q, attr) for q in questions if getattr(q, attr)} - set(first))
            return [*first, *extra]

        return cls(seen("sub_category"), seen("domain", DOMAINS), seen("difficulty", DIFFICULTIES), **kwargs)

    def update(self, predictions: Sequence[str], questions: Sequence[Question]) -> None:
        if len(predictions) != len(questions):
            raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
        oks = [is_correct(p, q.answer, q.choices) for p, q in zip(predictions, questions)]
        for g, attr in zip(GROUPS, ("domain", "difficulty", "sub_category")):
            correct = [0] * (len(self.names[g]) + 1)
            total = [0] * (len(self.names[g]) + 1)
            for ok, q in zip(oks, questions):
                i = self._index[g].get(getattr(q, attr), len(self.names[g]))
                total[i] += 1
                correct[i] += ok
            c, t = getattr(self, f"{_attr(g)}_correct"), getattr(self, f"{_attr(g)}_total")
            c += torch.tensor(correct, device=c.device)
            t += torch.tensor(total, device=t.device)

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for g, names in self.names.items():
            c, t = getattr(self, f"{_attr(g)}_correct"), getattr(self, f"{_attr(g)}_total")
            for i, name in enumerate([*names, OTHER]):
                if t[i] > 0:
                    self._put(out, _key(g, name, i == len(names)), c[i], t[i])
        c, t = self.task_correct.sum(), self.task_total.sum()  # each question is in one task bucket
        self._put(out, "total", c, t)
        return out

    @staticmethod
    def _put(out: dict, name: str, correct: torch.Tensor, total: torch.Tensor) -> None:
        out[f"acc/{name}"] = correct.float() / total.clamp(min=1)
        out[f"correct/{name}"] = correct
        out[f"count/{name}"] = total

    def result(self) -> dict:
        """The computed counts in :func:`r1aqa_pl.mmau.score_records`'s layout, for ``format_table``."""
        values = {k: int(v) for k, v in self.compute().items() if not k.startswith("acc/")}

        def cell(name: str) -> dict:
            c, t = values[f"correct/{name}"], values[f"count/{name}"]
            return {"correct": c, "total": t, "acc": c / t if t else 0.0}

        result: dict = {"key": "model_prediction", "scored": values["count/total"], "skipped": 0,
                        "total": cell("total")}
        for g, names in self.names.items():
            result[g] = {}
            for i, name in enumerate([*names, OTHER]):
                k = _key(g, name, i == len(names))
                if f"count/{k}" in values:
                    result[g][name] = cell(k)
        return result


def _attr(group: str) -> str:
    return {"task": "task", "difficulty": "difficulty", "sub-category": "sub"}[group]


def _key(group: str, name: str, other: bool) -> str:
    """Key under acc/...: tasks and difficulties bare, sub-categories under sub/, "other" disambiguated."""
    if group == "sub-category":
        return f"sub/{OTHER if other else name}"
    return f"{OTHER}_{group}" if other else name
