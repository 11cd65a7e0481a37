"""BenchmarkEvaluation (MMAU) through a real Trainer: logged per-domain accuracy, prediction file, re-scoring."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.task.question import Question
from r1aqa_pl.training.checkpointing import HFCheckpoint

score_records = MMAU().score_records

TASKS, LEVELS, SUBS = ("sound", "music", "speech"), ("easy", "medium", "hard"), ("Counting", "Instrumentation")


def make_questions(n: int) -> list[Question]:
    out = []
    for i in range(n):
        choices = ["C major", "C minor", "Man", "Woman"]
        answer = choices[i % 4]
        raw = {"id": f"q{i}", "audio_id": f"./a/{i}.wav", "question": f"Question {i}?", "choices": choices,
               "answer": answer, "task": TASKS[i % 3], "difficulty": LEVELS[(i // 3) % 3],
               "sub-category": SUBS[i % 2]}
        out.append(Question(id=f"q{i}", audio_path=raw["audio_id"], question=raw["question"], choices=choices,
                            answer=answer, domain=raw["task"], difficulty=raw["difficulty"],
                            sub_category=raw["sub-category"], dataset="MMAU", raw=raw))
    return out


def right(q: Question) -> bool:
    """The fake policy is right unless the question number is a multiple of 4 or 5."""
    i = int(q.id[1:])
    return i % 4 != 0 and i % 5 != 0


class QuestionSet(Dataset):
    def __init__(self, questions):
        self.questions = questions

    def __len__(self):
        return len(self.questions)

    def __getitem__(self, i):
        return self.questions[i]


def collate(questions):
    """Every fifth question has no audio (an audio-free ablation): still scored, and counted."""
    audio = [None if int(q.id[1:]) % 5 == 0 else np.zeros(160, dtype=np.float32) for q in questions]
    return {"questions": questions, "audio": audio}


class FakePolicy(LightningModule):
    """Implements the callback's protocol; answers in R1-AQA's format, right or with another choice."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def answer(self, questions, audio):
        assert len(questions) == len(audio)
        self.calls += 1
        texts = []
        for q in questions:
            wrong = next(c for c in q.choices if c != q.answer)
            texts.append(f"<think>listening</think> <answer> {q.answer if right(q) else wrong} </answer>")
        return texts

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):  # generation happens in the callback
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def expected_acc(questions: list[Question]) -> dict[str, float]:
    """Hand count of the fake policy's accuracy, per task / difficulty / sub-category / total."""
    hits, totals = defaultdict(int), defaultdict(int)
    for q in questions:
        for name in (q.domain, q.difficulty, f"sub/{q.sub_category}", "total"):
            totals[name] += 1
            hits[name] += right(q)
    return {f"acc/{k}": hits[k] / totals[k] for k in totals}


def loader(questions, batch_size=4):
    return DataLoader(QuestionSet(questions), batch_size=batch_size, collate_fn=collate)


def trainer(tmp_path, **kw):
    kw = {"accelerator": "cpu", "devices": 1, "logger": TensorBoardLogger(str(tmp_path), name="run"),
          "enable_progress_bar": False, "enable_model_summary": False, "callbacks": [BenchmarkEvaluation()], **kw}
    return Trainer(default_root_dir=str(tmp_path), **kw)


def check_file(path: Path, questions: list[Question], logged: dict, stage: str) -> None:
    records = json.loads(path.read_text())
    assert [r["id"] for r in records] == [q.id for q in questions]
    assert all(r["model_output"].startswith("<think>") and r["model_prediction"] in r["choices"] for r in records)
    assert {k for k in records[0]} == {*questions[0].raw, "model_output", "model_prediction"}
    res = score_records(records)
    assert logged[f"{stage}/acc/total"] == pytest.approx(res["total"]["acc"])
    for task, cell in res["task"].items():
        assert logged[f"{stage}/acc/{task}"] == pytest.approx(cell["acc"])
    for level, cell in res["difficulty"].items():
        assert logged[f"{stage}/acc/{level}"] == pytest.approx(cell["acc"])
    for sub, cell in res["sub-category"].items():
        assert logged[f"{stage}/acc/sub/{sub}"] == pytest.approx(cell["acc"])


