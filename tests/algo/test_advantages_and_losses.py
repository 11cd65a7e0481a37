"""GRPO mathematics against hand-computed numbers."""

import math

import pytest
import torch

from r1aqa_pl.algo.advantages import group_advantages
from r1aqa_pl.algo.losses import (
    aggregate,
    clipped_objective,
    grpo_loss,
    k3_kl,
    log_importance_ratio,
)

LOSS_TYPES = ["grpo", "bnpo", "dapo", "dr_grpo"]
LN2, E1 = math.log(2.0), math.exp(-1.0)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- advantages ----------------------------------------------------------------------------------

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def test_advantages_group_scale_hand_example():
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # group 1: mean 0.5, unbiased std sqrt(4*0.25/3) = 0.57735
    assert close(group_advantages(REWARDS, G=4), [a, -a, -a, a, 0, 0, 0, 0])
    assert (group_advantages(REWARDS, G=4)[4:] == 0).all()  # all-equal group: exactly 0


def test_advantages_batch_and_none_scales():
    # batch: mean 1.25, sum of squares 2*0.0625 + 2*1.5625 + 4*0.5625 = 5.5, unbiased std sqrt(5.5/7)
    s = math.sqrt(5.5 / 7) + 1e-4
    assert close(group_advantages(REWARDS, 4, scale="batch"), [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0])
    assert close(group_advantages(REWARDS, 4, scale="none"), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_degenerate_groups_are_exactly_zero(scale):
    for r, G in [(torch.tensor([3.0, 1.0]), 1), (torch.tensor([0.1, 0.1, 0.1]), 3), (torch.tensor([7.0]), 1)]:
        A = group_advantages(r, G, scale=scale)
        assert A.shape == r.shape and (A == 0).all() and torch.isfinite(A).all()


def test_advantages_bad_arguments():
    with pytest.raises(ValueError, match="groups of G=3"):
        group_advantages(REWARDS, G=3)
    with pytest.raises(ValueError, match="known: group, batch, none"):
        group_advantages(REWARDS, G=4, scale="rank")


# ---- KL and clipping ---------------------------------------------------------------------------------


def test_k3_kl():
    logp = torch.tensor([-1.3, -0.2, -4.0])
    assert (k3_kl(logp, logp) == 0).all()
    # ref - logp = ln 2 -> 2 - ln2 - 1 ; ref - logp = -1 -> e^-1 + 1 - 1
    assert close(k3_kl(torch.tensor([0.0, 1.0]), torch.tensor([LN2, 0.0])), [1 - LN2, E1])


def test_clipped_objective_and_clip_higher():
    A = torch.tensor([0.5, -1.0])
    ratio = torch.tensor([[1.5, 1.1], [0.5, 2.0]])
    obj, clipped = clipped_objective(ratio.log(), torch.zeros(2, 2), A)
    # min(1.5*.5, 1.2*.5), min(1.1*.5, 1.1*.5) ; min(.5*-1, .8*-1), min(2*-1, 1.2*-1)
    assert close(obj, [[0.6, 0.55], [-0.8, -2.0]])
    assert clipped.tolist() == [[True, False], [True, False]]
    obj, clipped = clipped_objective(ratio.log(), torch.zeros(2, 2), A, epsilon_low=0.2, epsilon_high=0.28)
    assert close(obj[0], [1.28 * 0.5, 0.55]) and clipped[0].tolist() == [True, False]


# ---- aggregation -------------------------------------------------------------------------------------

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])  # 99 is padding


def test_aggregate_each_loss_type():
    assert close(aggregate(L, MASK, "grpo"), (6 / 3 + 9 / 2) / 2)
    assert close(aggregate(L, MASK, "bnpo"), 15 / 5)
    assert close(aggregate(L, MASK, "dapo"), 15 / 5)
    assert close(aggregate(L, MASK, "dr_grpo"), 15 / (2 * 3))
    assert close(aggregate(L, MASK, "dr_grpo", max_completion_length=5), 15 / (2 * 5))
    assert close(aggregate(L, MASK, "grpo", num_completions=4), (6 / 3 + 9 / 2) / 4)
    assert close(aggregate(L, MASK, "dapo", num_tokens=10), 15 / 10)  # this micro-batch's share of a 10-token step
    # bnpo (TRL's): this micro-batch's own token mean, one of 2 micro-batches; the step's token count is not read
    assert close(aggregate(L, MASK, "bnpo", num_tokens=10, num_micro_batches=2), 15 / 5 / 2)
    with pytest.raises(ValueError, match="known: grpo, bnpo, dapo, dr_grpo"):
        aggregate(L, MASK, "sum")


