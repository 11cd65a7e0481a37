"""Command line: LightningCLI for training plus the project's own subcommands, in one place.

``lightning fit --config configs/grpo.yaml`` (and ``r1aqa fit ...``, ``python -m r1aqa_pl fit ...``)
go to :class:`lightning.pytorch.cli.LightningCLI`; the names in :data:`COMMANDS` go to plain typed
functions whose command line jsonargparse derives from their signatures and docstrings.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

# name -> "module:function"; each function is typed and documented, jsonargparse builds its CLI.
COMMANDS: dict[str, str] = {
    "check-data": "r1aqa_pl.data.check:check_data",
    "prepare-avqa": "r1aqa_pl.data.prepare:prepare_avqa",
    "prepare-mmau": "r1aqa_pl.data.benchmark_audio:prepare_mmau",
    "prepare-mmar": "r1aqa_pl.data.benchmark_audio:prepare_mmar",
    "prepare-mmsu": "r1aqa_pl.data.mmsu_prepare:prepare_mmsu",
    "prepare-mmau-pro": "r1aqa_pl.data.mmau_pro_prepare:prepare_mmau_pro",
    "synth": "r1aqa_pl.data.synth:synth",
    "score": "r1aqa_pl.eval.score:score",
    "compare-predictions": "r1aqa_pl.eval.robust:compare_predictions",
    "eval": "r1aqa_pl.eval.evaluate:evaluate",
    "eval-all": "r1aqa_pl.eval.evaluate:evaluate_all",
    "ask": "r1aqa_pl.eval.ask:ask",
    "tiny-model": "r1aqa_pl.models.tiny:build_tiny_model",
    "demo-prepare": "r1aqa_pl.recipes.demo:prepare",
    "audio-contribution": "r1aqa_pl.recipes.audio_contribution:audio_contribution",
}

# name -> "module:main"; programs with their own argparse command line (argv in, report out)
TOOLS: dict[str, str] = {
    "bench": "r1aqa_pl.tools.bench:main",
    "memory": "r1aqa_pl.tools.memory:main",
    "compare": "r1aqa_pl.tools.compare:main",
    "gpu-check": "r1aqa_pl.tools.gpu_check:main",
    "gpu-smoke": "r1aqa_pl.tools.gpu_smoke:main",
    "moe-mismatch": "r1aqa_pl.tools.moe_mismatch:main",
    "preflight": "r1aqa_pl.tools.preflight:main",
}

_HELP = (
    "R1-AQA in PyTorch Lightning: GRPO post-training of audio language models. "
    "Training: fit | validate | test | predict (LightningCLI), e.g. `lightning fit --config configs/grpo.yaml`."
)


def _commands_help() -> str:
    lines = ["project commands (`r1aqa COMMAND --help` for each):"]
    lines += [f"  {name:<13} {_first_doc_line(target)}" for name, target in COMMANDS.items()]
    lines += [f"  {name:<13} {_first_doc_line(target.split(':')[0] + ':__doc__')}" for name, target in TOOLS.items()]
    lines += ["a failure prints one line, `error: FILE:WHERE: what is wrong`, and exits 1 (2: a bad command line);",
              "`--debug` (or R1AQA_DEBUG=1) shows the full traceback instead (docs/errors.md)"]
    return "\n".join(lines) + "\n"


def _first_doc_line(target: str) -> str:
    try:
        obj = _load(target)
        return ((obj if isinstance(obj, str) else obj.__doc__) or "").strip().splitlines()[0]
    except Exception as e:  # a broken command must not hide the others
        return f"(unavailable: {e})"


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


# facts stated once: the data module reads the policy's own feature extractor (sampling rate,
# window), and the audio-free ablation switches model and data together
LINKS = (("model.init_args.policy.model_name_or_path", "data.init_args.feature_extractor"),
         ("model.init_args.policy.with_audio", "data.init_args.with_audio"))


def _configs(argv: list[str]):
    """(path, parsed YAML) of every ``--config`` in ``argv``; an unreadable file is the CLI's to report."""
    import yaml

    for i, a in enumerate(argv):
        if a.startswith("--config") and (a.startswith("--config=") or i + 1 < len(argv)):
            path = a.split("=", 1)[1] if "=" in a else argv[i + 1]
            try:
                cfg = yaml.safe_load(Path(path).read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(cfg, dict):
                yield path, cfg


def _section(cfg: dict, name: str) -> dict:
    part = cfg.get(name) or {}
    return {**part, **(part.get("init_args") or {})} if isinstance(part, dict) else {}


def _refuse_misplaced(argv: list[str]) -> None:
    """Stop, saying why, where a value would be overwritten by its link without a word, or where a model setting
    still has its earlier flat name (``model.init_args.G``: now ``model.init_args.sampling.G``)."""
    from r1aqa_pl.training.config import MOVED, refuse_flat  # here, not on top: `r1aqa COMMAND` loads no torch

    given, flat = [], {}
    for path, cfg in _configs(argv):
        keys = _section(cfg, "data")
        given += [f"{path}: data.init_args.{t.rsplit('.', 1)[1]}" for _, t in LINKS if t.rsplit(".", 1)[1] in keys]
        flat.update({k: path for k in _section(cfg, "model") if k in MOVED})
    given += [a for a in argv for _, t in LINKS for flag in (f"--{t}", f"--data.{t.rsplit('.', 1)[1]}")
              if a == flag or a.startswith(flag + "=")]
    for a in argv:
        key = a.split("=", 1)[0].removeprefix("--model.init_args.").removeprefix("--model.")
        if a.startswith("--model.") and key in MOVED:
            flat[key] = "the command line"
    if given:
        sources = ", ".join(f"{s} -> {t}" for s, t in LINKS)
        raise SystemExit(f"error: {', '.join(given)}: set by its link ({sources}); set the model's value instead")
    if flat:
        try:
            refuse_flat(flat)
        except TypeError as e:
            raise SystemExit(f"error: model.init_args in {', '.join(sorted(set(flat.values())))}: {e}") from None


def _drop_empty_version(trainer) -> None:
    """Remove the logger's ``version_N/`` of a run that failed before its first optimizer step, when it holds
    only what every start writes (config.yaml, hparams.yaml, event files): an empty version is not a run."""
    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
    if not trainer.is_global_zero or trainer.global_step > 0 or not log_dir or not Path(log_dir).is_dir():
        return
    files = [p.name for p in Path(log_dir).rglob("*") if not p.is_dir()]
    if all(n in ("config.yaml", "hparams.yaml") or n.startswith("events.out.tfevents.") for n in files):
        shutil.rmtree(log_dir, ignore_errors=True)


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI; every model, data module and callback comes from the config."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.callbacks import ProgressBar
    from lightning.pytorch.cli import LightningCLI

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            for source, target in LINKS:
                parser.link_arguments(source, target)

        def parse_arguments(self, parser, args) -> None:
            _refuse_misplaced(sys.argv[1:] if args is None else list(args))
            super().parse_arguments(parser, args)

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except Exception:
                _drop_empty_version(self.trainer)
                raise

        def _instantiate_trainer(self, config, callbacks):
            # a config's progress bar (configs/demo.yaml's StepProgressBar) gives way to enable_progress_bar: false
            if config.get("enable_progress_bar") is False:
                config["callbacks"] = [c for c in config.get("callbacks") or [] if not isinstance(c, ProgressBar)]
            return super()._instantiate_trainer(config, callbacks)

    return CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _HELP},
        args=args,
        run=run,
    )


