"""The LightningDataModule: questions with their decoded audio, a resumable seeded shuffle, and the
start-up checks that make a bad file fail before training starts."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from r1aqa_pl import benchmarks
from r1aqa_pl.data import selection
from r1aqa_pl.data.audio import load_clips
from r1aqa_pl.data.formats import load_questions, record_error
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.question import DataError, Question

log = logging.getLogger(__name__)


class AudioQADataset(Dataset):
    """Questions with their decoded audio (``None`` when ``with_audio=False``: the audio-free ablation).

    In skip mode a clip that fails to decode is replaced by the next readable record (index + 1,
    wrapping around), remembered so it is not retried, and counted in :attr:`skipped`; once more
    than ``max_bad`` clips failed it raises. In report mode (evaluation) the item comes back with
    ``audio=None`` and ``error=<reason>``, never replaced (a replacement would be scored twice). With
    ``num_workers > 0`` each worker keeps its own counts (and logs a warning per failure); the main process
    sees them with ``num_workers=0``.
    """

    def __init__(
        self,
        questions: list[Question],
        sampling_rate: int = 16000,
        max_samples: int | None = None,
        with_audio: bool = True,
        on_error: str = "raise",
        max_bad: float = math.inf,
    ):
        self.questions, self.sampling_rate, self.max_samples = list(questions), sampling_rate, max_samples
        self.with_audio, self.on_error, self.max_bad = with_audio, on_error, max_bad
        self.bad: set[int] = set()
        self.skipped: Counter = Counter()
        # what the evaluation callback reads: the benchmark (None: not one), its version, the file, the set's label
        self.benchmark: str | None = None
        self.version: str | None = None
        self.data: str | None = None
        self.label: str | None = None

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
                return {"question": q, "audio": load_clips(q, self.sampling_rate, self.max_samples)}
            except DataError as e:
                if self.on_error == "report":
                    return {"question": q, "audio": None, "error": e.reason}
                err = record_error(q, e)
                if self.on_error == "raise":
                    raise err from None
                self.bad.add(j)
                self.skipped[e.reason] += 1
                log.warning("unreadable while reading, replaced by the next record: %s", err)
                if len(self.bad) > self.max_bad:
                    raise DataError(
                        err.source,
                        "file",
                        "too_many_skipped",
                        f"{len(self.bad)} clips failed to decode while reading, more than "
                        f"max_skip_fraction allows; last: {err}",
                    ) from None
        raise DataError("dataset", "file", "too_many_skipped", "no record in the dataset can be decoded")


class ResumableSampler(DistributedSampler):
    """The training shuffle: a permutation fixed by (seed, epoch), this rank's share of it, and where to start.

    A :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it under DDP / DeepSpeed rather
    than replacing it); with one process it is a plain seeded shuffle. ``start`` (samples of this rank
    to skip) applies to the next ``__iter__`` only, so a run resumed mid-epoch continues with exactly
    the batches an uninterrupted run would have seen; ``len`` stays the whole epoch, as Lightning's
    progress counters expect. No global RNG is touched. ``consumed`` (prompts of the epoch's order already
    served, by any number of processes; a run resumed on another world size) also applies to the next
    ``__iter__`` only: the rest of the order is dealt over the ranks from there.
    """

    def __init__(
        self,
        dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        order: list[int] | None = None,
        order_epochs: int = 0,
        consumed: int = 0,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.epoch, self.start, self.consumed = epoch, start, consumed
        self.order, self.order_epochs = order, order_epochs  # curriculum: a fixed order for the first epochs

    def __iter__(self):
        consumed, self.consumed = self.consumed, 0
        if consumed:  # the order's first `consumed` prompts were served before: deal the rest over these ranks
            if self.order is not None and self.epoch < self.order_epochs:
                order = list(self.order)
            else:  # DistributedSampler's permutation
                g = torch.Generator()
                g.manual_seed(self.seed + self.epoch)
                order = torch.randperm(len(self.dataset), generator=g).tolist()
            rest = order[consumed:]
            rest += (order * self.num_replicas)[: -len(rest) % self.num_replicas]  # padded from the epoch's start
            return iter(rest[self.rank :: self.num_replicas])
        if self.order is not None and self.epoch < self.order_epochs:
            order = list(self.order)
            order += order[: self.total_size - len(order)]  # padded as DistributedSampler pads
            indices = order[self.rank : self.total_size : self.num_replicas]
        else:
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


_STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
    None: ("train", "val", "test"),
}


class AudioQADataModule(L.LightningDataModule):
    """AVQA / MMAU files -> batches of ``{"questions": [...], "audio": [...]}``; all data is validated in ``setup``.

    Args:
        train_file: training questions (R1-AQA AVQA JSONL, AVQA train_qa.json or MMAU JSON).
        val_file: questions scored during training (usually MMAU test-mini): one file, or several as
            ``{label: file}`` (e.g. ``{mmau: test-mini.json, mmar: MMAR-meta.jsonl}``), each validated and logged
            under its label (``val/<label>/acc/...``); the benchmark is the label where it names one, else
            recognised from the file.
        val_versions: a benchmark version per label (or per benchmark name for a single file), for files
            that are not an official release (recognised ones need none; otherwise "unknown").
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
        max_clips: leave out (counted, warned) the questions over more clips than this, e.g. 1 for a family whose
            chat template takes one audio part per turn (Audio Flamingo 3); default: keep every question.
        avqa_naming: how AVQA ``video_name`` maps to a wav name: "r1aqa" or "video_name" (see :func:`avqa_audio_name`).
        hide_train_answers: blank every training record's answer (test-time RL: no label reaches the trainer;
            a reward that reads ``answer`` then scores 0).
        audio_contribution: the JSONL ``r1aqa audio-contribution`` wrote for the training file (labels, pass rates).
        label_weights: times each training question is kept per label, e.g. ``{answerable_without_audio: 0}``
            (filter) or ``0.5`` (seen half as often); needs ``audio_contribution``.
        curriculum_epochs: the first N epochs serve the training questions easy to hard (pass rate with
            audio, highest first) instead of shuffled; needs ``audio_contribution``.
    """

    allow_withheld = False  # a val file without answers is refused (evaluation writes a submission instead)

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | dict[str, str] | None = None,
        test_file: str | None = None,
        val_versions: dict[str, str] | None = None,
        audio_dir: str | None = None,
        train_domain: str = "sound",
        feature_extractor: str | None = None,
        sampling_rate: int = 16000,
        max_audio_seconds: float = 30.0,
        batch_size: int = 1,
        val_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        max_skip_fraction: float = 0.1,
        with_audio: bool = True,
        limit_val: int | None = None,
        max_clips: int | None = None,
        avqa_naming: Literal["r1aqa", "video_name"] = "r1aqa",
        hide_train_answers: bool = False,
        audio_contribution: str | None = None,
        label_weights: dict[str, float] | None = None,
        curriculum_epochs: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, AudioQADataset] = {}
        self.startup_skipped: dict[str, Counter] = {}
        self.sampling_rate: int | None = None
        self.max_samples: int | None = None
        self._resume: dict | None = None  # set by load_state_dict, used by the next train_dataloader()
        self._order: list[int] | None = None  # the curriculum's order of the training set
        self._dealt: tuple[int, int, int] | None = None  # (epoch, its prompts served before, batches then): state_dict
        if (label_weights or curriculum_epochs) and not audio_contribution:
            raise ValueError(
                "label_weights and curriculum_epochs need audio_contribution (a file from r1aqa audio-contribution)"
            )

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
        for split, label, path in self._files(stage):
            if split in self.datasets:
                continue
            qs, counts = load_questions(
                path,
                h.audio_dir,
                domain=h.train_domain,
                naming=h.avqa_naming,
                on_error=h.on_error,
                max_skip_fraction=h.max_skip_fraction,
                check_audio_files=h.with_audio,
            )
            total = len(qs) + sum(counts.values())
            if h.max_clips is not None:
                kept = [q for q in qs if len(q.clips) <= h.max_clips]
                if len(kept) < len(qs):
                    counts["too_many_clips"] = counts.get("too_many_clips", 0) + len(qs) - len(kept)
                    log.warning("%s: left out %d of %d questions over more than %d clip(s) (data.max_clips)",
                                path, len(qs) - len(kept), len(qs), h.max_clips)
                qs = kept
            if split.startswith("val") and h.limit_val:
                qs = qs[: h.limit_val]
            if split == "train" and h.audio_contribution:
                qs = self._select(qs)
            if split == "train" and h.hide_train_answers:
                qs = [dataclasses.replace(q, answer="", raw={}) for q in qs]
            self.startup_skipped[split] = counts
            # questions left out by choice (max_clips) do not use up the bad-record budget
            lost = sum(n for reason, n in counts.items() if reason != "too_many_clips")
            budget = math.floor(h.max_skip_fraction * total) - lost
            ds = self.datasets[split] = AudioQADataset(
                qs, self.sampling_rate, self.max_samples, h.with_audio, h.on_error, max_bad=budget
            )
            ds.label, ds.data = label, path
            if split != "train":
                self._identify(ds, split, label, path)
            log.info("%s: %d questions from %s %s", split, len(qs), path, dict(Counter(q.domain for q in qs)))

    def _files(self, stage: str | None) -> list[tuple[str, str | None, str]]:
        """(dataset key, label, file) of the splits a stage needs; several val files are keyed ``val/<label>``."""
        h, out = self.hparams, []
        for split in _STAGE_SPLITS.get(stage, ("train", "val", "test")):
            files = getattr(h, f"{split}_file")
            if isinstance(files, dict):
                out += [(f"{split}/{label}", str(label), path) for label, path in files.items()]
            elif files:
                out.append((split, None, files))
        return out

    def _identify(self, ds: AudioQADataset, split: str, label: str | None, path: str) -> None:
        """The benchmark and version of a file; a val file without answers (a test split) fails here, not at step 0."""
        try:
            bench = benchmarks.benchmark_for(path, label if label in benchmarks.BENCHMARKS else None)
        except ValueError:
            return  # not a benchmark file (e.g. AVQA questions held out): the callback's own benchmark scores it
        records = read_records(path)
        declared = (self.hparams.val_versions or {}).get(label or bench.name)
        ds.benchmark, ds.version = bench.name, bench.version(records, declared)
        if split.startswith("val") and not self.allow_withheld and bench.withheld(records):
            raise DataError(
                path,
                "file",
                "answers_withheld",
                f"no record has an answer ({bench.title} test split?): it cannot be scored during "
                "training; answer it with `r1aqa eval --data ...`, which writes the submission file",
            )

    def _select(self, qs: list[Question]) -> list[Question]:
        """Training questions weighted or filtered by their audio-contribution label; the curriculum's order."""
        h = self.hparams
        lines = selection.labels_for(qs, selection.read_labels(h.audio_contribution), h.audio_contribution)
        if h.label_weights:
            keep = selection.weight_by_label(lines, h.label_weights, h.seed)
            qs, lines = [qs[i] for i in keep], [lines[i] for i in keep]
            if not qs:
                raise DataError(
                    h.audio_contribution,
                    "file",
                    "empty_selection",
                    f"label_weights {dict(h.label_weights)} leave no training question",
                )
        self._order = selection.easy_to_hard(lines) if h.curriculum_epochs else None
        log.info(
            "train: %d questions after label_weights %s; curriculum for %d epochs",
            len(qs),
            h.label_weights,
            h.curriculum_epochs,
        )
        return qs

    @property
    def skipped(self) -> dict[str, Counter]:
        """Records left out per split and reason: at start-up plus while reading (this process)."""
        return {s: self.startup_skipped.get(s, Counter()) + d.skipped for s, d in self.datasets.items()}

    def _loader(self, split: str, batch_size: int, sampler=None, collate_fn=collate):
        if split not in self.datasets:
            return []
        # an own generator: iterating a loader never draws from the global RNG (exact resume)
        g = torch.Generator().manual_seed(self.hparams.seed)
        cls = _TrainLoader if split == "train" else DataLoader
        return cls(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            generator=g,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self):
        """Seeded shuffle, sharded across ranks, continuing mid-epoch after a resume (see :meth:`state_dict`)."""
        if "train" not in self.datasets:
            return []
        h, trainer, resume = self.hparams, self.trainer, self._resume or {}
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        epoch, batches = int(resume.get("epoch", 0)), int(resume.get("batches", 0))
        # prompts of the epoch served (set when it began on another world size; see training.resume.reposition_data)
        consumed = int(resume.get("prompts", 0))
        per_epoch = math.ceil(math.ceil(len(self.datasets["train"]) / world) / h.batch_size)
        if batches >= per_epoch or consumed >= len(self.datasets["train"]):  # the next epoch starts afresh
            epoch, batches, consumed = epoch + 1, 0, 0
        self._resume = None
        self._dealt = (epoch, consumed, batches) if consumed else None
        sampler = ResumableSampler(
            self.datasets["train"], world, rank, h.seed, epoch, 0 if consumed else batches * h.batch_size,
            self._order, h.curriculum_epochs, consumed,
        )
        return self._loader("train", h.batch_size, sampler)

    def state_dict(self) -> dict:
        """Where training stands (saved in Lightning checkpoints): epoch and batches already trained on in it (in an
        epoch begun on another world size, also the prompts of its order served)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        state = {"epoch": trainer.current_epoch, "batches": batches}
        if self._dealt and self._dealt[0] == trainer.current_epoch:  # began on another world size: count prompts
            epoch, served, then = self._dealt
            state["prompts"] = served + (batches - then) * self.hparams.batch_size * trainer.world_size
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict) or None

    def val_dataloader(self):
        """One loader, or one per labelled file (Lightning's ``dataloader_idx`` in that order)."""
        if isinstance(self.hparams.val_file, dict):
            return [self._loader(f"val/{label}", self.hparams.val_batch_size) for label in self.hparams.val_file]
        return self._loader("val", self.hparams.val_batch_size)

    def test_dataloader(self):
        return self._loader("test", self.hparams.val_batch_size)

    def predict_dataloader(self):
        return self._loader("test", self.hparams.val_batch_size)
