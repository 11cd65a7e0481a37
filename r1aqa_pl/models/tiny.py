"""Tiny random policies for tests, the demo and the bench: each family's builder, keyed by family name in
:data:`BUILDERS`, :func:`save_tiny` that seeds and writes one, :func:`build_tiny_model` (``r1aqa tiny-model``),
and the word-level tokenizer they share.

No hub: the tiny models get a vocabulary of the words they will meet (the chat template's and the
data's), the family's special tokens and the answer tags, so that ``save_pretrained`` →
``from_pretrained`` is the real loading path with a real (if small) tokenizer. The family adapters
(:mod:`r1aqa_pl.models.qwen2_audio` and the others) know nothing of these builds; a builder reads from its
family only what the real checkpoint has too (model and processor classes, system prompt, named tokens).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from r1aqa_pl.models.base import FAMILIES, PolicyFamily
from r1aqa_pl.models.phi4_multimodal import NAMED as PHI4_MULTIMODAL_NAMED
from r1aqa_pl.task.answer_format import TAGS

BASE_TEXT = (
    "system You are a helpful assistant. user assistant Audio 1 : "
    "Please choose the answer from the following options : [ ' , ' ] . "
    "Output the final answer in and the thinking process "
)
# what the tokenizer's pre-tokenizer splits on; also what its vocabulary is built from
WORD = re.compile(r"\w+|[^\w\s]")


def vocabulary(special: list[str], words: list[str] | None = None) -> list[str]:
    """``<unk>``, the special tokens, the answer tags, then every word of the template and ``words``."""
    text = BASE_TEXT + " " + " ".join(words or [])
    return ["<unk>", *special, *TAGS, *sorted(set(WORD.findall(text)))]


def word_tokenizer(special: list[str], words: list[str] | None = None, **kwargs):
    """A ``PreTrainedTokenizerFast`` over :func:`vocabulary`; the tags are added (non-special) tokens so
    that decoding keeps them. ``kwargs`` go to the tokenizer (pad/eos tokens and the like)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(vocabulary(special, words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        additional_special_tokens=special,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    tokenizer.add_tokens(list(TAGS))
    return tokenizer


def tiny_text_config(
    vocab_size: int, ids: dict[str, int], hidden_size: int, num_layers: int, num_heads: int, **extra
) -> dict:
    """The tiny Qwen-style language model every family's tiny build shares: 2x-wide MLP, full multi-head
    attention, untied head, the chat markers as bos/eos; ``extra`` adds a family's own fields (rotary, experts)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        **extra,
    }


# -- the families' special tokens and chat templates (the tiny tokenizers' and processors') ---------------------------

QWEN2_AUDIO_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]

QWEN2_5_OMNI_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
]
# Qwen2.5-Omni's chat template, reduced to what an audio question uses (system + user turns, audio
# and text parts, the generation prompt); the hub checkpoints ship the full one.
QWEN2_5_OMNI_TEMPLATE = (
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

QWEN3_OMNI_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_pad|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
]
QWEN3_OMNI_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

AUDIO_FLAMINGO3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"]
# the hub processor's chat template (transformers' convert_audioflamingo3_to_hf.py): a default system
# turn, then each user turn as one ``<sound>`` (if the turn has audio) followed by its text
AUDIO_FLAMINGO3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages if m['content'] is not none %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% set audio = namespace(found=False) %}{% set text_buf = namespace(v='') %}"
    "{% for c in m['content'] %}"
    "{% if c.get('type') == 'audio' or 'audio' in c %}{% set audio.found = True %}"
    "{% elif c.get('type') == 'text' or 'text' in c %}{% set text_buf.v = text_buf.v + c['text'] %}{% endif %}"
    "{% endfor %}{% if audio.found %}{{ '<sound>' }}{% endif %}{{ text_buf.v }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PHI4_MULTIMODAL_SPECIAL = [
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|image|>",
    "<|audio|>",
]
# Phi-4-multimodal's chat template, reduced to text, image and audio parts; the hub checkpoint ships its own
PHI4_MULTIMODAL_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image|>' }}{% elif content['type'] == 'audio' %}{{ '<|audio|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


# -- seeding and saving -----------------------------------------------------------------------------------------------


def save_tiny(
    family: PolicyFamily,
    config,
    processor,
    out_dir: str,
    seed: int,
    eos: list[int],
    pad: int,
    bos: int,
    init_std: float | None = None,
) -> str:
    """Instantiate a tiny policy of ``family`` from ``config`` (weights seeded), set its generation ids, and save it
    with its processor and a ``tiny.json`` note, as ``from_pretrained`` reads any checkpoint.

    ``init_std`` replaces ``initializer_range`` in the config and all its sub-configs: the hub's 0.02 suits
    widths of thousands; a 64-wide model initialised at 0.02 passes the audio on so faintly that it learns to
    listen only after hundreds of steps (about 1/sqrt(width) starts it at once)."""
    if init_std is not None:
        _set_init_std(config, init_std)
    torch.manual_seed(seed)
    model = family.model_class()(config)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = list(eos), pad, bos
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "tiny.json").write_text(
        json.dumps(
            {
                "family": family.name,
                "seed": seed,
                "vocab": len(processor.tokenizer),
                "init_std": init_std,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )
    return str(out)


def _set_init_std(config, std: float, seen: set | None = None) -> None:
    """``initializer_range`` (and ``init_std``, the Whisper-style name) = ``std`` in ``config`` and every sub-config."""
    from transformers import PretrainedConfig

    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    for name in ("initializer_range", "init_std"):
        if hasattr(config, name):
            setattr(config, name, std)
    for value in vars(config).values():
        if isinstance(value, PretrainedConfig):
            _set_init_std(value, std, seen)


# -- the builders: builder(family, out_dir, words, seed, **geometry) -> the folder -----------------------------------


def build_qwen2_audio(
    family: PolicyFamily,
    out_dir: str,
    words: list[str] | None = None,
    seed: int = 0,
    window_seconds: int = 2,
    n_mels: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    encoder_dim: int = 64,
    encoder_layers: int = 2,
    init_std: float | None = None,
) -> str:
    """A real ``Qwen2AudioForConditionalGeneration`` with a word-level tokenizer and a short Whisper window."""
    from transformers import Qwen2AudioConfig, Qwen2AudioProcessor, WhisperFeatureExtractor

    special = QWEN2_AUDIO_SPECIAL
    tokenizer = word_tokenizer(special, words, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    sampling_rate, hop = 16000, 160
    frames = int(window_seconds) * sampling_rate // hop  # whole seconds: Whisper's chunk_length is an int
    fe = WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=sampling_rate, hop_length=hop, chunk_length=int(window_seconds), n_fft=400
    )
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    config = Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": n_mels,
            "encoder_layers": encoder_layers,
            "encoder_attention_heads": num_heads,
            "encoder_ffn_dim": 2 * encoder_dim,
            "d_model": encoder_dim,
            "max_source_positions": frames // 2,
        },
        text_config=tiny_text_config(len(tokenizer), ids, hidden_size, num_layers, num_heads),
        audio_token_index=ids["<|AUDIO|>"],
    )
    return save_tiny(
        family,
        config,
        processor,
        out_dir,
        seed,
        eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad=ids["<|endoftext|>"],
        bos=ids["<|im_start|>"],
        init_std=init_std,
    )


class Qwen2_5OmniBuilder:
    """The Qwen2.5-Omni thinker's tiny build; :class:`Qwen3OmniBuilder` reuses it with its own special tokens,
    template and config."""

    special: list[str] = QWEN2_5_OMNI_SPECIAL  # the tiny tokenizer's special tokens and chat template
    template: str = QWEN2_5_OMNI_TEMPLATE

    def __call__(
        self,
        family: PolicyFamily,
        out_dir: str,
        words: list[str] | None = None,
        seed: int = 0,
        window_seconds: int = 2,
        n_mels: int = 32,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        encoder_dim: int = 64,
        encoder_layers: int = 2,
        init_std: float | None = None,
    ) -> str:
        """A real thinker (Qwen3-Omni: a MoE one, 4 experts, top-2) with a word-level tokenizer, a short Whisper
        window and a one-block vision encoder. The processor needs torchvision (its video processor), as the
        hub's does. The audio encoder keeps the hub's windows in seconds: with 1 s chunks instead of Qwen2.5-Omni's
        2 s, SFT of the demo's tiny thinker never learned the speech questions in 800 steps (with 2 s: 1.00);
        Qwen3-Omni's tiny downsampling convolutions are as wide as its encoder (the hub's 480 of 1280): at 8
        channels the clips reached the language model nearly alike and SFT stayed at chance."""
        special = self.special
        system_words = (family.system_prompt or "").split()
        tokenizer = word_tokenizer(
            special,
            [*(words or []), *system_words],
            pad_token="<|endoftext|>",
            eos_token="<|im_end|>",
            extra_special_tokens=family.named_tokens(),
        )
        tokenizer.add_tokens(special, special_tokens=True)  # the named tokens above replaced the special list
        processor = self.processor(family, tokenizer, n_mels, window_seconds)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
        frames = int(window_seconds) * 100  # 10 ms hop
        config = self.config(
            tokenizer, ids, n_mels, frames, hidden_size, num_layers, num_heads, encoder_dim, encoder_layers
        )
        return save_tiny(
            family,
            config,
            processor,
            out_dir,
            seed,
            eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
            pad=ids["<|endoftext|>"],
            bos=ids["<|im_start|>"],
            init_std=init_std,
        )

    def config(
        self,
        tokenizer,
        ids: dict,
        n_mels: int,
        frames: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        encoder_dim: int,
        encoder_layers: int,
    ):
        from transformers import Qwen2_5OmniThinkerConfig

        return Qwen2_5OmniThinkerConfig(
            audio_config=omni_audio(n_mels, frames, hidden_size, num_heads, encoder_dim, encoder_layers,
                                    n_window=100),  # the hub's 2 s chunks (a demo clip is one)
            vision_config=omni_vision(hidden_size, fullatt_block_indexes=[0]),
            text_config=tiny_text_config(len(tokenizer), ids, hidden_size, num_layers, num_heads,
                                         rope_parameters=omni_rope(hidden_size // num_heads)),
            audio_token_index=ids["<|AUDIO|>"],
            image_token_index=ids["<|IMAGE|>"],
            video_token_index=ids["<|VIDEO|>"],
            audio_start_token_id=ids["<|audio_bos|>"],
            audio_end_token_id=ids["<|audio_eos|>"],
            vision_start_token_id=ids["<|vision_bos|>"],
            vision_end_token_id=ids["<|vision_eos|>"],
            tie_word_embeddings=False,
        )

    def processor(self, family: PolicyFamily, tokenizer, n_mels: int, window_seconds: int):
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(
            feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=int(window_seconds), n_fft=400
        )
        return family.processor_class()(
            image_processor=Qwen2VLImageProcessor(),
            video_processor=Qwen2VLVideoProcessor(),
            feature_extractor=fe,
            tokenizer=tokenizer,
            chat_template=self.template,
        )


def omni_audio(n_mels: int, frames: int, hidden_size: int, num_heads: int, encoder_dim: int, encoder_layers: int,
               **extra) -> dict:
    """The tiny Omni audio encoder both thinkers share; ``extra``: a thinker's own windows."""
    return {"num_mel_bins": n_mels, "encoder_layers": encoder_layers, "encoder_attention_heads": num_heads,
            "encoder_ffn_dim": 2 * encoder_dim, "d_model": encoder_dim, "max_source_positions": frames // 2,
            "output_dim": hidden_size, **extra}


def omni_vision(hidden_size: int, **extra) -> dict:
    """A one-block vision encoder (never run for audio; the processor needs one)."""
    return {"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": hidden_size,
            **extra}


def omni_rope(head_dim: int, **extra) -> dict:
    """Multimodal rotary sections (time, height, width) that sum to half the head."""
    q = head_dim // 2 // 4
    return {"rope_type": "default", "rope_theta": 1e6, **extra, "mrope_section": [head_dim // 2 - 2 * q, q, q]}


class Qwen3OmniBuilder(Qwen2_5OmniBuilder):
    """The Qwen3-Omni (MoE) thinker's tiny build: Qwen2.5-Omni's with its own tokens, template and config."""

    special = QWEN3_OMNI_SPECIAL
    template = QWEN3_OMNI_TEMPLATE

    def config(
        self,
        tokenizer,
        ids: dict,
        n_mels: int,
        frames: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        encoder_dim: int,
        encoder_layers: int,
    ):
        from transformers import Qwen3OmniMoeThinkerConfig

        head_dim = hidden_size // num_heads
        config = Qwen3OmniMoeThinkerConfig(
            audio_config=omni_audio(n_mels, frames, hidden_size, num_heads, encoder_dim, encoder_layers, n_window=50,
                                    n_window_infer=800, downsample_hidden_size=encoder_dim),  # 1 s / 8 s windows
            vision_config=omni_vision(hidden_size, num_position_embeddings=16, deepstack_visual_indexes=[0]),
            text_config=tiny_text_config(
                len(tokenizer),
                ids,
                hidden_size,
                num_layers,
                num_heads,
                head_dim=head_dim,
                moe_intermediate_size=hidden_size // 2,
                num_experts=4,
                num_experts_per_tok=2,
                rope_parameters=omni_rope(head_dim, interleaved=True),
            ),
            audio_token_id=ids["<|audio_pad|>"],
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            audio_start_token_id=ids["<|audio_start|>"],
            tie_word_embeddings=False,
        )
        config.vision_start_token_id = ids["<|vision_start|>"]  # read by get_rope_index, not a declared field
        config.audio_end_token_id = ids["<|audio_end|>"]
        return config


def build_audio_flamingo3(
    family: PolicyFamily,
    out_dir: str,
    words: list[str] | None = None,
    seed: int = 0,
    window_seconds: int = 2,
    n_mels: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    encoder_dim: int = 64,
    encoder_layers: int = 2,
    init_std: float | None = None,
) -> str:
    """A real ``AudioFlamingo3ForConditionalGeneration`` with a word-level tokenizer, the hub's chat
    template and a ``window_seconds`` window (the hub's is 30 s)."""
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3Processor,
        WhisperFeatureExtractor,
    )

    special = AUDIO_FLAMINGO3_SPECIAL
    tokenizer = word_tokenizer(special, words, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fe = WhisperFeatureExtractor(
        feature_size=n_mels,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=int(window_seconds),
        n_fft=400,
        return_attention_mask=True,
    )
    processor = AudioFlamingo3Processor(
        feature_extractor=fe, tokenizer=tokenizer, chat_template=AUDIO_FLAMINGO3_CHAT_TEMPLATE, audio_token="<sound>"
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    frames = int(window_seconds) * 100  # 10 ms hop
    config = AudioFlamingo3Config(
        audio_config={
            "model_type": "audioflamingo3_encoder",
            "num_mel_bins": n_mels,
            "encoder_layers": encoder_layers,
            "encoder_attention_heads": num_heads,
            "encoder_ffn_dim": 2 * encoder_dim,
            "d_model": encoder_dim,
            "max_source_positions": frames // 2,
        },
        text_config=tiny_text_config(len(tokenizer), ids, hidden_size, num_layers, num_heads, model_type="qwen2"),
        audio_token_id=ids["<sound>"],
    )
    return save_tiny(
        family,
        config,
        processor,
        out_dir,
        seed,
        eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad=ids["<|endoftext|>"],
        bos=ids["<|im_start|>"],
        init_std=init_std,
    )


def build_phi4_multimodal(
    family: PolicyFamily,
    out_dir: str,
    words: list[str] | None = None,
    seed: int = 0,
    window_seconds: int = 2,
    n_mels: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    encoder_dim: int = 64,
    encoder_layers: int = 2,
    init_std: float | None = None,
) -> str:
    """A real ``Phi4MultimodalForCausalLM`` (2-block Conformer, 1-layer image encoder) with a word-level
    tokenizer. The feature extractor keeps its 80 mel bins (``n_mels`` is ignored) and has no window
    (``window_seconds`` is ignored)."""
    from transformers import (
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
    )

    special = PHI4_MULTIMODAL_SPECIAL
    tokenizer = word_tokenizer(
        special, words, pad_token="<|endoftext|>", eos_token="<|end|>", extra_special_tokens=dict(PHI4_MULTIMODAL_NAMED)
    )
    tokenizer.add_tokens(special, special_tokens=True)  # the named tokens above replaced the special list
    processor = Phi4MultimodalProcessor(
        Phi4MultimodalImageProcessor(),
        Phi4MultimodalFeatureExtractor(),
        tokenizer,
        chat_template=PHI4_MULTIMODAL_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    config = Phi4MultimodalConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        original_max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|end|>"],
        tie_word_embeddings=False,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "crop_size": 28,
            "image_token_id": ids["<|image|>"],
        },
        audio_config={
            "hidden_size": encoder_dim,
            "intermediate_size": 2 * encoder_dim,
            "num_blocks": encoder_layers,
            "num_attention_heads": num_heads,
            "ext_pw_out_channel": encoder_dim,
            "depthwise_separable_out_channel": encoder_dim,
            "nemo_conv_channels": encoder_dim,
            "audio_token_id": ids["<|audio|>"],
        },
    )
    return save_tiny(
        family,
        config,
        processor,
        out_dir,
        seed,
        eos=[ids["<|end|>"], ids["<|endoftext|>"]],
        pad=ids["<|endoftext|>"],
        bos=ids["<|endoftext|>"],
        init_std=init_std,
    )


# family name -> its tiny build; a family without its own entry takes the nearest base class's (a user's
# subclass of Qwen2Audio builds as Qwen2-Audio)
BUILDERS = {
    "qwen2_audio": build_qwen2_audio,
    "qwen2_5_omni": Qwen2_5OmniBuilder(),
    "qwen3_omni": Qwen3OmniBuilder(),
    "audio_flamingo3": build_audio_flamingo3,
    "phi4_multimodal": build_phi4_multimodal,
}


def builder_for(family: PolicyFamily):
    """The :data:`BUILDERS` entry of ``family``'s class or its nearest base class that has one."""
    for cls in type(family).__mro__:
        name = vars(cls).get("name")
        if name in BUILDERS:
            return BUILDERS[name]
    raise NotImplementedError(
        f"{family.name or type(family).__name__}: no tiny build (add one to r1aqa_pl.models.tiny.BUILDERS)"
    )


def build_tiny_model(
    out_dir: str,
    family: str = "qwen2_audio",
    words: list[str] | None = None,
    seed: int = 0,
    window_seconds: int = 2,
    n_mels: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    encoder_dim: int = 64,
    encoder_layers: int = 2,
    init_std: float | None = None,
) -> str:
    """Build, seed and ``save_pretrained`` a tiny random policy of a family with its processor.

    Args:
        out_dir: folder to write (a Hugging Face model folder).
        family: the policy family (see ``r1aqa_pl.models.FAMILIES``).
        words: extend the word-level vocabulary (e.g. the synthetic set's words); unknown words map to ``<unk>``.
        seed: seeds the random weights.
        window_seconds: the audio encoder's window.
        n_mels: mel bins of the feature extractor.
        hidden_size: the language model's width.
        num_layers: the language model's depth.
        num_heads: attention heads (language model and encoder).
        encoder_dim: the audio encoder's width.
        encoder_layers: the audio encoder's depth.
        init_std: the weights' initial standard deviation (default: the config's, 0.02 as on the hub).
    """
    fam = FAMILIES.build(family)
    return builder_for(fam)(
        fam,
        out_dir,
        words,
        seed,
        window_seconds=window_seconds,
        n_mels=n_mels,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        encoder_dim=encoder_dim,
        encoder_layers=encoder_layers,
        init_std=init_std,
    )
