"""The benchmark seam: recognising and parsing a benchmark's file, its version, its scoring rule, its
prediction-file layout, its chance level and the table it prints. The torchmetrics metric, the validation
callback, ``r1aqa score``, ``r1aqa eval`` and ``eval-all`` take a :class:`Benchmark` and assume nothing else
about it.

Adding a benchmark: a :class:`Benchmark` subclass in a module of your own, named by its class path
(``benchmark: my_module.MyBench`` in the callback's or ``r1aqa eval``'s arguments); a built-in registers with
``@BENCHMARKS.register("name")`` and is then also recognised from its files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1aqa_pl.benchmarks.stats import RESAMPLES, SEED, bootstrap_ci, bootstrap_settings
from r1aqa_pl.registry import Registry
from r1aqa_pl.task import answer_format
from r1aqa_pl.task.question import DataError, Question

OTHER = "other"  # bucket for names not known up-front (the metric's states have fixed shapes)


@dataclass(frozen=True)
class Group:
    """A way of breaking accuracy down (per task, per difficulty, …).

    ``record_key``: the field of a source record; ``attr``: the :class:`Question` attribute holding
    it; ``known``: names in their canonical order (others follow alphabetically); ``prefix``: the
    metric's key prefix (``acc/<prefix><name>``); ``by_first``: order names by the first group's
    order of the name's first record (sub-categories under their task).
    """

    name: str
    record_key: str
    attr: str
    known: tuple[str, ...] = ()
    prefix: str = ""
    by_first: bool = False

    def key(self, name: str, other: bool = False) -> str:
        """The metric's key for a bucket: ``<name>`` / ``<prefix><name>``; the "other" bucket disambiguated."""
        if other:
            return f"{self.prefix}{OTHER}" if self.prefix else f"{OTHER}_{self.name}"
        return f"{self.prefix}{name}"


def cell(c: int, t: int, chance: float | None = None) -> dict:
    """One bucket of a result: correct, total and their ratio (0 for an empty bucket), and where known
    the expected accuracy of a uniform guess among each item's choices (summed in ``chance``)."""
    out = {"correct": c, "total": t, "acc": c / t if t else 0.0}
    if chance is not None:
        out["chance"] = chance / t if t else 0.0
    return out


@dataclass(frozen=True)
class Outcome:
    """One record's verdict, kept apart from the counting so that the counts (and resamples of them) are
    one function of a list of these.

    ``ok``: right or wrong, or None when the benchmark's rule leaves the record out of every count
    (``reason`` says why); ``names``: the record's bucket in each of :attr:`Benchmark.groups`, in order;
    ``chance``: the expected accuracy of a uniform guess on it.
    """

    ok: bool | None
    names: tuple[str, ...] = ()
    chance: float = 0.0
    reason: str = ""


