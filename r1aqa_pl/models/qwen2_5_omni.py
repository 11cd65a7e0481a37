"""Qwen2.5-Omni's thinker: ``Qwen2_5OmniThinkerForConditionalGeneration`` + ``Qwen2_5OmniProcessor``.

The thinker is the text-generating half of Qwen2.5-Omni (audio encoder, vision encoder, language
model); the talker and token2wav (speech output) are never built. A full Omni checkpoint folder
(``model_type`` ``qwen2_5_omni``) is read for its ``thinker_config`` and its ``thinker.*`` tensors only.

Positions: the thinker uses multimodal rotary positions (three rows: time, height, width), but for
prompts without images or video ``get_rope_index`` gives every token, audio included, the plain
left-padding position (cumsum of the mask minus one; 1 on pads) on all three rows, and a zero delta
for the decoding steps. The shared-prefix path therefore passes those positions as one row, which the
text model broadcasts to three.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from r1aqa_pl.attention.windows import windows_batched
from r1aqa_pl.models.base import FAMILIES, PolicyFamily, whisper_tokens
from r1aqa_pl.models.sizes import OmniArch
from r1aqa_pl.task import prompts
from r1aqa_pl.task.question import Question

# the system prompt the Qwen2.5-Omni model cards ask for (their speech output depends on it)
SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory "
          "and visual inputs, as well as generating text and speech.")

# the names the processor reads off the tokenizer (Qwen2.5-Omni's tokenizer_config "extra_special_tokens")
NAMED = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
         "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
         "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


@FAMILIES.register("qwen2_5_omni")


class Qwen2_5Omni(PolicyFamily):
    name = "qwen2_5_omni"
    model_types = ("qwen2_5_omni_thinker", "qwen2_5_omni")
    full_model_type = "qwen2_5_omni"  # a whole Omni checkpoint: its thinker is taken out of it
    audio_keys = ("input_features", "feature_attention_mask")
    structural_tokens = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>",
                         "<|vision_eos|>", "<|vision_pad|>", "<|im_start|>")
    system_prompt: str | None = SYSTEM

    def model_class(self):
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration

    def processor_class(self):
        from transformers import Qwen2_5OmniProcessor

        return Qwen2_5OmniProcessor

    # -- loading --------------------------------------------------------------------------------
    def load_kwargs(self, model_name_or_path: str) -> dict:
        """A whole Omni checkpoint: only the thinker's config and its ``thinker.*`` tensors are read (the talker and
        token2wav are never built); a thinker folder or an export loads as it is."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_name_or_path)
        if config.model_type == self.full_model_type:
            return {"config": config.thinker_config, "key_mapping": {r"^thinker\.": ""}}
        return {}

    def idle_modules(self, model) -> list:
        """The vision encoder, and the audio encoder's bos/eos embedding that the thinker never reads."""
        core = self.backbone(model)[0]
        return [core.visual, core.audio_tower.audio_bos_eos_token]

    # -- prompts ----------------------------------------------------------------------------------
    def messages(self, q: Question, template: str, with_audio: bool) -> list[dict]:
        turns = prompts.messages(q, template, with_audio)
        return ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + turns

    def render(self, processor, q: Question, template: str = "plain", with_audio: bool = True) -> str:
        return processor.apply_chat_template(self.messages(q, template, with_audio), add_generation_prompt=True,
                                             tokenize=False)

    def audio_tokens(self, processor, n_samples: int) -> int:
        """As Qwen2-Audio: the clip cut at the window, 10 ms frames, stride-2 convolution, pooling by 2."""
        fe = processor.feature_extractor
        return whisper_tokens(min(n_samples, fe.n_samples) // fe.hop_length)

    def audio_kwargs(self, processor, audio: list) -> dict:
        """Mel features up to the batch's longest clip (and one STFT window of the zeros after it) instead of the
        30 s window the processor pads every clip to: the thinker's encoder reads each clip's own frames only, and
        those come out bit for bit the same (for 10 s clips a third of the processor's work). Longer clips are
        cut at the window as the processor cuts them."""
        fe = processor.feature_extractor
        longest = max(np.shape(a)[-1] for a in audio)  # samples (the last axis of any array-like)
        return {"max_length": min(fe.n_samples, longest + fe.n_fft)}

    # -- forward pieces ---------------------------------------------------------------------------
    def encode_audio(self, core, input_features: Tensor, feature_attention_mask: Tensor) -> Tensor:
        """The encoder's own call over each clip's frames only (it drops the window's padding itself and
        attends within ``n_window`` chunks, here one attention call per chunk length): [Σ audio tokens, hidden]."""
        with windows_batched(core.audio_tower):
            return core.get_audio_features(input_features, feature_attention_mask).last_hidden_state

    def full_forward(self, core, inputs: dict[str, Tensor], attention_mask: Tensor) -> Tensor:
        """The thinker's own forward, positions from its own ``get_rope_index``."""
        core.rope_deltas = None  # recomputed from these inputs, never a previous batch's
        inputs = self.model_inputs(inputs)
        out = core(input_ids=inputs["input_ids"], attention_mask=attention_mask, use_cache=False,
                   **self.audio_inputs(inputs))
        return out.last_hidden_state

    def position_ids(self, attention_mask: Tensor) -> Tensor:
        """``get_rope_index``'s positions for prompts without images or video: one row of the three."""
        pos = attention_mask.long().cumsum(-1) - 1
        return pos.masked_fill(attention_mask == 0, 1)

    def before_generate(self, model) -> None:
        """``generate`` reuses the thinker's cached rope deltas when a prefilled cache is given; those of an
        earlier batch (another size) would not broadcast, so they are recomputed from this batch."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.model.rope_deltas = None

    # -- tokenizer names, memory estimate ---------------------------------------------------------
    def named_tokens(self) -> dict[str, str]:
        """The tokens the processor reads off the tokenizer by name (its ``extra_special_tokens``)."""
        return dict(NAMED)

    def arch(self, config) -> OmniArch:
        if config.model_type == self.full_model_type:
            config = config.thinker_config
        t, a, v = config.text_config, config.audio_config, config.vision_config
        return OmniArch(vocab=t.vocab_size, hidden=t.hidden_size, intermediate=t.intermediate_size,
                        layers=t.num_hidden_layers, heads=t.num_attention_heads, kv_heads=t.num_key_value_heads,
                        audio_dim=a.d_model, audio_ffn=a.encoder_ffn_dim, audio_layers=a.encoder_layers,
                        mel_bins=a.num_mel_bins, audio_positions=a.max_source_positions, vision_hidden=v.hidden_size,
                        vision_intermediate=v.intermediate_size, vision_depth=v.depth, vision_patch=v.patch_size,
                        vision_temporal_patch=v.temporal_patch_size, vision_merge=v.spatial_merge_size)
