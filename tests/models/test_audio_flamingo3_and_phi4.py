"""Audio Flamingo 3 and Phi-4-multimodal on their tiny random policies: the family-free tests of the Omni
families (``test_family_qwen2_5_omni``: shared = unshared log-probs, loss and gradients, rollouts, the
audio-free ablation, export, parameter counts) run here on these families' own fixture, plus the prompt
embeddings and positions against the model's own, log-probs against ``generate``'s logits, structural
tokens and LoRA targets; then what is Audio Flamingo 3's own: clips cut into several windows, its chat
template, the hub processor's windowing arithmetic, the memory rows and ZeRO-3.
"""

# ruff: noqa: F811 — the imported fixture ``tiny`` is an argument of this module's tests

import numpy as np
import pytest
import torch
from test_omni import (  # noqa: F401 — the fixture and the tests run here with this module's family
    WORDS,
    G,
    batch,
    components,
    encoder_names,
    eos_ids,
    rel_err,
    sample,
    score,
    test_arch_counts_the_real_tensors,
    test_audio_free_ablation_scores_the_same_both_ways,
    test_export_loads_with_the_thinker_class_and_scores_the_same,
    test_shared_prompt_matches_unshared_logprobs_loss_and_gradients,
    test_shared_prompt_under_gradient_checkpointing_matches_unshared,
    test_shared_rollout_generates_what_unshared_generates,
    tiny,
    worst_grad_err,
)

from r1aqa_pl.algo import logprobs
from r1aqa_pl.algo import losses as grpo
from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.models import FAMILIES, build_tiny_model, load_policy
from r1aqa_pl.models.audio_flamingo3 import tokens_per_window
from r1aqa_pl.models.sizes import AUDIO_FLAMINGO3_7B
from r1aqa_pl.task.question import Question

FAMILY_NAMES = ["audio_flamingo3", "phi4_multimodal"]
STRUCTURAL = {"audio_flamingo3": {"<sound>", "<|im_start|>"},
              "phi4_multimodal": {"<|audio|>", "<|image|>", "<|system|>", "<|user|>"}}
LORA_TARGETS = {"audio_flamingo3": 7, "phi4_multimodal": 4}  # adapted projections per decoder layer
# 0.6 s, 4.5 s (three 2 s windows, the last one partial) and 2.0 s (exactly one window)
MULTI = ((0.6, 2), (4.5, 9), (2.0, 5))


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def tiny_dir(request, tmp_path_factory) -> tuple[str, str]:
    name = request.param
    return name, build_tiny_model(str(tmp_path_factory.mktemp(name)), family=name, words=WORDS, seed=0)


@pytest.fixture(scope="module")
def af3_dir(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("af3")), family="audio_flamingo3", words=WORDS, seed=0)


@pytest.fixture()
def af3(af3_dir):
    model, processor, family = load_policy(af3_dir)
    return model.eval(), processor, family


# ------------------------------------------------------------------ both families


def test_prompt_embeddings_and_positions_equal_the_models_own(tiny):
    """What the model's own forward hands its first decoder layer = the family's prompt_embeds (AF3: the
    encoder over the clip vs over the padded windows, equal to rounding), at the positions ``generate`` makes."""
    model, processor, family = tiny
    inputs = batch(family, processor, MULTI)
    seen = {}
    first = family.language_model(model.model).layers[0]
    hook = first.register_forward_pre_hook(
        lambda mod, args, kwargs: None if seen else seen.update(h=args[0] if args else kwargs["hidden_states"],
                                                                pos=kwargs["position_ids"]), with_kwargs=True)
    with torch.no_grad():
        model.generate(**family.model_inputs(inputs), max_new_tokens=1, do_sample=False)
        ours = family.prompt_embeds(model.model, inputs)
    hook.remove()
    assert torch.allclose(ours, seen["h"], atol=1e-5, rtol=1e-5)
    slots = inputs["input_ids"] == processor.audio_token_id
    assert slots.any() and not torch.equal(ours[slots], model.model.get_input_embeddings()(inputs["input_ids"])[slots])
    mask = inputs["attention_mask"].bool()
    assert torch.equal(seen["pos"].expand_as(mask)[mask], family.position_ids(inputs["attention_mask"])[mask])


