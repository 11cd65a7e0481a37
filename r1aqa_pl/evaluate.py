"""Score checkpoints on MMAU: ``r1aqa eval`` / ``make eval``, ``r1aqa eval-all`` and ``r1aqa ask``.

A checkpoint is any of

* a Lightning checkpoint file (``*.ckpt``): the policy is rebuilt from the checkpoint's saved
  hyper-parameters (:class:`~r1aqa_pl.module.PolicyModule`'s share of them: model id, dtype, LoRA,
  prompt template, evaluation length) and its ``state_dict`` is loaded after ``configure_model()``;
* a DeepSpeed checkpoint folder (what Lightning's DeepSpeedStrategy writes in place of a ``.ckpt``
  file: it holds ``latest`` and/or ``checkpoint/``): converted to one fp32 Lightning checkpoint with
  :func:`lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict` in a
  temporary folder, then loaded as above;
* a Hugging Face model folder (the ``<ckpt stem>_hf`` folder :class:`~r1aqa_pl.callbacks.HFCheckpoint`
  writes beside every checkpoint, or any ``save_pretrained`` output) or a hub id.

Evaluation is ``trainer.validate`` with the same :class:`~r1aqa_pl.callbacks.MMAUEvaluation` callback
that scores during training, so the numbers are the ones a training run logs (and Lightning's
progress bar shows the way). Records are never scored as wrong or dropped behind the user's back:
a record whose audio is missing or unreadable is kept in ``predictions.json`` without a
``model_prediction`` (the official scorer skips such records) and with ``not_scored: <reason>``,
and the counts per reason are printed and stored in ``results.json``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
from torch.utils.data import DataLoader

from r1aqa_pl.audio import load_audio
from r1aqa_pl.data import AudioQADataModule, AudioQADataset, check_audio, detect_format, iter_questions
from r1aqa_pl.mmau import extract_answer, format_table, load_records, score_records
from r1aqa_pl.model import Dtype
from r1aqa_pl.module import PolicyModule
from r1aqa_pl.records import DOMAINS, DataError, Question

DEFAULT_DATA = "../shared/data/mmau/mmau-test-mini.json"
CheckpointKind = Literal["lightning", "deepspeed", "hf"]
# PolicyModule's own arguments: what a saved GRPO / SFT checkpoint needs to rebuild the policy
_POLICY_ARGS = ("model_name_or_path", "dtype", "attn_implementation", "gradient_checkpointing", "lora",
                "template", "with_audio", "eval_max_new_tokens", "eval_stop_at_answer")
# what an _hf folder takes from the Lightning checkpoint beside it (LoRA is merged in the export)
_HF_ARGS = ("dtype", "attn_implementation", "template", "eval_max_new_tokens", "eval_stop_at_answer")
_OUTPUT_KEYS = ("model_output", "model_prediction", "not_scored")


# ---------------------------------------------------------------- what a checkpoint is

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


def _load_lightning(path: Path, source_hint: Path | None = None, override: dict | None = None) -> tuple[EvalPolicy, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path}: no 'state_dict' in this file; is it a Lightning checkpoint?")
    hp = dict(ckpt.get("hyper_parameters") or {})
    kwargs = {k: hp[k] for k in _POLICY_ARGS if k in hp}
    if "model_name_or_path" not in kwargs:
        raise ValueError(f"{path}: the checkpoint's hyper_parameters have no model_name_or_path "
                         "(not written by a PolicyModule?); evaluate its _hf folder instead")
    # the architecture (and processor) come from the model the run started from; if that folder is
    # gone (another machine, another working directory) the _hf export beside the checkpoint serves
    arch = kwargs["model_name_or_path"]
    hf = source_hint if source_hint is not None else path.with_name(path.stem + "_hf")
    if not Path(arch).exists() and is_hf_dir(hf):
        kwargs["model_name_or_path"] = str(hf)
    module = EvalPolicy(**{**kwargs, **(override or {})})
    module.configure_model()
    state = ckpt["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: state_dict does not fit the policy built from {kwargs['model_name_or_path']}: "
                           f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    info = {"model": kwargs["model_name_or_path"], "step": ckpt.get("global_step"),
            "trained_with": hp.get("model_name_or_path")}
    return module, info


def load_for_eval(checkpoint: str, max_new_tokens: int | None = None,
                  with_audio: bool = True, dtype: Dtype | None = None) -> tuple[EvalPolicy, dict]:
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
        kwargs = {k: v for k, v in _sibling_hparams(p).items() if k in _HF_ARGS}
        module = EvalPolicy(str(checkpoint), **{**kwargs, **override})
        module.configure_model()
        info = {"model": str(checkpoint), "step": checkpoint_step(checkpoint) if p.exists() else None}
    if max_new_tokens is not None:
        module.hparams.eval_max_new_tokens = int(max_new_tokens)
    module.hparams.with_audio = bool(with_audio)
    module.eval()
    return module, {"kind": kind, **info}


# ---------------------------------------------------------------- data: no substitution, failures counted

class _EvalDataset(AudioQADataset):
    """Like :class:`AudioQADataset`, but a clip that fails to decode is reported, never replaced by
    the next record (which would score that record twice)."""

    def __getitem__(self, i: int) -> dict:
        q = self.questions[i]
        if not self.with_audio:
            return {"question": q, "audio": None}
        try:
            return {"question": q, "audio": load_audio(q.audio_path or "", self.sampling_rate, self.max_samples)}
        except DataError as e:
            return {"question": q, "audio": None, "error": e.reason}


def _collate(batch: list[dict]) -> dict:
    ok = [b for b in batch if "error" not in b]
    return {"questions": [b["question"] for b in ok], "audio": [b["audio"] for b in ok],
            "failed": [(b["question"], b["error"]) for b in batch if "error" in b]}


class EvalDataModule(AudioQADataModule):
    """The training data module's reading and start-up checks; validation batches from :class:`_EvalDataset`."""

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        ds = self.datasets.get("val")
        if ds is not None and not isinstance(ds, _EvalDataset):
            self.datasets["val"] = _EvalDataset(ds.questions, ds.sampling_rate, ds.max_samples, ds.with_audio)

    def val_dataloader(self):
        return DataLoader(self.datasets["val"], batch_size=self.hparams.val_batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=_collate)