def test_validate_logs_per_domain_and_writes_predictions(tmp_path):
    questions = make_questions(30)
    model, t = FakePolicy(), trainer(tmp_path, limit_val_batches=5)  # 5 batches of 4: the first 20
    (logged,) = t.validate(model, dataloaders=loader(questions))
    seen = questions[:20]
    assert model.calls == 5
    for key, value in expected_acc(seen).items():
        assert logged[f"val/{key}"] == pytest.approx(value), key
    assert logged["val/count/total"] == 20 and logged["val/count/no_audio"] == 4  # q0, q5, q10, q15
    assert 0 < logged["val/acc/total"] < 1
    path = Path(t.log_dir) / "predictions" / "val_step0.json"
    check_file(path, seen, logged, "val")
    assert list(Path(t.log_dir).glob("events.out.tfevents.*"))  # went to TensorBoard


def test_test_stage_uses_test_prefix(tmp_path):
    questions = make_questions(12)
    t = trainer(tmp_path)
    (logged,) = t.test(FakePolicy(), dataloaders=loader(questions, batch_size=5))
    assert not any(k.startswith("val/") for k in logged)
    assert logged["test/acc/total"] == pytest.approx(expected_acc(questions)["acc/total"])
    check_file(Path(t.log_dir) / "predictions" / "test_step0.json", questions, logged, "test")


def test_fit_monitors_val_acc_and_skips_sanity_check(tmp_path):
    questions = make_questions(16)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc/total", mode="max")
    t = trainer(tmp_path, max_epochs=1, limit_train_batches=3, num_sanity_val_steps=1,
                callbacks=[BenchmarkEvaluation(), ckpt])
    model = FakePolicy()
    t.fit(model, train_dataloaders=DataLoader([0] * 3, batch_size=1), val_dataloaders=loader(questions))
    files = sorted(p.name for p in (Path(t.log_dir) / "predictions").iterdir())
    assert files == ["val_step3.json", "val_step3.provenance.json"]  # the sanity check neither writes nor logs
    assert model.calls == 1 + 4  # one sanity batch + the real pass
    assert ckpt.best_model_score.item() == pytest.approx(expected_acc(questions)["acc/total"])


@pytest.mark.parametrize("every, steps, best_at", [(1, 3, 1), (2, 3, 2)])
def test_last_checkpoint_is_the_latest_state(tmp_path, every, steps, best_at):
    """``last`` follows every validation (the score never improves after the first) and the end of
    training (the last step is not validated); the top-k checkpoint stays the best one."""
    ckpt = HFCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc/total", mode="max", save_top_k=1,
                        save_last=True, filename="step{step}", auto_insert_metric_name=False)
    t = trainer(tmp_path, max_steps=steps, val_check_interval=every, check_val_every_n_epoch=None,
                num_sanity_val_steps=0, callbacks=[BenchmarkEvaluation(write_predictions=False), ckpt])
    t.fit(FakePolicy(), train_dataloaders=DataLoader([0] * 8, batch_size=1), val_dataloaders=loader(make_questions(8)))
    saved = {p.name: torch.load(p, weights_only=False)["global_step"] for p in (tmp_path / "ckpt").glob("*.ckpt")}
    assert saved == {f"step{best_at}.ckpt": best_at, "last.ckpt": steps}


def test_wrong_number_of_answers_is_an_error(tmp_path):
    class Short(FakePolicy):
        def answer(self, questions, audio):
            return super().answer(questions, audio)[:-1]

    with pytest.raises(RuntimeError, match="returned 3 texts for 4 questions"):
        trainer(tmp_path).validate(Short(), dataloaders=loader(make_questions(4)))


