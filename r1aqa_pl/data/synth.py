"""A synthetic audio-QA set whose answers truly depend on the audio, for CPU demos and tests.

Three domains like MMAU, each with sub-tasks a simple signal check can solve (so a model that
learns must be listening): sound -- count beeps, loud vs soft, which tone comes first, and which of two
clips is louder (a question over two clips, heard in order); music --
high vs low note, major vs minor chord, fast vs slow tempo; speech (a vowel-like harmonic
series with formants) -- high vs low voice, rising vs falling intonation.

Writes ``train.jsonl`` (R1-AQA AVQA format, plus ``task`` = domain so the domain survives),
``test-mini.json`` (MMAU format), ``mmar.jsonl`` (MMAR format: its seven modalities, where a mixed
item's clip carries two or three domains' signals and the question asks about one of them),
``test-shifted.json`` (MMAU format, the same sub-tasks under a distribution shift: see :data:`SHIFTS`)
and 16-bit WAVs under ``audios/``. Pure numpy and seeded:
the same arguments give byte-identical files. Answers are balanced within every sub-task and the
records cycle through domains and sub-tasks, so any prefix (``limit_val``) stays balanced.

**The shifted set** (``test-shifted.json``, its own random stream: the other files are the same bytes
with or without it). Each record carries one kind of shift, ``shift``, cycling through :data:`SHIFTS`:

* ``wording``  -- a paraphrase of the question never used in training (:data:`PARAPHRASES`);
* ``options``  -- the choices in another order, four sub-tasks with an extra distractor that is never the
  answer (:data:`OPTIONS`);
* ``sound``    -- the training question, the sound drawn outside every training range of its sub-task
  (:data:`RANGES`: other frequencies, levels, durations, rates), still answerable from the signal;
* ``form``     -- a family asked in a form never trained (:data:`FORMS`): "is the first clip softer than the
  second?" (yes / no) for "which clip is louder?", "which tone comes last?" for "which tone comes first?", ...;
* ``combined`` -- paraphrase, other options and out-of-range sound at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from r1aqa_pl.benchmarks.mmar import MODALITIES
from r1aqa_pl.benchmarks.mmau import DOMAINS

NOISE = 0.002  # background noise std: no clip is digital silence
VERSION = 3  # the set's recipe: 2 added the two-clip task, 3 the shifted set (and its words in the vocabulary)

# sub-task -> parameter -> (training range, shifted range); the shifted range never overlaps the training one.
# Levels are peak amplitudes, durations and gaps fractions of the clip, pitches in Hz (MIDI numbers for notes).
RANGES = {
    "beep counting": {"freq": ((800, 1500), (2500, 4000)), "amp": ((0.3, 0.6), (0.12, 0.25)),
                      "dur": ((0.06, 0.1), (0.03, 0.05)), "gap": ((0.08, 0.15), (0.17, 0.22))},
    "loudness": {"loud": ((0.4, 0.8), (0.18, 0.3)), "soft": ((0.02, 0.05), (0.006, 0.012)),
                 "dur": ((0.4, 0.8), (0.15, 0.3)), "freq": ((300, 2000), (2500, 4500))},
    "event order": {"low": ((150, 300), (350, 550)), "high": ((1500, 3000), (900, 1300)),
                    "gap": ((0.1, 0.2), (0.03, 0.08))},
    "note pitch": {"high": ((72, 85), (86, 94)), "low": ((40, 53), (31, 39))},  # MIDI, [lo, hi)
    "chord quality": {"root": ((55, 68), (70, 79))},  # MIDI, [lo, hi)
    "tempo": {"fast": ((0.06, 0.09), (0.035, 0.05)), "slow": ((0.22, 0.3), (0.33, 0.45)),
              "freq": ((1000, 2000), (300, 700))},
    "speaker pitch": {"high": ((190, 280), (300, 380)), "low": ((85, 140), (62, 78))},
    "intonation": {"lo": ((95, 125), (160, 200)), "factor": ((1.5, 1.8), (1.25, 1.4))},
}
RANGES["louder clip"] = RANGES["loudness"]  # two clips, each drawn as in loudness


def _ranges(sub: str, shift: bool) -> dict:
    """The parameter ranges of a sub-task: the training ones, or the shifted ones."""
    return {k: v[1 if shift else 0] for k, v in RANGES[sub].items()}


def _env(n: int, fade: int) -> np.ndarray:
    """Raised-cosine fade in/out, so onsets are bursts rather than clicks."""
    e = np.ones(n)
    fade = max(1, min(fade, n // 2))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    e[:fade], e[n - fade:] = ramp, ramp[::-1]
    return e


def _tone(freqs, amps, n: int, sr: int, phase=0.0) -> np.ndarray:
    t = np.arange(n) / sr
    return sum(a * np.sin(2 * np.pi * f * t + phase) for f, a in zip(freqs, amps)) * _env(n, int(0.01 * sr))


def _place(x: np.ndarray, sig: np.ndarray, start: int) -> None:
    x[start:start + len(sig)] += sig[: len(x) - start]


def _beeps(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """a+1 beeps (the answer index 0/1/2 means one/two/three), separated by clear gaps."""
    p = _ranges("beep counting", shift)
    T, f, amp = len(x), rng.uniform(*p["freq"]), rng.uniform(*p["amp"])
    dur, gap = int(rng.uniform(*p["dur"]) * T), int(rng.uniform(*p["gap"]) * T)
    span = (a + 1) * dur + a * gap
    start = int(rng.uniform(0.05 * T, T - span - 0.05 * T))
    for k in range(a + 1):
        _place(x, _tone([f], [amp], dur, sr), start + k * (dur + gap))


def _loudness(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = loud, 1 = soft: the same kind of tone, 20+ dB apart."""
    p, T = _ranges("loudness", shift), len(x)
    amp = rng.uniform(*p["loud"]) if a == 0 else rng.uniform(*p["soft"])
    dur = int(rng.uniform(*p["dur"]) * T)
    _place(x, _tone([rng.uniform(*p["freq"])], [amp], dur, sr), int(rng.uniform(0.05 * T, T - dur - 0.05 * T)))


