"""Rollout-vs-update log-probability mismatch of a tiny policy, and for a mixture of experts how many
completion tokens the update routes to other experts than the rollout did.

The rollout's log-probabilities and routes are those the training rollout keeps (``HFEngine.sample`` with
``with_logprobs`` / ``with_routes``: ``generate``'s raw logits, one decoding step at a time); the update's are
:func:`r1aqa_pl.algo.logprobs.completion_logprobs` over the same completions (all positions at once, on the
shared prompt), as ``sampling.keep_logprobs`` compares them in training. In fp32 they agree to rounding; in
bf16 the different shapes round differently, and a router's hard top-k can then pick other experts.

    r1aqa moe-mismatch --family qwen3_omni --dtype bfloat16
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from r1aqa_pl.algo import logprobs
from r1aqa_pl.algo.losses import routing_disagreement
from r1aqa_pl.models import build_tiny_model, load_policy
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.task.question import Question

WORDS = [f"w{i}" for i in range(40)]


def measure(family_name: str, dtype: str, B: int = 4, G: int = 4, T: int = 12, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        build_tiny_model(d, family=family_name, words=WORDS, seed=seed)
        model, processor, family = load_policy(d, dtype=dtype)
    model.eval()
    rng = np.random.default_rng(seed)
    sr = processor.feature_extractor.sampling_rate
    qs = [Question(id=str(i), audio_path=None, question=" ".join(WORDS[3:4 + 2 * i]), choices=["w1", "w2"],
                   answer="w1") for i in range(B)]
    audio = [0.1 * rng.standard_normal(int((0.5 + 0.4 * i) * sr)).astype(np.float32) for i in range(B)]
    inputs = {k: (v.to(getattr(torch, dtype)) if v.is_floating_point() else v)
              for k, v in family.encode(processor, qs, audio).items()}
    moe = bool(family.routers(model))
    torch.manual_seed(seed)
    ids, rollout, *rollout_routes = HFEngine().sample(
        family, model, inputs, G, with_logprobs=True, with_routes=moe, do_sample=True, top_k=0, max_new_tokens=T,
        min_new_tokens=T, suppress_tokens=family.structural_token_ids(processor))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, with_routes=moe)
    update = (out[0] if moe else out).float()
    delta = update - rollout
    result = {"family": family_name, "dtype": dtype, "tokens": ids.numel(), "max_abs": float(delta.abs().max()),
              "mean_abs": float(delta.abs().mean()), "max_ratio_dev": float((delta.exp() - 1).abs().max())}
    if moe:
        result.update({k: float(v) for k, v in routing_disagreement(rollout_routes[0], out[1], mask).items()})
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", nargs="+", default=["qwen3_omni", "qwen2_5_omni"])
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for fam in args.family:
        for dtype in args.dtype:
            print(measure(fam, dtype, seed=args.seed))


if __name__ == "__main__":
    main()
