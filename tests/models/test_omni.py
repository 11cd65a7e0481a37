"""The Omni thinker families on their tiny random policies: the shared computation (r1aqa_pl.algo.logprobs,
the hf rollout engine) equals the thinker's own forward and generate, its multimodal rotary positions
included; the vision tower stays frozen; structural tokens are never sampled; the export and a whole
Omni checkpoint folder load with the thinker class and score the same.

Prompts of different audio and question lengths (left padding), G = 3 completions each.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from r1aqa_pl.algo import logprobs
from r1aqa_pl.algo import losses as grpo
from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.models import FAMILIES, build_tiny_model, load_policy
from r1aqa_pl.models.base import position_ids
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.task.question import Question

WORDS = [f"w{i}" for i in range(40)]
G = 3
OMNI = ["qwen2_5_omni", "qwen3_omni"]
# the whole Omni checkpoint of each family: its config class and the parts beside the thinker
FULL = {"qwen2_5_omni": ("Qwen2_5OmniConfig", "token2wav"), "qwen3_omni": ("Qwen3OmniMoeConfig", "code2wav")}


# 1 s audio windows instead of the tiny builds' (the hub's) 2 s chunks / 8 s attention windows, so that the test
# clips (0.6, 1.3 and 2 s) span one or two windows: the encoder's chunking is exercised, as 30 s clips would
SHORT_WINDOWS = {"qwen2_5_omni": {"n_window": 50}, "qwen3_omni": {"n_window_infer": 100}}


@pytest.fixture(scope="module", params=OMNI)
def tiny_dir(request, tmp_path_factory) -> tuple[str, str]:
    name = request.param
    d = build_tiny_model(str(tmp_path_factory.mktemp(name)), family=name, words=WORDS, seed=0)
    config = json.loads((Path(d) / "config.json").read_text())
    config["audio_config"].update(SHORT_WINDOWS[name])
    (Path(d) / "config.json").write_text(json.dumps(config))
    return name, d


@pytest.fixture()
def tiny(tiny_dir):
    """A fresh (model, processor, family) per test: some tests rewrite the head."""
    name, d = tiny_dir
    model, processor, family = load_policy(d)
    assert family is FAMILIES[name]  # from the folder's config.model_type
    return model.eval(), processor, family


def batch(family, processor, lengths=((0.6, 2), (2.0, 9), (1.3, 5)), with_audio=True):
    """Prompts with different audio seconds and question words: rows need left padding."""
    rng = np.random.default_rng(0)
    sr = processor.feature_extractor.sampling_rate
    qs = [Question(id=str(i), audio_path=None, question=" ".join(WORDS[3:3 + n]), choices=["w1", "w2"], answer="w1")
          for i, (_, n) in enumerate(lengths)]
    audio = [0.1 * rng.standard_normal(int(s * sr)).astype(np.float32) for s, _ in lengths]
    inputs = family.encode(processor, qs, audio, with_audio=with_audio)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == len(lengths)  # really different lengths
    assert len(lengths) == 1 or (inputs["attention_mask"][:, 0] == 0).any()  # left padding
    return inputs


def eos_ids(model) -> list[int]:
    e = model.generation_config.eos_token_id
    return [e] if isinstance(e, int) else list(e)


def sample(family, model, processor, inputs, share=True, T=7, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"do_sample": True, "suppress_tokens": family.structural_token_ids(processor), **kw}
    return HFEngine().sample(family, model, inputs, G, share_prompt=share, max_new_tokens=T, **kw)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def worst_grad_err(g_s: dict, g_u: dict, names) -> float:
    """Largest per-tensor relative error, over tensors whose gradient is above rounding (a key bias's is 0)."""
    scale = max(float(g.abs().max()) for g in g_u.values())
    return max(rel_err(g_s[n], g_u[n]) for n in names if g_u[n].abs().max() > 1e-6 * scale)


def score(family, model, inputs, ids, share=True):
    with torch.no_grad():
        return logprobs.completion_logprobs(family, model, inputs, ids, completion_mask(ids, eos_ids(model)), G,
                                            share_prompt=share)


# ------------------------------------------------------------------ shared == the thinker's own


def encoder_names(model, family) -> list[str]:
    """Parameter names of the audio encoder, wherever the family keeps it (Phi-4: inside the embeddings)."""
    enc = {id(p) for p in family.audio_encoder(model.model).parameters()}
    return [n for n, p in model.named_parameters() if id(p) in enc]


def test_shared_prompt_matches_unshared_logprobs_loss_and_gradients(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor)
    ids = sample(family, model, processor, inputs)
    ids[1, 2] = eos_ids(model)[0]  # one completion ends early: padding inside the completions too
    mask = completion_mask(ids, eos_ids(model))
    gen = torch.Generator().manual_seed(1)
    A, ref_logp = torch.randn(ids.shape[0], generator=gen), -torch.rand(ids.shape, generator=gen) * 3
    model.train()
    results = {}
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        logp = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, temperature=0.9, share_prompt=share)
        loss, _ = grpo.grpo_loss(logp, logp.detach(), ref_logp, A, mask, beta=0.04)
        loss.backward()
        results[share] = logp.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                       if p.grad is not None}
    (lp_s, loss_s, g_s), (lp_u, loss_u, g_u) = results[True], results[False]
    assert rel_err(lp_s, lp_u) < 1e-5
    assert abs(float(loss_s - loss_u)) <= 1e-5 * abs(float(loss_u))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert g_s.keys() == g_u.keys() == trainable
    assert not any(n.startswith("model.visual.") for n in trainable)  # a vision tower is frozen
    encoder = [n for n in encoder_names(model, family) if n in trainable]
    assert encoder and any(g_s[n].abs().max() > 0 for n in encoder)  # the gradient reaches the audio encoder
    scale = max(float(g.abs().max()) for g in g_u.values())
    assert max(float((g_s[n] - g_u[n]).abs().max()) for n in g_s) <= 1e-5 * scale
    assert worst_grad_err(g_s, g_u, [*encoder, "lm_head.weight"]) < 1e-4  # per tensor too


