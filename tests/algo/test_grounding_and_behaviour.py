"""Audio relevance, audio contribution, truncated importance sampling and the think-length reward, against
hand-computed numbers."""

import math

import pytest
import torch

from r1aqa_pl.algo.grounding import (
    audio_relevance,
    contribution_label,
    contribution_weights,
    pass_rates,
    relevance_summary,
    relevance_weights,
)
from r1aqa_pl.algo.losses import behaviour_disagreement, grpo_loss, truncated_importance_weights
from r1aqa_pl.algo.rewards import REWARDS, ThinkLength, build_rewards, think_budget, think_length_penalty
from r1aqa_pl.recipes import audio_contribution
from r1aqa_pl.task.answer_format import think_words
from r1aqa_pl.task.question import Question

LN2, E1 = math.log(2.0), math.exp(-1.0)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ---- token relevance ---------------------------------------------------------------------------------------------

R = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.2, 0.7, 9.9]])  # 9.9 sits on padding: never kept
M = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])


def test_relevance_is_the_sampled_tokens_log_prob_gap():
    r = audio_relevance(torch.tensor([[-0.1, -2.0, -0.7]]), torch.tensor([[-1.1, -0.5, -0.7]]))
    assert close(r, [[1.0, 1.5, 0.0]])


def test_top_fraction_per_sequence_by_hand():
    # row 0: 4 tokens, keep ceil(0.5*4) = 2: 0.9 and 0.5; row 1: 3 tokens, keep ceil(1.5) = 2: 0.7, then the tie
    # at 0.2 goes to the earlier token
    assert relevance_weights(R, M, keep=0.5).tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    assert relevance_weights(R, M, keep=0.25).tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]  # ceil(1), ceil(0.75)
    # floor: the others down-weighted, padding still 0
    assert relevance_weights(R, M, keep=0.5, floor=0.25).tolist() == [[1, 0.25, 1, 0.25], [1, 0.25, 1, 0]]


def test_top_fraction_per_group_and_threshold_by_hand():
    # one group of G=2: 7 real tokens, keep ceil(3.5) = 4 of them: 0.9, 0.7, 0.5, 0.3
    assert relevance_weights(R, M, keep=0.5, scope="group", G=2).tolist() == [[1, 0, 1, 1], [0, 0, 1, 0]]
    assert relevance_weights(R, M, threshold=0.3).tolist() == [[1, 0, 1, 1], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="known sequence, group"):
        relevance_weights(R, M, scope="batch")


def test_keeping_every_token_is_the_mask_and_rounding_keeps_the_exact_count():
    assert torch.equal(relevance_weights(R, M, keep=1.0), M.float())
    # 0.7 * 10 = 7.000000000000001 in floating point: still 7 tokens, the 7 most relevant
    w = relevance_weights(torch.arange(10.0).unsqueeze(0), torch.ones(1, 10), keep=0.7)
    assert w.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]]


def test_relevance_summary_by_hand():
    s = relevance_summary(R, relevance_weights(R, M, keep=0.5), M)
    # kept 0.5, 0.9 | 0.2, 0.7; dropped 0.1, 0.3 | 0.2 (the padding's 9.9 is neither)
    assert close(s["kept_fraction"], 4 / 7) and close(s["kept_relevance"], 2.3 / 4)
    assert close(s["dropped_relevance"], 0.2)
    assert "dropped_relevance" not in relevance_summary(R, M.float(), M)  # nothing dropped: no mean


# ---- the policy-gradient weight in the loss ----------------------------------------------------------------------

# the 2x3 example of test_advantages_and_losses: objective per token [[.6, .55, .5], [-.8, -.9, pad]]
A2 = torch.tensor([0.5, -1.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
LOGP = OLD + torch.tensor([[1.5, 1.1, 1.0], [0.5, 0.9, 2.0]]).log()
REF = LOGP + torch.tensor([[0.0, LN2, 0.0], [-1.0, 0.0, 5.0]])  # k3: [[0, 1-ln2, 0], [e^-1, 0, pad]]


def test_pg_weight_weighs_the_policy_gradient_term_only():
    W = torch.tensor([[1.0, 0.0, 0.5], [2.0, 1.0, 7.0]])  # 7.0 on padding: no effect
    loss, _ = grpo_loss(LOGP, OLD, REF, A2, MASK, beta=0.04, pg_weight=W)
    row0 = (-1 * 0.6 + 0) + (-0 * 0.55 + 0.04 * (1 - LN2)) + (-0.5 * 0.5 + 0)
    row1 = (-2 * -0.8 + 0.04 * E1) + (-1 * -0.9 + 0)
    assert close(loss, (row0 / 3 + row1 / 2) / 2, 1e-6)
    ones, _ = grpo_loss(LOGP, OLD, REF, A2, MASK, beta=0.04, pg_weight=MASK.float())
    plain, _ = grpo_loss(LOGP, OLD, REF, A2, MASK, beta=0.04)
    assert torch.equal(ones, plain)  # every token kept: plain GRPO exactly


# ---- truncated importance sampling -------------------------------------------------------------------------------

TRAIN = torch.tensor([[-1.0, -2.0, -0.5]])
ROLL = TRAIN - torch.tensor([[LN2, -LN2, 2 * LN2]])  # exp(train - rollout) = 2, 0.5, 4


def test_tis_weights_are_the_capped_ratio():
    assert close(truncated_importance_weights(TRAIN, ROLL, cap=2.0), [[2.0, 0.5, 2.0]])
    assert close(truncated_importance_weights(TRAIN, ROLL, cap=3.0), [[2.0, 0.5, 3.0]])
    assert not truncated_importance_weights(TRAIN.clone().requires_grad_(), ROLL, 2.0).requires_grad


def test_tis_corrected_loss_and_gradient_by_hand():
    """One update per rollout (ratio 1), A = 1, per-completion mean: L = -(1/3) sum_t w_t, dL/dlogp_t = -w_t/3."""
    logp = TRAIN.clone().requires_grad_()
    w = truncated_importance_weights(logp.detach(), ROLL, cap=2.0)
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0]), torch.ones(1, 3), beta=0.0, pg_weight=w)
    loss.backward()
    assert close(loss, -(2.0 + 0.5 + 2.0) / 3) and close(logp.grad, [[-2 / 3, -0.5 / 3, -2 / 3]])
    # the KL term is not weighted: beta * mean k3 is added as it is
    ref = TRAIN + torch.tensor([[LN2, 0.0, 0.0]])
    with_kl, _ = grpo_loss(TRAIN, TRAIN, ref, torch.tensor([1.0]), torch.ones(1, 3), beta=0.1, pg_weight=w)
    assert close(with_kl, -(4.5) / 3 + 0.1 * (1 - LN2) / 3)