def _identity(record: dict) -> str:
    return json.dumps({k: v for k, v in record.items() if k not in _OUTPUT_KEYS}, sort_keys=True, default=str)


def _reasons(data: str, audio_dir: str | None, with_audio: bool) -> list[str | None]:
    """Per source record: why it cannot be scored at start-up (bad fields, missing/unreadable audio), or None."""
    out = []
    for item in iter_questions(data, audio_dir, "mmau"):
        if isinstance(item, Question) and with_audio:
            item = check_audio(item)
        out.append(item.reason if isinstance(item, DataError) else None)
    return out


# ---------------------------------------------------------------- eval

def evaluate(
    *,
    checkpoint: str,
    data: str = DEFAULT_DATA,
    audio_dir: str | None = None,
    out: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    accelerator: str = "auto",
    num_workers: int = 0,
    dtype: Dtype | None = None,
) -> dict:
    """Score a checkpoint on an MMAU-format JSON list (greedy answers) and print the per-domain table.

    Writes ``OUT/predictions.json`` (the MMAU list, each record with ``model_output`` and
    ``model_prediction``; records that could not be scored keep neither and carry ``not_scored``
    with the reason) and ``OUT/results.json`` (the MMAU scorer's result plus checkpoint, step, data
    and the counts of records not scored, by reason).

    Args:
        checkpoint: a Lightning ``.ckpt`` file, a DeepSpeed checkpoint folder, a Hugging Face model
            folder (e.g. the ``_hf`` folder beside a checkpoint) or a hub id.
        data: MMAU-format JSON list; relative ``audio_id`` paths are resolved against its folder.
        audio_dir: folder the ``audio_id`` paths are relative to, instead of the JSON file's folder.
        out: output folder; default ``<ckpt stem>_eval/`` beside a ``.ckpt`` file, ``<folder>/eval/``
            for a folder, ``./eval_<name>`` for a hub id.
        batch_size: questions per generation batch.
        max_new_tokens: generation length; default: the checkpoint's ``eval_max_new_tokens`` (256 for
            an HF folder, the paper's setting).
        limit: score only the first N records that can be scored (a quick look); the rest are
            reported as not scored (``beyond_limit``).
        with_audio: False asks the questions without their audio (the audio-free ablation).
        accelerator: Lightning accelerator ("auto" takes a GPU when there is one).
        num_workers: DataLoader worker processes for audio decoding.
        dtype: weights dtype (``bfloat16`` on a GPU); default: the checkpoint's (float32 for a hub id).

    Returns:
        The dict written to ``results.json``.
    """
    import lightning as L

    from r1aqa_pl.callbacks import MMAUEvaluation

    t0 = time.time()
    fmt = detect_format(data)
    if fmt != "mmau":
        raise ValueError(f"{data}: evaluate scores MMAU-format JSON lists (answer = choice string); this file is {fmt}")
    out_dir = Path(out) if out else default_out(checkpoint)
    module, info = load_for_eval(checkpoint, max_new_tokens, with_audio, dtype)
    dm = EvalDataModule(val_file=data, audio_dir=audio_dir, feature_extractor=None,
                        val_batch_size=batch_size, num_workers=num_workers, on_error="skip", max_skip_fraction=1.0,
                        with_audio=with_audio, limit_val=limit)
    # sampling rate and window from the loaded model's own processor (no second download)
    fe = module.processor.feature_extractor
    dm.sampling_rate = int(fe.sampling_rate)
    dm.max_samples = int(getattr(fe, "n_samples", None) or 30 * fe.sampling_rate)
    dm.setup("validate")
    n_questions = len(dm.datasets["val"])

    failed: list[tuple[Question, str]] = []
    logged: dict[str, float] = {}
    written: list[dict] = []
    if n_questions:
        class _Failures(L.Callback):
            def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
                failed.extend(batch.get("failed", []))

        with tempfile.TemporaryDirectory(prefix="r1aqa_eval_") as tmp:
            trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                enable_model_summary=False, num_sanity_val_steps=0,
                                callbacks=[MMAUEvaluation(dirpath=tmp), _Failures()])
            metrics = trainer.validate(module, datamodule=dm, verbose=False)
            logged = {k: float(v) for k, v in (metrics[0] if metrics else {}).items()}
            files = sorted(Path(tmp).glob("val_step*.json"))
            written = json.loads(files[-1].read_text(encoding="utf-8")) if files else []

    # the source list, in order: each record with its prediction or the reason it has none
    source = load_records(data)
    reasons = _reasons(data, audio_dir, with_audio)
    by_identity = {_identity(r): r for r in written}
    read_failures = {_identity(q.raw): reason for q, reason in failed if q.raw}
    predictions: list[dict] = []
    not_scored: Counter = Counter()
    for rec, reason in zip(source, reasons):
        key = _identity(rec) if isinstance(rec, dict) else None
        if key in by_identity:
            predictions.append(by_identity[key])
            continue
        reason = reason or read_failures.get(key) or ("beyond_limit" if limit else "not_answered")
        not_scored[reason] += 1
        predictions.append({**rec, "not_scored": reason} if isinstance(rec, dict) else rec)

    # the scorer's own rule skips records without a prediction; a record too broken to parse
    # (no choices, not an object) would stop it, so only answered records go in
    result = score_records([r for r in predictions if isinstance(r, dict) and "model_prediction" in r],
                           source=str(out_dir / "predictions.json"))
    result["skipped"] = len(predictions) - result["scored"]
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint), "kind": info["kind"], "model": info.get("model"), "step": info.get("step"),
        "data": str(data), "audio_dir": audio_dir, "with_audio": with_audio, "limit": limit,
        "batch_size": batch_size, "max_new_tokens": module.hparams.eval_max_new_tokens,
        "records": len(source), "not_scored": dict(not_scored), "logged": logged,
        "seconds": round(time.time() - t0, 2), **result,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "predictions.json").write_text(json.dumps(predictions, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")

    step = "" if results["step"] is None else f" (step {results['step']})"
    print(f"{checkpoint}{step} on {data}")
    print(format_table(result))
    print(not_scored_line(results, out_dir / "results.json"))
    print(f"predictions: {out_dir / 'predictions.json'}")
    return results


def not_scored_line(results: dict, where: str | Path = "results.json") -> str:
    """E.g. ``999 of 1000 records NOT scored: missing_audio (see eval/results.json)``."""
    counts = results.get("not_scored") or {}
    n, total = sum(counts.values()), results.get("records", results.get("scored", 0))
    if not n:
        return f"all {total} records scored"
    why = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{n} of {total} records NOT scored: {why} (see {where})"


# ---------------------------------------------------------------- eval-all

def find_checkpoints(run: str | Path) -> list[Path]:
    """Every checkpoint of a run folder: ``*.ckpt`` files and DeepSpeed ``*.ckpt`` folders, recursively,
    each replaced by its ``_hf`` folder when that exists (no state-dict conversion needed)."""
    found = []
    for p in sorted(Path(run).rglob("*.ckpt")):
        if any(part.startswith(".") for part in p.relative_to(run).parts) or not (p.is_file() or is_deepspeed_dir(p)):
            continue  # hidden folders hold temporary conversions
        hf = p.with_name(p.name[: -len(".ckpt")] + "_hf")
        found.append(hf if is_hf_dir(hf) else p)
    return found


def accuracy_table(rows: list[dict], root: str | Path | None = None) -> str:
    """One line per evaluated checkpoint, best total first: step, sound, music, speech, total (%),
    as R1-AQA's ``show_acc.py`` prints them."""
    def acc(r: dict, name: str) -> float:
        cell = r["total"] if name == "total" else r.get("task", {}).get(name)
        return 100 * cell["acc"] if cell and cell.get("total") else float("nan")

    def label(r: dict) -> str:
        p = Path(r["checkpoint"])
        try:
            return str(p.relative_to(root)) if root else str(p)
        except ValueError:
            return str(p)

    rows = sorted(rows, key=lambda r: acc(r, "total"), reverse=True)
    width = max([10] + [len(label(r)) for r in rows]) + 2
    head = f"{'checkpoint':<{width}}{'step':>7}" + "".join(f"{d:>9}" for d in (*DOMAINS, "total")) + f"{'scored':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        step = "" if r.get("step") is None else str(r["step"])
        lines.append(f"{label(r):<{width}}{step:>7}" + "".join(f"{acc(r, d):>9.2f}" for d in (*DOMAINS, "total"))
                     + f"{r.get('scored', 0):>8}")
    return "\n".join(lines)


def evaluate_all(
    *,
    run: str,
    data: str = DEFAULT_DATA,
    audio_dir: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    with_audio: bool = True,
    force: bool = False,
    dtype: Dtype | None = None,
) -> list[dict]:
    """Evaluate every checkpoint of a run folder on MMAU and print one table, best total accuracy first.

    Each ``*.ckpt`` (file or DeepSpeed folder) found recursively is evaluated through its ``_hf``
    folder when there is one; results go to that checkpoint's default output folder (see
    :func:`evaluate`). Checkpoints whose ``results.json`` already exists are not evaluated again.

    Args:
        run: the run folder (e.g. ``checkpoints/demo``).
        data: MMAU-format JSON list.
        audio_dir: folder the ``audio_id`` paths are relative to, instead of the JSON file's folder.
        batch_size: questions per generation batch.
        max_new_tokens: generation length; default: each checkpoint's own.
        limit: score only the first N scorable records.
        with_audio: False asks the questions without their audio.
        force: evaluate again even where ``results.json`` exists.
        dtype: weights dtype (``bfloat16`` on a GPU); default: each checkpoint's own.

    Returns:
        The results of every checkpoint (stored ones included), best total accuracy first.
    """
    rows = []
    checkpoints = find_checkpoints(run)
    if not checkpoints:
        print(f"no *.ckpt under {run}")
        return []
    for ckpt in checkpoints:
        # an earlier `r1aqa eval` of the .ckpt itself counts as well as one of its _hf folder
        done = [d / "results.json" for d in (default_out(ckpt), default_out(_sibling_ckpt(ckpt) or ckpt))
                if (d / "results.json").is_file()]
        if done and not force:
            print(f"[eval-all] {ckpt}: already evaluated ({done[0]}), skipped")
            rows.append(json.loads(done[0].read_text(encoding="utf-8")))
            continue
        print(f"[eval-all] {ckpt}")
        rows.append(evaluate(checkpoint=str(ckpt), data=data, audio_dir=audio_dir, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, limit=limit, with_audio=with_audio, dtype=dtype))
    rows.sort(key=lambda r: r["total"]["acc"] if r["total"]["total"] else -1.0, reverse=True)
    print()
    print(accuracy_table(rows, run))
    return rows


# ---------------------------------------------------------------- ask

def ask(*, model: str, audio: str, question: str, choices: list[str], max_new_tokens: int = 256) -> str:
    """Ask a checkpoint one multiple-choice question about one audio file; prints the raw output and
    the extracted choice and returns the latter.

    Args:
        model: a Lightning ``.ckpt`` file, a DeepSpeed checkpoint folder, a Hugging Face model folder or a hub id.
        audio: any WAV/FLAC/OGG file; resampled and cut to the model's window.
        question: the question text.
        choices: the options, e.g. ``--choices '["Man", "Woman"]'``.
        max_new_tokens: generation length.
    """
    module, _ = load_for_eval(model, max_new_tokens)
    if torch.cuda.is_available():
        module.cuda()
    fe = module.processor.feature_extractor
    x = load_audio(audio, int(fe.sampling_rate), getattr(fe, "n_samples", None))
    q = Question(id="ask", audio_path=str(audio), question=question, choices=list(choices),
                 answer=choices[0], dataset="MMAU")  # the answer is a placeholder: nothing is scored
    output = module.answer([q], [x])[0]
    answer = extract_answer(output)
    print(f"output: {output}")
    print(f"answer: {answer}")
    return answer
