"""``r1aqa eval`` / ``eval-all`` / ``ask`` on a tiny GRPO run (``tiny_run`` in conftest.py).

The central check: whatever form a checkpoint takes (Lightning .ckpt, its ``_hf`` export, a DeepSpeed
folder), evaluating it gives exactly the predictions and accuracies the training run logged at that
checkpoint's step, and ``predictions.json`` re-scored by the MMAU scorer gives ``results.json``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.eval import checkpoints as ck
from r1aqa_pl.eval import evaluate as ev
from r1aqa_pl.eval import runs
from r1aqa_pl.eval.ask import ask
from r1aqa_pl.task.files import read_records

score_records = MMAU().score_records

REPO = Path(__file__).parents[2]


# ---------------------------------------------------------------- helpers

def run_predictions(tiny_run, step: int) -> list[dict]:
    """What BenchmarkEvaluation wrote during training at ``step``."""
    return read_records(tiny_run.log_dir / "predictions" / f"val_step{step}.json")


def logged_total(tiny_run, step: int) -> float:
    """val/acc/total as TensorBoard holds it at optimizer ``step`` (the checkpoint's global step)."""
    points = dict(runs.load_scalars(tiny_run.run)["val/acc/total"])
    assert sorted(points) == sorted(runs.file_step(p) for p in runs.prediction_files(tiny_run.run))
    return points[step]


def check_against_run(out: Path, results: dict, tiny_run, step: int) -> None:
    """predictions.json re-scores to results.json, and both equal what the run logged at ``step``."""
    preds = read_records(out / "predictions.json")
    assert json.loads((out / "results.json").read_text()) == results
    rescored = score_records(preds)
    for key in ("total", "task", "difficulty", "sub-category", "scored", "skipped"):
        assert rescored[key] == results[key], key
    # the same generations as the run's own validation at that step
    by_id = {r["id"]: r for r in run_predictions(tiny_run, step)}
    assert len(preds) == len(by_id) == 24
    for r in preds:
        assert r["model_output"] == by_id[r["id"]]["model_output"]
        assert r["model_prediction"] == by_id[r["id"]]["model_prediction"]
    assert results["total"] == score_records(run_predictions(tiny_run, step))["total"]
    assert results["total"]["acc"] == pytest.approx(logged_total(tiny_run, step), abs=1e-6)
    assert results["logged"]["val/acc/total"] == pytest.approx(results["total"]["acc"], abs=1e-6)
    assert results["not_scored"] == {} and results["records"] == 24


# ---------------------------------------------------------------- checkpoint kinds

def test_checkpoint_kinds_and_default_out(tmp_path, tiny_run):
    ckpt = tiny_run.ckpts[2]
    hf = ckpt.with_name(ckpt.stem + "_hf")
    ds = tmp_path / "ds.ckpt"
    (ds / "checkpoint").mkdir(parents=True)
    assert ck.checkpoint_kind(ckpt) == "lightning" and ck.default_out(ckpt) == ckpt.with_name(ckpt.stem + "_eval")
    assert ck.checkpoint_kind(hf) == "hf" and ck.default_out(hf) == hf / "eval"
    assert ck.checkpoint_kind(ds) == "deepspeed" and ck.default_out(ds) == ds / "eval"
    assert ck.checkpoint_kind("Qwen/Qwen2-Audio-7B-Instruct") == "hf"
    assert ck.default_out("Qwen/Qwen2-Audio-7B-Instruct") == Path("eval_Qwen__Qwen2-Audio-7B-Instruct")
    for bad in (tmp_path / "missing.ckpt", tmp_path, "./nope", "/abs/nope"):
        with pytest.raises(FileNotFoundError):
            ck.checkpoint_kind(bad)
    assert ck.checkpoint_step(ckpt) == 2 and ck.checkpoint_step(hf) == 2
    assert ck.checkpoint_step(tmp_path / "x_step300_hf") == 300
    expected = ["last_hf", *(p.stem + "_hf" for p in tiny_run.ckpts.values())]
    assert sorted(p.name for p in ev.find_checkpoints(tiny_run.run)) == sorted(expected)


@pytest.mark.parametrize("step", [2, 4])
def test_lightning_ckpt_matches_run(tmp_path, tiny_run, step, capsys):
    out = tmp_path / "eval"
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[step]), data=str(tiny_run.data), out=str(out),
                          batch_size=tiny_run.val_batch_size)
    assert results["kind"] == "lightning" and results["step"] == step
    assert results["max_new_tokens"] == 8  # the run's eval_max_new_tokens
    check_against_run(out, results, tiny_run, step)
    printed = capsys.readouterr().out
    assert "MMAU accuracy" in printed and "all 24 records scored" in printed


