"""Checkpoints that cannot be evaluated as they are say so, naming the file and the way out: a corrupt ``.ckpt``,
a mistyped local path (never sent to the model hub), and a ``.ckpt`` whose base folder changed after the run."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from r1aqa_pl.cli import main
from r1aqa_pl.data.synth import synth_vocabulary
from r1aqa_pl.eval import checkpoints as ck
from r1aqa_pl.models import build_tiny_model, family_for, load_policy
from r1aqa_pl.training.checkpointing import BASE_KEY, base_fingerprint

# ---------------------------------------------------------------- a corrupt checkpoint file

def test_a_corrupt_ckpt_is_named_as_such(tmp_path, tiny_run, capsys):
    """Random bytes, and a real checkpoint cut in half: not torch's "torch.save ... mmap" hint."""
    noise = tmp_path / "step9.ckpt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    half = tmp_path / "step2.ckpt"
    whole = tiny_run.ckpts[2].read_bytes()
    half.write_bytes(whole[: len(whole) // 2])
    for path, size in ((noise, 4096), (half, len(whole) // 2)):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a readable checkpoint, corrupt or "
                                             rf"truncated \({size} bytes, not the zip archive torch.save writes\)"):
            ck.load_for_eval(str(path))
    with pytest.raises(SystemExit) as e:
        main(["eval", "--checkpoint", str(noise), "--data", str(tiny_run.data), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"error: {noise}: not a readable checkpoint") and "mmap" not in err
    assert err.count("\n") == 1 and not (tmp_path / "e").exists()


# ---------------------------------------------------------------- a mistyped local path

@pytest.fixture
def no_hub(monkeypatch):
    """Records every AutoConfig lookup instead of reaching the hub; answers like a Qwen2-Audio config."""
    import transformers

    calls = []

    def from_pretrained(name, *args, **kwargs):
        calls.append(name)
        return SimpleNamespace(model_type="qwen2_audio")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    return calls


@pytest.mark.parametrize("path, why", [
    ("mymodel/step100_hf", "it is named like a checkpoint"),
    ("mymodel/last.ckpt", "it is named like a checkpoint"),
    ("runs/step100", "runs/ exists here"),
    ("./step100", "it starts like a path"),
    ("../step100", "it starts like a path"),
    ("checkpoints/demo/gone", "a hub id is name or org/name"),
])
def test_a_missing_local_path_is_no_such_folder_never_a_hub_lookup(tmp_path, monkeypatch, no_hub, capsys, path, why):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    kind = "file" if path.endswith(".ckpt") else "folder"
    message = f"{path}: no such {kind} (a local path, not a hub id: {why}); expected "
    for call in (ck.checkpoint_kind, load_policy, family_for):
        with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}"):
            call(path)
    with pytest.raises(SystemExit) as e:
        main(["ask", "--model", path, "--audio", "x.wav", "--question", "q?", "--choices", '["a", "b"]'])
    assert e.value.code == 1 and capsys.readouterr().err.startswith(f"error: {message}")
    assert no_hub == []


def test_a_hub_id_still_goes_to_the_hub(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    assert ck.checkpoint_kind("Qwen/Qwen2-Audio-7B-Instruct") == "hf"
    assert family_for("Qwen/Qwen2-Audio-7B-Instruct").name == "qwen2_audio"
    assert family_for("gpt2").name == "qwen2_audio"  # the stub's answer: what matters is that it was asked
    assert no_hub == ["Qwen/Qwen2-Audio-7B-Instruct", "gpt2"]


# ---------------------------------------------------------------- the base folder changed after the run

def test_a_ckpt_records_its_base_and_eval_says_when_it_changed(tmp_path, tiny_run, capsys):
    """A demo of another family rebuilt the warm start that a run's .ckpt is rebuilt from: the checkpoint's
    record of the base (config/tokenizer hash, taken when the run started) no longer matches."""
    src = tiny_run.ckpts[2]
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    assert ckpt[BASE_KEY] == {"model_name_or_path": str(tiny_run.warm), "sha256": base_fingerprint(tiny_run.warm)}
    base, run = tmp_path / "warm", tmp_path / "run"
    shutil.copytree(tiny_run.warm, base)
    run.mkdir()
    ckpt["hyper_parameters"]["policy"]["model_name_or_path"] = ckpt[BASE_KEY]["model_name_or_path"] = str(base)
    moved = run / src.name
    torch.save(ckpt, moved)
    assert ck.load_for_eval(str(moved))[1]["model"] == str(base)  # unchanged: built from the base, as before

    shutil.rmtree(base)
    build_tiny_model(str(base), words=synth_vocabulary()[:5], seed=0)  # the same path, another vocabulary
    assert base_fingerprint(base) != ckpt[BASE_KEY]["sha256"]
    hf = run / (src.stem + "_hf")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(moved))}: the base model it was trained from, "
                                         rf"{re.escape(str(base))}, has changed since .* evaluate the checkpoint's "
                                         rf"_hf export \({re.escape(str(hf))}, not there\)"):
        ck.load_for_eval(str(moved))
    shutil.copytree(src.with_name(src.stem + "_hf"), hf)
    module, info = ck.load_for_eval(str(moved))  # the export beside it serves, and says so
    assert info["model"] == str(hf) and info["trained_with"] == str(base)
    assert f"note: {base} has changed since {moved} was trained" in capsys.readouterr().err
    expected = torch.load(src, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(v, expected[k]) for k, v in module.state_dict().items())  # the run's weights

    # a checkpoint from before the record: the size mismatch is explained, naming the export
    del ckpt[BASE_KEY]
    torch.save(ckpt, moved)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(moved))}: its weights do not fit the model built from "
                                         rf"{re.escape(str(base))} \(size mismatch for .*\): that folder has changed "
                                         rf"since the run; evaluate the _hf export beside it: {re.escape(str(hf))}"):
        ck.load_for_eval(str(moved))
