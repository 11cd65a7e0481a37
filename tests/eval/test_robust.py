"""Robust scores: the statistics (hand numbers), the intervals in every table, ``r1aqa eval --permutations
--samples`` end to end on the tiny run's checkpoint, ``r1aqa compare-predictions`` and their errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

from r1aqa_pl.benchmarks import stats
from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.cli import main
from r1aqa_pl.eval import evaluate as ev
from r1aqa_pl.eval.robust import compare_predictions
from r1aqa_pl.eval.score import score
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError, Question

bench = MMAU()


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_all_right_or_all_wrong_is_a_point():
    assert stats.bootstrap_ci([1] * 37) == [1.0, 1.0]
    assert stats.bootstrap_ci([0] * 5, n_resamples=10, seed=3) == [0.0, 0.0]
    assert stats.bootstrap_ci([1]) == [1.0, 1.0]


def test_bootstrap_is_numpy_resampling_with_the_same_seed():
    """The documented recipe, spelled out with numpy: rows of rng.integers(0, n, (R, n)), 2.5 / 97.5 % quantiles."""
    x = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    idx = np.random.default_rng(7).integers(0, len(x), size=(200, len(x)))
    means = np.asarray(x, float)[idx].mean(axis=1)
    assert stats.bootstrap_ci(x, n_resamples=200, seed=7) == list(np.quantile(means, [0.025, 0.975]))
    lo, hi = stats.bootstrap_ci(x, n_resamples=200, seed=7)
    assert lo <= np.mean(x) <= hi and 0 < lo < hi < 1
    assert stats.bootstrap_ci(x, 200, 8) != [lo, hi]  # another seed, other resamples


def test_bootstrap_in_blocks_is_the_same_stream(monkeypatch):
    x = [1, 0, 0, 1, 1, 0, 1]
    whole = stats.resampled_means(x, 50, seed=1)
    monkeypatch.setattr(stats, "_CHUNK", 3 * len(x))  # 3 resamples a block
    assert np.array_equal(stats.resampled_means(x, 50, seed=1), whole)


def test_percentile_interval_hand_numbers():
    # linear interpolation between order statistics: the 2.5 % point of [0, 10] is 0.25
    assert stats.percentile_interval([0, 10]) == pytest.approx([0.25, 9.75])
    assert stats.percentile_interval([0, 1, 2, 3, 4], level=0.5) == [1.0, 3.0]
    with pytest.raises(ValueError, match="level"):
        stats.percentile_interval([0, 1], level=1.0)
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci([])


def test_bootstrap_two_questions_hand_count():
    """Two questions, one right: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the 2.5 % and
    97.5 % points are 0 and 1; and the share of resamples at 0.5 is about a half."""
    means = stats.resampled_means([1, 0], 4000, seed=0)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert abs(np.mean(means == 0.5) - 0.5) < 0.03
    assert stats.bootstrap_ci([1, 0], 4000, seed=0) == [0.0, 1.0]


def test_paired_bootstrap():
    a, b = [1, 1, 0, 0, 1, 0, 1, 1], [1, 1, 1, 0, 1, 1, 1, 1]
    p = stats.paired_bootstrap(a, b, 500, seed=2)
    assert (p["a"], p["b"], p["difference"]) == (0.625, 0.875, 0.25)
    # the interval resamples questions: that of the per-question differences [0, 0, 1, 0, 0, 1, 0, 0]
    assert p["ci"] == stats.bootstrap_ci([0, 0, 1, 0, 0, 1, 0, 0], 500, seed=2)
    assert p["ci"][0] == 0.0 and p["ci"][0] <= 0.25 <= p["ci"][1]
    assert stats.paired_bootstrap(a, a)["ci"] == [0.0, 0.0]  # the same answers: no difference at all
    with pytest.raises(ValueError, match="different lengths"):
        stats.paired_bootstrap([1], [1, 0])


def test_worst_of_several_columns():
    m = np.array([[1, 1], [1, 0], [0, 0], [1, 1]])  # column means 0.75 and 0.5
    lo, hi = stats.bootstrap_worst_ci(m, 300, seed=4)
    assert lo <= 0.5 <= hi
    same = np.array([[1, 1], [0, 0], [1, 1]])
    assert stats.bootstrap_worst_ci(same, 300, seed=4) == stats.bootstrap_ci([1, 0, 1], 300, seed=4)


# ---------------------------------------------------------------- permutations, votes, pass@k

def question(qid="q1", choices=("two", "three", "four"), answer="three") -> Question:
    raw = {"id": qid, "question": "How many beeps?", "choices": list(choices), "answer": answer, "task": "sound"}
    return Question(qid, "a.wav", raw["question"], list(choices), answer, raw=raw)


def test_permuted_orders_follow_the_answer():
    q = question()
    orders = stats.permuted(q, 3, seed=0)
    assert orders[0] is q and len(orders) == 3
    assert len({tuple(o.choices) for o in orders}) == 3  # distinct orders while 3! allows
    for o in orders:
        assert sorted(o.choices) == sorted(q.choices) and o.answer == "three" and o.raw["choices"] == o.choices
        assert o.raw["answer"] == "three" and o.id == q.id
    assert q.choices == ["two", "three", "four"] and q.raw["choices"] == ["two", "three", "four"]  # untouched
    assert [o.choices for o in stats.permuted(q, 3, seed=0)] == [o.choices for o in orders]  # seeded
    assert stats.permuted(q, 1) == [q]
    assert [o.choices for o in stats.permuted(q, 3, seed=1)] != [o.choices for o in orders]  # another seed


def test_permuted_two_choices_swaps_then_repeats():
    q = question(choices=("yes", "no"), answer="no")
    orders = [o.choices for o in stats.permuted(q, 4, seed=5)]
    assert orders[:2] == [["yes", "no"], ["no", "yes"]]  # the one other order first
    assert all(o in orders[:2] for o in orders[2:])  # then repeats: 2! orders only
    with pytest.raises(ValueError, match="at least 1"):
        stats.permuted(q, 0)


def test_majority_vote_and_its_ties():
    assert stats.majority_vote(["b", "a", "a"]) == "a"
    assert stats.majority_vote(["b", "a", "a", "b"]) == "b"  # a tie: the answer sampled first
    assert stats.majority_vote(["a", "b", "b", "a"]) == "a"
    assert stats.majority_vote(["Man.", "woman", "man"]) == "Man."  # case and punctuation are one vote
    assert stats.majority_vote(["", " ?", "x"]) == "x"  # no words: abstains
    assert stats.majority_vote(["", "..."]) == "" and stats.majority_vote([]) == ""


def test_pass_at_k_hand_numbers():
    assert stats.pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert stats.pass_at_k(5, 2, 1) == pytest.approx(0.4)  # k = 1: the share right
    assert stats.pass_at_k(3, 0, 3) == 0.0 and stats.pass_at_k(3, 1, 3) == 1.0  # k = n: any right
    assert stats.pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    with pytest.raises(ValueError):
        stats.pass_at_k(2, 3, 1)


# ---------------------------------------------------------------- intervals in score's table and JSON

def records(oks: list[bool], tasks=("sound", "music")) -> list[dict]:
    out = []
    for i, ok in enumerate(oks):
        choices = ["C major", "C minor", "Man"]
        out.append({"id": f"q{i}", "audio_id": f"./{i}.wav", "question": f"Q{i}?", "choices": choices,
                    "answer": choices[i % 3], "task": tasks[i % len(tasks)], "difficulty": "easy",
                    "sub-category": "Counting", "model_prediction": choices[i % 3] if ok else choices[(i + 1) % 3]})
    return out


def test_score_cells_carry_intervals(tmp_path, capsys):
    oks = [True] * 6 + [False, True, False, True]  # the even ids are sound (3 of 5 right), the odd music (all)
    recs = records(oks)
    res = bench.score_records(recs)
    sound = [ok for i, ok in enumerate(oks) if i % 2 == 0]
    assert res["task"]["sound"]["ci"] == stats.bootstrap_ci(sound) and res["total"]["ci"] == stats.bootstrap_ci(oks)
    assert res["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 0.95, "method": "percentile",
                                "over": "questions"}
    music = [ok for i, ok in enumerate(oks) if i % 2]
    assert all(music) and res["task"]["music"]["ci"] == [1.0, 1.0]
    assert "ci" not in bench.score_records(recs, bootstrap=0)["total"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(recs))
    result = score(str(path), seed=1, bootstrap=300)
    assert result["total"]["ci"] == stats.bootstrap_ci(oks, 300, seed=1)
    table = capsys.readouterr().out
    lo, hi = result["total"]["ci"]
    assert "95 % CI" in table and f"[{100 * lo:.2f}, {100 * hi:.2f}]" in table.splitlines()[-1]


# ---------------------------------------------------------------- compare-predictions

def write(path: Path, recs: list[dict]) -> str:
    path.write_text(json.dumps(recs))
    return str(path)


def test_compare_predictions_hand_files(tmp_path, capsys):
    """A right on 5 of 10, B on 7 (B right where A is wrong on q1, q3, q5; wrong where A is right on q8). B's
    file is shuffled and one record's choices reordered: matched by the question, not the position."""
    a_ok = [True, False, True, False, True, False, True, False, True, False]
    b_ok = [True, True, True, True, True, True, True, False, False, False]
    a = write(tmp_path / "a.json", records(a_ok))
    b_recs = records(b_ok)
    b_recs[4]["choices"] = list(reversed(b_recs[4]["choices"]))
    b = write(tmp_path / "b.json", b_recs[::-1])
    result = compare_predictions(a, b, bootstrap=500, seed=3)
    t = result["total"]
    assert (result["paired"], t["a"], t["b"], t["difference"]) == (10, 0.5, 0.7, pytest.approx(0.2))
    assert (t["a_only_right"], t["b_only_right"]) == (1, 3)
    assert t["ci"] == stats.bootstrap_ci(np.array(b_ok, float) - np.array(a_ok, float), 500, seed=3)
    assert t["a_ci"] == stats.bootstrap_ci(a_ok, 500, seed=3) and t["ci"][0] <= 0.2 <= t["ci"][1]
    assert result["task"]["music"]["difference"] == pytest.approx(0.6)  # odd ids: A 0/5, B 3/5
    assert result["task"]["sound"]["difference"] == pytest.approx(-0.2)  # even ids: A 5/5, B 4/5
    assert result["task"]["sound"]["a_ci"] == [1.0, 1.0]
    out = capsys.readouterr().out
    assert "B - A on 10 paired questions" in out and f"{100 * t['difference']:+.2f} [" in out.splitlines()[-1]

    main(["compare-predictions", a, b, "--json", "true"])  # the command: the same numbers as JSON
    assert json.loads(capsys.readouterr().out)["total"]["ci"] == stats.bootstrap_ci(
        np.array(b_ok, float) - np.array(a_ok, float))


