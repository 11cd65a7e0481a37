"""The audio-grounded knobs and the rollout/trainer agreement on the tiny policy: off (the default) is plain GRPO
exactly; relevance weighting keeping every token is plain GRPO (loss and gradients); the engine's log-probs agree
with the update's to rounding in fp32 and measurably not in bf16, and TIS uses them; the online audio contribution
labels and drops groups as the offline tool labels them, also under dynamic sampling; every knob resumes exactly."""

import lightning as L
import pytest
import torch
from helpers import Record, SaveMidRefill, batch_of, datamodule, fit

from r1aqa_pl.algo.grounding import relevance_weights
from r1aqa_pl.algo.losses import PolicyLoss, behaviour_disagreement, grpo_loss, truncated_importance_weights
from r1aqa_pl.algo.rewards import Reward
from r1aqa_pl.rollout.base import Rollout, ScoredGroup
from r1aqa_pl.task.question import Question
from r1aqa_pl.training import resume
from r1aqa_pl.training.dynamic_sampling import GroupPool
from r1aqa_pl.training.grpo_module import GRPOModule

ALL_ON = dict(
    sampling=dict(G=4, max_new_tokens=6, keep_logprobs=True),
    optimization=dict(lr=1e-3, behaviour_correction="tis", tis_cap=2.0),
    grounding=dict(relevance="logp_gap", relevance_keep=0.5, contribution=True, contribution_samples=2),
)


def alternating(completions, questions):
    """Rows alternate 0 / 1 except speech, constant: the random policy's groups carry a reward spread."""
    return [1.0 if q.domain == "speech" else float(i % 2) for i, q in enumerate(questions)]


def stub():
    return type("Stub", (Reward,), {"name": "stub", "score": staticmethod(alternating)})()


def module(tiny_dir, policy=None, **kw):
    """The tiny policy with a reward that gives non-speech groups a spread (a random policy earns none)."""
    kw.setdefault("sampling", dict(G=4, max_new_tokens=6))
    kw.setdefault("rewards", [stub()])
    m = GRPOModule(dict(model_name_or_path=str(tiny_dir), **(policy or {})), **kw)
    m.configure_model()
    m.policy.eval()  # no dropout in the tiny policy; eval keeps two modules' passes identical regardless
    return m


def rollout(m, batch, seed=0):
    torch.manual_seed(seed)
    return m.make_rollout(batch)


def loss_and_grads(m, ro):
    """One micro-batch holding the whole rollout: the update's loss and the policy's gradients."""
    totals = dict(num_completions=ro.mask.shape[0], num_tokens=int(ro.mask.sum()),
                  max_completion_length=m.sampling.max_new_tokens, num_micro_batches=1)
    m.policy.zero_grad(set_to_none=True)
    (inputs, rows), = list(m.micro_batches(ro))
    logp = m.micro_logprobs(m.policy, inputs, ro, rows)
    loss, _ = m.micro_loss(logp, ro, rows, totals)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.policy.named_parameters() if p.grad is not None}


def assert_same(a, b, atol=1e-6):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, atol=atol), (la, lb)
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert torch.allclose(ga[k], gb[k], atol=atol, rtol=1e-5), k


# ---- off by default -------------------------------------------------------------------------------------------

def test_every_knob_is_off_by_default_and_keeping_logprobs_changes_nothing(synth_dir, tiny_dir):
    m = GRPOModule("unused")
    g, s, o = m.grounding, m.sampling, m.optimization
    assert (g.relevance, g.contribution, s.keep_logprobs, o.behaviour_correction) == (None, False, False, None)
    assert not m.keeps_logprobs and m.hparams["grounding"]["contribution_weights"] == {"answerable_without_audio": 0.0}
    batch = batch_of(datamodule(synth_dir, tiny_dir), 2)
    plain = module(tiny_dir, optimization=dict(micro_batch_prompts=2))
    kept = module(tiny_dir, sampling=dict(G=4, max_new_tokens=6, keep_logprobs=True),
                  optimization=dict(micro_batch_prompts=2))
    ro0, ro1 = rollout(plain, batch), rollout(kept, batch)
    assert ro0.rollout_logp is None and ro0.no_audio_logp is None and ro0.group_weight is None
    # the same completions (the engine's logits are only read, not sampled from again), the same update
    assert torch.equal(ro0.completion_ids, ro1.completion_ids) and ro1.rollout_logp.shape == ro1.mask.shape
    assert_same(loss_and_grads(plain, ro0), loss_and_grads(kept, ro1), atol=0)


