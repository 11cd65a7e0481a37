"""Data layer: AVQA / MMAU readers -> :class:`Question`, validation policy, Dataset, DataModule, check-data.

Formats (auto-detected, GUIDE §3):

* ``avqa_jsonl`` -- R1-AQA's AVQA file, one JSON object per line (``answer`` is an index into
  ``multi_choice``); a relative ``audio_path`` is resolved against ``audio_dir`` or the file's folder.
* ``avqa_json``  -- the original AVQA ``train_qa.json``: a JSON list of the same records without
  ``audio_path``; the clip is found from ``video_name`` in ``audio_dir`` (or the file's folder),
  see :func:`avqa_audio_name`.
* ``mmau``       -- the MMAU JSON list (``answer`` is the choice string, ``task`` is the domain).

AVQA records may carry optional ``task`` (domain), ``difficulty`` and ``sub-category`` fields (the
synthetic set does); otherwise they count as ``domain`` ("sound") and dataset "AVQA".

Bad records are never dropped silently. ``on_error="raise"`` stops at the first problem;
``on_error="skip"`` leaves bad records out, counts them per reason, logs the counts and still
raises once more than ``max_skip_fraction`` of a file is lost. Records are checked twice: at
start-up (fields + a header-only audio check with ``soundfile.info``) and while reading (full
decode in :class:`AudioQADataset`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from r1aqa_pl.audio import audio_info, load_audio
from r1aqa_pl.records import DataError, Question

log = logging.getLogger(__name__)

FORMATS = ("auto", "avqa_jsonl", "avqa_json", "mmau")
NAMINGS = ("r1aqa", "video_name")
# record-level reasons (skippable); file-level problems (missing_file, malformed_json in a JSON
# list, no_records, too_many_skipped) always raise.
REASONS = ("malformed_json", "missing_field", "bad_field", "answer_index_out_of_range",
           "answer_not_in_choices", "too_few_choices", "missing_audio", "unreadable_audio",
           "empty_audio", "non_finite_audio")


# ---------------------------------------------------------------- reading records

def avqa_audio_name(video_name: str, naming: str = "r1aqa") -> str:
    """The wav file name of an AVQA clip.

    ``naming="r1aqa"``: R1-AQA's extraction names a clip by YouTube id and integer start second,
    so ``"-HG3Omg_89c_000030"`` -> ``"-HG3Omg_89c_30.wav"``; ``naming="video_name"``:
    ``"<video_name>.wav"``. (The reader falls back to the latter when the former does not exist.)
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    m = re.fullmatch(r"(.+)_(\d+)", video_name)
    if naming == "r1aqa" and m:
        return f"{m[1]}_{int(m[2])}.wav"
    return f"{video_name}.wav"


