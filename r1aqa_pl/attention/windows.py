"""An audio encoder's attention windows of equal length attended in one call (the Omni thinkers' encoders).

The Qwen2.5-Omni and Qwen3-Omni audio encoders attend within fixed windows of the clip (their
``cu_seqlens``). Under any implementation but flash attention transformers makes one attention call per
window and layer: a 30 s clip is 15 windows of Qwen2.5-Omni's, so 15 calls of 100 positions in each of
32 layers, far too small to fill a GPU or a CPU's threads, and each pays a launch. Here the windows of
one length (all but each clip's last) are made one contiguous batch and attended in one call; every
window still attends only itself, so the numbers are those of the per-window calls.

It is an attention implementation (``r1aqa_flash_windows``: transformers hands the packed sequence and
the window bounds only to implementations named "flash"), switched on for an encoder's config inside
:func:`windows_batched`; an encoder already on a flash implementation is left to it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AttentionInterface

from r1aqa_pl.attention.grouped import attention_implementation

NAME = "r1aqa_flash_windows"


_plan: tuple[Tensor, list[tuple[int, int]], Tensor | None, Tensor | None] | None = None


def _windows(cu_seq_lens: Tensor) -> tuple[list[tuple[int, int]], Tensor | None, Tensor | None]:
    """((length, count) per window length, the permutation that makes each length's windows contiguous and its
    inverse; None when it is the identity). Every layer of an encoder call gets the same bounds tensor: the
    plan (and the device sync of reading the bounds) is made once per call, not per layer."""
    global _plan
    if _plan is None or _plan[0] is not cu_seq_lens:
        bounds = cu_seq_lens.tolist()
        windows = list(zip(bounds[:-1], bounds[1:]))
        lengths = sorted({b - a for a, b in windows})
        groups = [(L, sum(1 for a, b in windows if b - a == L)) for L in lengths]
        order = [r for L in lengths for a, b in windows if b - a == L for r in range(a, b)]  # rows keep their order
        perm = inverse = None
        if order != list(range(len(order))):
            perm = torch.tensor(order, device=cu_seq_lens.device)
            inverse = perm.argsort()
        _plan = (cu_seq_lens, groups, perm, inverse)
    return _plan[1:]


def windowed_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None,
                       dropout: float = 0.0, cu_seq_lens_q: Tensor | None = None, **kwargs) -> tuple[Tensor, None]:
    """[1, heads, N, d] packed windows (bounds ``cu_seq_lens_q``) -> [1, N, heads, d], each window attending itself."""
    if cu_seq_lens_q is None:  # one window handed over alone
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             scale=scaling)
        return out.transpose(1, 2), None
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, heads, d]
    groups, perm, inverse = _windows(cu_seq_lens_q)
    if perm is not None:  # one index_select each way (its backward is one index_add), not a gather per window
        q, k, v = (t.index_select(0, perm) for t in (q, k, v))
    outs, start = [], 0
    for L, n in groups:
        win = [t[start:start + n * L].view(n, L, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]  # [n, h, L, d]
        outs.append(F.scaled_dot_product_attention(*win, dropout_p=dropout, scale=scaling).transpose(1, 2)
                    .reshape(n * L, *q.shape[1:]))
        start += n * L
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    if inverse is not None:
        out = out.index_select(0, inverse)
    return out[None], None


AttentionInterface.register(NAME, windowed_attention)


@contextlib.contextmanager
def windows_batched(encoder):
    """Within the block ``encoder`` attends with :func:`windowed_attention`; not when it is on flash attention
    already, nor under gradient checkpointing (the layers are recomputed in backward, outside the block, and
    the recomputation must reproduce the forward's tensors)."""
    current = encoder.config._attn_implementation
    if (current and "flash" in current) or getattr(encoder, "gradient_checkpointing", False):
        yield
        return
    with attention_implementation(encoder.config, NAME):
        yield