def content_digest(records: list) -> str:
    """sha256 of what scoring depends on (id, question, choices, answer), independent of key order,
    record order, indentation and the other fields: recognises a benchmark file's version."""
    canon = sorted(
        json.dumps(
            [str(r.get("id")), r.get("question"), r.get("choices"), r.get("answer")],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for r in records
        if isinstance(r, dict)
    )
    return hashlib.sha256("\n".join(canon).encode()).hexdigest()


class Benchmark:
    """A multiple-choice audio benchmark: subclasses set the attributes and the rule."""

    name: str = ""
    title: str = ""  # the table's heading
    output_key: str = "model_output"  # raw generated text, in the prediction file
    prediction_key: str = "model_prediction"  # the extracted answer the official scorer reads
    extra_prediction_keys: tuple[str, ...] = ()  # the same answer again, for other releases of the official scorer
    groups: tuple[Group, ...] = ()
    metric_fallback: dict[str, tuple[str, ...]] = {}  # bucket names when the data is not at hand
    default_data: str = ""  # where `r1aqa eval --benchmark NAME` looks without --data
    download: str = ""  # where the files come from (for "file not found")
    versions: dict[str, str] = {}  # content_digest -> version name of the official files
    # what a record left out of every count is, for a rule that leaves some out (MMSU's); when set, a result
    # carries "left_out": {"records", "by_reason", "rule"}
    left_out_rule: str = ""
    # the reasons (Outcome.reason) :meth:`outcome` may leave a record out for: the metric's per-reason counts
    # (fixed shapes, summed across ranks; another reason is counted as "other")
    left_out_reasons: tuple[str, ...] = ("no_prediction",)

    # -- the rule ---------------------------------------------------------------------------------
    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        raise NotImplementedError

    def extract(self, output: str) -> str:
        """The answer the rule scores, from a completion (the project's answer contract)."""
        return answer_format.extract_answer(output)

    # -- files ------------------------------------------------------------------------------------
    def matches(self, record: dict, kind: str) -> bool:
        """Whether a file whose first record is ``record`` (``kind``: "json" list or "jsonl") is this benchmark's."""
        raise NotImplementedError

    def parse(self, rec: dict, rid: str, err, base: Path, withheld: bool, domain: str, extra: dict) -> Question:
        """One source record -> :class:`Question` (``err(reason, message)`` builds the record's DataError;
        ``base``: the folder audio paths are relative to; ``withheld``: the file has no answers)."""
        raise NotImplementedError

    def version(self, records: list, declared: str | None = None) -> str:
        """The version of a benchmark file: ``declared`` when given, else the official version whose content
        these records are (:func:`content_digest`), else "unknown" (a subset, an edit, a synthetic set)."""
        return declared or self.versions.get(content_digest(records), "unknown")

    @staticmethod
    def withheld(records: list) -> bool:
        """No record has an answer: a test split whose answers stay with the benchmark (predictions are submitted)."""
        return bool(records) and not any(isinstance(r, dict) and "answer" in r for r in records)

    @staticmethod
    def write_records(records: list, path: str | Path, jsonl: bool = False) -> Path:
        """Write records as the source was laid out: JSON lines or one indented JSON list."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if jsonl:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            text = json.dumps(records, indent=1, ensure_ascii=False)
        path.write_text(text, encoding="utf-8")
        return path

    def prediction_record(self, q: Question, output: str) -> dict:
        """The source record with the raw output and the extracted answer added, as the official scorer reads it."""
        answer = self.extract(output)
        return {
            **(q.raw or q.to_dict()),
            self.output_key: output,
            self.prediction_key: answer,
            **{k: answer for k in self.extra_prediction_keys},
        }

    def submission_record(self, record: dict) -> dict:
        """A prediction record as the benchmark's evaluation server takes it: the source record plus the answer."""
        return {k: v for k, v in record.items() if k not in (self.output_key, "not_scored")}

    def chance(self, answer: str, choices: list[str]) -> float:
        """Expected accuracy of a uniform guess among the choices, under this benchmark's own rule."""
        return sum(self.is_correct(c, answer, choices) for c in choices) / len(choices) if choices else 0.0

    # -- scoring ----------------------------------------------------------------------------------
    def check_record(self, record: Any, where: str, key: str, source: str) -> None:
        """Raise :class:`DataError` for a record the rule cannot score (default: ``answer`` among ``choices``,
        the prediction a string where present); a benchmark with other fields checks its own."""
        if not isinstance(record, dict):
            raise DataError(source, where, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
        for field in ("answer", "choices"):
            if field not in record:
                raise DataError(source, where, "missing_field", f"no {field!r} (id={record.get('id')!r})")
        choices = record["choices"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise DataError(
                source, where, "bad_field", f"'choices' must be a list of strings (id={record.get('id')!r})"
            )
        if not isinstance(record["answer"], str):
            raise DataError(source, where, "bad_field", f"'answer' must be a string (id={record.get('id')!r})")
        if record["answer"] not in choices:  # as check-data: such a record is scored against no choice at all
            raise DataError(source, where, "answer_not_in_choices",
                            f"id={record.get('id')}: answer {record['answer']!r} is not one of {choices}")
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(
                source,
                where,
                "bad_field",
                f"{key!r} must be a string, got {type(value).__name__} (id={record.get('id')!r})",
            )

    def group_names(self, record: dict) -> tuple[str, ...]:
        """The record's bucket in each group: its ``record_key`` field, "other" when it has none."""
        return tuple(str(record.get(g.record_key) or OTHER) for g in self.groups)

    def outcome(self, record: dict, key: str) -> Outcome:
        """One checked record's verdict under the rule (default: :meth:`is_correct` on the prediction under
        ``key``; a record without it is left out, as the official scorers skip it)."""
        if key not in record:
            return Outcome(None, reason="no_prediction")
        return Outcome(self.is_correct(record[key], record["answer"], record["choices"]), self.group_names(record),
                       self.chance(record["answer"], record["choices"]))

    def score_records(self, records: list[dict], key: str | None = None, source: str = "<records>",
                      where: list[str] | None = None, bootstrap: int = RESAMPLES, seed: int = SEED) -> dict:
        """Score records that carry a prediction under ``key`` (default :attr:`prediction_key`); those
        without it are skipped, as the official scorers do. ``where`` names each record in errors as the
        file's reader does (``line 4`` / ``record 3``); default ``record <0-based index>``.

        Returns ``{"benchmark", "key", "scored", "skipped", "total": {correct, total, acc},
        <group>: {name: {correct, total, acc}}}`` with ``acc`` in [0, 1]. A record lacking a group's
        field is counted under "other"; ``source`` names the file in errors. Each record is checked
        (:meth:`check_record`) and judged (:meth:`outcome`), then the verdicts are counted (:meth:`aggregate`).
        Every cell has ``ci: [lo, hi]``, its 95 % percentile-bootstrap interval over its questions (``bootstrap``
        resamples, ``seed``; 0 resamples: no intervals), and the result ``bootstrap``, how (stats.py).
        """
        key = key or self.prediction_key
        if not isinstance(records, list):
            raise DataError(
                source, "top level", "malformed_json", f"expected a JSON list of records, got {type(records).__name__}"
            )
        for i, record in enumerate(records):
            self.check_record(record, where[i] if where else f"record {i}", key, source)
        return {"benchmark": self.name, "key": key,
                **self.aggregate([self.outcome(r, key) for r in records], bootstrap, seed)}

    def aggregate(self, outcomes: list[Outcome], bootstrap: int = RESAMPLES, seed: int = SEED) -> dict:
        """Count verdicts into ``{"scored", "skipped", ["left_out"], "total", <group>: {name: cell}}``; an
        outcome whose ``ok`` is None is in no count but ``skipped`` (and ``left_out``, where the rule has one)."""
        first = self.groups[0]
        correct = {g.name: Counter() for g in self.groups}
        total = {g.name: Counter() for g in self.groups}
        chance = {g.name: Counter() for g in self.groups}
        first_of: dict[str, dict[str, str]] = {g.name: {} for g in self.groups}
        oks: dict[str, dict[str, list[bool]]] = {g.name: {} for g in self.groups}  # each cell's verdicts: its interval
        left = Counter(o.reason for o in outcomes if o.ok is None)
        for o in outcomes:
            if o.ok is None:
                continue
            for g, name in zip(self.groups, o.names):
                total[g.name][name] += 1
                correct[g.name][name] += o.ok
                chance[g.name][name] += o.chance
                first_of[g.name].setdefault(name, o.names[0])
                oks[g.name].setdefault(name, []).append(bool(o.ok))
        order = {g.name: self.ordered(g, total[g.name]) for g in self.groups}
        rank = {n: i for i, n in enumerate(order[first.name])}
        for g in self.groups:
            if g.by_first:
                order[g.name] = sorted(total[g.name], key=lambda s, g=g: (rank.get(first_of[g.name][s], 99), s))
        n = sum(total[first.name].values())
        result: dict[str, Any] = {"scored": n, "skipped": sum(left.values())}
        if self.left_out_rule:
            result["left_out"] = {"records": sum(left.values()), "by_reason": dict(sorted(left.items())),
                                  "rule": self.left_out_rule}
        result["total"] = cell(sum(correct[first.name].values()), n, sum(chance[first.name].values()))
        for g in self.groups:
            result[g.name] = {
                name: cell(correct[g.name][name], total[g.name][name], chance[g.name][name]) for name in order[g.name]
            }
        if bootstrap:
            everyone = [bool(o.ok) for o in outcomes if o.ok is not None]
            for c, values in [(result["total"], everyone)] + [
                    (result[g.name][name], oks[g.name][name]) for g in self.groups for name in order[g.name]]:
                if values:
                    c["ci"] = bootstrap_ci(values, bootstrap, seed)
            result["bootstrap"] = bootstrap_settings(bootstrap, seed)
        return result

    @staticmethod
    def ordered(group: Group, names) -> list[str]:
        """Known names in their canonical order, then the rest alphabetically."""
        return [n for n in group.known if n in names] + sorted(n for n in names if n not in group.known)

    def format_table(self, result: dict) -> str:
        """A plain-text table of a :meth:`score_records` result: every group, then the total; the chance
        column where the result has it, the 95 % interval where the cells have one, the version in the heading
        where known."""
        version = f", version {result['version']}" if result.get("version") else ""
        with_chance = "chance" in result["total"]
        with_ci = "ci" in result["total"]
        w = max(13, 1 + max(len(g.name) for g in self.groups))  # the group column fits the longest group name
        lines = [
            f"{self.title or self.name} accuracy ({result.get('key', self.prediction_key)}){version}: "
            f"{result['scored']} scored, {result['skipped']} skipped",
            f"{'group':<{w}}{'name':<36}{'correct':>8}{'total':>7}{'acc %':>8}" + ("  chance %" if with_chance else "")
            + (f"{'95 % CI':>18}" if with_ci else ""),
        ]
        names = [g.name for g in self.groups]
        rows = [(g, name, c) for g in names for name, c in result[g].items()] + [("total", "", result["total"])]
        for group, name, c in rows:
            if group == "total" or name == next(iter(result[group])):
                lines.append("-" * ((82 if with_chance else 72) + w - 13 + 18 * with_ci))
            chance = f"{100 * c['chance']:>10.2f}" if with_chance and "chance" in c else ""
            ci = f"[{100 * c['ci'][0]:.2f}, {100 * c['ci'][1]:.2f}]" if with_ci and "ci" in c else ""
            lines.append(f"{group:<{w}}{name[:35]:<36}{c['correct']:>8}{c['total']:>7}{100 * c['acc']:>8.2f}{chance}"
                         f"{ci:>{18 if ci else 0}}")
        return "\n".join(lines)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", Benchmark, shared=True)
