"""An audio encoder's attention windows of equal length attended in one call (the Omni thinkers' encoders).

The Qwen2.5-Omni and Qwen3-Omni audio encoders attend within fixed windows of the clip (their
``cu_seqlens``). Under any implementation but flash attention transformers makes one attention call per
window and layer: a 30 s clip is 15 windows of Qwen2.5-Omni's, so 15 calls of 100 positions in each of
32 layers, far too small to fill a GPU or a CPU's threads, and each pays a launch. Here the windows of
one length (all but each clip's last) are stacked into one batch and attended in one call; every window
still attends only itself, so the numbers are those of the per-window calls.

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

NAME = "r1aqa_flash_windows"


def windowed_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask, scaling=None,
                       dropout: float = 0.0, cu_seq_lens_q: Tensor | None = None, **kwargs) -> tuple[Tensor, None]:
    """[1, heads, N, d] packed windows (bounds ``cu_seq_lens_q``) -> [1, N, heads, d], each window attending itself."""
    if cu_seq_lens_q is None:  # one window handed over alone
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             scale=scaling)
        return out.transpose(1, 2), None
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, heads, d]
    bounds = cu_seq_lens_q.tolist()
    starts, lengths = bounds[:-1], [b - a for a, b in zip(bounds, bounds[1:])]
    outs, rows = [], []
    for L in sorted(set(lengths)):
        first = torch.tensor([s for s, n in zip(starts, lengths) if n == L], device=q.device)
        idx = (first[:, None] + torch.arange(L, device=q.device)[None]).reshape(-1)  # the windows' rows, in order
        win = [t[idx].view(len(first), L, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)]  # [windows, heads, L, d]
        out = F.scaled_dot_product_attention(*win, dropout_p=dropout, scale=scaling)
        outs.append(out.transpose(1, 2).reshape(-1, *q.shape[1:]))
        rows.append(idx)
    return torch.cat(outs)[torch.cat(rows).argsort()][None], None


AttentionInterface.register(NAME, windowed_attention)


@contextlib.contextmanager
def windows_batched(encoder):
    """Within the block ``encoder`` attends with :func:`windowed_attention`; not when it is on flash attention
    already, nor under gradient checkpointing (the layers are recomputed in backward, outside the block, and
    the recomputation must reproduce the forward's tensors)."""
    config = encoder.config
    before = config._attn_implementation
    if (before and "flash" in before) or getattr(encoder, "gradient_checkpointing", False):
        yield
        return
    config._attn_implementation_internal = NAME
    try:
        yield
    finally:
        config._attn_implementation_internal = before
