"""Shared fixtures: the real MMAU test-mini metadata (from ../shared) and a small synthetic set."""

from pathlib import Path

import pytest

SHARED = Path(__file__).parents[1].parent / "shared"
MMAU_JSON = SHARED / "data" / "mmau" / "mmau-test-mini.json"


@pytest.fixture(scope="session")
def mmau_json() -> Path:
    """The real MMAU test-mini JSON (1000 records, one real clip); skips only if shared/ is absent."""
    if not MMAU_JSON.is_file():
        pytest.skip(f"{MMAU_JSON} not present")
    return MMAU_JSON


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic set (48 train / 24 test, 2 s clips at 16 kHz), built once per session."""
    from r1aqa_pl.synth import synth

    d = tmp_path_factory.mktemp("synth")
    synth(str(d), n_train=48, n_test=24, seed=0)
    return d
