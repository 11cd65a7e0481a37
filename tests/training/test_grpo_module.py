"""GRPOModule end to end on the tiny policy: alignment, special tokens, zero-variance groups,
faults, determinism, SFT masking."""

import math

import lightning as L
import pytest
import torch
from helpers import batch_of, datamodule, fit

from r1aqa_pl.algo.logprobs import completion_logprobs
from r1aqa_pl.models.base import position_ids
from r1aqa_pl.training.grpo_module import GRPOModule
from r1aqa_pl.training.sft_module import SFTModule


def test_each_completion_is_scored_under_its_own_prompt_and_audio(synth_dir, tiny_dir):
    """Row b·G+g of a batched rollout has the log-probs it gets when prompt b is alone."""
    torch.manual_seed(0)
    m = GRPOModule(
        str(tiny_dir), sampling=dict(G=3, max_new_tokens=6), loss={"class_path": "grpo", "init_args": {"beta": 0.0}}
    )
    m.configure_model()
    dm = datamodule(synth_dir, tiny_dir)
    batch = batch_of(dm, 3)
    assert len({a.tobytes() for a in batch["audio"]}) == 3  # distinct audio per prompt
    ro = m.make_rollout(batch)
    together = m.logprobs(m.policy, ro, grad=False)
    for b in range(3):
        rows = slice(3 * b, 3 * b + 3)
        alone = m.encode(batch["questions"][b : b + 1], batch["audio"][b : b + 1])
        lp = completion_logprobs(m.family, m.policy, alone, ro.completion_ids[rows], ro.mask[rows], 3)
        mask = ro.mask[rows].bool()
        assert torch.allclose(lp[mask], together[rows][mask], atol=1e-5)
        other = m.encode(batch["questions"][b : b + 1], batch["audio"][(b + 1) % 3 : (b + 1) % 3 + 1])
        lp_other = completion_logprobs(m.family, m.policy, other, ro.completion_ids[rows], ro.mask[rows], 3)
        assert not torch.allclose(lp_other[mask], together[rows][mask], atol=1e-4)
    # rewards follow the same layout: row b·G+g is judged against question b's answer
    assert [q.id for q in ro.questions] == [q.id for q in batch["questions"]]


def test_a_micro_batch_runs_without_the_rollouts_padding(synth_dir, tiny_dir):
    """A prompt shorter than the rollout's longest, completions that all stop early: the language model sees
    the prompt's own length and the longest completion, the log-probs are those computed over the rollout's
    padding (0 in the columns after every completion had stopped)."""
    from r1aqa_pl.algo import logprobs

    torch.manual_seed(0)
    m = GRPOModule(
        str(tiny_dir), sampling=dict(G=3, max_new_tokens=6), loss={"class_path": "grpo", "init_args": {"beta": 0.0}}
    )
    m.configure_model()
    batch = batch_of(datamodule(synth_dir, tiny_dir), 3)
    batch["questions"][1].question += " and a much longer question to be padded against"
    inputs = m.encode(batch["questions"], batch["audio"])
    lengths = inputs["attention_mask"].sum(1)
    b = int(lengths.argmin())
    assert int(lengths[b]) < inputs["input_ids"].shape[1]  # left padding to drop
    one = {k: v[b : b + 1] for k, v in inputs.items()}
    ids = torch.randint(10, 40, (3, 6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    seen = []
    core = m.family.backbone(m.policy)[0]
    hook = m.family.language_model(core).register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    with torch.no_grad():
        lp = completion_logprobs(m.family, m.policy, one, ids, mask, 3)
        hook.remove()
        padded, _ = logprobs._completion_logprobs(m.family, m.policy, one, ids, mask, 3, 1.0, True)
    assert seen == [int(lengths[b]) + 3 * 4]  # its own prompt, then 3 completions x the longest (4 tokens)
    assert lp.shape == padded.shape == (3, 6)
    assert torch.allclose(lp[mask.bool()], padded[mask.bool()], atol=1e-5)
    assert (lp[:, 4:] == 0).all() and (padded[:, 4:] != 0).all()  # the columns every completion had left


def test_policy_that_loves_the_audio_token_still_trains(synth_dir, tiny_dir, tmp_path):
    """A sampled <|AUDIO|> would crash the next forward; it must never be sampled."""
    from r1aqa_pl.models import load_policy

    model, processor, _ = load_policy(str(tiny_dir))
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    with torch.no_grad():
        model.lm_head.weight[audio_id] = 50 * model.lm_head.weight.abs().max()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    m = GRPOModule(str(tmp_path), sampling=dict(G=2, max_new_tokens=6), optimization=dict(lr=1e-3))
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=2)
    assert trainer.global_step == 2


def test_all_equal_rewards_give_zero_advantage_and_no_update(synth_dir, tiny_dir, monkeypatch):
    from r1aqa_pl.algo import rewards

    def constant(completions, questions, weights):
        r = torch.ones(len(completions))
        return r, {k: r for k in weights}

    monkeypatch.setattr(rewards, "score_completions", constant)
    m = GRPOModule(
        str(tiny_dir),
        sampling=dict(G=4, max_new_tokens=6),
        optimization=dict(lr=1e-2, weight_decay=0.0),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
    )
    m.configure_model()
    before = {k: v.clone() for k, v in m.policy.state_dict().items()}
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=2)
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert float(trainer.callback_metrics["train/zero_std_groups"]) == 1.0
    for k, v in m.policy.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_non_finite_loss_skips_the_step_then_stops(synth_dir, tiny_dir, monkeypatch):
    from r1aqa_pl.algo import losses as grpo

    real = grpo.grpo_loss

    def nan_loss(*a, **kw):
        loss, stats = real(*a, **kw)
        return loss * float("nan"), stats

    monkeypatch.setattr(grpo, "grpo_loss", nan_loss)
    m = GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=4), optimization=dict(max_bad_steps=3))
    m.configure_model()
    before = {k: v.clone() for k, v in m.policy.state_dict().items()}
    with pytest.raises(RuntimeError, match="3 optimizer steps in a row"):
        fit(m, datamodule(synth_dir, tiny_dir), steps=10)
    assert m.skipped_steps == 3
    for k, v in m.policy.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_seeded_run_is_deterministic(synth_dir, tiny_dir):
    def once():
        L.seed_everything(0)
        m = GRPOModule(str(tiny_dir), sampling=dict(G=4, max_new_tokens=6), optimization=dict(lr=1e-3))
        t = fit(m, datamodule(synth_dir, tiny_dir), steps=3)
        return {k: float(v) for k, v in t.callback_metrics.items()}, m.policy.lm_head.weight.detach().clone()

    (m1, w1), (m2, w2) = once(), once()
    assert m1 == m2
    assert torch.equal(w1, w2)


