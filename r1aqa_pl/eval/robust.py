"""Robust scores: ``r1aqa eval --permutations K`` (each question under K orders of its choices), ``r1aqa eval
--samples K --temperature T`` (K sampled answers per question) and ``r1aqa compare-predictions A B`` (two
prediction files on the same questions, the difference with its paired interval).

A greedy accuracy on one choice order is one draw: a model that prefers the first choice, or that is right
only by a lucky token, looks better or worse than it is. The extra answers come from the evaluation's own
batches (:class:`~r1aqa_pl.eval.evaluate.RobustAnswers` runs after the benchmark callback on the same
questions and audio), are written as prediction files beside ``predictions.json`` so that ``r1aqa
score`` re-scores each, and every number carries a 95 % bootstrap interval over questions
(:mod:`r1aqa_pl.benchmarks.stats`).
"""

from __future__ import annotations

import json as _json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from r1aqa_pl.benchmarks import Benchmark, benchmark_for
from r1aqa_pl.benchmarks.stats import (
    RESAMPLES,
    SEED,
    bootstrap_ci,
    bootstrap_settings,
    bootstrap_worst_ci,
    majority_vote,
    paired_bootstrap,
    pass_at_k,
    vote_key,
)
from r1aqa_pl.task.files import read_entries
from r1aqa_pl.task.question import DataError

SAMPLING = {"top_p": 1.0, "top_k": 0}  # --samples draws from the whole distribution at the given temperature


# ---------------------------------------------------------------- scores

def scored(bench: Benchmark, record, key: str | None = None) -> bool:
    """Whether the benchmark's rule counts the record (it has a prediction the rule can read)."""
    return isinstance(record, dict) and bench.outcome(record, key or bench.prediction_key).ok is not None


def outcomes(bench: Benchmark, records: list[dict], key: str | None = None) -> np.ndarray:
    """1.0 / 0.0 per record by the benchmark's own verdict (:meth:`Benchmark.outcome`); a record the rule
    leaves out (no prediction, an unreadable one) is wrong here: another order's or a sample's answer."""
    key = key or bench.prediction_key
    return np.array([float(bool(bench.outcome(r, key).ok)) for r in records])


def group_names(bench: Benchmark, records: list[dict]) -> dict[str, list[str]]:
    """Each record's bucket in each of the benchmark's groups, as ``score_records`` files it."""
    names = [bench.group_names(r) for r in records]
    return {g.name: [n[i] for n in names] for i, g in enumerate(bench.groups)}


def metric_cells(bench: Benchmark, records: list[dict], values, order: dict[str, list[str]],
                 bootstrap: int = RESAMPLES, seed: int = SEED, worst: bool = False) -> dict:
    """One per-question number (``values`` (n,)) or several (``worst``: (n, m), the lowest column mean kept) as
    ``score_records`` lays a result out: ``{"total": cell, <group>: {name: cell}}`` in ``order``, each cell with
    its interval (every cell is resampled with the same seed)."""
    values = np.asarray(values, dtype=np.float64)

    def cell(rows: np.ndarray) -> dict:
        v = values[rows]
        if not len(v):  # no question the rule scores (every answer left out): nothing to resample
            return {"correct": 0, "total": 0, "acc": 0.0}
        extra = {}
        if worst:
            j = int(np.argmin(v.mean(axis=0)))
            col, extra = v[:, j], {"order": j}
        else:
            col = v
        s = float(col.sum())
        out = {"correct": int(s) if np.all(col == np.round(col)) else s, "total": len(col),
               "acc": float(col.mean()), **extra}
        if bootstrap:
            out["ci"] = (bootstrap_worst_ci if worst else bootstrap_ci)(v, bootstrap, seed)
        return out

    names = group_names(bench, records)
    result = {"total": cell(np.arange(len(records)))}
    for g in bench.groups:
        by = np.array(names[g.name])
        result[g.name] = {name: cell(np.flatnonzero(by == name)) for name in order[g.name] if (by == name).any()}
    return result