def _entries(path: Path) -> tuple[str, list[tuple[str, str, Any]]]:
    """("jsonl" | "json", [(where, source, record-or-DataError)]); file-level problems raise."""
    if not path.is_file():
        raise DataError(str(path), "file", "missing_file", "data file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl" or text.lstrip().startswith("{"):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rec = DataError(str(path), str(n), "malformed_json", f"not valid JSON ({e.msg}, column {e.colno})")
            out.append((str(n), f"{path}:{n}", rec))
        kind = "jsonl"
    else:
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as e:  # a broken list cannot be split into records: whole file
            raise DataError(str(path), str(e.lineno), "malformed_json",
                            f"not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(recs, list):
            raise DataError(str(path), "file", "malformed_json", "expected a JSON list of records (or JSONL)")
        out = [(f"record {i}", f"{path}[{i}]", r) for i, r in enumerate(recs)]
        kind = "json"
    if not out:
        raise DataError(str(path), "file", "no_records", "file contains no records")
    return kind, out


def _detect(kind: str, entries: list, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if kind == "jsonl":
        return "avqa_jsonl"
    first = next((r for _, _, r in entries if isinstance(r, dict)), {})
    return "avqa_json" if "multi_choice" in first else "mmau"


def detect_format(path: str | Path) -> str:
    """The format :func:`iter_questions` would use for ``path`` with ``fmt="auto"``."""
    return _detect(*_entries(Path(path)), "auto")


def _field(rec: dict, key: str, err, types=(str,)):
    if rec.get(key) is None:
        raise err("missing_field", f"missing field '{key}'")
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, types):
        raise err("bad_field", f"field '{key}' should be {'/'.join(t.__name__ for t in types)}, got {v!r}")
    return v


def _choices(rec: dict, key: str, err) -> list[str]:
    v = _field(rec, key, err, (list,))
    if not all(isinstance(c, str) for c in v):
        raise err("bad_field", f"'{key}' must be a list of strings, got {v!r}")
    if len(v) < 2:
        raise err("too_few_choices", f"'{key}' has {len(v)} choice(s), need at least 2")
    return list(v)


def _resolve(p: str, base: Path) -> str:
    return str(Path(p) if Path(p).is_absolute() else base / p)


def _parse(rec: Any, fmt: str, err, source: str, base: Path, domain: str, naming: str) -> Question:
    if not isinstance(rec, dict):
        raise err("malformed_json", f"expected a JSON object, got {type(rec).__name__}")
    rid = str(_field(rec, "id", err, (str, int)))
    extra = dict(difficulty=str(rec.get("difficulty") or ""), sub_category=str(rec.get("sub-category") or ""),
                 source=source, raw=rec)
    if fmt == "mmau":
        text, choices = _field(rec, "question", err), _choices(rec, "choices", err)
        answer = _field(rec, "answer", err)
        if answer not in choices:
            raise err("answer_not_in_choices", f"id={rid}: answer {answer!r} is not one of {choices}")
        audio = _resolve(_field(rec, "audio_id", err), base)
        return Question(rid, audio, text, choices, answer, domain=str(rec.get("task") or domain).lower(),
                        dataset=str(rec.get("dataset") or ""), **extra)
    text, choices = _field(rec, "question_text", err), _choices(rec, "multi_choice", err)
    idx = _field(rec, "answer", err, (int,))
    if not 0 <= idx < len(choices):
        raise err("answer_index_out_of_range", f"id={rid}: answer index {idx} is outside multi_choice (0..{len(choices) - 1})")
    if rec.get("audio_path"):
        audio = _resolve(_field(rec, "audio_path", err), base)
    elif rec.get("video_name"):
        name = _field(rec, "video_name", err)
        audio = str(base / avqa_audio_name(name, naming))
        if not Path(audio).exists() and (base / f"{name}.wav").exists():
            audio = str(base / f"{name}.wav")
    else:
        raise err("missing_field", f"id={rid}: needs 'audio_path' or 'video_name'")
    return Question(rid, audio, text, choices, choices[idx], domain=str(rec.get("task") or domain).lower(),
                    dataset=str(rec.get("dataset_name") or "AVQA"), **extra)


def iter_questions(path: str | Path, audio_dir: str | Path | None = None, fmt: str = "auto",
                   domain: str = "sound", naming: str = "r1aqa") -> Iterator[Question | DataError]:
    """One :class:`Question` or record-level :class:`DataError` per record (no audio check); file-level problems raise."""
    path = Path(path)
    kind, entries = _entries(path)
    fmt = _detect(kind, entries, fmt)
    base = Path(audio_dir) if audio_dir else path.parent
    for where, source, rec in entries:
        if isinstance(rec, DataError):
            yield rec
            continue
        err = lambda reason, msg, w=where: DataError(str(path), w, reason, msg)  # noqa: E731
        try:
            yield _parse(rec, fmt, err, source, base, domain, naming)
        except DataError as e:
            yield e


def _record_error(q: Question, e: DataError) -> DataError:
    """An audio error re-issued under the record's file and line/record, so the message points at the data."""
    m = re.fullmatch(r"(.*)\[(\d+)\]", q.source) or re.fullmatch(r"(.*):(\d+)", q.source)
    file, where = (m[1], f"record {m[2]}" if q.source.endswith("]") else m[2]) if m else (q.source, "?")
    return DataError(file, where, e.reason, f"id={q.id}: {e}")


def check_audio(q: Question) -> Question | DataError:
    """The cheap start-up check: the clip exists, its header reads, it has frames."""
    try:
        audio_info(q.audio_path or "")
        return q
    except DataError as e:
        return _record_error(q, e)


def _enforce(path, total: int, problems: list[DataError], max_skip_fraction: float) -> Counter:
    """Skip policy: log the per-reason counts; raise when more than ``max_skip_fraction`` is lost."""
    counts = Counter(e.reason for e in problems)
    if problems:
        log.warning("%s: skipped %d of %d records %s; first: %s", path, len(problems), total, dict(counts), problems[0])
        if len(problems) > max_skip_fraction * total:
            raise DataError(str(path), "file", "too_many_skipped",
                            f"{len(problems)} of {total} records are bad ({len(problems) / total:.1%} > "
                            f"max_skip_fraction={max_skip_fraction}): {dict(counts)}; first: {problems[0]}")
    return counts


def load_questions(path: str | Path, audio_dir: str | Path | None = None, fmt: str = "auto", domain: str = "sound",
                   naming: str = "r1aqa", on_error: str = "raise", max_skip_fraction: float = 0.1,
                   check_audio_files: bool = True) -> tuple[list[Question], Counter]:
    """Read and validate a file under the error policy; returns (kept questions, skipped counts per reason)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kept, problems, total = [], [], 0
    for item in iter_questions(path, audio_dir, fmt, domain, naming):
        total += 1
        if isinstance(item, Question) and check_audio_files:
            item = check_audio(item)
        if isinstance(item, DataError):
            if on_error == "raise":
                raise item
            problems.append(item)
        else:
            kept.append(item)
    return kept, _enforce(path, total, problems, max_skip_fraction)


def read_questions(path: str | Path, audio_dir: str | Path | None = None, fmt: str = "auto", domain: str = "sound",
                   naming: str = "r1aqa", on_error: str = "raise", max_skip_fraction: float = 0.1,
                   check_audio_files: bool = False) -> list[Question]:
    """All questions of an AVQA (JSONL or JSON list) or MMAU file; by default fields only (a scorer needs no audio)."""
    return load_questions(path, audio_dir, fmt, domain, naming, on_error, max_skip_fraction, check_audio_files)[0]


# ---------------------------------------------------------------- dataset + datamodule

class AudioQADataset(Dataset):
    """Questions with their decoded audio (``None`` when ``with_audio=False``: the audio-free ablation).

    In skip mode a clip that fails to decode is replaced by the next readable record (index + 1,
    wrapping around), remembered so it is not retried, and counted in :attr:`skipped`; once more
    than ``max_bad`` clips failed it raises. With ``num_workers > 0`` each worker keeps its own
    counts (and logs a warning per failure); the main process sees them with ``num_workers=0``.
    """

    def __init__(self, questions: list[Question], sampling_rate: int = 16000, max_samples: int | None = None,
                 with_audio: bool = True, on_error: str = "raise", max_bad: float = math.inf):
        self.questions, self.sampling_rate, self.max_samples = list(questions), sampling_rate, max_samples
        self.with_audio, self.on_error, self.max_bad = with_audio, on_error, max_bad
        self.bad: set[int] = set()
        self.skipped: Counter = Counter()

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i: int) -> dict:
        if not self.with_audio:
            return {"question": self.questions[i], "audio": None}
        for j in (k % len(self) for k in range(i, i + len(self))):
            if j in self.bad:
                continue
            q = self.questions[j]
            try:
                return {"question": q, "audio": load_audio(q.audio_path or "", self.sampling_rate, self.max_samples)}
            except DataError as e:
                err = _record_error(q, e)
                if self.on_error == "raise":
                    raise err from None
                self.bad.add(j)
                self.skipped[e.reason] += 1
                log.warning("unreadable while reading, replaced by the next record: %s", err)
                if len(self.bad) > self.max_bad:
                    raise DataError(err.source, "file", "too_many_skipped",
                                    f"{len(self.bad)} clips failed to decode while reading, more than "
                                    f"max_skip_fraction allows; last: {err}") from None
        raise DataError("dataset", "file", "too_many_skipped", "no record in the dataset can be decoded")


class ResumableSampler(DistributedSampler):
    """The training shuffle: a permutation fixed by (seed, epoch), this rank's share of it, and where to start.

    A :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it under DDP / DeepSpeed rather
    than replacing it); with one process it is a plain seeded shuffle. ``start`` (samples of this rank
    to skip) applies to the next ``__iter__`` only, so a run resumed mid-epoch continues with exactly
    the batches an uninterrupted run would have seen; ``len`` stays the whole epoch, as Lightning's
    progress counters expect. No global RNG is touched.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, epoch: int = 0, start: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch, self.start = epoch, start

    def __iter__(self):
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])


