"""Rollout-vs-update log-probability mismatch of a tiny policy, and for a mixture of experts how many
completion tokens the update routes to other experts than the rollout did.

The rollout's log-probabilities are those ``generate`` sampled from (its raw logits, one decoding
step at a time); the update's are :func:`r1aqa_pl.algo.logprobs.completion_logprobs` over the same
completions (all positions at once, on the shared prompt cache). In fp32 they agree to rounding; in
bf16 the different shapes round differently, and a router's hard top-k can then pick other experts.

    r1aqa moe-mismatch --family qwen3_omni --dtype bfloat16
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from r1aqa_pl.algo import logprobs
from r1aqa_pl.models import build_tiny_model, load_policy
from r1aqa_pl.task.question import Question

WORDS = [f"w{i}" for i in range(40)]


def routed_experts(family, model):
    """A context recording each router call's top-k expert indices (empty for a dense family)."""
    if not hasattr(family, "routers"):
        from contextlib import nullcontext
        return nullcontext([])
    return family.collect_router_logits(model)


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
    rep = {k: v.repeat_interleave(G, 0) for k, v in inputs.items()}
    P = inputs["input_ids"].shape[1]
    torch.manual_seed(seed)
    family.before_generate(model)
    with torch.no_grad(), routed_experts(family, model) as rollout_routes:
        out = model.generate(**rep, do_sample=True, top_k=0, max_new_tokens=T, min_new_tokens=T,
                             suppress_tokens=family.structural_token_ids(processor), output_logits=True,
                             return_dict_in_generate=True)
    ids = out.sequences[:, P:]
    rollout = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    mask = torch.ones_like(ids)
    with torch.no_grad(), routed_experts(family, model) as update_routes:
        update = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, share_prompt=True).float()
    diff = (update - rollout).abs()
    result = {"family": family_name, "dtype": dtype, "tokens": ids.numel(), "max_abs": float(diff.max()),
              "mean_abs": float(diff.mean()), "max_ratio_dev": float((torch.exp(update - rollout) - 1).abs().max())}
    if rollout_routes:
        result["flipped"] = routing_flips(family, model, rollout_routes, update_routes, B * G, P, T)
    return result


def routing_flips(family, model, rollout_routes, update_routes, N: int, P: int, T: int) -> float:
    """Fraction of (completion token, layer) pairs whose top-k expert set differs between rollout and update.

    Rollout: the prefill routes N·P prompt tokens per layer, then each decoding step N tokens (completion
    inputs 0 … T-2); update: the prompt pass routes B·P tokens, then the completion pass N·T tokens."""
    k = model.config.text_config.num_experts_per_tok
    layers = len(family.routers(model))
    top = [torch.topk(g.float(), k, -1).indices.sort(-1).values for g in rollout_routes]
    steps = [torch.stack([top[layers * (1 + s) + ell] for s in range(T - 1)], 1) for ell in range(layers)]
    comp = [torch.topk(g.float(), k, -1).indices.sort(-1).values for g in update_routes[layers:]]
    flips = [(steps[ell] != comp[ell].view(N, T, k)[:, :T - 1]).any(-1).float().mean() for ell in range(layers)]
    return float(torch.stack(flips).mean())


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