def _order(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = the low tone (150-300 Hz) first, 1 = the high tone (1500-3000 Hz) first."""
    p = _ranges("event order", shift)
    T, dur, gap = len(x), int(0.3 * len(x)), int(rng.uniform(*p["gap"]) * len(x))
    low, high = rng.uniform(*p["low"]), rng.uniform(*p["high"])
    first, second = (low, high) if a == 0 else (high, low)
    start = int(rng.uniform(0.03, 0.15) * T)
    _place(x, _tone([first], [rng.uniform(0.3, 0.6)], dur, sr), start)
    _place(x, _tone([second], [rng.uniform(0.3, 0.6)], dur, sr), start + dur + gap)


def _decay(n: int, sr: int, tau: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * sr))


def _note(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = high (MIDI 72-84, 523-1047 Hz), 1 = low (MIDI 40-52, 82-165 Hz): a plucked note with harmonics."""
    p = _ranges("note pitch", shift)
    f0 = 440 * 2 ** (((rng.integers(*p["high"]) if a == 0 else rng.integers(*p["low"])) - 69) / 12)
    n = int(rng.uniform(0.6, 0.9) * len(x))
    harm = [h for h in range(1, 5) if h * f0 < 0.45 * sr]
    sig = _tone([h * f0 for h in harm], [0.5 / h for h in harm], n, sr) * _decay(n, sr, 0.6)
    _place(x, sig, int(0.05 * len(x)))


def _chord(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = major (root, +4, +7 semitones), 1 = minor (root, +3, +7); root 196-392 Hz."""
    root = 440 * 2 ** ((rng.integers(*_ranges("chord quality", shift)["root"]) - 69) / 12)
    fs = [root * 2 ** (s / 12) for s in (0, 4 if a == 0 else 3, 7)]
    n = int(rng.uniform(0.7, 0.9) * len(x))
    sig = _tone(fs + [2 * f for f in fs], [0.25] * 3 + [0.04] * 3, n, sr) * _decay(n, sr, 1.5)
    _place(x, sig, int(0.05 * len(x)))


def _tempo(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = fast (a beat every 6-9 % of the clip), 1 = slow (every 22-30 %): short decaying clicks."""
    p, T = _ranges("tempo", shift), len(x)
    step = int((rng.uniform(*p["fast"]) if a == 0 else rng.uniform(*p["slow"])) * T)
    dur, f = int(0.4 * step), rng.uniform(*p["freq"])
    click = _tone([f], [rng.uniform(0.3, 0.6)], dur, sr) * _decay(dur, sr, dur / sr / 4)
    for start in range(int(rng.uniform(0.0, 0.05) * T), T - dur, step):
        _place(x, click, start)


VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (390, 1990, 2550),
          "o": (570, 840, 2410), "u": (440, 1020, 2240)}


def _voice(rng, f0: np.ndarray, sr: int) -> np.ndarray:
    """A vowel: harmonics of a (time-varying) f0, shaped by three formant resonances, with slight vibrato."""
    n = len(f0)
    formants = VOWELS[sorted(VOWELS)[rng.integers(len(VOWELS))]]
    f0 = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * np.arange(n) / sr))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = np.zeros(n)
    for h in range(1, int(0.45 * sr / f0.max()) + 1):
        fh = h * f0
        gain = 0.3 + sum(1 / (1 + ((fh - F) / 80) ** 2) for F in formants)  # floor keeps f0 audible
        sig += gain / h * np.sin(h * phase)
    return 0.5 * sig / np.abs(sig).max() * _env(n, int(0.03 * sr))