def majority_records(bench: Benchmark, samples: list[list[dict]]) -> list[dict]:
    """Per question (``samples[i]``: its K sample records), the record of the first sample that gave the voted
    answer (:func:`~r1aqa_pl.benchmarks.stats.majority_vote`): its prediction is the majority's."""
    key = bench.prediction_key
    out = []
    for recs in samples:
        won = vote_key(majority_vote([r[key] for r in recs]))
        out.append(next(r for r in recs if vote_key(r[key]) == won))
    return out


def robust_result(bench: Benchmark, records: list[dict], order: dict[str, list[str]],
                  orders: list[list[dict]] | None = None, samples: list[list[dict]] | None = None,
                  permutation_seed: int = SEED, temperature: float = 1.0, sample_seed: int = SEED,
                  bootstrap: int = RESAMPLES, seed: int = SEED) -> dict:
    """The robust scores of answered ``records`` (the greedy ones, as asked): ``orders`` (K lists aligned with
    them, the first ``records`` itself) and ``samples`` (per question its K sample records), each a result in
    ``score_records``' layout with intervals (see docs/benchmarks.md, "Robust scores")."""
    def cells(values, worst=False):
        return metric_cells(bench, records, values, order, bootstrap, seed, worst)

    out: dict = {"questions": len(records), "greedy": cells(outcomes(bench, records))}
    if orders:
        m = np.stack([outcomes(bench, o) for o in orders], axis=1)
        out["permutations"] = {
            "k": len(orders), "seed": permutation_seed,
            "orders": [cells(m[:, j]) for j in range(m.shape[1])],
            "mean": cells(m.mean(axis=1)), "worst": cells(m, worst=True), "consistent": cells(m.all(axis=1)),
        }
    if samples:
        k = len(samples[0])
        s = np.stack([outcomes(bench, recs) for recs in samples])  # (n, K)
        out["samples"] = {
            "k": k, "temperature": temperature, "seed": sample_seed, **SAMPLING,
            "mean": cells(s.mean(axis=1)), "majority": cells(outcomes(bench, majority_records(bench, samples))),
            f"pass@{k}": cells([pass_at_k(k, int(c), k) for c in s.sum(axis=1)]),
        }
    out["bootstrap"] = bootstrap_settings(bootstrap, seed)
    return out


def _rows(robust: dict) -> list[tuple[str, dict]]:
    """(label, result) of every line of the robust table, in order."""
    rows = [("greedy" + (" (order 0: as given)" if "permutations" in robust else ""), robust["greedy"])]
    if p := robust.get("permutations"):
        k = p["k"]
        rows += [(f"order {j}", p["orders"][j]) for j in range(1, k)]
        rows += [(f"orders: mean of {k}", p["mean"]), (f"orders: worst of {k}", p["worst"]),
                 (f"orders: right in all {k}", p["consistent"])]
    if s := robust.get("samples"):
        k = s["k"]
        rows += [(f"samples: mean of {k} (T={s['temperature']:g})", s["mean"]),
                 (f"samples: majority of {k}", s["majority"]), (f"samples: pass@{k}", s[f"pass@{k}"])]
    return rows


def pct(c: dict) -> str:
    """``37.50 [16.67, 58.33]``: a cell's accuracy and interval in %."""
    ci = c.get("ci")
    return f"{100 * c['acc']:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def format_robust(bench: Benchmark, robust: dict, width: int = 4) -> str:
    """The robust table: one line per score (greedy, each order, mean, worst, right in all orders, the samples'
    mean, majority vote, pass@K), columns the total and the benchmark's first group (``width`` columns a block;
    every group is in ``results.json``)."""
    b = robust["bootstrap"]
    first = bench.groups[0].name
    columns = ["total", *robust["greedy"][first]]
    rows = _rows(robust)
    label = max(len(r[0]) for r in rows) + 2
    lines = [f"{bench.title or bench.name} robust scores on {robust['questions']} questions: accuracy % [95 % CI, "
             f"bootstrap over questions, {b['resamples']} resamples, seed {b['seed']}]"]
    for start in range(0, len(columns), width):
        block = columns[start:start + width]
        head = f"{'score':<{label}}" + "".join(f"{c[:24]:>25}" for c in block)
        lines += [head, "-" * len(head)]
        for name, result in rows:
            cells = [result["total"] if c == "total" else result[first].get(c) for c in block]
            lines.append(f"{name:<{label}}" + "".join(f"{pct(c) if c else '-':>25}" for c in cells))
    return "\n".join(lines)


