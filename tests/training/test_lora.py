"""Under LoRA the audio encoder is frozen and the reference is the policy with its adapter off, so a clip's
encoder output is the same in the rollout, the reference pass and the policy pass: the rollout computes it
once (``GRPOModule.frozen_shared_encoder``) and the two scoring passes read it. Same numbers as encoding in
every pass (up to float rounding); one encoder call per step instead of one per pass and micro-batch."""

import copy

import numpy as np
import pytest
import torch
from helpers import datamodule, fit

from r1aqa_pl.algo import rewards
from r1aqa_pl.models import build_tiny_model
from r1aqa_pl.models.base import AUDIO_EMBEDS
from r1aqa_pl.task.question import Question
from r1aqa_pl.training.grpo_module import GRPOModule

WORDS = [f"w{i}" for i in range(40)]
G = 3


@pytest.fixture(scope="module", params=["qwen2_audio", "qwen2_5_omni", "qwen3_omni", "audio_flamingo3"])
def family_dir(request, tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp(request.param)), family=request.param, words=WORDS, seed=0)


def prompts(sr: int, lengths=((0.6, 2), (1.7, 9), (1.3, 5))):
    """Clips and questions of different lengths (the prompts need left padding)."""
    rng = np.random.default_rng(0)
    qs = [Question(id=str(i), audio_path=None, question=" ".join(WORDS[3:3 + n]), choices=["w1", "w2"], answer="w1")
          for i, (_, n) in enumerate(lengths)]
    return qs, [0.1 * rng.standard_normal(int(s * sr)).astype(np.float32) for s, _ in lengths]


def scored(module, ro):
    """(reference log-probs, policy log-probs, LoRA gradients of a fixed weighting of them) over ``ro``."""
    ref = module.ref_logprobs(ro)
    module.policy.zero_grad(set_to_none=True)
    weights = torch.randn(ro.completion_ids.shape, generator=torch.Generator().manual_seed(1))
    logps = []
    for inputs, rows in module.micro_batches(ro):
        logp = module.micro_logprobs(module.policy, inputs, ro, rows)
        (logp * weights[rows]).sum().backward()
        logps.append(logp.detach())
    grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
    return ref, torch.cat(logps), grads


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_a_lora_step_runs_the_audio_encoder_once(family_dir):
    module = GRPOModule(
        dict(model_name_or_path=family_dir, lora={"r": 4, "lora_alpha": 8}),
        sampling=dict(G=G, max_new_tokens=5),
        optimization=dict(micro_batch_prompts=1),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
    )
    module.configure_model()
    assert module.frozen_shared_encoder()
    calls, encode_audio = [], module.family.encode_audio
    module.family = copy.copy(module.family)  # this module's own adapter object, its encoder call counted

    def counted(*a, **k):
        calls.append(1)
        return encode_audio(*a, **k)

    module.family.encode_audio = counted
    qs, audio = prompts(module.processor.feature_extractor.sampling_rate)
    torch.manual_seed(0)
    ro = module.sample(qs, audio)
    assert len(calls) == 1 and ro.inputs[AUDIO_EMBEDS].shape[0] == len(qs)
    shared = scored(module, ro)
    assert len(calls) == 1  # the reference and policy passes read the rollout's output

    ro.inputs = {k: v for k, v in ro.inputs.items() if k != AUDIO_EMBEDS}
    encoded = scored(module, ro)
    assert len(calls) == 1 + 2 * len(qs)  # otherwise: once per pass and micro-batch
    assert rel(shared[0], encoded[0]) < 1e-5 and rel(shared[1], encoded[1]) < 1e-5
    assert shared[2].keys() == encoded[2].keys() and shared[2]
    # the rollout encodes its clips in one call, the passes one clip each: the features agree to the last bits,
    # which the dense families' gradients keep (2e-7 here) and Qwen3-Omni's experts amplify (1.2e-5)
    scale = max(float(g.abs().max()) for g in encoded[2].values())  # lora_B starts at 0: lora_A's gradients are 0
    assert scale > 0 and max(float((shared[2][n] - g).abs().max()) for n, g in encoded[2].items()) < 1e-4 * scale


def test_full_fine_tuning_encodes_in_every_pass(family_dir):
    """The encoder trains (and the reference keeps its own copy): nothing is shared."""
    module = GRPOModule(
        family_dir, sampling=dict(G=G, max_new_tokens=5), loss={"class_path": "grpo", "init_args": {"beta": 0.04}}
    )
    module.configure_model()
    assert not module.frozen_shared_encoder()
    qs, audio = prompts(module.processor.feature_extractor.sampling_rate)
    assert AUDIO_EMBEDS not in module.encode_rollout(qs, audio)


class Alternating(rewards.Reward):
    """A reward that differs within every group: the update has a policy gradient from the first step."""

    def score(self, completions, questions):
        return [float(i % 2) for i in range(len(completions))]


def test_lora_fit_with_gradient_checkpointing_trains_only_the_adapter(synth_dir, tiny_dir, monkeypatch):
    """The one-GPU recipe's way (LoRA, gradient checkpointing, the KL to the adapter-free policy) through Lightning:
    the adapter moves, the base weights and the encoder do not, the rollouts carry the encoder's output."""
    module = GRPOModule(
        dict(model_name_or_path=str(tiny_dir), lora={"r": 4, "lora_alpha": 8}, gradient_checkpointing=True),
        sampling=dict(G=4, max_new_tokens=6),
        optimization=dict(lr=1e-2, micro_batch_prompts=1),
        loss={"class_path": "grpo", "init_args": {"beta": 0.04}},
        rewards=[Alternating()],
    )
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    seen, update = [], module.update
    module.update = lambda rollouts, **kw: (seen.extend(AUDIO_EMBEDS in ro.inputs for ro in rollouts),
                                            update(rollouts, **kw))
    trainer = fit(module, datamodule(synth_dir, tiny_dir), steps=2)
    assert trainer.global_step == 2 and seen == [True, True]
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = {n for n, p in module.policy.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all("lora_" in n for n in moved)
