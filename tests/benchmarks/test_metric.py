"""BenchmarkAccuracy on MMAU: hand-computed buckets, agreement with the offline scorer, exactness under 2-process
DDP."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from r1aqa_pl.benchmarks.metric import BenchmarkAccuracy
from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.task.question import Question

mmau = MMAU()
score_records = mmau.score_records

MMAU = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmau" / "mmau-test-mini.json"


def q(task, difficulty, sub, answer="Man", choices=("Man", "Woman")):
    return Question(
        id="x",
        audio_path=None,
        question="?",
        choices=list(choices),
        answer=answer,
        domain=task,
        difficulty=difficulty,
        sub_category=sub,
    )


def mmau_questions() -> list[Question]:
    """The real test-mini when present (plus a few unknown names), else a synthetic stand-in."""
    if MMAU.exists():
        records = json.loads(MMAU.read_text())
    else:
        rng = random.Random(0)
        records = [
            {
                "id": str(i),
                "question": "?",
                "choices": ["a b", "a c", "d"],
                "answer": rng.choice(["a b", "d"]),
                "task": rng.choice(["sound", "music", "speech"]),
                "difficulty": rng.choice(["easy", "medium", "hard"]),
                "sub-category": f"S{rng.randrange(5)}",
            }
            for i in range(300)
        ]
    records[1]["task"], records[2]["difficulty"], records[3]["sub-category"] = "animal", "", "Brand New"
    return [
        Question(
            id=r["id"],
            audio_path=None,
            question=r["question"],
            choices=r["choices"],
            answer=r["answer"],
            domain=r["task"],
            difficulty=r["difficulty"],
            sub_category=r["sub-category"],
            raw=r,
        )
        for r in records
    ]


def predictions(questions: list[Question]) -> list[str]:
    """Right, wrong (first other choice), empty and tagged answers, mixed by index."""
    out = []
    for i, x in enumerate(questions):
        wrong = next(c for c in x.choices if c != x.answer)
        out.append([x.answer, wrong, "", f"I think {x.answer}."][i % 4 if i % 7 else 1])
    return out


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_hand_computed_buckets():
    m = BenchmarkAccuracy(mmau, {"sub-category": ["A", "B"]})
    qs = [
        q("sound", "easy", "A"),
        q("sound", "hard", "A"),
        q("music", "easy", "B"),
        q("bird", "extreme", "Z"),
        q("speech", "", ""),
    ]
    m.update(["man", "woman", "Man.", "the man", ""], qs)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["acc/sound"] == 0.5 and out["count/sound"] == 2
    assert out["acc/music"] == 1.0 and out["acc/speech"] == 0.0
    assert out["acc/other_task"] == 1.0 and out["count/other_task"] == 1  # unknown task: counted
    assert out["count/other_difficulty"] == 2 and out["correct/other_difficulty"] == 1
    assert out["acc/easy"] == 1.0 and out["acc/hard"] == 0.0 and "acc/medium" not in out  # empty bucket left out
    assert out["acc/sub/A"] == 0.5 and out["acc/sub/B"] == 1.0 and out["count/sub/other"] == 2
    assert out["acc/total"] == pytest.approx(3 / 5) and out["count/total"] == 5
    assert isinstance(m.compute()["acc/total"], torch.Tensor)
    m.reset()
    assert m.compute()["count/total"] == 0 and m.compute()["acc/total"] == 0
    with pytest.raises(ValueError):
        m.update(["a"], qs)


def test_from_questions_and_agreement_with_scorer():
    qs = mmau_questions()
    m = BenchmarkAccuracy.from_questions(mmau, qs)
    assert m.names["task"][:3] == ["sound", "music", "speech"] and "animal" in m.names["task"]
    assert "" not in m.names["difficulty"] and "Brand New" in m.names["sub-category"]
    preds = predictions(qs)
    m.update(preds[:500], qs[:500])
    m.update(preds[500:], qs[500:])  # accumulates across batches
    records = [{**x.raw, "model_prediction": p} for x, p in zip(qs, preds)]
    expected = score_records(records, bootstrap=0)  # the counts (the metric keeps no per-question verdicts)
    result = m.result()
    chance = {(g, n): c.pop("chance") for g in ("task", "difficulty", "sub-category") for n, c in result[g].items()}
    assert chance == {
        (g, n): pytest.approx(c.pop("chance"))
        for g in ("task", "difficulty", "sub-category")
        for n, c in expected[g].items()
    }
    assert result["total"].pop("chance") == pytest.approx(expected["total"].pop("chance"))
    assert result == expected
    assert m.compute()["acc/total"].item() == pytest.approx(expected["total"]["acc"])


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, questions, preds) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = BenchmarkAccuracy.from_questions(mmau, questions)  # whole set on every rank: same state shapes
        m.update(preds[rank::world], questions[rank::world])
        torch.save({k: v.clone() for k, v in m.compute().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes: ~8 s on 2 cores
def test_ddp_two_processes_equals_single(tmp_path):
    qs = mmau_questions()
    preds = predictions(qs)
    single = BenchmarkAccuracy.from_questions(mmau, qs)
    single.update(preds, qs)
    expected = single.compute()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), qs, preds), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        for k in expected:  # counts exactly; the chance sums (floats) up to the order of the additions
            same = (
                torch.allclose(got[k], expected[k], rtol=1e-12)
                if k.startswith("chance/")
                else torch.equal(got[k], expected[k])
            )
            assert same, k


# ---------------------------------------------------------------- each question by its benchmark's own verdict

def counts(result: dict, groups) -> dict:
    """What the metric and the scorer must agree on: scored, left out, and every cell's correct / total / acc."""
    cells = {"total": result["total"], **{(g.name, n): c for g in groups for n, c in result[g.name].items()}}
    return {"scored": result["scored"], "skipped": result["skipped"], "left_out": result.get("left_out"),
            **{k: (c["correct"], c["total"], pytest.approx(c["acc"])) for k, c in cells.items()}}


