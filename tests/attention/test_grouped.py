"""Grouped attention (r1aqa_pl.attention.grouped): its masks written out by hand, its cache growing past
its room, and the attention implementation switched on only inside its block.

That decoding and scoring through it equal the family's own generate and forward is tested per family
(tests/models/).
"""

import pytest
import torch
from tiny_qwen2_audio import (
    FAMILY,
    G,
    batch,
    completion_logprobs,
    eos_ids,
    rel_err,
    rollout,
    structural_token_ids,
)

from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.attention.grouped import NAME, GroupedCache, PackedGroups, grouped_attention, grouped_attention_on, sdpa
from r1aqa_pl.rollout.hf import FIRST_ROOM, HFEngine


def test_packed_mask_by_hand():
    """Prompt 0 has one padding token; row 1's completion ends after its first token."""
    prompt = torch.tensor([[0, 1, 1]])
    completion = torch.tensor([[1, 1], [1, 0]])  # G = 2 rows of T = 2 tokens
    packed = PackedGroups(prompt, completion, G=2)
    assert packed.prompt_mask[0, 0].int().tolist() == [[1, 0, 0],  # a padding query attends itself only
                                                       [0, 1, 0],
                                                       [0, 1, 1]]
    # sequence order after the prompt: row 0 token 0, row 1 token 0, row 0 token 1, row 1 token 1
    assert packed.completion_mask[0, 0].int().tolist() == [[0, 1, 1, 1, 0, 0, 0],
                                                           [0, 1, 1, 0, 1, 0, 0],
                                                           [0, 1, 1, 1, 0, 1, 0],
                                                           [0, 1, 1, 0, 1, 0, 0]]  # row 1's token 1 is masked


def test_unpadded_prompts_take_plain_causal_attention():
    packed = PackedGroups(torch.ones(2, 4, dtype=torch.long), torch.ones(4, 3, dtype=torch.long), G=2)
    assert packed.prompt_mask is None
    assert packed.completion_mask.shape == (2, 1, 2 * 3, 4 + 2 * 3)


def test_decoding_mask_by_hand():
    """Two new tokens per row decoded, the third one's query: each row sees the prompt's real tokens and its own."""
    keys = torch.zeros(1, 1, 3, 2)
    cache = GroupedCache(type("C", (), {"layers": [type("L", (), {"keys": keys, "values": keys})()]})(),
                         torch.tensor([[0, 1, 1]]), G=2, room=4)
    layer = cache.layers[0]
    for _ in range(3):
        layer.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert layer.get_seq_length() == 3 + 3
    assert (cache.mask(1)[0, 0] == 0).int().tolist() == [[0, 1, 1, 1, 0, 1, 0, 1, 0],
                                                  [0, 1, 1, 0, 1, 0, 1, 0, 1]]


def test_cache_grows_past_its_room_with_the_same_tokens(tiny):
    """A cache made with room for 2 new tokens decodes 7 greedy tokens as the repeated dynamic cache does."""
    model, processor = tiny
    _, inputs = batch(processor)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    core, _ = FAMILY.backbone(model)
    rep = lambda t: t.repeat_interleave(G, 0)  # noqa: E731
    kw = dict(do_sample=False, max_new_tokens=7, suppress_tokens=structural_token_ids(processor))
    with torch.no_grad():
        prefix = core(inputs_embeds=FAMILY.prompt_embeds(core, {**inputs, "input_ids": ids[:, :-1]}),
                      attention_mask=mask[:, :-1], position_ids=FAMILY.position_ids(mask[:, :-1]), use_cache=True)
        cache = GroupedCache(prefix.cache, mask[:, :-1], G, room=2)
        with grouped_attention_on(FAMILY.language_model(core), cache):
            out = model.generate(input_ids=rep(ids), attention_mask=rep(mask), cache=cache, **kw)
    assert cache.layers[0]._bufs[0].shape[-2] > ids.shape[1] - 1 + 2 * G  # it grew
    expected = HFEngine().sample(FAMILY, model, inputs, G, share_prompt=False, **kw)
    assert torch.equal(out[:, ids.shape[1]:], expected)