def write_extra(bench: Benchmark, predictions: list, keys: list[str | None], answers: dict[str, dict],
                out_dir: Path, jsonl: bool) -> dict[str, list]:
    """The extra answers as prediction files beside ``predictions.json``, each in the source's layout and order
    (records not scored as there) so that ``r1aqa score`` re-scores it: ``predictions.order<j>.json`` (the choices
    in the order asked), ``predictions.sample<i>.json`` and ``predictions.majority.json``. Returns
    ``{"orders": [paths], "samples": [paths], "majority": [path]}``. ``keys``: each record's identity in
    ``answers``, None for a record not answered."""
    ext = "jsonl" if jsonl else "json"
    keyed = list(zip(keys, predictions))

    def write(name: str, pick) -> str:
        recs = [pick(answers[k]) if k is not None else r for k, r in keyed]
        return str(bench.write_records(recs, out_dir / f"predictions.{name}.{ext}", jsonl))

    first = next(answers[k] for k, _ in keyed if k is not None)
    files: dict[str, list] = {}
    if first["orders"]:
        files["orders"] = [str(out_dir / f"predictions.{ext}")] + [
            write(f"order{j}", lambda e, j=j: e["orders"][j - 1]) for j in range(1, len(first["orders"]) + 1)]
    if first["samples"]:
        files["samples"] = [write(f"sample{i}", lambda e, i=i: e["samples"][i]) for i in range(len(first["samples"]))]
        files["majority"] = [write("majority", lambda e: majority_records(bench, [e["samples"]])[0])]
    return files


def robust_scores(bench: Benchmark, predictions: list, keys: list[str | None], answers: dict[str, dict],
                  result: dict, **settings) -> dict:
    """:func:`robust_result` of an evaluation: its scored records with the extra answers of
    :class:`~r1aqa_pl.eval.evaluate.RobustAnswers` (``answers[keys[i]]``), buckets in the greedy ``result``'s order."""
    answered, extra = [], []
    for r, key in zip(predictions, keys):
        if key is None or not scored(bench, r):  # the greedy table's records
            continue
        if key not in answers:  # the same batches answered both: a bug, not bad data
            raise RuntimeError(f"id={r.get('id')!r}: answered greedily but not under the other orders / samples")
        answered.append(r)
        extra.append(answers[key])
    order = {g.name: list(result.get(g.name) or {}) for g in bench.groups}
    orders = [answered] + [[e["orders"][j] for e in extra] for j in range(len(extra[0]["orders"]))]
    samples = [e["samples"] for e in extra] if extra[0]["samples"] else None
    return robust_result(bench, answered, order, orders if len(orders) > 1 else None, samples, **settings)


# ---------------------------------------------------------------- two prediction files

def question_identity(record: dict, bench: Benchmark, key: str | None = None) -> str:
    """A question as ``r1aqa eval`` matches records (its source record, less what evaluation adds), with the
    choices as a set: a file answered under another choice order (``predictions.order1.json``) is the same
    questions."""
    added = {bench.output_key, bench.prediction_key, *bench.extra_prediction_keys, "not_scored", key}
    rec = {k: v for k, v in record.items() if k not in added}
    if isinstance(rec.get("choices"), list):
        rec["choices"] = sorted(map(str, rec["choices"]))
    return _json.dumps(rec, sort_keys=True, default=str)