def test_knob_values_out_of_range_fail_naming_the_knob():
    for kw, msg in [(dict(grounding=dict(relevance="kl")), "grounding.relevance = 'kl'"),
                    (dict(grounding=dict(relevance_keep=0.0)), r"grounding.relevance_keep = 0.0: must be in \(0, 1\]"),
                    (dict(grounding=dict(relevance_scope="batch")), "grounding.relevance_scope = 'batch'"),
                    (dict(grounding=dict(contribution_weights={"easy": 0.0})), "grounding.contribution_weights"),
                    (dict(optimization=dict(behaviour_correction="is")), "optimization.behaviour_correction = 'is'"),
                    (dict(optimization=dict(tis_cap=0.0)), "optimization.tis_cap = 0.0: must be > 0")]:
        with pytest.raises(ValueError, match=msg):
            GRPOModule("unused", **kw)
    with pytest.raises(ValueError, match="need policy.with_audio true"):
        GRPOModule(dict(model_name_or_path="unused", with_audio=False), grounding=dict(contribution=True))

    class NoWeight(PolicyLoss):
        def __call__(self, logp, old_logp, ref_logp, advantages, mask, **totals):
            return grpo_loss(logp, old_logp, ref_logp, advantages, mask, **totals)

    with pytest.raises(ValueError, match="the loss NoWeight takes no pg_weight"):
        GRPOModule("unused", loss=NoWeight(), optimization=dict(behaviour_correction="tis"))
    GRPOModule("unused", loss=NoWeight())  # fine while no knob needs it


# ---- 1. audio-relevance weighting ------------------------------------------------------------------------------

def test_relevance_keeping_every_token_is_plain_grpo(synth_dir, tiny_dir):
    batch = batch_of(datamodule(synth_dir, tiny_dir), 2)
    opt = dict(micro_batch_prompts=2)
    plain = module(tiny_dir, optimization=opt)
    every = module(tiny_dir, optimization=opt, grounding=dict(relevance="logp_gap", relevance_keep=1.0))
    half = module(tiny_dir, optimization=opt, grounding=dict(relevance="logp_gap", relevance_keep=0.5))
    ro0, ro1, ro2 = rollout(plain, batch), rollout(every, batch), rollout(half, batch)
    assert torch.equal(ro0.completion_ids, ro1.completion_ids) and torch.equal(ro0.completion_ids, ro2.completion_ids)
    # the audio-free pass: the same completions, the prompt without its audio, log-probs that differ
    real = ro1.mask.bool()
    gap = (ro1.no_audio_logp - every.logprobs(every.policy, ro1, grad=False)).abs()[real]
    assert gap.min() >= 0 and gap.mean() > 1e-3
    assert_same(loss_and_grads(plain, ro0), loss_and_grads(every, ro1))
    l2, g2 = loss_and_grads(half, ro2)
    l0, g0 = loss_and_grads(plain, ro0)
    assert not torch.allclose(l0, l2, atol=1e-4)  # with teeth: half the tokens masked is another loss
    # the mask the update applied: the top half of each completion by |log p(audio) - log p(no audio)|
    old = half.logprobs(half.policy, ro2, grad=False)
    w = relevance_weights((old - ro2.no_audio_logp).abs(), ro2.mask, keep=0.5)
    assert torch.equal(w.sum(1), torch.ceil(0.5 * ro2.mask.sum(1).float()))


