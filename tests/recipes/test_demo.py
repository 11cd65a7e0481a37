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


def test_foreign_audio_gives_each_item_another_items_clips_of_its_arity():
    """One clip each: rolled by one; a lone two-clip item has no partner, so it hears silence of its own shape."""
    import numpy as np

    from r1aqa_pl.recipes.demo import foreign_audio

    a1, a2, a3 = (np.full(4, float(k), np.float32) for k in (1, 2, 3))
    b = [np.full(3, 7.0, np.float32), np.full(5, 8.0, np.float32)]
    out = foreign_audio([a1, a2, b, a3])
    assert out[0] is a2 and out[1] is a3 and out[3] is a1
    assert [c.shape for c in out[2]] == [(3,), (5,)] and all((c == 0).all() for c in out[2])
    c = [np.ones(2, np.float32), np.ones(2, np.float32)]
    assert foreign_audio([b, a1, c])[0] is c and foreign_audio([b, a1, c])[2] is b  # two-clip items swap


def test_think_warm_start_has_its_own_folder_target_and_foreign_clips(tmp_path, monkeypatch):
    """``prepare(think=True)`` trains ``warm-think/`` beside ``warm/`` (left as it was) on the think prompt and target,
    with audio in the prompt that is never the question's own."""
    from r1aqa_pl.recipes import demo
    from r1aqa_pl.task import answer_format
    from r1aqa_pl.training import sft_module

    seen = []

    class Spy(sft_module.SFTModule):
        def training_step(self, batch, batch_idx):
            seen.append((self.template, self.target, [q.id for q in batch["questions"]], batch["audio"]))
            return super().training_step(batch, batch_idx)

    small = dict(out=str(tmp_path), n_train=12, n_test=6, warm_steps=2, warm_batch_size=4)
    warm = Path(demo.prepare(**small))
    before = _files(warm)
    monkeypatch.setattr(sft_module, "SFTModule", Spy)
    think = Path(demo.prepare(**small, think=True))
    assert think == tmp_path / "warm-think" and _files(warm) == before
    assert json.loads((think / "prepared.json").read_text())["warm_clips"] == "foreign"
    assert [s[:2] for s in seen] == [("think", list(answer_format.THINK_SFT_TARGETS))] * 2
    from r1aqa_pl.data.audio import load_clips
    from r1aqa_pl.data.formats import load_questions

    by_id = {q.id: q for q in load_questions(str(tmp_path / "data" / "train.jsonl"))[0]}

    def same(a, b):
        a, b = (x if isinstance(x, list) else [x] for x in (a, b))
        return len(a) == len(b) and all(x.shape == y.shape and (x == y).all() for x, y in zip(a, b))

    for _, _, ids, audio in seen:  # never the question's own clips
        assert not any(same(a, load_clips(by_id[i], 16000)) for i, a in zip(ids, audio))
    demo.prepare(**small, think=True)  # cached
    assert len(seen) == 2


def test_think_sft_targets_restate_options_question_or_both_drawn_per_question(tiny_dir):
    """Three thoughts, one drawn per question from torch's seeded RNG: the same seed draws the same, and over 60
    draws each length comes up."""
    import torch

    from r1aqa_pl.task import answer_format
    from r1aqa_pl.task.question import Question
    from r1aqa_pl.training.sft_module import SFTModule

    m = SFTModule(dict(model_name_or_path=str(tiny_dir), think=True), target=answer_format.THINK_SFT_TARGETS)
    m.configure_model()
    q = Question(id="1", audio_path=None, question="is the note high or low?", choices=["high", "low"], answer="low")

    def drawn(seed):
        torch.manual_seed(seed)
        ids, mask = m.targets([q] * 60)
        return [m.processor.tokenizer.decode(i[k.bool()], skip_special_tokens=True).split() for i, k in zip(ids, mask)]

    texts = drawn(0)
    tail = "</think> <answer> low </answer>".split()
    thoughts = {" ".join(t[1:-len(tail)]) for t in texts}
    assert all(t[0] == "<think>" and t[-len(tail):] == tail for t in texts)
    assert thoughts == {"high low", "is the note high or low ?", "is the note high or low ? high low"}
    assert drawn(0) == texts and drawn(1) != texts
    assert SFTModule("unused").target == "<answer>{answer}</answer>"  # one target: no draw
