"""Audio in: any WAV/FLAC/OGG file -> mono float32 at the model's rate, cut to the model's window.

soundfile needs no system libraries (``torchaudio.load`` now wants torchcodec + FFmpeg), and
torchaudio's sinc resampler is the one the Qwen2-Audio recipes use (imported only when a clip needs
resampling: scanning a data file does not load torch's ~0.7 GB). Every failure is a
:class:`~r1aqa_pl.task.question.DataError` whose ``reason`` the data layer counts.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from r1aqa_pl.task.question import DataError

# frames read beyond the window before resampling, so the cut lands where a full decode would
_MARGIN = 256


def _fail(path, reason: str, message: str) -> DataError:
    return DataError(str(path), "audio", reason, message)


def _wav_cut(path: Path) -> tuple[int, int] | None:
    """(sample bytes a WAV's header declares, sample bytes the file holds) when the file is cut short, else None.

    libsndfile quietly shrinks a cut WAV's frame count to what is there, so a clip cut in half by an
    interrupted copy would read as a clip half as long; its RIFF header still says how long it was.
    RF64/W64 and streamed WAVs (data size 0 or 0xFFFFFFFF) declare no usable size and are not judged.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                held = size - pos - 8
                return (n, held) if n not in (0, 0xFFFFFFFF) and n > held else None
            pos += 8 + n + (n & 1)
    return None


def audio_info(path: str | Path) -> dict:
    """Header-only look at a clip (cheap start-up check): sample_rate, channels, frames, seconds, subtype.

    Raises DataError ``missing_audio`` / ``unreadable_audio`` / ``empty_audio`` / ``truncated_audio``
    (a WAV holding fewer sample bytes than its header declares).
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(path, "missing_audio", "audio file not found")
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for bad headers
        raise _fail(path, "unreadable_audio", f"cannot read audio header ({e})") from None
    if info.frames <= 0:
        raise _fail(path, "empty_audio", "audio file has no samples")
    cut = _wav_cut(p) if info.format == "WAV" else None
    if cut:
        raise _fail(path, "truncated_audio", f"cut short: the WAV header declares {cut[0]} bytes of samples, the "
                    f"file holds {cut[1]} ({cut[1] / cut[0]:.0%}); copy or prepare the clip again")
    return {"sample_rate": int(info.samplerate), "channels": int(info.channels),
            "frames": int(info.frames), "seconds": info.frames / info.samplerate,
            "subtype": info.subtype}


def load_audio(path: str | Path, sampling_rate: int = 16000, max_samples: int | None = None) -> np.ndarray:
    """Decode ``path`` to a 1-D float32 array: mono (channel mean), resampled, at most ``max_samples`` long.

    ``max_samples`` is the model's window (the feature extractor's ``n_samples``); only the frames
    needed for it are decoded, so a long clip costs no more than a window's worth.
    Raises DataError ``missing_audio`` / ``unreadable_audio`` / ``empty_audio`` / ``non_finite_audio``.
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(path, "missing_audio", "audio file not found")
    try:
        with sf.SoundFile(str(p)) as f:
            sr = f.samplerate
            frames = -1 if max_samples is None else math.ceil(max_samples * sr / sampling_rate) + _MARGIN
            data = f.read(frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise _fail(path, "unreadable_audio", f"cannot decode audio ({e})") from None
    if data.size == 0:
        raise _fail(path, "empty_audio", "audio file has no samples")
    x = data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(x).all():
        raise _fail(path, "non_finite_audio", "audio contains NaN or infinite samples")
    if sr != sampling_rate:
        import torch
        import torchaudio.functional as AF

        x = AF.resample(torch.from_numpy(x), int(sr), int(sampling_rate)).numpy()
    if max_samples is not None:
        x = x[:max_samples]
    return np.ascontiguousarray(x, dtype=np.float32)


def load_clips(q, sampling_rate: int = 16000, max_samples: int | None = None):
    """A question's audio as the families take it (:func:`load_audio` per clip): one array, or a list of them in
    order for a question over several clips; ``max_samples`` applies to each clip."""
    clips = [load_audio(c, sampling_rate, max_samples) for c in q.clips or [""]]
    return clips[0] if len(clips) == 1 else clips
