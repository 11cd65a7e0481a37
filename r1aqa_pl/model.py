"""Policy loading (hub id or local folder, the same call) and a tiny Qwen2-Audio for tests and the demo.

The tiny model is a real ``Qwen2AudioForConditionalGeneration`` with a word-level tokenizer and a
short Whisper window, saved with ``save_pretrained`` so that tests and the demo load it through the
exact path the 7B model takes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, get_args

import torch

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
# tags the rewards look for; added (non-special) tokens so that decoding keeps them
TAGS = ["<answer>", "</answer>", "<think>", "</think>"]
BASE_TEXT = (
    "system You are a helpful assistant. user assistant Audio 1 : "
    "Please choose the answer from the following options : [ ' , ' ] . "
    "Output the final answer in and the thinking process "
)
# tokens a policy must never sample: one sampled <|AUDIO|> breaks the next forward (GUIDE §5)
STRUCTURAL = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|im_start|>"]

# What the tiny tokenizer's pre-tokenizer splits on; also used to build its vocabulary.
_WORD = re.compile(r"\w+|[^\w\s]")


Dtype = Literal["float32", "bfloat16", "float16"]  # configs and the CLI check it at start-up
DTYPES = get_args(Dtype)


def load_policy(
    model_name_or_path: str,
    dtype: Dtype = "float32",
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    lora: dict | None = None,
):
    """``Qwen2AudioForConditionalGeneration`` + ``AutoProcessor`` from a hub id or local folder.

    ``lora`` (e.g. ``{"r": 8, "lora_alpha": 16, "target_modules": [...]}``) wraps the model with a
    peft LoRA adapter; the reference policy is then the same model with the adapter disabled.
    """
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    processor = AutoProcessor.from_pretrained(model_name_or_path)
    processor.tokenizer.padding_side = "left"  # generation appends on the right
    kwargs = {"dtype": getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_name_or_path, **kwargs)
    # transformers freezes the encoder's sinusoidal positions in __init__, but loading re-enables them
    model.model.audio_tower.embed_positions.requires_grad_(False)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], **lora}
        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(**cfg))
    return model, processor


def structural_token_ids(processor) -> list[int]:
    """Ids of tokens that must never be sampled (audio placeholders, new-turn markers)."""
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in STRUCTURAL]
    return sorted({i for i in ids if i is not None and i != tok.unk_token_id})


def build_tiny_model(
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
) -> str:
    """Build, seed and ``save_pretrained`` a tiny random Qwen2-Audio with its processor.

    ``words`` extends the word-level vocabulary (e.g. the synthetic set's questions and choices);
    unknown words map to ``<unk>``. Returns ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    text = BASE_TEXT + " " + " ".join(words or [])
    vocab_words = sorted(set(_WORD.findall(text)))
    vocab = {t: i for i, t in enumerate(["<unk>", *SPECIAL, *TAGS, *vocab_words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL, padding_side="left", clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(TAGS)
    sampling_rate, hop = 16000, 160
    frames = int(window_seconds) * sampling_rate // hop  # whole seconds: Whisper's chunk_length is an int
    fe = WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=sampling_rate, hop_length=hop,
        chunk_length=int(window_seconds), n_fft=400,
    )
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": n_mels, "encoder_layers": encoder_layers, "encoder_attention_heads": num_heads,
            "encoder_ffn_dim": 2 * encoder_dim, "d_model": encoder_dim, "max_source_positions": frames // 2,
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_heads,
            "max_position_embeddings": 2048, "tie_word_embeddings": False,
            "bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        audio_token_index=ids["<|AUDIO|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    gc = model.generation_config
    gc.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    gc.pad_token_id = ids["<|endoftext|>"]
    gc.bos_token_id = ids["<|im_start|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "tiny.json").write_text(json.dumps({"seed": seed, "vocab": len(tokenizer),
                                               "parameters": sum(p.numel() for p in model.parameters())}))
    return str(out)
