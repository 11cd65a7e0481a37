"""The in-process engine: Hugging Face ``generate`` on the policy itself, each prompt prefilled once.

With ``share_prompt`` each prompt (its audio encoded by the family, over the clip) is prefilled once
and its key/value cache repeated for the G samples, into buffers with room for the new tokens
(:class:`ReservedLayer`); ``generate`` then only feeds the last prompt token, a text token, so the
audio merge is never redone. Without it every row prefills the whole
prompt through the family's own forward (R1-AQA's way; the debugging baseline).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicLayer

from r1aqa_pl.models.base import PolicyFamily
from r1aqa_pl.rollout.base import RolloutEngine


class StopAfterText(StoppingCriteria):
    """Stop a row once its recent tokens decode to text containing ``stop`` (e.g. ``</answer>``).

    Decoding the tail works with any tokenizer (transformers' ``stop_strings`` needs a BPE-style
    vocabulary) and costs a few microseconds per row and step.
    """

    def __init__(self, tokenizer, prompt_length: int, stop: str, tail: int = 8):
        self.tokenizer, self.prompt_length, self.stop, self.tail = tokenizer, prompt_length, stop, tail

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
        new = input_ids[:, self.prompt_length:]  # the prompt itself mentions the stop text
        texts = self.tokenizer.batch_decode(new[:, -self.tail:], skip_special_tokens=True)
        return torch.tensor([self.stop in t for t in texts], device=input_ids.device)


class ReservedLayer(DynamicLayer):
    """A layer's key/value cache repeated G times into buffers with ``room`` free positions.

    Decoding writes each new token in place, where the dynamic cache would copy the whole cache
    (prompt included, G times over) into a new tensor at every step and layer: at 4 prompts × 8 that
    copying was a third of the rollout's time. Attention reads views of the filled part, the same
    numbers as the dynamic cache holds; past the room it grows by concatenation as before.
    """

    def __init__(self, keys: Tensor, values: Tensor, G: int, room: int):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        B, heads, P, _ = keys.shape
        self._bufs = []
        for t in (keys, values):
            buf = t.new_empty(B * G, heads, P + room, t.shape[-1])
            buf.view(B, G, heads, P + room, -1)[:, :, :, :P] = t[:, None]  # row b·G + g is prompt b's
            self._bufs.append(buf)
        self.length = P
        self.keys, self.values = (b[:, :, :P] for b in self._bufs)

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        n = key_states.shape[-2]
        if self._bufs is None or self.length + n > self._bufs[0].shape[-2]:
            self._bufs = None  # out of room: the dynamic cache's way from here on
            return super().update(key_states, value_states)
        end = self.length + n
        for buf, new in zip(self._bufs, (key_states, value_states)):
            buf[:, :, self.length:end] = new
        self.length = end
        self.keys, self.values = (b[:, :, :end] for b in self._bufs)
        return self.keys, self.values


def repeat_with_room(cache, G: int, room: int):
    """``cache.batch_repeat_interleave(G)``, full-attention layers into :class:`ReservedLayer` buffers."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.get_seq_length() > 0:
            cache.layers[i] = ReservedLayer(layer.keys, layer.values, G, room)
        else:  # sliding-window and other layer kinds keep their own logic
            layer.batch_repeat_interleave(G)
    return cache


class HFEngine(RolloutEngine):
    """``generate`` from one shared prefill per prompt (``share_prompt``) or per row."""

    def __init__(self, share_prompt: bool = True):
        self.share_prompt = share_prompt

    @torch.no_grad()
    def sample(self, family: PolicyFamily, model, inputs: dict[str, Tensor], G: int, **generate_kwargs) -> Tensor:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        family.before_generate(model)
        rep = lambda t: t.repeat_interleave(G, 0)  # noqa: E731 — prompt b's rows are b·G … b·G+G−1
        if self.share_prompt:
            core, _ = family.backbone(model)
            prefix = {**inputs, "input_ids": ids[:, :-1]}
            cache = core(inputs_embeds=family.prompt_embeds(core, prefix), attention_mask=mask[:, :-1],
                         position_ids=family.position_ids(mask[:, :-1]), use_cache=True).cache
            room = generate_kwargs.get("max_new_tokens") or model.generation_config.max_new_tokens or 0
            repeat_with_room(cache, G, room + 1)  # + the last prompt token, fed by generate
            out = model.generate(input_ids=rep(ids), attention_mask=rep(mask), cache=cache, **generate_kwargs)
        else:
            out = model.generate(**family.model_inputs({k: rep(v) for k, v in inputs.items()}), **generate_kwargs)
        return out[:, ids.shape[1]:]

    def answer(self, family: PolicyFamily, model, inputs: dict[str, Tensor], tokenizer, stop: str | None,
               **generate_kwargs) -> Tensor:
        if stop:
            criteria = StopAfterText(tokenizer, inputs["input_ids"].shape[1], stop)
            generate_kwargs["stopping_criteria"] = StoppingCriteriaList([criteria])
        return self.sample(family, model, inputs, 1, do_sample=False, **generate_kwargs)
