"""``make memory``: peak GPU memory per device for GRPO on Qwen2-Audio, by configuration, a
back-of-the-envelope model (the architecture numbers: an ``Arch`` of :mod:`r1aqa_pl.models.sizes`).

Symbols: P parameters in all, T trainable (P, or the LoRA adapters), N GPUs sharding the model
(ZeRO-3; N = 1 otherwise), G completions per prompt, L = prompt tokens (text + audio) + max completion
tokens, V vocabulary, h / I / n_layers the language model's width / MLP width / depth, kv the key/value
width (heads_kv × head_dim), d / f / n_audio the audio encoder's width / MLP width / depth, S = 1500
encoder positions (a 30 s window). Bytes: w for weights (2 in bf16), g for gradients, a = 2 for
activations.

Resident all the time:
    weights      P·w / N               0 when ZeRO-3 offloads the parameters to the CPU
                                       (LoRA: the base in w bytes plus the adapters in fp32)
    optimizer    T·(m + v + master) / N_opt   AdamW moments (+ an fp32 master copy under mixed
                                       precision); N_opt = N for ZeRO 1-3; 0 with offload_optimizer
    reference    P·w                   the frozen copy for the KL term, unsharded on every GPU
                                       (none for LoRA: the adapter is switched off; none when beta = 0)
    zero3        live gathered layers + communication buckets (ZeRO-3 only; from the DeepSpeed config)

Rollout (no gradients):
    gathered     P·w                   ZeRO-3 gathers the whole model once for ``generate`` (but an Omni
                                       thinker's vision encoder, which audio questions never run)
    kv_cache     B·(L_prompt + G·T_max) · 2·n_layers·kv · a   B prompts per GPU sampled together; a
                                       prompt's keys/values are kept once for its G rows (grouped attention);
                                       the buffer grows by doubling from 64 new tokens, so for a moment while
                                       it grows up to ~1.5× this (rollouts that stop early stay below it)
Update, one micro-batch of b prompts × G completions (with gradients):
    gradients    T·g / N_grad          N_grad = N for ZeRO 2-3; 0 with offload_optimizer
    activations  LM: tokens · n_layers · (8h + 2kv + 4I)·a       tokens = b·(L_prompt + G·T_max) when
                 each prompt and its G completions run as one packed sequence (``share_prompt``);
                 b·G·L with gradient checkpointing (the prompt is then repeated); with checkpointing
                 only each layer's input (h·a) is kept, plus one layer recomputed at a time
                 audio encoder: clips · S · n_audio · (9d + 2f)·a  (checkpointed: S·d·a per layer + one layer)
    logits       b·G·T_max · V · 12 bytes   fp32 log-softmax over the vocabulary at completion positions only
                                       (prompt and audio positions never reach the LM head)

Peak = resident + max(rollout, update). Host memory (per GPU; the node needs N times it): with
offload_optimizer the fp32 master weights, moments and gradients, T·16 / N; with offload_param the
bf16 weights, P·2 / N. It is an estimate, not a measurement: allocator fragmentation, CUDA
context (~0.5-1 GB) and framework buffers come on top. ``tests/tools/test_memory.py`` checks the
parameter, gradient, optimizer, cache and logits terms against real tensors of the tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from r1aqa_pl.models.sizes import (  # noqa: E402
    AUDIO_FLAMINGO3_7B,
    PHI4_MULTIMODAL,
    QWEN2_5_OMNI_3B,
    QWEN2_5_OMNI_7B,
    QWEN2_AUDIO_7B,
    QWEN3_OMNI_30B_A3B,
    Arch,
)

GB = 1e9


@dataclass(frozen=True)
class RunConfig:
    """How a run places and trains the model (per GPU unless said otherwise)."""

    name: str
    n_gpus: int = 1
    zero_stage: int = 0                # 0: DDP or one GPU
    offload_optimizer: bool = False
    offload_params: bool = False
    lora: bool = False                 # trainable = LoRA adapters (fp32, with fp32 AdamW); base frozen
    gradient_checkpointing: bool = False
    weight_bytes: int = 2              # bf16
    grad_bytes: int = 2
    state_bytes: int = 4               # bytes of each AdamW moment (fp32)
    master_weights: bool = True        # fp32 master copy (DeepSpeed bf16 / mixed precision)
    reference: bool = True             # a frozen copy for the KL term (beta > 0, not LoRA)
    G: int = 8
    prompts_per_batch: int = 1         # prompts per GPU rolled out together
    micro_batch_prompts: int = 1       # prompts per forward/backward
    max_new_tokens: int = 256
    prompt_text_tokens: int = 100      # chat template + question + choices
    audio_seconds: float = 10.0        # AVQA clips are 10 s; the encoder window is 30 s regardless
    activation_bytes: int = 2
    logit_bytes: int = 12              # fp32 logits, scaled copy and log-softmax at completion positions
    zero3_live_params: float = 1e9     # stage3_max_live_parameters
    zero3_buckets: float = 1e9         # prefetch + reduce buckets (elements)


def estimate_memory(n_params_trainable: int, n_params_total: int, config: RunConfig,
                    arch: Arch = QWEN2_AUDIO_7B) -> dict[str, float]:
    """Bytes per GPU by term (see the module docstring), the two phases, the peak, and host memory."""
    c, a = config, arch
    P, T = n_params_total, n_params_trainable
    N = c.n_gpus if c.zero_stage >= 1 else 1
    shard_w = N if c.zero_stage == 3 else 1
    shard_g = N if c.zero_stage >= 2 else 1
    opt_per_param = 2 * c.state_bytes + (4 if c.master_weights else 0)
    if c.lora:
        weights = (P - T) * c.weight_bytes + T * 4  # frozen bf16 base + fp32 adapters
    else:
        weights = 0 if (c.zero_stage == 3 and c.offload_params) else P * c.weight_bytes / shard_w
    optimizer = 0 if c.offload_optimizer else T * opt_per_param / N
    gradients = 0 if c.offload_optimizer else T * (4 if c.lora else c.grad_bytes) / shard_g
    reference = P * c.weight_bytes if (c.reference and not c.lora) else 0
    zero3 = (min(P, c.zero3_live_params) + c.zero3_buckets) * c.weight_bytes if c.zero_stage == 3 else 0

    audio_tokens = round(c.audio_seconds * a.audio_tokens_per_second)
    prompt = c.prompt_text_tokens + audio_tokens
    L = prompt + c.max_new_tokens
    kv_per_token = 2 * a.layers * a.kv * c.activation_bytes
    idle = a.params().get("visual", 0)  # an Omni thinker's vision encoder stays partitioned for generate
    gathered = (P - idle) * c.weight_bytes if c.zero_stage == 3 else 0
    kv_cache = c.prompts_per_batch * (prompt + c.G * c.max_new_tokens) * kv_per_token

    b, act = c.micro_batch_prompts, c.activation_bytes
    layer_full = (8 * a.hidden + 2 * a.kv + 4 * a.intermediate) * act  # per token, one decoder layer
    audio_layer_full = (9 * a.audio_dim + 2 * a.audio_ffn) * act        # per encoder position, one layer
    if c.gradient_checkpointing:  # prompt repeated per completion; layer inputs kept, one layer recomputed
        tokens, clips = b * c.G * L, b * c.G
        lm_act = tokens * (a.layers * a.hidden * act + layer_full)
        audio_act = clips * a.audio_positions * (a.audio_layers * a.audio_dim * act + audio_layer_full)
    else:  # each prompt runs once, packed with its G completions
        tokens, clips = b * (prompt + c.G * c.max_new_tokens), b
        lm_act = tokens * a.layers * layer_full
        audio_act = clips * a.audio_positions * a.audio_layers * audio_layer_full
    activations = lm_act + audio_act
    logits = b * c.G * c.max_new_tokens * a.vocab * c.logit_bytes

    resident = weights + optimizer + reference + zero3
    rollout = gathered + kv_cache
    update = gradients + activations + logits
    host = (T * (opt_per_param + 4) / N if c.offload_optimizer else 0) \
        + (P * c.weight_bytes / N if (c.zero_stage == 3 and c.offload_params) else 0)  # + fp32 gradients
    return {"weights": weights, "optimizer": optimizer, "reference": reference, "zero3": zero3,
            "gathered": gathered, "kv_cache": kv_cache, "gradients": gradients, "activations": activations,
            "logits": logits, "resident": resident, "rollout": rollout, "update": update,
            "peak": resident + max(rollout, update), "host_per_gpu": host}


# ---------------------------------------------------------------- the README table

PAPER = RunConfig("8 × GPU, ZeRO-3, optimizer + parameters offloaded (the paper)", n_gpus=8, zero_stage=3,
                  offload_optimizer=True, offload_params=True)
LORA_1GPU = RunConfig("1 GPU, LoRA r=64 (LM projections), gradient checkpointing", lora=True,
                      gradient_checkpointing=True, master_weights=False)
FULL_1GPU = RunConfig("1 GPU, full fine-tune, no offload (bf16 weights, fp32 AdamW + master)")
FULL_1GPU_BF16 = RunConfig("1 GPU, full fine-tune, no offload, everything bf16 (bf16-true AdamW)",
                           state_bytes=2, master_weights=False)
LORA_1GPU_24GB = replace(LORA_1GPU, name="1 GPU (24 GB), LoRA r=16, G=4, 128 new tokens", G=4, max_new_tokens=128)


def configs(arch: Arch = QWEN2_AUDIO_7B) -> list[tuple[RunConfig, int, int]]:
    """(config, trainable, total) for the table's rows."""
    P = sum(arch.params().values())
    T = P - arch.params().get("visual", 0)  # an Omni thinker's vision encoder is frozen: no gradients, no AdamW
    return [(PAPER, T, P), (LORA_1GPU, arch.lora_params(64), P + arch.lora_params(64)),
            (FULL_1GPU, T, P), (FULL_1GPU_BF16, T, P),
            (LORA_1GPU_24GB, arch.lora_params(16), P + arch.lora_params(16))]


