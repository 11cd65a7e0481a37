"""Windows of equal length attended in one call: the numbers and gradients of one call per window."""

import torch
import torch.nn.functional as F

from r1aqa_pl.attention.windows import windowed_attention


def per_window(q, k, v, bounds):
    outs = [F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=0.3)
            for a, b in zip(bounds, bounds[1:])]
    return torch.cat(outs, 2).transpose(1, 2)


def test_windows_attend_themselves_only_with_the_per_window_numbers(monkeypatch):
    g = torch.Generator().manual_seed(0)
    bounds = [0, 5, 10, 13, 18, 20]  # lengths 5, 5, 3, 5, 2: three lengths
    q, k, v = (torch.randn(1, 4, 20, 8, generator=g, requires_grad=True) for _ in range(3))
    expected = per_window(q, k, v, bounds)
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    got, _ = windowed_attention(None, q, k, v, None, scaling=0.3, cu_seq_lens_q=torch.tensor(bounds, dtype=torch.int32))
    monkeypatch.undo()
    assert got.shape == (1, 20, 4, 8)
    assert torch.equal(got, expected)
    assert sorted(s[0] for s in calls) == [1, 1, 3]  # one call per length: the three windows of 5 together
    w = torch.randn(got.shape, generator=g)
    grads = torch.autograd.grad((got * w).sum(), (q, k, v))
    for a, b in zip(grads, torch.autograd.grad((expected * w).sum(), (q, k, v))):
        assert torch.allclose(a, b, atol=1e-6)
    # a window changed elsewhere leaves another window's output alone
    k2 = k.detach().clone()
    k2[:, :, 13:18] += 1.0
    got2, _ = windowed_attention(None, q, k2, v, None, scaling=0.3, cu_seq_lens_q=torch.tensor(bounds))
    assert torch.equal(got2[:, :13], got[:, :13]) and not torch.equal(got2[:, 13:18], got[:, 13:18])


def test_windows_of_one_length_are_attended_without_regrouping():
    """All windows one length (a clip that fills its windows): views only, the per-window numbers."""
    g = torch.Generator().manual_seed(1)
    bounds = [0, 4, 8, 12]
    q, k, v = (torch.randn(1, 2, 12, 8, generator=g) for _ in range(3))
    got, _ = windowed_attention(None, q, k, v, None, scaling=0.3, cu_seq_lens_q=torch.tensor(bounds))
    assert torch.equal(got, per_window(q, k, v, bounds))
