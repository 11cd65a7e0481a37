"""Dynamic sampling (DAPO): steps built only from groups with a reward spread, filled by extra draws.

A stub reward makes every speech question's group constant (all G rewards 1) and every other
group mixed (rows alternate 0 / 1), so which groups must be dropped is known exactly.
"""

import lightning as L
import pytest
import torch
from helpers import Record, SaveMidRefill, datamodule, fit

from r1aqa_pl.algo import rewards
from r1aqa_pl.rollout.base import ScoredGroup
from r1aqa_pl.task.question import Question
from r1aqa_pl.training.dynamic_sampling import GroupPool
from r1aqa_pl.training.grpo_module import GRPOModule


def stub(fn):
    """A reward named "stub" whose scores ``fn`` gives (a user's own Reward subclass, passed as an instance)."""
    return type("Stub", (rewards.Reward,), {"name": "stub", "score": staticmethod(fn)})()


def speech_constant(completions, questions):
    return [1.0 if q.domain == "speech" else float(i % 2) for i, q in enumerate(questions)]


def all_constant(completions, questions):
    return [1.0] * len(completions)


def group(i, r):
    q = Question(str(i), None, "?", ["a", "b"], "a")
    return ScoredGroup(q, None, torch.zeros(len(r), 3, dtype=torch.long), torch.ones(len(r), 3), ["x"] * len(r),
                 torch.tensor(r), {"stub": torch.tensor(r)})


def test_pool_keeps_informative_groups_and_counts():
    pool = GroupPool(max_extra_draws=2)
    pool.add([group(0, [1.0, 0.0]), group(1, [1.0, 1.0]), group(2, [0.0, 0.5])], target=3)
    assert [g.question.id for g in pool.groups] == ["0", "2"] and not pool.full(3) and not pool.out_of_draws(1)
    pool.add([group(3, [0.0, 0.0]), group(4, [2.0, 1.0]), group(5, [1.0, 0.0])], target=3)
    assert pool.full(3)
    step, stats = pool.take(3, base_draws=1)
    assert [g.question.id for g in step] == ["0", "2", "4"]  # the surplus ("5") is discarded: next step is on-policy
    assert stats == {"dropped_fraction": 2 / 6, "extra_draws": 1.0, "shortfall": 0.0}
    assert pool.groups == [] and pool.draws == 0


def test_pool_out_of_draws_tops_up_with_the_latest_dropped_groups():
    pool = GroupPool(max_extra_draws=1)
    pool.add([group(0, [1.0, 1.0]), group(1, [1.0, 0.0])], target=2)
    pool.add([group(2, [0.0, 0.0]), group(3, [3.0, 3.0])], target=2)
    assert not pool.full(2) and pool.out_of_draws(1)
    step, stats = pool.take(2, base_draws=1)
    assert [g.question.id for g in step] == ["1", "3"] and stats["shortfall"] == 1.0
    assert stats["dropped_fraction"] == 3 / 4 and stats["extra_draws"] == 1.0
    with pytest.raises(ValueError, match="max_extra_draws must be >= 0"):
        GroupPool(-1)


class Steps(L.Callback):
    """Batches drawn."""

    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1


def capture_updates(module):
    seen, update = [], module.update

    def recording(rollouts, **kw):
        seen.append([(list(ro.questions), ro.rewards.clone(), ro.advantages.clone()) for ro in rollouts])
        update(rollouts, **kw)

    module.update = recording
    return seen


def test_steps_have_no_zero_variance_group_and_are_full(synth_dir, tiny_dir, monkeypatch):
    G, steps = 2, 4
    m = GRPOModule(
        str(tiny_dir),
        sampling=dict(G=G, max_new_tokens=6),
        optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=2),
        selection=dict(dynamic_sampling=True, max_extra_draws=4),
        rewards=[stub(speech_constant)],
    )
    seen, counter = capture_updates(m), Steps()
    trainer = fit(m, datamodule(synth_dir, tiny_dir, batch_size=3), steps=steps, callbacks=[counter])
    assert trainer.global_step == steps and len(seen) == steps
    for ((questions, r, A),) in seen:
        assert len(questions) == 3 * 2  # batch_size x gradient_accumulation_steps prompts
        assert not any(q.domain == "speech" for q in questions)
        groups = r.view(-1, G)
        assert (groups.amax(1) > groups.amin(1)).all() and (A.view(-1, G).abs().sum(1) > 0).all()
    assert counter.batches > 2 * steps  # refills happened: a third of the prompts are speech
    logged = trainer.callback_metrics
    assert 0 < float(logged["train/dynamic/dropped_fraction"]) < 1
    assert float(logged["train/dynamic/shortfall"]) == 0.0


