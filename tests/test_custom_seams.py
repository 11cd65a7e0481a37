"""Every seam takes a user's own class from the config, the package untouched (the classes: custom_seams.py)."""

import json
import subprocess
import sys
from pathlib import Path

import custom_seams
import pytest
import torch

from r1aqa_pl.cli import lightning_cli

ROOT = Path(__file__).parents[1]

OVERLAY = """
trainer:
  max_steps: 2
  val_check_interval: 2
  num_sanity_val_steps: 0
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  callbacks:
    - class_path: r1aqa_pl.benchmarks.callback.BenchmarkEvaluation
      init_args:
        benchmark: custom_seams.LenientMMAU
        write_predictions: false
model:
  init_args:
    policy:
      model_name_or_path: {tiny}
      family: custom_seams.MyQwen2Audio
    sampling: {{G: 4, max_new_tokens: 6}}
    optimization: {{lr: 0.01, micro_batch_prompts: 2}}
    evaluation: {{max_new_tokens: 6}}
    rewards:
      - accuracy
      - class_path: custom_seams.ShortAnswer
        init_args: {{weight: 0.5, max_words: 1}}
    advantage: custom_seams.Centered
    loss:
      class_path: custom_seams.Reinforce
      init_args: {{scale: 2.0}}
    engine: custom_seams.CountingEngine
data:
  init_args:
    train_file: {synth}/train.jsonl
    val_file: {synth}/test-mini.json
    batch_size: 2
    val_batch_size: 24
"""


def test_a_users_reward_advantage_loss_engine_family_and_benchmark_from_the_config_alone(tmp_path, synth_dir,
                                                                                      tiny_dir):
    for calls in custom_seams.CALLS.values():
        calls.clear()
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(OVERLAY.format(tiny=tiny_dir, synth=synth_dir))
    cli = lightning_cli(["--config", str(ROOT / "configs/demo.yaml"), "--config", str(overlay),
                         "--trainer.default_root_dir", str(tmp_path)], run=False)
    m = cli.model
    assert [type(r).__name__ for r in m.rewards] == ["Accuracy", "ShortAnswer"]
    assert (m.rewards[1].weight, m.rewards[1].max_words) == (0.5, 1)
    assert type(m.advantage).__name__ == "Centered" and type(m.loss).__name__ == "Reinforce" and m.beta == 0.0
    cli.trainer.fit(m, cli.datamodule)
    assert type(m.family).__name__ == "MyQwen2Audio"
    # two steps of one rollout each (G = 4), then validation's greedy answers through the same engine (G = 1)
    assert custom_seams.CALLS["engine"][:2] == [4, 4] and set(custom_seams.CALLS["engine"][2:]) == {1}
    assert custom_seams.CALLS["reward"] == [8, 8]  # 2 prompts x G
    # the update got the custom advantages of the weighted reward sum, and the loss is the user's formula
    (total, A), = custom_seams.CALLS["advantage"][:1]
    assert torch.allclose(A, (total.view(2, 4) - total.view(2, 4).mean(1, keepdim=True)).reshape(-1))
    first = custom_seams.CALLS["loss"][0]
    assert first["ref"] is None and first["num_completions"] == 8 and first["num_micro_batches"] == 1
    assert torch.allclose(first["A"], A)
    want = -2.0 * (A * (first["logp"] * first["mask"]).sum(1) / first["mask"].sum(1).clamp(min=1)).sum() / 8
    assert torch.allclose(first["loss"], want)
    logged = cli.trainer.callback_metrics
    assert "train/rewards/short_answer" in logged and "train/mean_logp" in logged
    assert "val/acc/total" in logged
    scorer = next(c for c in cli.trainer.callbacks if type(c).__name__ == "BenchmarkEvaluation")
    assert isinstance(scorer.sets["val"][0].benchmark, custom_seams.LenientMMAU)  # the user's rule scored the set


def test_score_takes_a_users_benchmark_by_class_path(tmp_path, mmau_json):
    """``r1aqa score --benchmark my_module.MyBench``: the user's rule on a prediction file."""
    records = json.loads(Path(mmau_json).read_text())[:4]
    records[0]["model_prediction"] = records[0]["answer"].upper()  # right under both rules
    records[1]["model_prediction"] = f"I think {records[1]['answer']}"  # MMAU's rule: right; exact match: wrong
    records[2]["model_prediction"] = "nothing"  # wrong under both
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(records))
    env = {"PYTHONPATH": str(Path(__file__).parent), "PATH": "/usr/bin:/bin"}
    out = {}
    for bench in ("mmau", "custom_seams.LenientMMAU"):
        res = subprocess.run([sys.executable, "-m", "r1aqa_pl", "score", str(preds), "--benchmark", bench, "--json",
                              "true"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        out[bench] = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["mmau"]["total"]["correct"] == 2 and out["custom_seams.LenientMMAU"]["total"]["correct"] == 1
    assert out["mmau"]["scored"] == out["custom_seams.LenientMMAU"]["scored"] == 3


def test_a_wrong_name_fails_at_parse_listing_the_known_ones():
    with pytest.raises(SystemExit):
        lightning_cli(["--config", str(ROOT / "configs/demo.yaml"), "--model.init_args.loss", "dapoo",
                       "--print_config"], run=False)
    from r1aqa_pl.algo.losses import LOSSES

    with pytest.raises(ValueError, match="unknown policy loss 'dapoo'; known: grpo, bnpo, dapo, dr_grpo, gspo"):
        LOSSES.build("dapoo")
    with pytest.raises(ValueError, match="is not a subclass of r1aqa_pl.algo.losses.PolicyLoss"):
        LOSSES.build("custom_seams.Centered")


def test_eval_takes_a_users_benchmark_by_class_path(tmp_path, tiny_run):
    """``r1aqa eval --benchmark my_module.MyBench``: its rule scores the answers, and its files are read by it."""
    from r1aqa_pl.eval import evaluate as ev
    from r1aqa_pl.task.files import read_records

    out = tmp_path / "lenient"
    results = ev.evaluate(checkpoint=str(tiny_run.ckpts[4]), data=str(tiny_run.data), out=str(out),
                          benchmark="custom_seams.LenientMMAU", batch_size=tiny_run.val_batch_size)
    preds = read_records(out / "predictions.json")
    want = sum(custom_seams.LenientMMAU().is_correct(r["model_prediction"], r["answer"], r["choices"]) for r in preds)
    assert results["benchmark"] == "lenient_mmau" and results["total"]["correct"] == want
    assert results["total"]["total"] == len(preds) == 24
