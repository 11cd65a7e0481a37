"""The architecture numbers that memory depends on: :class:`Arch` and each family's variant, and the published
checkpoints' numbers that ``r1aqa memory`` tabulates (:mod:`r1aqa_pl.tools.memory`).

A family builds its variant from a loaded config (:meth:`r1aqa_pl.models.base.PolicyFamily.arch`); the constants
here are what that gives for the hub checkpoints' configs (the tests rebuild them on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """The numbers of an audio LM (Whisper-style encoder + decoder-only LM) that memory depends on."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    audio_dim: int
    audio_ffn: int
    audio_layers: int
    mel_bins: int = 128
    audio_positions: int = 1500  # encoder positions of one window (max_source_positions)
    audio_tokens_per_second: float = 25.0  # after the encoder's pooling: 750 for 30 s

    @property
    def kv(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def params(self) -> dict[str, int]:
        """Parameters by component (audio tower, projector, language model, LM head)."""
        d, f, h, I, kv, V = self.audio_dim, self.audio_ffn, self.hidden, self.intermediate, self.kv, self.vocab
        audio_layer = (d * d + d) + d * d + (d * d + d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        lm_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * I + 2 * h
        return {
            "audio_tower": (self.mel_bins * d * 3 + d) + (d * d * 3 + d) + self.audio_positions * d
            + self.audio_layers * audio_layer + 2 * d,
            "multi_modal_projector": d * h + h,
            "language_model": V * h + self.layers * lm_layer + h,
            "lm_head": V * h,
        }

    def lora_params(self, r: int, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj")) -> int:
        """LoRA adapter parameters (A: r×in, B: out×r) on the language model's projections."""
        h, I, kv = self.hidden, self.intermediate, self.kv
        shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                  "gate_proj": (h, I), "up_proj": (h, I), "down_proj": (I, h)}
        return self.layers * sum(r * (i + o) for i, o in (shapes[t] for t in targets))


# -- Qwen2-Audio ---------------------------------------------------------------------------------------------------

# Qwen/Qwen2-Audio-7B-Instruct (config.json): Qwen-7B language model, Whisper-large-v3-style encoder
QWEN2_AUDIO_7B = Arch(vocab=156032, hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32,
                      audio_dim=1280, audio_ffn=5120, audio_layers=32, mel_bins=128, audio_positions=1500)


# -- Qwen2.5-Omni --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OmniArch(Arch):
    """An Omni thinker: the audio encoder projects to the LM's width itself (no separate projector), its
    positions are a buffer, and a vision encoder sits beside it (resident, never run for audio)."""

    vision_hidden: int = 1280
    vision_intermediate: int = 3420
    vision_depth: int = 32
    vision_patch: int = 14
    vision_temporal_patch: int = 2
    vision_merge: int = 2

    def params(self) -> dict[str, int]:
        d, f, h, V = self.audio_dim, self.audio_ffn, self.hidden, self.vocab
        audio_layer = (d * d + d) + d * d + (d * d + d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
        vh, vi, m = self.vision_hidden, self.vision_intermediate, self.vision_hidden * self.vision_merge ** 2
        vision_block = 2 * vh + 4 * (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
        lm = self.params_language_model()
        return {
            "audio_tower": (self.mel_bins * d * 3 + d) + (d * d * 3 + d) + 2 * h + self.audio_layers * audio_layer
            + 2 * d + (d * h + h),
            "visual": 3 * self.vision_temporal_patch * self.vision_patch ** 2 * vh + self.vision_depth * vision_block
            + vh + (m * m + m) + (m * h + h),
            "language_model": lm,
            "lm_head": V * h,
        }

    def params_language_model(self) -> int:
        h, I, kv, V = self.hidden, self.intermediate, self.kv, self.vocab
        return V * h + self.layers * ((h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * I + 2 * h) + h


# Qwen/Qwen2.5-Omni-7B and -3B thinker_config (config.json): Qwen2.5-7B / -3B language models, the same
# Whisper-style audio encoder (32 layers, d_model 1280) and a 32-block vision encoder of width 1280 (the
# hub configs'; transformers' class default of 3584 is the language model's width, not the encoder's)
QWEN2_5_OMNI_7B = OmniArch(vocab=152064, hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4,
                           audio_dim=1280, audio_ffn=5120, audio_layers=32, mel_bins=128, audio_positions=1500)
QWEN2_5_OMNI_3B = OmniArch(vocab=151936, hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2,
                           audio_dim=1280, audio_ffn=5120, audio_layers=32, mel_bins=128, audio_positions=1500)


# -- Qwen3-Omni ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OmniMoeArch(OmniArch):
    """A mixture-of-experts thinker: all experts' weights resident; ``intermediate`` is what one token runs
    (top-k × the expert width), which is what activations scale with. The audio and vision encoders'
    sizes are counted off the real modules (:meth:`r1aqa_pl.models.qwen3_omni.Qwen3Omni.arch` builds them on
    the meta device)."""

    experts: int = 128
    experts_per_token: int = 8
    expert_intermediate: int = 768
    head_dim: int = 128
    audio_params: int = 0
    visual_params: int = 0

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    def params(self) -> dict[str, int]:
        h, kv, V, q = self.hidden, self.kv, self.vocab, self.heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h + 2 * self.head_dim  # q/k/v/o, q_norm and k_norm
        moe = self.experts * 3 * h * self.expert_intermediate + self.experts * h  # experts + router
        return {"audio_tower": self.audio_params, "visual": self.visual_params,
                "language_model": V * h + self.layers * (attn + moe + 2 * h) + h, "lm_head": V * h}

    def lora_params(self, r: int, targets=("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
        h, kv, q = self.hidden, self.kv, self.heads * self.head_dim
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
        return self.layers * sum(r * (i + o) for i, o in (shapes[t] for t in targets))


# Qwen/Qwen3-Omni-30B-A3B-Instruct thinker_config (config.json), as published: 48 MoE layers of 128 experts
# (top-8, width 768), a 32-layer audio encoder (d_model 1280) and a 27-block vision encoder (width 1152)
QWEN3_OMNI_30B_A3B_GEOMETRY = {
    "text_config": {"vocab_size": 152064, "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
                    "num_key_value_heads": 4, "head_dim": 128, "moe_intermediate_size": 768, "num_experts": 128,
                    "num_experts_per_tok": 8},
    "audio_config": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                     "num_mel_bins": 128, "output_dim": 2048, "downsample_hidden_size": 480},
    "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                      "patch_size": 16, "out_hidden_size": 2048, "deepstack_visual_indexes": [8, 16, 24]},
}
# what Qwen3Omni().arch gives for that geometry (tests/test_family_qwen2_5_omni.py rebuilds it): 31.7 B parameters
QWEN3_OMNI_30B_A3B = OmniMoeArch(
    vocab=152064, hidden=2048, intermediate=8 * 768, layers=48, heads=32, kv_heads=4, audio_dim=1280, audio_ffn=5120,
    audio_layers=32, mel_bins=128, audio_positions=390, audio_tokens_per_second=13.0, vision_hidden=1152,
    vision_intermediate=4304, vision_depth=27, vision_patch=16, experts=128, experts_per_token=8,
    expert_intermediate=768, head_dim=128, audio_params=647927168, visual_params=538631408)


# -- Audio Flamingo 3 ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AF3Arch(Arch):
    """Audio Flamingo 3: the projector is two layers (audio width → LM width → LM width)."""

    def params(self) -> dict[str, int]:
        out = super().params()
        out["multi_modal_projector"] += self.hidden * self.hidden + self.hidden
        return out


# nvidia/audio-flamingo-3-hf: Qwen2.5-7B language model (transformers' conversion script's Qwen2Config),
# AF-Whisper encoder (Whisper-large-v3 geometry, the encoder config's defaults); vocabulary = the
# Qwen2.5 tokenizer with AF3's added tokens (``<sound>`` is id 151669)
AUDIO_FLAMINGO3_7B = AF3Arch(vocab=151672, hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4,
                             audio_dim=1280, audio_ffn=5120, audio_layers=32, mel_bins=128, audio_positions=1500)


# -- Phi-4-multimodal ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phi4Arch(Arch):
    """Phi-4-multimodal: fused projections, and the encoders inside the embedding module (counted off the
    real modules on the meta device by :meth:`r1aqa_pl.models.phi4_multimodal.Phi4Multimodal.arch`)."""

    embed_extend_params: int = 0
    tied: bool = False  # the LM head is the token embedding (the hub model's)

    def params(self) -> dict[str, int]:
        h, I, kv, V = self.hidden, self.intermediate, self.kv, self.vocab
        layer = h * (h + 2 * kv) + h * h + h * 2 * I + I * h + 2 * h
        out = {"embed_tokens": V * h, "layers": self.layers * layer, "norm": h,
               "embed_tokens_extend": self.embed_extend_params}
        return out if self.tied else {**out, "lm_head": V * h}

    def lora_params(self, r: int, targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj")) -> int:
        h, I, kv = self.hidden, self.intermediate, self.kv
        shapes = {"qkv_proj": (h, h + 2 * kv), "o_proj": (h, h), "gate_up_proj": (h, 2 * I), "down_proj": (I, h)}
        return self.layers * sum(r * (i + o) for i, o in (shapes[t] for t in targets))


# microsoft/Phi-4-multimodal-instruct: Phi-4-mini (3072 wide, 32 layers, 24 heads of 128, 8 KV heads,
# vocabulary 200064, tied LM head), the Conformer (24 blocks, 1024 wide) and SigLIP (27 layers, 1152 wide)
# encoders at transformers' defaults; 4.74 B parameters without the hub's separate speech and vision LoRA
# adapters (its "5.6 B" counts them). What Phi4Multimodal().arch gives for a config of this geometry
# (tests/test_families_beyond_qwen.py rebuilds it on the meta device).
PHI4_MULTIMODAL_GEOMETRY = {"vocab_size": 200064, "hidden_size": 3072, "intermediate_size": 8192,
                            "num_hidden_layers": 32, "num_attention_heads": 24, "num_key_value_heads": 8,
                            "tie_word_embeddings": True}
PHI4_MULTIMODAL = Phi4Arch(vocab=200064, hidden=3072, intermediate=8192, layers=32, heads=24, kv_heads=8,
                           audio_dim=1024, audio_ffn=1536, audio_layers=24, mel_bins=80, audio_positions=375,
                           audio_tokens_per_second=12.5, embed_extend_params=907982272, tied=True)
