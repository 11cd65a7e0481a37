"""A word-level tokenizer for the tiny random policies that tests, the demo and the bench build.

No hub: the tiny models get a vocabulary of the words they will meet (the chat template's and the
data's), the family's special tokens and the answer tags, so that ``save_pretrained`` →
``from_pretrained`` is the real loading path with a real (if small) tokenizer.
"""

from __future__ import annotations

import re

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
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", additional_special_tokens=special,
                                        padding_side="left", clean_up_tokenization_spaces=False, **kwargs)
    tokenizer.add_tokens(list(TAGS))
    return tokenizer


def tiny_text_config(vocab_size: int, ids: dict[str, int], hidden_size: int, num_layers: int, num_heads: int,
                     **extra) -> dict:
    """The tiny Qwen-style language model every family's tiny build shares: 2x-wide MLP, full multi-head
    attention, untied head, the chat markers as bos/eos; ``extra`` adds a family's own fields (rotary, experts)."""
    return {"vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_heads,
            "max_position_embeddings": 2048, "tie_word_embeddings": False, "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"], **extra}
