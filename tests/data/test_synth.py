"""The synthetic set: deterministic, balanced, readable by the data layer, and answerable from the audio alone."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from r1aqa_pl.data.formats import read_questions
from r1aqa_pl.data.synth import TASKS, synth, synth_vocabulary


def digest(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 3), (b, 3), (c, 4)):
        synth(str(d), n_train=12, n_test=6, seed=seed, seconds=1.0, n_mmar=7)
    ha, hb, hc = digest(a), digest(b), digest(c)
    # 12 + 6 + 7 clips, plus the second clip of the two-clip question among the 6 training ones about sound
    # (the 6 test questions hold two about sound, the first two sub-tasks: no two-clip one)
    assert len(ha) == 12 + 1 + 6 + 7 + 3 and ha == hb
    assert ha["train.jsonl"] == hc["train.jsonl"] and ha["mmar.jsonl"] == hc["mmar.jsonl"]  # same questions
    assert sum(ha[k] != hc[k] for k in ha if k.endswith(".wav")) == 26  # different sounds


def test_mmar_format_modalities_and_balance(tmp_path):
    from r1aqa_pl.benchmarks.mmar import MODALITIES

    synth(str(tmp_path), n_train=0, n_test=0, seconds=0.5, n_mmar=70)
    qs = read_questions(tmp_path / "mmar.jsonl", check_audio_files=True)
    assert Counter(q.domain for q in qs) == {m: 10 for m in MODALITIES}
    assert {q.category for q in qs} == {"Signal Layer", "Perception Layer"} and all(q.dataset == "MMAR" for q in qs)
    # each question asks about one of its clip's domains, and the answers of every sub-task are balanced
    for q in qs:
        domain = next(d for d, tasks in TASKS.items() if q.sub_category in [t[0] for t in tasks])
        assert domain in q.domain.removeprefix("mix-").split("-")
    for sub in {q.sub_category for q in qs}:
        answers = Counter(q.answer for q in qs if q.sub_category == sub)
        assert max(answers.values()) - min(answers.values()) <= 1 or len(answers) == 1


def test_formats_balance_and_vocabulary(synth_dir):
    train = read_questions(synth_dir / "train.jsonl", check_audio_files=True)
    test = read_questions(synth_dir / "test-mini.json", check_audio_files=True)
    assert len(train) == 48 and len(test) == 24
    for qs in (train, test):
        assert Counter(q.domain for q in qs) == {"sound": len(qs) // 3, "music": len(qs) // 3, "speech": len(qs) // 3}
        assert all(q.dataset == f"synthetic-{q.domain}" for q in qs)
    info = sf.info(str(synth_dir / "audios" / "train_00000.wav"))
    assert (info.samplerate, info.frames, info.subtype) == (16000, 32000, "PCM_16")
    assert (
        json.loads((synth_dir / "train.jsonl").read_text().splitlines()[0])["audio_path"] == "./audios/train_00000.wav"
    )
    assert json.loads((synth_dir / "test-mini.json").read_text())[0]["audio_id"] == "./audios/test_0000.wav"
    # answers balanced within each sub-task (counts differ by at most one)
    per_task = Counter((q.sub_category, q.answer) for q in train)
    for tasks in TASKS.values():
        for sub, _, _, choices, _ in tasks:
            counts = [per_task[(sub, c)] for c in choices]
            assert max(counts) - min(counts) <= 1 and min(counts) >= 1, (sub, counts)
    vocab = set(synth_vocabulary())
    words = {w for q in train + test for t in [q.question, *q.choices] for w in t.replace("?", " ? ").split()}
    assert words == vocab and all(w.isalpha() or w == "?" for w in vocab) and "'" not in "".join(vocab)


# ---- simple signal checks: each answer must be recoverable from the waveform alone


def frame_rms(x, sr, hop=0.01):
    f = int(hop * sr)
    n = len(x) // f
    return np.sqrt((x[: n * f].reshape(n, f) ** 2).mean(1)), f


def bursts(x, sr):
    """(start, end) sample spans where the 10 ms RMS exceeds a fifth of its maximum."""
    r, f = frame_rms(x, sr)
    on = r > max(0.2 * r.max(), 0.01)
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(int), 0]))
    return [(a * f, b * f) for a, b in zip(edges[::2], edges[1::2])]


def spectrum(x, sr):
    return np.abs(np.fft.rfft(x * np.hanning(len(x)))), np.fft.rfftfreq(len(x), 1 / sr)


def peak_hz(x, sr):
    s, f = spectrum(x, sr)
    return f[s.argmax()]


def f0_hz(x, sr, lo=60, hi=400):
    """Pitch by autocorrelation (the biased estimate prefers the true period over its multiples)."""
    x = x - x.mean()
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
    a, b = int(sr / hi), int(sr / lo)
    return sr / (a + ac[a:b].argmax())


def solve(sub, x, sr):
    spans = bursts(x, sr) if isinstance(x, np.ndarray) else None
    if sub == "beep counting":
        return ["one", "two", "three"][len(spans) - 1]
    if sub == "loudness":
        return "loud" if frame_rms(x, sr)[0].max() > 0.1 else "soft"
    if sub == "event order":
        (a0, b0), (a1, b1) = spans
        return "low tone" if peak_hz(x[a0:b0], sr) < peak_hz(x[a1:b1], sr) else "high tone"
    if sub == "note pitch":
        return "high" if peak_hz(x, sr) > 300 else "low"
    if sub == "chord quality":  # the interval between the two lowest of the three strongest peaks
        s, f = spectrum(x, sr)
        pk = np.flatnonzero((s[1:-1] > s[:-2]) & (s[1:-1] > s[2:])) + 1
        top = np.sort(f[pk[np.argsort(s[pk])[-3:]]])
        return "major" if 12 * np.log2(top[1] / top[0]) > 3.5 else "minor"
    if sub == "tempo":
        return "fast" if len(spans) >= 7 else "slow"
    if sub == "louder clip":
        return "the first clip" if frame_rms(x[0], sr)[0].max() > frame_rms(x[1], sr)[0].max() else "the second clip"
    ((a, b),) = spans
    if sub == "speaker pitch":
        return "high" if f0_hz(x[a + (b - a) // 4 :][:2048], sr) > 165 else "low"
    if sub == "intonation":
        start, end = f0_hz(x[a + 800 :][:1024], sr), f0_hz(x[: b - 800][-1024:], sr)
        return "rising" if start < end else "falling"
    raise AssertionError(sub)


@pytest.mark.parametrize("sr,seconds", [(16000, 2.0), (22050, 1.5)])
def test_answers_recoverable_from_audio(tmp_path, sr, seconds):
    synth(str(tmp_path), n_train=96, n_test=48, seed=1, sampling_rate=sr, seconds=seconds)
    qs = read_questions(tmp_path / "train.jsonl") + read_questions(tmp_path / "test-mini.json")
    solved, seen = Counter(), Counter()
    for q in qs:
        clips = [sf.read(c, dtype="float64") for c in q.clips]
        assert all(rate == sr and len(x) == int(round(sr * seconds)) for x, rate in clips)
        assert len(clips) == (2 if q.sub_category == "louder clip" else 1)
        x = clips[0][0] if len(clips) == 1 else [c for c, _ in clips]
        seen[q.sub_category] += 1
        solved[q.sub_category] += solve(q.sub_category, x, sr) == q.answer
    assert set(seen) == {t[0] for tasks in TASKS.values() for t in tasks}
    assert solved == seen  # every answer of every sub-task, from the signal alone
