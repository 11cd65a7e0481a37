"""Rollout decode at the real model's geometry against the memory-bandwidth bound (a device check).

    r1aqa gpu-check                       # Qwen2-Audio-7B's geometry, bf16, on the GPU
    r1aqa gpu-check --scale tiny --device cpu   # the same code at tiny widths (the CPU test)

No hub: the policy is the real class built from the real geometry (``QWEN2_AUDIO_7B`` of
:mod:`r1aqa_pl.models.sizes`: LM 32 × 4096, MLP 11008, 32 heads, vocabulary 156,032; Whisper-large encoder
32 × 1280, 128 mel bins) with random weights, directly on the device, and a word-level tokenizer of the
real vocabulary size. For 1 and 4 prompts × G completions of 10 s clips it times the project's rollout
(``HFEngine``, prompt shared by the group) for 1 and for ``new_tokens`` new tokens (EOS suppressed, so
every row decodes them all); one decode step is the difference over the extra tokens. The bound is the
bytes one decode step must read — the language model's weights and LM head, plus the key/value cache at
mid-decode (the prompt's once per group, as the project's grouped attention reads it, or G times, as a
cache repeated per row would; plus the completions' own) — divided by the card's copy bandwidth, measured
on a large tensor (read + write).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from r1aqa_pl.models.qwen2_audio import Qwen2Audio
from r1aqa_pl.models.sizes import QWEN2_AUDIO_7B
from r1aqa_pl.models.tiny import QWEN2_AUDIO_SPECIAL, word_tokenizer
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.tools.bench import questions, vocabulary_words  # the bench's MMAU-style items, 10 s clips

# divisors of the real widths and depths for the CPU run (same code path, seconds instead of hours)
SCALES = {"real": (1, 1), "tiny": (32, 16)}


def geometry(scale: str) -> dict:
    """The architecture numbers of Qwen2-Audio-7B, widths divided by ``w`` and depths by ``d``."""
    w, d = SCALES[scale]
    a = QWEN2_AUDIO_7B
    return {"vocab": a.vocab if scale == "real" else 4096, "hidden": a.hidden // w, "intermediate": a.intermediate // w,
            "layers": a.layers // d, "heads": max(1, a.heads // w), "audio_dim": a.audio_dim // w,
            "audio_ffn": a.audio_ffn // w, "audio_layers": a.audio_layers // d, "mel_bins": a.mel_bins,
            "audio_heads": max(1, 20 // w)}


def build(g: dict, device: torch.device, dtype: torch.dtype):
    """(model, processor) of the real classes at geometry ``g``, random weights made on ``device`` in ``dtype``."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = word_tokenizer(QWEN2_AUDIO_SPECIAL, vocabulary_words(g["vocab"]), pad_token="<|endoftext|>",
                               eos_token="<|im_end|>")
    fe = WhisperFeatureExtractor(feature_size=g["mel_bins"], sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_AUDIO_SPECIAL}
    config = Qwen2AudioConfig(
        audio_config={"num_mel_bins": g["mel_bins"], "encoder_layers": g["audio_layers"], "d_model": g["audio_dim"],
                      "encoder_attention_heads": g["audio_heads"], "encoder_ffn_dim": g["audio_ffn"],
                      "max_source_positions": 1500},
        text_config={"vocab_size": len(tokenizer), "hidden_size": g["hidden"], "intermediate_size": g["intermediate"],
                     "num_hidden_layers": g["layers"], "num_attention_heads": g["heads"],
                     "num_key_value_heads": g["heads"], "max_position_embeddings": 8192,
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]},
        audio_token_index=ids["<|AUDIO|>"])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made in bf16 directly: a 7B in fp32 would be 34 GB before the cast
    try:
        with torch.device(device):
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model.eval(), processor