def test_windows_are_packed_per_prompt_and_unpacked_for_the_model(af3):
    model, processor, family = af3
    inputs = batch(family, processor, MULTI)
    assert inputs["input_features"].shape[:2] == (3, 3)  # [prompts, most windows of a clip, ...]
    assert inputs["input_features_mask"].sum(-1).tolist() == [[60, 0, 0], [200, 200, 50], [200, 0, 0]]
    slots = (inputs["input_ids"] == model.config.audio_token_id).sum(1)
    assert slots.tolist() == [15, 50 + 50 + 12, 50]  # per window: (n - 1) // 2 + 1, then (m - 2) // 2 + 1
    flat = family.model_inputs(inputs)
    assert flat["input_features"].shape[0] == 5  # the processor's layout: one row per real window
    assert tokens_per_window(flat["input_features_mask"].sum(-1)).tolist() == [15, 50, 50, 12, 50]


def test_multi_window_clips_shared_equals_unshared(af3):
    """Repeating and slicing by prompt keeps each clip's windows together: scores, gradients and greedy
    rollouts agree with the model's own forward and generate over the processor's window rows."""
    model, processor, family = af3
    inputs = batch(family, processor, MULTI)
    greedy = {s: sample(family, model, processor, inputs, s, T=6, do_sample=False) for s in (True, False)}
    assert torch.equal(greedy[True], greedy[False])
    ids = sample(family, model, processor, inputs, T=6)
    mask = completion_mask(ids, eos_ids(model))
    model.train()
    out = {}
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        logp = logprobs.completion_logprobs(family, model, inputs, ids, mask, G, share_prompt=share)
        grpo.grpo_loss(logp, logp.detach(), None, torch.linspace(-1, 1, ids.shape[0]), mask, beta=0.0)[0].backward()
        out[share] = logp.detach(), model.model.audio_tower.conv1.weight.grad.clone()
    assert rel_err(out[True][0], out[False][0]) < 1e-5
    assert out[True][1].abs().max() > 0 and rel_err(out[True][1], out[False][1]) < 1e-4


def test_completion_logprobs_equal_generate_logits(tiny):
    model, processor, family = tiny
    inputs = batch(family, processor, MULTI)
    rep = family.model_inputs({k: v.repeat_interleave(G, 0) for k, v in inputs.items()})
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


def test_prompt_through_the_chat_template(af3):
    _, processor, family = af3
    q = Question(id="q", audio_path="a.wav", question="w3", choices=["w1", "w2"], answer="w1")
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    plain = family.render(processor, q)
    assert plain.startswith(system + "<|im_start|>user\n<sound>w3 Please choose")
    assert plain.endswith("<answer> </answer>.<|im_end|>\n<|im_start|>assistant\n")
    think = family.render(processor, q, "think")
    assert "Output the thinking process in <think> </think> and final answer in <answer> </answer>." in think
    free = family.render(processor, q, with_audio=False)
    assert free == plain.replace("<sound>", "")


def test_hub_windowing_10s_and_60s():
    """The hub processor's geometry (30 s windows, 128 mel bins): 10 s → 250 tokens, 60 s → 2 × 750."""
    from transformers import AudioFlamingo3Processor, WhisperFeatureExtractor

    from r1aqa_pl.models.tiny import AUDIO_FLAMINGO3_CHAT_TEMPLATE, AUDIO_FLAMINGO3_SPECIAL, word_tokenizer

    processor = AudioFlamingo3Processor(WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
                                        word_tokenizer(AUDIO_FLAMINGO3_SPECIAL, pad_token="<|endoftext|>"),
                                        chat_template=AUDIO_FLAMINGO3_CHAT_TEMPLATE)
    family = FAMILIES["audio_flamingo3"]
    qs = [Question(id=str(i), audio_path=None, question="a", choices=["b", "c"], answer="b") for i in range(2)]
    inputs = family.encode(processor, qs, [np.zeros(10 * 16000, np.float32), np.zeros(60 * 16000, np.float32)])
    assert inputs["input_features"].shape == (2, 2, 128, 3000)
    assert inputs["input_features_mask"].sum(-1).tolist() == [[1000, 0], [3000, 3000]]
    sound = processor.tokenizer.convert_tokens_to_ids("<sound>")
    assert (inputs["input_ids"] == sound).sum(1).tolist() == [250, 1500]
    assert [family.windows(processor, s * 16000) for s in (10, 30, 31, 600, 700)] == [1, 1, 2, 20, 20]
    short = family.encode(processor, qs, [np.zeros(3 * 16000, np.float32), np.zeros(10 * 16000, np.float32)])
    assert short["input_features"].shape == (2, 1, 128, 3000)  # clips shorter than the window: still full windows


