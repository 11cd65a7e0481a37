"""From the datasets' own downloads to training: prepare-avqa on videos the tests make, MMAU / MMAR
audio preparation on archives and folders the tests make, and the data card."""

import io
import json
import tarfile

import av
import numpy as np
import pytest
import soundfile as sf
from helpers import fit

from r1aqa_pl.data.benchmark_audio import prepare_mmar, prepare_mmau
from r1aqa_pl.data.card import find_card
from r1aqa_pl.data.check import check_data
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.data.formats import read_questions
from r1aqa_pl.data.prepare import prepare_avqa
from r1aqa_pl.task.question import DataError

CHOICES = ["motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"]


def make_mp4(path, freq=440.0, seconds=1.0, sr=44100, amp=0.5, audio=True, faststart=False):
    """A 32x32 mpeg4 video of ``seconds`` with (optionally) a stereo AAC track of a sine tone; ``faststart``
    puts the index (moov) before the media data, as streaming-friendly downloads have it."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width = v.height = 32
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=sr) if audio else None
        if a:
            a.layout = "stereo"
        for _ in range(int(seconds * 10)):
            for p in v.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a:
            n = int(seconds * sr)
            x = (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)
            for s in range(0, n, 1024):
                f = av.AudioFrame.from_ndarray(np.stack([x[s:s + 1024]] * 2), format="fltp", layout="stereo")
                f.sample_rate, f.pts = sr, s
                for p in a.encode(f):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def avqa(i, video_name, **kw):
    return {
        "id": i,
        "video_name": video_name,
        "video_id": i,
        "question_text": "What happened in the video?",
        "multi_choice": CHOICES,
        "answer": i % 4,
        "question_relation": "View",
        "question_type": kw.pop("qt", "Happening"),
        **kw,
    }


@pytest.fixture
def avqa_download(tmp_path):
    """AVQA as its authors ship it: train_qa.json / val_qa.json and a videos folder (some videos bad or gone)."""
    videos = tmp_path / "videos"
    (videos / "part1").mkdir(parents=True)
    make_mp4(videos / "tone440_000030.mp4")
    make_mp4(videos / "part1" / "tone880_000004.mp4", freq=880.0, seconds=2.0, sr=48000)  # subfolder, other rate
    make_mp4(videos / "mute_000010.mp4", audio=False)
    make_mp4(videos / "silent_000000.mp4", amp=0.0)
    (videos / "corrupt_000020.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    train = [
        avqa(0, "tone440_000030"),
        avqa(1, "tone880_000004", qt="Which"),
        avqa(2, "mute_000010"),
        avqa(3, "corrupt_000020"),
        avqa(4, "gone_000001"),
        avqa(5, "silent_000000"),
        avqa(6, "tone440_000030", qt="Come From"),
        avqa(7, "tone880_000004", answer=9),
    ]
    val = [avqa(10, "tone880_000004"), avqa(11, "gone_000002")]
    (tmp_path / "train_qa.json").write_text(json.dumps(train))
    (tmp_path / "val_qa.json").write_text(json.dumps(val))
    return tmp_path


def _prepare(d, out, **kw):
    return prepare_avqa(
        qa=str(d / "train_qa.json"),
        videos=str(d / "videos"),
        out=str(out),
        val_qa=str(d / "val_qa.json"),
        max_missing_fraction=1.0,
        **kw,
    )


def _snapshot(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_prepare_avqa_writes_r1aqa_jsonl_tone_wavs_and_reports_every_loss(avqa_download, capsys):
    out = avqa_download / "prepared"
    assert _prepare(avqa_download, out) == 0
    recs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [0, 1, 6]
    assert recs[0] == {**avqa(0, "tone440_000030"), "dataset_name": "AVQA", "audio_path": "audio/tone440_30.wav"}
    assert recs[1]["audio_path"] == "audio/tone880_4.wav" and recs[2]["audio_path"] == "audio/tone440_30.wav"
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["tone440_30.wav", "tone880_4.wav"]  # no .part left
    for name, freq, seconds in (("tone440_30.wav", 440.0, 1.0), ("tone880_4.wav", 880.0, 2.0)):
        x, sr = sf.read(out / "audio" / name)
        info = sf.info(out / "audio" / name)
        assert (sr, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(len(x) / sr - seconds) < 0.05  # AAC adds at most one 1024-sample frame of padding
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        assert abs(np.argmax(spectrum) * sr / len(x) - freq) < 2.0
        assert 0.45 < np.abs(x).max() < 0.56  # amplitude 0.5 on both channels -> mono (L + R) / 2
    report = json.loads((out / "report.json").read_text())
    assert [(p.get("id"), p["reason"]) for p in report["train"]] == [
        (2, "no_audio_track"),
        (3, "unreadable_video"),
        (4, "missing_video"),
        (5, "silent_audio"),
        (None, "answer_index_out_of_range"),
    ]
    assert report["train"][4]["where"] == "record 7" and "id=7: answer index 9" in report["train"][4]["message"]
    assert "no audio track" in report["train"][0]["message"] and "silent" in report["train"][3]["message"]
    assert report["train"][2]["message"] == "no file named gone_000001.* under videos/"
    assert [(p["id"], p["reason"]) for p in report["val"]] == [(11, "missing_video")]
    assert [json.loads(line)["id"] for line in (out / "val.jsonl").read_text().splitlines()] == [10]

    card = json.loads((out / "data_card.json").read_text())
    t = card["splits"]["train"]
    assert (t["records"], t["usable"], t["file"]) == (8, 3, "train.jsonl")
    assert t["missing_by_reason"] == {
        "answer_index_out_of_range": 1,
        "missing_video": 1,
        "no_audio_track": 1,
        "silent_audio": 1,
        "unreadable_video": 1,
    }
    assert t["domains"] == {"sound": 3} and t["question_types"] == {"Come From": 1, "Happening": 1, "Which": 1}
    assert t["audio"]["clips"] == 2 and t["audio"]["sample_rates"] == {"16000": 2}
    assert abs(t["audio"]["seconds"]["total"] - 3.0) < 0.1
    assert card["splits"]["val"]["missing_by_reason"] == {"missing_video": 1}
    import hashlib

    assert card["sources"][0] == {
        "role": "train questions",
        "file": "train_qa.json",
        "bytes": (avqa_download / "train_qa.json").stat().st_size,
        "sha256": hashlib.sha256((avqa_download / "train_qa.json").read_bytes()).hexdigest(),
    }
    assert "records: 8; usable: 3; without audio: 5" in (out / "data_card.md").read_text()
    assert "train: 3 of 8 records usable" in capsys.readouterr().out


def test_prepare_avqa_resumes_and_is_byte_identical_for_any_workers(avqa_download, monkeypatch, capsys):
    out = avqa_download / "prepared"
    assert _prepare(avqa_download, out) == 0
    first = _snapshot(out)
    import r1aqa_pl.data.prepare as prep

    decoded = []
    real = prep.decode_video_audio
    monkeypatch.setattr(prep, "decode_video_audio", lambda p, sr: decoded.append(p.rsplit("/", 1)[1]) or real(p, sr))
    assert _prepare(avqa_download, out) == 0
    assert _snapshot(out) == first  # a no-op: same bytes
    # finished clips are skipped; only the failed videos are tried again (one may have been fixed since)
    assert sorted(decoded) == ["corrupt_000020.mp4", "mute_000010.mp4", "silent_000000.mp4"]
    assert "7 clips (2 finished before this run)" in capsys.readouterr().out
    other = avqa_download / "parallel"  # a fresh folder with 2 worker processes gives the same bytes
    monkeypatch.undo()
    assert _prepare(avqa_download, other, workers=2) == 0
    assert _snapshot(other) == first
    (other / "audio" / "tone880_4.wav").unlink()  # an interrupted run: one clip is missing; it is redone
    assert _prepare(avqa_download, other) == 0 and _snapshot(other) == first


def test_prepare_commands_on_the_command_line(avqa_download, tmp_path):
    from r1aqa_pl.cli import main

    d, out = avqa_download, avqa_download / "cli"
    main(
        [
            "prepare-avqa",
            "--qa",
            str(d / "train_qa.json"),
            "--videos",
            str(d / "videos"),
            "--out",
            str(out),
            "--val_qa",
            str(d / "val_qa.json"),
            "--workers",
            "1",
            "--max_missing_fraction",
            "1.0",
        ]
    )
    assert (out / "val.jsonl").is_file() and json.loads((out / "data_card.json").read_text())["splits"]["train"][
        "usable"
    ] == 3
    archive = _tar(tmp_path / "a.tar.gz", [("test-mini-audios/q0.wav", _wav_bytes())])
    (tmp_path / "m.json").write_text(json.dumps([mmau(0), mmau(1)]))
    with pytest.raises(SystemExit) as e:  # q1's clip is missing: exit status 1
        main(
            [
                "prepare-mmau",
                "--archive",
                str(archive),
                "--json",
                str(tmp_path / "m.json"),
                "--out",
                str(tmp_path / "m"),
            ]
        )
    assert e.value.code == 1


def test_prepare_avqa_fails_past_max_missing_fraction(avqa_download, capsys):
    out = avqa_download / "prepared"
    rc = prepare_avqa(qa=str(avqa_download / "train_qa.json"), videos=str(avqa_download / "videos"), out=str(out))
    assert rc == 1 and "FAIL: 62.5% left out (max_missing_fraction=0.1)" in capsys.readouterr().out
    with pytest.raises(DataError, match="videos folder not found"):
        prepare_avqa(qa=str(avqa_download / "train_qa.json"), videos=str(avqa_download / "nope"), out=str(out))


def test_prepared_avqa_trains_and_check_data_shows_the_card(avqa_download, tiny_dir, synth_dir, capsys):
    from r1aqa_pl.training.grpo_module import GRPOModule

    out = avqa_download / "prepared"
    assert _prepare(avqa_download, out) == 0
    qs = read_questions(out / "train.jsonl", check_audio_files=True)
    assert [q.audio_path for q in qs] == [
        str(out / "audio" / n) for n in ("tone440_30.wav", "tone880_4.wav", "tone440_30.wav")
    ]
    assert [q.answer for q in qs] == [CHOICES[0], CHOICES[1], CHOICES[2]]
    dm = AudioQADataModule(
        train_file=str(out / "train.jsonl"),
        val_file=str(synth_dir / "test-mini.json"),
        feature_extractor=str(tiny_dir),
        batch_size=2,
        seed=0,
    )
    trainer = fit(
        GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=4), optimization=dict(lr=1e-3)), dm, steps=1
    )
    assert trainer.global_step == 1
    capsys.readouterr()
    assert check_data(train=str(out / "train.jsonl")) == 0
    shown = capsys.readouterr().out
    assert "data card" in shown and "records: 8; usable: 3; without audio: 5" in shown
    assert find_card(synth_dir / "train.jsonl") is None


def test_prepare_avqa_leaves_out_a_truncated_video_and_redoes_its_clip_once_restored(tmp_path, capsys):
    """Issue 32 item 1 (and 2): a video cut mid-file, index at the front, decodes without error to a
    short track; it is left out as truncated_audio, and a short clip an earlier release made from it is
    made again once the complete video is back."""
    import r1aqa_pl.data.prepare as prep

    videos = tmp_path / "videos"
    videos.mkdir()
    make_mp4(videos / "tone440_000030.mp4")
    cut = make_mp4(videos / "cut_000005.mp4", freq=880.0, seconds=3.0, faststart=True)
    whole = cut.read_bytes()
    with av.open(str(cut)) as c:  # cut where a packet starts, past half the file: the rest decodes cleanly
        at = next(p.pos for p in c.demux(c.streams.audio[0]) if p.pos and p.pos >= len(whole) // 2)
    cut.write_bytes(whole[: len(whole) // 2 + 1])  # cut inside a packet: decoding fails at the end
    with pytest.raises(DataError, match=r"decodes to 1\.\d\d s of the 3\.00 s the video states") as e:
        prep.decode_video_audio(cut)
    assert e.value.reason == "truncated_audio"
    cut.write_bytes(whole[:at])
    (tmp_path / "train_qa.json").write_text(json.dumps([avqa(0, "tone440_000030"), avqa(1, "cut_000005")]))
    out = tmp_path / "prepared"
    run = dict(qa=str(tmp_path / "train_qa.json"), videos=str(videos), out=str(out))

    assert prepare_avqa(**run) == 1  # 1 of 2 left out > max_missing_fraction 0.1
    assert "FAIL: 50.0% left out (max_missing_fraction=0.1)" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["train"] == [
        {
            "id": 1,
            "video_name": "cut_000005",
            "reason": "truncated_audio",
            "message": "the audio decodes to 1.42 s of the 3.00 s the video states: the file is cut short; "
            "download the video again",
        }
    ]
    card = json.loads((out / "data_card.json").read_text())["splits"]["train"]
    assert (card["usable"], card["missing_by_reason"]) == (1, {"truncated_audio": 1})
    assert [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()] == [0]
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["tone440_30.wav"]
    assert prepare_avqa(**run, max_missing_fraction=0.5) == 0  # within the allowed loss: exit 0, still left out

    # what an earlier release wrote from the cut video: a 1.42 s clip under the final name, no manifest entry
    sf.write(out / "audio" / "cut_5.wav", np.full(22720, 0.1, np.float32), 16000, "PCM_16")
    cut.write_bytes(whole)
    capsys.readouterr()
    assert prepare_avqa(**run) == 0
    assert "2 clips (1 finished before this run)" in capsys.readouterr().out  # the short clip was not trusted
    x, sr = sf.read(out / "audio" / "cut_5.wav")
    assert abs(len(x) / sr - 3.0) < 0.05
    audio = json.loads((out / "data_card.json").read_text())["splits"]["train"]["audio"]
    assert audio["clips"] == 2 and abs(audio["seconds"]["total"] - 4.0) < 0.1
    assert json.loads((out / "report.json").read_text())["train"] == []


def test_prepare_avqa_redoes_a_clip_cut_or_changed_since_and_check_data_flags_it(avqa_download, monkeypatch, capsys):
    """Issue 32 item 2: resume trusts a clip only while it matches the manifest (sha256, frames, rate, video)."""
    import hashlib

    import r1aqa_pl.data.prepare as prep

    out = avqa_download / "prepared"
    assert _prepare(avqa_download, out) == 0
    first = _snapshot(out)
    manifest = json.loads((out / "manifest.json").read_text())["clips"]
    assert sorted(manifest) == ["tone440_30.wav", "tone880_4.wav"]
    wav = out / "audio" / "tone880_4.wav"
    assert manifest["tone880_4.wav"] == {
        "video": "tone880_000004",
        "video_bytes": (avqa_download / "videos" / "part1" / "tone880_000004.mp4").stat().st_size,
        "sample_rate": 16000,
        "frames": sf.info(wav).frames,
        "sha256": hashlib.sha256(wav.read_bytes()).hexdigest(),
    }

    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2])  # cut in half (an interrupted copy)
    other = out / "audio" / "tone440_30.wav"
    changed = bytearray(other.read_bytes())
    changed[1000:1010] = bytes(10)  # same length, other samples
    other.write_bytes(bytes(changed))
    capsys.readouterr()
    assert check_data(train=str(out / "train.jsonl")) == 1  # the header still claims the full length
    shown = capsys.readouterr().out
    declared, held = 2 * manifest["tone880_4.wav"]["frames"], len(data) // 2 - 44  # 16-bit mono, 44-byte header
    assert "1 truncated_audio" in shown and "audio: 2 clips" in shown
    assert f"cut short: the WAV header declares {declared} bytes of samples, the file holds {held} (50%)" in shown

    decoded = []
    real = prep.decode_video_audio
    monkeypatch.setattr(prep, "decode_video_audio", lambda p, sr: decoded.append(p.rsplit("/", 1)[1]) or real(p, sr))
    assert _prepare(avqa_download, out) == 0
    assert sorted(decoded) == [
        "corrupt_000020.mp4", "mute_000010.mp4", "silent_000000.mp4", "tone440_000030.mp4", "tone880_000004.mp4"
    ]
    assert _snapshot(out) == first  # both clips made again, same bytes; the card counts their true lengths
    assert "7 clips (0 finished before this run)" in capsys.readouterr().out

    (out / "manifest.json").write_text('{"clips": ')  # a damaged manifest trusts nothing
    decoded.clear()
    assert _prepare(avqa_download, out) == 0 and _snapshot(out) == first
    assert "manifest.json is damaged (Expecting value: line 1 column 11 (char 10)): every clip is made again" in (
        capsys.readouterr().out
    )
    assert "tone880_000004.mp4" in decoded and "tone440_000030.mp4" in decoded


def test_prepare_avqa_interrupted_keeps_the_clips_it_finished(avqa_download, monkeypatch, capsys):
    """The manifest is saved as the run goes, so an interrupted run's finished clips are trusted next time."""
    import r1aqa_pl.data.prepare as prep

    out = avqa_download / "prepared"
    real = prep.decode_video_audio

    def stop_at_the_second(p, sr):
        if "tone880" in p:
            raise KeyboardInterrupt
        return real(p, sr)

    monkeypatch.setattr(prep, "MANIFEST_EVERY", 1)
    monkeypatch.setattr(prep, "decode_video_audio", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        _prepare(avqa_download, out)
    assert sorted(json.loads((out / "manifest.json").read_text())["clips"]) == ["tone440_30.wav"]
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["tone440_30.wav"]
    monkeypatch.setattr(prep, "decode_video_audio", real)
    capsys.readouterr()
    assert _prepare(avqa_download, out) == 0
    assert "7 clips (1 finished before this run)" in capsys.readouterr().out
    assert sorted(json.loads((out / "manifest.json").read_text())["clips"]) == ["tone440_30.wav", "tone880_4.wav"]


def test_prepare_avqa_reports_two_videos_mapped_to_one_clip_name(tmp_path, monkeypatch):
    """Issue 32 item 11: good_000001 and good_1 both become good_1.wav under R1-AQA's naming."""
    import r1aqa_pl.data.prepare as prep

    videos = tmp_path / "videos"
    videos.mkdir()
    make_mp4(videos / "good_000001.mp4", freq=440.0)
    make_mp4(videos / "good_1.mp4", freq=880.0)
    make_mp4(videos / "tone440_000030.mp4")
    recs = [avqa(0, "good_000001"), avqa(1, "good_1"), avqa(2, "tone440_000030"), avqa(3, "good_1")]
    (tmp_path / "train_qa.json").write_text(json.dumps(recs))
    decoded = []
    real = prep.decode_video_audio
    monkeypatch.setattr(prep, "decode_video_audio", lambda p, sr: decoded.append(p.rsplit("/", 1)[1]) or real(p, sr))
    out = tmp_path / "prepared"
    run = dict(qa=str(tmp_path / "train_qa.json"), videos=str(videos))
    assert prepare_avqa(**run, out=str(out), max_missing_fraction=1.0) == 0
    assert decoded == ["tone440_000030.mp4"]  # found before decoding: neither colliding video is decoded
    message = (
        "videos 'good_000001' and 'good_1' both map to audio/good_1.wav under naming 'r1aqa', so none of them is "
        "used (one would get another's audio); prepare with --naming video_name to keep them apart"
    )
    assert json.loads((out / "report.json").read_text())["train"] == [
        {"id": i, "video_name": v, "reason": "audio_name_collision", "message": message}
        for i, v in ((0, "good_000001"), (1, "good_1"), (3, "good_1"))
    ]
    assert [json.loads(line)["id"] for line in (out / "train.jsonl").read_text().splitlines()] == [2]
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["tone440_30.wav"]
    assert json.loads((out / "data_card.json").read_text())["splits"]["train"]["missing_by_reason"] == {
        "audio_name_collision": 3
    }
    assert prepare_avqa(**run, out=str(tmp_path / "by_name"), naming="video_name", max_missing_fraction=0.0) == 0
    recs = [json.loads(line) for line in (tmp_path / "by_name" / "train.jsonl").read_text().splitlines()]
    assert [r["audio_path"] for r in recs] == [
        "audio/good_000001.wav", "audio/good_1.wav", "audio/tone440_000030.wav", "audio/good_1.wav"
    ]


# ------------------------------------------------------------------ MMAU / MMAR


def _wav_bytes(seconds=0.5, sr=16000, value=0.1):
    buf = io.BytesIO()
    sf.write(buf, np.full(int(seconds * sr), value, np.float32), sr, "PCM_16", format="WAV")
    return buf.getvalue()


def _tar(path, members):
    """A .tar.gz of (name, bytes) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def mmau(i, task="sound", sub="Acoustic Source Inference"):
    return {
        "id": f"q{i}",
        "audio_id": f"./test-mini-audios/q{i}.wav",
        "question": "Which source?",
        "choices": ["Man", "Woman"],
        "answer": "Man",
        "dataset": "AudioSet",
        "task": task,
        "split": "test-mini",
        "category": "Reasoning",
        "sub-category": sub,
        "difficulty": "easy",
    }


def test_prepare_mmau_unpacks_checks_and_reports_missing(tmp_path, capsys):
    archive = _tar(
        tmp_path / "test-mini-audios.tar.gz",
        [
            ("test-mini-audios/q0.wav", _wav_bytes(0.5)),
            ("test-mini-audios/q1.wav", _wav_bytes(1.5, sr=32000)),
            ("test-mini-audios/q3.wav", b"RIFF not really a wav"),
        ],
    )
    src = tmp_path / "mmau-test-mini.json"
    src.write_text(json.dumps([mmau(0), mmau(1, "music", "Genre"), mmau(2, "speech"), mmau(3)]))
    out = tmp_path / "mmau"
    assert prepare_mmau(archive=str(archive), json=str(src), out=str(out)) == 1  # a clip is missing: non-zero
    assert "FAIL: 2 records without a usable clip" in capsys.readouterr().out
    assert (out / "mmau-test-mini.json").read_bytes() == src.read_bytes()  # unchanged, beside the audio
    qs = read_questions(out / "mmau-test-mini.json")
    assert qs[0].audio_path == str(out / "test-mini-audios" / "q0.wav") and sf.info(qs[0].audio_path).frames == 8000
    report = json.loads((out / "report.json").read_text())["mmau-test-mini"]
    assert [(p["id"], p["reason"]) for p in report] == [("q2", "missing_audio"), ("q3", "unreadable_audio")]
    card = json.loads((out / "data_card.json").read_text())
    s = card["splits"]["mmau-test-mini"]
    assert (s["records"], s["usable"], s["domains"]) == (4, 2, {"music": 1, "sound": 1})
    assert s["audio"]["sample_rates"] == {"16000": 1, "32000": 1} and s["audio"]["seconds"]["total"] == 2.0
    assert [x["role"] for x in card["sources"]] == ["questions", "audio archive"]
    first = _snapshot(out)
    assert prepare_mmau(archive=str(archive), json=str(src), out=str(out)) == 1 and _snapshot(out) == first


@pytest.mark.parametrize("bad", ["../evil.wav", "/tmp/abs_evil.wav", "a/../../evil.wav", "link"])
def test_prepare_mmau_refuses_an_unsafe_archive_before_writing(tmp_path, bad):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("test-mini-audios/q0.wav")
        data = _wav_bytes()
        ok.size = len(data)
        tar.addfile(ok, io.BytesIO(data))
        evil = tarfile.TarInfo(bad)
        if bad == "link":
            evil.type, evil.linkname = tarfile.SYMTYPE, "../../etc/passwd"
            tar.addfile(evil)
        else:
            evil.size = 3
            tar.addfile(evil, io.BytesIO(b"bad"))
    src = tmp_path / "m.json"
    src.write_text(json.dumps([mmau(0)]))
    out = tmp_path / "deep" / "out"
    with pytest.raises(DataError) as e:
        prepare_mmau(archive=str(archive), json=str(src), out=str(out))
    assert e.value.reason == "unsafe_archive_member" and repr(bad) in str(e.value)
    assert not (tmp_path / "evil.wav").exists() and not (tmp_path / "deep" / "evil.wav").exists()
    assert not (out / "test-mini-audios").exists()  # nothing unpacked


@pytest.mark.parametrize(
    "members,shown,why",
    [
        (["test-mini-audios/" + "n" * 300 + ".wav"], "'test-mini-audios/nnn", "name too long (304 bytes in one part"),
        (["test-mini-audios/q9.wav/x.wav", "test-mini-audios/q9.wav"], "'test-mini-audios/q9.wav'",
         "it is a file, and a folder of other members"),
    ],
)
def test_prepare_mmau_refuses_a_member_it_cannot_write_before_writing(tmp_path, members, shown, why):
    """Issue 32 item 9: found while checking the members, reported as that member's, nothing written."""
    good = [(f"test-mini-audios/q{i}.wav", _wav_bytes()) for i in (0, 1)]
    archive = _tar(tmp_path / "a.tar.gz", good + [(m, _wav_bytes()) for m in members])
    src = tmp_path / "m.json"
    src.write_text(json.dumps([mmau(0), mmau(1)]))
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        prepare_mmau(archive=str(archive), json=str(src), out=str(out))
    assert e.value.reason == "bad_archive_member" and e.value.source == str(archive)
    assert f"refused: member {shown}" in str(e.value) and why in str(e.value)
    assert str(e.value).endswith("; nothing was unpacked")
    assert not (out / "test-mini-audios").exists()  # the two good members were not written either


def test_prepare_mmau_names_the_output_it_cannot_write(tmp_path, monkeypatch):
    """A full disk is the output's problem, not an "unreadable archive"."""
    import errno

    import r1aqa_pl.data.benchmark_audio as ba

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ba, "_write_atomic", full)
    archive = _tar(tmp_path / "a.tar.gz", [("test-mini-audios/q0.wav", _wav_bytes())])
    with pytest.raises(DataError) as e:
        ba.unpack(archive, tmp_path / "out")
    assert e.value.reason == "unwritable_output" and str(e.value) == (
        f"{tmp_path / 'out' / 'test-mini-audios' / 'q0.wav'}:file: cannot write member 'test-mini-audios/q0.wav' "
        "(No space left on device) after 0 files were written"
    )