def test_duplicates_are_counted_but_written_once(tmp_path):
    """What a padding DistributedSampler does: a question seen twice counts twice, with a warning."""
    questions = make_questions(6)
    t = trainer(tmp_path)
    with pytest.warns(UserWarning, match="1 duplicated question"):
        (logged,) = t.validate(FakePolicy(), dataloaders=loader(questions + questions[:1]))
    assert logged["val/count/total"] == 7
    records = json.loads((Path(t.log_dir) / "predictions" / "val_step0.json").read_text())
    assert [r["id"] for r in records] == [q.id for q in questions]


class DestroyProcessGroup(Callback):
    """Ends a spawned worker's gloo process group before the worker returns (after its last collective).

    Lightning destroys the process group at exit only for NCCL. Otherwise ProcessGroupGloo's threads still run while
    the worker's interpreter shuts down, and one that frees a tensor owning a Python object then needs the GIL:
    CPython ends that thread and the process aborts ("terminate called without an active exception")."""

    def teardown(self, trainer, pl_module, stage):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_ddp_spawn_two_processes_exact(tmp_path):
    questions = make_questions(24)
    t = trainer(tmp_path, devices=2, strategy="ddp_spawn", callbacks=[BenchmarkEvaluation(), DestroyProcessGroup()])
    (logged,) = t.validate(FakePolicy(), dataloaders=loader(questions, batch_size=3))
    for key, value in expected_acc(questions).items():
        assert logged[f"val/{key}"] == pytest.approx(value), key
    assert logged["val/count/total"] == 24
    path = next((tmp_path / "run").glob("version_*/predictions/val_step0.json"))
    records = json.loads(path.read_text())
    assert sorted(r["id"] for r in records) == sorted(q.id for q in questions)  # gathered from both ranks
    assert score_records(records)["total"]["acc"] == pytest.approx(logged["val/acc/total"])


# ---------------------------------------------------------------- the logged numbers are `r1aqa score`'s

class Answers(LightningModule):
    """Answers each question with the text given for its id, inside R1-AQA's answer tags."""

    def __init__(self, texts: dict[str, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.texts = texts

    def answer(self, questions, audio):
        return [f"<think>hm</think><answer>{self.texts[q.id]}</answer>" for q in questions]

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass


def validate_file(tmp_path: Path, data: Path, texts: dict[str, str], resamples: int = 200, seed: int = 5):
    """``trainer.validate`` on a benchmark file (no audio) with the callback's intervals: (logged, the records of the
    prediction file it wrote)."""
    from r1aqa_pl.data.datamodule import AudioQADataModule
    from r1aqa_pl.task.files import read_records

    cb = BenchmarkEvaluation(dirpath=str(tmp_path / "pred"), bootstrap=resamples, bootstrap_seed=seed)
    t = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                callbacks=[cb])
    dm = AudioQADataModule(val_file=str(data), with_audio=False, val_batch_size=3)
    (logged,) = t.validate(Answers(texts), datamodule=dm, verbose=False)
    return logged, read_records(cb.written[None])


def assert_logged_is_score(bench, logged: dict, result: dict) -> None:
    """Every logged accuracy and interval is the scorer's cell, and no other cell is logged."""
    cells = {"total": result["total"], **{g.key(n): c for g in bench.groups for n, c in result[g.name].items()}}
    acc = {k.removeprefix("val/acc/"): v for k, v in logged.items() if k.startswith("val/acc/")}
    assert acc.keys() == cells.keys()
    for key, c in cells.items():
        assert acc[key] == pytest.approx(c["acc"]), key
        lo, hi = c["ci"]  # the same questions, in the same order, resampled with the same seed
        assert (logged[f"val/ci_low/{key}"], logged[f"val/ci_high/{key}"]) == (pytest.approx(lo), pytest.approx(hi))
    assert logged["val/count/total"] == result["scored"]
    assert logged["val/count/left_out"] == result["left_out"]["records"]


def test_mmau_pro_logs_what_score_gives(tmp_path):
    """Multiple choice by the string rule, instruction following by its rules, open questions left out."""
    from test_mmau_pro import MIXED

    from r1aqa_pl.benchmarks import get
    from r1aqa_pl.benchmarks.mmau_pro import write_jsonl

    records = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED]
    texts = {r["id"]: r.get("model_prediction") or "piano" for r in MIXED}  # pro-3 (piano): right
    logged, preds = validate_file(tmp_path, write_jsonl(records, tmp_path / "mmau-pro.jsonl"), texts)
    assert [p["model_prediction"] for p in preds] == [texts[r["id"]] for r in records]
    bench = get("mmau_pro")
    result = bench.score_records(preds, bootstrap=200, seed=5)
    assert_logged_is_score(bench, logged, result)
    # by hand: multiple choice pro-0, 2, 3 right, pro-1 wrong (3/4); instruction following pro-4, 6 pass, pro-5
    # fails (2/3); the open pro-7, 8 left out (they were logged as wrong: 3/9 in total, 0/3 instruction following)
    assert logged["val/acc/total"] == pytest.approx(5 / 7) and logged["val/count/total"] == 7
    assert logged["val/count/left_out"] == 2 and result["left_out"]["by_reason"] == {"open_not_scored_locally": 2}
    assert logged["val/acc/instruction following"] == pytest.approx(2 / 3) and "val/acc/open" not in logged
    assert logged["val/acc/sound"] == 0.5 and logged["val/acc/music"] == 1.0
    assert logged["val/acc/sub/events"] == 0.5 and logged["val/acc/sub/timbre"] == 1.0
    assert logged["val/acc/sub/other"] == pytest.approx(2 / 3)  # the instruction-following items have no sub-cat


