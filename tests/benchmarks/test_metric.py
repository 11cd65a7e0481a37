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