def test_hf_folder_matches_run(tmp_path, tiny_run):
    hf = tiny_run.ckpts[4].with_name(tiny_run.ckpts[4].stem + "_hf")
    out = tmp_path / "eval"
    results = ev.evaluate(checkpoint=str(hf), data=str(tiny_run.data), out=str(out), batch_size=tiny_run.val_batch_size)
    # prompt template and evaluation length come from the .ckpt beside the export
    assert results["kind"] == "hf" and results["step"] == 4 and results["max_new_tokens"] == 8
    check_against_run(out, results, tiny_run, 4)


@pytest.mark.parametrize("kind", ["lightning", "hf"])
def test_dtype_override(tmp_path, tiny_run, kind):
    """``--dtype bfloat16`` loads any checkpoint kind in bf16 (a hub model is float32 by default);
    a dtype outside float32 / bfloat16 / float16 is a named error."""
    ckpt = tiny_run.ckpts[4]
    path = ckpt if kind == "lightning" else ckpt.with_name(ckpt.stem + "_hf")
    module, info = ck.load_for_eval(str(path), dtype="bfloat16")
    assert info["kind"] == kind and {p.dtype for p in module.policy.parameters()} == {torch.bfloat16}
    results = ev.evaluate(checkpoint=str(path), data=str(tiny_run.data), out=str(tmp_path / "bf16"),
                          batch_size=tiny_run.val_batch_size, dtype="bfloat16")
    assert results["total"]["total"] == len(read_records(tiny_run.data))
    with pytest.raises(ValueError, match="policy.dtype = 'bf16': one of float32, bfloat16, float16"):
        ck.load_for_eval(str(path), dtype="bf16")


def test_ckpt_falls_back_to_hf_export_when_the_base_model_is_gone(tmp_path, tiny_run):
    """A checkpoint moved to another machine: its model_name_or_path no longer exists, the _hf beside it serves."""
    src = tiny_run.ckpts[2]
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["policy"]["model_name_or_path"] = str(tmp_path / "gone")
    moved = tmp_path / src.name
    torch.save(ckpt, moved)
    shutil.copytree(src.with_name(src.stem + "_hf"), tmp_path / (src.stem + "_hf"))
    results = ev.evaluate(checkpoint=str(moved), data=str(tiny_run.data), batch_size=tiny_run.val_batch_size)
    assert results["model"] == str(tmp_path / (src.stem + "_hf"))
    check_against_run(ck.default_out(moved), results, tiny_run, 2)


