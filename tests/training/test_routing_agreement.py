"""Routing agreement for a mixture of experts (tiny Qwen3-Omni, 4 experts, top-2): with ``sampling.keep_logprobs`` the
rollout keeps the experts each layer chose for every token, the update records its own in the same forward, and each
step logs how often they differ. Aligned per token (fp32: identical, both prompt layouts); a router nudged between the
rollout and the update (an engine whose numbers differ) flips tokens, and the logged fraction is the direct count."""

import pytest
import torch
from helpers import Record, batch_of, datamodule, fit

from r1aqa_pl.algo.losses import routing_disagreement
from r1aqa_pl.data.synth import synth_vocabulary
from r1aqa_pl.models import build_tiny_model
from r1aqa_pl.training.grpo_module import GRPOModule
from r1aqa_pl.training.signals import StepSignals


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("moe")), family="qwen3_omni", words=synth_vocabulary(), seed=0)


def alternating():
    """Rows alternate 0 / 1: every group carries a reward spread (a random policy earns none)."""
    from r1aqa_pl.algo.rewards import Reward

    score = staticmethod(lambda completions, questions: [float(i % 2) for i in range(len(completions))])
    return type("Alternating", (Reward,), {"name": "alternating", "score": score})()


def update_routes(m, ro):
    """The experts the update's forwards choose, micro-batch by micro-batch as the update runs them."""
    with torch.no_grad():
        return torch.cat([m.micro_logprobs(m.policy, inputs, ro, rows, with_routes=True)[1]
                          for inputs, rows in m.micro_batches(ro)])


def module(path, **kw):
    kw.setdefault("sampling", dict(G=4, max_new_tokens=8, keep_logprobs=True))
    kw.setdefault("rewards", ["accuracy", "format"])
    m = GRPOModule(dict(model_name_or_path=str(path), **kw.pop("policy", {})), **kw)
    m.configure_model()
    m.policy.eval()
    return m


def test_routing_disagreement_by_hand():
    # 2 rows x 3 tokens x 2 layers x top-2; row 1's last token is padding
    a = torch.tensor([[[[0, 1], [2, 3]], [[0, 2], [1, 3]], [[1, 2], [0, 1]]],
                      [[[0, 1], [0, 1]], [[2, 3], [2, 3]], [[0, 3], [0, 3]]]])
    b = a.clone()
    b[0, 0, 1] = torch.tensor([1, 3])  # token (0,0): layer 1 flipped
    b[0, 2, 0] = torch.tensor([0, 2])  # token (0,2): layer 0 flipped
    b[0, 2, 1] = torch.tensor([0, 2])  # ... and layer 1
    b[1, 2, 0] = torch.tensor([1, 2])  # padding: not counted
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    d = routing_disagreement(a, b, mask)
    assert d["routed_flips"] == pytest.approx(3 / 10)  # 5 real tokens x 2 layers, 3 pairs flipped
    assert d["routed_flips_tokens"] == pytest.approx(2 / 5)
    s = StepSignals()  # a step's micro-batches pooled the same way
    s.routing(a[:1], b[:1], mask[:1])
    s.routing(a[1:], b[1:], mask[1:])
    logged = s.log()
    assert float(logged["train/rollout_agreement/routed_flips"]) == pytest.approx(3 / 10)
    assert float(logged["train/rollout_agreement/routed_flips_tokens"]) == pytest.approx(2 / 5)


