"""``r1aqa prepare-avqa``: AVQA as its authors distribute it (``train_qa.json`` + videos) -> R1-AQA's training set.

Writes into ``out``::

    audio/<youtube id>_<start second>.wav   mono 16-bit PCM at 16 kHz, named as R1-AQA names them
    train.jsonl (val.jsonl)                 R1-AQA's JSONL: each source record + dataset_name + audio_path
                                            (relative, so the folder can move)
    report.json                             every record left out, with its reason and message
    manifest.json                           each finished clip's source video (name, bytes), sample rate,
                                            frames and sha256: what a re-run checks before trusting a clip
    data_card.json, data_card.md            counts, durations, rates, sources + sha256 (see card.py); the
                                            videos are counted, not hashed (tens of GB would take longer
                                            than decoding them)

Audio comes out of the videos with PyAV (the ``av`` package): its wheels bundle FFmpeg's libraries,
so ``pip install av`` is the whole set-up even on a machine with no system FFmpeg, and it does not
depend on torch. torchcodec needs FFmpeg's shared libraries installed on the system and its wheels
are built for one torch release each, which would tie data preparation to the training stack.
FFmpeg's own resampler and downmix are used, i.e. what ``ffmpeg -i V -ac 1 -ar 16000 W`` gives.

Many AVQA videos have vanished from YouTube (R1-AQA trained on ~38k of ~40k records): a record
whose video is missing, unreadable, cut short (its audio decodes shorter than the stream states),
without an audio track or silent, or whose clip name another video's maps to too, is left out of
the JSONL, counted per reason and listed in ``report.json`` -- never dropped silently. A clip is
written to a temporary name and renamed when complete, and recorded in ``manifest.json`` (rewritten
atomically as the run goes), so an interrupted run resumes where it stopped; a re-run skips a clip
only while its file still matches the manifest (a clip cut or changed since is made again). The
outputs depend only on the inputs (byte-identical on a re-run, for any number of workers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from r1aqa_pl.data.card import sha256, source_entry, split_summary, write_card, write_text_atomic
from r1aqa_pl.data.formats import avqa_audio_name, iter_questions
from r1aqa_pl.task.question import DataError, Question

AUDIO_DIR = "audio"
MANIFEST = "manifest.json"
MANIFEST_KEYS = ("video", "video_bytes", "sample_rate", "frames", "sha256")
MANIFEST_EVERY = 500  # finished clips between manifest saves: what an interrupted run may have to redo
# a track that decodes shorter than its stated duration by more than this is cut short, not a clip
TRUNCATED_SECONDS, TRUNCATED_FRACTION = 0.1, 0.02


def decode_video_audio(path: str | Path, sampling_rate: int = 16000) -> np.ndarray:
    """The first audio track of a video (any container FFmpeg reads) as mono 16-bit samples at ``sampling_rate``.

    Resampled and downmixed by FFmpeg's libswresample to 16-bit output, as ``ffmpeg -ac 1 -ar 16000
    out.wav`` does (stereo becomes (L + R) / 2; a float output would get a +3 dB centre gain instead).
    A video cut mid-file whose index sits at the front decodes without error to a shorter track, so
    the decoded length is compared with the stated duration (the stream's, else the container's).
    Raises DataError ``no_audio_track``, ``unreadable_video`` or ``truncated_audio``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(str(path), "video", "no_audio_track", "the video has no audio track")
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                stated = float(stream.duration * stream.time_base)
            else:
                stated = container.duration / av.time_base if container.duration else None
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
            chunks, failed = [], None
            try:
                for frame in container.decode(stream):
                    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            except av.FFmpegError as e:  # a file cut inside a packet fails there: judged by the length below
                failed = e
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.FFmpegError as e:
        failed, chunks, stated = e, [], None
    x = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    got = x.size / sampling_rate
    if stated and got < stated - max(TRUNCATED_SECONDS, TRUNCATED_FRACTION * stated):
        raise DataError(str(path), "video", "truncated_audio", f"the audio decodes to {got:.2f} s of the "
                        f"{stated:.2f} s the video states{', then fails' if failed else ''}: the file is cut short; "
                        "download the video again")
    if failed:
        raise DataError(str(path), "video", "unreadable_video", f"cannot decode ({failed.strerror or failed})")
    return x


