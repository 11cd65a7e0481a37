"""Grouped attention (r1aqa_pl.grouped_attention): its masks written out by hand, its cache growing past
its room, and the attention implementation switched on only inside its block.

That decoding and scoring through it equal the family's own generate and forward is tested per family
(tests/test_policy.py, test_family_qwen2_5_omni.py, test_families_beyond_qwen.py).
"""

import pytest
import torch
from test_policy import FAMILY, G, batch, structural_token_ids, tiny, tiny_dir  # noqa: F401 — fixtures

from r1aqa_pl.grouped_attention import NAME, GroupedCache, PackedGroups, grouped_attention, grouped_attention_on
from r1aqa_pl.rollout.hf import HFEngine


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
    assert cache.mask(1)[0, 0].int().tolist() == [[0, 1, 1, 1, 0, 1, 0, 1, 0],
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
    expected = HFEngine(share_prompt=False).sample(FAMILY, model, inputs, G, **kw)
    assert torch.equal(out[:, ids.shape[1]:], expected)


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