@pytest.mark.parametrize("share_prompt", [True, False])
def test_rollout_and_update_routes_align_token_by_token(synth_dir, tiny_moe, share_prompt):
    """fp32: the experts the rollout chose at each position equal the update's (an off-by-one would not: 4 experts
    top-2 give 6 sets, and 96 tokens x 2 layers differ somewhere); a dense family keeps none."""
    m = module(tiny_moe, policy=dict(share_prompt=share_prompt))
    batch = batch_of(datamodule(synth_dir, tiny_moe), 3)
    torch.manual_seed(0)
    ro = m.make_rollout(batch)
    N, T = ro.completion_ids.shape
    assert ro.rollout_routes.shape == (N, T, 2, 2) and ro.rollout_routes.dtype == torch.int16
    chosen = update_routes(m, ro)
    real = ro.mask.bool()
    assert torch.equal(chosen[real], ro.rollout_routes[real].to(chosen))
    shifted = torch.cat([chosen[:, :1], chosen[:, :-1]], 1)  # the same routes one position late
    assert not torch.equal(shifted[real], ro.rollout_routes[real].to(chosen))
    assert routing_disagreement(ro.rollout_routes, chosen, ro.mask)["routed_flips"] == 0


def nudge(m, layer=1, scale=0.3):
    """An engine whose numbers differ from the trainer's, in miniature: one layer's router moved after the rollout."""
    router = m.family.routers(m.policy)[layer]
    with torch.no_grad():
        router.weight.add_(scale * torch.randn(router.weight.shape, generator=torch.Generator().manual_seed(0)))


def test_a_nudged_router_flips_tokens_and_the_step_logs_the_count(synth_dir, tiny_moe):
    """Between the rollout and the update one layer's router is nudged: the update routes some tokens elsewhere, and
    the step's logged fraction equals routing_disagreement on the two sets of choices."""
    m = module(tiny_moe, optimization=dict(lr=1e-3), rewards=[alternating()])
    want = {}
    make_rollout = m.make_rollout

    def rollout_then_nudge(batch):
        ro = make_rollout(batch)
        nudge(m)
        chosen = update_routes(m, ro)
        want.update(routing_disagreement(ro.rollout_routes, chosen, ro.mask))
        layer0 = (chosen[..., 0, :] != ro.rollout_routes[..., 0, :].to(chosen)).any(-1)[ro.mask.bool()]
        want["layer0"] = layer0.any()
        return ro

    m.make_rollout = rollout_then_nudge
    rec = Record()
    fit(m, datamodule(synth_dir, tiny_moe, batch_size=3), steps=1, callbacks=[rec])
    assert 0 < want["routed_flips"] < 0.5 and not want["layer0"]  # layer 1 only: at most half the pairs
    logged = rec.train[1]
    assert logged["train/rollout_agreement/routed_flips"] == pytest.approx(float(want["routed_flips"]))
    assert logged["train/rollout_agreement/routed_flips_tokens"] == pytest.approx(float(want["routed_flips_tokens"]))
    assert logged["train/rollout_agreement/max_abs"] > 1e-3  # the flipped tokens' log-probs moved with them


def test_fit_logs_routing_agreement_also_under_dynamic_sampling(synth_dir, tiny_moe):
    """Groups pooled across draws (routes padded with the completions, -1 beyond each group's length): fp32 routes
    agree exactly, step after step."""
    import lightning as L

    L.seed_everything(0)
    m = GRPOModule(dict(model_name_or_path=str(tiny_moe)), sampling=dict(G=4, max_new_tokens=6, keep_logprobs=True),
                   selection=dict(dynamic_sampling=True, max_extra_draws=2), rewards=[alternating()])
    rec = Record()
    fit(m, datamodule(synth_dir, tiny_moe, batch_size=2), steps=2, callbacks=[rec])
    assert sorted(rec.train) == [1, 2]
    for step in (1, 2):
        assert rec.train[step]["train/rollout_agreement/routed_flips"] == 0.0
        assert rec.train[step]["train/rollout_agreement/max_abs"] < 1e-5


def test_a_dense_family_keeps_no_routes(synth_dir, tiny_dir):
    m = module(tiny_dir)
    assert m.keeps_logprobs and not m.keeps_routes
    torch.manual_seed(0)
    ro = m.make_rollout(batch_of(datamodule(synth_dir, tiny_dir), 2))
    assert ro.rollout_logp is not None and ro.rollout_routes is None
