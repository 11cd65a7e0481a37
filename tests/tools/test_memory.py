"""The memory model (r1aqa_pl/tools/memory.py) against real tensors of the tiny Qwen2-Audio: parameter counts by
component, weights / gradients / AdamW states, ZeRO sharding and offload arithmetic, LoRA, the KV cache,
activations saved for backward, and the LM head only ever seeing completion positions."""

import pytest
import torch

from r1aqa_pl.models.qwen2_audio import Qwen2Audio
from r1aqa_pl.models.sizes import QWEN2_AUDIO_7B
from r1aqa_pl.tools import memory
from r1aqa_pl.tools.memory import RunConfig, estimate_memory

FP32 = dict(weight_bytes=4, grad_bytes=4, state_bytes=4, master_weights=False, reference=False, activation_bytes=4)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(tiny_dir), attn_implementation="sdpa")
    return model, Qwen2Audio().arch(model.config)


def component(name: str) -> str:
    return name.split(".")[1] if name.startswith("model.") else name.split(".")[0]


def test_parameter_count_by_component(tiny):
    model, arch = tiny
    actual: dict[str, int] = {}
    for n, p in model.named_parameters():
        actual[component(n)] = actual.get(component(n), 0) + p.numel()
    assert arch.params() == actual
    # the 7B: what its config.json describes (Qwen-7B LM, 32-layer 1280-wide encoder, 156,032 tokens)
    p7 = QWEN2_AUDIO_7B.params()
    assert sum(p7.values()) == pytest.approx(8.40e9, rel=0.005)
    assert p7["audio_tower"] == pytest.approx(0.637e9, rel=0.01) and p7["lm_head"] == 156032 * 4096


def test_weights_gradients_and_adamw_states_match_real_tensors(tiny):
    model, arch = tiny
    model = model.float().train()
    P = sum(p.numel() for p in model.parameters())
    est = estimate_memory(P, P, RunConfig("tiny fp32", **FP32), arch)
    assert est["weights"] == sum(p.nbytes for p in model.parameters())
    ids = torch.randint(10, arch.vocab, (2, 12))
    model.model.language_model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    for p in model.parameters():  # the audio path was not run: give those a gradient too
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    assert est["gradients"] == sum(p.grad.nbytes for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    states = sum(v.nbytes for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq"))
    assert est["optimizer"] == states
    model.zero_grad(set_to_none=True)


def test_zero_sharding_and_offload_arithmetic():
    P = 1000
    base = dict(**FP32, n_gpus=4)
    ddp = estimate_memory(P, P, RunConfig("ddp", **base))
    z2 = estimate_memory(P, P, RunConfig("z2", zero_stage=2, **base))
    z3 = estimate_memory(P, P, RunConfig("z3", zero_stage=3, **base))
    off = estimate_memory(P, P, RunConfig("z3 offload", zero_stage=3, offload_optimizer=True, offload_params=True,
                                          **base))
    assert ddp["weights"] == z2["weights"] == 4 * P and z3["weights"] == P  # stage 3 shards the weights
    assert ddp["gradients"] == 4 * P and z2["gradients"] == z3["gradients"] == P  # stage 2+ shards gradients
    assert ddp["optimizer"] == 8 * P and z2["optimizer"] == z3["optimizer"] == 2 * P  # ZeRO shards optimizer states
    assert off["weights"] == off["optimizer"] == off["gradients"] == 0
    assert off["host_per_gpu"] == (8 * P + 4 * P) / 4 + 4 * P / 4  # moments + fp32 grads, and the weights
    mixed = estimate_memory(P, P, RunConfig("bf16 + fp32 master", n_gpus=4, zero_stage=1))
    assert mixed["optimizer"] == (4 + 4 + 4) * P / 4 and mixed["weights"] == 2 * P


def test_lora_trainable_parameters_and_states(tiny, tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    _, arch = tiny
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(tiny_dir))
    target = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target))
    trainable = [p for p in model.parameters() if p.requires_grad]
    T, P = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
    assert T == arch.lora_params(4)  # only the language model's projections (not the audio encoder's q/k/v)
    est = estimate_memory(T, P, RunConfig("lora", lora=True, **FP32), arch)
    assert est["weights"] == sum(p.nbytes for p in model.parameters()) and est["reference"] == 0
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert est["optimizer"] == sum(v.nbytes for s in opt.state.values() for k, v in s.items() if k != "step")
    assert est["gradients"] == sum(p.grad.nbytes for p in trainable)