def _read(path: str, benchmark: str | None) -> tuple[Benchmark, list[dict], list[str]]:
    read = read_entries(path)
    bench = benchmark_for(path, benchmark, read)
    if broken := next((rec for _, _, rec in read[1] if isinstance(rec, DataError)), None):
        raise broken
    where = [w if w.startswith("line") else f"{w} (0-based)" for w, _, _ in read[1]]
    return bench, [rec for _, _, rec in read[1]], where


def _missing(path_a: str, recs_a: list, where_a: list, ids_a: list, ids_b: list, path_b: str) -> None:
    """Stop at the first question of A (in A's order) that B lacks (counted: a question twice in A needs it twice)."""
    left = Counter(ids_b)
    for rec, where, i in zip(recs_a, where_a, ids_a):
        if left[i] <= 0:
            raise DataError(path_b, "file", "different_questions",
                            f"id={rec.get('id')!r} ({path_a}:{where}) is not in this file: the two files must hold the "
                            f"same questions (choice order aside); {len(ids_a)} records there, {len(ids_b)} here")
        left[i] -= 1


def compare_predictions(a: str, b: str, benchmark: str | None = None, key: str | None = None,
                        bootstrap: int = RESAMPLES, seed: int = SEED, json: bool = False) -> dict:
    """Compare two prediction files on the same questions: each accuracy, B - A and its paired 95 % interval.

    Records are matched by identity (the source record less the keys evaluation adds, the choices' order aside),
    not by position or id; a question in one file and not the other stops with the first one's id. The pair is
    the questions both files answered (records without a prediction are skipped, as the official scorers do).
    The interval is a paired percentile bootstrap over questions (docs/benchmarks.md, "Robust scores").

    Args:
        a: the first prediction file (the baseline).
        b: the second (the difference is B - A).
        benchmark: the benchmark's name (``mmau``, ``mmar``); default: recognised from the files.
        key: the record key holding the prediction (default: the benchmark's own).
        bootstrap: bootstrap resamples.
        seed: bootstrap seed.
        json: print the result as JSON instead of a table.
    """
    bench, recs_a, where_a = _read(a, benchmark)
    _, recs_b, where_b = _read(b, benchmark or bench.name)  # read as A's benchmark
    key = key or bench.prediction_key
    for path, recs, where in ((a, recs_a, where_a), (b, recs_b, where_b)):
        bench.score_records(recs, key=key, source=path, where=where, bootstrap=0)  # the records' checks
    ids_a = [question_identity(r, bench, key) for r in recs_a]
    ids_b = [question_identity(r, bench, key) for r in recs_b]
    _missing(a, recs_a, where_a, ids_a, ids_b, b)
    _missing(b, recs_b, where_b, ids_b, ids_a, a)
    slots: dict[str, list[int]] = {}
    for j, i in enumerate(ids_b):
        slots.setdefault(i, []).append(j)
    pairs = [(ra, recs_b[slots[i].pop(0)]) for ra, i in zip(recs_a, ids_a)]
    both = [(ra, rb) for ra, rb in pairs if scored(bench, ra, key) and scored(bench, rb, key)]
    if not both:
        raise DataError(b, "file", "nothing_scored", f"no question has a prediction under {key!r} in both {a} and "
                        "this file: nothing to compare")
    ok_a = outcomes(bench, [ra for ra, _ in both], key)
    ok_b = outcomes(bench, [rb for _, rb in both], key)
    names = group_names(bench, [ra for ra, _ in both])
    order = bench.score_records([ra for ra, _ in both], key=key, bootstrap=0)

    def cell(rows: np.ndarray) -> dict:
        pair = paired_bootstrap(ok_a[rows], ok_b[rows], bootstrap, seed) if bootstrap else {}
        out = {"total": len(rows), "a": float(ok_a[rows].mean()), "b": float(ok_b[rows].mean()),
               "difference": float(ok_b[rows].mean() - ok_a[rows].mean()),
               "a_only_right": int(((ok_a == 1) & (ok_b == 0))[rows].sum()),
               "b_only_right": int(((ok_a == 0) & (ok_b == 1))[rows].sum())}
        if bootstrap:
            out |= {"a_ci": bootstrap_ci(ok_a[rows], bootstrap, seed),
                    "b_ci": bootstrap_ci(ok_b[rows], bootstrap, seed), "ci": pair["ci"]}
        return out

    unanswered = {"a": sum(not scored(bench, ra, key) for ra, _ in pairs),
                  "b": sum(not scored(bench, rb, key) for _, rb in pairs)}
    result: dict = {"benchmark": bench.name, "key": key, "a": a, "b": b, "questions": len(pairs),
                    "paired": len(both), "unanswered": unanswered, "total": cell(np.arange(len(both)))}
    for g in bench.groups:
        by = np.array(names[g.name])
        result[g.name] = {n: cell(np.flatnonzero(by == n)) for n in order[g.name]}
    result["bootstrap"] = bootstrap_settings(bootstrap, seed)
    print(_json.dumps(result, indent=2) if json else format_comparison(bench, result))
    sys.stdout.flush()
    return result