def mmau_pro_questions(tmp_path) -> tuple[list[Question], list[str], list[dict]]:
    """MMAU-Pro's mixed file (multiple choice, instruction following, open) read as questions, their predictions
    and the prediction file's records."""
    from test_mmau_pro import MIXED

    from r1aqa_pl.benchmarks.mmau_pro import write_jsonl
    from r1aqa_pl.data.formats import read_questions

    records = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED]
    questions = read_questions(write_jsonl(records, tmp_path / "mmau-pro.jsonl"))
    preds = [r.get("model_prediction") or "piano" for r in MIXED]  # pro-3: piano, right
    return questions, preds, [{**r, "model_prediction": p} for r, p in zip(records, preds)]


def test_mmau_pro_counted_as_the_scorer_counts(tmp_path):
    """Instruction following by its rules (not as multiple choice without choices: wrong), open questions left
    out without a judge and counted overall / 5 with one."""
    from test_mmau_pro import FixedReply

    from r1aqa_pl.benchmarks.mmau_pro import MMAUPro

    questions, preds, records = mmau_pro_questions(tmp_path)
    bench = MMAUPro()
    m = BenchmarkAccuracy.from_questions(bench, questions)
    m.update(preds[:4], questions[:4])
    m.update(preds[4:], questions[4:])
    assert counts(m.result(), bench.groups) == counts(bench.score_records(records, bootstrap=0), bench.groups)
    out = {k: v.item() for k, v in m.compute().items()}
    # multiple choice 3/4 (pro-1 wrong), instruction following 2/3 (pro-5 fails), the open pro-7, pro-8 left out
    assert out["acc/total"] == pytest.approx(5 / 7) and out["count/total"] == 7 and out["count/left_out"] == 2
    assert out["left_out/open_not_scored_locally"] == 2 and "count/open" not in out
    assert out["acc/instruction following"] == pytest.approx(2 / 3) and out["acc/sub/other"] == pytest.approx(2 / 3)
    assert [v.ok for v in m.verdicts(preds, questions)] == [True, False, True, True, True, False, True, None, None]

    judged = MMAUPro(judge=FixedReply("CORRECTNESS: 4\nRELEVANCE: 5\nCOMPLETENESS: 3\nCLARITY: 4\nOVERALL: 3"))
    m = BenchmarkAccuracy.from_questions(judged, questions)
    m.update(preds, questions)
    result = m.result()
    assert counts(result, judged.groups) == counts(judged.score_records(records, bootstrap=0), judged.groups)
    assert result["total"]["correct"] == 6.6 and result["total"]["total"] == 9  # 5 + 2 x 0.8: a fraction counts
    assert result["category"]["open"]["correct"] == 1.6 and result["skipped"] == 0


