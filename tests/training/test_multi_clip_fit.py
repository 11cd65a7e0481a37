"""Questions over two clips through the whole trainer: the data module loads both clips in order, the rollout
encodes them packed per prompt, dynamic sampling pools and re-encodes them, validation answers and scores them."""

import json

import lightning as L
import torch
from helpers import datamodule, fit

from r1aqa_pl.algo import rewards
from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.models import load_policy
from r1aqa_pl.models.base import CLIP_COUNTS
from r1aqa_pl.training.grpo_module import GRPOModule


def two_clip_files(synth_dir, out):
    """The synthetic set's two-clip questions only (paths made absolute, so the files live elsewhere)."""
    train = [json.loads(line) for line in (synth_dir / "train.jsonl").read_text().splitlines()]
    train = [{**r, "audio_path": [str(synth_dir / p) for p in r["audio_path"]]} for r in train
             if r["sub-category"] == "louder clip"]
    test = [{**r, "audio_id": [str(synth_dir / p) for p in r["audio_id"]]}
            for r in json.loads((synth_dir / "test-mini.json").read_text()) if r["sub-category"] == "louder clip"]
    assert len(train) == 4 and len(test) == 2 and all(len(r["audio_path"]) == 2 for r in train)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (out / "test.json").write_text(json.dumps(test))
    return out / "train.jsonl", out / "test.json"


def alternating(completions, questions):
    return [float(i % 2) for i in range(len(completions))]


def test_two_clip_questions_train_pool_and_validate(synth_dir, tiny_dir, tmp_path):
    train, test = two_clip_files(synth_dir, tmp_path)
    dm = datamodule(synth_dir, tiny_dir, train_file=str(train), val_file=str(test), batch_size=2, val_batch_size=2)
    dm.setup("fit")
    item = dm.datasets["train"][0]
    assert isinstance(item["audio"], list) and [len(a) for a in item["audio"]] == [32000, 32000]
    L.seed_everything(0)
    m = GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=6),
                   optimization=dict(lr=1e-3, micro_batch_prompts=1),
                   selection=dict(dynamic_sampling=True, max_extra_draws=2),
                   rewards=[type("Alt", (rewards.Reward,), {"name": "alt", "score": staticmethod(alternating)})()])
    encoded = []
    encode = m.encode

    def spy(questions, audio):
        inputs = encode(questions, audio)
        encoded.append(inputs.get(CLIP_COUNTS))
        return inputs

    m.encode = spy
    scorer = BenchmarkEvaluation(dirpath=str(tmp_path / "eval"))
    trainer = fit(m, dm, steps=2, callbacks=[scorer], validate=True)
    assert trainer.global_step == 2
    # every prompt the trainer encoded (rollouts, pooled groups re-encoded, validation) carried its two clips
    assert encoded and all(c is not None and c.tolist() == [2] * len(c) for c in encoded)
    # the update reached the audio encoder through the clips' features
    before = dict(load_policy(str(tiny_dir))[0].named_parameters())
    tower = [(n, p) for n, p in m.policy.named_parameters() if "audio_tower" in n and p.requires_grad]
    assert tower and any(not torch.equal(p.detach(), before[n]) for n, p in tower)
    written = json.loads(next((tmp_path / "eval").rglob("*.json")).read_text())
    assert len(written) == 2 and all("model_prediction" in r and len(r["audio_id"]) == 2 for r in written)


def test_a_family_of_one_clip_refuses_at_start_or_leaves_them_out_counted(synth_dir, tmp_path, caplog):
    """Audio Flamingo 3 (one <sound> per turn): a fit over questions with two clips stops before the first step,
    naming the record and the fix; with data.max_clips 1 those questions are left out, counted and logged."""
    import pytest

    from r1aqa_pl.data.synth import synth_vocabulary
    from r1aqa_pl.models import build_tiny_model

    af3 = build_tiny_model(str(tmp_path / "af3"), family="audio_flamingo3", words=synth_vocabulary())
    m = GRPOModule(af3, sampling=dict(G=2, max_new_tokens=4), optimization=dict(lr=1e-3))
    with pytest.raises(ValueError, match=r"train\.jsonl:\d+: 4 train question\(s\) over more than 1 clip\(s\), which "
                                         r"audio_flamingo3 does not take .* data\.init_args\.max_clips 1"):
        fit(m, datamodule(synth_dir, af3), steps=1)
    dm = datamodule(synth_dir, af3, max_clips=1)
    m = GRPOModule(af3, sampling=dict(G=2, max_new_tokens=4), optimization=dict(lr=1e-3))
    with caplog.at_level("WARNING"):
        trainer = fit(m, dm, steps=1)
    assert trainer.global_step == 1
    assert len(dm.datasets["train"]) == 44 and dm.startup_skipped["train"] == {"too_many_clips": 4}
    assert "left out 4 of 48 questions over more than 1 clip(s)" in caplog.text
