"""Think mode (prompt, format reward, logged lengths, SFT target) and the audio-free ablation
(no audio anywhere in the model's input, training and evaluation still run) on the tiny policy."""

import lightning as L
import pytest
import torch
from helpers import batch_of, datamodule, fit

from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.task import prompts
from r1aqa_pl.training.grpo_module import GRPOModule

AUDIO_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
# record 0 of the synthetic training set, as the tiny processor's chat template renders it
THINK_PROMPT_0 = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "how many beeps are there? Please choose the answer from the following options: ['one', 'two', 'three']. "
    "Output the thinking process in <think> </think> and final answer in <answer> </answer>.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
PLAIN_NOAUDIO_0 = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
    "how many beeps are there? Please choose the answer from the following options: ['one', 'two', 'three']. "
    "Output the final answer in <answer> </answer>.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def token_ids(processor, tokens):
    return [processor.tokenizer.convert_tokens_to_ids(t) for t in tokens]


# ---------------------------------------------------------------- think mode

def test_think_prompt_exact_text_and_ids(synth_dir, tiny_dir):
    m = GRPOModule(dict(model_name_or_path=str(tiny_dir), think=True), sampling=dict(G=2))
    assert m.template == "think"
    m.configure_model()
    batch = batch_of(datamodule(synth_dir, tiny_dir), 1)
    q = batch["questions"][0]
    assert m.family.render(m.processor, q, m.template) == THINK_PROMPT_0
    assert prompts.user_text(q, "think") == prompts.THINK.format(question=q.question, choices=str(list(q.choices)))
    # what the model gets is exactly that text through the processor (audio expanded to its frames)
    inputs = m.encode(batch["questions"], batch["audio"])
    sr = m.processor.feature_extractor.sampling_rate
    ref = m.processor(text=[THINK_PROMPT_0], audio=batch["audio"], sampling_rate=sr, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], ref["input_ids"])
    assert torch.equal(inputs["input_features"], ref["input_features"])
    think_id, = token_ids(m.processor, ["<think>"])
    assert think_id in inputs["input_ids"][0].tolist()
    # think=False keeps the paper's plain prompt
    plain = GRPOModule(str(tiny_dir))
    assert plain.template == "plain" and "<think>" not in prompts.user_text(q, plain.template)


def weights(module):
    return {r.label: r.weight for r in module.rewards}


def test_think_swaps_format_for_think_format():
    m = GRPOModule(dict(model_name_or_path="unused", think=True))
    assert weights(m) == {"accuracy": 1.0, "think_format": 1.0}
    m = GRPOModule(dict(model_name_or_path="unused", think=True),
                   rewards=["accuracy", {"class_path": "format", "init_args": {"weight": 0.5}}])
    assert weights(m) == {"accuracy": 1.0, "think_format": 0.5}
    assert weights(GRPOModule("unused")) == {"accuracy": 1.0, "format": 1.0}


def test_think_grpo_fit_logs_think_and_answer_lengths(synth_dir, tiny_dir):
    L.seed_everything(0)
    m = GRPOModule(
        dict(model_name_or_path=str(tiny_dir), think=True),
        sampling=dict(G=4, max_new_tokens=12),
        optimization=dict(lr=1e-3),
    )
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=2)
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    for key in ("train/think_length", "train/answer_length", "train/rewards/think_format", "train/rewards/accuracy"):
        assert key in metrics, key
    assert "train/rewards/format" not in metrics


def test_think_lengths_and_reward_on_known_completions(synth_dir, tiny_dir):
    """Completions fixed by hand: 3 words of thinking, 1 of answer, think format satisfied."""
    m = GRPOModule(
        dict(model_name_or_path=str(tiny_dir), think=True),
        sampling=dict(G=2, max_new_tokens=4),
        optimization=dict(lr=1e-3),
    )
    m.configure_model()
    m.decode = lambda ids: ["<think> a b c </think>\n<answer> one </answer>"] * ids.shape[0]
    trainer = fit(m, datamodule(synth_dir, tiny_dir), steps=1)
    metrics = trainer.callback_metrics
    assert float(metrics["train/think_length"]) == 3.0
    assert float(metrics["train/answer_length"]) == 1.0
    assert float(metrics["train/rewards/think_format"]) == 1.0


# ---------------------------------------------------------------- audio-free ablation


def test_audio_free_inputs_carry_no_audio(synth_dir, tiny_dir):
    dm = datamodule(synth_dir, tiny_dir, with_audio=False)
    batch = batch_of(dm, 3)
    assert batch["audio"] == [None, None, None]
    m = GRPOModule(dict(model_name_or_path=str(tiny_dir), with_audio=False))
    m.configure_model()
    assert m.family.render(m.processor, batch["questions"][0], m.template, with_audio=False) == PLAIN_NOAUDIO_0
    inputs = m.encode(batch["questions"], batch["audio"])
    assert "input_features" not in inputs and "feature_attention_mask" not in inputs
    ids = inputs["input_ids"]
    for t, i in zip(AUDIO_TOKENS, token_ids(m.processor, AUDIO_TOKENS)):
        assert not (ids == i).any(), t
    # audio handed to an audio-free module is ignored: the same tensors as with None
    with_clips = batch_of(datamodule(synth_dir, tiny_dir), 3)
    again = m.encode(with_clips["questions"], with_clips["audio"])
    assert again.keys() == inputs.keys() and all(torch.equal(again[k], inputs[k]) for k in inputs)
    # the audio module refuses audio-free data instead of silently dropping the audio turn
    m_audio = GRPOModule(str(tiny_dir))
    m_audio.configure_model()
    with pytest.raises(ValueError, match="with_audio=False"):
        m_audio.encode(batch["questions"], batch["audio"])


def _count_audio_tower_calls(module):
    """Calls of the encoder's first convolution: every path into the encoder (the project's trimmed
    one and Qwen2-Audio's own forward) runs it."""
    calls = []
    for model in (module.policy, module.ref_policy):
        if model is not None:
            model.model.audio_tower.conv1.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


def test_audio_free_grpo_fit_and_evaluation_never_run_the_audio_encoder(synth_dir, tiny_dir):
    L.seed_everything(0)
    m = GRPOModule(
        dict(model_name_or_path=str(tiny_dir), with_audio=False),
        sampling=dict(G=4, max_new_tokens=8),
        optimization=dict(lr=1e-3),
        evaluation=dict(max_new_tokens=8),
    )
    m.configure_model()
    calls = _count_audio_tower_calls(m)
    dm = datamodule(synth_dir, tiny_dir, with_audio=False)
    trainer = fit(m, dm, steps=2, callbacks=[BenchmarkEvaluation(write_predictions=False)], validate=True)
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert "train/reward" in metrics
    n_val = len(dm.datasets["val"])
    assert float(metrics["val/count/total"]) == n_val == float(metrics["val/count/no_audio"])
    assert 0.0 <= float(metrics["val/acc/total"]) <= 1.0
    for d in ("sound", "music", "speech"):
        assert f"val/acc/{d}" in metrics
    assert calls == []  # neither rollouts, log-probs, reference nor evaluation touched the audio encoder

    # positive control: with audio, the same hook fires
    control = GRPOModule(str(tiny_dir), sampling=dict(G=2, max_new_tokens=2))
    control.configure_model()
    control_calls = _count_audio_tower_calls(control)
    batch = batch_of(datamodule(synth_dir, tiny_dir), 1)
    control.answer(batch["questions"], batch["audio"])
    assert control_calls
