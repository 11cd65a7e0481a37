"""``r1aqa prepare-avqa``: AVQA as its authors distribute it (``train_qa.json`` + videos) -> R1-AQA's training set.

Writes into ``out``::

    audio/<youtube id>_<start second>.wav   mono 16-bit PCM at 16 kHz, named as R1-AQA names them
    train.jsonl (val.jsonl)                 R1-AQA's JSONL: each source record + dataset_name + audio_path
                                            (relative, so the folder can move)
    report.json                             every record left out, with its reason and message
    data_card.json, data_card.md            counts, durations, rates, sources + sha256 (see card.py); the
                                            videos are counted, not hashed (tens of GB would take longer
                                            than decoding them)

Audio comes out of the videos with PyAV (the ``av`` package): its wheels bundle FFmpeg's libraries,
so ``pip install av`` is the whole set-up even on a machine with no system FFmpeg, and it does not
depend on torch. torchcodec needs FFmpeg's shared libraries installed on the system and its wheels
are built for one torch release each, which would tie data preparation to the training stack.
FFmpeg's own resampler and downmix are used, i.e. what ``ffmpeg -i V -ac 1 -ar 16000 W`` gives.

Many AVQA videos have vanished from YouTube (R1-AQA trained on ~38k of ~40k records): a record
whose video is missing, unreadable, without an audio track or silent is left out of the JSONL,
counted per reason and listed in ``report.json`` -- never dropped silently. A clip is written to a
temporary name and renamed when complete, so an interrupted run resumes where it stopped and a
re-run skips finished clips; the outputs depend only on the inputs (byte-identical on a re-run,
for any number of workers).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from r1aqa_pl.data.card import source_entry, split_summary, write_card
from r1aqa_pl.data.formats import avqa_audio_name, iter_questions
from r1aqa_pl.task.question import DataError, Question

AUDIO_DIR = "audio"


def decode_video_audio(path: str | Path, sampling_rate: int = 16000) -> np.ndarray:
    """The first audio track of a video (any container FFmpeg reads) as mono 16-bit samples at ``sampling_rate``.

    Resampled and downmixed by FFmpeg's libswresample to 16-bit output, as ``ffmpeg -ac 1 -ar 16000
    out.wav`` does (stereo becomes (L + R) / 2; a float output would get a +3 dB centre gain instead).
    Raises DataError ``no_audio_track`` or ``unreadable_video``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(str(path), "video", "no_audio_track", "the video has no audio track")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.FFmpegError as e:
        raise DataError(str(path), "video", "unreadable_video", f"cannot decode ({e.strerror or e})") from None
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


def _make_clip(job: tuple[str, str, int, float]) -> dict:
    """Worker: one video -> one WAV (skipped when a finished one is there). Returns the clip's
    ``seconds`` and ``sample_rate``, or the ``reason`` and ``message`` it failed with."""
    video, wav, sampling_rate, silence_peak = job
    out = Path(wav)
    if out.is_file():  # only complete clips carry the final name
        try:
            info = sf.info(wav)
            if info.samplerate == sampling_rate and info.frames > 0:
                return {"seconds": info.frames / sampling_rate, "sample_rate": sampling_rate, "done_before": True}
        except sf.LibsndfileError:  # damaged since: made again
            pass
    try:
        x = decode_video_audio(video, sampling_rate)
    except DataError as e:
        return {"reason": e.reason, "message": str(e).split(": ", 1)[1]}
    peak = int(np.abs(x.astype(np.int32)).max(initial=0)) / 32768
    if peak < silence_peak:
        return {"reason": "silent_audio", "message": f"the audio track is silent (peak {peak:.2g} < silence_peak "
                                                     f"{silence_peak:g}, {x.size} samples)"}
    part = out.with_name(out.name + ".part")
    sf.write(part, x, sampling_rate, subtype="PCM_16", format="WAV")
    os.replace(part, out)
    return {"seconds": x.size / sampling_rate, "sample_rate": sampling_rate}


def _index_videos(videos: Path) -> dict[str, Path]:
    """video name (file stem) -> file, over the folder and its subfolders; the first in sorted order wins."""
    if not videos.is_dir():
        raise DataError(str(videos), "folder", "missing_file", "videos folder not found")
    index: dict[str, Path] = {}
    for p in sorted(videos.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            index.setdefault(p.stem, p)
    return index


def _read_split(qa: Path, naming: str) -> list[tuple[dict, str] | dict]:
    """(record, wav name) per usable record, or a problem dict (id, where, reason, message) per bad one."""
    items = []
    for item in iter_questions(qa, fmt="avqa_json", naming=naming):
        if isinstance(item, DataError):
            items.append({"where": item.where, "reason": item.reason, "message": str(item)})
            continue
        assert isinstance(item, Question)
        name = item.raw.get("video_name")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            items.append(
                {
                    "id": item.id,
                    "where": item.source,
                    "reason": "bad_field",
                    "message": f"{item.source}: id={item.id}: video_name must be a plain file name, got {name!r}",
                }
            )
            continue
        items.append((item.raw, avqa_audio_name(name, naming)))
    return items


def _run(jobs: list, workers: int) -> list[dict]:
    """Every job through :func:`_make_clip`, in job order (deterministic for any ``workers``), with a progress bar."""
    from tqdm import tqdm

    bar = {"total": len(jobs), "desc": "prepare-avqa: decode", "unit": "clip"}
    if workers <= 1:
        return list(tqdm(map(_make_clip, jobs), **bar))
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_make_clip, jobs, chunksize=8), **bar))