# ---- 3. rollout/trainer agreement and TIS ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rollout_trainer_agreement_and_tis(synth_dir, tiny_dir, dtype):
    """fp32: the engine's and the update's log-probs agree to rounding; bf16 (the same weights on the CPU): the
    disagreement is measured, and the TIS-corrected loss is the formula on the engine's log-probs."""
    batch = batch_of(datamodule(synth_dir, tiny_dir), 3)
    cap = 1.0005  # below the bf16 ratios' largest: the truncation bites
    m = module(tiny_dir, policy=dict(dtype=dtype), sampling=dict(G=4, max_new_tokens=8, keep_logprobs=True),
               optimization=dict(behaviour_correction="tis", tis_cap=cap, micro_batch_prompts=3))
    ro = rollout(m, batch)
    update = m.logprobs(m.policy, ro, grad=False)  # fp32 log-probs from the (bf16) model's hidden states
    d = behaviour_disagreement(update, ro.rollout_logp, ro.mask)
    w = truncated_importance_weights(update, ro.rollout_logp, cap)[ro.mask.bool()]
    if dtype == "float32":
        assert d["max_abs"] < 1e-5 and d["outside_band"] == 0 and (w - 1).abs().max() < 1e-5
    else:
        assert 1e-6 < d["mean_abs"] < 1e-2 and d["max_abs"] > 1e-4 and d["outside_band"] == 0
        assert w.min() < 0.9999 and (w == cap).any()
    loss, _ = loss_and_grads(m, ro)
    totals = dict(num_completions=12, num_tokens=int(ro.mask.sum()), max_completion_length=8)
    terms = (update, update, ro.ref_logp, ro.advantages, ro.mask)
    want, _ = grpo_loss(*terms, beta=m.beta, pg_weight=truncated_importance_weights(update, ro.rollout_logp, cap),
                        **totals)
    plain, _ = grpo_loss(*terms, beta=m.beta, **totals)
    assert torch.equal(loss, want)  # the update's loss is the formula on the engine's log-probs
    assert torch.allclose(loss, plain, atol=1e-6) == (dtype == "float32")  # and corrects something only in bf16


# ---- 2. online audio contribution --------------------------------------------------------------------------------

def test_contribution_labels_weights_and_advantages_by_hand(synth_dir, tiny_dir):
    """Prompt 0: 3 of its 4 answers right with the audio, 0 of 2 without: needs_audio, weight 1. Prompt 1: 2 of 4
    with, 2 of 2 without: answerable_without_audio, weight 0 (its advantages zeroed)."""
    batch = batch_of(datamodule(synth_dir, tiny_dir), 2)
    q0, q1 = batch["questions"]
    right = lambda q: f"<answer>{q.answer}</answer>"  # noqa: E731
    wrong = lambda q: f"<answer>{next(c for c in q.choices if c != q.answer)}</answer>"  # noqa: E731
    texts = {8: [right(q0)] * 3 + [wrong(q0)] + [right(q1), wrong(q1)] * 2,  # the 2 x 4 rollout
             4: [wrong(q0)] * 2 + [right(q1)] * 2}  # the 2 x 2 audio-free answers
    plain = module(tiny_dir, sampling=dict(G=4, max_new_tokens=4), rewards=["accuracy", "format"])
    m = module(tiny_dir, sampling=dict(G=4, max_new_tokens=4), rewards=["accuracy", "format"],
               grounding=dict(contribution=True, contribution_samples=2))
    for x in (plain, m):
        x.decode = lambda ids: texts[ids.shape[0]]
    ro0, ro = rollout(plain, batch), rollout(m, batch)
    assert ro.pass_with.tolist() == [0.75, 0.5] and ro.pass_without.tolist() == [0.0, 1.0]
    assert ro.group_weight.tolist() == [1.0, 0.0]
    assert torch.equal(ro.advantages, ro0.advantages * torch.tensor([1.0] * 4 + [0.0] * 4))
    assert (ro0.advantages[4:] != 0).all()  # prompt 1 did carry a gradient before
    log = m.contribution_log([ro])
    assert {k: float(v) for k, v in log.items()} == {
        "train/contribution/pass_with": 0.625, "train/contribution/pass_without": 0.5,
        "train/contribution/weight": 0.5, "train/contribution/needs_audio": 0.5,
        "train/contribution/answerable_without_audio": 0.5, "train/contribution/unsolved": 0.0}
    # the groups carry it to dynamic sampling's pool: the dropped one is not informative
    g0, g1 = ro.groups(4, batch["audio"])
    assert (g0.pass_with, g0.pass_without, g0.weight) == (0.75, 0.0, 1.0) and g1.weight == 0.0
    assert g0.informative() and not g1.informative()


