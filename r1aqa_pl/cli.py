"""Command line: LightningCLI for training plus the project's own subcommands, in one place.

``lightning fit --config configs/grpo.yaml`` (and ``r1aqa fit ...``, ``python -m r1aqa_pl fit ...``)
go to :class:`lightning.pytorch.cli.LightningCLI`; the names in :data:`COMMANDS` go to plain typed
functions whose command line jsonargparse derives from their signatures and docstrings.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# name -> "module:function"; each function is typed and documented, jsonargparse builds its CLI.
COMMANDS: dict[str, str] = {
    "check-data": "r1aqa_pl.data.check:check_data",
    "prepare-avqa": "r1aqa_pl.data.prepare:prepare_avqa",
    "prepare-mmau": "r1aqa_pl.data.benchmark_audio:prepare_mmau",
    "prepare-mmar": "r1aqa_pl.data.benchmark_audio:prepare_mmar",
    "synth": "r1aqa_pl.data.synth:synth",
    "score": "r1aqa_pl.eval.score:score",
    "eval": "r1aqa_pl.eval.evaluate:evaluate",
    "eval-all": "r1aqa_pl.eval.evaluate:evaluate_all",
    "ask": "r1aqa_pl.eval.ask:ask",
    "tiny-model": "r1aqa_pl.models:build_tiny_model",
    "demo-prepare": "r1aqa_pl.demo:prepare",
    "audio-contribution": "r1aqa_pl.audio_contribution:audio_contribution",
}

_HELP = (
    "R1-AQA in PyTorch Lightning: GRPO post-training of audio language models. "
    "Training: fit | validate | test | predict (LightningCLI), e.g. `lightning fit --config configs/grpo.yaml`."
)


def _commands_help() -> str:
    lines = ["project commands (`r1aqa COMMAND --help` for each):"]
    lines += [f"  {name:<13} {_first_doc_line(target)}" for name, target in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def _first_doc_line(target: str) -> str:
    try:
        return (_load(target).__doc__ or "").strip().splitlines()[0]
    except Exception as e:  # a broken command must not hide the others
        return f"(unavailable: {e})"


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


# facts stated once: the data module reads the policy's own feature extractor (sampling rate,
# window), and the audio-free ablation switches model and data together
LINKS = (("model.init_args.model_name_or_path", "data.init_args.feature_extractor"),
         ("model.init_args.with_audio", "data.init_args.with_audio"))


def _refuse_linked_targets(argv: list[str]) -> None:
    """A linked value given by hand would be overwritten without a word: say so and stop instead."""
    import yaml

    given = []
    for i, a in enumerate(argv):
        if a.startswith("--config") and (a.startswith("--config=") or i + 1 < len(argv)):
            path = a.split("=", 1)[1] if "=" in a else argv[i + 1]
            try:  # an unreadable file is the CLI's to report, with its own message
                cfg = yaml.safe_load(Path(path).read_text())
            except (OSError, yaml.YAMLError):
                cfg = None
            data = (cfg.get("data") or {}) if isinstance(cfg, dict) else {}
            keys = {**data, **(data.get("init_args") or {})} if isinstance(data, dict) else {}
            given += [f"{path}: data.init_args.{t.rsplit('.', 1)[1]}" for _, t in LINKS if t.rsplit(".", 1)[1] in keys]
        given += [a for _, t in LINKS for flag in (f"--{t}", f"--data.{t.rsplit('.', 1)[1]}")
                  if a == flag or a.startswith(flag + "=")]
    if given:
        sources = ", ".join(f"{s} -> {t}" for s, t in LINKS)
        raise SystemExit(f"error: {', '.join(given)}: set by its link ({sources}); set the model's value instead")


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
            _refuse_linked_targets(sys.argv[1:] if args is None else list(args))
            super().parse_arguments(parser, args)

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


def main(argv: list[str] | None = None) -> None:
    from_sys = argv is None
    argv = list(sys.argv[1:] if from_sys else argv)
    if argv and argv[0] in COMMANDS:
        from jsonargparse import auto_cli

        result = auto_cli(_load(COMMANDS[argv[0]]), args=argv[1:])
        if isinstance(result, int) and result != 0:
            sys.exit(result)
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(_commands_help())
    lightning_cli(None if from_sys else argv)


if __name__ == "__main__":
    main()
