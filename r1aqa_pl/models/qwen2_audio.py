"""Qwen2-Audio (the paper's policy): ``Qwen2AudioForConditionalGeneration`` + ``Qwen2AudioProcessor``.

Its Whisper-style encoder insists on the full 30 s window (3000 mel frames, at most 750 audio tokens
after pooling); :meth:`Qwen2Audio.encode_audio` runs it over the clip instead, with the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES, PolicyFamily, whisper_tokens
from r1aqa_pl.models.sizes import Arch


@FAMILIES.register("qwen2_audio")


class Qwen2Audio(PolicyFamily):
    name = "qwen2_audio"
    model_types = ("qwen2_audio",)
    audio_keys = ("input_features", "feature_attention_mask")
    structural_tokens = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>")

    def model_class(self):
        from transformers import Qwen2AudioForConditionalGeneration

        return Qwen2AudioForConditionalGeneration

    def after_load(self, model) -> None:
        # transformers freezes the encoder's sinusoidal positions in __init__, but loading re-enables them
        model.model.audio_tower.embed_positions.requires_grad_(False)

    def audio_tokens(self, processor, n_samples: int) -> int:
        """The clip cut at the window (``n_samples`` of the feature extractor), 10 ms mel frames, then
        :func:`~r1aqa_pl.models.base.whisper_tokens` (25 tokens a second, 750 for a full 30 s window)."""
        fe = processor.feature_extractor
        return whisper_tokens(min(n_samples, fe.n_samples) // fe.hop_length)

    def encode_audio(self, core, input_features: Tensor, feature_attention_mask: Tensor) -> Tensor:
        """Projected audio features of every clip, concatenated in order: [Σ audio tokens, hidden].

        The same numbers as Qwen2-Audio's own encoder, which insists on the full 30 s window whatever
        the clip's length: here it runs over the batch's longest clip plus the two frames of right
        context its two convolutions read, so a 10 s clip costs a third of the window, and less than
        that in attention.

        Weights are only touched inside module calls: under DeepSpeed ZeRO-3 reading ``conv1.weight``
        here would fetch it for the enclosing (root) module, which never releases it, and the next
        rollout's re-partitioning fails ("Cannot free a ZeRO-3 parameter while it is still active").
        """
        from transformers.masking_utils import create_bidirectional_mask

        enc = core.audio_tower
        n_frames = feature_attention_mask.sum(-1)
        T = min(input_features.shape[-1], int(n_frames.max()) + 2)
        w = next(enc.conv1.parameters())  # not ``enc.conv1.weight``: see the docstring
        x = input_features[..., :T].to(w.device, w.dtype)
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(x)))).transpose(1, 2)
        S = x.shape[1]
        positions = torch.arange(S, device=x.device)
        h = F.dropout(x + enc.embed_positions(positions), p=enc.dropout, training=enc.training)
        feat_lengths, token_lengths = enc._get_feat_extract_output_lengths(n_frames.to(x.device))
        mask = create_bidirectional_mask(config=enc.config, inputs_embeds=h,
                                         attention_mask=(positions[None] < feat_lengths[:, None]).long())
        for layer in enc.layers:
            if not (enc.training and enc.layerdrop > 0 and torch.rand([]) < enc.layerdrop):
                h = layer(h, mask)
        h = enc.layer_norm(enc.avg_pooler(h.transpose(1, 2)).transpose(1, 2))
        feats = core.multi_modal_projector(h)
        return feats[torch.arange(feats.shape[1], device=x.device)[None] < token_lengths[:, None]]

    def arch(self, config) -> Arch:
        t, a = config.text_config, config.audio_config
        return Arch(vocab=t.vocab_size, hidden=t.hidden_size, intermediate=t.intermediate_size,
                    layers=t.num_hidden_layers, heads=t.num_attention_heads, kv_heads=t.num_key_value_heads,
                    audio_dim=a.d_model, audio_ffn=a.encoder_ffn_dim, audio_layers=a.encoder_layers,
                    mel_bins=a.num_mel_bins, audio_positions=a.max_source_positions)
