"""Phi-4-multimodal: ``Phi4MultimodalForCausalLM`` + ``Phi4MultimodalProcessor``.

Phi-4-mini (a Phi-3 decoder: fused ``qkv_proj`` and ``gate_up_proj``) whose embedding layer
(``embed_tokens_extend``) holds a SigLIP image encoder and a Conformer audio encoder. Audio questions
run only the speech path: the encoder over the clip's 80-bin log-mel frames (10 ms), a time reduction
of 8 (12.5 tokens a second), then the ``*_for_speech`` projections; the image encoder and the
``*_for_vision_speech`` projections (used when an image is in the prompt) are frozen, off the optimizer.

No window: the processor gives each clip ``audio_embed_sizes`` = ceil(frames / 8) placeholders
(``<|audio|>`` expanded in place), the batch's features padded to the longest clip with a frame mask.
The audio tensors have one row per prompt, so they repeat and slice like the text. Positions are the
plain text positions (generate's cumsum of the mask).

The decoder is the model's ``.model`` itself (no ``language_model`` inside), hence the overrides of
:meth:`Phi4Multimodal.language_model` and :meth:`Phi4Multimodal.audio_encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES, Arch, PolicyFamily
from r1aqa_pl.models.tiny import word_tokenizer

SPECIAL = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|image|>", "<|audio|>"]
NAMED = {"image_token": "<|image|>", "audio_token": "<|audio|>"}  # what the processor reads off the tokenizer
SPEECH_ADAPTER = "speech-lora"  # the hub checkpoint's speech LoRA: a peft adapter in this subfolder

# Phi-4-multimodal's chat template, reduced to text, image and audio parts; the hub checkpoint ships its own
TINY_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass(frozen=True)
class Phi4Arch(Arch):
    """Phi-4-multimodal: fused projections, and the encoders inside the embedding module (counted off the
    real modules on the meta device by :meth:`Phi4Multimodal.arch`)."""

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


@FAMILIES.register("phi4_multimodal")
class Phi4Multimodal(PolicyFamily):
    name = "phi4_multimodal"
    model_types = ("phi4_multimodal",)
    audio_keys = ("audio_input_features", "audio_embed_sizes", "audio_attention_mask")
    structural_tokens = ("<|audio|>", "<|image|>", "<|system|>", "<|user|>")
    lora_target_modules = r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"

    def model_class(self):
        from transformers import Phi4MultimodalForCausalLM

        return Phi4MultimodalForCausalLM

    def load(self, model_name_or_path: str, dtype="float32", attn_implementation: str | None = None):
        """As the base class; the processor's ``audio_processor`` is also reachable as ``feature_extractor``
        (the name the project reads the sampling rate from), and a chat template saved beside the processor,
        which loading hands to the tokenizer only, is the processor's too.

        The hub checkpoint answers audio questions with its speech LoRA, a peft adapter in ``speech-lora/`` (the
        model card's ``load_adapter(..., adapter_kwargs={"subfolder": "speech-lora"})``). Where that folder is, the
        adapter is merged into the weights, so the policy is a plain model again (the project's own LoRA, if any,
        goes on top; exports hold the merged weights and no adapter folder, so they load without it)."""
        model, processor = super().load(model_name_or_path, dtype, attn_implementation)
        if self.has_speech_adapter(model_name_or_path):
            model = merge_speech_adapter(model, model_name_or_path)
        processor.feature_extractor = processor.audio_processor
        processor.chat_template = processor.chat_template or processor.tokenizer.chat_template
        return model, processor

    @staticmethod
    def has_speech_adapter(model_name_or_path: str) -> bool:
        """Whether the folder or hub id has ``speech-lora/adapter_config.json`` (from the local cache offline)."""
        from transformers.utils import cached_file

        return cached_file(model_name_or_path, "adapter_config.json", subfolder=SPEECH_ADAPTER,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False) is not None

    def idle_modules(self, model) -> list:
        """The image encoder and the image+audio projections."""
        ext = self.backbone(model)[0].embed_tokens_extend
        return [ext.image_embed, ext.audio_embed.up_proj_for_vision_speech, ext.audio_embed.down_proj_for_vision_speech]

    def structural_token_ids(self, processor) -> list[int]:
        """The listed tokens plus whatever the tokenizer names its audio and image placeholders."""
        tok = processor.tokenizer
        return sorted({*super().structural_token_ids(processor), tok.audio_token_id, tok.image_token_id})

    # -- forward pieces ---------------------------------------------------------------------------
    def language_model(self, core):
        return core

    def audio_encoder(self, core):
        return core.embed_tokens_extend.audio_embed.encoder

    def with_audio_embeds(self, core, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unchanged: the speech path's output is merged inside the model's own embedding module."""
        return inputs

    def prompt_embeds(self, core, inputs: dict[str, Tensor]) -> Tensor:
        """Token embeddings with the speech path's output in the ``<|audio|>`` slots (the model's own merge)."""
        input_ids = inputs["input_ids"]
        embeds = core.embed_tokens(input_ids)
        if "audio_input_features" not in inputs:
            return embeds
        slots = int((input_ids == core.config.audio_config.audio_token_id).sum())
        if slots != int(inputs["audio_embed_sizes"].sum()):
            raise ValueError(f"{slots} <|audio|> tokens in the prompts but {int(inputs['audio_embed_sizes'].sum())} "
                             "audio embeddings: were the prompts and features made by the same processor?")
        return core.embed_tokens_extend(input_ids, embeds, **self.audio_inputs(inputs))

    # -- tiny build, memory estimate --------------------------------------------------------------
    def build_tiny(self, out_dir: str, words: list[str] | None = None, seed: int = 0, window_seconds: int = 2,
                   n_mels: int = 32, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                   encoder_dim: int = 64, encoder_layers: int = 2,
                   init_std: float | None = None) -> str:
        """A real ``Phi4MultimodalForCausalLM`` (2-block Conformer, 1-layer image encoder) with a word-level
        tokenizer. The feature extractor keeps its 80 mel bins (``n_mels`` is ignored) and has no window
        (``window_seconds`` is ignored)."""
        from transformers import (
            Phi4MultimodalConfig,
            Phi4MultimodalFeatureExtractor,
            Phi4MultimodalImageProcessor,
            Phi4MultimodalProcessor,
        )

        tokenizer = word_tokenizer(SPECIAL, words, pad_token="<|endoftext|>", eos_token="<|end|>",
                                   extra_special_tokens=dict(NAMED))
        tokenizer.add_tokens(SPECIAL, special_tokens=True)  # the named tokens above replaced the special list
        processor = Phi4MultimodalProcessor(Phi4MultimodalImageProcessor(), Phi4MultimodalFeatureExtractor(),
                                            tokenizer, chat_template=TINY_TEMPLATE)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
        config = Phi4MultimodalConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
            max_position_embeddings=2048, original_max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
            pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|end|>"],
            tie_word_embeddings=False,
            vision_config={"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 28, "crop_size": 28,
                           "image_token_id": ids["<|image|>"]},
            audio_config={"hidden_size": encoder_dim, "intermediate_size": 2 * encoder_dim,
                          "num_blocks": encoder_layers, "num_attention_heads": num_heads,
                          "ext_pw_out_channel": encoder_dim, "depthwise_separable_out_channel": encoder_dim,
                          "nemo_conv_channels": encoder_dim, "audio_token_id": ids["<|audio|>"]},
        )
        return self.save_tiny(config, processor, out_dir, seed, eos=[ids["<|end|>"], ids["<|endoftext|>"]],
                              pad=ids["<|endoftext|>"], bos=ids["<|endoftext|>"], init_std=init_std)

    def arch(self, config) -> Phi4Arch:
        from transformers.models.phi4_multimodal import modeling_phi4_multimodal as m

        a = config.audio_config
        with torch.device("meta"):  # no memory: only the parameter count is read
            extend = sum(p.numel() for p in m.Phi4MultimodalFeatureEmbedding(config).parameters())
        return Phi4Arch(vocab=config.vocab_size, hidden=config.hidden_size, intermediate=config.intermediate_size,
                        layers=config.num_hidden_layers, heads=config.num_attention_heads,
                        kv_heads=config.num_key_value_heads, audio_dim=a.hidden_size, audio_ffn=a.intermediate_size,
                        audio_layers=a.num_blocks, mel_bins=a.input_size, audio_positions=375,
                        audio_tokens_per_second=12.5, embed_extend_params=extend,
                        tied=bool(config.tie_word_embeddings))


def merge_speech_adapter(model, model_name_or_path: str):
    """``model`` with the ``speech-lora`` adapter of ``model_name_or_path`` merged into its weights, each parameter's
    ``requires_grad`` as before (peft freezes the base model while the adapter is attached)."""
    from peft import PeftModel
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise ValueError(f"{model_name_or_path}: its {SPEECH_ADAPTER} adapter cannot be merged into weights partitioned "
                         "by ZeRO-3; merge it once without DeepSpeed (models.load_policy, then save_pretrained of the "
                         "model and processor to a new folder) and train from that folder")
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    merged = PeftModel.from_pretrained(model, model_name_or_path, subfolder=SPEECH_ADAPTER).merge_and_unload()
    for n, p in merged.named_parameters():
        p.requires_grad_(trainable[n])
    return merged


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
