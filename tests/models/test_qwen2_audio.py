"""Prompt sharing for the Qwen2-Audio family: the shared computation (r1aqa_pl.algo.logprobs, the hf
rollout engine) equals the family's own unshared forward and generate.

A real tiny Qwen2-Audio (built once per session) with prompts of different audio and question
lengths, so that left padding, attention masks and position ids all matter.
"""

import numpy as np
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
    sampled,
    structural_token_ids,
)

from r1aqa_pl.algo import losses as grpo
from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.models import build_tiny_model, load_policy
from r1aqa_pl.models.base import position_ids
from r1aqa_pl.rollout.hf import HFEngine, StopAfterText

# ------------------------------------------------------------------ shared == unshared


def test_shared_prompt_matches_unshared_logprobs_loss_and_gradients(tiny):
    model, processor = tiny
    _, inputs = batch(processor)
    ids = sampled(model, processor, inputs)
    eos = eos_ids(model)
    ids[1, 2] = eos[0]  # one completion ends early: padding inside the completions too
    mask = completion_mask(ids, eos)
    assert mask.sum(1).min() < ids.shape[1]
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(ids.shape[0], generator=gen)
    ref_logp = -torch.rand(ids.shape, generator=gen) * 3
    model.train()  # dropout is 0 in the tiny config; train() is what the update runs under

    results = {}
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        logp = completion_logprobs(model, inputs, ids, mask, G, temperature=0.9, share_prompt=share)
        loss, _ = grpo.grpo_loss(logp, logp.detach(), ref_logp, A, mask, beta=0.04)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = logp.detach(), loss.detach(), grads
    (lp_s, loss_s, g_s), (lp_u, loss_u, g_u) = results[True], results[False]
    assert lp_s.shape == ids.shape and torch.isfinite(lp_s).all()
    assert rel_err(lp_s, lp_u) < 1e-5
    assert abs(float(loss_s - loss_u)) <= 1e-5 * abs(float(loss_u))
    assert g_s.keys() == g_u.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    encoder = [n for n in g_s if "audio_tower" in n]
    assert encoder and any(g_s[n].abs().max() > 0 for n in encoder)  # gradient reaches the encoder
    worst = max(float((g_s[n] - g_u[n]).abs().max()) for n in g_s)
    scale = max(float(g.abs().max()) for g in g_u.values())
    assert worst <= 1e-5 * scale, (worst, scale)
    for n in encoder + ["lm_head.weight"]:
        assert rel_err(g_s[n], g_u[n]) < 1e-4, n  # per tensor too, not only against the largest


def encode_audio_window(core, input_features, feature_attention_mask):
    """The oracle: Qwen2-Audio's own encoder forward over the full window, as its model forward calls it."""
    from transformers.masking_utils import create_bidirectional_mask

    enc = core.audio_tower
    feat_len, tok_len = enc._get_feat_extract_output_lengths(feature_attention_mask.sum(-1))
    S = enc.config.max_source_positions
    mask = create_bidirectional_mask(config=enc.config, inputs_embeds=torch.zeros(len(feat_len), S, 1),
                                     attention_mask=(torch.arange(S)[None] < feat_len[:, None]).long())
    feats = core.multi_modal_projector(enc(input_features, attention_mask=mask).last_hidden_state)
    return feats[torch.arange(feats.shape[1])[None] < tok_len[:, None]]


def test_audio_encoded_over_the_clip_equals_the_full_window(tiny):
    """The trimmed encoder gives Qwen2-Audio's own features (full 3000-style window) for clips of odd
    and even frame counts, one that fills the window, and a batch mixing them."""
    model, processor = tiny
    core = model.model
    sr = processor.feature_extractor.sampling_rate
    rng = np.random.default_rng(5)
    clips = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (int(0.31 * sr), int(0.5 * sr) + 160,
                                                                        int(1.27 * sr), 2 * sr)]
    feats = processor.feature_extractor(clips, sampling_rate=sr, return_attention_mask=True, padding="max_length",
                                        return_tensors="pt")
    x, fmask = feats["input_features"], feats["attention_mask"]
    assert len({int(n) % 2 for n in fmask.sum(-1)}) == 2 and int(fmask.sum(-1).max()) == x.shape[-1]
    with torch.no_grad():
        ours = FAMILY.encode_audio(core, x, fmask)
        full = encode_audio_window(core, x, fmask)
    tok_len = core.audio_tower._get_feat_extract_output_lengths(fmask.sum(-1))[1]
    assert ours.shape == full.shape == (int(tok_len.sum()), model.config.text_config.hidden_size)
    assert rel_err(ours, full) < 1e-5
    for i, clip in enumerate(clips):  # alone = in the batch: the trimming follows each batch's longest clip
        one = processor.feature_extractor([clip], sampling_rate=sr, return_attention_mask=True, padding="max_length",
                                          return_tensors="pt")
        with torch.no_grad():
            alone = FAMILY.encode_audio(core, one["input_features"], one["attention_mask"])
        start = int(tok_len[:i].sum())
        assert rel_err(alone, ours[start:start + int(tok_len[i])]) < 1e-5


