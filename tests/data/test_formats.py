"""Readers, validation policy, dataset, DataModule and check-data, on the real MMAU file and hand-made files."""

import json
import logging
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from r1aqa_pl.data.check import check_data
from r1aqa_pl.data.datamodule import AudioQADataModule, AudioQADataset, collate
from r1aqa_pl.data.formats import avqa_audio_name, detect_format, load_questions, read_questions
from r1aqa_pl.task.question import DataError

CHOICES = ["motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"]


def wav(path, seconds=0.5, sr=16000, value=0.1, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.full(int(seconds * sr), value, np.float32)
    sf.write(path, x, sr, subtype)
    return path


def avqa(i, **kw):
    rec = {"id": i, "video_name": f"vid{i}_000030", "video_id": i, "question_text": "What happened in the video?",
           "multi_choice": CHOICES, "answer": 1, "question_relation": "View", "question_type": "Happening",
           "dataset_name": "AVQA", "audio_path": f"wavs/clip{i}.wav"}
    rec.update(kw)
    return {k: v for k, v in rec.items() if v is not None}


def write_jsonl(path, recs):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


# ------------------------------------------------------------------ real MMAU file

def test_real_mmau_loads(mmau_json):
    qs = read_questions(mmau_json)
    assert detect_format(mmau_json) == "mmau"
    assert len(qs) == 1000
    assert Counter(q.domain for q in qs) == {"sound": 333, "music": 334, "speech": 333}
    n_choices = Counter(len(q.choices) for q in qs)
    assert n_choices == {2: 27, 5: 24, 8: 1, 4: 1000 - 27 - 24 - 1}
    q = qs[0]
    assert (q.id, q.answer, q.choices, q.dataset) == ("3fe64f3d-282c-4bc8-a753-68f8f6c35652", "Man",
                                                       ["Man", "Woman", "Child", "Robot"], "AudioSet")
    assert (q.difficulty, q.sub_category, q.source) == ("medium", "Acoustic Source Inference", f"{mmau_json}[0]")
    assert q.audio_path == str(mmau_json.parent / "test-mini-audios" / f"{q.id}.wav")
    assert q.raw["category"] == "Reasoning" and all(q.answer in q.choices for q in qs)
    assert {q.difficulty for q in qs} == {"easy", "medium", "hard"}


def test_real_mmau_audio_policy(mmau_json):
    with pytest.raises(DataError) as e:  # raise mode: the first record without its clip
        load_questions(mmau_json)
    assert e.value.reason == "missing_audio" and str(e.value).startswith(f"{mmau_json}:record 1:")
    with pytest.raises(DataError) as e:
        load_questions(mmau_json, on_error="skip")
    assert e.value.reason == "too_many_skipped" and "999 of 1000" in str(e.value)
    qs, counts = load_questions(mmau_json, on_error="skip", max_skip_fraction=1.0)
    assert [q.id for q in qs] == ["3fe64f3d-282c-4bc8-a753-68f8f6c35652"] and counts == {"missing_audio": 999}


# ------------------------------------------------------------------ AVQA readers

def test_avqa_audio_name():
    assert avqa_audio_name("-HG3Omg_89c_000030") == "-HG3Omg_89c_30.wav"
    assert avqa_audio_name("abc_000000") == "abc_0.wav"
    assert avqa_audio_name("-HG3Omg_89c_000030", naming="video_name") == "-HG3Omg_89c_000030.wav"
    assert avqa_audio_name("noseconds") == "noseconds.wav"
    with pytest.raises(ValueError):
        avqa_audio_name("x_1", naming="other")


def test_avqa_jsonl(tmp_path):
    d = tmp_path / "avqa"
    d.mkdir()
    for i in (0, 1):
        wav(d / "wavs" / f"clip{i}.wav")
    abs_clip = wav(tmp_path / "elsewhere" / "abs.wav")
    f = write_jsonl(d / "train.jsonl", [avqa(0), "", avqa(1, answer=3, task="music", dataset_name=None),
                                         avqa(2, audio_path=str(abs_clip))])
    qs = read_questions(f, check_audio_files=True)
    assert detect_format(f) == "avqa_jsonl" and len(qs) == 3
    q0, q1, q2 = qs
    assert (q0.id, q0.answer, q0.choices, q0.domain, q0.dataset) == ("0", "Yacht consignment", CHOICES, "sound", "AVQA")
    assert q0.audio_path == str(d / "wavs" / "clip0.wav") and q0.source == f"{f}:1"
    assert (q1.answer, q1.domain, q1.dataset, q1.source) == ("Consignment car", "music", "AVQA", f"{f}:3")
    assert q2.audio_path == str(abs_clip) and q2.raw["video_id"] == 2
    assert read_questions(f, domain="speech")[0].domain == "speech"
    other = tmp_path / "other"  # audio_dir overrides the file's folder
    wav(other / "wavs" / "clip0.wav")
    assert read_questions(f, audio_dir=other)[0].audio_path == str(other / "wavs" / "clip0.wav")


def test_avqa_train_qa_json(tmp_path):
    audio = tmp_path / "audio"
    wav(audio / "-HG3Omg_89c_30.wav")        # R1-AQA naming
    wav(audio / "ZZZ_000007.wav")             # only the plain <video_name>.wav exists: fallback
    recs = [avqa(183, video_name="-HG3Omg_89c_000030", audio_path=None, dataset_name=None),
            avqa(184, video_name="ZZZ_000007", audio_path=None, dataset_name=None, answer=0)]
    f = tmp_path / "train_qa.json"
    f.write_text(json.dumps(recs))
    assert detect_format(f) == "avqa_json"
    qs, counts = load_questions(f, audio_dir=audio)
    assert not counts and [q.audio_path for q in qs] == [
        str(audio / "-HG3Omg_89c_30.wav"),
        str(audio / "ZZZ_000007.wav"),
    ]
    assert [q.answer for q in qs] == ["Yacht consignment", "motorboat"]
    assert (qs[0].dataset, qs[0].domain, qs[0].source) == ("AVQA", "sound", f"{f}[0]")
    with pytest.raises(DataError) as e:  # naming="video_name" looks for -HG3Omg_89c_000030.wav: not there
        load_questions(f, audio_dir=audio, naming="video_name")
    assert e.value.reason == "missing_audio" and str(e.value).startswith(f"{f}:record 0:")


# ------------------------------------------------------------------ validation


def _nan_wav(p):
    x = np.full(8000, 0.1, np.float32)
    x[5] = np.inf
    sf.write(p, x, 16000, "FLOAT")


BAD = {  # reason -> (record for line 2, or raw text; optional setup of the clip at wavs/clip1.wav)
    "malformed_json": ('{"id": 1, "question_text": "cut off', None),
    "missing_field": (avqa(1, question_text=None), None),
    "bad_field": (avqa(1, answer="1"), None),
    "answer_index_out_of_range": (avqa(1, answer=4), None),
    "too_few_choices": (avqa(1, multi_choice=["only one"], answer=0), None),
    "missing_audio": (avqa(1, audio_path="wavs/absent.wav"), None),
    "unreadable_audio": (avqa(1), lambda p: p.write_bytes(b"not audio at all" * 20)),
    "empty_audio": (avqa(1), lambda p: sf.write(p, np.zeros(0, np.float32), 16000)),
}


def _dataset_with_bad_line(tmp_path, reason, n_good=9):
    rec, make = BAD[reason]
    (tmp_path / "wavs").mkdir(exist_ok=True)
    for i in range(n_good + 1):
        wav(tmp_path / "wavs" / f"clip{i}.wav")
    if make:
        make(tmp_path / "wavs" / "clip1.wav")
    return write_jsonl(tmp_path / "train.jsonl", [avqa(0), rec] + [avqa(i) for i in range(2, n_good + 1)])


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_record_raise_and_skip(tmp_path, caplog, reason):
    f = _dataset_with_bad_line(tmp_path, reason)  # 10 records, line 2 bad
    with pytest.raises(DataError) as e:
        load_questions(f)
    assert e.value.reason == reason and str(e.value).startswith(f"{f}:line 2:")
    with caplog.at_level(logging.WARNING, logger="r1aqa_pl.data"):
        qs, counts = load_questions(f, on_error="skip")  # 1 of 10 lost: within the default 0.1
    assert counts == {reason: 1} and len(qs) == 9 and "1" not in [q.id for q in qs]
    assert reason in caplog.text and "skipped 1 of 10" in caplog.text
    with pytest.raises(DataError) as e:
        load_questions(f, on_error="skip", max_skip_fraction=0.05)
    assert e.value.reason == "too_many_skipped" and reason in str(e.value)


def test_mmau_answer_not_in_choices(tmp_path):
    wav(tmp_path / "a.wav")
    good = {
        "id": "x",
        "audio_id": "./a.wav",
        "question": "q?",
        "choices": ["yes", "no"],
        "answer": "yes",
        "task": "music",
    }
    f = tmp_path / "mmau.json"
    f.write_text(json.dumps([good, dict(good, id="y", answer="maybe")]))
    with pytest.raises(DataError) as e:
        read_questions(f)
    assert (
        e.value.reason == "answer_not_in_choices"
        and str(e.value).startswith(f"{f}:record 1:")
        and "maybe" in str(e.value)
    )
    qs, counts = load_questions(f, on_error="skip", max_skip_fraction=0.5)
    assert [q.id for q in qs] == ["x"] and qs[0].domain == "music" and counts == {"answer_not_in_choices": 1}


def test_file_level_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1},\n {"id": ')
    for path, reason in [(tmp_path / "absent.jsonl", "missing_file"), (broken, "malformed_json")]:
        with pytest.raises(DataError) as e:
            read_questions(path, on_error="skip")  # a file that cannot be split into records always raises
        assert e.value.reason == reason
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        read_questions(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError):
        read_questions(broken, on_error="ignore")


def test_non_finite_audio_found_while_reading(tmp_path):
    for i in range(4):
        wav(tmp_path / "wavs" / f"clip{i}.wav")
    _nan_wav(tmp_path / "wavs" / "clip1.wav")
    f = write_jsonl(tmp_path / "t.jsonl", [avqa(i) for i in range(4)])
    qs, counts = load_questions(f)  # the header check passes: only a decode sees the samples
    assert len(qs) == 4 and not counts
    with pytest.raises(DataError) as e:
        AudioQADataset(qs)[1]
    assert e.value.reason == "non_finite_audio" and str(e.value).startswith(f"{f}:line 2:")
    ds = AudioQADataset(qs, on_error="skip", max_bad=1)
    item = ds[1]  # replaced by the next readable record
    assert item["question"].id == "2" and item["audio"].shape == (8000,)
    assert ds[1]["question"].id == "2" and ds.skipped == {"non_finite_audio": 1}  # remembered, counted once
    with pytest.raises(DataError, match="too_many_skipped|more than"):
        AudioQADataset(qs, on_error="skip", max_bad=0)[1]


# ------------------------------------------------------------------ dataset + datamodule


def test_dataset_and_collate(synth_dir):
    qs = read_questions(synth_dir / "test-mini.json")
    ds = AudioQADataset(qs[:3], 16000, max_samples=16000)
    batch = collate([ds[i] for i in range(3)])
    assert [q.id for q in batch["questions"]] == [q.id for q in qs[:3]]
    assert all(a.dtype == np.float32 and a.shape == (16000,) for a in batch["audio"])
    assert collate([AudioQADataset(qs, with_audio=False)[0]])["audio"] == [None]


def _train_ids(dm):
    return [q.id for b in dm.train_dataloader() for q in b["questions"]]


def test_datamodule(synth_dir):
    kw = dict(
        train_file=str(synth_dir / "train.jsonl"),
        val_file=str(synth_dir / "test-mini.json"),
        max_audio_seconds=1.5,
        batch_size=4,
        val_batch_size=5,
    )
    dm = AudioQADataModule(**kw)
    dm.setup("fit")
    assert (dm.sampling_rate, dm.max_samples) == (16000, 24000)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["questions"]) == 4 and all(a.shape == (24000,) and a.dtype == np.float32 for a in batch["audio"])
    assert Counter(q.domain for q in dm.datasets["train"].questions) == {"sound": 16, "music": 16, "speech": 16}
    assert [len(b["questions"]) for b in dm.val_dataloader()] == [5] * 4 + [4]
    assert dm.test_dataloader() == [] and dm.skipped == {"train": Counter(), "val": Counter()}
    first = _train_ids(dm)
    assert sorted(first) == sorted(str(i) for i in range(48)) and first != [str(i) for i in range(48)]
    same = AudioQADataModule(**kw)
    same.setup("fit")
    other = AudioQADataModule(**kw, seed=1)
    other.setup("fit")
    assert _train_ids(same) == first and _train_ids(other) != first