def mmsu_questions(tmp_path) -> tuple[list[Question], list[str], list[dict]]:
    """Eight MMSU questions, three answered in ways the official letter rule cannot read."""
    from test_mmsu import GROUPS, ITEMS, item, write_jsonl

    from r1aqa_pl.data.formats import read_questions

    records = [item(i, *ITEMS[i % 6], *GROUPS[i % 4]) for i in range(8)]
    questions = read_questions(write_jsonl(tmp_path / "mmsu.jsonl", records))
    preds = ["C. cow", "no idea", "The answer is B.", "c. rising", "None", "A. None", "d", "B"]
    return questions, preds, [{**r, "response": p} for r, p in zip(records, preds)]


def test_mmsu_leaves_out_what_the_official_rule_cannot_read(tmp_path):
    from r1aqa_pl.benchmarks import get

    bench = get("mmsu")
    questions, preds, records = mmsu_questions(tmp_path)
    m = BenchmarkAccuracy.from_questions(bench, questions)
    m.update(preds, questions)
    expected = bench.score_records(records, bootstrap=0)
    assert counts(m.result(), bench.groups) == counts(expected, bench.groups)
    # right: 0, 2; wrong: 4 (no letter, counted), 5, 7 (an empty choice); left out: 1, 3, 6 (no letter)
    assert expected["total"]["correct"] == 2 and expected["scored"] == 5
    assert m.result()["left_out"]["by_reason"] == {"no_letter": 3}
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["acc/total"] == pytest.approx(2 / 5) and out["acc/Perception"] == pytest.approx(1 / 3)
    assert out["acc/Reasoning/Paralinguistics"] == 0.0 and out["count/Reasoning/Paralinguistics"] == 1


def test_a_question_without_its_record_falls_back_to_is_correct():
    """A synthetic question (no source record the rule can read) is scored by ``is_correct`` on its answer and
    choices: for MMSU an unreadable answer is then wrong, not left out."""
    from r1aqa_pl.benchmarks import get

    bench = get("mmsu")
    qs = [Question(id=str(i), audio_path=None, question="?", choices=["A. dog", "C. cat"], answer="C. cat",
                   domain="Perception/Linguistics", category="Perception", sub_category="Perception/Semantics")
          for i in range(3)]
    m = BenchmarkAccuracy.from_questions(bench, qs)
    m.update(["C. cat", "no idea", "A"], qs)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["count/total"] == 3 and out["correct/total"] == 1 and out["count/left_out"] == 0


def _ddp_worker_for(rank: int, world: int, port: int, out_dir: str, name: str, questions, preds) -> None:
    from r1aqa_pl.benchmarks import get

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = BenchmarkAccuracy.from_questions(get(name), questions)
        m.update(preds[rank::world], questions[rank::world])
        torch.save({k: v.clone() for k, v in m.compute().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_ddp_left_out_counts_summed_across_ranks(tmp_path):
    """MMSU questions left out on either rank: the synced counts are the single process's, ``left_out`` too."""
    from r1aqa_pl.benchmarks import get

    qs, preds, _ = mmsu_questions(tmp_path)
    single = BenchmarkAccuracy.from_questions(get("mmsu"), qs)
    single.update(preds, qs)
    expected = single.compute()
    assert expected["count/left_out"] == 3 and expected["left_out/no_letter"] == 3
    mp.spawn(_ddp_worker_for, args=(2, _free_port(), str(tmp_path), "mmsu", qs, preds), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == expected.keys()
        assert all(torch.allclose(got[k], expected[k], rtol=1e-12) for k in expected)
