"""One record type for an audio question, whatever file format it came from.

The trainer, the reward functions, the metric and the scorer only ever see :class:`Question`,
so AVQA (JSONL or the original JSON list) and benchmark files differ only in their readers
(:mod:`r1aqa_pl.data.formats`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file, the line or record, and what is wrong."""

    def __init__(self, source: str, where: str, reason: str, message: str):
        self.source, self.where, self.reason = source, where, reason
        super().__init__(f"{source}:{where}: {message}")


@dataclass
class Question:
    """An audio multiple-choice question.

    ``audio_path`` is one clip, or a list of clips heard in order (MMAU-Pro's multi-audio questions; the
    prompt carries one audio part per clip); :attr:`clips` reads either as a list.
    ``answer`` is always the choice *string* (AVQA's index is resolved by the reader), or "" where a
    benchmark withholds its answers (the MMAU test set);
    ``domain`` is the benchmark's task (MMAU: sound / music / speech); ``raw`` keeps the source record so that
    prediction files can be written back in the source's own format.
    """

    id: str
    audio_path: str | list[str] | None
    question: str
    choices: list[str]
    answer: str
    domain: str = "sound"
    difficulty: str = ""
    sub_category: str = ""
    category: str = ""  # a benchmark's category (MMAU: Reasoning / Perception; MMAR: Signal ... Cultural Layer)
    dataset: str = ""
    source: str = ""  # "file:line" or "file[index]" for error messages
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def clips(self) -> list[str]:
        """The question's clips in order: [] without audio, one for most benchmarks, several for multi-audio items."""
        if self.audio_path is None:
            return []
        return list(self.audio_path) if isinstance(self.audio_path, (list, tuple)) else [self.audio_path]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