def test_behaviour_disagreement_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    rollout = torch.tensor([[-1.1, -2.0, -3.0 + math.log(3.0)]])  # deltas 0.1, 0, -ln 3 (ratio 1/3)
    d = behaviour_disagreement(logp, rollout, torch.ones(1, 3))
    assert close(d["mean_abs"], (0.1 + math.log(3.0)) / 3) and close(d["max_abs"], math.log(3.0))
    assert close(d["outside_band"], 1 / 3)
    d = behaviour_disagreement(logp, rollout, torch.tensor([[1, 1, 0]]))
    assert close(d["mean_abs"], 0.05) and close(d["max_abs"], 0.1) and d["outside_band"].item() == 0.0


# ---- audio contribution ------------------------------------------------------------------------------------------

def test_contribution_labels_and_weights_by_hand():
    assert close(pass_rates([1, 0, 1, 1, 0, 0, 0, 0], 4), [0.75, 0.0])
    with pytest.raises(ValueError, match="groups of 3"):
        pass_rates([1, 0, 1, 1], 3)
    labels, w = contribution_weights(torch.tensor([1.0, 0.5, 0.125, 0.75]), torch.tensor([0.25, 0.5, 0.0, 0.625]),
                                     0.25, {"answerable_without_audio": 0.0, "unsolved": 0.5})
    # +0.75: needs the audio; +0: answerable; both under the margin: unsolved; +0.125 < margin: answerable
    assert labels == ["needs_audio", "answerable_without_audio", "unsolved", "answerable_without_audio"]
    assert w.tolist() == [1.0, 0.0, 0.5, 0.0]


def test_online_labels_are_the_offline_tools():
    assert audio_contribution.label is contribution_label
    for pw, po in [(1.0, 0.25), (0.5, 0.25), (0.5, 0.5), (0.125, 0.0), (0.375, 0.25)]:
        assert audio_contribution.label(pw, po) == contribution_label(pw, po)


# ---- think length ------------------------------------------------------------------------------------------------

def test_think_words():
    assert think_words("<think> a b c </think><answer>x</answer>") == 3
    assert think_words("<think> a b c d e") == 5  # cut mid-thought: counted to the end
    assert think_words("<answer>x</answer>") == 0


def test_budget_and_penalty_by_hand():
    assert think_budget(0.5, 50, 150) == 100 and think_budget(1.0, 50, 150) == 50 and think_budget(0.0, 50, 150) == 150
    assert [think_length_penalty(n, 100) for n in (80, 100, 150, 180, 400)] == [0.0, 0.0, -0.5, -0.8, -1.0]
    assert think_length_penalty(150, 100, slack=2.0) == -0.25


def _think(n: int, answer: str) -> str:
    return "<think>" + " w" * n + " </think><answer>" + answer + "</answer>"


def test_think_length_reward_adapts_to_the_groups_pass_rate():
    q_hard, q_easy = (Question(i, None, "?", ["one", "two"], "one") for i in ("hard", "easy"))
    completions = [_think(80, "one"), _think(150, "one"), _think(180, "two"), _think(400, "two"),  # p = 0.5: B = 100
                   _think(50, "one"), _think(60, "one"), _think(75, "one"), _think(120, "one")]  # p = 1: B = 50
    questions = [q_hard] * 4 + [q_easy] * 4
    reward = REWARDS.build({"class_path": "think_length", "init_args": {"min_words": 50, "max_words": 150}})
    assert isinstance(reward, ThinkLength) and reward.label == "think_length"
    assert reward.budgets(completions, questions) == [100.0] * 4 + [50.0] * 4
    assert reward.score(completions, questions) == [0.0, -0.5, -0.8, -1.0, 0.0, -0.2, -0.5, -1.0]
    # composable: built next to the others, its weight in the total
    rs = build_rewards(["accuracy", {"class_path": "think_length", "init_args": {"weight": 0.5}}], think=True)
    assert [r.label for r in rs] == ["accuracy", "think_length"] and rs[1].weight == 0.5
    with pytest.raises(ValueError, match="min_words <= max_words"):
        ThinkLength(min_words=100, max_words=50)