def test_a_dropped_group_counts_as_not_informative_in_the_pool():
    def grp(i, r, w):
        q = Question(str(i), None, "?", ["a", "b"], "a")
        return ScoredGroup(q, None, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), ["x"] * 2, torch.tensor(r),
                           {"accuracy": torch.tensor(r)}, pass_with=0.5, pass_without=0.5 if w == 0 else 0.0, weight=w)

    pool = GroupPool(max_extra_draws=2, metric="accuracy", grounded=True)
    pool.add([grp(0, [1.0, 0.0], 1.0), grp(1, [1.0, 0.0], 0.0), grp(2, [1.0, 1.0], 1.0)], target=2)
    assert [g.question.id for g in pool.groups] == ["0"] and (pool.dropped, pool.ungrounded) == (2, 1)
    pool.add([grp(3, [0.0, 1.0], 0.5)], target=2)  # down-weighted, not dropped
    step, stats = pool.take(2, base_draws=1)
    assert [g.question.id for g in step] == ["0", "3"]
    assert stats == {"dropped_fraction": 2 / 4, "extra_draws": 1.0, "shortfall": 0.0, "ungrounded_fraction": 1 / 4}
    assert pool.state_dict()["ungrounded"] == 0


# ---- 4. think lengths per domain, and every knob through a fit ----------------------------------------------------

def test_fit_with_every_knob_logs_its_series(synth_dir, tiny_dir):
    L.seed_everything(0)
    m = GRPOModule(dict(model_name_or_path=str(tiny_dir), think=True), **ALL_ON,
                   rewards=["accuracy", "format", {"class_path": "think_length", "init_args": {"weight": 0.5}}])
    m.decode = lambda ids: ["<think> a b c </think><answer> one </answer>"] * (ids.shape[0] - 1) + ["<think> a"]
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=2)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert trainer.global_step == 2 and all(v == v for v in logged.values())  # all finite
    for key in ("train/rollout_agreement/mean_abs", "train/rollout_agreement/max_abs",
                "train/rollout_agreement/outside_band", "train/tis/weight", "train/tis/capped_fraction",
                "train/relevance/kept_fraction", "train/relevance/kept_relevance", "train/relevance/dropped_relevance",
                "train/contribution/pass_without", "train/contribution/needs_audio", "train/rewards/think_length"):
        assert key in logged, key
    assert logged["train/rollout_agreement/max_abs"] < 1e-5 and abs(logged["train/tis/weight"] - 1) < 1e-5
    domains = {k.split("/")[2] for k in logged if k.startswith("train/relevance/") and k.count("/") == 3}
    assert domains and domains <= {"sound", "music", "speech"}
    assert all(f"train/relevance/{d}/kept_fraction" in logged for d in domains)
    # think lengths per domain: 3 words per completion, the one cut mid-thought counts its 1 word
    per_domain = [k for k in logged if k.startswith("train/think_length/") and k.endswith("/mean")]
    assert per_domain and all(logged[k.replace("/mean", "/max")] == 3.0 for k in per_domain)
    assert logged["train/think_length"] == pytest.approx((3 * 7 + 1) / 8)


# ---- exact resume with every knob on -----------------------------------------------------------------------------

