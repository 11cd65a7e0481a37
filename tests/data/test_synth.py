"""The synthetic set: deterministic, balanced, readable by the data layer, and answerable from the audio alone."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from r1aqa_pl.data.formats import read_questions
from r1aqa_pl.data.synth import FORMS, OPTIONS, PARAPHRASES, RANGES, SHIFTS, TASKS, synth, synth_vocabulary


def digest(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 3), (b, 3), (c, 4)):
        synth(str(d), n_train=12, n_test=6, seed=seed, seconds=1.0, n_mmar=7, n_shifted=10)
    ha, hb, hc = digest(a), digest(b), digest(c)
    # 12 + 6 + 7 + 10 clips, plus the second clip of the two-clip question among the 6 training ones about sound
    # (the 6 test questions hold two about sound, the first two sub-tasks: no two-clip one) and of the shifted
    # set's first "form" question ("is the first clip softer than the second?")
    assert len(ha) == 12 + 1 + 6 + 7 + 10 + 1 + 4 and ha == hb
    assert ha["train.jsonl"] == hc["train.jsonl"] and ha["mmar.jsonl"] == hc["mmar.jsonl"]  # same questions
    assert sum(ha[k] != hc[k] for k in ha if k.endswith(".wav")) == 37  # different sounds


def test_shifted_set_leaves_the_other_files_unchanged(tmp_path):
    """test-shifted.json has its own random stream: every other file is the same bytes with or without it."""
    synth(str(tmp_path / "with"), n_train=9, n_test=6, seed=2, seconds=0.5, n_mmar=7, n_shifted=15)
    synth(str(tmp_path / "without"), n_train=9, n_test=6, seed=2, seconds=0.5, n_mmar=7, n_shifted=0)
    with_, without = digest(tmp_path / "with"), digest(tmp_path / "without")
    assert {k: v for k, v in with_.items() if "shift" not in k} == without
    assert sum("shift" in k for k in with_) == 1 + 15 + 1  # the file, 15 questions' clips, a second clip (form)


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
    shifted = read_questions(synth_dir / "test-shifted.json", check_audio_files=True)
    vocab = set(synth_vocabulary())
    texts = [t for q in train + test + shifted for t in [q.question, *q.choices]]
    texts += [t for qs in PARAPHRASES.values() for t in qs]  # a record's wording is drawn: some may be missing here
    words = {w for t in texts for w in t.replace("?", " ? ").split()}
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


# ---- the shifted set: what it holds, and every answer still in the waveform

TRAIN_CHOICES = {sub: cs for tasks in TASKS.values() for sub, _, _, cs, _ in tasks}
TRAIN_QUESTIONS = {q for tasks in TASKS.values() for _, _, q, _, _ in tasks}


def load_clips(q):
    clips = [sf.read(c, dtype="float64") for c in q.clips]
    return (clips[0][0] if len(clips) == 1 else [c for c, _ in clips]), clips[0][1]


def solve_shifted(rec, x, sr):
    """The answer of a shifted record from its waveform: the training sub-task's solver, then (for a
    question asked in another form) that form's choice for the signal the training answer names."""
    base = solve(rec["sub-category"], x, sr)
    if rec["shift"] != "form":
        return base
    (form,) = [f for f in FORMS[rec["task"]] if f[2] == rec["question"]]
    return form[3][form[5].index(TRAIN_CHOICES[rec["sub-category"]].index(base))]


@pytest.fixture(scope="module")
def shifted_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shifted")
    synth(str(d), n_train=72, n_test=0, seed=3, n_mmar=0, n_shifted=150)
    return d


def test_shifted_kinds_counts_and_balance(shifted_dir):
    recs = json.loads((shifted_dir / "test-shifted.json").read_text())
    qs = read_questions(shifted_dir / "test-shifted.json", check_audio_files=True)  # MMAU format, clips on disk
    assert len(qs) == len(recs) == 150 and [q.answer for q in qs] == [r["answer"] for r in recs]
    assert Counter(r["shift"] for r in recs) == {k: 30 for k in SHIFTS}
    assert Counter((r["shift"], r["task"]) for r in recs) == {(k, d): 10 for k in SHIFTS for d in TASKS}
    assert Counter(r["shift_detail"] for r in recs) == {
        "paraphrase": 30, "reordered": 18, "reordered + distractor": 12, "out-of-range sound": 30,
        "yes/no": 24, "inverted": 6, "all three": 30}
    for r in recs:
        assert r["answer"] in r["choices"] and r["split"] == "test-shifted" and r["id"].startswith("synthetic-shift_")
    # answers balanced within every (kind, sub-task, question form): counts differ by at most one
    groups = {(r["shift"], r["sub-category"], r["question"] if r["shift"] == "form" else "") for r in recs}
    for kind, sub, question in groups:
        answers = Counter(r["answer"] for r in recs if (r["shift"], r["sub-category"]) == (kind, sub)
                          and (kind != "form" or r["question"] == question))
        assert max(answers.values()) - min(answers.values()) <= 1, (kind, sub, answers)


