"""MMSU: 5,000 spoken-language questions (perception and reasoning, linguistics and paralinguistics), scored
by reading a choice letter, exactly as its official scorer ``mmsu_evaluation.py`` (github.com/dingdongwang/MMSU).

A record (JSON lines): ``id``, ``task_name``, ``audio_path``, ``question``, ``choice_a`` … ``choice_d`` (a
two-choice item leaves two of them empty, in any position; an option may be the literal text "None"),
``answer_gt`` (the right choice's text), ``category`` (Perception / Reasoning), ``sub-category``
(Linguistics / Paralinguistics), ``sub-sub-category``. The official scorer reads ``response`` from each
record, takes a letter from it (:func:`read_letter`) and compares that letter's choice text with
``answer_gt``; it prints accuracy per (category, sub-category), per category and overall.

The project asks its questions with the choices as a list and the answer in ``<answer>``: an MMSU question
lists its non-empty choices as lettered strings with their official letters (``["A. dog", "C. cat"]``), the
answer is the lettered right choice, so a completion ``<answer>A. dog</answer>`` gives the response
``A. dog``, whose first character the official rule reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1aqa_pl.benchmarks.base import BENCHMARKS, OTHER, Benchmark, Group, Outcome
from r1aqa_pl.task.files import field, resolve
from r1aqa_pl.task.question import DataError, Question

LETTERS = ("A", "B", "C", "D")
CHOICE_KEYS = {"A": "choice_a", "B": "choice_b", "C": "choice_c", "D": "choice_d"}
CATEGORIES = ("Perception", "Reasoning")
PAIRS = ("Perception/Linguistics", "Perception/Paralinguistics", "Reasoning/Linguistics", "Reasoning/Paralinguistics")


def read_letter(response: Any) -> str | None:
    """The choice letter MMSU's official scorer reads from a response: a letter, "" for none (the record
    counts, as wrong), or None (the record is left out of every count).

    The official rule: a response that is not a string (a number, null, a list) is left out. A string has
    its surrounding whitespace stripped and every newline removed; empty, or exactly "None", reads no
    letter. Otherwise its first character when that is a capital A, B, C or D ("B. dog", "Answer: D" reads
    A); else, when it is two characters or longer, its second-to-last character when that is one ("The
    answer is C."); else the record is left out. Lower case is never read. A record without a response
    reads as the empty string.
    """
    if not isinstance(response, str):
        return None
    text = response.strip().replace("\n", "")
    if not text or text == "None":
        return ""
    if text[0] in LETTERS:
        return text[0]
    if len(text) > 1 and text[-2] in LETTERS:
        return text[-2]
    return None


def lettered(letter: str, text: str) -> str:
    """A choice as the prompt lists it, with its official letter: ``"A. dog"``."""
    return f"{letter}. {text}"


def unlettered(choice: str) -> tuple[str, str]:
    """(letter, text) of a :func:`lettered` choice."""
    letter, _, text = choice.partition(". ")
    return letter, text


def options(rec: dict, err) -> list[tuple[str, str]]:
    """The (letter, text) of a record's non-empty choices, in letter order; ``err(reason, message)`` builds
    the error for fields the rule cannot score: a choice that is not text, fewer than two choices,
    ``answer_gt`` missing, not text or not among the choices."""
    rid = rec.get("id")
    found = []
    for letter, key in CHOICE_KEYS.items():
        text = rec.get(key)
        if text is not None and not isinstance(text, str):
            raise err("bad_field", f"id={rid}: {key!r} should be str or empty, got {text!r}")
        if text:
            found.append((letter, text))
    if len(found) < 2:
        raise err("too_few_choices", f"id={rid}: {len(found)} non-empty choice(s) among choice_a..choice_d, need 2")
    answer = rec.get("answer_gt")
    if answer is None:
        raise err("missing_field", f"id={rid}: missing field 'answer_gt'")
    if not isinstance(answer, str):
        raise err("bad_field", f"id={rid}: field 'answer_gt' should be str, got {answer!r}")
    if answer not in [t for _, t in found]:
        raise err("answer_not_in_choices", f"id={rid}: answer_gt {answer!r} is not one of {[t for _, t in found]}")
    return found


def _name(rec: dict, key: str) -> str:
    return str(rec.get(key) or OTHER)


@BENCHMARKS.register("mmsu")
class MMSU(Benchmark):
    """MMSU's JSON lines (``audio_path`` relative to the file); the official letter rule on ``response``;
    accuracy per category, per category/sub-category (the official table) and per category/sub-sub-category."""

    name = "mmsu"
    title = "MMSU"
    prediction_key = "response"  # what mmsu_evaluation.py reads
    output_key = "model_output"
    groups = (Group("category", "category", "category", CATEGORIES),
              Group("category/sub-category", "sub-category", "domain", PAIRS),
              Group("category/sub-sub-category", "sub-sub-category", "sub_category", prefix="sub/"))
    default_data = "data/mmsu/mmsu.jsonl"
    download = ("MMSU (github.com/dingdongwang/MMSU; questions and audio as parquet in huggingface.co/datasets/"
                "ddwang2000/MMSU, data/train-*.parquet), laid out by `r1aqa prepare-mmsu --data <download>/data "
                "--out data/mmsu`")
    left_out_rule = ("as the official scorer: a response that is not a string (not_a_string), or whose first and "
                     "second-to-last characters are not a capital A-D (no_letter), is in no count")

    left_out_reasons = ("no_letter", "not_a_string")

    # -- the rule ----------------------------------------------------------------------------------
    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        """The official rule on a question's lettered choices; a prediction the rule would leave out is wrong
        here (no verdict is None). Scoring goes through :meth:`outcome`, which leaves it out, in ``r1aqa score``
        and the training-time metric alike; this is the metric's fallback for a question without an MMSU record."""
        letter = read_letter("" if prediction is None else prediction)
        texts = dict(map(unlettered, choices))
        return bool(letter) and letter in texts and texts[letter] == unlettered(answer)[1]

    def outcome(self, record: dict, key: str) -> Outcome:
        response = record.get(key, "")
        letter = read_letter(response)
        if letter is None:
            return Outcome(None, reason="no_letter" if isinstance(response, str) else "not_a_string")
        texts = [record[k] for k in CHOICE_KEYS.values() if record.get(k)]  # as check_record found them
        right = record.get("answer_gt", "")
        ok = bool(letter) and record.get(CHOICE_KEYS[letter], "") == right
        return Outcome(ok, self.group_names(record), sum(t == right for t in texts) / len(texts))

    def group_names(self, record: dict) -> tuple[str, ...]:
        category = _name(record, "category")
        return (category, f"{category}/{_name(record, 'sub-category')}",
                f"{category}/{_name(record, 'sub-sub-category')}")

    # -- files -------------------------------------------------------------------------------------
    def matches(self, record: dict, kind: str) -> bool:
        return "choice_a" in record and "answer_gt" in record

    @staticmethod
    def withheld(records: list) -> bool:
        """MMSU's answers are public: a record without ``answer_gt`` is an error, not a test split."""
        return False

    def parse(self, rec: dict, rid: str, err, base: Path, withheld: bool, domain: str, extra: dict) -> Question:
        text, found = field(rec, "question", err), options(rec, err)
        choices = [lettered(letter, t) for letter, t in found]
        answer = next(c for c, (_, t) in zip(choices, found) if t == rec["answer_gt"])
        audio = resolve(field(rec, "audio_path", err), base)
        _, pair, sub_pair = self.group_names(rec)
        return Question(rid, audio, text, choices, answer, domain=pair, dataset="MMSU",
                        **{**extra, "sub_category": sub_pair})

    # -- scoring -----------------------------------------------------------------------------------
    def check_record(self, record: Any, where: str, key: str, source: str) -> None:
        if not isinstance(record, dict):
            raise DataError(source, where, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
        options(record, lambda reason, message: DataError(source, where, reason, message))

    def score_records(self, records: list[dict], key: str | None = None, source: str = "<records>",
                      where: list[str] | None = None, **settings) -> dict:
        """The official counts (:meth:`Benchmark.score_records`, which takes ``settings``), plus ``no_response``:
        the records without ``key``, which the official scorer reads as an empty response (wrong). A file in which
        no record has ``key`` is refused: it holds no predictions, and the official scorer would print 0 for it."""
        result = super().score_records(records, key, source, where, **settings)
        missing = sum(result["key"] not in r for r in records)
        if records and missing == len(records):
            raise DataError(source, "file", "nothing_scored",
                            f"no record has the prediction key {result['key']!r} (the benchmark's file without "
                            "predictions, or another key: pass it with --key)")
        return {**result, "no_response": missing}

    def format_table(self, result: dict) -> str:
        """The base table, its heading saying how many records the official rule left out, and why."""
        table = super().format_table(result)
        left = result.get("left_out")
        if not left:
            return table
        head, rest = table.split("\n", 1)
        why = ", ".join(f"{r} {n}" for r, n in left["by_reason"].items())
        no_response = f"; {result['no_response']} without a response (wrong)" if result.get("no_response") else ""
        more = result["skipped"] - left["records"]  # `r1aqa eval` counts the questions it could not ask here too
        head = head.replace(f"{result['skipped']} skipped",
                            f"{left['records']} left out by the official rule" + (f" ({why})" if why else "")
                            + (f", {more} more skipped" if more > 0 else ""))
        return f"{head}{no_response}\n{rest}"