def test_shared_prompt_under_gradient_checkpointing_matches_unshared(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor)
    ids = sample(family, model, processor, inputs)
    mask = completion_mask(ids, eos_ids(model))
    model.train()
    out = {}
    for share in (True, False):
        model.activation_checkpointing_enable() if share else model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        logp = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, share_prompt=share)
        (logp * mask).sum().backward()
        out[share] = logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    (lp_s, g_s), (lp_u, g_u) = out[True], out[False]
    assert rel_err(lp_s, lp_u) < 1e-5
    assert worst_grad_err(g_s, g_u, [n for n in encoder_names(model, family) if n in g_u]) < 1e-4


def test_prompt_embeddings_and_positions_equal_the_thinkers_own(tiny):
    """What the thinker's own forward hands its language model (embeddings with the audio merged, and the
    three rows of rotary positions from get_rope_index) = the family's prompt_embeds and positions."""
    model, processor, family = tiny
    inputs = batch(family, processor)
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(kwargs), with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    ours = family.prompt_embeds(model.model, inputs)
    assert torch.equal(ours, seen["inputs_embeds"])
    mask = inputs["attention_mask"].bool()
    own = seen["position_ids"]
    assert own.shape == (3, *mask.shape)
    for row in own:  # time, height and width rows: the text position on every token, audio included
        assert torch.equal(row, family.position_ids(inputs["attention_mask"]))
        assert torch.equal(row[mask], position_ids(inputs["attention_mask"])[mask])
    assert not model.model.rope_deltas.any()  # generate's decoding positions continue without a jump


