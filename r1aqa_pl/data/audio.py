"""Audio in: any WAV/FLAC/OGG file -> mono float32 at the model's rate, cut to the model's window.

soundfile needs no system libraries (``torchaudio.load`` now wants torchcodec + FFmpeg), and
torchaudio's sinc resampler is the one the Qwen2-Audio recipes use. Every failure is a
:class:`~r1aqa_pl.task.question.DataError` whose ``reason`` the data layer counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from r1aqa_pl.task.question import DataError

# frames read beyond the window before resampling, so the cut lands where a full decode would
_MARGIN = 256


def _fail(path, reason: str, message: str) -> DataError:
    return DataError(str(path), "audio", reason, message)


def audio_info(path: str | Path) -> dict:
    """Header-only look at a clip (cheap start-up check): sample_rate, channels, frames, seconds, subtype.

    Raises DataError ``missing_audio`` / ``unreadable_audio`` / ``empty_audio``.
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
        x = AF.resample(torch.from_numpy(x), int(sr), int(sampling_rate)).numpy()
    if max_samples is not None:
        x = x[:max_samples]
    return np.ascontiguousarray(x, dtype=np.float32)
