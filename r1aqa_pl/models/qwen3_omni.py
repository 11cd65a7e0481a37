"""Qwen3-Omni's thinker: ``Qwen3OmniMoeThinkerForConditionalGeneration`` + ``Qwen3OmniMoeProcessor``.

The same seam as Qwen2.5-Omni (:mod:`r1aqa_pl.models.qwen2_5_omni`: thinker only, positions from
``get_rope_index`` which for audio-only prompts are the plain text positions, frozen vision
encoder), with a mixture-of-experts language model:

- every expert's weights are resident (and trained); each token runs its router's top-k experts;
- routing is a hard top-k, so a rollout and the update that re-scores it can route a token to other
  experts when the numbers differ slightly (batch shapes, the shared prefix's cache): with
  ``sampling.keep_logprobs`` each step logs how often (``train/rollout_agreement/routed_flips``, from
  :meth:`Qwen3Omni.chosen_experts` recorded by ``record_routes``); ``r1aqa moe-mismatch`` measures it offline;
- the routers' auxiliary load-balancing loss (Switch-Transformer style, as transformers computes it)
  is off by default; :meth:`Qwen3Omni.collect_router_logits` records the router logits of the
  forwards run inside it and :meth:`Qwen3Omni.router_aux_loss` turns them into the loss
  (``router_aux_loss_coef`` of the GRPO module weights it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES
from r1aqa_pl.models.qwen2_5_omni import Qwen2_5Omni
from r1aqa_pl.models.sizes import OmniMoeArch

NAMED = {"image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
         "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
         "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}


@FAMILIES.register("qwen3_omni")


class Qwen3Omni(Qwen2_5Omni):
    name = "qwen3_omni"
    model_types = ("qwen3_omni_moe_thinker", "qwen3_omni_moe")
    full_model_type = "qwen3_omni_moe"
    structural_tokens = ("<|audio_pad|>", "<|audio_start|>", "<|audio_end|>", "<|image_pad|>", "<|video_pad|>",
                         "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|im_start|>")
    system_prompt = None  # the Qwen3-Omni model cards recommend none for text answers
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

    def audio_tokens(self, processor, n_samples: int) -> int:
        """No window: 13 tokens per full 100 frames (1 s), the rest through three stride-2 steps."""
        frames = n_samples // processor.feature_extractor.hop_length
        rest = (frames % 100 - 1) // 2 + 1
        return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + frames // 100 * 13

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

    def chosen_experts(self, router_output) -> Tensor:
        return router_output[2]  # (logits, top-k weights, top-k indices)

    @contextmanager
    def collect_router_logits(self, model):
        """Within the block, every router call's logits [tokens, experts] are appended to the yielded list."""
        logits: list[Tensor] = []
        with self.on_router_calls(model, lambda i, out: logits.append(out[0])):
            yield logits

    def router_aux_loss(self, model, router_logits: list[Tensor]) -> Tensor:
        """transformers' load-balancing loss over every routed token (prompt, completions and pads alike)."""
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

        t = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
        t = t.text_config
        per_layer = torch.cat([g.reshape(-1, t.num_experts) for g in router_logits])  # any order: a mean over tokens
        return m.load_balancing_loss_func((per_layer,), t.num_experts, t.num_experts_per_tok)

    # -- tokenizer names, memory estimate ---------------------------------------------------------
    def named_tokens(self) -> dict[str, str]:
        return dict(NAMED)

    def arch(self, config) -> OmniMoeArch:
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as m

        if config.model_type == self.full_model_type:
            config = config.thinker_config
        t, a, v = config.text_config, config.audio_config, config.vision_config
        with torch.device("meta"):  # no memory: only the parameter counts are read
            audio = sum(p.numel() for p in m.Qwen3OmniMoeAudioEncoder._from_config(a).parameters())
            visual = sum(p.numel() for p in m.Qwen3OmniMoeVisionEncoder._from_config(v).parameters())
        return OmniMoeArch(
            vocab=t.vocab_size,
            hidden=t.hidden_size,
            intermediate=t.num_experts_per_tok * t.moe_intermediate_size,
            layers=t.num_hidden_layers,
            heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads,
            audio_dim=a.d_model,
            audio_ffn=a.encoder_ffn_dim,
            audio_layers=a.encoder_layers,
            mel_bins=a.num_mel_bins,
            vision_hidden=v.hidden_size,
            vision_intermediate=v.intermediate_size,
            vision_depth=v.depth,
            vision_patch=v.patch_size,
            vision_temporal_patch=v.temporal_patch_size,
            vision_merge=v.spatial_merge_size,
            experts=t.num_experts,
            experts_per_token=t.num_experts_per_tok,
            expert_intermediate=t.moe_intermediate_size,
            head_dim=t.head_dim,
            audio_params=audio,
            visual_params=visual,
            audio_positions=13 * 30,
            audio_tokens_per_second=13.0,
        )  # 13 per 100-frame chunk