def test_aggregate_guards_empty_completions_and_nonfinite_padding():
    L2 = torch.tensor([[1.0, 2.0, float("inf")], [float("nan"), 0.0, 0.0]])
    M2 = torch.tensor([[1, 1, 0], [0, 0, 0]])
    for lt, want in [("grpo", (3 / 2 + 0) / 2), ("bnpo", 3 / 2), ("dapo", 3 / 2), ("dr_grpo", 3 / 6)]:
        assert close(aggregate(L2, M2, lt), want)
    for lt in LOSS_TYPES:
        assert aggregate(L2, torch.zeros(2, 3), lt).item() == 0.0


# ---- the full loss on a 2x3 example, clipping active (mu > 1) ------------------------------------------

A2 = torch.tensor([0.5, -1.0])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
LOGP = OLD + torch.tensor([[1.5, 1.1, 1.0], [0.5, 0.9, 2.0]]).log()  # ratios; [1, 2] is padding
REF = LOGP + torch.tensor([[0.0, LN2, 0.0], [-1.0, 0.0, 5.0]])  # k3: [[0, 1-ln2, 0], [e^-1, 0, pad]]
# objective per token: [[min(.75,.6), .55, .5], [min(-.5,-.8), -.9, pad]]
OBJ0, OBJ1 = [0.6, 0.55, 0.5], [-0.8, -0.9]
KL0, KL1 = [0.0, 1 - LN2, 0.0], [E1, 0.0]


def _expected(loss_type, beta):
    row0 = [-o + beta * k for o, k in zip(OBJ0, KL0)]
    row1 = [-o + beta * k for o, k in zip(OBJ1, KL1)]
    if loss_type == "grpo":
        return (sum(row0) / 3 + sum(row1) / 2) / 2
    if loss_type in ("bnpo", "dapo"):
        return (sum(row0) + sum(row1)) / 5
    return (sum(row0) + sum(row1)) / (2 * 3)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_hand_example(loss_type, beta):
    loss, stats = grpo_loss(LOGP, OLD, REF, A2, MASK, beta=beta, loss_type=loss_type)
    assert close(loss, _expected(loss_type, beta), 1e-5)
    assert close(stats["clip_ratio"], 2 / 5)  # tokens [0,0] and [1,0]
    assert close(stats["ratio"], (1.5 + 1.1 + 1.0 + 0.5 + 0.9) / 5, 1e-5)
    assert close(stats["kl"], (1 - LN2 + E1) / 5, 1e-5)
    # spelled out once: grpo with KL
    if loss_type == "grpo" and beta:
        want = ((-0.6 - 0.55 + 0.04 * (1 - LN2) - 0.5) / 3 + (0.8 + 0.04 * E1 + 0.9) / 2) / 2
        assert close(loss, want, 1e-5)


def test_grpo_loss_without_reference():
    loss, stats = grpo_loss(LOGP, OLD, None, A2, MASK, beta=0.04)
    assert close(loss, ((-0.6 - 0.55 - 0.5) / 3 + (0.8 + 0.9) / 2) / 2, 1e-5)
    assert stats["kl"].item() == 0.0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_sum_to_full_loss(loss_type):
    g = torch.Generator().manual_seed(0)
    N, T = 6, 5
    logp = -torch.rand(N, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(N, T, generator=g)
    ref = logp + 0.3 * torch.randn(N, T, generator=g)
    A = torch.randn(N, generator=g)
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in [5, 3, 1, 0, 4, 2]])
    full, _ = grpo_loss(logp, old, ref, A, mask, loss_type=loss_type)
    slices = (slice(0, 2), slice(2, 5), slice(5, 6))
    totals = dict(num_completions=N, num_tokens=mask.sum(), max_completion_length=T, num_micro_batches=len(slices))
    parts = [grpo_loss(logp[s], old[s], ref[s], A[s], mask[s], loss_type=loss_type, **totals)[0] for s in slices]
    if loss_type == "bnpo":  # TRL's bnpo: the mean of the micro-batches' own token means, not the step's
        full = sum(grpo_loss(logp[s], old[s], ref[s], A[s], mask[s], loss_type="dapo")[0] for s in slices) / 3
        assert not close(sum(parts), grpo_loss(logp, old, ref, A, mask, loss_type="dapo")[0], 1e-3)
    assert close(sum(parts), full, 1e-6)


def test_gradient_at_ratio_one_is_plain_policy_gradient():
    g = torch.Generator().manual_seed(1)
    N, T = 3, 4
    logp = (-torch.rand(N, T, generator=g) * 2).requires_grad_()
    A = torch.tensor([0.7, -1.2, 0.3])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    loss, stats = grpo_loss(logp, logp.detach(), None, A, mask, beta=0.0)
    loss.backward()
    lengths = torch.tensor([4.0, 2.0, 1.0])
    want = (-A / (lengths * N)).unsqueeze(1) * mask  # -A_i / (|o_i| N) on each of o_i's tokens
    assert close(logp.grad, want) and stats["ratio"].item() == 1.0 and stats["clip_ratio"].item() == 0.0