def test_mmsu_logs_what_score_gives(tmp_path):
    """Answers the official letter rule cannot read are left out of the logged numbers, as `r1aqa score` leaves
    them out (they were counted as wrong: 2/8)."""
    from test_mmsu import GROUPS, ITEMS, item, official, write_jsonl

    from r1aqa_pl.benchmarks import get

    records = [item(i, *ITEMS[i % 6], *GROUPS[i % 4]) for i in range(8)]
    texts = {
        "mmsu-0": "C. cow",  # right (Perception/Linguistics)
        "mmsu-1": "no idea",  # no letter: left out
        "mmsu-2": "The answer is B.",  # the second-to-last character: B, yes: right (Reasoning/Linguistics)
        "mmsu-3": "c. rising",  # lower case: left out
        "mmsu-4": "None",  # no letter but counted: wrong (Perception/Linguistics)
        "mmsu-5": "A. None",  # the choice "None", not calm: wrong (Perception/Paralinguistics)
        "mmsu-6": "d",  # one lower-case character: left out
        "mmsu-7": "B",  # an empty choice: wrong (Reasoning/Paralinguistics)
    }
    logged, preds = validate_file(tmp_path, write_jsonl(tmp_path / "mmsu.jsonl", records), texts)
    assert [p["response"] for p in preds] == list(texts.values())
    bench = get("mmsu")
    result = bench.score_records(preds, bootstrap=200, seed=5)
    assert_logged_is_score(bench, logged, result)
    ref = official(preds)  # the official scorer's counting
    assert ref["overall"] == (2, 5) and ref["left_out"] == 3
    assert logged["val/acc/total"] == pytest.approx(2 / 5) and logged["val/count/total"] == 5
    assert logged["val/count/left_out"] == 3 and result["left_out"]["by_reason"] == {"no_letter": 3}
    assert logged["val/acc/Perception"] == pytest.approx(1 / 3) and logged["val/acc/Reasoning"] == 0.5
    assert logged["val/acc/Perception/Linguistics"] == 0.5 and logged["val/acc/Perception/Paralinguistics"] == 0.0
    assert logged["val/acc/Reasoning/Linguistics"] == 1.0 and logged["val/acc/Reasoning/Paralinguistics"] == 0.0
    assert logged["val/acc/sub/Reasoning/Phonology"] == 1.0 and logged["val/acc/sub/Perception/Semantics"] == 0.5
