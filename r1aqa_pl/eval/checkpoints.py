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
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

from r1aqa_pl.models import Dtype, check_local
from r1aqa_pl.task.question import Question
from r1aqa_pl.training.checkpointing import BASE_KEY, base_fingerprint
from r1aqa_pl.training.config import regroup
from r1aqa_pl.training.policy_module import PolicyModule

CheckpointKind = Literal["lightning", "deepspeed", "hf"]
_EXPECTED = "a Lightning .ckpt file, a DeepSpeed checkpoint folder, a Hugging Face model folder"
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

    A path that looks local (see :func:`r1aqa_pl.models.check_local`) but is neither raises
    ``FileNotFoundError`` instead of being sent to the hub.
    """
    p = Path(checkpoint)
    if p.is_file():
        return "lightning"
    if is_deepspeed_dir(p):
        return "deepspeed"
    if is_hf_dir(p):
        return "hf"
    if p.is_dir():
        raise FileNotFoundError(f"{checkpoint}: a folder without config.json, latest or checkpoint/; expected "
                                f"{_EXPECTED}")
    check_local(str(checkpoint), _EXPECTED)
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


def _read_ckpt(path: Path) -> dict:
    """A Lightning checkpoint's dict; a file torch cannot read is named as corrupt, not left to torch's mmap hint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        what = "its archive does not load" if zipfile.is_zipfile(path) else "not the zip archive torch.save writes"
        raise ValueError(f"{path}: not a readable checkpoint, corrupt or truncated ({path.stat().st_size} bytes, "
                         f"{what}); copy it again, or evaluate the _hf folder beside it") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'state_dict' in this file; is it a Lightning checkpoint?")
    return ckpt


def _base_for(path: Path, ckpt: dict, trained_with: str, hf: Path) -> str:
    """The folder to build the policy from: the run's base, or the ``_hf`` export beside the checkpoint when
    the base is gone or no longer the one the run recorded (:data:`BASE_KEY`: its config/tokenizer hash)."""
    if not Path(trained_with).exists():
        return str(hf) if is_hf_dir(hf) else trained_with
    recorded = (ckpt.get(BASE_KEY) or {}).get("sha256")
    if recorded is None or base_fingerprint(trained_with) == recorded:
        return trained_with
    if is_hf_dir(hf):
        print(f"note: {trained_with} has changed since {path} was trained (its config/tokenizer are not the "
              f"run's); evaluating with the _hf export beside the checkpoint instead: {hf}", file=sys.stderr)
        return str(hf)
    raise ValueError(f"{path}: the base model it was trained from, {trained_with}, has changed since (its "
                     f"config/tokenizer are not the run's); restore that folder, or evaluate the checkpoint's _hf "
                     f"export ({hf}, not there)")


def _load_lightning(path: Path, source_hint: Path | None = None,
                    override: dict | None = None) -> tuple[EvalPolicy, dict]:
    ckpt = _read_ckpt(path)
    hp = dict(ckpt.get("hyper_parameters") or {})
    kwargs = _groups(hp)
    if not kwargs.get("policy", {}).get("model_name_or_path"):
        raise ValueError(
            f"{path}: the checkpoint's hyper_parameters have no policy.model_name_or_path "
            "(not written by a PolicyModule?); evaluate its _hf folder instead"
        )
    # the architecture (and processor) come from the model the run started from; if that folder is
    # gone (another machine, another working directory) or changed, the _hf export beside the checkpoint serves
    policy = kwargs["policy"]
    trained_with = policy["model_name_or_path"]
    hf = source_hint if source_hint is not None else path.with_name(path.stem + "_hf")
    policy["model_name_or_path"] = _base_for(path, ckpt, trained_with, hf)
    policy.update(override or {})
    module = EvalPolicy(**kwargs)
    module.configure_model()
    try:
        missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as e:  # a checkpoint from before the base was recorded, whose base was rebuilt since
        if "size mismatch" not in str(e):
            raise
        first = next(line.strip() for line in str(e).splitlines() if "size mismatch" in line)
        way = f"evaluate the _hf export beside it: {hf}" if is_hf_dir(hf) else f"restore {trained_with} as it was"
        raise ValueError(f"{path}: its weights do not fit the model built from {policy['model_name_or_path']} "
                         f"({first}): that folder has changed since the run; {way}") from None
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
