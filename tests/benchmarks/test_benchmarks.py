"""Benchmarks beyond one MMAU file: MMAR's scorer and layout, MMAU versions, the test-set submission,
several benchmarks validated in one run, the record beside each prediction file, check-data per benchmark."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from r1aqa_pl.benchmarks import benchmark_for, get
from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.cli import main
from r1aqa_pl.data.check import check_data
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.data.formats import read_questions
from r1aqa_pl.data.synth import synth
from r1aqa_pl.eval import runs
from r1aqa_pl.eval.score import score
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError

mmar = get("mmar")
ORIGINAL = Path(__file__).parents[2].parent / "shared" / "data" / "mmau" / "mmau-test-mini-original.json"


def mmar_record(i, modality, category, sub, answer, choices, pred=None, **extra):
    """A record in MMAR-meta.jsonl's layout, fields that scoring ignores included."""
    r = {"id": f"mmar-{i}", "audio_path": f"./audio/mmar-{i}.wav", "question": f"q{i}?", "choices": choices,
         "answer": answer, "modality": modality, "category": category, "sub-category": sub, "language": "en",
         "source": "youtube", "url": "https://example.invalid/x", "timestamp": "00:01-00:09", "thinking": "",
         "cue": "", "rubric": "", **extra}
    if pred is not None:
        r["answer_prediction"] = pred
    return r


HAND = [  # (record, right?) — each verdict by MMAU's token rule, worked out by hand
    (mmar_record(0, "sound", "Signal Layer", "Counting", "three", ["two", "three", "four"], "three"), True),
    # a choice with the answer's very tokens is not wrong; every answer token must be there ("a", "at")
    (mmar_record(1, "mix-sound-speech", "Semantic Layer", "Intent", "a dog barks at a man",
                 ["a dog barks at a man", "a man barks at a dog", "a cat meows"], "A man barks at a dog."), True),
    # shared words: "C" is in both keys; only "minor" is an incorrect token
    (mmar_record(2, "mix-sound-music", "Perception Layer", "Key", "C major", ["C major", "C minor"],
                 "It is in C major"), True),
    (mmar_record(3, "mix-sound-music", "Perception Layer", "Key", "C major", ["C major", "C minor"],
                 "C major or C minor"), False),
    (mmar_record(4, "mix-sound-music-speech", "Cultural Layer", "Genre", "jazz", ["jazz", "rock"], ""), False),
    (mmar_record(5, "music", "Cultural Layer", "Genre", "rock", ["jazz", "rock"], "<answer>rock</answer>"), True),
    (mmar_record(6, "speech", "Semantic Layer", "Intent", "yes", ["yes", "no"]), None),  # no prediction: skipped
]


def test_mmar_scorer_by_modality_category_and_sub_category():
    res = mmar.score_records([r for r, _ in HAND])
    assert (res["scored"], res["skipped"]) == (6, 1)
    assert res["total"]["correct"] == 4 and res["total"]["acc"] == pytest.approx(4 / 6)
    assert {m: (c["correct"], c["total"]) for m, c in res["modality"].items()} == {
        "sound": (1, 1), "music": (1, 1), "mix-sound-music": (1, 2), "mix-sound-speech": (1, 1),
        "mix-sound-music-speech": (0, 1)}
    assert list(res["modality"]) == ["sound", "music", "mix-sound-music", "mix-sound-speech", "mix-sound-music-speech"]
    assert {c: (v["correct"], v["total"]) for c, v in res["category"].items()} == {
        "Signal Layer": (1, 1), "Perception Layer": (1, 2), "Semantic Layer": (1, 1), "Cultural Layer": (1, 2)}
    assert res["sub-category"]["Genre"] == {"correct": 1, "total": 2, "acc": 0.5, "chance": 0.5, "ci": [0.0, 1.0]}
    # chance: 1/3, 2/3 (two choices carry the answer's tokens), 1/2, 1/2, 1/2, 1/2 over the six scored items
    assert res["total"]["chance"] == pytest.approx((1 / 3 + 2 / 3 + 4 / 2) / 6)
    for record, right in HAND[:-1]:
        assert mmar.is_correct(record["answer_prediction"], record["answer"], record["choices"]) is right
    assert not mmar.is_correct("dog barks man", HAND[1][0]["answer"], HAND[1][0]["choices"])