def _speaker(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = high voice (f0 190-280 Hz), 1 = low voice (f0 85-140 Hz)."""
    p = _ranges("speaker pitch", shift)
    n = int(rng.uniform(0.6, 0.9) * len(x))
    f0 = rng.uniform(*p["high"]) if a == 0 else rng.uniform(*p["low"])
    _place(x, _voice(rng, np.full(n, f0), sr), int(0.05 * len(x)))


def _intonation(rng, a: int, x: np.ndarray, sr: int, shift: bool = False) -> None:
    """0 = rising, 1 = falling: f0 glides by a factor 1.5-1.8 between ~100 and ~200 Hz."""
    p = _ranges("intonation", shift)
    n = int(rng.uniform(0.7, 0.9) * len(x))
    lo = rng.uniform(*p["lo"])
    ends = (lo, lo * rng.uniform(*p["factor"]))
    f0 = np.geomspace(*(ends if a == 0 else ends[::-1]), n)
    _place(x, _voice(rng, f0, sr), int(0.05 * len(x)))


def _louder(rng, a: int, xs: list[np.ndarray], sr: int, shift: bool = False) -> None:
    """Two clips, 0 = the first is the loud one, 1 = the second: one loud tone, one soft, each as in loudness."""
    for k, x in enumerate(xs):
        _loudness(rng, 0 if k == a else 1, x, sr, shift)


_louder.clips = 2  # a generator of several clips fills a list of arrays


# domain -> [(sub-category, difficulty, question, choices, generator(rng, answer_index, x, sr))]
TASKS = {
    "sound": [("beep counting", "medium", "how many beeps are there?", ["one", "two", "three"], _beeps),
              ("loudness", "easy", "is the sound loud or soft?", ["loud", "soft"], _loudness),
              ("event order", "medium", "which tone comes first?", ["low tone", "high tone"], _order),
              ("louder clip", "medium", "which clip is louder?", ["the first clip", "the second clip"], _louder)],
    "music": [("note pitch", "easy", "is the note high or low?", ["high", "low"], _note),
              ("chord quality", "hard", "is the chord major or minor?", ["major", "minor"], _chord),
              ("tempo", "easy", "is the tempo fast or slow?", ["fast", "slow"], _tempo)],
    "speech": [("speaker pitch", "easy", "is the voice high or low?", ["high", "low"], _speaker),
               ("intonation", "medium", "does the voice rise or fall?", ["rising", "falling"], _intonation)],
}


# ---- the shifted set: what training never shows

SHIFTS = ("wording", "options", "sound", "form", "combined")
# sub-task -> two held-out wordings of its question (a record's wording is drawn at random: never tied to its answer)
PARAPHRASES = {
    "beep counting": ["how many beeps do you hear?", "what is the number of beeps?"],
    "loudness": ["how loud is the sound?", "is this sound soft or loud?"],
    "event order": ["which tone do you hear first?", "which tone is played first?"],
    "louder clip": ["which of the two clips is louder?", "which clip has the louder sound?"],
    "note pitch": ["is the pitch of the note high or low?", "how high is the note?"],
    "chord quality": ["is this a major or a minor chord?", "what is the quality of the chord?"],
    "tempo": ["how fast is the tempo?", "is the beat fast or slow?"],
    "speaker pitch": ["does the speaker have a high or a low voice?", "how high is the voice?"],
    "intonation": ["is the pitch of the voice rising or falling?", "does the voice go up or down?"],
}
# sub-task -> its choices in another order; an added choice (four, both at once, neither clip, flat) is never right
OPTIONS = {
    "beep counting": ["three", "one", "four", "two"],
    "loudness": ["soft", "loud"],
    "event order": ["high tone", "both at once", "low tone"],
    "louder clip": ["the second clip", "neither clip", "the first clip"],
    "note pitch": ["low", "high"],
    "chord quality": ["minor", "major"],
    "tempo": ["slow", "fast"],
    "speaker pitch": ["low", "high"],
    "intonation": ["falling", "flat", "rising"],
}
# domain -> [(sub-task, difficulty, question, choices, generator, the generator's answer index per choice, form)]:
# families asked in a form training never uses (sounds in the training ranges)
FORMS = {
    "sound": [("louder clip", "medium", "is the first clip softer than the second?", ["yes", "no"], _louder, (1, 0),
               "yes/no"),
              ("louder clip", "medium", "which clip is softer?", ["the first clip", "the second clip"], _louder, (1, 0),
               "inverted"),
              ("event order", "medium", "which tone comes last?", ["low tone", "high tone"], _order, (1, 0),
               "inverted")],
    "music": [("note pitch", "easy", "is the note low?", ["yes", "no"], _note, (1, 0), "yes/no"),
              ("tempo", "easy", "is the tempo slow?", ["yes", "no"], _tempo, (1, 0), "yes/no")],
    "speech": [("speaker pitch", "easy", "is the voice low?", ["yes", "no"], _speaker, (1, 0), "yes/no"),
               ("intonation", "medium", "does the voice fall?", ["yes", "no"], _intonation, (1, 0), "yes/no")],
}


def synth_vocabulary() -> list[str]:
    """Every word and punctuation token of the questions and choices, the shifted set's included (for a tiny
    word-level tokenizer: a held-out wording is new to the policy's training, not out of its vocabulary)."""
    texts = [t for tasks in TASKS.values() for _, _, q, cs, _ in tasks for t in [q, *cs]]
    texts += [t for qs in PARAPHRASES.values() for t in qs] + [t for cs in OPTIONS.values() for t in cs]
    texts += [t for forms in FORMS.values() for _, _, q, cs, *_ in forms for t in [q, *cs]]
    return sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})


