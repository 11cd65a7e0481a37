"""The in-process engine: Hugging Face ``generate`` on the policy itself, each prompt prefilled once.

With ``share_prompt`` each prompt (its audio encoded by the family, over the clip) is prefilled once
and its G samples decode against that one cache (:mod:`r1aqa_pl.attention.grouped`: the prompt's
keys/values are stored and read once per group, not G times); ``generate`` only feeds the last
prompt token, a text token, so the audio merge is never redone. Without it every row prefills the whole
prompt through the family's own forward (R1-AQA's way; the debugging baseline).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList

from r1aqa_pl.attention.grouped import GroupedCache, grouped_attention_on, is_plain
from r1aqa_pl.models.base import PolicyFamily
from r1aqa_pl.rollout.base import ENGINES, RolloutEngine


def decoding_routes(routes: list[list[Tensor]], shape: tuple[int, int]) -> Tensor:
    """[N, T, layers, k]: per layer, each ``generate`` forward's last position (the one that predicts the next
    token: the prompt's last token, then each sampled token in turn), from :meth:`PolicyFamily.record_routes`."""
    N, T = shape
    per_layer = [torch.stack([c.view(N, -1, c.shape[-1])[:, -1] for c in calls[:T]], 1) for calls in routes]
    return torch.stack(per_layer, 2)


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


FIRST_ROOM = 64  # new tokens per row a grouped cache holds before it first grows


@ENGINES.register("hf")
class HFEngine(RolloutEngine):
    """``generate`` from one shared prefill per prompt (``share_prompt``) or per row."""

    @torch.no_grad()
    def sample(self, family: PolicyFamily, model, inputs: dict[str, Tensor], G: int, share_prompt: bool = True,
               with_logprobs: bool = False, with_routes: bool = False, **generate_kwargs) -> Tensor | tuple:
        """As the seam's; ``with_logprobs`` also returns each sampled token's log-probability under the
        distribution it was drawn from, the logits at the sampling temperature before any filtering
        ([B·G, T] fp32, the quantity the update recomputes): the rollout/trainer agreement check;
        ``with_routes`` (a mixture of experts, with ``with_logprobs``) then also the experts each layer chose for
        the position that predicted each token ([B·G, T, layers, k]): the routing agreement check."""
        if with_logprobs:
            generate_kwargs.update(output_logits=True, return_dict_in_generate=True)
        record = family.record_routes(model) if with_routes else contextlib.nullcontext([])
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        family.before_generate(model)
        rep = lambda t: t.repeat_interleave(G, 0)  # noqa: E731 — prompt b's rows are b·G … b·G+G−1
        if share_prompt:
            core, _ = family.backbone(model)
            prefix = {**inputs, "input_ids": ids[:, :-1]}
            cache = core(inputs_embeds=family.prompt_embeds(core, prefix), attention_mask=mask[:, :-1],
                         position_ids=family.position_ids(mask[:, :-1]), use_cache=True).cache
            # + 1: the last prompt token, which generate feeds; at most FIRST_ROOM at first, doubled when full
            # (completions that stop early, e.g. after </answer>, never hold room for max_new_tokens)
            new = generate_kwargs.get("max_new_tokens") or model.generation_config.max_new_tokens or FIRST_ROOM
            room = min(new + 1, FIRST_ROOM)
            if is_plain(cache):
                cache = GroupedCache(cache, mask[:, :-1], G, room)
                attention = grouped_attention_on(family.language_model(core), cache)
            else:  # layer kinds the grouped cache does not know (sliding windows): the prompt's cache G times
                cache.batch_repeat_interleave(G)
                attention = contextlib.nullcontext()
            with attention, record as routes:
                out = model.generate(input_ids=rep(ids), attention_mask=rep(mask), cache=cache, **generate_kwargs)
        else:
            with record as routes:
                out = model.generate(**family.model_inputs({k: rep(v) for k, v in inputs.items()}), **generate_kwargs)
        if not with_logprobs:
            return out[:, ids.shape[1]:]
        new = out.sequences[:, ids.shape[1]:]
        T = generate_kwargs.get("temperature", 1.0) if generate_kwargs.get("do_sample") else 1.0
        logits = torch.stack(out.logits, 1)[:, :new.shape[1]].float() / T
        logp = logits.log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return (new, logp, decoding_routes(routes, new.shape)) if with_routes else (new, logp)

    def answer(self, family: PolicyFamily, model, inputs: dict[str, Tensor], tokenizer, stop: str | None,
               **generate_kwargs) -> Tensor:
        if stop:
            criteria = StopAfterText(tokenizer, inputs["input_ids"].shape[1], stop)
            generate_kwargs["stopping_criteria"] = StoppingCriteriaList([criteria])
        return self.sample(family, model, inputs, 1, do_sample=False, **generate_kwargs)
