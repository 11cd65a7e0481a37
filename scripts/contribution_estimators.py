"""The two ways to measure a prompt's audio-free pass rate online, compared on the demo's tiny policies (CPU).

* samples: k extra audio-free samples per prompt, scored by the accuracy rule (what ``grounding.contribution`` does,
  and what ``r1aqa audio-contribution`` does offline);
* likelihood: the group's own G answers (sampled with the audio) re-scored without it, an importance-sampling
  estimate of the audio-free pass rate, E_{pi(.|q)}[acc] ~ (1/G) sum_i acc_i * pi(o_i | q) / pi(o_i | q, a), clipped to
  [0, 1] (``snis``: the self-normalised variant), one audio-free forward plus the with-audio log-probs.

Accuracy: both against 64 audio-free samples per prompt, and the label (``contribution_label``) each gives against
the label of those 64. Cost: seconds per rollout of 4 prompts x G = 8 at completions forced to 8, 64 and 256 tokens
(one thread, best of 3).

    .venv/bin/python scripts/contribution_estimators.py [--prompts 96] [--policies checkpoints/demo/warm ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from r1aqa_pl.algo.grounding import contribution_label, pass_rates
from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.algo.rewards import accuracy
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.training.grpo_module import GRPOModule

G = K = 8


def generate(m, inputs, k, **kw):
    s = m.sampling
    return m.engine.sample(m.family, m.policy, inputs, k, do_sample=True, temperature=s.temperature, top_p=1.0,
                           top_k=0, max_new_tokens=s.max_new_tokens, suppress_tokens=m.suppress_ids, **kw)


def accuracy_of_estimators(m, ds, prompts: int, B: int = 4) -> dict:
    rows = []
    for b0 in range(0, prompts, B):
        items = [ds[i] for i in range(b0, b0 + B)]
        qs, audio = [x["question"] for x in items], [x["audio"] for x in items]
        free = m.encode(qs, [None] * B, with_audio=False)
        ro = m.sample(qs, audio)
        right = accuracy(ro.texts, [q for q in qs for _ in range(G)])
        pw = pass_rates(right, G)
        samples = pass_rates(accuracy(m.decode(generate(m, free, K)), [q for q in qs for _ in range(K)]), K)
        with torch.no_grad():
            la = m.logprobs(m.policy, ro, grad=False)
            ln = m.logprobs(m.policy, dataclasses.replace(ro, inputs=free), grad=False)
        logw = ((ln - la) * ro.mask).sum(1).view(B, G)
        c = torch.tensor(right).view(B, G)
        est = {"samples": samples, "likelihood": (logw.exp() * c).mean(1).clamp(0, 1),
               "likelihood_snis": (torch.softmax(logw, 1) * c).sum(1)}
        truth = pass_rates(accuracy(m.decode(generate(m, free, 64)), [q for q in qs for _ in range(64)]), 64)
        for i in range(B):
            rows.append({"pw": float(pw[i]), "truth": float(truth[i]), **{k: float(v[i]) for k, v in est.items()}})
    n = len(rows)
    out = {"prompts": n, "pass_with": sum(r["pw"] for r in rows) / n, "pass_without": sum(r["truth"] for r in rows) / n}
    for k in ("samples", "likelihood", "likelihood_snis"):
        same = sum(contribution_label(r["pw"], r[k]) == contribution_label(r["pw"], r["truth"]) for r in rows)
        out[k] = {"mean_abs_error": round(sum(abs(r[k] - r["truth"]) for r in rows) / n, 3),
                  "label_agreement": round(same / n, 3)}
    return out


def cost(m, ds, B: int = 4) -> dict:
    items = [ds[i] for i in range(B)]
    qs, audio = [x["question"] for x in items], [x["audio"] for x in items]
    res = {}
    for T in (8, 64, 256):  # min_new_tokens: every row runs T tokens
        kw = dict(max_new_tokens=T, min_new_tokens=T, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                  suppress_tokens=m.suppress_ids)
        best: dict[str, float] = {}
        for rep in range(3):
            torch.manual_seed(rep)
            t = time.perf_counter()
            inputs = m.encode(qs, audio)
            ids = m.engine.sample(m.family, m.policy, inputs, G, **kw)
            times = {"rollout": time.perf_counter() - t}
            t = time.perf_counter()
            free = m.encode(qs, [None] * B, with_audio=False)
            m.engine.sample(m.family, m.policy, free, K, **kw)
            times["samples_k8"] = time.perf_counter() - t
            ro = _rollout(inputs, ids, m, qs)
            t = time.perf_counter()
            m.logprobs(m.policy, dataclasses.replace(ro, inputs=free), grad=False)
            times["forward_without_audio"] = time.perf_counter() - t
            t = time.perf_counter()
            m.logprobs(m.policy, ro, grad=False)
            times["forward_with_audio"] = time.perf_counter() - t
            best = {k: min(best.get(k, 1e9), v) for k, v in times.items()}
        res[T] = {k: round(v, 4) for k, v in best.items()}
    return res


def _rollout(inputs, ids, m, qs):
    from r1aqa_pl.rollout import Rollout

    n = ids.shape[0]
    return Rollout(qs, inputs, ids, completion_mask(ids, m.eos_ids), [], torch.zeros(n), {}, torch.zeros(n))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", nargs="+",
                    default=["checkpoints/demo/warm", "checkpoints/demo/grpo/version_0/checkpoints/last_hf"])
    ap.add_argument("--data", default="checkpoints/demo/data/train.jsonl")
    ap.add_argument("--prompts", type=int, default=96)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for path in args.policies:
        torch.manual_seed(0)
        m = GRPOModule(path, sampling=dict(G=G, max_new_tokens=8, top_k=0))
        m.configure_model()
        m.policy.eval()
        dm = AudioQADataModule(train_file=args.data, feature_extractor=path, batch_size=4)
        dm.setup("fit")
        ds = dm.datasets["train"]
        print(json.dumps({"policy": path, "accuracy": accuracy_of_estimators(m, ds, args.prompts),
                          "seconds": cost(m, ds)}))


if __name__ == "__main__":
    main()