def test_kv_cache_term(tiny):
    """The rollout's cache: B prompts' keys/values once each, room for G rows' new tokens (grouped attention)."""
    from r1aqa_pl.attention.grouped import GroupedCache

    model, arch = tiny
    B, G, L, T = 2, 3, 17, 5
    cfg = RunConfig("kv", prompts_per_batch=B, G=G, prompt_text_tokens=L, audio_seconds=0, max_new_tokens=T,
                    **FP32)
    ids = torch.randint(10, arch.vocab, (B, L))
    with torch.no_grad():
        out = model.model.language_model(input_ids=ids, use_cache=True)
    cache = GroupedCache(out.past_key_values, torch.ones(B, L), G, room=T)
    nbytes = sum(b.nbytes for layer in cache.layers for b in layer._bufs)
    assert estimate_memory(1, 1, cfg, arch)["kv_cache"] == nbytes


def saved_activation_bytes(fn, params) -> int:
    """Bytes of the distinct tensors autograd keeps for backward, parameters excluded."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs and not (t.dim() >= 2 and t.shape[-1] == t.shape[-2] > 64):  # the causal mask
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_activation_terms_per_layer(tiny):
    """Kept for backward, per token and decoder layer (8h + 2kv + 4I)·a (each RMSNorm keeps its input, the
    normalised and the scaled output; q, k, v after RoPE; the attention output; 4 MLP tensors), and per encoder
    position and layer (9d + 2f)·a."""
    model, arch = tiny
    model = model.float()
    n = 256
    lm = model.model.language_model
    x = torch.randn(1, n, arch.hidden, requires_grad=True)
    pos = torch.arange(n)[None]
    rope = lm.rotary_emb(x, pos)
    layer = lm.layers[0]
    got = saved_activation_bytes(lambda: layer(x, attention_mask=None, position_ids=pos, position_embeddings=rope),
                                 layer.parameters())
    per_token = (8 * arch.hidden + 2 * arch.kv + 4 * arch.intermediate) * 4
    assert got == pytest.approx(n * per_token, rel=0.05)  # + RoPE tables and normalisation statistics
    layer = model.model.audio_tower.layers[0]
    y = torch.randn(1, arch.audio_positions, arch.audio_dim, requires_grad=True)
    got = saved_activation_bytes(lambda: layer(y, attention_mask=None)[0], layer.parameters())
    assert got == pytest.approx(arch.audio_positions * (9 * arch.audio_dim + 2 * arch.audio_ffn) * 4, rel=0.05)


def test_lm_head_only_sees_completion_positions(tiny, tiny_dir):
    """The logits term counts completion positions only: the LM head is never applied to prompt/audio positions."""
    from r1aqa_pl.algo.logprobs import completion_logprobs
    from r1aqa_pl.training.grpo_module import GRPOModule

    model, arch = tiny
    m = GRPOModule(str(tiny_dir), sampling=dict(G=3))
    m.configure_model()
    seen = []
    handle = m.policy.lm_head.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    inputs = {"input_ids": torch.randint(10, arch.vocab, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    T = 5
    completion = torch.randint(10, arch.vocab, (2 * 3, T))
    completion_logprobs(m.family, m.policy, inputs, completion, torch.ones_like(completion), G=3)
    handle.remove()
    assert sum(s[:-1].numel() for s in seen) == 2 * 3 * T  # B·G·T rows, never the 9 prompt positions
    cfg = RunConfig("logits", micro_batch_prompts=2, G=3, max_new_tokens=T)
    assert estimate_memory(1, 1, cfg, arch)["logits"] == 2 * 3 * T * arch.vocab * 12


def test_readme_table_for_the_7b():
    text = memory.table()
    assert text.count("\n| ") == 1 + 5 and "ZeRO-3" in text and "LoRA" in text  # header + 5 rows
    peaks = {cfg.name: estimate_memory(t, p, cfg)["peak"] / 1e9 for cfg, t, p in memory.configs()}
    assert peaks[memory.PAPER.name] < 80 and peaks[memory.LORA_1GPU.name] < 80  # sized for 80 GB GPUs
    assert peaks[memory.FULL_1GPU.name] > 80 and peaks[memory.FULL_1GPU_BF16.name] > 80  # does not fit one GPU
    assert peaks[memory.LORA_1GPU_24GB.name] < 24
