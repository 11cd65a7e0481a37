"""MMAU-Pro (arXiv 2508.13992): 5,305 questions over one or several clips each, in three parts scored three ways.

The release is ``test.parquet`` (one row per question: ``id``, ``audio_path`` a list of clips heard in order,
``question``, ``answer``, ``choices``, ``category``, ``sub-cat``, ``length_type``, ``task_identifier``,
``kwargs``, ...) and ``data.zip`` (the clips, ``data/<name>.wav``). ``r1aqa prepare-mmau-pro`` writes the
project's JSON-lines file from them (every column kept); :func:`read_release` reads the parquet itself.

The official scorer (sonalkum/MMAUPro, ``evaluate_mmau_pro_comprehensive.py``) splits the rows by ``category``:

* ``"instruction following"``: the response must meet the constraint its ``task_identifier`` and ``kwargs``
  name; checked by rules, re-implemented exactly in :mod:`r1aqa_pl.benchmarks.instruction_following`;
* ``"open"``: an LLM judge (Qwen2.5-7B-Instruct) rates the response against the reference answer; the
  question counts ``overall / 5`` (:mod:`r1aqa_pl.benchmarks.judge`). Without a judge configured these are
  written to the prediction file for one, counted, and left out of the accuracy ("not scored locally");
* every other category is multiple choice: the prediction is mapped to the nearest choice under NV-Embed-v2
  and is right when that is the answer. Here a pluggable :class:`~r1aqa_pl.benchmarks.matchers.ChoiceMatcher`
  decides: MMAU's string rule by default (no model), or ``embedding`` with any model named.

The official overall number weights each category's score by its count, i.e. it is the mean over questions
of 1/0 (multiple choice, instruction following) and overall/5 (open): this total is that mean over the
questions scored, and every table says which parts were scored how.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from r1aqa_pl.benchmarks import instruction_following as instr
from r1aqa_pl.benchmarks.base import BENCHMARKS, Benchmark, Group, Outcome, cell
from r1aqa_pl.benchmarks.judge import LLMJudge
from r1aqa_pl.benchmarks.matchers import CHOICE_MATCHERS, ChoiceMatcher
from r1aqa_pl.benchmarks.stats import RESAMPLES, SEED, bootstrap_ci
from r1aqa_pl.task.files import audio_paths, field
from r1aqa_pl.task.question import DataError, Question

MC, IF, OPEN = "multiple choice", "instruction following", "open"
PARTS = (MC, IF, OPEN)
# why a record is in no count (Outcome.reason)
OPEN_NOT_SCORED, NEEDS_PUNKT, NO_PREDICTION = "open_not_scored_locally", "needs_nltk_punkt", "no_prediction"

COLUMNS = ("id", "audio_path", "question", "answer", "choices", "category")  # what scoring and reading need
IF_COLUMNS = ("task_identifier", "kwargs")  # needed where a row is instruction following
OFFICIAL_EMBEDDING = "nvidia/NV-Embed-v2"
OFFICIAL_JUDGE = "Qwen/Qwen2.5-7B-Instruct"


def part_of(category: Any) -> str:
    """The part a ``category`` belongs to, as the official scorer splits the rows."""
    return category if category in (IF, OPEN) else MC


def _duplicate(items: list[str]) -> str | None:
    """The first item that appears twice, else None."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def record_problem(rec: dict, withheld: bool = False) -> tuple[str, str] | None:
    """(reason, message) when the record cannot be scored by its part's rule, else None: checked at
    start-up, so that nothing is scored against a broken record. ``withheld``: the file has no answers."""
    category = rec.get("category")
    if not isinstance(category, str) or not category:
        return ("missing_field" if category is None else "bad_field"), f"'category' must be a name, got {category!r}"
    if not isinstance(rec.get("question"), str):
        return "bad_field", f"'question' must be a string, got {rec.get('question')!r}"
    part, answer, choices = part_of(category), rec.get("answer"), rec.get("choices")
    if part == MC:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return "bad_field", f"'choices' must be a list of strings (category {category!r}), got {choices!r}"
        if len(choices) < 2:
            return "too_few_choices", f"multiple choice (category {category!r}) with {len(choices)} choice(s), need 2"
        if (dup := _duplicate(choices)) is not None:
            return "duplicate_choice", f"choice {dup!r} appears twice in {choices}"
        if withheld:
            return None
        if not isinstance(answer, str):
            return ("missing_field" if answer is None else "bad_field"), f"'answer' must be a string, got {answer!r}"
        if answer not in choices:
            return "answer_not_in_choices", f"answer {answer!r} is not one of {choices}"
    elif part == OPEN and not withheld and not isinstance(answer, str):
        return "missing_field", f"an open question needs its reference 'answer', got {answer!r}"
    elif part == IF and (why := instr.problem(rec.get("task_identifier"), rec.get("kwargs"))):
        return "bad_instruction", why
    return None


