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

import torch
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES, PolicyFamily
from r1aqa_pl.models.sizes import Phi4Arch

NAMED = {"image_token": "<|image|>", "audio_token": "<|audio|>"}  # what the processor reads off the tokenizer
SPEECH_ADAPTER = "speech-lora"  # the hub checkpoint's speech LoRA: a peft adapter in this subfolder


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

    def audio_tokens(self, processor, n_samples: int) -> int:
        """No window: 25 ms frames every 10 ms, then a time reduction of 8 (12.5 tokens a second)."""
        fe = processor.audio_processor
        frames = (n_samples - fe.win_length) // fe.hop_length + 1
        return -(-frames // (fe.audio_compression_rate * fe.audio_downsample_rate))

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
        inputs = self.model_inputs(inputs)
        input_ids = inputs["input_ids"]
        embeds = core.embed_tokens(input_ids)
        if "audio_input_features" not in inputs:
            return embeds
        slots = int((input_ids == core.config.audio_config.audio_token_id).sum())
        if slots != int(inputs["audio_embed_sizes"].sum()):
            raise ValueError(f"{slots} <|audio|> tokens in the prompts but {int(inputs['audio_embed_sizes'].sum())} "
                             "audio embeddings: were the prompts and features made by the same processor?")
        return core.embed_tokens_extend(input_ids, embeds, **self.audio_inputs(inputs))

    # -- memory estimate --------------------------------------------------------------------------
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
        raise ValueError(
            f"{model_name_or_path}: its {SPEECH_ADAPTER} adapter cannot be merged into weights partitioned "
            "by ZeRO-3; merge it once without DeepSpeed (models.load_policy, then save_pretrained of the "
            "model and processor to a new folder) and train from that folder"
        )
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    merged = PeftModel.from_pretrained(model, model_name_or_path, subfolder=SPEECH_ADAPTER).merge_and_unload()
    for n, p in merged.named_parameters():
        p.requires_grad_(trainable[n])
    return merged
