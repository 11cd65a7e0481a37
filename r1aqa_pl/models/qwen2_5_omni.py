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

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from r1aqa_pl.task import prompts
from r1aqa_pl.models.base import FAMILIES, Arch, PolicyFamily
from r1aqa_pl.models.tiny import tiny_text_config, word_tokenizer
from r1aqa_pl.task.question import Question
from r1aqa_pl.attention.windows import windows_batched

# the system prompt the Qwen2.5-Omni model cards ask for (their speech output depends on it)
SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory "
          "and visual inputs, as well as generating text and speech.")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
           "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>"]
# the names the processor reads off the tokenizer (Qwen2.5-Omni's tokenizer_config "extra_special_tokens")
NAMED = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
         "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
         "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}

# Qwen2.5-Omni's chat template, reduced to what an audio question uses (system + user turns, audio
# and text parts, the generation prompt); the hub checkpoints ship the full one.
TINY_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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


@FAMILIES.register("qwen2_5_omni")
class Qwen2_5Omni(PolicyFamily):
    name = "qwen2_5_omni"
    model_types = ("qwen2_5_omni_thinker", "qwen2_5_omni")
    full_model_type = "qwen2_5_omni"  # a whole Omni checkpoint: its thinker is taken out of it
    audio_keys = ("input_features", "feature_attention_mask")
    structural_tokens = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>",
                         "<|vision_eos|>", "<|vision_pad|>", "<|im_start|>")
    system_prompt: str | None = SYSTEM
    tiny_special_tokens = SPECIAL  # the tiny tokenizer's special tokens and chat template
    tiny_chat_template = TINY_TEMPLATE

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

    # -- tiny build, memory estimate --------------------------------------------------------------
    def tiny_config(self, tokenizer, ids: dict, n_mels: int, frames: int, hidden_size: int, num_layers: int,
                    num_heads: int, encoder_dim: int, encoder_layers: int):
        from transformers import Qwen2_5OmniThinkerConfig

        head_dim = hidden_size // num_heads
        q = head_dim // 2 // 4  # mrope sections (time, height, width): three parts of the rotary half
        return Qwen2_5OmniThinkerConfig(
            audio_config={"num_mel_bins": n_mels, "encoder_layers": encoder_layers,
                          "encoder_attention_heads": num_heads, "encoder_ffn_dim": 2 * encoder_dim,
                          "d_model": encoder_dim, "n_window": 100, "max_source_positions": frames // 2,
                          "output_dim": hidden_size},  # n_window: the hub's 2 s chunks (a demo clip is one)
            vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2,
                           "out_hidden_size": hidden_size, "fullatt_block_indexes": [0]},
            text_config=tiny_text_config(len(tokenizer), ids, hidden_size, num_layers, num_heads, rope_parameters={
                "rope_type": "default", "rope_theta": 1e6, "mrope_section": [head_dim // 2 - 2 * q, q, q]}),
            audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
            video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
            audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
            vision_end_token_id=ids["<|vision_eos|>"], tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer, n_mels: int, window_seconds: int):
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, hop_length=160,
                                     chunk_length=int(window_seconds), n_fft=400)
        return self.processor_class()(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                      feature_extractor=fe, tokenizer=tokenizer,
                                      chat_template=self.tiny_chat_template)

    def build_tiny(self, out_dir: str, words: list[str] | None = None, seed: int = 0, window_seconds: int = 2,
                   n_mels: int = 32, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                   encoder_dim: int = 64, encoder_layers: int = 2, init_std: float | None = None) -> str:
        """A real thinker (Qwen3-Omni: a MoE one, 4 experts, top-2) with a word-level tokenizer, a short Whisper
        window and a one-block vision encoder. The processor needs torchvision (its video processor), as the
        hub's does. The audio encoder keeps the hub's windows in seconds: with 1 s chunks instead of Qwen2.5-Omni's
        2 s, SFT of the demo's tiny thinker never learned the speech questions in 800 steps (with 2 s: 1.00);
        Qwen3-Omni's tiny downsampling convolutions are as wide as its encoder (the hub's 480 of 1280): at 8
        channels the clips reached the language model nearly alike and SFT stayed at chance."""
        special = self.tiny_special_tokens
        system_words = (self.system_prompt or "").split()
        tokenizer = word_tokenizer(special, [*(words or []), *system_words], pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>", extra_special_tokens=self.named_tokens())
        tokenizer.add_tokens(special, special_tokens=True)  # the named tokens above replaced the special list
        processor = self.tiny_processor(tokenizer, n_mels, window_seconds)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
        frames = int(window_seconds) * 100  # 10 ms hop
        config = self.tiny_config(tokenizer, ids, n_mels, frames, hidden_size, num_layers, num_heads, encoder_dim,
                                  encoder_layers)
        return self.save_tiny(config, processor, out_dir, seed, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                              pad=ids["<|endoftext|>"], bos=ids["<|im_start|>"], init_std=init_std)

    def named_tokens(self) -> dict[str, str]:
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