def test_datamodule_no_audio_limit_val_and_startup_failure(synth_dir, mmau_json):
    dm = AudioQADataModule(
        train_file=str(synth_dir / "train.jsonl"),
        val_file=str(mmau_json),
        with_audio=False,
        limit_val=10,
        val_batch_size=4,
    )
    dm.setup("fit")  # the audio-free ablation needs no clips, so MMAU's missing audio is no problem
    batches = list(dm.val_dataloader())
    assert sum(len(b["questions"]) for b in batches) == 10 and all(a is None for b in batches for a in b["audio"])
    assert all(a is None for a in next(iter(dm.train_dataloader()))["audio"])
    with pytest.raises(DataError, match="missing_audio|too_many_skipped|999 of 1000"):
        AudioQADataModule(val_file=str(mmau_json), on_error="skip").setup("validate")  # fails at start-up
    with pytest.raises(ValueError, match="train_file"):
        AudioQADataModule(val_file=str(mmau_json)).setup("fit")
    ok = AudioQADataModule(test_file=str(mmau_json), on_error="skip", max_skip_fraction=1.0)
    ok.setup("test")
    assert ok.skipped == {"test": {"missing_audio": 999}} and len(ok.datasets["test"]) == 1


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_datamodule_window_from_feature_extractor(tmp_path, synth_dir):
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=16, sampling_rate=8000, chunk_length=1).save_pretrained(tmp_path / "fe")
    dm = AudioQADataModule(
        val_file=str(synth_dir / "test-mini.json"),
        feature_extractor=str(tmp_path / "fe"),
        max_audio_seconds=30.0,
        sampling_rate=16000,
    )
    dm.setup("validate")
    assert (dm.sampling_rate, dm.max_samples) == (8000, 8000)
    assert next(iter(dm.val_dataloader()))["audio"][0].shape == (8000,)