def _signed(c: dict) -> str:
    ci = c.get("ci")
    return f"{100 * c['difference']:+.2f}" + (f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")


def format_comparison(bench: Benchmark, result: dict) -> str:
    """Every group's buckets then the total: paired questions, A and B (% [CI]), B - A [paired CI], and how many
    questions only A or only B got right."""
    b = result["bootstrap"]
    unanswered = result["unanswered"]
    skipped = f", {unanswered['a']} unanswered in A, {unanswered['b']} in B" if any(unanswered.values()) else ""
    lines = [f"{bench.title or bench.name}: B - A on {result['paired']} paired questions{skipped}",
             f"A: {result['a']}", f"B: {result['b']}",
             f"accuracy % [95 % CI, bootstrap over questions, paired for B - A, {b['resamples']} resamples, "
             f"seed {b['seed']}]",
             f"{'group':<13}{'name':<30}{'total':>6}{'A':>25}{'B':>25}{'B - A':>27}{'A only':>8}{'B only':>8}"]
    rule = "-" * len(lines[-1])
    rows = [(g.name, n, c) for g in bench.groups for n, c in result[g.name].items()] + [("total", "", result["total"])]
    for group, name, c in rows:
        if group == "total" or name == next(iter(result[group])):
            lines.append(rule)
        a = pct({"acc": c["a"], "ci": c.get("a_ci")})
        bb = pct({"acc": c["b"], "ci": c.get("b_ci")})
        lines.append(f"{group:<13}{name[:29]:<30}{c['total']:>6}{a:>25}{bb:>25}{_signed(c):>27}"
                     f"{c['a_only_right']:>8}{c['b_only_right']:>8}")
    return "\n".join(lines)


def check_settings(permutations: int, samples: int, temperature: float, bootstrap: int) -> None:
    """The robust flags' ranges, before any weights load."""
    for ok, flag, value, rule in ((permutations >= 1, "permutations", permutations, "at least 1 (the order given)"),
                                  (samples >= 0, "samples", samples, "0 (none) or more"),
                                  (temperature > 0, "temperature", temperature, "must be > 0"),
                                  (bootstrap >= 0, "bootstrap", bootstrap, "0 (no intervals) or more resamples")):
        if not ok:
            raise ValueError(f"--{flag} {value!r}: {rule}")


def robust_provenance(permutations: int, samples: int, temperature: float, seed: int, bootstrap: int) -> dict:
    """What the provenance record says of the robust scores: the intervals always, the orders and samples when asked."""
    out: dict = {"bootstrap": bootstrap_settings(bootstrap, seed)}
    if permutations > 1:
        out["permutations"] = {"k": permutations, "seed": seed, "orders": "the given order, then k - 1 random "
                               "permutations of the choices, seeded by the seed and each question's id, text and "
                               "choices (distinct while possible)", "decoding": "greedy"}
    if samples:
        out["samples"] = {"k": samples, "temperature": temperature, "seed": seed, **SAMPLING,
                          "seeding": "torch.manual_seed(batch_seed(seed, batch index)) per batch",
                          "majority_ties": "the tied answer sampled first"}
    return out