def test_shifted_wordings_options_and_forms_are_held_out(shifted_dir):
    recs = json.loads((shifted_dir / "test-shifted.json").read_text())
    train = read_questions(shifted_dir / "train.jsonl")
    seen = {q.question for q in train}
    assert seen == TRAIN_QUESTIONS  # 72 training questions cover every sub-task's one wording
    yes_no = {f[2] for forms in FORMS.values() for f in forms if f[6] == "yes/no"}
    for r in recs:
        train_cs = TRAIN_CHOICES[r["sub-category"]]
        assert (r["question"] not in seen) == (r["shift"] in ("wording", "combined", "form")), r
        new_options = r["shift"] in ("options", "combined")
        assert (r["choices"] != train_cs) == (new_options or r["question"] in yes_no), r
        if new_options:  # another order; a distractor is never the answer
            assert r["choices"] == OPTIONS[r["sub-category"]] and set(train_cs) <= set(r["choices"])
            assert r["answer"] in train_cs
        if r["shift"] in ("wording", "combined"):
            assert r["question"] in PARAPHRASES[r["sub-category"]]
    for sub, cs in OPTIONS.items():
        assert [c for c in cs if c in TRAIN_CHOICES[sub]] != TRAIN_CHOICES[sub]  # the training choices reordered
    assert sorted(len(cs) - len(TRAIN_CHOICES[s]) for s, cs in OPTIONS.items()) == [0] * 5 + [1] * 4
    # the wording is drawn at random (not tied to the answer): both wordings of several sub-tasks occur
    assert len({r["question"] for r in recs if r["shift"] in ("wording", "combined")}) > len(PARAPHRASES)
    # a form question never appears in training and asks a trained family
    for forms in FORMS.values():
        for sub, _, q, cs, _, to_gen, form in forms:
            assert q not in TRAIN_QUESTIONS and sorted(to_gen) == list(range(len(TRAIN_CHOICES[sub])))
            assert form in ("yes/no", "inverted") and (cs == ["yes", "no"]) == (form == "yes/no")


