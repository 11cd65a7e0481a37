"""``make bench`` (``r1aqa bench``): it runs through, and its memory measure sees torch's allocations."""

from pathlib import Path

import pytest
import torch


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_audio", "phi4_multimodal"])  # Phi-4: audio merged in its embedding layer
def test_bench_runs_end_to_end_and_the_two_steps_agree(tmp_path, family):
    """``make bench`` in miniature (1 prompt, 1 repetition, 2 fit steps; Phi-4 at half the widths): it runs
    through and prints the goals, and the project's and the reference's loss and gradients on the same rollout
    agree."""
    import subprocess
    import sys

    profile = "1" if family == "qwen2_audio" else "0"  # the profile times the encoder through encode_audio
    widths = ["--hidden", "128", "--encoder-dim", "64"] if family == "phi4_multimodal" else []  # the width knobs
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "r1aqa_pl",
            "bench",
            "--prompts",
            "1",
            "--reps",
            "1",
            "--fit-steps",
            "2",
            "--eval-items",
            "2",
            "--eval-batch",
            "2",
            "--profile-prompts",
            profile,
            "--work",
            str(tmp_path),
            "--family",
            family,
            *widths,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert ("LM width 128, encoder width 64;" if widths else "LM width 256, encoder width 128;") in res.stdout
    goals = res.stdout[res.stdout.index("goals:") :]
    assert "same loss and gradients within 1e-5 relative" in goals
    assert goals.split("same loss and gradients")[1].splitlines()[0].endswith("-> met"), goals
    # one repetition: its back-to-back ratio is the medians' ratio
    row = next(line for line in res.stdout.splitlines() if line.startswith("| 1 prompt x"))
    speed_up, per_repetition = row.split("|")[4].strip(), row.split("|")[5].strip()
    assert per_repetition == f"{speed_up[:-1]}-{speed_up}", row


def test_bench_peak_rss_sees_torch_allocations():
    """``make bench`` reads peak memory from the kernel's resettable high-water mark."""

    from r1aqa_pl.tools.bench import PeakRSS

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc")
    for mib in (64, 8, 32):  # a smaller block after a larger one: the mark really was reset
        with PeakRSS() as m:
            torch.ones(mib << 18).sum()  # float32: mib MiB
        if m.mib != m.mib:  # nan: clear_refs not writable here
            pytest.skip("/proc/self/clear_refs not writable")
        assert abs(m.mib - mib) < 0.25 * mib + 2, (mib, m.mib)