def test_mmar_prediction_file_scored_from_the_command_line(tmp_path, capsys):
    """The command the issue names, on a JSONL prediction file in MMAR's own layout."""
    f = tmp_path / "mmar-predictions.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r, _ in HAND), encoding="utf-8")
    main(["score", str(f), "--benchmark", "mmar", "--json", "true"])
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "mmar" and out["key"] == "answer_prediction" and out["version"] == "unknown"
    assert out["total"]["correct"] == 4 and out["modality"]["mix-sound-music"]["acc"] == 0.5
    assert set(out) >= {"modality", "category", "sub-category", "total"}
    main(["score", str(f), "--benchmark", "mmar"])
    table = capsys.readouterr().out
    assert "MMAR" in table and "mix-sound-music-speech" in table and "Cultural Layer" in table and "chance %" in table


def test_score_recognises_the_file_and_refuses_a_score_of_nothing(tmp_path, capsys):
    """Without --benchmark an MMAR file is scored as MMAR (not as MMAU: "0 scored, 7 skipped", exit 0); a --key
    that no record has exits 1 naming the key looked for and the prediction-like keys the records do have."""
    f = tmp_path / "mmar-predictions.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r, _ in HAND), encoding="utf-8")
    result = main(["score", str(f), "--json", "true"]) or json.loads(capsys.readouterr().out)
    assert (result["benchmark"], result["scored"], result["skipped"], result["total"]["correct"]) == ("mmar", 6, 1, 4)
    with pytest.raises(SystemExit) as e:
        main(["score", str(f), "--key", "answer_predicton"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {f}:file: 0 of 7 records scored: no record has the prediction key 'answer_predicton'; "
                   "prediction-like keys in the records: 'answer_prediction' (6 records): pass one with --key")
    plain = tmp_path / "mmar.jsonl"  # the benchmark's own file, no predictions at all
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer_prediction"}) + "\n"
                             for r, _ in HAND), encoding="utf-8")
    with pytest.raises(DataError, match="no prediction-like key in the records either"):
        score(str(plain))


def test_score_names_records_as_check_data_does(tmp_path, capsys):
    """A JSON-lines record is "line N" (1-based) in both commands, not "record N-1" in one of them."""
    f = tmp_path / "mmar.jsonl"
    records = [r for r, _ in HAND]
    records[3] = {**records[3], "answer": "C sharp"}  # not among its choices
    f.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(DataError, match=r"mmar\.jsonl:line 4: id=mmar-3: answer 'C sharp' is not one of"):
        score(str(f))
    check_data(val=str(f), decode=False)
    assert "mmar.jsonl:line 4: id=mmar-3: answer 'C sharp' is not one of" in capsys.readouterr().out


def test_mmau_versions_recognised(mmau_json, tmp_path):
    mmau = get("mmau")
    current, original = read_records(mmau_json), read_records(ORIGINAL)
    assert mmau.version(current) == "test-mini v05.15.25"
    assert mmau.version(original) == "test-mini (original, before v05.15.25)"
    # key order, indentation and extra fields do not matter; content does
    shuffled = [{**dict(reversed(list(r.items()))), "model_prediction": "x"} for r in reversed(current)]
    assert mmau.version(shuffled) == "test-mini v05.15.25"
    assert mmau.version(current[:999]) == "unknown"
    edited = [dict(r) for r in current]
    edited[5]["answer"] = (
        edited[5]["choices"][-1] if edited[5]["answer"] != edited[5]["choices"][-1] else edited[5]["choices"][0]
    )
    assert mmau.version(edited) == "unknown" and mmau.version(edited, "my-fix") == "my-fix"
    ids = {r["id"]: r for r in current}
    changed = [
        r
        for r in original
        if r["id"] in ids and any(r[k] != ids[r["id"]][k] for k in ("question", "choices", "answer"))
    ]
    assert len([r for r in original if r["id"] in ids]) == 894 and len(changed) == 258


def test_check_data_knows_each_benchmark(tmp_path, mmau_json, capsys):
    synth(str(tmp_path), n_train=0, n_test=0, seconds=0.5, n_mmar=14)
    (tmp_path / "audios" / "mmar_0003.wav").unlink()
    assert check_data(val=str(tmp_path / "mmar.jsonl")) == 1
    out = capsys.readouterr().out
    assert "benchmark: MMAR, version unknown" in out and "format: mmar; records: 14; usable: 13" in out
    assert "mix-sound-music-speech 2" in out and "1 missing_audio" in out and "mmar.jsonl:line 4" in out
    assert check_data(val=str(ORIGINAL), decode=False) == 1  # its audio is not shipped
    assert "benchmark: MMAU, version test-mini (original, before v05.15.25)" in capsys.readouterr().out
    test_split = tmp_path / "mmau-test.json"
    test_split.write_text(
        json.dumps([{k: v for k, v in r.items() if k != "answer"} for r in json.loads(mmau_json.read_text())[:3]])
    )
    check_data(val=str(test_split), decode=False)
    assert "answers withheld" in capsys.readouterr().out


