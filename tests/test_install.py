"""``make install``: a disk too small for torch stops the install before pip fills it."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_install_stops_before_pip_when_the_disk_is_too_small(tmp_path):
    """The check runs right after the venv is made, before any download, and names the free space and the knob."""
    python = shutil.which("python3")
    if python is None or shutil.which("make") is None:
        pytest.skip("needs python3 and make")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("this python has torch: the venv would reuse it and skip the check")
    venv = tmp_path / "venv"
    res = subprocess.run(["make", "-C", str(ROOT), "install", f"VENV={venv}", f"PYTHON={python}",
                          "MIN_FREE_GIB=1000000"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"GiB free on the disk of {venv}; torch (a CUDA build) with torchaudio needs about 1000000 GiB" \
        in res.stderr, res.stderr[-2000:]
    assert not (venv / ".installed").exists()
    assert "pip" not in res.stdout  # stopped before the pip upgrade (make echoes the commands it runs)