def copy_bandwidth(device: torch.device, mib: int = 1024) -> float:
    """Bytes per second of ``y.copy_(x)`` (each byte read once and written once), best of 5."""
    x = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_bytes(g: dict, P: int, G: int, prompt_len: int, new_tokens: int, elem: int) -> dict:
    """Bytes one decode step reads at mid-decode (``new_tokens / 2`` generated): the language model's weights
    and LM head, the prompts' keys/values (once per group, or G times), the completions' own."""
    h, I, n, V = g["hidden"], g["intermediate"], g["layers"], g["vocab"]
    weights = (n * (4 * h * h + 3 * h * I) + V * h) * elem  # attention q/k/v/o, gate/up/down, LM head
    kv_token = 2 * n * h * elem  # keys and values of one token in every layer (no grouped-query attention)
    prompt_shared = P * prompt_len * kv_token
    completions = P * G * (new_tokens // 2) * kv_token
    return {"weights": weights, "prompt_kv_shared": prompt_shared, "prompt_kv_repeated": G * prompt_shared,
            "completion_kv": completions}


def decode(model, processor, P: int, G: int, new_tokens: int, device: torch.device) -> dict:
    """Seconds of the rollout for 1 and ``new_tokens`` new tokens (EOS suppressed) and the prompt length."""
    family = Qwen2Audio()
    qs, audio = questions(P, seed=0)
    inputs = {k: v.to(device) for k, v in family.encode(processor, qs, audio).items()}
    eos = model.generation_config.eos_token_id
    suppress = [*family.structural_token_ids(processor), *eos]
    engine = HFEngine()

    def run(n: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        out = engine.sample(family, model, inputs, G, do_sample=True, temperature=1.0, max_new_tokens=n,
                            min_new_tokens=n, suppress_tokens=suppress)
        sync(device)
        assert out.shape == (P * G, n), out.shape
        return time.perf_counter() - t0

    run(2)  # warm-up
    t1, tn = run(1), run(new_tokens)
    return {"prompt_len": int(inputs["input_ids"].shape[1]), "t_first": t1, "t_all": tn,
            "step_s": (tn - t1) / (new_tokens - 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="real")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--new_tokens", type=int, default=256)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = geometry(args.scale)
    t0 = time.perf_counter()
    model, processor = build(g, device, dtype)
    build_s = time.perf_counter() - t0
    bw = copy_bandwidth(device, 1024 if device.type == "cuda" else 256)
    elem = torch.finfo(dtype).bits // 8
    rows = []
    for P in args.prompts:
        d = decode(model, processor, P, args.G, args.new_tokens, device)
        b = step_bytes(g, P, args.G, d["prompt_len"], args.new_tokens, elem)
        shared = b["weights"] + b["prompt_kv_shared"] + b["completion_kv"]
        repeated = b["weights"] + b["prompt_kv_repeated"] + b["completion_kv"]
        rows.append({"prompts": P, "G": args.G, **d, **b, "bound_shared_s": shared / bw,
                     "bound_repeated_s": repeated / bw, "tokens_per_s": P * args.G / d["step_s"]})
    params = sum(p.numel() for p in model.parameters())
    print(f"policy: Qwen2-Audio geometry ({args.scale}), {params / 1e6:,.1f} M parameters in {args.dtype} on "
          f"{args.device} (built in {build_s:.0f} s); copy bandwidth {bw / 1e9:.0f} GB/s; torch {torch.__version__}")
    print("| prompts × G | prompt tokens | decode step ms | tokens/s | bound (shared prompt) ms | "
          "ratio | bound (prompt × G, a repeated cache) ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['prompts']} × {r['G']} | {r['prompt_len']} | {1e3 * r['step_s']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{1e3 * r['bound_shared_s']:.2f} | {r['step_s'] / r['bound_shared_s']:.2f}× | "
              f"{1e3 * r['bound_repeated_s']:.2f} | {r['step_s'] / r['bound_repeated_s']:.2f}× |")
    result = {"scale": args.scale, "device": args.device, "dtype": args.dtype, "parameters": params,
              "bandwidth": bw, "geometry": g, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