def test_bounded_draws_then_step_anyway(synth_dir, tiny_dir, monkeypatch):
    """Every group constant: each step stops after 1 + max_extra_draws batches and steps (KL only)."""
    m = GRPOModule(
        str(tiny_dir),
        sampling=dict(G=2, max_new_tokens=6),
        optimization=dict(lr=1e-3, micro_batch_prompts=2),
        selection=dict(dynamic_sampling=True, max_extra_draws=2),
        rewards=[stub(all_constant)],
    )
    seen, counter = capture_updates(m), Steps()
    trainer = fit(m, datamodule(synth_dir, tiny_dir, batch_size=2), steps=2, callbacks=[counter])
    assert trainer.global_step == 2 and counter.batches == 2 * 3
    assert all(len(s[0][0]) == 2 and (s[0][2] == 0).all() for s in seen)
    logged = trainer.callback_metrics
    assert float(logged["train/dynamic/shortfall"]) == 2.0 and float(logged["train/dynamic/extra_draws"]) == 2.0
    assert float(logged["train/dynamic/dropped_fraction"]) == 1.0


def run_dynamic(synth_dir, tiny_dir, steps, callbacks=(), ckpt_path=None):
    L.seed_everything(0)
    m = GRPOModule(
        str(tiny_dir),
        sampling=dict(G=2, max_new_tokens=6),
        optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=2),
        selection=dict(dynamic_sampling=True, max_extra_draws=4),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
        rewards=[stub(speech_constant)],
    )
    rec = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
        callbacks=[rec, *callbacks],
    )
    trainer.fit(m, datamodule(synth_dir, tiny_dir, batch_size=3), ckpt_path=ckpt_path)
    return rec, {k: v.detach().clone() for k, v in m.policy.state_dict().items()}


def test_resume_in_the_middle_of_a_refill_gives_the_same_next_steps(synth_dir, tiny_dir, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    saver = SaveMidRefill(tmp_path / "mid.ckpt")
    full, w_full = run_dynamic(synth_dir, tiny_dir, 4, [saver])
    assert saver.step is not None, "no checkpoint was written mid-refill"
    saved = torch.load(saver.path, map_location="cpu", weights_only=True)
    pool = saved["grpo_resume"]["ranks"][0]["pool"]
    assert pool["draws"] >= 1 and len(pool["groups"]) >= 1
    resumed, w_res = run_dynamic(synth_dir, tiny_dir, 4, ckpt_path=str(saver.path))
    assert sorted(resumed.train) == list(range(saver.step + 1, 5))
    for step in resumed.train:
        for k, v in full.train[step].items():
            assert resumed.train[step][k] == pytest.approx(v, rel=1e-6, abs=1e-7), (step, k)
    assert all(torch.allclose(w_full[k], w_res[k], rtol=0, atol=1e-7) for k in w_full)
    # with teeth: a resume that forgets the pool builds other steps
    monkeypatch.setattr(GroupPool, "load_state_dict", lambda self, state: None)
    _, w_forgot = run_dynamic(synth_dir, tiny_dir, 4, ckpt_path=str(saver.path))
    assert any(not torch.equal(w_full[k], w_forgot[k]) for k in w_full)


def test_metric_accuracy_drops_groups_that_differ_only_in_format():
    g = group(0, [1.0, 2.0])  # totals differ ...
    g.per_fn = {"accuracy": torch.tensor([1.0, 1.0]), "format": torch.tensor([0.0, 1.0])}  # ... only in format
    assert g.informative() and g.informative("format") and not g.informative("accuracy")
    pool = GroupPool(metric="accuracy")
    pool.add([g], target=1)
    assert pool.groups == [] and pool.dropped == 1
    with pytest.raises(ValueError, match="selection.metric 'acc': neither 'total' nor one of the rewards"):
        GRPOModule("unused", selection=dict(metric="acc"))
