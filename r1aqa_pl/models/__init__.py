"""Policy families (one module each, registered by name) and the calls that pick and load one.

The family comes from the checkpoint's ``config.model_type`` unless a config names it (``family``: a
registered name or the class path of a user's own :class:`PolicyFamily` subclass). What a family adapter owns:
:mod:`r1aqa_pl.models.base`; the architecture numbers and published checkpoints' sizes: :mod:`r1aqa_pl.models.sizes`;
the tiny random builds (``build_tiny_model``, re-exported here): :mod:`r1aqa_pl.models.tiny`.
"""

from __future__ import annotations

import re
from pathlib import Path

from r1aqa_pl.models import audio_flamingo3, phi4_multimodal, qwen2_5_omni, qwen2_audio, qwen3_omni  # noqa: F401  (register)
from r1aqa_pl.models.base import DTYPES, FAMILIES, Dtype, PolicyFamily

__all__ = ["DTYPES", "FAMILIES", "Dtype", "PolicyFamily", "build_tiny_model", "check_local", "family_for",
           "load_policy"]


def check_local(model_name_or_path: str, expected: str = "a Hugging Face model folder") -> None:
    """Raise ``FileNotFoundError`` for a path that is meant to be local but is not there, so that a typo
    (``mymodel/step100_hf``) says "no such folder" at once instead of being looked up on the model hub.

    Local-looking: starts with ``/ ./ ../ ~``, has more than two components, ends in ``_hf`` or ``.ckpt``,
    or its first component exists here. ``org/name`` and ``name`` stay hub ids."""
    s = str(model_name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        return
    first = s.split("/", 1)[0]
    why = ("it starts like a path" if s.startswith(("/", "./", "../", "~")) else
           "a hub id is name or org/name" if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", s) else
           "it is named like a checkpoint" if s.endswith(("_hf", ".ckpt")) else
           f"{first}/ exists here" if "/" in s and Path(first).exists() else None)
    if why:
        kind = "file" if s.endswith(".ckpt") else "folder"
        raise FileNotFoundError(f"{s}: no such {kind} (a local path, not a hub id: {why}); expected {expected} "
                                "or a hub id such as Qwen/Qwen2-Audio-7B-Instruct")


def family_for(model_name_or_path: str, family: str | None = None) -> PolicyFamily:
    """The family named ``family`` (registered name or class path), else the registered one whose
    ``model_types`` has the checkpoint's ``config.model_type``."""
    if family is not None:
        return FAMILIES.build(family)
    check_local(model_name_or_path)
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(model_name_or_path).model_type
    for name, cls in FAMILIES.classes().items():
        if model_type in cls.model_types:
            return FAMILIES.build(name)
    known = ", ".join(f"{t} ({name})" for name, cls in FAMILIES.classes().items() for t in cls.model_types)
    raise ValueError(f"{model_name_or_path}: model_type {model_type!r} has no policy family; known: {known}; "
                     "or name your own with family: my_module.MyFamily")


def load_policy(model_name_or_path: str, dtype: Dtype = "float32", attn_implementation: str | None = None,
                gradient_checkpointing: bool = False, lora: dict | None = None, family: str | None = None):
    """(model, processor, family) from a hub id or local folder.

    ``lora`` (e.g. ``{"r": 8, "lora_alpha": 16}``) wraps the model with a peft LoRA adapter, by default
    on the family's language-model projections; the reference policy is then the same model with the
    adapter disabled.
    """
    check_local(model_name_or_path)
    fam = family_for(model_name_or_path, family)
    model, processor = fam.load(model_name_or_path, dtype, attn_implementation)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": fam.lora_target_modules,
               **({"exclude_modules": fam.lora_exclude_modules} if fam.lora_exclude_modules else {}), **lora}
        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(**cfg))
    return model, processor, fam


# last: tiny.py reads FAMILIES (the families above registered); the tiny builds live there
from r1aqa_pl.models.tiny import build_tiny_model  # noqa: E402