def test_buffered_rollouts_keep_the_new_fields_through_a_checkpoint(tmp_path):
    q = Question("7", "/a.wav", "What?", ["x", "y"], "y", domain="music")
    ids = torch.tensor([[5, 6], [5, 7]])
    ro = Rollout([q], {"input_ids": torch.tensor([[1, 2, 3]])}, ids, torch.ones_like(ids), ["a", "b"], torch.ones(2),
                 {"accuracy": torch.zeros(2)}, torch.tensor([1.0, -1.0]), rollout_logp=torch.tensor([[-0.5, -1.0]] * 2),
                 no_audio_logp=torch.full((2, 2), -2.0), pass_with=torch.tensor([0.5]),
                 pass_without=torch.tensor([0.0]), group_weight=torch.tensor([1.0]),
                 rollout_routes=torch.tensor([[[[0, 2]], [[1, 3]]], [[[0, 1]], [[-1, -1]]]], dtype=torch.int16))
    m = GRPOModule("unused", sampling=dict(G=2))
    torch.save({"grpo_resume": resume.resume_state(m, [ro])}, tmp_path / "c.pt")
    m.on_load_checkpoint({"grpo_resume": torch.load(tmp_path / "c.pt", weights_only=True)["grpo_resume"]})
    back = m.buffer[0]
    for f in ("rollout_logp", "no_audio_logp", "pass_with", "pass_without", "group_weight", "rollout_routes"):
        assert torch.equal(getattr(back, f), getattr(ro, f)), f
    (g,) = back.groups(2, [None])  # and into dynamic sampling's pool
    assert torch.equal(g.rollout_routes, ro.rollout_routes)





def run_all_on(synth_dir, tiny_dir, callbacks=(), ckpt_path=None):
    L.seed_everything(0)
    m = GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=6, keep_logprobs=True),
                   optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=2,
                                     behaviour_correction="tis"),
                   grounding={**ALL_ON["grounding"], "contribution_weights": {"unsolved": 0.5}},  # the random policy's
                   selection=dict(dynamic_sampling=True, max_extra_draws=3),
                   rewards=[stub(), {"class_path": "think_length", "init_args": {"weight": 0.1}}])
    rec = Record()
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        deterministic=True, callbacks=[rec, *callbacks])
    trainer.fit(m, datamodule(synth_dir, tiny_dir, batch_size=3), ckpt_path=ckpt_path)
    return rec, {k: v.detach().clone() for k, v in m.policy.state_dict().items()}


def test_resume_mid_refill_with_every_knob_on_is_exact(synth_dir, tiny_dir, tmp_path):
    torch.set_num_threads(1)
    saver = SaveMidRefill(tmp_path / "mid.ckpt")
    full, w_full = run_all_on(synth_dir, tiny_dir, [saver])
    assert saver.step is not None, "no checkpoint was written mid-refill"
    pool = torch.load(saver.path, map_location="cpu", weights_only=True)["grpo_resume"]["ranks"][0]["pool"]
    waiting = pool["groups"][0]["fields"]
    assert waiting["rollout_logp"] is not None and waiting["pass_without"] is not None  # the knobs' state is saved
    resumed, w_res = run_all_on(synth_dir, tiny_dir, ckpt_path=str(saver.path))
    assert sorted(resumed.train) == list(range(saver.step + 1, 4))
    for step in resumed.train:
        assert resumed.train[step].keys() == full.train[step].keys()
        for k, v in full.train[step].items():
            assert resumed.train[step][k] == pytest.approx(v, rel=1e-6, abs=1e-7), (step, k)
    assert {"train/relevance/kept_fraction", "train/tis/weight", "train/dynamic/ungrounded_fraction"} <= set(
        full.train[3])
    assert full.train[3]["train/contribution/unsolved"] == 1.0 and full.train[3]["train/contribution/weight"] == 0.5
    assert all(torch.allclose(w_full[k], w_res[k], rtol=0, atol=1e-7) for k in w_full)