def test_prepare_mmar_from_the_download_folder(tmp_path, capsys):
    audio = tmp_path / "download" / "audio"
    audio.mkdir(parents=True)
    for i in (0, 1):
        (audio / f"m{i}.wav").write_bytes(_wav_bytes(1.0))
    meta = tmp_path / "download" / "MMAR-meta.jsonl"
    recs = [
        {
            "id": f"m{i}",
            "audio_path": f"./audio/m{i}.wav",
            "question": "Q?",
            "choices": ["a", "b"],
            "answer": "a",
            "modality": mod,
            "category": "Signal Layer",
            "sub-category": "x",
            "language": None,
        }
        for i, mod in ((0, "sound"), (1, "mix-sound-music"), (2, "speech"))
    ]
    meta.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for source in (tmp_path / "download", audio):  # the download's root or its audio folder itself
        out = tmp_path / f"mmar_{source.name}"
        assert prepare_mmar(audio=str(source), meta=str(meta), out=str(out)) == 1
        assert sorted(p.name for p in (out / "audio").iterdir()) == ["m0.wav", "m1.wav"]
        assert (out / "MMAR-meta.jsonl").read_bytes() == meta.read_bytes()
        s = json.loads((out / "data_card.json").read_text())["splits"]["MMAR-meta"]
        assert (s["usable"], s["missing_by_reason"], s["domains"]) == (
            2,
            {"missing_audio": 1},
            {"mix-sound-music": 1, "sound": 1},
        )
    assert "2 of 3 records have their clip" in capsys.readouterr().out


