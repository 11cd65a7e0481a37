"""``demo.prepare`` per family: one family's demo never rebuilds the warm start that another's checkpoints
were trained from (``make demo FAMILY=qwen3_omni`` after a Qwen2-Audio run broke that run's ``.ckpt``)."""

from __future__ import annotations

import json
from pathlib import Path

from r1aqa_pl.recipes.demo import prepare
from r1aqa_pl.training.checkpointing import base_fingerprint


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_each_family_has_its_own_warm_start(tmp_path, capsys):
    small = dict(out=str(tmp_path), n_train=8, n_test=6, warm_steps=1, warm_batch_size=4)
    warm = Path(prepare(**small))
    assert warm == tmp_path / "warm"  # configs/demo.yaml's path for the default family
    before = _files(warm)
    other = Path(prepare(**small, family="qwen2_5_omni"))
    assert other == tmp_path / "warm-qwen2_5_omni" and (tmp_path / "tiny-qwen2_5_omni").is_dir()
    assert json.loads((other / "config.json").read_text())["model_type"] != "qwen2_audio"
    assert _files(warm) == before and base_fingerprint(warm) != base_fingerprint(other)
    assert json.loads((tmp_path / "prepared.json").read_text())["family"] == "qwen2_audio"
    capsys.readouterr()
    assert Path(prepare(**small)) == warm and _files(warm) == before  # cached: nothing rebuilt
    assert "[demo]" not in capsys.readouterr().out
    prepare(**{**small, "seed": 1}, family="qwen2_5_omni")  # new data for everyone: each family's own stamp
    assert json.loads((tmp_path / "data" / "synth.json").read_text())["seed"] == 1
    prepare(**small)
    assert json.loads((tmp_path / "data" / "synth.json").read_text())["seed"] == 0