def test_deepspeed_folder_is_converted(tmp_path, tiny_run, monkeypatch):
    """A DeepSpeed folder goes through Lightning's ZeRO -> fp32 converter (stubbed here with the file
    it would produce; tests/_make_deepspeed_ckpt.py + the slow test below run the real one)."""
    ds = tmp_path / "step2.ckpt"
    (ds / "checkpoint").mkdir(parents=True)
    (ds / "latest").write_text("checkpoint")
    calls = []

    def fake_convert(checkpoint_dir, output_file, tag=None):
        calls.append((checkpoint_dir, tag))
        state = torch.load(tiny_run.ckpts[2], map_location="cpu", weights_only=False)
        state = {k: v for k, v in state.items() if k != "optimizer_states"}
        torch.save(state, output_file)
        return state

    monkeypatch.setattr(ck, "convert_zero_checkpoint_to_fp32_state_dict", fake_convert)
    results = ev.evaluate(checkpoint=str(ds), data=str(tiny_run.data), batch_size=tiny_run.val_batch_size)
    assert calls == [(str(ds), None)]
    assert results["kind"] == "deepspeed" and results["step"] == 2
    check_against_run(ds / "eval", results, tiny_run, 2)
    assert not list(tmp_path.glob(".r1aqa_fp32_*"))  # the temporary fp32 file is gone


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_real_deepspeed_zero_checkpoint(tmp_path, tiny_run, stage):
    """A real ZeRO-2/3 folder written by a DeepSpeed engine (CPU, gloo) and converted for real."""
    pytest.importorskip("deepspeed")
    ds = tmp_path / "step2.ckpt"
    res = subprocess.run([sys.executable, str(REPO / "tests" / "_make_deepspeed_ckpt.py"), str(tiny_run.ckpts[2]),
                          str(ds), str(stage)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (ds / "latest").is_file() and (ds / "checkpoint").is_dir()
    results = ev.evaluate(checkpoint=str(ds), data=str(tiny_run.data), batch_size=tiny_run.val_batch_size)
    assert results["kind"] == "deepspeed" and results["step"] == 2
    check_against_run(ds / "eval", results, tiny_run, 2)


def test_cli_subprocess(tmp_path, tiny_run):
    """What ``make eval CKPT=... DATA=... OUT=...`` runs."""
    out = tmp_path / "cli_eval"
    cmd = [sys.executable, "-m", "r1aqa_pl", "eval", "--checkpoint", str(tiny_run.ckpts[2]),
           "--data", str(tiny_run.data), "--out", str(out), "--batch_size", str(tiny_run.val_batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MMAU accuracy" in res.stdout and "total" in res.stdout and "all 24 records scored" in res.stdout
    check_against_run(out, json.loads((out / "results.json").read_text()), tiny_run, 2)


@pytest.mark.parametrize("command, flags", [("eval", ["--checkpoint", "--data", "--audio_dir", "--out", "--batch_size",
                                                     "--max_new_tokens", "--limit", "--with_audio"]),
                                            ("eval-all", ["--run", "--data", "--batch_size", "--force"]),
                                            ("ask", ["--model", "--audio", "--question", "--choices"])])
def test_cli_flags(command, flags, capsys):
    """The Makefile passes every argument as a flag (``--checkpoint X``), never positionally."""
    from r1aqa_pl.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    usage = capsys.readouterr().out
    assert all(f in usage for f in flags)
    with pytest.raises(SystemExit) as e:  # the required flag is required
        main([command])
    assert e.value.code != 0


# ---------------------------------------------------------------- records that cannot be scored

def test_real_mmau_reports_missing_audio(tmp_path, tiny_run, mmau_json, capsys):
    """The shared test-mini has 1 of its 1000 clips: 999 records are reported, not scored as wrong."""
    out = tmp_path / "mmau"
    hf = tiny_run.ckpts[2].with_name(tiny_run.ckpts[2].stem + "_hf")
    results = ev.evaluate(checkpoint=str(hf), data=str(mmau_json), out=str(out))
    assert results["records"] == 1000 and results["scored"] == 1 and results["skipped"] == 999
    assert results["not_scored"] == {"missing_audio": 999}
    printed = capsys.readouterr().out
    assert "999 of 1000 records NOT scored: missing_audio" in printed
    preds = read_records(out / "predictions.json")
    assert len(preds) == 1000
    assert sum("model_prediction" in r for r in preds) == 1
    assert sum(r.get("not_scored") == "missing_audio" for r in preds) == 999
    assert score_records(preds)["total"] == results["total"]


def test_missing_and_undecodable_audio_counted_never_substituted(tmp_path, tiny_run, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_run.data.parent, data)
    records = read_records(data / "test-mini.json")
    (data / records[3]["audio_id"]).unlink()  # caught at start-up
    sf.write(data / records[5]["audio_id"], np.full(3200, np.nan, np.float32), 16000, subtype="FLOAT")  # while reading
    records.append({k: v for k, v in records[0].items() if k != "choices"})  # a broken record
    (data / "test-mini.json").write_text(json.dumps(records))
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(data / "test-mini.json"), out=str(tmp_path / "e"),
                          batch_size=4)
    assert results["not_scored"] == {"missing_audio": 1, "non_finite_audio": 1, "missing_field": 1}
    assert results["scored"] == 22 and results["skipped"] == 3 and results["records"] == 25
    assert "3 of 25 records NOT scored: missing_audio 1, missing_field 1, non_finite_audio 1" in capsys.readouterr().out
    preds = read_records(tmp_path / "e" / "predictions.json")
    assert [r["id"] for r in preds] == [r["id"] for r in records]  # source order, nobody dropped or doubled
    assert preds[3]["not_scored"] == "missing_audio" and preds[5]["not_scored"] == "non_finite_audio"
    assert preds[24]["not_scored"] == "missing_field"
    assert "model_prediction" not in preds[3] and "model_prediction" not in preds[5]
    # the 22 scored records are exactly the run's (batch size does not change greedy answers here)
    logged = {r["id"]: r["model_prediction"] for r in run_predictions(tiny_run, 2)}
    assert all(r["model_prediction"] == logged[r["id"]] for r in preds if "model_prediction" in r)
    assert score_records(preds[:24])["total"] == results["total"]  # the official scorer stops at the broken one
    assert results["logged"]["val/count/total"] == 22


def test_limit_and_no_audio(tmp_path, tiny_run):
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(tiny_run.data), out=str(tmp_path / "a"), limit=5)
    assert results["scored"] == 5 and results["not_scored"] == {"beyond_limit": 19}
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(tiny_run.data), out=str(tmp_path / "b"),
                          with_audio=False, max_new_tokens=4)
    assert results["scored"] == 24 and results["with_audio"] is False and results["max_new_tokens"] == 4
    assert results["logged"]["val/count/no_audio"] == 24


def test_non_benchmark_data_is_refused(tmp_path, tiny_run):
    with pytest.raises(ValueError, match="train.jsonl: not a file of any known benchmark"):
        ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(tiny_run.root / "data" / "train.jsonl"),
                    out=str(tmp_path / "x"))


