"""Audio decoding: every rate, channel layout and sample format becomes mono 16 kHz float32 in the window."""

import struct

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from r1aqa_pl.data.audio import audio_info, load_audio
from r1aqa_pl.task.question import DataError


def sine(sr, seconds=1.0, f=440.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(x, sr=16000):
    s = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[s.argmax()]


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 32000, 44100, 48000])
def test_rates_become_16k(tmp_path, sr):
    p = tmp_path / f"a{sr}.wav"
    sf.write(p, sine(sr), sr, "PCM_16")
    x = load_audio(p)
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) == 16000
    assert abs(peak_hz(x) - 440) <= 1.0
    assert np.sqrt(np.mean(x[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("fmt,subtype,tol", [
    ("WAV", "PCM_U8", 1 / 64), ("WAV", "PCM_16", 1e-4), ("WAV", "PCM_24", 1e-6), ("WAV", "PCM_32", 1e-6),
    ("WAV", "FLOAT", 1e-7), ("WAV", "DOUBLE", 1e-7), ("FLAC", "PCM_16", 1e-4), ("OGG", "VORBIS", 0.05),
])
def test_sample_formats(tmp_path, fmt, subtype, tol):
    p = tmp_path / f"a.{fmt.lower()}"
    ref = sine(16000)
    sf.write(p, ref, 16000, subtype, format=fmt)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.shape == ref.shape
    assert np.abs(x - ref).max() <= tol


def test_stereo_mixed_to_mono(tmp_path):
    p = tmp_path / "st.wav"
    left, right = sine(44100, amp=0.6), sine(44100, amp=0.2)
    sf.write(p, np.stack([left, right], 1), 44100, "FLOAT")
    x = load_audio(p)
    assert x.shape == (16000,)
    assert np.abs(x[2000:-2000]).max() == pytest.approx(0.4, abs=0.01)  # mean of the channels


def test_long_clip_cut_to_window_matches_full_decode(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, sine(44100, seconds=45.0, f=300.0), 44100, "PCM_16")
    x = load_audio(p, 16000, max_samples=30 * 16000)
    assert x.shape == (480000,) and x.dtype == np.float32
    full = AF.resample(torch.from_numpy(sf.read(p, dtype="float32")[0]), 44100, 16000).numpy()[:480000]
    np.testing.assert_allclose(x, full, atol=1e-5)  # reading only the window's frames changes nothing
    short = tmp_path / "short.wav"
    sf.write(short, sine(16000, seconds=0.5), 16000)
    assert load_audio(short, 16000, max_samples=32000).shape == (8000,)  # shorter clips are not padded here


def test_other_target_rate(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, sine(48000, seconds=2.0), 48000)
    assert load_audio(p, sampling_rate=24000, max_samples=30000).shape == (30000,)


def test_audio_info(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros((24000, 2), np.float32), 48000, "PCM_24")
    assert audio_info(p) == {"sample_rate": 48000, "channels": 2, "frames": 24000, "seconds": 0.5,
                             "subtype": "PCM_24"}


def test_cut_wav_is_truncated_audio_not_a_shorter_clip(tmp_path):
    """Issue 32 item 2: libsndfile reads a WAV cut in half as a clip half as long; its header says otherwise."""
    p = tmp_path / "a.wav"
    sf.write(p, sine(16000), 16000, "PCM_16")
    whole = p.read_bytes()
    p.write_bytes(whole[: len(whole) // 2])
    assert sf.info(p).frames == 7989  # what soundfile alone reports: a shorter clip, no error
    with pytest.raises(DataError) as e:
        audio_info(p)
    assert e.value.reason == "truncated_audio"
    assert str(e.value) == (f"{p}:audio: cut short: the WAV header declares 32000 bytes of samples, the file holds "
                            "15978 (50%); copy or prepare the clip again")
    # whole WAVs: one with a chunk after its samples, one whose header leaves the size open (written as a stream)
    tail = whole + b"LIST" + struct.pack("<I", 4) + b"INFO"
    p.write_bytes(tail[:4] + struct.pack("<I", len(tail) - 8) + tail[8:])
    assert audio_info(p)["frames"] == 16000
    p.write_bytes(whole[:40] + struct.pack("<I", 0xFFFFFFFF) + whole[44:])
    assert audio_info(p)["frames"] == 16000


def _bad_files(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x01not really a wave file" * 10)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    x = sine(16000)
    x[100] = np.nan
    sf.write(nan, x, 16000, "FLOAT")
    return {"missing_audio": tmp_path / "nope.wav", "unreadable_audio": garbage, "empty_audio": empty,
            "non_finite_audio": nan}


def test_errors_name_file_and_reason(tmp_path):
    for reason, p in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as e:
            load_audio(p)
        assert e.value.reason == reason and e.value.source == str(p) and e.value.where == "audio"
        assert str(p) in str(e.value)
        if reason != "non_finite_audio":  # only a full decode sees the samples
            with pytest.raises(DataError) as e:
                audio_info(p)
            assert e.value.reason == reason


def test_real_mmau_clip(mmau_json):
    clip = mmau_json.parent / "test-mini-audios" / "3fe64f3d-282c-4bc8-a753-68f8f6c35652.wav"
    info = audio_info(clip)
    assert (info["sample_rate"], info["channels"], info["seconds"]) == (32000, 1, 10.0)
    x = load_audio(clip, 16000, max_samples=480000)
    assert x.shape == (160000,) and x.dtype == np.float32
    assert np.isfinite(x).all() and 0.001 < np.sqrt(np.mean(x**2)) < 1.0
