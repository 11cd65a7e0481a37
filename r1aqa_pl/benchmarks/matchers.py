"""How a free-text prediction is matched to one of a question's choices: a small seam.

MMAU-Pro's official scorer maps each prediction to the nearest choice under an embedding model
(NV-Embed-v2) and counts it right when that choice is the answer; the project's own string rule
(MMAU's, :func:`r1aqa_pl.benchmarks.mmau.is_correct`) needs no model. Both are here, selected by name
(``"string"``, ``"embedding"``) or by the ``class_path`` of a :class:`ChoiceMatcher` subclass with its
``init_args``, through :data:`CHOICE_MATCHERS`.
"""

from __future__ import annotations

from typing import Any

from r1aqa_pl.benchmarks.mmau import is_correct as mmau_rule
from r1aqa_pl.registry import Registry


class ChoiceMatcher:
    """Decides whether a prediction picks the answer among the choices."""

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        raise NotImplementedError

    def chance(self, answer: str, choices: list[str]) -> float:
        """Expected accuracy of a uniform guess among the choices, under this matcher."""
        return sum(self.is_correct(c, answer, choices) for c in choices) / len(choices) if choices else 0.0

    def describe(self) -> str:
        """How multiple choice was scored, for the table's heading."""
        return type(self).__name__


CHOICE_MATCHERS: Registry[ChoiceMatcher] = Registry("choice matcher", ChoiceMatcher)


@CHOICE_MATCHERS.register("string")
class StringMatch(ChoiceMatcher):
    """MMAU's string rule: every answer token present, no token that only a wrong choice has."""

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        return mmau_rule(prediction, answer, choices)

    def describe(self) -> str:
        return "string rule (MMAU's)"


@CHOICE_MATCHERS.register("embedding")
class EmbeddingMatch(ChoiceMatcher):
    """The nearest choice by cosine similarity of sentence embeddings; right when it is the answer.

    As the official scorer: the prediction and the choices are embedded separately, L2-normalised,
    compared by dot product, and the first best choice wins (an empty prediction is embedded too).
    The embedding is the model's own ``encode(texts, instruction="", max_length=...)`` where it has one
    (NV-Embed-v2, loaded with ``trust_remote_code``), else the mean of the last hidden states over the
    attention mask (any ``AutoModel`` encoder).

    Args:
        model: a hub id or a local folder (``from_pretrained``); the official one is ``nvidia/NV-Embed-v2``.
        max_length: longest text in tokens (the official 4096; capped at the model's positions).
        device: where the model runs (default: a GPU when there is one).
        trust_remote_code: allow the model's own code (NV-Embed-v2 needs it).
        pooling: ``"auto"`` (the model's ``encode`` where it has one, else mean) or ``"mean"``.
    """

    def __init__(self, model: str = "nvidia/NV-Embed-v2", max_length: int = 4096, device: str | None = None,
                 trust_remote_code: bool = False, pooling: str = "auto"):
        if pooling not in ("auto", "mean"):
            raise ValueError(f"pooling must be 'auto' or 'mean', got {pooling!r}")
        self.model, self.max_length, self.device = model, max_length, device
        self.trust_remote_code, self.pooling = trust_remote_code, pooling
        self._loaded: tuple[Any, Any] | None = None

    def describe(self) -> str:
        return f"nearest choice by embedding ({self.model})"

    def chance(self, answer: str, choices: list[str]) -> float:
        """A guessed choice is nearest to itself: right for each choice equal to the answer (no model call)."""
        return sum(c == answer for c in choices) / len(choices) if choices else 0.0

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            kw = {"trust_remote_code": self.trust_remote_code}
            tokenizer = AutoTokenizer.from_pretrained(self.model, **kw)
            model = AutoModel.from_pretrained(self.model, **kw).to(device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def embed(self, texts: list[str]):
        """L2-normalised embeddings, one row per text (float32)."""
        import torch
        import torch.nn.functional as F

        tokenizer, model = self._load()
        with torch.no_grad():
            if self.pooling == "auto" and callable(getattr(model, "encode", None)):
                vectors = model.encode(texts, instruction="", max_length=self.max_length)
            else:
                limit = min(self.max_length, getattr(model.config, "max_position_embeddings", None) or self.max_length)
                batch = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
                batch = batch.to(model.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(torch.as_tensor(vectors).float(), p=2, dim=1)

    def similarities(self, prediction: str | None, choices: list[str]) -> list[float]:
        """Cosine similarity of the prediction to each choice."""
        p, c = self.embed([prediction or ""]), self.embed(list(choices))
        return (p @ c.T).squeeze(0).tolist()

    def nearest(self, prediction: str | None, choices: list[str]) -> int:
        """Index of the most similar choice (the first of equals)."""
        sims = self.similarities(prediction, choices)
        return max(range(len(sims)), key=lambda i: (sims[i], -i))

    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        return bool(choices) and choices[self.nearest(prediction, choices)] == answer