def _items(n: int):
    """(domain, task, answer index) for n records: cycle domains, then sub-tasks, then answers (balanced)."""
    for i in range(n):
        domain = DOMAINS[i % len(DOMAINS)]
        tasks = TASKS[domain]
        j = i // len(DOMAINS)
        task = tasks[j % len(tasks)]
        yield i, domain, task, (j // len(tasks)) % len(task[3])


def _clips(rng, task, a: int, n: int, sr: int, shift: bool = False) -> list[np.ndarray]:
    """The question's clips (one for most tasks), each ``n`` samples of noise with the task's signal (drawn from
    the shifted parameter ranges when ``shift``)."""
    gen, k = task[4], getattr(task[4], "clips", 1)
    xs = [rng.normal(0.0, NOISE, n) for _ in range(k)]
    gen(rng, a, xs if k > 1 else xs[0], sr, shift=shift)
    return [np.clip(x, -1.0, 1.0) for x in xs]


def _write_clips(out: Path, name: str, clips: list[np.ndarray], sr: int) -> str | list[str]:
    """Write a question's clips under ``audios/``; its audio path (a list for several clips)."""
    names = [name] if len(clips) == 1 else [f"{name}_{k + 1}" for k in range(len(clips))]
    for n, x in zip(names, clips):
        sf.write(out / "audios" / f"{n}.wav", x, sr, "PCM_16")
    paths = [f"./audios/{n}.wav" for n in names]
    return paths[0] if len(paths) == 1 else paths


# MMAR's layers for the synthetic sub-tasks: a level or rate read off the signal, or a pattern to perceive
LAYERS = {"loudness": "Signal Layer", "note pitch": "Signal Layer", "speaker pitch": "Signal Layer",
          "tempo": "Signal Layer", "beep counting": "Perception Layer", "event order": "Perception Layer",
          "chord quality": "Perception Layer", "intonation": "Perception Layer"}


def _mmar_items(n: int):
    """(index, modality, asked domain, task, answer index, [other domains]) for n MMAR-format records:
    cycle the seven modalities; a mix asks about each of its domains in turn, answers balanced per task."""
    asked_count: dict[str, int] = {}
    for i in range(n):
        modality = MODALITIES[i % len(MODALITIES)]
        domains = modality.removeprefix("mix-").split("-")
        k = i // len(MODALITIES)
        asked = domains[k % len(domains)]
        tasks = [t for t in TASKS[asked] if getattr(t[4], "clips", 1) == 1]  # an MMAR item has one clip
        j = asked_count.get(asked, 0)
        asked_count[asked] = j + 1
        task = tasks[j % len(tasks)]
        yield i, modality, asked, task, (j // len(tasks)) % len(task[3]), [d for d in domains if d != asked]


def _write_mmar(out: Path, n: int, rng, n_samples: int, sr: int) -> None:
    records = []
    for i, modality, _, task, a, others in _mmar_items(n):
        sub, _, q, choices, gen = task
        x = rng.normal(0.0, NOISE, n_samples)
        gen(rng, a, x, sr)
        for d in others:  # a distractor of each other domain, quieter than the asked-about signal
            single = [t for t in TASKS[d] if getattr(t[4], "clips", 1) == 1]
            distractor = single[rng.integers(len(single))]
            y = np.zeros(n_samples)
            distractor[4](rng, int(rng.integers(len(distractor[3]))), y, sr)
            x += 0.3 * y
        name = f"mmar_{i:04d}"
        sf.write(out / "audios" / f"{name}.wav", np.clip(x, -1.0, 1.0), sr, "PCM_16")
        records.append({"id": f"synthetic-{name}", "audio_path": f"./audios/{name}.wav", "question": q,
                        "choices": choices, "answer": choices[a], "modality": modality, "category": LAYERS[sub],
                        "sub-category": sub, "language": None, "source": "synthetic"})
    (out / "mmar.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _shifted_items(n: int):
    """(index, shift kind, domain, sub-task spec, answer index) for n shifted records: cycle the kinds, then
    domains, then the kind's sub-tasks of that domain, then answers (balanced within every kind and sub-task).
    A spec is (sub-task, difficulty, question, choices, generator, generator's answer per choice, form) with the
    training question and choices; the kind decides what :func:`_write_shifted` changes."""
    for i in range(n):
        kind = SHIFTS[i % len(SHIFTS)]
        k = i // len(SHIFTS)
        domain = DOMAINS[k % len(DOMAINS)]
        if kind == "form":
            tasks = FORMS[domain]
        else:
            tasks = [(sub, diff, q, cs, gen, tuple(range(len(cs))), None) for sub, diff, q, cs, gen in TASKS[domain]]
        j = k // len(DOMAINS)
        spec = tasks[j % len(tasks)]
        yield i, kind, domain, spec, (j // len(tasks)) % len(spec[3])


def _write_shifted(out: Path, n: int, rng, n_samples: int, sr: int) -> None:
    records = []
    for i, kind, domain, spec, a in _shifted_items(n):
        sub, diff, q, choices, gen, to_gen, form = spec
        answer = choices[a]
        if kind in ("wording", "combined"):
            q = PARAPHRASES[sub][int(rng.integers(len(PARAPHRASES[sub])))]
        if kind in ("options", "combined"):
            choices = OPTIONS[sub]
        detail = {"wording": "paraphrase", "sound": "out-of-range sound", "form": form, "combined": "all three",
                  "options": "reordered" + (" + distractor" if len(choices) > len(spec[3]) else "")}[kind]
        clips = _clips(rng, (sub, diff, q, choices, gen), to_gen[a], n_samples, sr,
                       shift=kind in ("sound", "combined"))
        name = f"shift_{i:04d}"
        records.append({"id": f"synthetic-{name}", "audio_id": _write_clips(out, name, clips, sr), "question": q,
                        "choices": choices, "answer": answer, "dataset": f"synthetic-{domain}", "task": domain,
                        "split": "test-shifted", "category": "Perception", "sub-category": sub, "difficulty": diff,
                        "shift": kind, "shift_detail": detail})
    (out / "test-shifted.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


def synth(out_dir: str, n_train: int = 600, n_test: int = 150, seed: int = 0, seconds: float = 2.0,
          sampling_rate: int = 16000, n_mmar: int = 70, n_shifted: int = 150) -> None:
    """Write a synthetic audio-QA set: train.jsonl (AVQA format), test-mini.json (MMAU format),
    mmar.jsonl (MMAR format, mixed modalities included), test-shifted.json (MMAU format, shifted), audios/*.wav.

    Args:
        out_dir: output folder (created; files of the same names are overwritten).
        n_train: training questions (cycled over the 3 domains, their sub-tasks and answers).
        n_test: test questions, likewise.
        n_mmar: MMAR-format questions (cycled over its 7 modalities; 0 writes none).
        n_shifted: shifted MMAU-format questions (cycled over the 5 kinds of shift, then domains, sub-tasks,
            answers; 0 writes none). Its own random stream: the other files do not depend on it.
        seed: the same seed gives byte-identical files; train and test use separate streams.
        seconds: clip length (the tiny model's window is 2 s).
        sampling_rate: clip sample rate.
    """
    out = Path(out_dir)
    (out / "audios").mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sampling_rate))
    rng = np.random.default_rng([seed, 0])
    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        for i, domain, task, a in _items(n_train):
            sub, diff, q, choices, _ = task
            name = f"train_{i:05d}"
            path = _write_clips(out, name, _clips(rng, task, a, n, sampling_rate), sampling_rate)
            rec = {"id": i, "video_name": name, "question_text": q, "multi_choice": choices, "answer": a,
                   "dataset_name": f"synthetic-{domain}", "audio_path": path,
                   "task": domain, "sub-category": sub, "difficulty": diff}
            f.write(json.dumps(rec) + "\n")
    rng = np.random.default_rng([seed, 1])
    test = []
    for i, domain, task, a in _items(n_test):
        sub, diff, q, choices, _ = task
        name = f"test_{i:04d}"
        path = _write_clips(out, name, _clips(rng, task, a, n, sampling_rate), sampling_rate)
        test.append({"id": f"synthetic-{name}", "audio_id": path, "question": q,
                     "choices": choices, "answer": choices[a], "dataset": f"synthetic-{domain}", "task": domain,
                     "split": "test-mini", "category": "Perception", "sub-category": sub, "difficulty": diff})
    (out / "test-mini.json").write_text(json.dumps(test, indent=1) + "\n", encoding="utf-8")
    if n_mmar:
        _write_mmar(out, n_mmar, np.random.default_rng([seed, 2]), n, sampling_rate)
    if n_shifted:
        _write_shifted(out, n_shifted, np.random.default_rng([seed, 3]), n, sampling_rate)
    print(f"synth: {n_train} train + {n_test} test + {n_mmar} MMAR-format + {n_shifted} shifted questions, "
          f"{seconds} s clips at {sampling_rate} Hz -> {out}")