def test_all_equal_rewards_give_no_gradient():
    A = group_advantages(torch.tensor([1.0, 1.0, 1.0, 1.0]), G=4)
    assert (A == 0).all()
    logp = (-torch.rand(4, 3)).requires_grad_()
    loss, _ = grpo_loss(logp, logp.detach(), None, A, torch.ones(4, 3), beta=0.0)
    loss.backward()
    assert torch.isfinite(loss) and (logp.grad == 0).all()


# ---- GSPO: sequence-level importance ratio ---------------------------------------------------------------

# the 2x3 example above: row 0 token ratios 1.5, 1.1, 1.0; row 1 0.5, 0.9 (its third token is padding)
S0, S1 = 1.65 ** (1 / 3), 0.45 ** 0.5  # length-normalised sequence ratios: 1.18167, 0.67082


def test_sequence_log_ratio_is_the_masked_mean_per_completion():
    lr = log_importance_ratio(LOGP, OLD, MASK, "sequence")
    assert lr.shape == (2, 3)
    assert close(lr.exp(), [[S0, S0, S0], [S1, S1, S1]], 1e-6)  # the padding ratio (2.0) is left out
    assert close(log_importance_ratio(LOGP, OLD, MASK, "token"), LOGP - OLD)
    with pytest.raises(ValueError, match="known: token, sequence"):
        log_importance_ratio(LOGP, OLD, MASK, "group")


def test_gspo_loss_hand_example_with_clipping():
    # row 0: A=0.5, s0=1.18167 inside [0.8, 1.2] -> objective 0.5*s0 on each token
    # row 1: A=-1, s1=0.67082 < 0.8 -> min(-0.67082, -0.8) = -0.8: clipped, both tokens
    loss, stats = grpo_loss(LOGP, OLD, None, A2, MASK, beta=0.0, importance_sampling_level="sequence")
    assert close(loss, (-0.5 * S0 + 0.8) / 2, 1e-6)
    assert close(stats["clip_ratio"], 2 / 5) and close(stats["ratio"], (3 * S0 + 2 * S1) / 5, 1e-6)
    # clip-higher at 0.1: row 0 clipped too (s0 > 1.1) -> 0.5*1.1
    loss, stats = grpo_loss(LOGP, OLD, None, A2, MASK, beta=0.0, epsilon_high=0.1, importance_sampling_level="sequence")
    assert close(loss, (-0.55 + 0.8) / 2, 1e-6) and close(stats["clip_ratio"], 1.0)
    # with the KL term, per token as before: row 0 mean KL (1-ln2)/3, row 1 e^-1/2
    loss, _ = grpo_loss(LOGP, OLD, REF, A2, MASK, beta=0.04, importance_sampling_level="sequence")
    assert close(loss, ((-0.5 * S0 + 0.04 * (1 - LN2) / 3) + (0.8 + 0.04 * E1 / 2)) / 2, 1e-6)
    # bnpo (token mean): row 0 counts 3 times, row 1 twice
    loss, _ = grpo_loss(LOGP, OLD, None, A2, MASK, beta=0.0, loss_type="bnpo", importance_sampling_level="sequence")
    assert close(loss, (3 * -0.5 * S0 + 2 * 0.8) / 5, 1e-6)


def test_gspo_gradient_spreads_over_the_sequence_and_stops_where_clipped():
    logp = LOGP.clone().requires_grad_()
    loss, _ = grpo_loss(logp, OLD, None, A2, MASK, beta=0.0, importance_sampling_level="sequence")
    loss.backward()
    # d/dlogp_0t of (1/2) * -(A0 * s0) = -(1/2) * A0 * s0 / 3 on each of row 0's tokens; row 1 clipped: 0
    g0 = -0.5 * 0.5 * S0 / 3
    assert close(logp.grad, [[g0, g0, g0], [0.0, 0.0, 0.0]], 1e-6)


def test_gspo_equals_grpo_on_policy():
    """At ratio 1 (one update per rollout) both levels give the same loss and gradient."""
    g = torch.Generator().manual_seed(2)
    logp = -torch.rand(3, 4, generator=g)
    A = torch.tensor([0.7, -1.2, 0.3])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    grads = []
    for level in ("token", "sequence"):
        x = logp.clone().requires_grad_()
        loss, stats = grpo_loss(x, x.detach(), None, A, mask, beta=0.0, importance_sampling_level=level)
        loss.backward()
        grads.append((loss.detach(), x.grad))
        assert stats["ratio"].item() == 1.0
    assert close(grads[0][0], grads[1][0]) and close(grads[0][1], grads[1][1])
