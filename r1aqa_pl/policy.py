"""Model-side tensor plumbing shared by GRPO, SFT and evaluation.

Prompts are left-padded (generation appends on the right), so position ids follow the attention
mask exactly as ``generate`` computes them. Log-probabilities are only ever computed at completion
positions: the ~750 audio and prompt positions of the real model never reach the LM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.masking_utils import create_bidirectional_mask

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


def encode_audio(core, input_features: Tensor, feature_attention_mask: Tensor) -> Tensor:
    """Projected audio features of every clip, concatenated in order: [Σ audio tokens, hidden].

    The same numbers as Qwen2-Audio's own encoder, which insists on the full 30 s window (3000 mel
    frames) whatever the clip's length: here it runs over the batch's longest clip plus the two frames
    of right context its two convolutions read, so a 10 s clip costs a third of the window, and less
    than that in attention.

    Weights are only touched inside module calls: under DeepSpeed ZeRO-3 reading ``conv1.weight``
    here would fetch it for the enclosing (root) module, which never releases it, and the next
    rollout's re-partitioning fails ("Cannot free a ZeRO-3 parameter while it is still active").
    """
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


def prompt_embeds(core, input_ids: Tensor, input_features: Tensor | None = None,
                  feature_attention_mask: Tensor | None = None) -> Tensor:
    """Token embeddings with the audio features in the ``<|AUDIO|>`` slots (the processor expanded them)."""
    embeds = core.get_input_embeddings()(input_ids)
    if input_features is None:
        return embeds
    feats = encode_audio(core, input_features, feature_attention_mask)
    slots = input_ids == core.config.audio_token_id
    if int(slots.sum()) != feats.shape[0]:
        raise ValueError(f"{int(slots.sum())} <|AUDIO|> tokens in the prompts but {feats.shape[0]} audio features: "
                         "were the prompts and features made by the same processor?")
    return embeds.masked_scatter(slots.unsqueeze(-1).to(embeds.device), feats.to(embeds.device, embeds.dtype))


def completion_logprobs(model, inputs: dict[str, Tensor], completion_ids: Tensor, completion_attention: Tensor,
                        G: int, temperature: float = 1.0, share_prompt: bool = True) -> Tensor:
    """Per-token log p(completion | prompt, audio) for B prompts × G completions, shape [B·G, T].

    Completions are group-contiguous (rows b·G … b·G+G−1 belong to prompt b). With ``share_prompt``
    each prompt's audio is encoded once (over the clip, not the 30 s window) and the prompt runs once,
    its key/value cache repeated for its G completions; under gradient checkpointing (no cache) the
    encoded prompt embeddings are repeated and the full sequence runs. Without ``share_prompt`` every
    completion runs the full sequence through Qwen2-Audio's own forward (R1-AQA's way). All give the
    same numbers and gradients.
    """
    core, lm_head = _backbone(model)
    prompt_mask = inputs["attention_mask"]
    P = prompt_mask.shape[1]
    full_mask = torch.cat([prompt_mask.repeat_interleave(G, 0), completion_attention], 1)
    audio_kw = {k: inputs[k] for k in ("input_features", "feature_attention_mask") if k in inputs}
    checkpointing = getattr(core.language_model, "gradient_checkpointing", False)
    if not share_prompt:
        rep = {k: v.repeat_interleave(G, 0) for k, v in audio_kw.items()}
        ids = torch.cat([inputs["input_ids"].repeat_interleave(G, 0), completion_ids], 1)
        out = core(input_ids=ids, attention_mask=full_mask, position_ids=position_ids(full_mask), use_cache=False,
                   **rep)
        hidden = out.last_hidden_state[:, P - 1:-1]
    elif checkpointing:
        embeds = torch.cat([prompt_embeds(core, inputs["input_ids"], **audio_kw).repeat_interleave(G, 0),
                            core.get_input_embeddings()(completion_ids)], 1)
        out = core(inputs_embeds=embeds, attention_mask=full_mask, position_ids=position_ids(full_mask),
                   use_cache=False)
        hidden = out.last_hidden_state[:, P - 1:-1]
    else:
        out = core(inputs_embeds=prompt_embeds(core, inputs["input_ids"], **audio_kw), attention_mask=prompt_mask,
                   position_ids=position_ids(prompt_mask), use_cache=True)
        cache = out.cache
        cache.batch_repeat_interleave(G)
        comp = core(input_ids=completion_ids, attention_mask=full_mask, position_ids=position_ids(full_mask)[:, P:],
                    cache=cache, use_cache=True).last_hidden_state
        hidden = torch.cat([out.last_hidden_state[:, -1:].repeat_interleave(G, 0), comp[:, :-1]], 1)
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

    With ``share_prompt`` each prompt is prefilled once (its audio encoded over the clip, not the 30 s
    window) and its key/value cache repeated for the G samples; ``generate`` then only feeds the last
    prompt token (a text token: the audio merge is never redone). Without it every row prefills the
    whole prompt through Qwen2-Audio's own forward.
    ``stop_after`` (with ``tokenizer``) also ends a row once its completion contains that text.
    """
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if stop_after:
        generate_kwargs["stopping_criteria"] = StoppingCriteriaList([StopAfterText(tokenizer, ids.shape[1], stop_after)])
    rep = lambda t: t.repeat_interleave(G, 0)  # noqa: E731 — prompt b's rows are b·G … b·G+G−1
    if share_prompt:
        core, _ = _backbone(model)
        audio_kw = {k: inputs[k] for k in ("input_features", "feature_attention_mask") if k in inputs}
        cache = core(inputs_embeds=prompt_embeds(core, ids[:, :-1], **audio_kw), attention_mask=mask[:, :-1],
                     position_ids=position_ids(mask[:, :-1]), use_cache=True).cache
        cache.batch_repeat_interleave(G)
        out = model.generate(input_ids=rep(ids), attention_mask=rep(mask), cache=cache, **generate_kwargs)
    else:
        out = model.generate(**{k: rep(v) for k, v in inputs.items()}, **generate_kwargs)
    return out[:, ids.shape[1]:]
