"""Command line: LightningCLI for training plus the project's own subcommands, in one place.

``lightning fit --config configs/grpo.yaml`` (and ``r1aqa fit ...``, ``python -m r1aqa_pl fit ...``)
go to :class:`lightning.pytorch.cli.LightningCLI`; the names in :data:`COMMANDS` go to plain typed
functions whose command line jsonargparse derives from their signatures and docstrings.
"""

from __future__ import annotations

import importlib
import sys

# name -> "module:function"; each function is typed and documented, jsonargparse builds its CLI.
COMMANDS: dict[str, str] = {
    "check-data": "r1aqa_pl.data:check_data",
    "synth": "r1aqa_pl.synth:synth",
    "score": "r1aqa_pl.mmau:score",
    "eval": "r1aqa_pl.evaluate:evaluate",
    "eval-all": "r1aqa_pl.evaluate:evaluate_all",
    "ask": "r1aqa_pl.evaluate:ask",
    "tiny-model": "r1aqa_pl.model:build_tiny_model",
    "demo-prepare": "r1aqa_pl.demo:prepare",
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


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI; every model, data module and callback comes from the config."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
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