# ---------------------------------------------------------------- several benchmarks in one run


class Oracle(LightningModule):
    """Right on every question whose number is not a multiple of 3 (a hand-countable accuracy)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    @staticmethod
    def right(q) -> bool:
        return int(re.findall(r"\d+", q.id)[-1]) % 3 != 0

    def answer(self, questions, audio):
        return [
            f"<answer>{q.answer if self.right(q) else next(c for c in q.choices if c != q.answer)}</answer>"
            for q in questions
        ]

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass


def test_two_benchmarks_in_one_validation(tmp_path):
    synth(str(tmp_path / "data"), n_train=0, n_test=12, seconds=0.5, n_mmar=20)
    files = {"mmau": str(tmp_path / "data" / "test-mini.json"), "mmar": str(tmp_path / "data" / "mmar.jsonl")}
    dm = AudioQADataModule(val_file=files, with_audio=False, val_batch_size=5)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(tmp_path), name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BenchmarkEvaluation(monitor="mmar")],
    )
    (logged, _) = trainer.validate(Oracle(), datamodule=dm, verbose=False)  # one dict per dataloader

    expected: dict[str, dict[str, list[int]]] = {
        "mmau": defaultdict(lambda: [0, 0]),
        "mmar": defaultdict(lambda: [0, 0]),
    }
    for label, path in files.items():
        for q in read_questions(path):
            for name in (q.domain, "total"):
                expected[label][name][0] += Oracle.right(q)
                expected[label][name][1] += 1
    for label, buckets in expected.items():
        for name, (c, t) in buckets.items():
            assert logged[f"val/{label}/acc/{name}"] == pytest.approx(c / t), (label, name)
    assert logged["val/mmar/count/total"] == 20 and logged["val/mmau/count/total"] == 12
    assert "val/mmar/acc/mix-sound-speech" in logged and "val/mmar/acc/sub/tempo" in logged
    assert logged["val/acc/total"] == logged["val/mmar/acc/total"] != logged["val/mmau/acc/total"]  # the monitor

    scalars = runs.load_scalars(tmp_path / "run")  # TensorBoard has both sets
    assert {"val/mmau/acc/sound", "val/mmar/acc/mix-music-speech", "val/acc/total"} <= set(scalars)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.log_dir, size_guidance={"tensors": 0}).Reload()
    texts = {t: events.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in events.Tags()["tensors"]}
    assert (
        texts["benchmarks/mmar/text_summary"].startswith("mmar unknown (") and "benchmarks/mmau/text_summary" in texts
    )

    pred_dir = Path(trainer.log_dir) / "predictions"
    mmar_file = pred_dir / "mmar" / "val_step0.jsonl"
    lines = mmar_file.read_text().splitlines()
    assert len(lines) == 20 and all("answer_prediction" in json.loads(x) for x in lines)
    assert mmar.score_records([json.loads(x) for x in lines])["total"]["acc"] == pytest.approx(
        logged["val/mmar/acc/total"]
    )
    assert (pred_dir / "mmau" / "val_step0.json").is_file()
    assert runs.prediction_files(tmp_path / "run") == [pred_dir / "mmau" / "val_step0.json"]
    assert runs.latest_predictions(tmp_path / "run", label="mmar") == mmar_file
    record = json.loads((pred_dir / "mmar" / "val_step0.provenance.json").read_text())
    assert (
        record["benchmark"] == "mmar"
        and record["version"] == "unknown"
        and record["prediction_key"] == "answer_prediction"
    )
    assert record["packages"]["torch"] == torch.__version__.split("+")[0] or record["packages"]["torch"].startswith(
        torch.__version__.split("+")[0]
    )
    assert "<answer>" in record["answer_extraction"]


def test_monitor_must_name_a_set_and_test_splits_are_refused(tmp_path, mmau_json):
    synth(str(tmp_path / "data"), n_train=0, n_test=6, seconds=0.5, n_mmar=7)
    files = {"mmau": str(tmp_path / "data" / "test-mini.json"), "mmar": str(tmp_path / "data" / "mmar.jsonl")}
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BenchmarkEvaluation(monitor="mmau-v2")],
    )
    with pytest.raises(ValueError, match=r"monitor='mmau-v2'.*\['mmau', 'mmar'\]"):
        trainer.validate(Oracle(), datamodule=AudioQADataModule(val_file=files, with_audio=False), verbose=False)
    test_split = tmp_path / "mmau-test.json"
    test_split.write_text(
        json.dumps([{k: v for k, v in r.items() if k != "answer"} for r in json.loads(mmau_json.read_text())[:4]])
    )
    with pytest.raises(DataError, match=r"mmau-test.json:file:.*no record has an answer.*r1aqa eval"):
        AudioQADataModule(val_file=str(test_split), with_audio=False).setup("validate")
    assert benchmark_for(test_split).name == "mmau" and [q.answer for q in read_questions(test_split)] == [""] * 4


def test_submission_for_a_test_split(tiny_run, tmp_path, capsys):
    """No answers: the submission file carries every record and its prediction; no accuracy is printed."""
    from r1aqa_pl.eval import evaluate as ev

    source = json.loads(tiny_run.data.read_text())[:10]
    test_split = tiny_run.data.parent / "test-split.json"
    test_split.write_text(
        json.dumps([{**{k: v for k, v in r.items() if k != "answer"}, "split": "test"} for r in source])
    )
    hf = tiny_run.ckpts[2].with_name(tiny_run.ckpts[2].stem + "_hf")
    results = ev.evaluate(checkpoint=str(hf), data=str(test_split), out=str(tmp_path / "ev"), batch_size=5)
    out = capsys.readouterr().out
    assert "NO score can be computed locally" in out and "acc %" not in out
    assert results["answers_withheld"] and results["answered"] == 10 and "total" not in results
    submission = json.loads((tmp_path / "ev" / "submission.json").read_text())
    assert [r["id"] for r in submission] == [r["id"] for r in source]
    assert all(set(r) == {*source[0]} - {"answer"} | {"split", "model_prediction"} for r in submission)
    assert all(isinstance(r["model_prediction"], str) for r in submission)
    record = json.loads((tmp_path / "ev" / "predictions.provenance.json").read_text())
    assert record["checkpoint"] == str(hf) and record["family"] == "qwen2_audio"
    assert record["decoding"]["strategy"] == "greedy" and source[0]["question"] in record["first_prompt"]


def test_eval_on_mmar_writes_its_layout(tiny_run, tmp_path, capsys):
    from r1aqa_pl.eval import evaluate as ev

    mmar_file = tiny_run.data.parent / "mmar.jsonl"
    hf = tiny_run.ckpts[2].with_name(tiny_run.ckpts[2].stem + "_hf")
    results = ev.evaluate(checkpoint=str(hf), data=str(mmar_file), out=str(tmp_path / "ev"), batch_size=10)
    assert results["benchmark"] == "mmar" and results["version"] == "unknown" and results["scored"] == 70
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert all(p["answer_prediction"] == p["model_prediction"] for p in preds)
    rescored = mmar.score_records(preds)
    assert rescored["total"] == results["total"] and set(results["modality"]) == set(rescored["modality"])
    table = capsys.readouterr().out
    assert "MMAR accuracy (answer_prediction), version unknown" in table and "chance %" in table


def test_eval_all_one_table_per_benchmark_file(tiny_run, tmp_path, monkeypatch, capsys):
    """Each checkpoint on each file, results in a subfolder per file, one table per file with its chance row."""
    from r1aqa_pl.eval import evaluate as ev

    files = [str(tiny_run.data), str(tiny_run.data.parent / "mmar.jsonl")]
    calls = []

    def fake(**kw):
        calls.append((Path(kw["checkpoint"]).name, Path(kw["data"]).name, Path(kw["out"]).name))
        bench = benchmark_for(kw["data"])
        records = read_records(kw["data"])
        result = bench.score_records([{**r, bench.prediction_key: r["choices"][0]} for r in records])
        return {"checkpoint": kw["checkpoint"], "step": len(calls), "version": "unknown", **result}

    monkeypatch.setattr(ev, "evaluate", fake)
    tables = ev.evaluate_all(run=str(tiny_run.run), data=files)
    n = len(ev.find_checkpoints(tiny_run.run))
    assert list(tables) == files and all(len(rows) == n for rows in tables.values())
    assert sorted({c[1:] for c in calls}) == [("mmar.jsonl", "mmar"), ("test-mini.json", "test-mini")]
    out = capsys.readouterr().out
    assert "MMAU (unknown), accuracy %" in out and "MMAR (unknown), accuracy %" in out
    assert "mix-sound-" in out and out.count("chance (uniform guess)") == 2