def _make_clip(job: tuple[str, str, int, float, dict | None]) -> dict:
    """Worker: one video -> one WAV, or the finished WAV when it still matches its manifest ``entry``.

    Returns the clip's manifest entry (video, video_bytes, sample_rate, frames, sha256) with its ``seconds``,
    or the ``reason`` and ``message`` it failed with."""
    video, wav, sampling_rate, silence_peak, entry = job
    out, video_bytes = Path(wav), os.stat(video).st_size
    made = {"video": Path(video).stem, "video_bytes": video_bytes, "sample_rate": sampling_rate}
    if entry and all(entry.get(k) == v for k, v in made.items()) and out.is_file() and sha256(out) == entry["sha256"]:
        return {**entry, "seconds": entry["frames"] / sampling_rate, "done_before": True}
    try:
        x = decode_video_audio(video, sampling_rate)
    except DataError as e:
        return {"reason": e.reason, "message": str(e).split(": ", 1)[1]}
    peak = int(np.abs(x.astype(np.int32)).max(initial=0)) / 32768
    if peak < silence_peak:
        return {"reason": "silent_audio", "message": f"the audio track is silent (peak {peak:.2g} < silence_peak "
                                                     f"{silence_peak:g}, {x.size} samples)"}
    buf = io.BytesIO()
    sf.write(buf, x, sampling_rate, subtype="PCM_16", format="WAV")
    part = out.with_name(out.name + ".part")  # only complete clips carry the final name
    part.write_bytes(buf.getvalue())
    os.replace(part, out)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    return {**made, "frames": x.size, "sha256": digest, "seconds": x.size / sampling_rate}


def _read_manifest(path: Path) -> dict[str, dict]:
    """wav name -> entry of the clips an earlier run finished; {} when there is none or it is damaged
    (then every clip is made again: a clip is never trusted unchecked)."""
    if not path.is_file():
        return {}
    try:
        clips = json.loads(path.read_text(encoding="utf-8"))["clips"]
        return {w: e for w, e in clips.items() if isinstance(e, dict) and all(k in e for k in MANIFEST_KEYS)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"prepare-avqa: {path} is damaged ({e}): every clip is made again")
        return {}


def _save_manifest(path: Path, clips: dict[str, dict]) -> None:
    entries = {w: {k: clips[w][k] for k in MANIFEST_KEYS} for w in sorted(clips)}
    write_text_atomic(path, json.dumps({"clips": entries}, indent=1, ensure_ascii=False) + "\n")


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


def _run(jobs: list, workers: int) -> Iterator[dict]:
    """Every job through :func:`_make_clip`, in job order (deterministic for any ``workers``), with a progress bar."""
    from tqdm import tqdm

    bar = {"total": len(jobs), "desc": "prepare-avqa: decode", "unit": "clip"}
    if workers <= 1:
        yield from tqdm(map(_make_clip, jobs), **bar)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from tqdm(pool.map(_make_clip, jobs, chunksize=8), **bar)


def _collision(wav: str, videos: list[str], naming: str) -> dict:
    both = "both" if len(videos) == 2 else "all"
    shown = ", ".join(map(repr, videos[:-1])) + f" and {videos[-1]!r}"
    return {
        "reason": "audio_name_collision",
        "message": f"videos {shown} {both} map to {AUDIO_DIR}/{wav} under naming {naming!r}, so none of them is "
        "used (one would get another's audio); prepare with --naming video_name to keep them apart",
    }


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
    videos_of: dict[str, list[str]] = {}  # wav -> the distinct video names mapped to it, in first-appearance order
    for items in splits.values():
        for item in items:
            if isinstance(item, tuple) and item[0]["video_name"] not in videos_of.setdefault(item[1], []):
                videos_of[item[1]].append(item[0]["video_name"])
    clips = {w: _collision(w, v, naming) for w, v in videos_of.items() if len(v) > 1}  # found before decoding
    names = {w: v[0] for w, v in videos_of.items() if len(v) == 1}
    found = [w for w, v in names.items() if v in index]
    manifest_path = out_dir / MANIFEST
    manifest = _read_manifest(manifest_path)
    jobs = [(str(index[names[w]]), str(out_dir / AUDIO_DIR / w), sampling_rate, silence_peak, manifest.get(w))
            for w in found]
    for i, (w, clip) in enumerate(zip(found, _run(jobs, workers)), 1):
        clips[w] = clip
        if "sha256" in clip:
            manifest[w] = clip
        else:
            manifest.pop(w, None)
        if i % MANIFEST_EVERY == 0:  # an interrupted run keeps what it finished
            _save_manifest(manifest_path, manifest)
    _save_manifest(manifest_path, {w: clips[w] for w in found if "sha256" in clips[w]})
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
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
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
        f"prepare-avqa: {len(videos_of)} clips ({n_before} finished before this run); "
        f"report: {out_dir / 'report.json'}; card: {out_dir / 'data_card.md'}"
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
    write_text_atomic(out_dir / file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in usable))
    used = dict.fromkeys(r["audio_path"].split("/", 1)[1] for r in usable)
    summary = split_summary(
        file, usable, problems, "task", "question_type", [clips[w] for w in used], default_domain="sound"
    )
    return summary, problems
