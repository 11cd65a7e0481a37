"""The three entry points and the LightningCLI wiring, through real subprocesses."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def run(*args, check=True):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=check)


@pytest.mark.parametrize("exe", ["lightning", "r1aqa"])
def test_console_scripts_show_fit_and_project_commands(exe):
    top = run(str(BIN / exe), "--help").stdout
    for word in ("fit", "validate", "test", "predict", "check-data", "score", "eval"):
        assert word in top
    fit = run(str(BIN / exe), "fit", "--help").stdout
    assert "--trainer.max_steps" in fit and "--config" in fit


def test_python_dash_m_and_project_subcommand_help():
    out = run(sys.executable, "-m", "r1aqa_pl", "score", "--help").stdout
    assert "--key" in out and "predictions" in out


def test_print_config_resolves_the_demo_config():
    out = run(sys.executable, "-m", "r1aqa_pl", "fit", "--config", "configs/demo.yaml", "--print_config").stdout
    cfg = yaml.safe_load(out)
    assert cfg["model"]["class_path"] == "r1aqa_pl.training.grpo_module.GRPOModule"
    assert cfg["model"]["init_args"]["sampling"]["G"] == 16  # the groups are sections of the printed config
    assert set(cfg["model"]["init_args"]) >= {
        "policy",
        "sampling",
        "optimization",
        "selection",
        "evaluation",
        "rewards",
        "advantage",
        "loss",
        "engine",
    }
    assert cfg["data"]["init_args"]["batch_size"] == 16
    assert cfg["trainer"]["max_steps"] > 0


def fit_demo(*args):
    """``r1aqa fit --config configs/demo.yaml ARGS`` (not checked: the tests read its exit and stderr)."""
    return run(sys.executable, "-m", "r1aqa_pl", "fit", "--config", "configs/demo.yaml", *args, check=False)


def test_unknown_reward_fails_at_start_up(tmp_path):
    res = fit_demo("--model.init_args.rewards", "[accuracy, nonsense]")
    assert res.returncode != 0
    assert "nonsense" in res.stderr and "'majority_vote'" in res.stderr  # the known names are listed


def test_an_earlier_flat_setting_names_its_new_place(tmp_path):
    """``model.init_args.G`` (the flat signature before the groups) stops the run, saying where it went."""
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  init_args:\n    beta: 0.0\n    dynamic_sampling_metric: accuracy\n")
    res = fit_demo("--config", str(old), "--model.init_args.G", "4")
    assert res.returncode != 0
    err = res.stderr
    assert "G -> sampling.G" in err and "beta -> loss: init_args.beta" in err
    assert "dynamic_sampling_metric -> selection.metric" in err and "old.yaml" in err


def test_a_knob_out_of_range_fails_before_loading_naming_it():
    # a hub id: nothing is loaded before the check
    res = fit_demo("--model.init_args.policy.model_name_or_path", "org/model", "--model.init_args.sampling.G", "1")
    assert res.returncode != 0 and "sampling.G = 1: needs at least 2 completions per prompt" in res.stderr


def test_policy_path_and_with_audio_are_stated_once():
    """The data module's feature extractor is the policy's own folder and its with_audio the model's (linked)."""
    from r1aqa_pl.cli import lightning_cli

    cli = lightning_cli(
        [
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--model.init_args.policy.with_audio",
            "false",
            "--model.init_args.policy.model_name_or_path",
            "some/policy",
        ],
        run=False,
    )
    assert cli.datamodule.hparams.feature_extractor == "some/policy"
    assert cli.datamodule.hparams.with_audio is False and cli.model.policy_config.with_audio is False
    res = fit_demo("--data.init_args.feature_extractor", "other", "--print_config")
    assert res.returncode != 0  # a linked target cannot be set on its own


def test_lightning_console_script_is_this_project():
    """Only this project declares a `lightning` console script (Lightning itself stopped at 2.5.6; setup.cfg
    requires a later one), so the script `make install` writes runs r1aqa_pl.cli whatever the install order."""
    from importlib.metadata import entry_points

    owners = {
        (e.value, e.dist.name if e.dist else None) for e in entry_points(group="console_scripts", name="lightning")
    }
    assert owners == {("r1aqa_pl.cli:main", "r1aqa-pl")}, owners
    assert "r1aqa_pl.cli" in (BIN / "lightning").read_text()


def test_linked_target_in_a_config_file_is_refused(tmp_path):
    from r1aqa_pl.cli import _refuse_misplaced

    overlay = tmp_path / "o.yaml"
    overlay.write_text("data:\n  init_args:\n    with_audio: false\n")
    with pytest.raises(SystemExit, match=r"o.yaml: data.init_args.with_audio: set by its link"):
        _refuse_misplaced(["--config", "configs/demo.yaml", "--config", str(overlay)])
    _refuse_misplaced(
        ["--config", "configs/demo.yaml", "--config=" + str(tmp_path / "missing.yaml")]
    )  # the CLI's to report


# ---------------------------------------------------------------- failures: one line, exit 1, --debug


def test_bad_input_is_one_line_and_debug_shows_the_traceback(tmp_path):
    """A project command's DataError / FileNotFoundError / ValueError is `error: ...` on one line, exit 1."""
    import os

    missing = tmp_path / "missing.json"
    res = run(str(BIN / "r1aqa"), "score", str(missing), check=False)
    assert (res.returncode, res.stderr) == (1, f"error: {missing}:file: file not found\n")
    for args, env in (((str(missing), "--debug"), {}), ((str(missing),), {"R1AQA_DEBUG": "1"})):
        res = subprocess.run([str(BIN / "r1aqa"), "score", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env={**os.environ, **env})
        assert res.returncode == 1 and "Traceback" in res.stderr and "DataError: " in res.stderr
    res = run(str(BIN / "r1aqa"), "score", "--nonsense", check=False)  # a bad command line stays argparse's: 2
    assert res.returncode == 2


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/x/y.wav"),
                                   ValueError("sampling.G = 0: needs at least 2\ncompletions per prompt")])
def test_a_tool_failure_is_one_line_too(monkeypatch, capsys, error):
    from r1aqa_pl import cli

    def tool(argv):
        raise error

    monkeypatch.setattr(cli, "_load", lambda target: tool)
    with pytest.raises(SystemExit) as e:
        cli.main(["memory", "--whatever"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert err.strip() in ("error: [Errno 13] Permission denied: '/x/y.wav'",
                           "error: sampling.G = 0: needs at least 2 completions per prompt")
    with pytest.raises(type(error)):
        cli.main(["memory", "--debug"])


def test_a_fit_that_fails_before_its_first_step_leaves_no_version_folder(tmp_path, tiny_dir):
    """The logger makes version_0/ (an event file) before the data module's setup; a run that fails there
    has logged nothing, so the folder goes and the next run is version_0 again."""
    import os

    res = subprocess.run(
        [sys.executable, "-m", "r1aqa_pl", "fit", "--config", "configs/demo.yaml",
         "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
         "--model.init_args.policy.model_name_or_path", str(tiny_dir),
         "--data.init_args.train_file", str(tmp_path / "missing.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode != 0 and "missing.jsonl" in res.stderr
    assert (tmp_path / "grpo").is_dir() and not list((tmp_path / "grpo").iterdir())