def test_weights_are_read_only_inside_module_calls(tiny):
    """DeepSpeed ZeRO-3 fetches a weight read outside its module's call for the enclosing module, and
    never releases it: the next rollout's re-partitioning fails ("Cannot free a ZeRO-3 parameter while
    it is still active"; seen on an H100 and with DeepSpeed's CPU backend). The shared paths read no
    weight outside a module call; the recorder does catch such a read."""
    model, processor = tiny
    _, inputs = batch(processor)
    depth, outside = [0], []

    class Recording(dict):
        def __getitem__(self, name):
            if depth[0] == 0:
                outside.append(name)
            return super().__getitem__(name)

    for m in model.modules():
        m._parameters = Recording(m._parameters)
    pre = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: depth.__setitem__(0, depth[0] + 1))
    post = torch.nn.modules.module.register_module_forward_hook(lambda *a: depth.__setitem__(0, depth[0] - 1))
    try:
        ids = rollout(model, inputs, G, do_sample=False, max_new_tokens=3,
                             suppress_tokens=structural_token_ids(processor))
        mask = completion_mask(ids, eos_ids(model))
        completion_logprobs(model, inputs, ids, mask, G).sum().backward()
        assert outside == []
        _ = model.model.audio_tower.conv1.weight.dtype  # positive control
        assert outside == ["weight"]
    finally:
        pre.remove()
        post.remove()