def _r1aqa_record(raw: dict, wav: str) -> dict:
    """R1-AQA's JSONL record: the source record, then ``dataset_name`` and the relative ``audio_path``."""
    rec = {k: v for k, v in raw.items() if k not in ("dataset_name", "audio_path")}
    return {**rec, "dataset_name": raw.get("dataset_name") or "AVQA", "audio_path": f"{AUDIO_DIR}/{wav}"}


def prepare_avqa(
    *,
    qa: str,
    videos: str,
    out: str,
    workers: int = 1,
    val_qa: str | None = None,
    sampling_rate: int = 16000,
    silence_peak: float = 1e-4,
    naming: Literal["r1aqa", "video_name"] = "r1aqa",
    max_missing_fraction: float = 0.1,
) -> int:
    """AVQA from its authors' download (train_qa.json + videos) to R1-AQA's JSONL and 16 kHz WAVs.

    Exits non-zero when a split has no usable record or loses more than ``max_missing_fraction``.

    Args:
        qa: AVQA's train_qa.json (a JSON list; R1-AQA's JSONL is read too).
        videos: the folder of AVQA's videos, ``<video_name>.<ext>`` (subfolders are searched).
        out: output folder (audio/, train.jsonl, val.jsonl, report.json, data_card.json/.md).
        workers: parallel decoding processes (the output does not depend on it).
        val_qa: AVQA's val_qa.json, prepared the same way into val.jsonl.
        sampling_rate: the WAVs' rate (Qwen2-Audio's feature extractor wants 16000).
        silence_peak: a track whose peak absolute sample is below this is left out as silent_audio.
        naming: WAV names, "r1aqa" (``<youtube id>_<start second>.wav``) or "video_name".
        max_missing_fraction: the largest share of a split that may be left out before the exit is non-zero.
    """
    out_dir = Path(out)
    (out_dir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    index = _index_videos(Path(videos))
    sources = {"train": Path(qa), **({"val": Path(val_qa)} if val_qa else {})}
    splits = {name: _read_split(path, naming) for name, path in sources.items()}
    names: dict[str, str] = {}  # wav -> video name, in first-appearance order
    for items in splits.values():
        for item in items:
            if isinstance(item, tuple):
                names.setdefault(item[1], item[0]["video_name"])
    found = [w for w, v in names.items() if v in index]
    jobs = [(str(index[names[w]]), str(out_dir / AUDIO_DIR / w), sampling_rate, silence_peak) for w in found]
    clips = dict(zip(found, _run(jobs, workers)))
    for w, v in names.items():
        clips.setdefault(w, {"reason": "missing_video", "message": f"no file named {v}.* under {Path(videos).name}/"})

    summaries, report, status = {}, {}, 0
    for name, items in splits.items():
        summaries[name], report[name] = _write_split(out_dir, name, items, clips)
        s = summaries[name]
        lost = (s["records"] - s["usable"]) / max(1, s["records"])
        print(
            f"prepare-avqa: {name}: {s['usable']} of {s['records']} records usable -> {out_dir / s['file']}; "
            f"left out: {s['missing_by_reason'] or 'none'}"
        )
        if not s["usable"] or lost > max_missing_fraction:
            print(f"prepare-avqa: {name}: FAIL: {lost:.1%} left out (max_missing_fraction={max_missing_fraction})")
            status = 1
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_card(
        out_dir,
        "AVQA",
        "r1aqa prepare-avqa",
        summaries,
        [source_entry(p, f"{n} questions") for n, p in sources.items()],
        {"sampling_rate": sampling_rate, "videos_found": len(index)},
    )
    n_before = sum(1 for w in found if clips[w].get("done_before"))
    print(
        f"prepare-avqa: {len(names)} clips ({n_before} finished before this run); report: {out_dir / 'report.json'}; "
        f"card: {out_dir / 'data_card.md'}"
    )
    return status


def _write_split(out_dir: Path, name: str, items: list, clips: dict[str, dict]) -> tuple[dict, list[dict]]:
    """Write ``<name>.jsonl`` with the records whose clip was made; returns (card summary, problems)."""
    usable, problems = [], []
    for item in items:
        if isinstance(item, dict):  # a bad record
            problems.append(item)
            continue
        raw, wav = item
        if "reason" in clips[wav]:
            problems.append(
                {
                    "id": raw.get("id"),
                    "video_name": raw["video_name"],
                    "reason": clips[wav]["reason"],
                    "message": clips[wav]["message"],
                }
            )
        else:
            usable.append(_r1aqa_record(raw, wav))
    file = f"{name}.jsonl"
    (out_dir / file).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in usable), encoding="utf-8")
    used = dict.fromkeys(r["audio_path"].split("/", 1)[1] for r in usable)
    summary = split_summary(
        file, usable, problems, "task", "question_type", [clips[w] for w in used], default_domain="sound"
    )
    return summary, problems