class _TrainLoader(DataLoader):
    """The training DataLoader. Its position is restored through the data module's state (see
    :meth:`AudioQADataModule.state_dict`); these no-op methods only tell Lightning that the loader
    resumes mid-epoch correctly, which silences its "dataloader is not resumable" warning."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


def collate(batch: list[dict]) -> dict:
    """Raw records + decoded audio; the model side runs the processor (prompt template, features)."""
    return {"questions": [b["question"] for b in batch], "audio": [b["audio"] for b in batch]}


_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                 None: ("train", "val", "test")}


class AudioQADataModule(L.LightningDataModule):
    """AVQA / MMAU files -> batches of ``{"questions": [...], "audio": [...]}``; all data is validated in ``setup``.

    Args:
        train_file: training questions (R1-AQA AVQA JSONL, AVQA train_qa.json or MMAU JSON).
        val_file: questions scored during training (usually MMAU test-mini).
        test_file: questions for ``test`` / ``predict``.
        audio_dir: folder that relative audio paths (and AVQA video_name clips) live in; default: each file's folder.
        train_domain: domain of AVQA records without a ``task`` field (MMAU records have their own).
        feature_extractor: hub id or local folder; when given, sampling rate and window (``n_samples``) come from it.
        sampling_rate: audio rate when no feature_extractor is given.
        max_audio_seconds: window length when no feature_extractor is given (Qwen2-Audio: 30 s).
        batch_size: prompts per training batch (per device).
        val_batch_size: prompts per validation / test batch.
        num_workers: DataLoader worker processes.
        seed: seed of the training shuffle (order fixed by seed and epoch, sharded across ranks; see ResumableSampler).
        on_error: "raise" (first bad record stops) or "skip" (leave out, count, log).
        max_skip_fraction: in skip mode, the largest fraction of a file that may be lost before it raises.
        with_audio: False gives ``audio=None`` in every batch (the audio-free ablation; no audio is checked).
        limit_val: only the first N valid val records (quick evaluations during training).
        avqa_naming: how AVQA ``video_name`` maps to a wav name: "r1aqa" or "video_name" (see :func:`avqa_audio_name`).
    """

    def __init__(self, train_file: str | None = None, val_file: str | None = None, test_file: str | None = None,
                 audio_dir: str | None = None, train_domain: str = "sound", feature_extractor: str | None = None,
                 sampling_rate: int = 16000, max_audio_seconds: float = 30.0, batch_size: int = 1,
                 val_batch_size: int = 8, num_workers: int = 0, seed: int = 0,
                 on_error: Literal["raise", "skip"] = "raise", max_skip_fraction: float = 0.1,
                 with_audio: bool = True, limit_val: int | None = None,
                 avqa_naming: Literal["r1aqa", "video_name"] = "r1aqa"):
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, AudioQADataset] = {}
        self.startup_skipped: dict[str, Counter] = {}
        self.sampling_rate: int | None = None
        self.max_samples: int | None = None
        self._resume: dict | None = None  # set by load_state_dict, used by the next train_dataloader()

    def _window(self) -> tuple[int, int]:
        """(sampling rate, window in samples): from the feature extractor when named, so they match the model."""
        h = self.hparams
        if h.feature_extractor:
            from transformers import AutoFeatureExtractor

            fe = AutoFeatureExtractor.from_pretrained(h.feature_extractor)
            sr = int(fe.sampling_rate)
            return sr, int(getattr(fe, "n_samples", None) or round(h.max_audio_seconds * sr))
        return int(h.sampling_rate), int(round(h.max_audio_seconds * h.sampling_rate))

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if self.max_samples is None:
            self.sampling_rate, self.max_samples = self._window()
        if stage == "fit" and not h.train_file:
            raise ValueError("AudioQADataModule: train_file is required for fit")
        for split in _STAGE_SPLITS.get(stage, ("train", "val", "test")):
            path = getattr(h, f"{split}_file")
            if not path or split in self.datasets:
                continue
            qs, counts = load_questions(path, h.audio_dir, domain=h.train_domain, naming=h.avqa_naming,
                                        on_error=h.on_error, max_skip_fraction=h.max_skip_fraction,
                                        check_audio_files=h.with_audio)
            total = len(qs) + sum(counts.values())
            if split == "val" and h.limit_val:
                qs = qs[: h.limit_val]
            self.startup_skipped[split] = counts
            budget = math.floor(h.max_skip_fraction * total) - sum(counts.values())
            self.datasets[split] = AudioQADataset(qs, self.sampling_rate, self.max_samples, h.with_audio,
                                                  h.on_error, max_bad=budget)
            log.info("%s: %d questions from %s %s", split, len(qs), path, dict(Counter(q.domain for q in qs)))

    @property
    def skipped(self) -> dict[str, Counter]:
        """Records left out per split and reason: at start-up plus while reading (this process)."""
        return {s: self.startup_skipped.get(s, Counter()) + d.skipped for s, d in self.datasets.items()}

    def _loader(self, split: str, batch_size: int, sampler=None):
        if split not in self.datasets:
            return []
        # an own generator: iterating a loader never draws from the global RNG (exact resume)
        g = torch.Generator().manual_seed(self.hparams.seed)
        cls = _TrainLoader if split == "train" else DataLoader
        return cls(self.datasets[split], batch_size=batch_size, sampler=sampler, generator=g,
                   num_workers=self.hparams.num_workers, collate_fn=collate,
                   persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        """Seeded shuffle, sharded across ranks, continuing mid-epoch after a resume (see :meth:`state_dict`)."""
        if "train" not in self.datasets:
            return []
        h, trainer, resume = self.hparams, self.trainer, self._resume or {}
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        epoch, batches = int(resume.get("epoch", 0)), int(resume.get("batches", 0))
        per_epoch = math.ceil(math.ceil(len(self.datasets["train"]) / world) / h.batch_size)
        if batches >= per_epoch:  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self._resume = None
        sampler = ResumableSampler(self.datasets["train"], world, rank, h.seed, epoch, batches * h.batch_size)
        return self._loader("train", h.batch_size, sampler)

    def state_dict(self) -> dict:
        """Where training stands (saved in Lightning checkpoints): epoch and batches already trained on in it."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict) or None

    def val_dataloader(self):
        return self._loader("val", self.hparams.val_batch_size)

    def test_dataloader(self):
        return self._loader("test", self.hparams.val_batch_size)

    def predict_dataloader(self):
        return self._loader("test", self.hparams.val_batch_size)


