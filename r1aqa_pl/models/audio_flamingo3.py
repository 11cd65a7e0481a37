"""Audio Flamingo 3: ``AudioFlamingo3ForConditionalGeneration`` + ``AudioFlamingo3Processor``.

A Whisper-large-v3-style encoder (AF-Whisper), a two-layer MLP projector and a Qwen2.5-7B language
model; each audio frame token replaces one ``<sound>`` placeholder in place (plain text positions).

Windowing. The processor cuts each clip into windows of the feature extractor's ``chunk_length``
(30 s on the hub; at most ``max_audio_len`` = 600 s, 20 windows), pads every window to the full
30 s (3000 mel frames) and expands the one ``<sound>`` of the prompt to the clip's token count:
for ``n`` mel frames (10 ms each) of a window, ``(n - 1) // 2 + 1`` after the stride-2 convolution
and ``(that - 2) // 2 + 1`` after the pooling, i.e. 25 tokens a second.

- a 10 s clip: one window of 1000 real frames (2000 padding) → 500 → **250** ``<sound>`` tokens;
- a 60 s clip: two full windows of 3000 frames → 1500 → 750 each → **1500** ``<sound>`` tokens.

The processor's ``input_features`` have one row per *window*, not per prompt; the family-free code
repeats and slices inputs by prompt, so :meth:`AudioFlamingo3.encode` packs them per prompt
([B, W, mels, frames], W the most windows of a clip, empty windows all-zero in the mask) and
:meth:`AudioFlamingo3.model_inputs` unpacks them for the model's own forward and ``generate``.

The encoder is the same Whisper stack as Qwen2-Audio's, with the same names, so the shared path runs
it over the clip (:meth:`Qwen2Audio.encode_audio`) instead of the padded 30 s window: once per
prompt, before the G completions share the prompt's key/value cache.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from r1aqa_pl.models.base import FAMILIES
from r1aqa_pl.models.qwen2_audio import Qwen2Audio
from r1aqa_pl.models.sizes import AF3Arch
from r1aqa_pl.task.question import Question


def tokens_per_window(frames: Tensor) -> Tensor:
    """``<sound>`` tokens of windows with ``frames`` real mel frames (stride-2 convolution, then pooling by 2)."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


@FAMILIES.register("audio_flamingo3")


class AudioFlamingo3(Qwen2Audio):
    name = "audio_flamingo3"
    model_types = ("audioflamingo3",)
    audio_keys = ("input_features", "input_features_mask")
    structural_tokens = ("<sound>", "<|im_start|>")
    max_clips = 1  # the hub's chat template writes one <sound> per turn, however many audio parts it is given

    def model_class(self):
        from transformers import AudioFlamingo3ForConditionalGeneration

        return AudioFlamingo3ForConditionalGeneration

    # -- processor: windows packed per prompt ----------------------------------------------------
    def windows(self, processor, n_samples: int) -> int:
        """Windows the processor cuts a clip of ``n_samples`` into (its own rule, capped at ``max_audio_len``)."""
        fe = processor.feature_extractor
        size = int(fe.sampling_rate * fe.chunk_length)
        return min(max(1, math.ceil(n_samples / size)), int(processor.max_audio_len // fe.chunk_length))

    def audio_tokens(self, processor, n_samples: int) -> int:
        """Each window's own frames through :func:`tokens_per_window` (the clip beyond ``max_audio_len`` dropped)."""
        fe = processor.feature_extractor
        size = int(fe.sampling_rate * fe.chunk_length)
        n = min(n_samples, self.windows(processor, n_samples) * size)
        return sum(int(tokens_per_window(torch.tensor(min(size, n - s) // fe.hop_length))) for s in range(0, n, size))

    def encode(self, processor, questions: list[Question], audio: list, template: str = "plain",
               with_audio: bool = True) -> dict[str, Tensor]:
        """The processor's tensors with the audio windows packed per prompt: [B, W, mels, frames], [B, W, frames].

        Padding is asked of the text only: a batch-wide ``padding=True`` would also cut the windows to the
        longest clip, and the model's own encoder adds positions for the full window (a batch of 10 s clips
        would fail there)."""
        if not with_audio:
            return super().encode(processor, questions, audio, template, with_audio)
        texts = [self.render(processor, q, template, with_audio) for q in questions]
        clips = self.check_clips(questions, audio, texts)
        flat = [c for cs in clips for c in cs]
        inputs = dict(processor(text=texts, audio=flat, sampling_rate=processor.feature_extractor.sampling_rate,
                                return_tensors="pt", text_kwargs={"padding": True}))
        counts = [sum(self.windows(processor, len(c)) for c in cs) for cs in clips]  # a prompt's clips' windows
        feats, mask = inputs["input_features"], inputs["input_features_mask"]
        if sum(counts) != feats.shape[0]:
            raise ValueError(f"the processor made {feats.shape[0]} audio windows, expected {counts} per prompt")
        W = max(counts)
        packed = feats.new_zeros(len(counts), W, *feats.shape[1:])
        packed_mask = mask.new_zeros(len(counts), W, mask.shape[-1])
        for b, rows in enumerate(torch.split(torch.arange(feats.shape[0]), counts)):
            packed[b, :len(rows)], packed_mask[b, :len(rows)] = feats[rows], mask[rows]
        return {**inputs, "input_features": packed, "input_features_mask": packed_mask}

    def model_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The processor's layout back (one row per real window, in prompt order) for the model itself."""
        if "input_features" not in inputs or inputs["input_features"].dim() == 3:
            return inputs
        mask = inputs["input_features_mask"]
        real = mask.sum(-1) > 0
        return {**inputs, "input_features": inputs["input_features"][real], "input_features_mask": mask[real]}

    # -- forward pieces ---------------------------------------------------------------------------
    def audio_features(self, core, inputs: dict[str, Tensor]) -> Tensor:
        """Each prompt's windows unpacked, the encoder run over the clip: one row per ``<sound>`` slot."""
        flat = self.model_inputs(inputs)
        return self.encode_audio(core, flat["input_features"], flat["input_features_mask"])

    def full_forward(self, core, inputs: dict[str, Tensor], attention_mask: Tensor) -> Tensor:
        """The model's own forward (encoder over the padded 30 s windows), with ``generate``'s positions."""
        flat = self.model_inputs(inputs)
        out = core(input_ids=flat["input_ids"], attention_mask=attention_mask,
                   position_ids=self.position_ids(attention_mask), use_cache=False, **self.audio_inputs(flat))
        return out.last_hidden_state

    # -- memory estimate --------------------------------------------------------------------------
    def arch(self, config) -> AF3Arch:
        t, a = config.text_config, config.audio_config
        return AF3Arch(vocab=t.vocab_size, hidden=t.hidden_size, intermediate=t.intermediate_size,
                       layers=t.num_hidden_layers, heads=t.num_attention_heads, kv_heads=t.num_key_value_heads,
                       audio_dim=a.d_model, audio_ffn=a.encoder_ffn_dim, audio_layers=a.encoder_layers,
                       mel_bins=a.num_mel_bins, audio_positions=a.max_source_positions)