def _judge(spec: str | dict | LLMJudge | None) -> LLMJudge | None:
    if spec is None or isinstance(spec, LLMJudge):
        return spec
    return LLMJudge(model=spec) if isinstance(spec, str) else LLMJudge(**spec)


@BENCHMARKS.register("mmau_pro")
class MMAUPro(Benchmark):
    """MMAU-Pro's records; accuracy per part, category and sub-category (see the module's docstring).

    Args:
        matcher: how a multiple-choice prediction is matched to a choice: ``"string"`` (MMAU's rule, the
            default), ``"embedding"`` (nearest choice; ``{"class_path": "embedding", "init_args": {"model":
            ...}}`` names the model), or a :class:`ChoiceMatcher` subclass's class path / instance.
        judge: the open questions' judge: a causal LM's hub id or folder (``Qwen/Qwen2.5-7B-Instruct`` is the
            official one), or :class:`~r1aqa_pl.benchmarks.judge.LLMJudge`'s arguments as a dict; None (the
            default) leaves them unscored, counted.
    """

    name = "mmau_pro"
    title = "MMAU-Pro"
    groups = (Group("category", "category", "category"),
              Group("sub-category", "sub-cat", "sub_category", prefix="sub/", by_first=True))
    default_data = "data/mmau_pro/mmau-pro.jsonl"
    download = ("MMAU-Pro (huggingface.co/datasets/gamma-lab-umd/MMAU-Pro): test.parquet and data.zip, laid out by "
                "`r1aqa prepare-mmau-pro --parquet test.parquet --audio data.zip --out data/mmau_pro`")
    left_out_rule = ("open questions without a judge (not scored locally), sentence-count instructions without "
                     "NLTK's punkt_tab, records without a prediction")
    left_out_reasons = (NO_PREDICTION, OPEN_NOT_SCORED, NEEDS_PUNKT)

    def __init__(self, matcher: str | dict | ChoiceMatcher = "string", judge: str | dict | LLMJudge | None = None):
        self.matcher: ChoiceMatcher = CHOICE_MATCHERS.build(matcher)
        self.judge: LLMJudge | None = _judge(judge)

    # -- the rule ---------------------------------------------------------------------------------
    def is_correct(self, prediction: str | None, answer: str, choices: list[str]) -> bool:
        """Multiple choice only (the other parts need the whole record: :meth:`outcome`)."""
        return len(choices) >= 2 and self.matcher.is_correct(prediction, answer, choices)

    def chance(self, answer: str, choices: list[str]) -> float:
        return self.matcher.chance(answer, choices) if len(choices) >= 2 else 0.0

    def check_record(self, record: Any, where: str, key: str, source: str) -> None:
        if not isinstance(record, dict):
            raise DataError(source, where, "malformed_json", f"expected a JSON object, got {type(record).__name__}")
        if (problem := record_problem(record)) is not None:
            raise DataError(source, where, problem[0], f"id={record.get('id')}: {problem[1]}")
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(source, where, "bad_field",
                            f"{key!r} must be a string, got {type(value).__name__} (id={record.get('id')!r})")

    def outcome(self, record: dict, key: str) -> Outcome:
        """Multiple choice by the matcher, instruction following by the official rules, open by the judge
        (a fraction, overall / 5) or left out; each with the record's buckets."""
        if key not in record:
            return Outcome(None, reason=NO_PREDICTION)
        names, prediction, part = self.group_names(record), record[key] or "", part_of(record["category"])
        if part == MC:
            answer, choices = record["answer"], record["choices"]
            return Outcome(self.matcher.is_correct(prediction, answer, choices), names,
                           self.matcher.chance(answer, choices))
        if part == IF:
            ok = instr.follows(record["task_identifier"], record.get("kwargs"), prediction, record["question"])
            return Outcome(ok, names, reason="" if ok is not None else NEEDS_PUNKT)
        if self.judge is None:
            return Outcome(None, names, reason=OPEN_NOT_SCORED)
        return Outcome(self.judge.score(record["question"], record["answer"], prediction), names)  # type: ignore[arg-type]

    def aggregate(self, outcomes: list[Outcome], bootstrap: int = RESAMPLES, seed: int = SEED) -> dict:
        """The base counts, plus a row per part, and ``scoring``: how each part was scored. Chance levels are
        kept only where every question is multiple choice (a guess among no choices has none); intervals are
        taken over each question's score (a judged open question counts its fraction, not 1)."""
        result = super().aggregate(outcomes, bootstrap, seed)
        scored = [o for o in outcomes if o.ok is not None]
        values: dict[tuple[str, str], list[float]] = {}
        for o in scored:
            part = part_of(o.names[0])
            for key in [("part", part), ("total", ""), *zip((g.name for g in self.groups), o.names)]:
                values.setdefault(key, []).append(float(o.ok))
            if part != MC:  # a bucket holding a question without choices has no chance level
                for c in (result["total"], *(result[g.name][n] for g, n in zip(self.groups, o.names))):
                    c.pop("chance", None)
        mc_chance = sum(o.chance for o in scored if part_of(o.names[0]) == MC)
        result["part"] = {p: cell(sum(values[("part", p)]), len(values[("part", p)]), mc_chance if p == MC else None)
                          for p in PARTS if ("part", p) in values}
        cells = {("total", ""): result["total"], **{("part", p): c for p, c in result["part"].items()},
                 **{(g.name, n): c for g in self.groups for n, c in result[g.name].items()}}
        for key, c in cells.items():
            c["correct"] = _round(c["correct"])
            if bootstrap and values.get(key):
                c["ci"] = bootstrap_ci(values[key], bootstrap, seed)
        result["scoring"] = self.scoring(outcomes)
        return result

    @staticmethod
    def ordered(group: Group, names) -> list[str]:
        """Alphabetically, the multiple-choice categories first, then instruction following and open."""
        names = Benchmark.ordered(group, names)
        return [n for n in names if n not in (IF, OPEN)] + [n for n in (IF, OPEN) if n in names]

    def scoring(self, outcomes: list[Outcome]) -> dict[str, str]:
        """Per part, how it was scored (and how many of its questions were not), for every table."""
        left = Counter(o.reason for o in outcomes if o.ok is None)
        rules = "official rules"
        if left[NEEDS_PUNKT]:
            rules += (f", {left[NEEDS_PUNKT]} sentence-count item(s) not scored (NLTK's punkt_tab model is not "
                      "installed: pip install nltk; python -m nltk.downloader punkt_tab)")
        opened = (self.judge.describe() if self.judge is not None
                  else f"not scored locally ({left[OPEN_NOT_SCORED]} questions)")
        return {MC: self.matcher.describe(), IF: rules, OPEN: opened}

    def format_table(self, result: dict) -> str:
        """The scoring line, then rows per part, category and sub-category, then the total; the chance level
        where a row is all multiple choice, the 95 % interval where the result has them."""
        version = f", version {result['version']}" if result.get("version") else ""
        left = (result.get("left_out") or {}).get("by_reason") or {}
        why = ", ".join(f"{k} {v}" for k, v in left.items())
        scoring = result.get("scoring") or {}
        with_ci = "ci" in result["total"]
        lines = [f"{self.title} accuracy ({result.get('key', self.prediction_key)}){version}: {result['scored']} "
                 f"scored, {result['skipped']} not in the accuracy" + (f" ({why})" if why else ""),
                 "; ".join(f"{p}: {scoring[p]}" for p in PARTS if p in scoring),
                 f"{'group':<13}{'name':<36}{'correct':>9}{'total':>7}{'acc %':>8}  chance %"
                 + (f"{'95 % CI':>18}" if with_ci else "")]
        blocks = [("part", result.get("part", {}))] + [(g.name, result[g.name]) for g in self.groups]
        for group, cells in [*blocks, ("total", {"": result["total"]})]:
            lines.append("-" * (83 + 18 * with_ci))
            for name, c in cells.items():
                chance = f"{100 * c['chance']:>10.2f}" if "chance" in c else f"{'-':>10}"
                ci = f"[{100 * c['ci'][0]:.2f}, {100 * c['ci'][1]:.2f}]" if with_ci and "ci" in c else ""
                row = f"{c['correct']:>9}{c['total']:>7}{100 * c['acc']:>8.2f}{chance}{ci:>{18 if ci else 0}}"
                lines.append(f"{group:<13}{name[:35]:<36}{row}")
        return "\n".join(lines)

    # -- files ------------------------------------------------------------------------------------
    def matches(self, record: dict, kind: str) -> bool:
        return isinstance(record.get("audio_path"), list) and {"question", "choices", "category"} <= record.keys()

    def parse(self, rec: dict, rid: str, err, base: Path, withheld: bool, domain: str, extra: dict) -> Question:
        text = field(rec, "question", err)
        audio = audio_paths(rec, "audio_path", err, base)
        if (problem := record_problem(rec, withheld)) is not None:
            raise err(problem[0], f"id={rid}: {problem[1]}")
        category = rec["category"]
        part = part_of(category)
        choices = list(rec["choices"]) if part == MC else []
        answer = "" if withheld or part == IF else rec["answer"]
        extra = {**extra, "category": category, "sub_category": str(rec.get("sub-cat") or "")}
        return Question(rid, [audio] if isinstance(audio, str) else audio, text, choices, answer,
                        domain=category, dataset="MMAU-Pro", **extra)