def test_shared_prompt_under_gradient_checkpointing_matches_unshared(tiny):
    """With gradient checkpointing (no cache) the audio is still encoded once and the numbers agree."""
    model, processor = tiny
    _, inputs = batch(processor)
    ids = sampled(model, processor, inputs)
    mask = completion_mask(ids, eos_ids(model))
    model.train()
    grads = {}
    for share in (True, False):
        model.activation_checkpointing_enable() if share else model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        logp = completion_logprobs(model, inputs, ids, mask, G, share_prompt=share)
        (logp * mask).sum().backward()
        grads[share] = (logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.model.language_model.gradient_checkpointing is False
    (lp_s, g_s), (lp_u, g_u) = grads[True], grads[False]
    assert rel_err(lp_s, lp_u) < 1e-5
    assert g_s.keys() == g_u.keys()
    assert max(rel_err(g_s[n], g_u[n]) for n in g_s if "audio_tower" in n) < 1e-4


def test_completion_logprobs_equal_generate_logits(tiny):
    """log p of each sampled token = log_softmax(raw logit / T) that generate sampled it from."""
    model, processor = tiny
    _, inputs = batch(processor)
    rep = {k: v.repeat_interleave(G, 0) for k, v in inputs.items()}
    P, temperature = inputs["input_ids"].shape[1], 0.7
    torch.manual_seed(3)
    out = model.generate(**rep, do_sample=True, temperature=temperature, top_k=0, max_new_tokens=6,
                         suppress_tokens=structural_token_ids(processor), output_logits=True,
                         return_dict_in_generate=True)
    ids = out.sequences[:, P:]
    raw = torch.stack(out.logits, 1).float() / temperature  # logits before any processor
    expected = raw.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask(ids, eos_ids(model)).bool()
    for share in (True, False):
        with torch.no_grad():
            logp = completion_logprobs(model, inputs, ids, mask.long(), G, temperature, share_prompt=share)
        assert torch.allclose(logp[mask], expected[mask], atol=1e-5, rtol=1e-5), share


def test_shared_rollout_generates_what_unshared_generates(tiny):
    model, processor = tiny
    _, inputs = batch(processor)
    kw = dict(max_new_tokens=8, suppress_tokens=structural_token_ids(processor))
    greedy = {s: rollout(model, inputs, G, share_prompt=s, do_sample=False, **kw) for s in (True, False)}
    assert greedy[True].shape == (3 * G, 8)
    assert torch.equal(greedy[True], greedy[False])
    assert torch.equal(greedy[True][0::G], greedy[True][G - 1::G])  # greedy: the G rows of a group agree
    sampling = {}
    for s in (True, False):
        torch.manual_seed(11)
        sampling[s] = rollout(model, inputs, G, share_prompt=s, do_sample=True, top_k=0, **kw)
    assert torch.equal(sampling[True], sampling[False])
    assert not torch.equal(sampling[True], greedy[True])


@pytest.mark.parametrize("settings", [dict(top_k=5, temperature=0.7), dict(top_p=0.8, min_new_tokens=8)])
def test_shared_rollout_samples_what_generate_samples_under_its_settings(tiny, monkeypatch, settings):
    """Decoding from the shared prefill keeps every sampling setting ``generate`` applies, those passed (top-k,
    temperature, top-p, min_new_tokens) and those from the model's generation_config (a repetition penalty, which
    reads every row's prompt and completion so far): for a seed the tokens of the unshared rollout."""
    model, processor = tiny
    _, inputs = batch(processor)
    kw = dict(max_new_tokens=8, suppress_tokens=structural_token_ids(processor), do_sample=True, **settings)

    def both():
        out = {}
        for s in (True, False):
            torch.manual_seed(5)
            out[s] = rollout(model, inputs, G, share_prompt=s, **kw)
        assert torch.equal(out[True], out[False])
        return out[True]

    plain = both()
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 3.0)
    penalised = both()
    assert not torch.equal(plain, penalised)  # the generation_config's setting is applied
    if "min_new_tokens" in settings:
        assert penalised.shape == (3 * G, 8)


def test_shared_rollout_for_one_prompt_and_g_one(tiny):
    model, processor = tiny
    _, inputs = batch(processor, lengths=((1.0, 4),))
    a = rollout(model, inputs, 1, share_prompt=True, do_sample=False, max_new_tokens=5)
    b = rollout(model, inputs, 1, share_prompt=False, do_sample=False, max_new_tokens=5)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ masks and positions


def test_completion_mask_keeps_up_to_and_including_first_eos():
    E, F, x = 9, 8, 5  # two EOS ids
    ids = torch.tensor([[x, x, E, x, E],
                        [x, x, x, x, x],
                        [E, x, x, x, x],
                        [x, F, E, x, x],
                        [x, x, x, x, F]])
    assert completion_mask(ids, [E, F]).tolist() == [[1, 1, 1, 0, 0],
                                                           [1, 1, 1, 1, 1],
                                                           [1, 0, 0, 0, 0],
                                                           [1, 1, 0, 0, 0],
                                                           [1, 1, 1, 1, 1]]


def test_position_ids_follow_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 0, 2]]


# ------------------------------------------------------------------ structural tokens


def favour(model, token_id: int, bias: float = 50.0) -> None:
    """Give the head a bias towards one token so that a policy reaches for it at once."""
    head = model.lm_head
    new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(head.weight)
        new.bias.zero_()
        new.bias[token_id] = bias
    model.lm_head = new


