"""Qwen3-Omni's thinker: ``Qwen3OmniMoeThinkerForConditionalGeneration`` + ``Qwen3OmniMoeProcessor``.

The same seam as Qwen2.5-Omni (:mod:`r1aqa_pl.models.qwen2_5_omni`: thinker only, positions from
``get_rope_index`` which for audio-only prompts are the plain text positions, frozen vision
encoder), with a mixture-of-experts language model:

- every expert's weights are resident (and trained); each token runs its router's top-k experts;
- routing is a hard top-k, so a rollout and the update that re-scores it can route a token to other
  experts when the numbers differ slightly (batch shapes, the shared prefix's cache): the
  rollout-vs-update log-probability mismatch, measured in ``tests/test_family_qwen2_5_omni.py``;
- the routers' auxiliary load-balancing loss (Switch-Transformer style, as transformers computes it)
  is off by default; :meth:`Qwen3Omni.collect_router_logits` records the router logits of the
  forwards run inside it and :meth:`Qwen3Omni.router_aux_loss` turns them into the loss
  (``router_aux_loss_coef`` of the GRPO module weights it).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES
from r1aqa_pl.models.qwen2_5_omni import OmniArch, Qwen2_5Omni
from r1aqa_pl.models.tiny import tiny_text_config

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>",
           "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"]
NAMED = {"image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
         "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
         "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}

TINY_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class OmniMoeArch(OmniArch):
    """A mixture-of-experts thinker: all experts' weights resident; ``intermediate`` is what one token runs
    (top-k × the expert width), which is what activations scale with. The audio and vision encoders'
    sizes are counted off the real modules (:meth:`Qwen3Omni.arch` builds them on the meta device)."""

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


@FAMILIES.register("qwen3_omni")
class Qwen3Omni(Qwen2_5Omni):
    name = "qwen3_omni"
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    full_model_type = "qwen3_omni_moe"
    structural_tokens = ("<|audio_pad|>", "<|audio_start|>", "<|audio_end|>", "<|image_pad|>", "<|video_pad|>",
                         "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|im_start|>")
    system_prompt = None  # the Qwen3-Omni model cards recommend none for text answers
    tiny_special_tokens = SPECIAL
    tiny_chat_template = TINY_TEMPLATE
    # the experts are fused 3-D parameters, not Linear layers: LoRA on the attention projections
    lora_target_modules = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"
    # peft resolves the pattern of a model with fused experts to bare leaf names (q_proj, ...), which the audio
    # and vision encoders' attention layers have too: they are excluded by name
    lora_exclude_modules = r".*\.(audio_tower|visual)\..*"

    def model_class(self):
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

        return Qwen3OmniMoeThinkerForConditionalGeneration

    def processor_class(self):
        from transformers import Qwen3OmniMoeProcessor

        return Qwen3OmniMoeProcessor

    def audio_kwargs(self, processor, audio: list) -> dict:
        return {}  # this processor already pads to the batch's longest clip

    def idle_modules(self, model) -> list:
        return [self.backbone(model)[0].visual]

    def after_load(self, model) -> None:
        super().after_load(model)
        # Built under DeepSpeed ZeRO-3 (zero.Init), the fused experts miss what transformers' experts wrapper sets
        # in its __init__ (config and the layout flags, this class takes the wrapper's defaults) and reads in forward.
        import inspect

        from transformers.integrations import moe

        flags = {k: p.default for k, p in inspect.signature(moe.use_experts_implementation).parameters.items()
                 if k in ("is_concatenated", "is_transposed", "has_bias", "has_gate", "has_post_expert_norm")}
        for m in model.modules():
            if type(m).__name__.endswith("TextExperts") and "config" not in vars(m):
                m.config = model.config.text_config
                m._is_expert_parallel = False
                for k, v in flags.items():
                    setattr(m, k, v)

    # -- the routers' load-balancing loss ----------------------------------------------------------
    def routers(self, model):
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

        return [r for r in model.modules() if isinstance(r, m.Qwen3OmniMoeThinkerTextTopKRouter)]

    @contextmanager
    def collect_router_logits(self, model):
        """Within the block, every router call's logits [tokens, experts] are appended to the yielded list."""
        logits: list[Tensor] = []
        hooks = [r.register_forward_hook(lambda mod, args, out: logits.append(out[0])) for r in self.routers(model)]
        try:
            yield logits
        finally:
            for h in hooks:
                h.remove()

    def router_aux_loss(self, model, router_logits: list[Tensor]) -> Tensor:
        """transformers' load-balancing loss over every routed token (prompt, completions and pads alike)."""
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

        t = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        t = t.text_config
        per_layer = torch.cat([g.reshape(-1, t.num_experts) for g in router_logits])  # any order: a mean over tokens
        return m.load_balancing_loss_func((per_layer,), t.num_experts, t.num_experts_per_tok)

    # -- tiny build, memory estimate --------------------------------------------------------------
    def named_tokens(self) -> dict[str, str]:
        return dict(NAMED)

    def tiny_config(self, tokenizer, ids: dict, n_mels: int, frames: int, hidden_size: int, num_layers: int,
                    num_heads: int, encoder_dim: int, encoder_layers: int):
        from transformers import Qwen3OmniMoeThinkerConfig

        head_dim = hidden_size // num_heads
        q = head_dim // 2 // 4
        config = Qwen3OmniMoeThinkerConfig(
            audio_config={"num_mel_bins": n_mels, "encoder_layers": encoder_layers,
                          "encoder_attention_heads": num_heads, "encoder_ffn_dim": 2 * encoder_dim,
                          "d_model": encoder_dim, "n_window": 50, "n_window_infer": 800,
                          "max_source_positions": frames // 2, "downsample_hidden_size": encoder_dim,
                          "output_dim": hidden_size},  # the hub's 1 s conv chunks and 8 s attention windows
            vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2,
                           "out_hidden_size": hidden_size, "num_position_embeddings": 16,
                           "deepstack_visual_indexes": [0]},
            text_config=tiny_text_config(
                len(tokenizer), ids, hidden_size, num_layers, num_heads, head_dim=head_dim,
                moe_intermediate_size=hidden_size // 2, num_experts=4, num_experts_per_tok=2,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "interleaved": True,
                                 "mrope_section": [head_dim // 2 - 2 * q, q, q]}),
            audio_token_id=ids["<|audio_pad|>"], image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"], audio_start_token_id=ids["<|audio_start|>"],
            tie_word_embeddings=False,
        )
        config.vision_start_token_id = ids["<|vision_start|>"]  # read by get_rope_index, not a declared field
        config.audio_end_token_id = ids["<|audio_end|>"]
        return config

    def arch(self, config) -> OmniMoeArch:
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

        if config.model_type == self.full_model_type:
            config = config.thinker_config
        t, a, v = config.text_config, config.audio_config, config.vision_config
        with torch.device("meta"):  # no memory: only the parameter counts are read
            audio = sum(p.numel() for p in m.Qwen3OmniMoeAudioEncoder._from_config(a).parameters())
            visual = sum(p.numel() for p in m.Qwen3OmniMoeVisionEncoder._from_config(v).parameters())
        return OmniMoeArch(vocab=t.vocab_size, hidden=t.hidden_size,
                           intermediate=t.num_experts_per_tok * t.moe_intermediate_size,
                           layers=t.num_hidden_layers, heads=t.num_attention_heads, kv_heads=t.num_key_value_heads,
                           audio_dim=a.d_model, audio_ffn=a.encoder_ffn_dim, audio_layers=a.encoder_layers,
                           mel_bins=a.num_mel_bins, vision_hidden=v.hidden_size, vision_intermediate=v.intermediate_size, vision_depth=v.depth,
                           vision_patch=v.patch_size, vision_temporal_patch=v.temporal_patch_size,
                           vision_merge=v.spatial_merge_size, experts=t.num_experts,
                           experts_per_token=t.num_experts_per_tok, expert_intermediate=t.moe_intermediate_size,
                           head_dim=t.head_dim, audio_params=audio, visual_params=visual,
                           audio_positions=13 * 30, audio_tokens_per_second=13.0)  # 13 per 100-frame chunk