@pytest.mark.parametrize(
    "think,target,text",
    [
        (False, "<answer>{answer}</answer>", "<answer>{answer}</answer>"),
        (
            True,
            "<think> {choices} </think> <answer>{answer}</answer>",
            "<think> {choices} </think> <answer>{answer}</answer>",
        ),
    ],
)
def test_sft_loss_counts_only_answer_tokens(synth_dir, tiny_dir, think, target, text):
    """Hand check: the loss is the mean NLL of the target tokens (then <|im_end|>), the prompt masked out."""
    m = SFTModule(dict(model_name_or_path=str(tiny_dir), think=think), target=target)
    m.configure_model()
    batch = batch_of(datamodule(synth_dir, tiny_dir), 2)
    ids, mask = m.targets(batch["questions"])
    tok = m.processor.tokenizer
    q0 = batch["questions"][0]
    expected = tok(text.format(answer=q0.answer, choices=list(q0.choices)), add_special_tokens=False).input_ids
    expected += [m.eos_ids[0]]
    assert ids[0, : len(expected)].tolist() == expected
    assert int(mask[0].sum()) == len(expected)
    inputs = m.encode(batch["questions"], batch["audio"])
    prompt = tok.decode(inputs["input_ids"][0], skip_special_tokens=False)
    assert prompt.count("<think>") == int(think)  # the think prompt asks for <think> </think>
    # the same number by a plain full forward over prompt + target, reading only target positions
    full_ids = torch.cat([inputs["input_ids"], ids], 1)
    full_mask = torch.cat([inputs["attention_mask"], mask], 1)
    logits = m.policy(
        input_ids=full_ids,
        attention_mask=full_mask,
        position_ids=position_ids(full_mask),
        input_features=inputs["input_features"],
        feature_attention_mask=inputs["feature_attention_mask"],
    ).logits
    P = inputs["input_ids"].shape[1]
    logp = logits[:, P - 1 : -1].log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    expected_loss = -(logp * mask).sum() / mask.sum()
    assert torch.allclose(m.sft_loss(batch), expected_loss, atol=1e-5)


def test_engine_hears_of_every_optimizer_step(synth_dir, tiny_dir):
    """The rollout engine's weight-sync hook runs once per optimizer step (here 2 batches per step)."""
    from r1aqa_pl.rollout.hf import HFEngine

    class Counting(HFEngine):
        steps = 0

        def after_step(self, model):
            Counting.steps += 1
            assert model is m.policy

    m = GRPOModule(
        str(tiny_dir), sampling=dict(G=2, max_new_tokens=4), optimization=dict(lr=1e-3, gradient_accumulation_steps=2)
    )
    m.engine = Counting()
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=2)  # max_steps counts optimizer steps: 4 batches
    assert (
        Counting.steps == trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.current.processed == 4
    )


@pytest.mark.parametrize("top_k", [None, 0])
def test_top_k_reaches_generate_only_when_set(synth_dir, tiny_dir, top_k):
    """top_k: null leaves the checkpoint's generation config in charge (no top_k passed); 0 samples untruncated."""
    from r1aqa_pl.rollout.hf import HFEngine

    seen = []

    class Recording(HFEngine):
        def sample(self, *a, **kw):
            seen.append(kw)
            return super().sample(*a, **kw)

    m = GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=3, top_k=top_k))
    m.configure_model()
    m.engine = Recording()
    batch = batch_of(datamodule(synth_dir, tiny_dir), 2)
    m.sample(batch["questions"], batch["audio"])
    assert ("top_k" in seen[0]) == (top_k is not None) and seen[0].get("top_k") == top_k


def test_a_gloo_process_group_is_destroyed_at_exit(tmp_path, monkeypatch):
    """Under gloo (DDP on CPUs) the module registers the process group's destruction at interpreter exit, as
    Lightning does for NCCL only; without a process group nothing is registered."""
    import atexit

    import torch.distributed as dist

    from r1aqa_pl.training import strategy

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(strategy.destroy_process_group_at_exit, "registered", False, raising=False)
    assert strategy.destroy_process_group_at_exit() is False and registered == []
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        GRPOModule("unused").setup("validate")
        assert len(registered) == 1
        strategy.destroy_process_group_at_exit()  # once per process
        assert len(registered) == 1
        registered[0]()  # what runs at exit
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