def _run_command(argv: list[str]) -> int | None:
    """A project command or tool: its exit status (None: success)."""
    if argv[0] in COMMANDS:
        from jsonargparse import auto_cli

        result = auto_cli(_load(COMMANDS[argv[0]]), args=argv[1:])
        return result if isinstance(result, int) and not isinstance(result, bool) and result != 0 else None
    result = _load(TOOLS[argv[0]])(argv[1:])
    return result if isinstance(result, int) and not isinstance(result, bool) and result != 0 else None


def one_line(e: BaseException) -> str:
    """An error's message on one line (a traceback's last line, without the type)."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def main(argv: list[str] | None = None) -> None:
    from_sys = argv is None
    argv = list(sys.argv[1:] if from_sys else argv)
    if argv and (argv[0] in COMMANDS or argv[0] in TOOLS):
        # bad input (data, files, settings) is one line on stderr and exit 1; --debug or R1AQA_DEBUG=1: the traceback
        debug = "--debug" in argv[1:] or os.environ.get("R1AQA_DEBUG", "0") not in ("", "0")
        try:
            status = _run_command([a for a in argv if a != "--debug"])
        except (ValueError, OSError) as e:  # DataError is a ValueError; FileNotFoundError, PermissionError OSErrors
            if debug:
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)
        if status:
            sys.exit(status)
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(_commands_help())
    lightning_cli(None if from_sys else argv)


if __name__ == "__main__":
    main()
