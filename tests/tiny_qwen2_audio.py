"""A tiny Qwen2-Audio (built once per session) and the helpers its tests share: prompts of different audio and
question lengths (left padding, attention masks and position ids all matter), the rollout and the scoring.
Used by tests/models/test_qwen2_audio.py and tests/attention/test_grouped.py."""

import numpy as np
import pytest
import torch

from r1aqa_pl.algo import logprobs
from r1aqa_pl.models import build_tiny_model, load_policy
from r1aqa_pl.models.qwen2_audio import Qwen2Audio
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.task.question import Question

WORDS = [f"w{i}" for i in range(40)]
G = 3
FAMILY = Qwen2Audio()


def rollout(model, inputs, G, share_prompt=True, **kw):
    return HFEngine().sample(FAMILY, model, inputs, G, share_prompt=share_prompt, **kw)


def completion_logprobs(model, *args, **kw):
    return logprobs.completion_logprobs(FAMILY, model, *args, **kw)


def structural_token_ids(processor):
    return FAMILY.structural_token_ids(processor)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny_policy")), words=WORDS, seed=0)


@pytest.fixture()
def tiny(tiny_dir):
    """A fresh (model, processor) per test: some tests rewrite the head."""
    model, processor, family = load_policy(tiny_dir)
    assert isinstance(family, Qwen2Audio)  # from the folder's config.model_type
    return model.eval(), processor


def batch(processor, lengths=((0.6, 2), (2.0, 9), (1.3, 5))):
    """Prompts with different audio seconds and question words: rows need left padding."""
    rng = np.random.default_rng(0)
    sr = processor.feature_extractor.sampling_rate
    qs = [Question(id=str(i), audio_path=None, question=" ".join(WORDS[3:3 + n]), choices=["w1", "w2"], answer="w1")
          for i, (_, n) in enumerate(lengths)]
    audio = [0.1 * rng.standard_normal(int(s * sr)).astype(np.float32) for s, _ in lengths]
    inputs = FAMILY.encode(processor, qs, audio)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == len(lengths)  # really different lengths
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding
    assert len(lengths) == 1 or (inputs["attention_mask"][:, 0] == 0).any()
    return qs, inputs


def eos_ids(model) -> list[int]:
    e = model.generation_config.eos_token_id
    return [e] if isinstance(e, int) else list(e)


def sampled(model, processor, inputs, T=7, seed=0):
    torch.manual_seed(seed)
    ids = rollout(model, inputs, G, do_sample=True, max_new_tokens=T,
                  suppress_tokens=structural_token_ids(processor))
    return ids


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