# ------------------------------------------------------------------ check-data


def test_check_data_synthetic_ok(synth_dir, capsys):
    assert check_data(train=str(synth_dir / "train.jsonl"), val=str(synth_dir / "test-mini.json")) == 0
    out = capsys.readouterr().out
    # sound's 16 questions cycle four sub-tasks: 4 of them are the two-clip task, so 48 questions hold 52 clips
    assert "records: 48" in out and "music 16, sound 16, speech 16" in out and "16000 Hz x52" in out
    assert "several clips: 4 questions (up to 2 clips each, heard in order)" in out
    assert "min 2.00 / mean 2.00 / max 2.00" in out and "problems: 0" in out


def test_check_data_real_mmau(mmau_json, capsys):
    assert check_data(val=str(mmau_json)) == 1
    out = capsys.readouterr().out
    assert "records: 1000; usable: 1; problems: 999" in out and "999 missing_audio" in out
    assert "music 334, sound 333, speech 333" in out and "32000 Hz x1" in out
    assert check_data(val=str(mmau_json), on_error="raise") == 1
    assert "1 missing_audio" in capsys.readouterr().out
    assert check_data() == 2


def test_check_data_cli(synth_dir, mmau_json, capsys):
    from r1aqa_pl.cli import main

    main(["check-data", "--test", str(synth_dir / "test-mini.json")])  # exit 0: returns normally
    with pytest.raises(SystemExit) as e:
        main(["check-data", "--val", str(mmau_json), "--decode", "false"])
    assert e.value.code == 1 and "999 missing_audio" in capsys.readouterr().out