def test_compare_predictions_unanswered_are_left_out(tmp_path):
    a_recs, b_recs = records([True, False, True, True]), records([True, True, True, False])
    del a_recs[1]["model_prediction"]
    result = compare_predictions(write(tmp_path / "a.json", a_recs), write(tmp_path / "b.json", b_recs))
    assert result["paired"] == 3 and result["unanswered"] == {"a": 1, "b": 0}
    assert result["total"]["difference"] == pytest.approx(2 / 3 - 1)


def test_compare_predictions_different_questions(tmp_path, capsys):
    a_recs = records([True, False, True, True])
    a = write(tmp_path / "a.json", a_recs)
    b = write(tmp_path / "b.json", a_recs[:2] + a_recs[3:])  # q2 missing
    missing = r"b.json:file: id='q2' \(.*a.json:record 2 \(0-based\)\) is not in this file"
    with pytest.raises(DataError, match=missing) as e:
        compare_predictions(a, b)
    assert e.value.reason == "different_questions"
    with pytest.raises(DataError, match=missing):
        compare_predictions(b, a)  # the other way round: still the file that lacks it, and where the other has it
    changed = [dict(r) for r in a_recs]
    changed[0]["answer"] = "C minor"  # another question, though the same id
    with pytest.raises(DataError, match="id='q0'"):
        compare_predictions(a, write(tmp_path / "c.json", changed))
    with pytest.raises(SystemExit) as exit_:
        main(["compare-predictions", a, b])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith(f"error: {b}:file: id='q2'") and err.count("\n") == 1
    none = [{k: v for k, v in r.items() if k != "model_prediction"} for r in a_recs]
    with pytest.raises(DataError, match="nothing to compare"):
        compare_predictions(a, write(tmp_path / "none.json", none))