# ---------------------------------------------------------------- check-data

def _check_file(name: str, path: str, audio_dir: str | None, on_error: str, max_skip_fraction: float,
                domain: str, avqa_naming: str, decode: bool, examples: int) -> int:
    from tqdm import tqdm

    print(f"== {name}: {path}")
    try:
        fmt = detect_format(path)
        items = list(iter_questions(path, audio_dir, "auto", domain, avqa_naming))
    except DataError as e:
        print(f"  FAIL: {e}")
        return 1
    domains, seconds, rates, problems = Counter(), [], Counter(), []
    for item in tqdm(items, desc=f"check {name}", unit="rec"):
        if isinstance(item, Question):
            domains[item.domain] += 1
            try:
                info = audio_info(item.audio_path or "")
                if decode:  # catches corrupt or NaN samples that the header cannot show
                    load_audio(item.audio_path or "", info["sample_rate"])
                seconds.append(info["seconds"])
                rates[info["sample_rate"]] += 1
            except DataError as e:
                item = _record_error(item, e)
        if isinstance(item, DataError):
            problems.append(item)
            if on_error == "raise":
                break
    n = len(items)
    print(f"  format: {fmt}; records: {n}; usable: {n - len(problems)}; problems: {len(problems)}")
    print("  domains: " + (", ".join(f"{d} {c}" for d, c in sorted(domains.items())) or "-"))
    if seconds:
        s = np.array(seconds)
        print(f"  audio: {len(s)} clips; seconds min {s.min():.2f} / mean {s.mean():.2f} / max {s.max():.2f}")
        print("  sample rates: " + ", ".join(f"{r} Hz x{c}" for r, c in sorted(rates.items())))
    else:
        print("  audio: no readable clips")
    by_reason: dict[str, list[DataError]] = {}
    for e in problems:
        by_reason.setdefault(e.reason, []).append(e)
    for reason, errs in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(errs)} {reason}")
        for e in errs[:examples]:
            print(f"      e.g. {e}")
    if not problems:
        print("  OK: a run with on_error=raise starts")
        return 0
    if on_error == "raise":
        print("  FAIL: stopped at the first problem (on_error=raise)")
    else:
        frac = len(problems) / n
        verdict = "would start" if frac <= max_skip_fraction else "would fail"
        print(f"  FAIL: on_error=raise stops at the first problem; on_error=skip loses {len(problems)}/{n} "
              f"({frac:.1%}) and {verdict} (max_skip_fraction={max_skip_fraction})")
    return 1