BENCHMARKS.register("mmau_pro_official", matcher={"class_path": "embedding", "init_args": {
    "model": OFFICIAL_EMBEDDING, "trust_remote_code": True}}, judge=OFFICIAL_JUDGE)(MMAUPro)


def _round(x: float) -> float | int:
    """A count as an int, a judge's fractional total to 4 decimals (no 3.4000000000000004 in a table)."""
    return int(x) if float(x).is_integer() else round(float(x), 4)


# ---------------------------------------------------------------- the parquet release

def release_record(row: dict) -> dict:
    """A parquet row as the project's JSON record: ``kwargs``' empty struct fields dropped, the rest as read."""
    rec = dict(row)
    if isinstance(rec.get("kwargs"), dict):
        rec["kwargs"] = {k: v for k, v in rec["kwargs"].items() if v is not None}
    return rec


def read_release(path: str | Path) -> list[dict]:
    """The rows of MMAU-Pro's ``test.parquet`` as records; a file that is not one (unreadable, or lacking the
    columns scoring needs) raises :class:`DataError` naming what is missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), "file", "missing_file", "file not found")
    try:
        table = pq.read_table(p)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(str(p), "file", "unreadable", f"not a readable parquet file ({e})") from None
    names = table.column_names
    if missing := [c for c in COLUMNS if c not in names]:
        raise DataError(str(p), "columns", "missing_column",
                        f"no column {', '.join(map(repr, missing))}: not MMAU-Pro's test.parquet (columns: {names})")
    rows = [release_record(r) for r in table.to_pylist()]
    if not rows:
        raise DataError(str(p), "file", "no_records", "no records: the table has no rows")
    if any(r.get("category") == IF for r in rows) and (missing := [c for c in IF_COLUMNS if c not in names]):
        raise DataError(str(p), "columns", "missing_column", f"instruction-following rows but no column "
                        f"{', '.join(map(repr, missing))} (their constraints): columns {names}")
    return rows


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    """The project's file: one JSON object per line (values JSON cannot hold, such as dates, as text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records), encoding="utf-8")
    return path