def test_prepare_mmau_on_the_real_test_mini_json(mmau_json, tmp_path):
    """The real 1000-record file with an archive holding its one real clip: 999 reported missing."""
    clip = mmau_json.parent / "test-mini-audios" / "3fe64f3d-282c-4bc8-a753-68f8f6c35652.wav"
    archive = _tar(tmp_path / "test-mini-audios.tar.gz", [(f"test-mini-audios/{clip.name}", clip.read_bytes())])
    out = tmp_path / "mmau"
    assert prepare_mmau(archive=str(archive), json=str(mmau_json), out=str(out)) == 1
    s = json.loads((out / "data_card.json").read_text())["splits"]["mmau-test-mini"]
    assert (s["records"], s["usable"], s["missing_by_reason"]) == (1000, 1, {"missing_audio": 999})
    assert s["domains"] == {"sound": 1} and s["question_types"] == {"Acoustic Source Inference": 1}
    assert s["audio"]["sample_rates"] == {"32000": 1} and s["audio"]["seconds"]["total"] == 10.0
    assert read_questions(out / "mmau-test-mini.json", on_error="skip", max_skip_fraction=1.0, check_audio_files=True)[
        0
    ].audio_path == str(out / "test-mini-audios" / clip.name)


def test_prepare_mmar_from_an_archive_and_a_broken_meta_line(tmp_path):
    archive = _tar(tmp_path / "mmar-audio.tar.gz", [("audio/m0.wav", _wav_bytes(1.0))])
    meta = tmp_path / "MMAR-meta.jsonl"
    rec = {
        "id": "m0",
        "audio_path": "./audio/m0.wav",
        "question": "Q?",
        "choices": ["a", "b"],
        "answer": "a",
        "modality": "speech",
        "category": "Semantic Layer",
    }
    meta.write_text(json.dumps(rec) + "\n")
    assert prepare_mmar(audio=str(archive), meta=str(meta), out=str(tmp_path / "out")) == 0
    assert json.loads((tmp_path / "out" / "data_card.json").read_text())["splits"]["MMAR-meta"]["usable"] == 1
    meta.write_text(json.dumps(rec) + "\n\n" + '{"id": "m1", "audio_path": \n')
    with pytest.raises(DataError, match=r"MMAR-meta.jsonl:line 3: not valid JSON") as e:
        prepare_mmar(audio=str(archive), meta=str(meta), out=str(tmp_path / "out2"))
    assert e.value.reason == "malformed_json"