def test_rollout_never_samples_structural_tokens(tiny):
    model, processor, family = tiny
    sound = processor.audio_token_id
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[sound] = 50.0
    model.lm_head = biased
    structural = family.structural_token_ids(processor)
    assert set(processor.tokenizer.convert_ids_to_tokens(structural)) == STRUCTURAL[family.name]
    inputs = batch(family, processor, MULTI)
    assert (sample(family, model, processor, inputs, suppress_tokens=None, T=4) == sound).any()  # it does favour it
    ids = sample(family, model, processor, inputs, T=6)
    assert not torch.isin(ids, torch.tensor(structural)).any()
    mask = completion_mask(ids, eos_ids(model))
    for share in (True, False):  # the next forward (an update on these completions) runs
        assert torch.isfinite(score(family, model, inputs, ids, share)[mask.bool()]).all()


def test_lora_adapts_only_the_language_model(tiny_dir):
    name, d = tiny_dir
    model, _, _ = load_policy(d, lora={"r": 4})
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted and not any("audio" in n or "embed_tokens_extend" in n for n in adapted)
    assert len(adapted) == 2 * LORA_TARGETS[name]  # every projection of both layers, none of the encoders'
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, _ in model.named_parameters()
                                                                          if "lora_" in n}


def test_memory_row_is_the_hub_geometry():
    """The 7B row = a real AF3 of that geometry, built on the meta device: 8.3 B parameters."""
    from transformers import AudioFlamingo3Config

    family = FAMILIES["audio_flamingo3"]
    g = AUDIO_FLAMINGO3_7B
    config = AudioFlamingo3Config(text_config={"model_type": "qwen2", "vocab_size": g.vocab, "hidden_size": g.hidden,
                                               "intermediate_size": g.intermediate, "num_hidden_layers": g.layers,
                                               "num_attention_heads": g.heads, "num_key_value_heads": g.kv_heads,
                                               "tie_word_embeddings": False})
    with torch.device("meta"):
        model = family.model_class()(config)
    assert family.arch(model.config) == g
    assert g.params() == components(model)
    assert 8.2e9 < sum(g.params().values()) < 8.3e9


def test_phi4_memory_row_is_the_hub_geometry():
    """The Phi-4-multimodal row = a real model of that geometry on the meta device (tied head): 4.74 B."""
    from transformers import Phi4MultimodalConfig

    from r1aqa_pl.models.sizes import PHI4_MULTIMODAL, PHI4_MULTIMODAL_GEOMETRY

    family = FAMILIES["phi4_multimodal"]
    with torch.device("meta"):
        model = family.model_class()(Phi4MultimodalConfig(**PHI4_MULTIMODAL_GEOMETRY))
    assert family.arch(model.config) == PHI4_MULTIMODAL
    assert PHI4_MULTIMODAL.params() == components(model)
    assert 4.7e9 < sum(PHI4_MULTIMODAL.params().values()) < 4.8e9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["audio_flamingo3", "qwen2_5_omni", "qwen3_omni", "phi4_multimodal"])
