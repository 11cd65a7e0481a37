"""Model-side tensor plumbing shared by GRPO, SFT and evaluation.

Prompts are left-padded (generation appends on the right), so position ids follow the attention
mask exactly as ``generate`` computes them. Log-probabilities are only ever computed at completion
positions: the ~750 audio and prompt positions of the real model never reach the LM head.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList

from r1aqa_pl import prompts
from r1aqa_pl.records import Question


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions as ``generate`` makes them for left padding: cumsum of the mask minus one, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def encode_prompts(processor, questions: list[Question], audio: list, template: str = "plain",
                   with_audio: bool = True) -> dict[str, Tensor]:
    """Render the paper's prompt for each question and run the processor (left padding)."""
    texts = [prompts.render(processor, q, template, with_audio) for q in questions]
    if not with_audio:
        return dict(processor(text=texts, return_tensors="pt", padding=True))
    if any(a is None for a in audio):
        missing = [q.source or q.id for q, a in zip(questions, audio) if a is None]
        raise ValueError(f"audio missing for {missing}; use with_audio=False for the audio-free ablation")
    sr = processor.feature_extractor.sampling_rate
    return dict(processor(text=texts, audio=list(audio), sampling_rate=sr, return_tensors="pt", padding=True))


def completion_mask(completion_ids: Tensor, eos_ids: list[int]) -> Tensor:
    """1 up to and including the first EOS of each row, 0 after it; a row without EOS is all 1."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long()


def _selective_logp(hidden: Tensor, lm_head, targets: Tensor, temperature: float) -> Tensor:
    """log p(target) from hidden states, the vocabulary only ever materialised for these positions."""
    logits = lm_head(hidden).float() / temperature
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _backbone(model):
    """(Qwen2AudioModel, lm_head) through a possible peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def completion_logprobs(model, inputs: dict[str, Tensor], completion_ids: Tensor, completion_attention: Tensor,
                        G: int, temperature: float = 1.0, share_prompt: bool = True) -> Tensor:
    """Per-token log p(completion | prompt, audio) for B prompts × G completions, shape [B·G, T].

    Completions are group-contiguous (rows b·G … b·G+G−1 belong to prompt b). With ``share_prompt``
    each prompt (audio encoder included) runs once and its key/value cache is repeated for its G
    completions; without it every completion runs the full sequence (R1-AQA's way). Both give the
    same numbers and gradients.
    """
    core, lm_head = _backbone(model)
    prompt_mask = inputs["attention_mask"]
    P = prompt_mask.shape[1]
    audio_kw = {k: inputs[k] for k in ("input_features", "feature_attention_mask") if k in inputs}
    if share_prompt and not getattr(core.language_model, "gradient_checkpointing", False):
        out = core(input_ids=inputs["input_ids"], attention_mask=prompt_mask,
                   position_ids=position_ids(prompt_mask), use_cache=True, **audio_kw)
        cache = out.cache
        cache.batch_repeat_interleave(G)
        full_mask = torch.cat([prompt_mask.repeat_interleave(G, 0), completion_attention], 1)
        pos = position_ids(full_mask)[:, P:]
        comp = core(input_ids=completion_ids, attention_mask=full_mask, position_ids=pos,
                    cache=cache, use_cache=True).last_hidden_state
        hidden = torch.cat([out.last_hidden_state[:, -1:].repeat_interleave(G, 0), comp[:, :-1]], 1)
    else:
        rep = {k: v.repeat_interleave(G, 0) for k, v in inputs.items()}
        full_mask = torch.cat([rep["attention_mask"], completion_attention], 1)
        ids = torch.cat([rep["input_ids"], completion_ids], 1)
        audio_rep = {k: rep[k] for k in audio_kw}
        out = core(input_ids=ids, attention_mask=full_mask, position_ids=position_ids(full_mask),
                   use_cache=False, **audio_rep)
        hidden = out.last_hidden_state[:, P - 1:-1]
    return _selective_logp(hidden, lm_head, completion_ids, temperature)


class StopAfterText(StoppingCriteria):
    """Stop a row once its recent tokens decode to text containing ``stop`` (e.g. ``</answer>``).

    Decoding the tail works with any tokenizer (transformers' ``stop_strings`` needs a BPE-style
    vocabulary) and costs a few microseconds per row and step.
    """

    def __init__(self, tokenizer, prompt_length: int, stop: str = "</answer>", tail: int = 8):
        self.tokenizer, self.prompt_length, self.stop, self.tail = tokenizer, prompt_length, stop, tail

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
        new = input_ids[:, self.prompt_length:]  # the prompt itself mentions </answer>
        texts = self.tokenizer.batch_decode(new[:, -self.tail:], skip_special_tokens=True)
        return torch.tensor([self.stop in t for t in texts], device=input_ids.device)


@torch.no_grad()
def rollout(model, inputs: dict[str, Tensor], G: int, share_prompt: bool = True, stop_after: str | None = None,
            tokenizer=None, **generate_kwargs) -> Tensor:
    """Sample G completions per prompt; returns completion ids [B·G, T], group-contiguous.

    With ``share_prompt`` the prompt (audio encoder included) is prefilled once per prompt and its
    key/value cache repeated for the G samples; ``generate`` then only feeds the last prompt token
    (a text token: the audio merge is never redone). Without it every row prefills the whole prompt.
    ``stop_after`` (with ``tokenizer``) also ends a row once its completion contains that text.
    """
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if stop_after:
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList([StopAfterText(tokenizer, ids.shape[1], stop_after)])
    rep = lambda t: t.repeat_interleave(G, 0)  # noqa: E731 — prompt b's rows are b·G … b·G+G−1
    if share_prompt:
        core, _ = _backbone(model)
        audio_kw = {k: inputs[k] for k in ("input_features", "feature_attention_mask") if k in inputs}
        cache = core(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask[:, :-1]),
                     use_cache=True, **audio_kw).cache
        cache.batch_repeat_interleave(G)
        out = model.generate(input_ids=rep(ids), attention_mask=rep(mask), cache=cache, **generate_kwargs)
    else:
        out = model.generate(**{k: rep(v) for k, v in inputs.items()}, **generate_kwargs)
    return out[:, ids.shape[1]:]
