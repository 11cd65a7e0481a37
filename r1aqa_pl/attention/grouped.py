"""A prompt's G completions attending one copy of the prompt's keys/values (decoding and scoring).

A group's G rows share their prompt. The usual way repeats the prompt's cache G times, and every
decoding step then reads G copies of it in every layer (at 7B with ~1,000 prompt tokens and G = 8
those reads are most of a decoding step's memory traffic; scoring holds G copies and their
gradients). Here the prompt's keys/values exist once per group, followed by the G rows' tokens
token-major (position ``P + j·G + g`` holds row g's j-th token), and the G rows' queries attend them
in one ``scaled_dot_product_attention`` call per layer (the prompts batched), under a mask that lets
row g see the prompt (its padding excluded) and its own tokens only:

* decoding (:class:`GroupedCache`): one buffer per prompt and layer, filled step by step;
* scoring (:class:`PackedGroups`): the prompt and its G completions as one packed sequence, one
  forward per micro-batch (the completions attend P + G·T keys instead of P + T: more arithmetic for
  long completions, none of the copies).

It is an attention implementation for the language model (registered as ``r1aqa_grouped``),
switched on only inside :func:`grouped_attention_on`; the numbers are those of ordinary attention up
to summation order (float rounding).
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer

NAME = "r1aqa_grouped"
_ACTIVE: contextvars.ContextVar[GroupedCache | PackedGroups | None] = contextvars.ContextVar(NAME, default=None)


class GroupedLayer(DynamicLayer):
    """One layer's prompt keys/values [B, heads, P, d] and room for ``room`` new tokens of each of G rows."""

    def __init__(self, keys: Tensor, values: Tensor, G: int, room: int):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self.G, self.P, self.n = G, keys.shape[-2], 0
        self._bufs = [self._alloc(t, room) for t in (keys, values)]

    def _alloc(self, prefix: Tensor, room: int) -> Tensor:
        B, heads, P, d = prefix.shape
        buf = prefix.new_empty(B, heads, P + self.G * room, d)
        buf[:, :, :P] = prefix
        return buf

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        BG, heads, q, d = key_states.shape
        B, G = BG // self.G, self.G
        start, end = self.P + self.n * G, self.P + (self.n + q) * G
        if end > self._bufs[0].shape[-2]:  # out of room: twice the room, the filled part copied over
            room = 2 * (end - self.P) // G
            self._bufs = [self._alloc(b[:, :, :start], room - self.n) for b in self._bufs]
        for buf, new in zip(self._bufs, (key_states, value_states)):  # row b·G + g, token i -> P + (n + i)·G + g
            buf[:, :, start:end] = new.view(B, G, heads, q, d).permute(0, 2, 3, 1, 4).reshape(B, heads, q * G, d)
        self.n += q
        self.keys, self.values = (b[:, :, :end] for b in self._bufs)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.P + self.n  # what each row has seen: positions and masks are computed from it

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a grouped cache is already one group per prompt")

    def batch_select_indices(self, indices: Tensor) -> None:
        raise NotImplementedError("rows of a grouped cache cannot be selected")

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError("beam search does not run on a grouped cache")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a grouped cache cannot be cropped")


def own_tokens(G: int, n: int, q: int, device=None) -> Tensor:
    """[q·G, n·G], token-major on both sides: query i·G + g (token n − q + i of row g) may attend key j·G + g'
    (token j of row g') iff g' = g and j ≤ n − q + i."""
    j, g = torch.arange(n, device=device).repeat_interleave(G), torch.arange(G, device=device).repeat(n)
    qi = torch.arange(n - q, n, device=device).repeat_interleave(G)
    qg = torch.arange(G, device=device).repeat(q)
    return (g[None, :] == qg[:, None]) & (j[None, :] <= qi[:, None])


class GroupedCache(Cache):
    """The prompt cache of B prompts, each layer a :class:`GroupedLayer`; ``prompt_mask`` [B, P] marks real tokens."""

    def __init__(self, prompt_cache: Cache, prompt_mask: Tensor, G: int, room: int):
        super().__init__(layers=[GroupedLayer(layer.keys, layer.values, G, room) for layer in prompt_cache.layers])
        self.G, self.prompt_mask = G, prompt_mask.bool()
        self._mask_for: tuple | None = None

    def mask(self, q: int) -> Tensor:
        """[B, 1, q·G, P + n·G], :func:`additive`, for the q newest tokens of every row, made once per step for all
        layers."""
        layer = self.layers[0]
        key = (layer.n, q)
        if self._mask_for != key:
            B = self.prompt_mask.shape[0]
            own = own_tokens(self.G, layer.n, q, self.prompt_mask.device)  # slot P + j·G + g: token j of row g
            prompt = self.prompt_mask[:, None, :].expand(B, q * self.G, -1)
            attend = torch.cat([prompt, own[None].expand(B, -1, -1)], -1)[:, None]
            self._mask = additive(attend, layer._bufs[0].dtype)
            self._mask_for = key
        return self._mask


def additive(attend: Tensor, dtype: torch.dtype) -> Tensor:
    """The boolean mask as SDPA's additive one (0: attend, −inf: not), the same numbers: given a boolean mask,
    SDPA on the CPU converts it in every call, forward and backward (measured: a packed scoring call's forward
    and backward 2.55 → 2.10 ms, a decoding step's attention about twice as fast)."""
    return torch.zeros(attend.shape, dtype=dtype, device=attend.device).masked_fill_(~attend, -torch.inf)