def test_rollout_never_samples_structural_tokens(tiny):
    model, processor = tiny
    audio_id = model.config.audio_token_id
    favour(model, audio_id)
    structural = structural_token_ids(processor)
    assert audio_id in structural and processor.tokenizer.convert_tokens_to_ids("<|im_start|>") in structural
    _, inputs = batch(processor)
    unguarded = rollout(model, inputs, G, do_sample=True, max_new_tokens=4)
    assert (unguarded == audio_id).any()  # the head does favour <|AUDIO|> ...
    rep = {k: v.repeat_interleave(G, 0) for k, v in inputs.items()}
    ids = torch.cat([rep["input_ids"], unguarded], 1)
    with pytest.raises(Exception, match="Audio features and audio tokens do not match"):
        model(input_ids=ids, attention_mask=torch.cat([rep["attention_mask"], torch.ones_like(unguarded)], 1),
              input_features=rep["input_features"], feature_attention_mask=rep["feature_attention_mask"])
        # ... and such a sample breaks the (unshared) forward
    torch.manual_seed(0)
    ids = rollout(model, inputs, G, do_sample=True, max_new_tokens=6, suppress_tokens=structural)
    assert not torch.isin(ids, torch.tensor(structural)).any()
    mask = completion_mask(ids, eos_ids(model))
    model.train()
    for share in (True, False):  # a GRPO-style update on these completions runs
        logp = completion_logprobs(model, inputs, ids, mask, G, share_prompt=share)
        loss, _ = grpo.grpo_loss(logp, logp.detach(), None, torch.randn(ids.shape[0]), mask, beta=0.0)
        loss.backward()
        assert torch.isfinite(logp).all()
    again = rollout(model, inputs, G, do_sample=False, max_new_tokens=3, suppress_tokens=structural)
    assert not torch.isin(again, torch.tensor(structural)).any()


# ------------------------------------------------------------------ stopping after </answer>


def test_stop_after_text_looks_only_at_the_completion(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    _, inputs = batch(processor)
    P = inputs["input_ids"].shape[1]
    assert "</answer>" in tok.decode(inputs["input_ids"][0])  # the prompt itself asks for <answer> </answer>
    crit = StopAfterText(tok, P, "</answer>")
    prompt = inputs["input_ids"]
    w, close = tok.convert_tokens_to_ids("w5"), tok.convert_tokens_to_ids("</answer>")
    assert crit(prompt, None).tolist() == [False] * 3  # no completion yet
    more = torch.tensor([[w, w], [w, close], [close, w]])
    assert crit(torch.cat([prompt, more], 1), None).tolist() == [False, True, True]

    favour(model, w, bias=30.0)  # greedy writes "w5 w5 ..." and never </answer>
    ids = HFEngine().answer(FAMILY, model, inputs, tok, "</answer>", max_new_tokens=6)
    assert ids.shape[1] == 6 and (ids == w).all()  # not stopped by the prompt's own </answer>
    favour(model, close, bias=60.0)
    ids = HFEngine().answer(FAMILY, model, inputs, tok, "</answer>", max_new_tokens=6)
    assert ids.shape[1] == 1 and (ids == close).all()


# ------------------------------------------------------------------ choosing the family


def test_family_comes_from_model_type_or_config(tiny_dir, tmp_path):
    from r1aqa_pl.models import FAMILIES, family_for

    assert family_for(tiny_dir) is FAMILIES["qwen2_audio"]
    assert family_for("ignored", "qwen2_audio") is FAMILIES["qwen2_audio"]
    with pytest.raises(ValueError, match="unknown policy family 'nope'; known: qwen2_audio"):
        family_for(tiny_dir, "nope")
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ValueError,
                       match=r"model_type 'whisper' has no policy family; known: qwen2_audio \(qwen2_audio\)"):
        family_for(str(tmp_path))


@pytest.mark.parametrize("family", ["qwen2_audio", "qwen2_5_omni", "audio_flamingo3", "phi4_multimodal"])
def test_tiny_init_std_reaches_every_sub_model(tmp_path, family):
    """``init_std`` sets the initial weight scale of the language model and the audio encoder alike (the demo's
    0.125 ≈ 1/sqrt(64)); without it the config's 0.02 stays. Measured on the q and k (or fused qkv)
    projections, outside the image encoders (never run for audio; Phi-4's SigLIP draws its own at std 1)."""

    def stds(folder):
        model, _, _ = load_policy(folder)
        return {
            n: p.std().item()
            for n, p in model.named_parameters()
            if n.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight"))
            and "image" not in n
            and "visual" not in n
        }

    default = stds(build_tiny_model(str(tmp_path / "default"), family=family))
    wide = stds(build_tiny_model(str(tmp_path / "wide"), family=family, init_std=0.125))
    assert any("audio" in n or "encoder" in n for n in wide) and any("layers" in n and "audio" not in n for n in wide)
    assert all(0.015 < v < 0.025 for v in default.values()), default
    assert all(0.10 < v < 0.15 for v in wide.values()), wide