def test_mel_features_over_the_longest_clip_are_the_processors_own(tiny):
    """The family asks the feature extractor for the batch's longest clip (plus one STFT window) instead of the
    whole window the Qwen2.5-Omni processor pads to: token ids, each clip's frames and the audio encoder's output
    are the processor's own bit for bit, with fewer frames; a clip beyond the window is cut as the processor cuts
    it. (Qwen3-Omni's processor already pads to the longest clip: nothing changes.)"""
    import copy

    model, processor, family = tiny
    own = copy.copy(family)
    own.audio_kwargs = lambda *a: {}
    core = family.backbone(model)[0]
    window = processor.feature_extractor.nb_max_frames
    for lengths in (((0.6013, 2), (1.2011, 9), (0.93, 5)), ((0.6013, 2), (2.5, 9), (1.3, 5))):
        ours, theirs = batch(family, processor, lengths), batch(own, processor, lengths)
        for k in ("input_ids", "attention_mask"):
            assert torch.equal(ours[k], theirs[k]), k
        F = ours["input_features"].shape[-1]
        assert torch.equal(ours["feature_attention_mask"], theirs["feature_attention_mask"][:, :F])
        assert int(theirs["feature_attention_mask"][:, F:].sum()) == 0
        for i, n in enumerate(ours["feature_attention_mask"].sum(-1).tolist()):
            assert torch.equal(ours["input_features"][i, :, :n], theirs["input_features"][i, :, :n]), i
        with torch.no_grad():
            assert torch.equal(family.prompt_embeds(core, ours), family.prompt_embeds(core, theirs))
        longest = max(s for s, _ in lengths) * processor.feature_extractor.sampling_rate
        if family.name == "qwen2_5_omni" and longest < processor.feature_extractor.n_samples:
            assert F < window and theirs["input_features"].shape[-1] == window
        else:
            assert F == theirs["input_features"].shape[-1]


