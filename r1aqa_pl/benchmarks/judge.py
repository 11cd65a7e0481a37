"""An LLM judge for MMAU-Pro's open questions, as the official scorer grades them.

The official script (sonalkum/MMAUPro, ``evaluate_mmau_pro_comprehensive.py``) asks Qwen2.5-7B-Instruct,
through its chat template with a system turn, to rate a response against the reference answer on four
criteria (correctness, relevance, completeness, clarity), 1 to 5 each, plus an overall score, one
``LABEL: score`` line each; samples at temperature 0.1, at most 512 new tokens; and scores the question
``overall / 5``. Reading the reply follows its rules: a criterion it cannot find counts 3, and an overall
that is missing or exactly 3 is replaced by the mean of the four criteria.

The prompt here asks for the same things in the project's own words (the official wording is not copied),
so judge scores follow the official method but are not byte-for-byte the official prompt's. Subclass
:class:`LLMJudge` and override :meth:`LLMJudge.messages` to use another wording.
"""

from __future__ import annotations

import re
from typing import Any

CRITERIA = ("correctness", "relevance", "completeness", "clarity")
NEUTRAL = 3.0  # what the official reader assumes for a score it cannot find
SCALE = 5.0

SYSTEM = "You are a fair and careful grader of answers."
PROMPT = """Grade how well a model answered an open-ended question about audio, against the reference answer.

Question: {question}

Reference answer: {reference}

Model's answer: {response}

Rate each criterion from 1 (worst) to 5 (best), with a one-sentence reason:
- CORRECTNESS: is it factually right, measured against the reference?
- RELEVANCE: does it answer this question?
- COMPLETENESS: does it cover what the reference covers?
- CLARITY: is it clear and well organised?

Reply with exactly these five lines:
CORRECTNESS: <score> - <reason>
RELEVANCE: <score> - <reason>
COMPLETENESS: <score> - <reason>
CLARITY: <score> - <reason>
OVERALL: <average score> - <summary>"""

_PATTERNS = {c: re.compile(rf"{c.upper()}:\s*(\d+)", re.IGNORECASE) for c in CRITERIA}
_PATTERNS["overall"] = re.compile(r"OVERALL:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_scores(text: str) -> dict[str, float]:
    """The judge's scores from its reply, under the official reader's rules (see the module's docstring)."""
    scores = {}
    for name, pattern in _PATTERNS.items():
        m = pattern.search(text)
        scores[name] = float(m.group(1)) if m else NEUTRAL
    if scores["overall"] == NEUTRAL:
        scores["overall"] = sum(scores[c] for c in CRITERIA) / len(CRITERIA)
    return scores


def question_score(scores: dict[str, float]) -> float:
    """A question's share of the benchmark score: its overall rating over the scale (1..5 -> 0.2..1)."""
    return scores["overall"] / SCALE


class LLMJudge:
    """A causal LM (a hub id or a local folder, loaded with ``AutoModelForCausalLM``) grading open answers.

    Args:
        model: e.g. ``Qwen/Qwen2.5-7B-Instruct`` (the official judge) or a local folder.
        max_new_tokens: the reply's length limit (official: 512).
        temperature: sampling temperature (official: 0.1, sampled); 0 decodes greedily.
        seed: seeds each sampled reply, so that a re-run gives the same grades.
        device: where the model runs (default: a GPU when there is one).
        trust_remote_code: allow the model's own code.
    """

    def __init__(self, model: str = "Qwen/Qwen2.5-7B-Instruct", max_new_tokens: int = 512, temperature: float = 0.1,
                 seed: int = 0, device: str | None = None, trust_remote_code: bool = False):
        self.model, self.max_new_tokens, self.temperature, self.seed = model, max_new_tokens, temperature, seed
        self.device, self.trust_remote_code = device, trust_remote_code
        self._loaded: tuple[Any, Any] | None = None

    def describe(self) -> str:
        return f"LLM judge {self.model} (overall / 5)"

    def messages(self, question: str, reference: str, response: str) -> list[dict]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT.format(question=question, reference=reference, response=response)}]

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            kw = {"trust_remote_code": self.trust_remote_code}
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            tokenizer = AutoTokenizer.from_pretrained(self.model, **kw)
            model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype, **kw).to(device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def reply(self, question: str, reference: str, response: str) -> str:
        """The judge's raw reply."""
        import torch

        tokenizer, model = self._load()
        text = tokenizer.apply_chat_template(self.messages(question, reference, response), tokenize=False,
                                             add_generation_prompt=True)
        inputs = tokenizer([text], return_tensors="pt").to(model.device)
        sample = self.temperature > 0
        kw = {"do_sample": True, "temperature": self.temperature} if sample else {"do_sample": False}
        if sample:
            torch.manual_seed(self.seed)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.eos_token_id,
                                 **kw)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def grade(self, question: str, reference: str, response: str) -> dict[str, float]:
        """The scores of one answer (:func:`parse_scores` of :meth:`reply`)."""
        return parse_scores(self.reply(question, reference, response))

    def score(self, question: str, reference: str, response: str) -> float:
        """One answer's share of the benchmark score, in [0.2, 1]."""
        return question_score(self.grade(question, reference, response))
