"""Audio contribution labels, label weighting / filtering and the curriculum order."""

import json
from pathlib import Path

import pytest
import torch

from r1aqa_pl.data import selection
from r1aqa_pl.data.datamodule import AudioQADataModule, ResumableSampler
from r1aqa_pl.recipes import audio_contribution as ac
from r1aqa_pl.task.question import DataError


def test_label_rule():
    assert ac.label(1.0, 0.25) == "needs_audio"  # +0.75 from the audio
    assert ac.label(0.5, 0.25) == "needs_audio"  # exactly the margin
    assert ac.label(0.5, 0.5) == "answerable_without_audio"
    assert ac.label(0.375, 0.25) == "answerable_without_audio"  # audio helps less than the margin
    assert ac.label(0.125, 0.0) == "unsolved" and ac.label(0.0, 0.125) == "unsolved"
    assert ac.label(0.375, 0.25) == "answerable_without_audio" and ac.label(0.25, 0.125) == "answerable_without_audio"
    assert ac.label(1.0, 0.5, margin=0.6) == "answerable_without_audio"


def policy(tiny_dir, monkeypatch, needs_audio: bool):
    """The tiny policy, its sampler replaced: it answers right always (ignores audio) or only with audio."""
    from r1aqa_pl.eval.checkpoints import load_for_eval

    module, info = load_for_eval(str(tiny_dir))
    batch = {}
    encode = module.encode

    def recording_encode(questions, audio):
        batch["questions"] = questions
        return encode(questions, audio)

    def sample(family, model, inputs, G, **kw):  # id = 2*prompt + (audio in the prompt)
        heard = int("input_features" in inputs)
        return torch.tensor([[2 * b + heard] for b in range(inputs["input_ids"].shape[0]) for _ in range(G)])

    def decode(ids):
        out = []
        for v in ids[:, 0].tolist():
            q, heard = batch["questions"][v // 2], v % 2
            right = heard or not needs_audio
            out.append(f"<answer>{q.answer if right else next(c for c in q.choices if c != q.answer)}</answer>")
        return out

    module.encode, module.decode = recording_encode, decode
    monkeypatch.setattr(module.engine, "sample", sample)
    monkeypatch.setattr("r1aqa_pl.eval.checkpoints.load_for_eval", lambda checkpoint, *a, **k: (module, info))


def run(synth_dir, tmp_path, k=4):
    path = ac.audio_contribution(checkpoint="tiny", data=str(synth_dir / "test-mini.json"), k=k,
                                 out=str(tmp_path / "labels.jsonl"), batch_size=5)
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_policy_that_ignores_audio_labels_everything_answerable_without_audio(synth_dir, tiny_dir, tmp_path,
                                                                               monkeypatch):
    policy(tiny_dir, monkeypatch, needs_audio=False)
    lines = run(synth_dir, tmp_path)
    assert len(lines) == 24 and {x["label"] for x in lines} == {"answerable_without_audio"}
    assert all(x["pass_with_audio"] == x["pass_without_audio"] == 1.0 for x in lines)


def test_the_synthetic_audio_only_questions_need_audio(synth_dir, tiny_dir, tmp_path, monkeypatch):
    policy(tiny_dir, monkeypatch, needs_audio=True)
    lines = run(synth_dir, tmp_path)
    assert {x["label"] for x in lines} == {"needs_audio"}
    assert all(x["pass_with_audio"] == 1.0 and x["pass_without_audio"] == 0.0 for x in lines)


def test_real_tiny_policy_through_the_family_seam(synth_dir, tiny_dir, tmp_path):
    path = ac.audio_contribution(checkpoint=str(tiny_dir), data=str(synth_dir / "test-mini.json"), k=2,
                                 out=str(tmp_path / "l.jsonl"), limit=3, batch_size=2)
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert len(lines) == 3 and all(x["label"] in ac.LABELS for x in lines)
    assert all(x["pass_with_audio"] in (0.0, 0.5, 1.0) and x["pass_without_audio"] in (0.0, 0.5, 1.0) for x in lines)


# ---- selection ------------------------------------------------------------------------------------------

def write_labels(synth_dir, tmp_path, drop=0):
    """Labels for the 48 training questions: every third needs audio; pass rates falling with the id."""
    from r1aqa_pl.data.formats import read_questions

    qs = read_questions(synth_dir / "train.jsonl")
    lines = [{"id": q.id, "pass_with_audio": 1 - i / 48, "pass_without_audio": 0.5,
              "label": "needs_audio" if i % 3 == 0 else "answerable_without_audio"} for i, q in enumerate(qs)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines[drop:]))
    return path, qs


def test_label_weights_filter_and_weight(synth_dir, tmp_path):
    path, qs = write_labels(synth_dir, tmp_path)
    dm = AudioQADataModule(train_file=str(synth_dir / "train.jsonl"), audio_contribution=str(path),
                           label_weights={"answerable_without_audio": 0.0})
    dm.setup("fit")
    kept = dm.datasets["train"].questions
    assert [q.id for q in kept] == [q.id for i, q in enumerate(qs) if i % 3 == 0]  # 16 that need audio
    lines = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    assert selection.weight_by_label(lines, {"a": 2, "b": 0}) == [0, 0, 2]
    half = selection.weight_by_label([{"label": "a"}] * 1000, {"a": 0.5}, seed=1)
    assert 450 < len(half) < 550
    with pytest.raises(ValueError, match=">= 0"):
        selection.weight_by_label(lines, {"a": -1})


def test_unlabelled_questions_and_missing_file_are_named(synth_dir, tmp_path):
    path, qs = write_labels(synth_dir, tmp_path, drop=1)
    dm = AudioQADataModule(train_file=str(synth_dir / "train.jsonl"), audio_contribution=str(path),
                           label_weights={"needs_audio": 1.0})
    with pytest.raises(DataError, match=f"48 training|1 training questions have no label, e.g. id {qs[0].id}"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="need audio_contribution"):
        AudioQADataModule(train_file="x", curriculum_epochs=1)
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:line 1: missing pass_with_audio"):
        selection.read_labels(tmp_path / "bad.jsonl")


def test_curriculum_serves_easy_to_hard_then_shuffles(synth_dir, tmp_path):
    path, qs = write_labels(synth_dir, tmp_path)
    dm = AudioQADataModule(train_file=str(synth_dir / "train.jsonl"), audio_contribution=str(path),
                           curriculum_epochs=1, batch_size=4)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = [q.id for b in loader for q in b["questions"]]
    assert first == [q.id for q in qs]  # pass rate falls with the file order: easy first
    loader.sampler.set_epoch(1)
    assert sorted(q.id for b in loader for q in b["questions"]) == sorted(first)
    assert [q.id for b in loader for q in b["questions"]] != first  # shuffled after the curriculum
    order = selection.easy_to_hard([{"pass_with_audio": p} for p in (0.2, 0.9, 0.5, 0.9)])
    assert order == [1, 3, 2, 0]
    shards = [list(ResumableSampler(list(range(5)), 2, r, order=[4, 3, 2, 1, 0], order_epochs=1)) for r in (0, 1)]
    assert shards == [[4, 2, 0], [3, 1, 4]]  # padded and sharded as DistributedSampler does