def test_audio_windows_attended_together_give_the_encoders_own_numbers(tiny, monkeypatch):
    """The family's encoder call (the windows of one length in one attention call) gives the encoder's own
    per-window calls' output bit for bit, and the same gradients; the test clips span windows of several lengths."""
    import torch.nn.functional as F

    model, processor, family = tiny
    inputs = batch(family, processor)
    core = family.backbone(model)[0]
    feats, fmask = inputs["input_features"], inputs["feature_attention_mask"]
    calls, real = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ours = family.encode_audio(core, feats, fmask)
    n_ours = len(calls)
    theirs = core.get_audio_features(feats, fmask).last_hidden_state
    n_theirs = len(calls) - n_ours
    assert torch.equal(ours, theirs)
    layers = len(family.audio_encoder(core).layers)
    assert n_theirs > n_ours >= layers  # per window vs per window length
    w = torch.randn(ours.shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in family.audio_encoder(core).parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad((ours * w).sum(), params), torch.autograd.grad((theirs * w).sum(), params)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_completion_logprobs_equal_generate_logits(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor)
    rep = {k: v.repeat_interleave(G, 0) for k, v in inputs.items()}
    P, temperature = inputs["input_ids"].shape[1], 0.7
    torch.manual_seed(3)
    out = model.generate(**rep, do_sample=True, temperature=temperature, top_k=0, max_new_tokens=6,
                         suppress_tokens=family.structural_token_ids(processor), output_logits=True,
                         return_dict_in_generate=True)
    ids = out.sequences[:, P:]
    expected = (torch.stack(out.logits, 1).float() / temperature).log_softmax(-1)
    expected = expected.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    mask = completion_mask(ids, eos_ids(model)).bool()
    for share in (True, False):
        with torch.no_grad():
            logp = logprobs.completion_logprobs(family, model, inputs, ids, mask.long(), G, temperature, share)
        assert torch.allclose(logp[mask], expected[mask], atol=1e-5, rtol=1e-5), share


def test_shared_rollout_generates_what_unshared_generates(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor)
    greedy = {s: sample(family, model, processor, inputs, s, T=8, do_sample=False) for s in (True, False)}
    assert greedy[True].shape == (3 * G, 8)
    assert torch.equal(greedy[True], greedy[False])
    sampled = {s: sample(family, model, processor, inputs, s, T=8, seed=11, top_k=0) for s in (True, False)}
    assert torch.equal(sampled[True], sampled[False])
    # a batch of another size in between (evaluation: G = 1) leaves no stale rotary state behind
    one = batch(family, processor, lengths=((1.0, 4),))
    HFEngine().sample(family, model, one, 1, share_prompt=False, do_sample=False, max_new_tokens=3)
    assert torch.equal(sample(family, model, processor, inputs, True, T=8, do_sample=False), greedy[True])


def test_audio_free_ablation_scores_the_same_both_ways(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor, with_audio=False)
    assert "input_features" not in inputs
    assert family.audio_inputs(inputs) == {}
    ids = sample(family, model, processor, inputs, T=5)
    assert rel_err(score(family, model, inputs, ids, True), score(family, model, inputs, ids, False)) < 1e-5


def test_system_prompt_and_audio_placeholders_in_the_prompt(tiny):
    _, processor, family = tiny
    q = Question(id="q", audio_path="a.wav", question="w3", choices=["w1", "w2"], answer="w1")
    text = family.render(processor, q)
    system = "<|im_start|>system\n" + family.system_prompt + "<|im_end|>\n" if family.system_prompt else ""
    assert text.startswith(system + "<|im_start|>user\n")
    assert processor.audio_bos_token + processor.audio_token + processor.audio_eos_token + "w3" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert processor.audio_token not in family.render(processor, q, with_audio=False)


# ------------------------------------------------------------------ structural tokens


def test_rollout_never_samples_structural_tokens(tiny):
    model, processor, family = tiny
    audio_id = model.config.audio_token_id
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[audio_id] = 50.0
    model.lm_head = biased
    structural = family.structural_token_ids(processor)
    tok = processor.tokenizer
    assert {audio_id, model.config.image_token_id, model.config.video_token_id,
            tok.convert_tokens_to_ids("<|im_start|>")} <= set(structural)
    inputs = batch(family, processor)
    assert (sample(family, model, processor, inputs, suppress_tokens=None, T=4) == audio_id).any()  # it does favour it
    ids = sample(family, model, processor, inputs, T=6)
    assert not torch.isin(ids, torch.tensor(structural)).any()
    mask = completion_mask(ids, eos_ids(model))
    model.train()
    for share in (True, False):  # a GRPO update on these completions runs
        logp = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, share_prompt=share)
        loss, _ = grpo.grpo_loss(logp, logp.detach(), None, torch.randn(ids.shape[0]), mask, beta=0.0)
        loss.backward()
        assert torch.isfinite(logp).all()


# ------------------------------------------------------------------ loading and export


def test_export_loads_with_the_thinker_class_and_scores_the_same(tiny_dir, tmp_path):
    from r1aqa_pl.training.grpo_module import GRPOModule

    name, d = tiny_dir
    module = GRPOModule(d, sampling=dict(G=G), loss={"class_path": "grpo", "init_args": {"beta": 0.0}})
    module.configure_model()
    with torch.no_grad():  # a trained policy differs from its starting point
        module.policy.lm_head.weight.mul_(1.5)
    module.export_hf(str(tmp_path / "export"))
    family = FAMILIES[name]
    back = family.model_class().from_pretrained(str(tmp_path / "export")).eval()
    model = module.policy.eval()
    inputs = batch(family, module.processor)
    ids = sample(family, model, module.processor, inputs, T=5)
    assert torch.equal(score(family, back, inputs, ids), score(family, model, inputs, ids))
    assert load_policy(str(tmp_path / "export"))[2] is family


