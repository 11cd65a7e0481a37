"""The grouped knobs: every range is checked when the module is built (before any weights load), naming the knob;
the flat keys of before the groups say where they went; checkpoints store plain values that rebuild the module."""

import pytest

from r1aqa_pl.training.config import MOVED, Optimization, Policy, Sampling, Selection, regroup
from r1aqa_pl.training.grpo_module import GRPOModule
from r1aqa_pl.training.sft_module import SFTModule


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": {"G": 1}}, "sampling.G = 1: needs at least 2"),
    ({"sampling": {"G": 0}}, "sampling.G = 0: needs at least 2"),
    ({"sampling": {"temperature": -1.0}}, "sampling.temperature = -1.0: must be > 0"),
    ({"sampling": {"top_p": 0.0}}, r"sampling.top_p = 0.0: must be in \(0, 1\]"),
    ({"sampling": {"top_k": -1}}, "sampling.top_k = -1: must be >= 0 or null"),
    ({"sampling": {"max_new_tokens": 0}}, "sampling.max_new_tokens = 0"),
    ({"optimization": {"lr": -1e-6}}, "optimization.lr = -1e-06: must be >= 0"),
    ({"optimization": {"gradient_accumulation_steps": 0}}, "optimization.gradient_accumulation_steps = 0"),
    ({"optimization": {"micro_batch_prompts": 0}}, "optimization.micro_batch_prompts = 0: must be >= 1"),
    ({"optimization": {"num_iterations": 0}}, "optimization.num_iterations = 0"),
    ({"selection": {"max_extra_draws": -1}}, "selection.max_extra_draws = -1"),
    ({"evaluation": {"max_new_tokens": 0}}, "evaluation.max_new_tokens = 0"),
    ({"loss": {"class_path": "grpo", "init_args": {"beta": -0.1}}}, r"loss beta \(the KL weight\) must be >= 0"),
    ({"loss": {"class_path": "grpo", "init_args": {"epsilon_low": 1.5}}}, r"epsilon_low must be in \(0, 1\)"),
    ({"advantage": "rank"}, "unknown advantage estimator 'rank'; known: group, batch, none"),
    ({"rewards": []}, "at least one reward"),
    ({"policy": {"model_name_or_path": "m", "dtype": "bf16"}}, "policy.dtype = 'bf16'"),
    ({"policy": {"model_name_or_path": "m", "family": "qwen9"}}, "policy.family = 'qwen9': a registered family"),
])
def test_a_value_out_of_range_fails_at_construction_naming_the_knob(kwargs, message):
    kwargs = {"policy": "unused/model", **kwargs}
    with pytest.raises(ValueError, match=message):
        GRPOModule(**kwargs)


def test_gspo_with_a_token_weighted_aggregation_warns():
    with pytest.warns(UserWarning, match="weight each completion by its length"):
        GRPOModule("m", loss={"class_path": "dapo", "init_args": {"importance_sampling_level": "sequence"}})


def test_flat_keywords_of_before_the_groups_name_their_new_place():
    assert MOVED["G"] == ("sampling", "G") and MOVED["eval_max_new_tokens"] == ("evaluation", "max_new_tokens")
    assert MOVED["loss_type"] == ("loss", "aggregation") and MOVED["dynamic_sampling_metric"] == ("selection", "metric")
    with pytest.raises(TypeError):
        GRPOModule("m", G=4)  # the Python signature has no flat keywords; the CLI names the new place (test_cli)
    flat = {"model_name_or_path": "m", "G": 4, "lr": 0.01, "eval_max_new_tokens": 8, "dtype": "bfloat16"}
    assert regroup(flat) == {"policy": {"model_name_or_path": "m", "dtype": "bfloat16"}, "sampling": {"G": 4},
                             "optimization": {"lr": 0.01}, "evaluation": {"max_new_tokens": 8}}


def test_hyperparameters_are_plain_values_that_rebuild_the_module():
    m = GRPOModule(Policy("m", think=True), sampling=Sampling(G=4), optimization=Optimization(lr=0.5),
                   selection=Selection(metric="accuracy"), loss="dapo", advantage="none",
                   rewards=["accuracy", {"class_path": "format", "init_args": {"weight": 0.5}}])
    hp = dict(m.hparams)
    assert hp["policy"]["model_name_or_path"] == "m" and hp["sampling"]["G"] == 4
    assert hp["loss"] == {"class_path": "r1aqa_pl.algo.losses.ClippedSurrogateLoss",
                          "init_args": {"aggregation": "dapo", "importance_sampling_level": "token",
                                        "epsilon_low": 0.2, "epsilon_high": None, "beta": 0.04}}
    assert [r["class_path"].rsplit(".", 1)[1] for r in hp["rewards"]] == ["Accuracy", "ThinkFormat"]
    again = GRPOModule(**hp)
    assert again.hparams == m.hparams
    assert (again.loss.aggregation, again.advantage.scale, again.rewards[1].weight) == ("dapo", "none", 0.5)
    sft = SFTModule("m", optimization={"lr": 1e-5}, target="<answer>{answer}</answer>")
    assert SFTModule(**sft.hparams).hparams == sft.hparams


def test_a_missing_local_model_folder_fails_at_construction(tmp_path):
    """``policy.model_name_or_path`` naming a local folder that is not there fails when the module is built (before
    the data module would look it up on the hub for its feature extractor); hub ids are left to the hub."""
    with pytest.raises(FileNotFoundError, match="checkpoints/demo/wram: no such folder"):
        GRPOModule("checkpoints/demo/wram")
    assert GRPOModule("Qwen/Qwen2-Audio-7B-Instruct").policy_config.model_name_or_path.startswith("Qwen/")
    assert GRPOModule(str(tmp_path)).policy_config.model_name_or_path == str(tmp_path)