def test_missing_default_data_says_where_it_comes_from(tmp_path, tiny_run, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/mmau/ here
    with pytest.raises(FileNotFoundError, match=r"data/mmau/mmau-test-mini.json: benchmark file not found.*MMAU"):
        ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), out=str(tmp_path / "x"))


# ---------------------------------------------------------------- eval-all, ask

def test_evaluate_all_skips_evaluated(tmp_path, tiny_run, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run / "checkpoints", run / "checkpoints")
    rows = ev.evaluate_all(run=str(run), data=str(tiny_run.data),
                           batch_size=tiny_run.val_batch_size)[str(tiny_run.data)]
    found = ev.find_checkpoints(run)
    assert all(p.name.endswith("_hf") for p in found) and len(rows) == len(found) == len(tiny_run.ckpts) + 1
    assert all((p / "eval" / "results.json").is_file() for p in found)
    table = capsys.readouterr().out.split("\n\n")[-1]
    assert "sound" in table and "music" in table and "speech" in table and "total" in table
    totals = [r["total"]["acc"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    by_step = {r["step"]: r["total"]["acc"] for r in rows}
    for step in tiny_run.ckpts:
        assert by_step[step] == pytest.approx(logged_total(tiny_run, step), abs=1e-6)

    shutil.rmtree(found[0] / "eval")  # evaluated through the .ckpt instead: that counts too
    ckpt = found[0].with_name(found[0].name[: -len("_hf")] + ".ckpt")
    ev.evaluate(checkpoint=str(ckpt), data=str(tiny_run.data), batch_size=tiny_run.val_batch_size)
    assert (ck.default_out(ckpt) / "results.json").is_file()
    capsys.readouterr()
    calls = []
    monkeypatch.setattr(ev, "evaluate", lambda **kw: calls.append(kw))
    again = ev.evaluate_all(run=str(run), data=str(tiny_run.data))[str(tiny_run.data)]
    assert calls == [] and [r["total"] for r in again] == [r["total"] for r in rows]
    assert "already evaluated" in capsys.readouterr().out
    # robust scores asked for: the stored greedy-only results do not answer that, every checkpoint runs again
    monkeypatch.setattr(ev, "evaluate", lambda **kw: calls.append(kw) or rows[0])
    ev.evaluate_all(run=str(run), data=str(tiny_run.data), permutations=3, samples=2, temperature=0.7)
    assert len(calls) == len(found) and "other robust-score settings" in capsys.readouterr().out
    assert {(c["permutations"], c["samples"], c["temperature"], c["seed"]) for c in calls} == {(3, 2, 0.7, 0)}
    stored = json.loads((ck.default_out(ckpt) / "results.json").read_text())
    assert stored["settings"] == ev.score_settings() == {"permutations": 1, "samples": 0, "temperature": None,
                                                          "seed": 0, "bootstrap": 1000}


def test_ask(tiny_run, capsys):
    rec = read_records(tiny_run.data)[0]
    hf = tiny_run.ckpts[2].with_name(tiny_run.ckpts[2].stem + "_hf")
    answer = ask(
        model=str(hf),
        audio=str(tiny_run.data.parent / rec["audio_id"]),
        question=rec["question"],
        choices=rec["choices"],
        max_new_tokens=8,
    )
    printed = capsys.readouterr().out
    assert isinstance(answer, str) and f"answer: {answer}" in printed and "output: " in printed
    # the same text the run's validation produced for this record
    run = {r["id"]: r for r in run_predictions(tiny_run, 2)}[rec["id"]]
    assert answer == run["model_prediction"]


# ---------------------------------------------------------------- nothing scored: no accuracy

def test_every_clip_missing_fails_and_writes_no_accuracy(tmp_path, tiny_run, capsys):
    """Not a results.json with total.acc 0.0 and a 0.00 % table: exit 1, the reasons, nothing written."""
    data = tmp_path / "data"
    shutil.copytree(tiny_run.data.parent, data, ignore=shutil.ignore_patterns("*.wav"))
    out = tmp_path / "e"
    message = (f"{data / 'test-mini.json'}:file: none of its 24 records could be scored (missing_audio 24): no "
               f"accuracy written; `r1aqa check-data --val {data / 'test-mini.json'}` lists why record by record")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(data / "test-mini.json"), out=str(out))
    from r1aqa_pl.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "--checkpoint", str(tiny_run.ckpts[2]), "--data", str(data / "test-mini.json"),
              "--out", str(out)])
    assert e.value.code == 1 and capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