def is_plain(cache: Cache) -> bool:
    """Every layer a plain (full-attention) dynamic layer: the layouts this module knows how to group."""
    return all(type(layer) is DynamicLayer and layer.get_seq_length() > 0 for layer in cache.layers)


def sdpa(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scaling=None, dropout: float = 0.0,
         is_causal: bool = False) -> Tensor:
    """``scaled_dot_product_attention`` with grouped-query heads (query heads a multiple of key/value heads).

    Under a mask, the query heads that share a key/value head are folded into the query length (the mask
    tiled to match): CUDA's fused kernels take no masked grouped-query call and would fall back to the
    one that materialises every score, and repeating the keys/values per query head would undo the
    point of keeping them once.
    """
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads == kv_heads or mask is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                              is_causal=is_causal, enable_gqa=heads != kv_heads)
    B, _, L, d = query.shape
    rep = heads // kv_heads  # query head i reads key/value head i // rep; its rows go to r·L … r·L + L − 1
    out = F.scaled_dot_product_attention(query.reshape(B, kv_heads, rep * L, d), key, value,
                                         attn_mask=mask.repeat(1, 1, rep, 1), dropout_p=dropout, scale=scaling)
    return out.view(B, heads, L, d)


def grouped_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None,
                      dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    """The registered attention implementation (HF's mask argument is unused: the layout defines the mask).

    Decoding (a :class:`GroupedCache`): query [B·G, heads, q, d], key/value the layer's filled buffer
    [B, kv heads, P + n·G, d]. Scoring (:class:`PackedGroups`): all [B, heads, P + G·T, d].
    """
    layout = _ACTIVE.get()
    if layout is None:
        raise RuntimeError(f"the {NAME!r} attention runs only inside r1aqa_pl.attention.grouped.grouped_attention_on")
    if isinstance(layout, PackedGroups):
        return layout.attend(query, key, value, scaling, dropout), None
    cache = layout
    BG, heads, q, d = query.shape
    B, G = key.shape[0], cache.G
    qs = query.view(B, G, heads, q, d).permute(0, 2, 3, 1, 4).reshape(B, heads, q * G, d)  # token-major, as the keys
    out = sdpa(qs, key, value, cache.mask(q), scaling, dropout)
    return out.view(B, heads, q, G, d).permute(0, 3, 2, 1, 4).reshape(BG, q, heads, d), None


class PackedGroups:
    """Prompt b and its G completions as one sequence [prompt ; token 0 of rows 0…G−1 ; token 1 …] (token-major),
    for scoring: one forward per micro-batch, the prompt's keys/values computed and kept once.

    ``prompt_mask`` [B, P], ``completion_mask`` [B·G, T]. Prompt tokens attend causally within the prompt
    (padding excluded; a padding query attends itself only, so no row is empty); completion tokens attend
    the prompt's real tokens and their own row's tokens up to themselves (those after an EOS excluded).
    The two kinds of query run as two attention calls, so the prompt never scores the completions' keys.
    """

    def __init__(self, prompt_mask: Tensor, completion_mask: Tensor, G: int):
        pm, cm = prompt_mask.bool(), completion_mask.bool()
        B, P = pm.shape
        T, dev = cm.shape[1], pm.device
        self.P = P
        self.prompt_mask = None  # unpadded prompts: plain causal attention
        if not bool(pm.all()):
            i = torch.arange(P, device=dev)
            causal = (i[None, :] <= i[:, None])[None] & pm[:, None, :]
            self.prompt_mask = (causal | torch.eye(P, dtype=torch.bool, device=dev)[None])[:, None]  # [B, 1, P, P]
        own = own_tokens(G, T, T, dev)  # [G·T, G·T]
        keys = cm.view(B, G, T).transpose(1, 2).reshape(B, 1, G * T)
        self.completion_mask = torch.cat([pm[:, None, :].expand(B, G * T, P), own[None] & keys], -1)[:, None]
        self._additive: dict[torch.dtype, tuple] = {}  # the masks as :func:`additive`, made once for all layers

    def attend(self, query: Tensor, key: Tensor, value: Tensor, scaling, dropout: float) -> Tensor:
        """[B, heads, P + G·T, d] queries (keys and values: kv heads) -> [B, P + G·T, heads, d]."""
        P = self.P
        if query.dtype not in self._additive:
            self._additive[query.dtype] = tuple(None if m is None else additive(m, query.dtype)
                                                for m in (self.prompt_mask, self.completion_mask))
        prompt_mask, completion_mask = self._additive[query.dtype]
        prompt = sdpa(query[:, :, :P], key[:, :, :P], value[:, :, :P], prompt_mask, scaling, dropout,
                      is_causal=prompt_mask is None)
        completions = sdpa(query[:, :, P:], key, value, completion_mask, scaling, dropout)
        return torch.cat([prompt, completions], 2).transpose(1, 2)


AttentionInterface.register(NAME, grouped_attention)


@contextlib.contextmanager
def grouped_attention_on(language_model, layout: GroupedCache | PackedGroups):
    """Within the block the language model attends with :func:`grouped_attention` in ``layout``."""
    token = _ACTIVE.set(layout)
    try:
        with attention_implementation(language_model.config, NAME):
            yield layout
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def attention_implementation(config, name: str):
    """Within the block ``config`` names the attention implementation ``name`` (this config only: the public
    setter would recurse into sub-configs), then the one it had."""
    before = config._attn_implementation
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = before