def test_grpo_under_zero3_on_the_cpu_matches_single_process(tmp_path_factory, name):
    """ZeRO-3 (DeepSpeed's CPU accelerator, gloo) on a family's demo policy, through ``test_scaleout``'s worker:
    the same rollouts, loss and gradient norm as without DeepSpeed, a validation, and an export that moved."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from r1aqa_pl.recipes.demo import prepare

    pytest.importorskip("deepspeed")
    root = tmp_path_factory.mktemp(f"{name}_demo_small")
    # the warm start hears the audio and the weights start at the hub's scale: after 20 warm steps some groups
    # then disagree, so two GRPO steps move the weights (a text-only warm start can leave every group tied)
    warm = prepare(out=str(root), family=name, n_train=48, n_test=24, warm_steps=20, warm_audio=True, init_std=None)
    repo = Path(__file__).resolve().parents[2]
    results = {}
    for engine in ("single", "z3"):
        out = root / engine
        proc = subprocess.run(
            [
                sys.executable,
                "tests/training/test_scaleout.py",
                "lightning_deepspeed",
                str(out),
                str(root),
                warm,
                engine,
            ],
            check=False,
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, engine + proc.stdout[-3000:] + proc.stderr[-6000:]
        results[engine] = json.loads((out / "result.json").read_text())
    single, z3 = results["single"]["steps"], results["z3"]["steps"]
    for step in ("1", "2"):
        assert z3[step]["train/reward"] == single[step]["train/reward"]
    for k in ("train/grad_norm", "train/loss", "train/kl"):
        assert z3["1"][k] == pytest.approx(single["1"][k], rel=1e-4, abs=1e-6), k
    assert "val/acc/total" in results["z3"]["val"]
    # rollouts and validation ran with every weight gathered but those of the modules they never run
    family = FAMILIES[name]
    idle = bool(family.idle_modules(family.model_class().from_pretrained(warm)))
    assert idle == (name != "audio_flamingo3")  # Omni: the vision encoder; Phi-4: the image encoder and projections
    for engine, gen in ((e, results[e]["generation"]) for e in ("single", "z3")):
        assert len(gen) >= 3 and all(g["empty_others"] == 0 for g in gen)  # 2 rollouts and a validation
        assert all((g["idle_numel"] > 0) == (idle and engine == "single") for g in gen), (engine, gen)
    start = family.model_class().from_pretrained(warm).state_dict()
    hf = family.model_class().from_pretrained(str(root / "z3" / "ckpt" / "step2_hf"))
    assert any(not torch.equal(v, start[k]) for k, v in hf.state_dict().items())


def test_phi4_speech_adapter_is_merged_at_load(tmp_path):
    """A folder laid out as the hub's (a peft adapter in ``speech-lora/``): loading merges the adapter (the
    model's own forward then gives what the base model with the adapter attached gives, not what the base alone
    gives), the weights stay trainable, and the export loads back to the same logits without applying it again."""
    from peft import LoraConfig, get_peft_model

    d = build_tiny_model(str(tmp_path / "phi4"), family="phi4_multimodal", words=WORDS, seed=0)
    base, processor, family = load_policy(d)
    assert not family.has_speech_adapter(d)
    torch.manual_seed(1)
    donor, _, _ = load_policy(d)
    adapted = get_peft_model(
        donor, LoraConfig(r=4, lora_alpha=8, target_modules=family.lora_target_modules, init_lora_weights=False)
    )  # random B: the adapter changes the output
    adapted.save_pretrained(str(tmp_path / "phi4" / "speech-lora"))
    inputs = family.model_inputs(batch(family, processor))
    with torch.no_grad():
        want, plain = adapted(**inputs).logits, base(**inputs).logits
    assert family.has_speech_adapter(d)
    model, processor, _ = load_policy(d)
    assert type(model) is type(base) and not any("lora_" in n for n, _ in model.named_parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in base.named_parameters() if p.requires_grad}
    with torch.no_grad():
        got = model(**inputs).logits
    assert rel_err(got, want) < 1e-5 and rel_err(plain, want) > 1e-3
    model.save_pretrained(tmp_path / "export")
    processor.save_pretrained(tmp_path / "export")
    assert not family.has_speech_adapter(str(tmp_path / "export"))
    again, _, _ = load_policy(str(tmp_path / "export"))
    with torch.no_grad():
        assert rel_err(again(**inputs).logits, want) < 1e-5