def test_check_data_streams_a_large_file(tmp_path, synth_dir):
    """Issue 32: check-data on a 50 MB file took 1.2 GB: torch (~0.7 GB) loaded for a scan that resamples
    nothing, and the records held twice (a list of every question, one of every problem, beside the parsed
    file). Now the parsed records are the peak, and torch stays unloaded."""
    import contextlib
    import io
    import subprocess
    import sys
    import tracemalloc

    from r1aqa_pl.task.files import read_entries

    big = write_jsonl(tmp_path / "big.jsonl", [avqa(i) for i in range(10000)])  # every clip missing: 10000 problems
    tracemalloc.start()
    try:
        read_entries(big)
        parsed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.redirect_stderr(io.StringIO()):
            assert check_data(train=str(big), decode=False) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "records: 10000; usable: 0; problems: 10000" in shown.getvalue()
    assert "10000 missing_audio" in shown.getvalue() and shown.getvalue().count("e.g.") == 3
    assert peak < 1.3 * parsed, (peak, parsed)  # was 1.6x
    train = str(synth_dir / "train.jsonl")  # 16 kHz clips, fully decoded
    code = f"import sys; from r1aqa_pl.data.check import check_data; check_data(train={train!r}); print(sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "OK: a run" in run.stdout, run.stderr[-2000:]
    assert "'torch'" not in run.stdout.splitlines()[-1]


def test_hide_train_answers_blanks_training_answers_only(synth_dir):
    """Test-time RL: no training record carries its answer; validation keeps them for scoring."""
    dm = AudioQADataModule(
        train_file=str(synth_dir / "test-mini.json"),
        val_file=str(synth_dir / "test-mini.json"),
        hide_train_answers=True,
    )
    dm.setup("fit")
    train, val = dm.datasets["train"].questions, dm.datasets["val"].questions
    assert len(train) == len(val) == 24 and all(q.answer == "" and q.raw == {} for q in train)
    assert all(q.answer in q.choices for q in val) and [q.id for q in train] == [q.id for q in val]