def measure(sub, x, sr):
    """The shifted parameters of a clip (or two), read off the waveform: {parameter: value}, in RANGES' units."""
    def level(y):  # a steady tone's amplitude from its median in-burst 10 ms RMS, the noise taken out
        r, _ = frame_rms(y, sr)
        on = r[r > 0.5 * r.max()]
        return float(np.sqrt(2 * max(np.median(on) ** 2 - 0.002 ** 2, 0.0)))

    def midi(f):
        return 69 + 12 * np.log2(f / 440)

    if sub == "louder clip":
        lv = [level(y) for y in x]
        return {"loud": max(lv), "soft": min(lv), "freq": peak_hz(x[int(np.argmax(lv))], sr)}
    spans = bursts(x, sr)
    T = len(x)
    if sub == "beep counting":
        a, b = spans[0]
        return {"freq": peak_hz(x[a:b], sr), "amp": float(np.abs(x[a:b]).max())}
    if sub == "loudness":
        lv = level(x)
        return {"loud" if lv > 0.1 else "soft": lv, "freq": peak_hz(x, sr)}
    if sub == "event order":
        fs = sorted(peak_hz(x[a:b], sr) for a, b in spans)
        return {"low": fs[0], "high": fs[1]}
    if sub == "note pitch":
        m = midi(peak_hz(x, sr))
        return {"high" if m > 60 else "low": m}
    if sub == "chord quality":
        s, f = spectrum(x, sr)
        pk = np.flatnonzero((s[1:-1] > s[:-2]) & (s[1:-1] > s[2:])) + 1
        return {"root": midi(np.sort(f[pk[np.argsort(s[pk])[-3:]]])[0])}
    if sub == "tempo":
        step = float(np.median(np.diff([a for a, _ in spans]))) / T
        a, b = spans[0]
        return {"fast" if step < 0.15 else "slow": step, "freq": peak_hz(x[a:b], sr)}
    ((a, b),) = spans
    if sub == "speaker pitch":
        f0 = f0_hz(x[a + (b - a) // 4:][:2048], sr, lo=55, hi=420)
        return {"high" if f0 > 165 else "low": f0}
    if sub == "intonation":
        ends = sorted([f0_hz(x[a + 800:][:1024], sr), f0_hz(x[: b - 800][-1024:], sr)])
        return {"lo": ends[0], "factor": ends[1] / ends[0]}
    raise AssertionError(sub)


def inside(v, lo_hi, tol):
    lo, hi = lo_hi
    return lo * (1 - tol) <= v <= hi * (1 + tol)


# measurement slack per parameter (relative): the glide's ends are read 50-120 ms in; a beep's peak holds noise
TOLERANCE = {"factor": 0.08, "lo": 0.06, "amp": 0.06, "loud": 0.08, "soft": 0.25, "step": 0.05}


def test_shifted_sounds_lie_outside_every_training_range(shifted_dir):
    """Read off the waveforms: training clips inside the training ranges, shifted-sound clips inside the
    shifted ranges and outside the training ones (each measured parameter of each sub-task)."""
    recs = json.loads((shifted_dir / "test-shifted.json").read_text())
    shifted = [q for q, r in zip(read_questions(shifted_dir / "test-shifted.json"), recs)
               if r["shift"] in ("sound", "combined")]
    train = read_questions(shifted_dir / "train.jsonl")
    checked = Counter()
    for q, which in [(q, 0) for q in train] + [(q, 1) for q in shifted]:
        x, sr = load_clips(q)
        for param, v in measure(q.sub_category, x, sr).items():
            ranges = RANGES[q.sub_category][param]
            tol = TOLERANCE.get(param, 0.03)
            assert inside(v, ranges[which], tol), (q.id, param, v, ranges[which])
            if which:
                assert not inside(v, ranges[0], 0.0), (q.id, param, v, ranges[0])
            checked[(q.sub_category, param, which)] += 1
    assert {(s, p) for s, p, w in checked if w == 1} == {
        ("beep counting", "freq"), ("beep counting", "amp"), ("loudness", "loud"), ("loudness", "soft"),
        ("loudness", "freq"), ("event order", "low"), ("event order", "high"), ("louder clip", "loud"),
        ("louder clip", "soft"), ("louder clip", "freq"), ("note pitch", "high"), ("note pitch", "low"),
        ("chord quality", "root"), ("tempo", "fast"), ("tempo", "slow"), ("tempo", "freq"),
        ("speaker pitch", "high"), ("speaker pitch", "low"), ("intonation", "lo"), ("intonation", "factor")}


def test_shifted_ranges_never_overlap_the_training_ones():
    for sub, params in RANGES.items():
        for name, ((lo, hi), (s_lo, s_hi)) in params.items():
            assert lo < hi and s_lo < s_hi and (s_hi <= lo or s_lo >= hi), (sub, name)
    assert set(RANGES) == set(TRAIN_CHOICES) == set(PARAPHRASES) == set(OPTIONS)


@pytest.mark.parametrize("sr,seconds", [(16000, 2.0), (22050, 1.5)])
def test_shifted_answers_recoverable_from_audio(tmp_path, sr, seconds):
    synth(str(tmp_path), n_train=0, n_test=0, n_mmar=0, n_shifted=150, seed=1, sampling_rate=sr, seconds=seconds)
    recs = json.loads((tmp_path / "test-shifted.json").read_text())
    solved, seen = Counter(), Counter()
    for q, r in zip(read_questions(tmp_path / "test-shifted.json"), recs):
        x, rate = load_clips(q)
        assert rate == sr and all(len(y) == int(round(sr * seconds)) for y in (x if isinstance(x, list) else [x]))
        key = (r["shift"], r["sub-category"], r["shift_detail"])
        seen[key] += 1
        solved[key] += solve_shifted(r, x, sr) == r["answer"]
    assert {k for k, _, _ in seen} == set(SHIFTS)
    assert solved == seen  # every answer of every kind of shift, from the signal alone
