"""Log-probabilities of sampled completions: family-free, shared by GRPO, SFT and the reference model.

Prompts are left-padded (generation appends on the right), so position ids follow the attention
mask exactly as ``generate`` computes them. Log-probabilities are only ever computed at completion
positions: the ~750 audio and prompt positions of a real model never reach the LM head.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from r1aqa_pl.attention.grouped import PackedGroups, grouped_attention_on
from r1aqa_pl.models.base import PolicyFamily


def completion_mask(completion_ids: Tensor, eos_ids: list[int]) -> Tensor:
    """1 up to and including the first EOS of each row, 0 after it; a row without EOS is all 1."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long()


def selective_logp(hidden: Tensor, lm_head, targets: Tensor, temperature: float) -> Tensor:
    """log p(target) from hidden states, the vocabulary only ever materialised for these positions."""
    logits = lm_head(hidden).float() / temperature
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def completion_logprobs(family: PolicyFamily, model, inputs: dict[str, Tensor], completion_ids: Tensor,
                        completion_attention: Tensor, G: int, temperature: float = 1.0,
                        share_prompt: bool = True, with_routes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Per-token log p(completion | prompt, audio) for B prompts × G completions, shape [B·G, T].

    Completions are group-contiguous (rows b·G … b·G+G−1 belong to prompt b). With ``share_prompt``
    each prompt's audio is encoded once and prompt b runs with its G completions as one sequence
    (:class:`~r1aqa_pl.attention.grouped.PackedGroups`: one forward, the prompt's keys/values once).
    Under gradient checkpointing the encoded prompt embeddings are repeated G times and full sequences
    run (the layers' recomputation in backward happens outside the packed attention's scope). Without
    ``share_prompt`` every completion runs the full sequence through the family's own forward (R1-AQA's
    way). All give the same numbers and gradients.

    Columns that are padding in every row of this micro-batch are dropped first (the leading prompt ones,
    the completions' after the last EOS) and the result padded back with 0 to the completions' width: a
    micro-batch pays for its own longest prompt and completion, not the rollout's.

    ``with_routes`` (a mixture of experts): also the experts each layer chose at the position that predicted each
    token, [B·G, T, layers, k] (-1 in the dropped columns), recorded in this same forward: what the update routed,
    to compare with the rollout's (:func:`r1aqa_pl.rollout.hf.decoding_routes`).
    """
    T_rollout = completion_ids.shape[1]
    inputs, completion_ids, completion_attention = without_padding_columns(inputs, completion_ids,
                                                                         completion_attention)
    with family.record_routes(model) if with_routes else nullcontext([]) as routes:
        logp, positions = _completion_logprobs(family, model, inputs, completion_ids, completion_attention, G,
                                               temperature, share_prompt)
    logp = F.pad(logp, (0, T_rollout - logp.shape[1]))
    if not with_routes:
        return logp
    # one forward: one router call per layer over the forward's [batch, sequence] positions
    per_layer = [positions(calls[0].view(positions.shape + (-1,))) for calls in routes]
    chosen = torch.stack(per_layer, 2)  # [B·G, T, layers, k]
    return logp, F.pad(chosen, (0, 0, 0, 0, 0, T_rollout - chosen.shape[1]), value=-1)


def without_padding_columns(inputs: dict[str, Tensor], completion_ids: Tensor, completion_attention: Tensor):
    """(inputs, completion ids, completion mask) without the prompt columns that are padding in every row (left
    padding) and the completion columns after every row's EOS; the audio tensors are left as they are."""
    real = inputs["attention_mask"].bool().any(0)
    first = int(real.long().argmax()) if bool(real.any()) else 0
    used = completion_attention.bool().any(0)
    last = completion_attention.shape[1] - int(used.flip(0).long().argmax()) if bool(used.any()) else 1
    if first:
        inputs = {**inputs, **{k: inputs[k][:, first:] for k in ("input_ids", "attention_mask")}}
    return inputs, completion_ids[:, :last], completion_attention[:, :last]


def _completion_logprobs(family: PolicyFamily, model, inputs: dict[str, Tensor], completion_ids: Tensor,
                         completion_attention: Tensor, G: int, temperature: float, share_prompt: bool) -> Tensor:
    core, lm_head = family.backbone(model)
    prompt_mask = inputs["attention_mask"]
    P = prompt_mask.shape[1]
    full_mask = torch.cat([prompt_mask.repeat_interleave(G, 0), completion_attention], 1)
    checkpointing = getattr(family.language_model(core), "gradient_checkpointing", False)
    if not share_prompt:
        rep = {k: v.repeat_interleave(G, 0) for k, v in family.audio_inputs(inputs).items()}
        rep["input_ids"] = torch.cat([inputs["input_ids"].repeat_interleave(G, 0), completion_ids], 1)
        out = family.full_forward(core, rep, full_mask)
        positions = Positions(lambda x: x[:, P - 1:-1], out.shape[:2])
    elif checkpointing:
        embeds = torch.cat([family.prompt_embeds(core, inputs).repeat_interleave(G, 0),
                            core.get_input_embeddings()(completion_ids)], 1)
        out = core(inputs_embeds=embeds, attention_mask=full_mask, position_ids=family.position_ids(full_mask),
                   use_cache=False).last_hidden_state
        positions = Positions(lambda x: x[:, P - 1:-1], out.shape[:2])
    else:
        B, T = prompt_mask.shape[0], completion_ids.shape[1]
        token_major = lambda t: t.view(B, G, T).transpose(1, 2).reshape(B, T * G)  # noqa: E731 — row g's token j at j·G+g
        embeds = torch.cat([family.prompt_embeds(core, inputs),
                            core.get_input_embeddings()(token_major(completion_ids))], 1)
        pos = family.position_ids(full_mask)  # as generate numbers them, the family's value after an EOS
        pos = torch.cat([pos[::G, :P], token_major(pos[:, P:])], 1)
        with grouped_attention_on(family.language_model(core), PackedGroups(prompt_mask, completion_attention, G)):
            out = core(inputs_embeds=embeds, attention_mask=torch.ones_like(pos), position_ids=pos,
                       use_cache=False).last_hidden_state  # [B, P + T·G, H]

        def unpack(x: Tensor) -> Tensor:  # the prompt's last position G times, then each row's tokens but its last
            comp = x[:, P:].reshape(B, T, G, -1).transpose(1, 2).reshape(B * G, T, -1)
            return torch.cat([x[:, P - 1:P].repeat_interleave(G, 0), comp[:, :-1]], 1)

        positions = Positions(unpack, out.shape[:2])
    return selective_logp(positions(out), lm_head, completion_ids, temperature), positions


class Positions:
    """The positions of a forward's [batch, sequence, ...] output that predict the completions' tokens, as [B·G, T, ...]
    (one rule for the hidden states and anything else recorded per position, e.g. the routers' choices)."""

    def __init__(self, select, shape: tuple[int, int]):
        self.select, self.shape = select, tuple(shape)

    def __call__(self, x: Tensor) -> Tensor:
        return self.select(x)
