"""What a run tells its user: the step progress bar and the end-of-run summary."""

import json

import lightning as L
from helpers import datamodule

from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.training.grpo_module import GRPOModule
from r1aqa_pl.training.report import RunSummary, StepProgressBar, summary_table


def test_summary_table_start_best_end():
    curve = {0: {"sound": 0.4, "total": 0.45}, 100: {"sound": 0.9, "total": 0.8}, 200: {"sound": 0.7, "total": 0.8},
             300: {"sound": 0.6, "total": 0.7}}
    lines, at = summary_table(curve)
    assert at == {"start": 0, "best": 100, "end": 300}  # a tie for best: the earlier step
    assert lines[1].split() == ["sound", "0.400", "0.900", "0.600"]
    assert lines[2].split() == ["total", "0.450", "0.800", "0.700"]


def test_progress_in_optimizer_steps_and_summary_file(synth_dir, tiny_dir, tmp_path, capsys):
    bar, summary = StepProgressBar(), RunSummary(also=["sub/louder clip"])
    m = GRPOModule(
        str(tiny_dir),
        sampling=dict(G=2, max_new_tokens=6),
        optimization=dict(lr=1e-3, gradient_accumulation_steps=2, micro_batch_prompts=2),
        evaluation=dict(max_new_tokens=6),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        val_check_interval=4,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=-1,
        logger=L.pytorch.loggers.CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[BenchmarkEvaluation(write_predictions=False, log_before_training=True), bar, summary],
    )
    trainer.fit(m, datamodule(synth_dir, tiny_dir, val_batch_size=24))
    assert bar.train_progress_bar.total == 2 and bar.train_progress_bar.n == 2  # steps, not 4 batches
    written = json.loads((tmp_path / "lightning_logs" / "version_0" / "summary.json").read_text())
    assert written["steps"] == 2 and written["start"] == 0 and written["end"] == 2  # step 0: the sanity pass
    # the domains, difficulties and total, plus the one sub-category asked for (the two-clip task)
    assert set(written["curve"]["2"]) == {"sound", "music", "speech", "easy", "medium", "hard", "total",
                                          "sub/louder clip"}
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["sub/louder", "clip"] for line in out.splitlines())
    assert "[summary] 2 optimizer steps" in out and "make eval CKPT=" in out and "make tensorboard" in out


def test_summary_names_the_monitored_set_and_one_eval_command_per_set(tmp_path, capsys):
    """With several validation sets the summary reads the monitored set's file and prints a make eval line
    per set, each with its benchmark (not the dict's repr)."""
    from types import SimpleNamespace

    summary = RunSummary()
    summary.curve = {0: {"total": 0.5}, 100: {"total": 0.9}}
    sets = {"mmau": "d/test-mini.json", "mmar": "d/mmar.jsonl"}
    trainer = SimpleNamespace(
        is_global_zero=True,
        global_step=100,
        log_dir=str(tmp_path),
        checkpoint_callback=SimpleNamespace(best_model_path="run/best.ckpt"),
        datamodule=SimpleNamespace(hparams={"val_file": sets}),
        callbacks=[BenchmarkEvaluation(monitor="mmar"), summary],
    )
    summary.on_fit_end(trainer, None)
    out = capsys.readouterr().out
    assert "validation accuracy on d/mmar.jsonl:" in out and "{" not in out
    assert "make eval CKPT=run/best.ckpt BENCH=mmau DATA=d/test-mini.json" in out
    assert "make eval CKPT=run/best.ckpt BENCH=mmar DATA=d/mmar.jsonl" in out
    assert json.loads((tmp_path / "summary.json").read_text())["val_file"] == sets
