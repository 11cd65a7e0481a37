"""What a checkpoint is, and loading the policy from any kind of it for evaluation.

A checkpoint is any of

* a Lightning checkpoint file (``*.ckpt``): the policy is rebuilt from the checkpoint's saved
  hyper-parameters (:class:`~r1aqa_pl.training.policy_module.PolicyModule`'s share of them: model
  id, family, dtype, LoRA, prompt template, evaluation length) and its ``state_dict`` is loaded
  after ``configure_model()``;
* a DeepSpeed checkpoint folder (what Lightning's DeepSpeedStrategy writes in place of a ``.ckpt``
  file: it holds ``latest`` and/or ``checkpoint/``): converted to one fp32 Lightning checkpoint with
  :func:`lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict` in a
  temporary folder, then loaded as above;
* a Hugging Face model folder (the ``<ckpt stem>_hf`` folder
  :class:`~r1aqa_pl.training.checkpointing.HFCheckpoint` writes beside every checkpoint, or any
  ``save_pretrained`` output) or a hub id.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

from r1aqa_pl.models import Dtype
from r1aqa_pl.task.question import Question
from r1aqa_pl.training.config import regroup
from r1aqa_pl.training.policy_module import PolicyModule

CheckpointKind = Literal["lightning", "deepspeed", "hf"]
# what an _hf folder takes from the Lightning checkpoint beside it (LoRA is merged in the export, the
# family is the folder's own model_type)
_HF_POLICY = ("dtype", "attn_implementation", "template", "think")


def _groups(hp: dict) -> dict:
    """The policy, optimization and evaluation groups of a checkpoint's hyper-parameters (grouped, or the flat
    ones of a checkpoint written before the groups)."""
    hp = hp if "policy" in hp else regroup(hp)
    return {k: dict(hp[k]) for k in ("policy", "optimization", "evaluation") if isinstance(hp.get(k), dict)}



def is_deepspeed_dir(path: str | Path) -> bool:
    """A folder as DeepSpeed saves it: a ``latest`` tag file and/or the ``checkpoint/`` tag folder."""
    p = Path(path)
    return p.is_dir() and ((p / "latest").is_file() or (p / "checkpoint").is_dir())


def is_hf_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def checkpoint_kind(checkpoint: str | Path) -> CheckpointKind:
    """``"lightning"`` (a ``.ckpt`` file), ``"deepspeed"`` (a ZeRO folder) or ``"hf"`` (HF folder or hub id).

    A path that looks local (exists, is absolute, starts with ``.``, or ends in ``.ckpt``) but is
    neither raises ``FileNotFoundError`` instead of being sent to the hub.
    """
    p = Path(checkpoint)
    if p.is_file():
        return "lightning"
    if is_deepspeed_dir(p):
        return "deepspeed"
    if is_hf_dir(p):
        return "hf"
    s = str(checkpoint)
    if p.exists() or p.is_absolute() or s.startswith((".", "~")) or s.endswith(".ckpt") \
            or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", s):
        what = "a folder without config.json, latest or checkpoint/" if p.is_dir() else "not found"
        raise FileNotFoundError(f"{checkpoint}: {what}; expected a Lightning .ckpt file, a DeepSpeed checkpoint "
                                "folder, a Hugging Face model folder or a hub id")
    return "hf"


def default_out(checkpoint: str | Path) -> Path:
    """``<ckpt stem>_eval/`` beside a ``.ckpt`` file, ``<folder>/eval/`` for a folder (HF or DeepSpeed),
    ``./eval_<name>`` for a hub id."""
    p = Path(checkpoint)
    if p.is_file():
        return p.with_name(p.stem + "_eval")
    if p.is_dir():
        return p / "eval"
    return Path("eval_" + str(checkpoint).strip("/").replace("/", "__"))


def _step_from_name(path: str | Path) -> int | None:
    m = re.search(r"step[=_-]?(\d+)", Path(path).name)
    return int(m[1]) if m else None


def _sibling_ckpt(path: Path) -> Path | None:
    """The ``.ckpt`` (file or DeepSpeed folder) that an ``<stem>_hf`` folder was exported beside."""
    if path.name.endswith("_hf"):
        ckpt = path.with_name(path.name[: -len("_hf")] + ".ckpt")
        if ckpt.exists():
            return ckpt
    return None


def _sibling_hparams(path: Path) -> dict:
    """Hyper-parameters of the Lightning checkpoint beside an ``_hf`` folder ({} if none or unreadable)."""
    ckpt = _sibling_ckpt(path)
    if ckpt is None or not ckpt.is_file():
        return {}
    try:
        return dict(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("hyper_parameters") or {})
    except Exception:
        return {}


def checkpoint_step(checkpoint: str | Path) -> int | None:
    """The global step of a checkpoint: read from a ``.ckpt`` (memory-mapped, so cheap for big files),
    from the ``.ckpt`` beside an ``_hf`` folder, else from a ``step<N>`` in the name; None if unknown."""
    p = Path(checkpoint)
    ckpt = p if p.is_file() else _sibling_ckpt(p)
    if ckpt is not None and ckpt.is_file():
        try:
            return int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["global_step"])
        except Exception:  # not a Lightning checkpoint after all: fall back to the name
            pass
    return _step_from_name(p.name[:-3] if p.name.endswith("_hf") else p)


# ---------------------------------------------------------------- loading the policy

class EvalPolicy(PolicyModule):
    """:class:`PolicyModule` for evaluation only; a batch whose every clip failed to decode is empty."""

    def answer(self, questions: list[Question], audio: list) -> list[str]:
        return super().answer(questions, audio) if questions else []


def _load_lightning(path: Path, source_hint: Path | None = None,
                    override: dict | None = None) -> tuple[EvalPolicy, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'state_dict' in this file; is it a Lightning checkpoint?")
    hp = dict(ckpt.get("hyper_parameters") or {})
    kwargs = _groups(hp)
    if not kwargs.get("policy", {}).get("model_name_or_path"):
        raise ValueError(
            f"{path}: the checkpoint's hyper_parameters have no policy.model_name_or_path "
            "(not written by a PolicyModule?); evaluate its _hf folder instead"
        )
    # the architecture (and processor) come from the model the run started from; if that folder is
    # gone (another machine, another working directory) the _hf export beside the checkpoint serves
    policy = kwargs["policy"]
    trained_with = policy["model_name_or_path"]
    hf = source_hint if source_hint is not None else path.with_name(path.stem + "_hf")
    if not Path(trained_with).exists() and is_hf_dir(hf):
        policy["model_name_or_path"] = str(hf)
    policy.update(override or {})
    module = EvalPolicy(**kwargs)
    module.configure_model()
    state = ckpt["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{path}: state_dict does not fit the policy built from {policy['model_name_or_path']}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    info = {"model": policy["model_name_or_path"], "step": ckpt.get("global_step"), "trained_with": trained_with}
    return module, info


def load_for_eval(
    checkpoint: str, max_new_tokens: int | None = None, with_audio: bool = True, dtype: Dtype | None = None
) -> tuple[EvalPolicy, dict]:
    """(module with its policy loaded, info) for any checkpoint kind; info has kind, model and step.
    ``dtype`` overrides the checkpoint's (e.g. ``bfloat16`` for a hub model, float32 by default)."""
    kind = checkpoint_kind(checkpoint)
    p = Path(checkpoint)
    override = {"dtype": dtype} if dtype else {}
    if kind == "lightning":
        module, info = _load_lightning(p, override=override)
    elif kind == "deepspeed":
        # the fp32 file is as big as the model: write it beside the checkpoint rather than in /tmp
        parent = p.parent if os.access(p.parent, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix=".r1aqa_fp32_", dir=parent) as tmp:
            fp32 = Path(tmp) / "fp32.ckpt"
            tag = None if (p / "latest").is_file() else "checkpoint"
            convert_zero_checkpoint_to_fp32_state_dict(str(p), str(fp32), tag=tag)
            hf = p.with_name(p.name[: -len(".ckpt")] + "_hf") if p.name.endswith(".ckpt") else Path(f"{p}_hf")
            module, info = _load_lightning(fp32, source_hint=hf, override=override)
    else:
        # an _hf folder beside a Lightning checkpoint evaluates with that run's prompt and lengths
        groups = _groups(_sibling_hparams(p))
        policy = {k: v for k, v in groups.get("policy", {}).items() if k in _HF_POLICY}
        module = EvalPolicy(
            {**policy, **override, "model_name_or_path": str(checkpoint)}, evaluation=groups.get("evaluation") or {}
        )
        module.configure_model()
        info = {"model": str(checkpoint), "step": checkpoint_step(checkpoint) if p.exists() else None}
    if max_new_tokens is not None:
        module.evaluation.max_new_tokens = int(max_new_tokens)
    module.policy_config.with_audio = bool(with_audio)
    module.eval()
    return module, {"kind": kind, **info}