def check_data(train: str | None = None, val: str | None = None, test: str | None = None,
               audio_dir: str | None = None, on_error: Literal["raise", "skip"] = "skip",
               max_skip_fraction: float = 0.1, domain: str = "sound",
               avqa_naming: Literal["r1aqa", "video_name"] = "r1aqa", decode: bool = True, examples: int = 3) -> int:
    """Scan data files before a run: counts, domains, audio durations and rates, problems by reason.

    Exits non-zero when a run with on_error=raise would fail, so a broken file shows up now,
    not an hour into training.

    Args:
        train: training file (AVQA JSONL / train_qa.json / MMAU JSON).
        val: validation file.
        test: test file.
        audio_dir: folder for relative audio paths; default: each file's folder.
        on_error: "skip" scans every record and reports all problems; "raise" stops at the first.
        max_skip_fraction: used to say whether an on_error=skip run would start.
        domain: domain of AVQA records without a "task" field.
        avqa_naming: AVQA video_name -> wav naming, "r1aqa" or "video_name".
        decode: also decode every clip fully (finds corrupt or NaN samples; slower).
        examples: how many examples to print per problem reason.
    """
    files = [(n, p) for n, p in (("train", train), ("val", val), ("test", test)) if p]
    if not files:
        print("check-data: nothing to check; give --train, --val and/or --test")
        return 2
    status = 0
    for name, path in files:
        status |= _check_file(name, path, audio_dir, on_error, max_skip_fraction, domain, avqa_naming, decode, examples)
    return status