def test_whole_omni_checkpoint_folder_loads_only_the_thinker(tiny_dir, tmp_path):
    """A full Omni folder (thinker + talker + token2wav tensors, model_type qwen2_5_omni): the thinker's config
    and ``thinker.*`` tensors are read, nothing else is built."""
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    name, d = tiny_dir
    config_class, speech = FULL[name]
    full = tmp_path / "omni"
    full.mkdir()
    thinker_config = AutoConfig.from_pretrained(d)
    getattr(transformers, config_class)(thinker_config=thinker_config.to_dict()).save_pretrained(full)
    weights = {f"thinker.{k}": v for k, v in load_file(f"{d}/model.safetensors").items()}
    weights["talker.model.embed_tokens.weight"] = torch.zeros(3, 2)
    weights[f"{speech}.x"] = torch.zeros(2)
    save_file(weights, str(full / "model.safetensors"), metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja",
              "generation_config.json"):
        (full / f).write_bytes((tmp_path / d / f).read_bytes())  # d is absolute: the folder itself
    assert json.loads((full / "config.json").read_text())["model_type"] == FAMILIES[name].full_model_type
    model, processor, family = load_policy(str(full))
    assert family is FAMILIES[name] and type(model).__name__ == family.model_class().__name__
    assert not any(n.startswith(("talker", speech)) for n, _ in model.named_parameters())
    ref, _, _ = load_policy(d)
    inputs = batch(family, processor)
    ids = sample(family, ref.eval(), processor, inputs, T=5)
    assert torch.equal(score(family, model.eval(), inputs, ids), score(family, ref, inputs, ids))
    assert family.arch(AutoConfig.from_pretrained(str(full))) == family.arch(thinker_config)


# ------------------------------------------------------------------ memory estimate


def components(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, p in model.named_parameters():
        key = n.split(".")[1] if n.startswith("model.") else n.split(".")[0]
        out[key] = out.get(key, 0) + p.numel()
    return out


def test_arch_counts_the_real_tensors(tiny):
    model, _, family = tiny
    assert family.arch(model.config).params() == components(model)


def test_memory_rows_are_the_hub_geometries():
    """The 7B row's parameter count = a real thinker of that geometry, built on the meta device."""
    from transformers import Qwen2_5OmniThinkerConfig

    from r1aqa_pl.models.sizes import QWEN2_5_OMNI_7B

    family = FAMILIES["qwen2_5_omni"]
    with torch.device("meta"):
        model = family.model_class()(Qwen2_5OmniThinkerConfig(vision_config={"hidden_size": 1280}))
    assert family.arch(model.config) == QWEN2_5_OMNI_7B
    assert QWEN2_5_OMNI_7B.params() == components(model)
    assert 8.9e9 < sum(QWEN2_5_OMNI_7B.params().values()) < 9.0e9


def test_memory_row_of_qwen3_omni_30b_a3b():
    """All 128 experts of every layer count as resident weights; 31.7 B parameters in the thinker."""
    from transformers import Qwen3OmniMoeThinkerConfig

    from r1aqa_pl.models.sizes import QWEN3_OMNI_30B_A3B, QWEN3_OMNI_30B_A3B_GEOMETRY

    family = FAMILIES["qwen3_omni"]
    with torch.device("meta"):
        model = family.model_class()(Qwen3OmniMoeThinkerConfig(**QWEN3_OMNI_30B_A3B_GEOMETRY))
    assert family.arch(model.config) == QWEN3_OMNI_30B_A3B
    assert QWEN3_OMNI_30B_A3B.params() == components(model)
    assert 31.7e9 < sum(QWEN3_OMNI_30B_A3B.params().values()) < 31.8e9
    assert QWEN3_OMNI_30B_A3B.intermediate == 8 * 768  # activations: the 8 experts a token runs


# ------------------------------------------------------------------ mixture of experts


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("moe")), family="qwen3_omni", words=WORDS, seed=0)