@pytest.mark.parametrize("max_new, first_room", [(3, 4), (200, FIRST_ROOM)])
def test_engine_reserves_at_most_its_first_room(tiny, monkeypatch, max_new, first_room):
    """The rollout's cache starts with room for max_new_tokens + 1 new tokens per row, at most FIRST_ROOM (it
    doubles when full), so completions that stop early never hold room for max_new_tokens."""
    import r1aqa_pl.rollout.hf as hf

    rooms = []

    class Recording(GroupedCache):
        def __init__(self, prompt_cache, prompt_mask, G, room):
            rooms.append(room)
            super().__init__(prompt_cache, prompt_mask, G, room)

    monkeypatch.setattr(hf, "GroupedCache", Recording)
    model, processor = tiny
    _, inputs = batch(processor, lengths=((1.0, 4),))
    out = HFEngine().sample(FAMILY, model, inputs, 2, do_sample=False, max_new_tokens=max_new, min_new_tokens=max_new,
                            suppress_tokens=structural_token_ids(processor))
    assert rooms == [first_room] and out.shape == (2, max_new)


def test_attention_runs_only_inside_its_block(tiny):
    model, _ = tiny
    lm = FAMILY.language_model(FAMILY.backbone(model)[0])
    before = lm.config._attn_implementation
    q = torch.zeros(1, 1, 1, 2)
    with pytest.raises(RuntimeError, match="grouped_attention_on"):
        grouped_attention(None, q, q, q, None)
    with pytest.raises(ValueError, match="inside"):
        with grouped_attention_on(lm, PackedGroups(torch.ones(1, 2), torch.ones(1, 1), G=1)):
            assert lm.config._attn_implementation == NAME
            raise ValueError("inside")
    assert lm.config._attn_implementation == before  # restored, also after an error


@pytest.mark.parametrize("masked", [True, False])
def test_grouped_query_heads_equal_repeated_keys(masked):
    """8 query heads on 2 key/value heads: folding the heads into the query length (masked) or enable_gqa
    (unmasked) gives what repeating each key/value head for its 4 query heads gives."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((8, 5), (2, 9), (2, 9)))
    mask = torch.rand(2, 1, 5, 9, generator=g) > 0.4 if masked else None
    if masked:
        mask[..., 0] = True  # no empty row
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                                                attn_mask=mask)
    assert torch.allclose(sdpa(q, k, v, mask), expected, atol=1e-6)


@pytest.fixture()
def gqa(tiny):
    """The tiny policy with half as many key/value heads as query heads (each keeps the first half of its
    key/value projections): grouped-query attention, as Qwen2.5-Omni and Qwen3-Omni have at 7B/30B."""
    model, processor = tiny
    config = model.config
    config.text_config.num_key_value_heads = config.text_config.num_attention_heads // 2
    gqa_model = type(model)(config).eval()
    attn = FAMILY.language_model(FAMILY.backbone(gqa_model)[0]).layers[0].self_attn
    assert attn.k_proj.out_features * 2 == attn.q_proj.out_features
    own = gqa_model.state_dict()
    gqa_model.load_state_dict({n: t if t.shape == own[n].shape else t[:own[n].shape[0]]
                               for n, t in model.state_dict().items()})
    return gqa_model, processor


def test_grouped_query_attention_policy_decodes_and_scores_as_unshared(gqa):
    model, processor = gqa
    _, inputs = batch(processor)
    kw = dict(max_new_tokens=6, suppress_tokens=structural_token_ids(processor))
    greedy = {s: rollout(model, inputs, G, share_prompt=s, do_sample=False, **kw) for s in (True, False)}
    assert torch.equal(greedy[True], greedy[False])
    torch.manual_seed(3)
    ids = rollout(model, inputs, G, do_sample=True, **kw)
    mask = completion_mask(ids, eos_ids(model))
    with torch.no_grad():
        lp = {s: completion_logprobs(model, inputs, ids, mask, G, share_prompt=s) for s in (True, False)}
    assert rel_err(lp[True], lp[False]) < 1e-5