def test_every_clip_unreadable_fails_after_answering_nothing(tmp_path, tiny_run):
    """Headers fine, samples NaN: found only while reading, and then nothing was answered either."""
    data = tmp_path / "data"
    shutil.copytree(tiny_run.data.parent, data)
    for wav in (data / "audios").glob("*.wav"):
        sf.write(wav, np.full(3200, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"none of its 24 records could be scored \(non_finite_audio 24\)"):
        ev.evaluate(checkpoint=str(tiny_run.ckpts[2]), data=str(data / "test-mini.json"), out=str(tmp_path / "e"),
                    batch_size=8)
    assert not (tmp_path / "e").exists()


def test_eval_all_without_checkpoints_fails(tmp_path, tiny_run):
    with pytest.raises(FileNotFoundError, match="no checkpoint under it"):
        ev.evaluate_all(run=str(tmp_path), data=str(tiny_run.data))
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        ev.evaluate_all(run=str(tmp_path / "typo"), data=str(tiny_run.data))


# ---------------------------------------------------------------- ask: an answer that is no choice

@pytest.mark.parametrize("output, line", [
    ("<answer>rising</answer>", "answer: rising -- NOT one of the given choices: it names none of "
                                "['two', 'three', 'four']"),
    ("<answer>two or three</answer>", "answer: two or three -- NOT one of the given choices: it names none of"),
    ("<answer>Three.</answer>", "answer: Three. (the choice 'three')"),
    ("<answer>three</answer>", "answer: three\n"),
])
def test_ask_says_when_the_answer_is_not_a_choice(tmp_path, monkeypatch, capsys, output, line):
    """The demo checkpoint answered "rising" to "How many beeps are there?" (two / three / four)."""
    from r1aqa_pl.eval import ask as ask_module

    wav = tmp_path / "beeps.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    model = SimpleNamespace(processor=SimpleNamespace(feature_extractor=SimpleNamespace(sampling_rate=16000)),
                            answer=lambda questions, audio: [output])
    monkeypatch.setattr(ask_module, "load_for_eval", lambda *a: (model, {}))
    answer = ask(model="m", audio=str(wav), question="How many beeps are there?", choices=["two", "three", "four"])
    assert answer == ask_module.extract_answer(output) and line in capsys.readouterr().out