# ---------------------------------------------------------------- intervals in validation

class Fake(LightningModule):
    """Right on questions whose number is odd."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def answer(self, questions, audio):
        return [f"<answer>{q.answer if int(q.id[1:]) % 2 else next(c for c in q.choices if c != q.answer)}</answer>"
                for q in questions]

    def validation_step(self, batch, batch_idx):
        pass


def test_validation_logs_intervals(tmp_path):
    qs = [question(f"q{i}", answer=("two", "three", "four")[i % 3]) for i in range(9)]
    for i, q in enumerate(qs):
        q.domain = ("sound", "music")[i % 2]
    loader = DataLoader(qs, batch_size=4, collate_fn=lambda b: {"questions": b, "audio": [None] * len(b)})
    cb = BenchmarkEvaluation(bootstrap=200, bootstrap_seed=1, dirpath=str(tmp_path))
    (logged,) = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[cb]).validate(Fake(), loader)
    oks = [i % 2 == 1 for i in range(9)]
    assert logged["val/acc/total"] == pytest.approx(4 / 9)
    assert [logged["val/ci_low/total"], logged["val/ci_high/total"]] == pytest.approx(stats.bootstrap_ci(oks, 200, 1))
    assert logged["val/ci_low/music"] == logged["val/ci_high/music"] == 1.0  # the odd ones: all right
    assert logged["val/ci_low/sound"] == logged["val/ci_high/sound"] == 0.0
    prov = json.loads((tmp_path / "val_step0.provenance.json").read_text())
    assert prov["bootstrap"]["resamples"] == 200 and prov["bootstrap"]["seed"] == 1
    assert "val/ci_low/total" not in Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                                             enable_model_summary=False,
                                             callbacks=[BenchmarkEvaluation(dirpath=str(tmp_path))]
                                             ).validate(Fake(), loader)[0]


# ---------------------------------------------------------------- r1aqa eval --permutations --samples

def test_eval_permutations_and_samples(tmp_path, tiny_run, capsys):
    out = tmp_path / "eval"
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(tiny_run.data), out=str(out),
                          batch_size=tiny_run.val_batch_size, permutations=2, samples=2)
    printed = capsys.readouterr().out
    with capsys.disabled():  # the tables, for the record (pytest -s)
        print(printed)
    # greedy answers and their score are those of plain `r1aqa eval`, i.e. the run's own validation at step 2
    run = {r["id"]: r for r in read_records(tiny_run.log_dir / "predictions" / "val_step2.json")}
    preds = read_records(out / "predictions.json")
    assert all(r["model_output"] == run[r["id"]]["model_output"] for r in preds)
    assert results["total"] == bench.score_records(list(run.values()))["total"] and "ci" in results["total"]
    assert json.loads((out / "results.json").read_text()) == results

    robust = results["robust"]
    p, s = robust["permutations"], robust["samples"]
    assert robust["questions"] == 24 and p["k"] == 2 and s["k"] == 2 and s["temperature"] == 1.0
    assert robust["greedy"]["total"] == p["orders"][0]["total"]
    assert {k: v for k, v in robust["greedy"]["total"].items()} == {
        k: v for k, v in results["total"].items() if k != "chance"}
    # each order file is the benchmark's records, choices as asked, and re-scores to its row
    order1 = read_records(out / "predictions.order1.json")
    assert [r["id"] for r in order1] == [r["id"] for r in preds]
    assert all(sorted(r["choices"]) == sorted(o["choices"]) and r["answer"] == o["answer"]
               for r, o in zip(order1, preds))
    assert all(r["choices"] != o["choices"] for r, o in zip(order1, preds))  # 2 orders: the other one
    accs = [bench.score_records(read_records(f))["total"] for f in robust["files"]["orders"]]
    assert [a["acc"] for a in accs] == [o["total"]["acc"] for o in p["orders"]]
    assert p["orders"][1]["total"]["ci"] == accs[1]["ci"]
    per_question = np.array([[bench.is_correct(r["model_prediction"], r["answer"], r["choices"]) for r in recs]
                             for recs in (preds, order1)], float).T
    assert p["mean"]["total"]["acc"] == pytest.approx(per_question.mean())
    assert p["worst"]["total"]["acc"] == min(a["acc"] for a in accs)
    assert p["consistent"]["total"]["correct"] == int(per_question.all(axis=1).sum())
    assert p["consistent"]["total"]["acc"] <= p["worst"]["total"]["acc"] <= p["mean"]["total"]["acc"]
    # samples: files re-score to the mean; the majority file to the vote; pass@2 is "either right"
    samples = [read_records(out / f"predictions.sample{i}.json") for i in range(2)]
    right = np.array([[bench.is_correct(r["model_prediction"], r["answer"], r["choices"]) for r in recs]
                      for recs in samples], float).T
    assert s["mean"]["total"]["acc"] == pytest.approx(right.mean())
    assert s["pass@2"]["total"]["acc"] == pytest.approx(right.any(axis=1).mean())
    assert s["majority"]["total"]["acc"] == bench.score_records(read_records(out / "predictions.majority.json"))[
        "total"]["acc"]
    for result in (p["orders"][1], p["mean"], p["worst"], p["consistent"], s["mean"], s["majority"], s["pass@2"]):
        lo, hi = result["total"]["ci"]
        assert lo <= result["total"]["acc"] <= hi
        assert set(result) == {"total", "task", "difficulty", "sub-category"}
        assert all("ci" in c for g in ("task", "difficulty", "sub-category") for c in result[g].values())
    # the record of how
    prov = json.loads((out / "predictions.provenance.json").read_text())
    assert prov["permutations"]["k"] == 2 and prov["permutations"]["seed"] == 0
    assert (prov["samples"]["k"], prov["samples"]["temperature"], prov["samples"]["seed"]) == (2, 1.0, 0)
    assert (prov["bootstrap"]["resamples"], prov["bootstrap"]["seed"]) == (1000, 0)
    assert "robust scores on 24 questions" in printed and "orders: right in all 2" in printed
    assert "samples: pass@2" in printed and "95 % CI" in printed
    lo, hi = p["worst"]["total"]["ci"]
    assert f"[{100 * lo:.2f}, {100 * hi:.2f}]" in printed

    # the same seed, the same samples (the orders do not draw from torch's generator)
    again = ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(tiny_run.data), out=str(tmp_path / "again"),
                        batch_size=tiny_run.val_batch_size, samples=2)
    assert "permutations" not in again["robust"] and again["robust"]["samples"] == s
    for i in range(2):
        assert read_records(tmp_path / "again" / f"predictions.sample{i}.json") == samples[i]
    # an order file compares with the original: the same questions, choice order aside
    capsys.readouterr()
    cmp = compare_predictions(str(out / "predictions.json"), str(out / "predictions.order1.json"))
    assert cmp["paired"] == 24 and cmp["total"]["difference"] == pytest.approx(accs[1]["acc"] - accs[0]["acc"])


def test_eval_robust_settings_are_checked(tmp_path, tiny_run):
    ckpt, data = str(tiny_run.ckpts[2]), str(tiny_run.data)
    with pytest.raises(ValueError, match="--permutations 0: at least 1"):
        ev.evaluate(checkpoint=ckpt, data=data, out=str(tmp_path / "x"), permutations=0)
    with pytest.raises(ValueError, match="--temperature 0.0: must be > 0"):
        ev.evaluate(checkpoint=ckpt, data=data, out=str(tmp_path / "x"), samples=2, temperature=0.0)
    test = tmp_path / "data"
    shutil.copytree(tiny_run.data.parent, test)
    withheld = [{k: v for k, v in r.items() if k != "answer"} for r in read_records(test / "test-mini.json")]
    (test / "test-mini.json").write_text(json.dumps(withheld))
    with pytest.raises(DataError, match="no record has an answer: --permutations and --samples") as e:
        ev.evaluate(checkpoint=ckpt, data=str(test / "test-mini.json"), out=str(tmp_path / "x"), permutations=2)
    assert e.value.reason == "answers_withheld" and not (tmp_path / "x").exists()