# the policies of the README's tables (an Omni thinker's vision encoder counts as resident weights)
MODELS = {"Qwen2-Audio-7B-Instruct": QWEN2_AUDIO_7B, "Qwen2.5-Omni-7B thinker": QWEN2_5_OMNI_7B,
          "Qwen2.5-Omni-3B thinker": QWEN2_5_OMNI_3B,
          "Qwen3-Omni-30B-A3B thinker (MoE: all 128 experts resident, 8 active per token)": QWEN3_OMNI_30B_A3B,
          "Audio Flamingo 3 (nvidia/audio-flamingo-3-hf)": AUDIO_FLAMINGO3_7B,
          "Phi-4-multimodal (without its speech/vision LoRA adapters)": PHI4_MULTIMODAL}


def table(arch: Arch = QWEN2_AUDIO_7B, title: str = "Qwen2-Audio-7B-Instruct") -> str:
    """Markdown table of the estimate per configuration, in GB (1e9 bytes) per GPU."""
    cols = ["weights", "reference", "optimizer", "zero3", "gathered", "kv_cache", "gradients", "activations",
            "logits", "peak", "host_per_gpu"]
    heads = ["weights", "ref. model", "optimizer", "ZeRO-3 working set", "gathered for generate", "KV cache",
             "gradients", "activations", "logits", "**peak GPU**", "host RAM"]
    P = sum(arch.params().values())
    audio = round(10 * arch.audio_tokens_per_second)
    lines = [f"{title}: {P / 1e9:.2f} B parameters; G = 8, 1 prompt per GPU, 10 s audio "
             f"({audio} audio + 100 text tokens), 256 new tokens unless said otherwise.", "",
             "| configuration | " + " | ".join(heads) + " |", "|---" * (len(cols) + 1) + "|"]
    for cfg, trainable, total in configs(arch):
        m = estimate_memory(trainable, total, cfg, arch)
        cells = [f"{m[k] / GB:.1f}" for k in cols]
        cells[cols.index("peak")] = f"**{m['peak'] / GB:.0f}**"
        lines.append(f"| {cfg.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the estimate of every family's configurations (``make memory``)."""
    print("\n\n".join(table(arch, title) for title, arch in MODELS.items()))


if __name__ == "__main__":
    main()