def test_router_aux_loss_is_transformers_own_and_reaches_the_routers(tiny_moe):
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        load_balancing_loss_func,
    )

    model, processor, family = load_policy(tiny_moe)
    model.train()  # the routers route in training mode as in evaluation (no noise, no capacity drop)
    inputs = batch(family, processor)
    with family.collect_router_logits(model) as routed:
        out = model(**inputs, output_router_logits=True)
    assert len(routed) == len(family.routers(model)) == model.config.text_config.num_hidden_layers
    t = model.config.text_config
    ours = family.router_aux_loss(model, routed)
    assert torch.allclose(ours, load_balancing_loss_func(out.router_logits, t.num_experts, t.num_experts_per_tok))
    k = t.num_experts_per_tok  # num_experts · Σ_e (share of top-k slots) · (mean router probability): k if balanced
    assert 0.5 * k < float(ours) < 2 * k
    ours.backward()
    assert all(r.weight.grad is not None and r.weight.grad.abs().max() > 0 for r in family.routers(model))


def test_router_aux_loss_knob(tiny_moe, synth_dir, tmp_path):
    """Off by default; on, it is logged and trains; a dense family refuses it with a named error."""
    from helpers import datamodule, fit

    from r1aqa_pl.training.grpo_module import GRPOModule

    with pytest.raises(ValueError, match="qwen2_5_omni has no experts"):
        dense = build_tiny_model(str(tmp_path / "dense"), family="qwen2_5_omni", words=WORDS)
        GRPOModule(dense, optimization=dict(router_aux_loss_coef=0.01)).configure_model()
    assert GRPOModule(tiny_moe).optimization.router_aux_loss_coef == 0.0
    module = GRPOModule(
        tiny_moe,
        sampling=dict(G=2, max_new_tokens=4),
        optimization=dict(router_aux_loss_coef=0.01),
        loss={"class_path": "grpo", "init_args": {"beta": 0.0}},
    )
    trainer = fit(module, datamodule(synth_dir, tiny_moe), steps=1)
    assert 0 < float(trainer.callback_metrics["train/router_aux_loss"]) < 4  # top-2: 2 when balanced


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "overlay, checks",
    [
        (
            "configs/grpo_qwen2_5_omni.yaml",
            {
                "model_name_or_path": "Qwen/Qwen2.5-Omni-7B",
                "rewards": ["accuracy"],
                "beta": 0.04,
                "router_aux_loss_coef": 0.0,
            },
        ),
        (
            "configs/grpo_qwen3_omni.yaml",
            {
                "model_name_or_path": "Qwen/Qwen3-Omni-30B-A3B-Instruct",
                "beta": 0.0,
                "gradient_checkpointing": True,
                "router_aux_loss_coef": 0.0,
            },
        ),
    ],
)
def test_omni_configs_resolve_on_the_paper_config(overlay, checks):
    """``fit --print_config`` of the paper's config + the overlay resolves (no weights are loaded)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "r1aqa_pl",
            "fit",
            "--config",
            "configs/grpo.yaml",
            "--config",
            overlay,
            "--print_config",
        ],
        check=False,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("[20")))
    model = cfg["model"]["init_args"]
    m = {
        **model["policy"],
        **model["sampling"],
        **model["optimization"],
        **model["loss"]["init_args"],
        "rewards": model["rewards"],
    }
    assert {k: m[k] for k in checks} == checks
    assert cfg["trainer"]["devices"] == 8 and m["G"] == 8 and m["lr"] == 1e-6  # the rest is the paper's


def test_lora_targets_only_the_language_model(tiny_dir):
    """LoRA adapters on the LM's projections only: none on the audio or vision encoders (their q/k/v too)."""
    name, d = tiny_dir
    model, processor, family = load_policy(d, lora={"r": 4, "lora_alpha": 8})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    wanted = {"q_proj", "k_proj", "v_proj", "o_proj"} | (
        {"gate_proj", "up_proj", "down_proj"} if name == "qwen2_5_omni" else set()
    )
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == wanted
    inputs = batch(family, processor)
    ids = sample(family, model.eval(), processor, inputs, T=5)
    assert rel_err(score(family, model, inputs, ids, True), score(family, model, inputs, ids, False)) < 1e-5
