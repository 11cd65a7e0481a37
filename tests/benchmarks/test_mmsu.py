"""MMSU: `r1aqa score` equals the official scorer (mmsu_evaluation.py, transcribed below as the reference) on
hard prediction files; the lettered prompt, the prediction file, check-data and validation on an MMSU file;
`r1aqa prepare-mmsu` from parquet (audio bytes inside) and JSON lines, and each kind of bad input."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from lightning.pytorch import LightningModule, Trainer

from r1aqa_pl.benchmarks import benchmark_for, get
from r1aqa_pl.benchmarks.callback import BenchmarkEvaluation
from r1aqa_pl.benchmarks.mmau import is_correct as mmau_rule
from r1aqa_pl.benchmarks.mmsu import read_letter
from r1aqa_pl.cli import main
from r1aqa_pl.data.check import check_data
from r1aqa_pl.data.datamodule import AudioQADataModule
from r1aqa_pl.data.formats import iter_questions, read_questions
from r1aqa_pl.data.mmsu_prepare import prepare_mmsu
from r1aqa_pl.eval.score import score
from r1aqa_pl.task.files import read_records
from r1aqa_pl.task.prompts import user_text
from r1aqa_pl.task.question import DataError

mmsu = get("mmsu")


# ---------------------------------------------------------------- the reference: the official scorer's counting

def official(records: list[dict]) -> dict:
    """mmsu_evaluation.py's counting, transcribed step by step (the reference the benchmark must equal).

    Per record: category / sub-category by ``.get`` with "" as default; the response by ``.get("response", "")``;
    ``.strip().replace("\\n", "")`` on it, and any exception (a response that is not a string) skips the record;
    a non-empty response other than "None" must give a letter (first character, else the second-to-last when
    it has two or more) or the record is skipped; then the record counts, right when it has a letter whose
    choice text (``.get`` with "" as default) equals ``answer_gt``.
    """
    cells: dict[tuple, list[int]] = {}
    for rec in records:
        category, sub = rec.get("category", ""), rec.get("sub-category", "")
        response = rec.get("response", "")
        try:
            text = response.strip().replace("\n", "")
        except Exception:
            continue
        letter = None
        if text != "None" and text:
            if text[0] in ("A", "B", "C", "D"):
                letter = text[0]
            elif len(text) > 1:
                if text[-2] in ("A", "B", "C", "D"):
                    letter = text[-2]
                else:
                    continue
            else:
                continue
        choice = {"A": rec.get("choice_a", ""), "B": rec.get("choice_b", ""), "C": rec.get("choice_c", ""),
                  "D": rec.get("choice_d", "")}
        cell = cells.setdefault((category, sub), [0, 0])
        if letter and choice[letter] == rec.get("answer_gt", ""):
            cell[0] += 1
        cell[1] += 1
    categories: dict[str, list[int]] = {}
    for (category, _), (c, t) in cells.items():
        categories.setdefault(category, [0, 0])
        categories[category][0] += c
        categories[category][1] += t
    correct, count = sum(c for c, _ in cells.values()), sum(t for _, t in cells.values())
    return {"pairs": {k: tuple(v) for k, v in cells.items()},
            "categories": {k: tuple(v) for k, v in categories.items()},
            "overall": (correct, count), "left_out": len(records) - count}


def printed(ref: dict) -> list[str]:
    """The lines the official script prints for a reference result (accuracies to 4 places)."""
    lines = [f"Category: {c}, Sub-category: {s}, Accuracy: {n / t:.4f}" for (c, s), (n, t) in ref["pairs"].items()]
    lines += [f"Category: {c}, Average Accuracy: {n / t:.4f}" for c, (n, t) in ref["categories"].items()]
    n, t = ref["overall"]
    return lines + [f"Overall Accuracy: {n / t if t else 0:.4f}", f"Total count: {t}"]


def from_json(result: dict) -> dict:
    """The official table's numbers read back from `r1aqa score --json true` output."""
    pairs = {tuple(k.split("/", 1)): (v["correct"], v["total"]) for k, v in result["category/sub-category"].items()}
    return {"pairs": pairs, "categories": {k: (v["correct"], v["total"]) for k, v in result["category"].items()},
            "overall": (result["total"]["correct"], result["total"]["total"]),
            "left_out": result["left_out"]["records"]}


# ---------------------------------------------------------------- records

def item(i: int, choices: tuple, answer: str, category="Perception", sub="Linguistics", subsub="Semantics",
         response=..., **extra) -> dict:
    """An MMSU record in the release's layout; ``response`` left out when not given."""
    r = {"id": f"mmsu-{i}", "task_name": f"task_{i % 3}", "audio_path": f"audio/mmsu-{i}.wav", "question": f"q{i}?",
         **dict(zip(("choice_a", "choice_b", "choice_c", "choice_d"), choices)), "answer_gt": answer,
         "category": category, "sub-category": sub, "sub-sub-category": subsub,
         "linguistics_sub_discipline": "prosody", **extra}
    if response is not ...:
        r["response"] = response
    return r


ITEMS = [  # (choices A-D, answer): four-choice, two-choice with the empty ones anywhere, the literal "None" option
    (("dog", "cat", "cow", "owl"), "cow"),
    (("dog", "", "cat", ""), "cat"),
    (("", "yes", "", "no"), "yes"),
    (("", "", "rising", "falling"), "falling"),
    (("happy", "None", "", ""), "None"),
    (("None", "angry", "sad", "calm"), "calm"),
]
GROUPS = [("Perception", "Linguistics", "Semantics"), ("Perception", "Paralinguistics", "Speaker Traits"),
          ("Reasoning", "Linguistics", "Phonology"), ("Reasoning", "Paralinguistics", "Speaking Style")]
RESPONSES = [
    "A", "B", "C", "D", "a", "b", "d. owl", "C. cow", "B. cat", "D. falling", "B. None", "D. calm",
    "<answer>B</answer>", "Answer: D", "answer: D", "The answer is C.", "the answer is (B).", "(A)", "B)", "AB",
    "", "   ", "None", " None\n", "none", "NONE", "\nC\n", "x\nD.", "D\n\n", "Ａ", "é", "答案是B。", "ÀB.", "😀A",
    "x", "?", "\u3000B\u3000", "\u00a0C", "B\u200b", 5, 3.0, 0, None, ["A"], {"letter": "A"}, True, ...,
]


def hard_records() -> list[dict]:
    """Every response on every item, the groups rotating: 6 x 47 records."""
    out = []
    for i, (choices, answer) in enumerate(ITEMS):
        for j, response in enumerate(RESPONSES):
            category, sub, subsub = GROUPS[(i + j) % len(GROUPS)]
            out.append(item(len(out), choices, answer, category, sub, subsub, response=response))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the rule

@pytest.mark.parametrize("response, letter", [
    ("A", "A"), ("C. cow", "C"), ("  B\n", "B"), ("Answer: D", "A"),  # the first character wins
    ("The answer is C.", "C"), ("(B)", "B"), ("the answer is (B).", None), ("B)", "B"), ("x\nD.", "D"),
    ("a", None), ("d. owl", None), ("<answer>B</answer>", None), ("é", None), ("Ａ", None), ("答案是B。", "B"),
    ("\u3000B\u3000", "B"), ("B\u200b", "B"),  # unicode space is stripped; a zero-width space is not a space
    ("", ""), ("  ", ""), ("None", ""), (" None\n", ""), ("none", None),
    (5, None), (None, None), (["A"], None), (True, None),
])
def test_read_letter(response, letter):
    assert read_letter(response) == letter


def test_matches_the_official_scorer_on_a_hard_file(tmp_path, capsys):
    """Letters, lower case, tags, "Answer: D", empty, "None", numbers, null, lists, unicode, no response at all,
    on four- and two-choice items: every count the official script prints, and the count it leaves out."""
    records = hard_records()
    f = write_jsonl(tmp_path / "predictions.jsonl", records)
    main(["score", str(f), "--benchmark", "mmsu", "--json", "true"])
    result = json.loads(capsys.readouterr().out)
    ref = official(records)
    assert from_json(result) == ref
    assert sorted(printed(from_json(result))) == sorted(printed(ref))
    assert result["scored"] == ref["overall"][1] and result["total"]["acc"] == ref["overall"][0] / ref["overall"][1]
    # left out, on each of the 6 items: 7 non-strings (5, 3.0, 0, null, a list, an object, true) and 13 strings
    # without a letter (a, b, "d. owl", the tagged one, "answer: D", "...(B).", none, NONE, Ａ, é, 😀A, x, ?)
    assert result["left_out"]["by_reason"] == {"no_letter": 6 * 13, "not_a_string": 6 * 7}
    assert result["skipped"] == ref["left_out"] == 6 * 20 and result["no_response"] == 6
    assert result["scored"] == 6 * 27
    assert score(str(f))["benchmark"] == "mmsu"  # recognised from the file without --benchmark
    capsys.readouterr()


def test_hand_computed_small_file(tmp_path, capsys):
    records = [
        item(0, ("dog", "", "cat", ""), "cat", response="C. cat"),  # right
        item(1, ("dog", "", "cat", ""), "cat", response="A. dog"),  # wrong
        item(2, ("", "None", "", "angry"), "None", "Perception", "Paralinguistics", response="B. None"),  # right
        item(3, ("w", "x", "y", "z"), "z", "Reasoning", "Linguistics", response="None"),  # counted, wrong
        item(4, ("w", "x", "y", "z"), "z", "Reasoning", "Linguistics", response="<answer>D</answer>"),  # left out
        item(5, ("w", "x", "y", "z"), "w", "Reasoning", "Paralinguistics", response=7),  # left out
        item(6, ("w", "x", "y", "z"), "w", "Reasoning", "Paralinguistics"),  # no response: counted, wrong
        item(7, ("w", "x", "y", "z"), "w", "Reasoning", "Paralinguistics", response="Answer: D"),  # reads A: right
    ]
    result = score(str(write_jsonl(tmp_path / "p.jsonl", records)), json=True)
    capsys.readouterr()
    assert (result["scored"], result["skipped"], result["no_response"]) == (6, 2, 1)
    assert result["left_out"]["by_reason"] == {"no_letter": 1, "not_a_string": 1}
    # chance: 1/2, 1/2, 1/2 (two-choice items) and 1/4 for the three counted four-choice items
    total = {k: result["total"][k] for k in ("correct", "total", "acc", "chance")}
    assert total == {"correct": 3, "total": 6, "acc": 0.5, "chance": pytest.approx((3 / 2 + 3 / 4) / 6)}
    assert {k: (v["correct"], v["total"]) for k, v in result["category"].items()} == {
        "Perception": (2, 3), "Reasoning": (1, 3)}
    assert {k: (v["correct"], v["total"]) for k, v in result["category/sub-category"].items()} == {
        "Perception/Linguistics": (1, 2), "Perception/Paralinguistics": (1, 1), "Reasoning/Linguistics": (0, 1),
        "Reasoning/Paralinguistics": (1, 2)}
    assert printed(from_json(result)) == [
        "Category: Perception, Sub-category: Linguistics, Accuracy: 0.5000",
        "Category: Perception, Sub-category: Paralinguistics, Accuracy: 1.0000",
        "Category: Reasoning, Sub-category: Linguistics, Accuracy: 0.0000",
        "Category: Reasoning, Sub-category: Paralinguistics, Accuracy: 0.5000",
        "Category: Perception, Average Accuracy: 0.6667", "Category: Reasoning, Average Accuracy: 0.3333",
        "Overall Accuracy: 0.5000", "Total count: 6"]
    assert from_json(result) == official(records)
    table = mmsu.format_table(result)
    assert "6 scored, 2 left out by the official rule (no_letter 1, not_a_string 1); 1 without a response" in table
    assert "Reasoning/Paralinguistics" in table and table.splitlines()[-1].split()[1:5] == ["3", "6", "50.00", "37.50"]


def test_bad_records_are_refused_naming_file_and_line(tmp_path, capsys):
    good = item(0, ("dog", "", "cat", ""), "cat", response="C")
    cases = [
        ({**good, "answer_gt": "cow"}, "answer_not_in_choices", "answer_gt 'cow' is not one of"),
        ({**good, "choice_c": ""}, "too_few_choices", "1 non-empty choice"),
        ({**good, "choice_b": 3}, "bad_field", "'choice_b' should be str"),
        ({k: v for k, v in good.items() if k != "answer_gt"}, "missing_field", "answer_gt"),
        ({**good, "answer_gt": None}, "missing_field", "answer_gt"),
    ]
    for bad, reason, text in cases:
        f = write_jsonl(tmp_path / "p.jsonl", [good, bad])
        with pytest.raises(DataError, match=rf"p\.jsonl:line 2: id=mmsu-0: .*{text}") as e:
            score(str(f), benchmark="mmsu")
        assert e.value.reason == reason
    f = write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in good.items() if k != "response"}])
    with pytest.raises(DataError, match="no record has the prediction key 'response'") as e:
        score(str(f))
    assert e.value.reason == "nothing_scored"
    capsys.readouterr()


# ---------------------------------------------------------------- prompt, prediction file, data paths

def clips(folder: Path, records: list[dict], seconds: float = 0.25) -> None:
    for k, r in enumerate(records):
        path = folder / r["audio_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(path, 0.1 * np.sin(2 * np.pi * (200 + 20 * k) * t), 16000, subtype="PCM_16")


def benchmark_file(folder: Path) -> Path:
    records = [item(i, choices, answer, *GROUPS[i % 4]) for i, (choices, answer) in enumerate(ITEMS)]
    clips(folder, records)
    return write_jsonl(folder / "mmsu.jsonl", records)


def test_questions_carry_the_official_letters(tmp_path):
    f = benchmark_file(tmp_path)
    qs = read_questions(f)
    assert benchmark_for(f).name == "mmsu" and [q.dataset for q in qs] == ["MMSU"] * 6
    assert qs[1].choices == ["A. dog", "C. cat"] and qs[1].answer == "C. cat"
    assert qs[2].choices == ["B. yes", "D. no"] and qs[3].choices == ["C. rising", "D. falling"]
    assert qs[4].choices == ["A. happy", "B. None"] and qs[4].answer == "B. None"
    assert qs[0].domain == "Perception/Linguistics" and qs[1].sub_category == "Perception/Speaker Traits"
    assert qs[1].audio_path == str(tmp_path / "audio" / "mmsu-1.wav")
    prompt = user_text(qs[1])
    assert "['A. dog', 'C. cat']" in prompt and "<answer>" in prompt
    # the training reward (MMAU's string rule over the choices) and the letter rule agree on the lettered answer
    assert mmau_rule("C. cat", qs[1].answer, qs[1].choices) and not mmau_rule("A. dog", qs[1].answer, qs[1].choices)
    assert mmsu.is_correct("C. cat", qs[1].answer, qs[1].choices) and not mmsu.is_correct("A", qs[1].answer,
                                                                                            qs[1].choices)
    assert not mmsu.is_correct("c. cat", qs[1].answer, qs[1].choices)  # a response the rule leaves out: wrong
    assert [mmsu.chance(q.answer, q.choices) for q in qs] == [0.25, 0.5, 0.5, 0.5, 0.5, 0.25]
    # the prediction file's record: the source record unchanged, the raw output, the extracted answer as response
    rec = mmsu.prediction_record(qs[1], "<answer>C. cat</answer>")
    assert rec == {**read_records(f)[1], "model_output": "<answer>C. cat</answer>", "response": "C. cat"}
    assert official([rec])["overall"] == (1, 1)


def test_check_data_accepts_an_mmsu_file(tmp_path, capsys):
    f = benchmark_file(tmp_path)
    assert check_data(val=str(f)) == 0
    out = capsys.readouterr().out
    assert "benchmark: MMSU, version unknown" in out and "format: mmsu; records: 6; usable: 6; problems: 0" in out
    assert "answers withheld" not in out and "Reasoning/Paralinguistics 1" in out
    bad = write_jsonl(tmp_path / "bad.jsonl", [*read_records(f)[:2], {**read_records(f)[2], "answer_gt": "maybe"}])
    assert check_data(val=str(bad), decode=False) == 1
    assert "bad.jsonl:line 3: id=mmsu-2: answer_gt 'maybe' is not one of ['yes', 'no']" in capsys.readouterr().out
    assert [type(x).__name__ for x in iter_questions(bad, fmt="mmsu")] == ["Question", "Question", "DataError"]


class Picker(LightningModule):
    """Answers question k with its right lettered choice when k is even, else with a bare wrong letter, or
    with words the official rule cannot read for k % 3 == 0 (left out by `r1aqa score` and the metric alike)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def answer(self, questions, audio):
        out = []
        for q in questions:
            k = int(q.id.split("-")[-1])
            wrong = next(c for c in q.choices if c != q.answer)
            out.append("<answer>no idea</answer>" if k % 3 == 0 else
                       f"<answer>{q.answer if k % 2 == 0 else wrong[0]}</answer>")
        return out

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass


def test_validation_writes_the_file_the_official_scorer_reads(tmp_path):
    f = benchmark_file(tmp_path)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[BenchmarkEvaluation(dirpath=str(tmp_path / "pred"))])
    (logged,) = trainer.validate(Picker(), datamodule=AudioQADataModule(val_file=str(f), with_audio=False),
                                 verbose=False)
    written = next((tmp_path / "pred").rglob("*.jsonl"))
    preds = read_records(written)
    assert [p["response"] for p in preds] == ["no idea", "A", "B. yes", "no idea", "B. None", "A"]
    assert all({**p} == {**src, "model_output": p["model_output"], "response": p["response"]}
               for p, src in zip(preds, read_records(f)))
    ref = official(preds)  # ids 2, 4 right; 1, 5 wrong; 0, 3 left out
    assert ref["overall"] == (2, 4) and ref["left_out"] == 2
    assert from_json(mmsu.score_records(preds)) == ref
    # the metric leaves the unreadable answers out as the official rule does (it used to count them wrong: 2 / 6)
    assert logged["val/acc/total"] == pytest.approx(2 / 4) and logged["val/count/total"] == 4
    assert logged["val/count/left_out"] == 2
    assert "val/acc/Reasoning/Paralinguistics" not in logged  # its only question (id 3) left out: no cell
    assert logged["val/acc/Perception"] == pytest.approx(1 / 3)  # ids 1, 4, 5 (id 0 left out)
    assert logged["val/acc/Reasoning"] == 1.0 and logged["val/acc/sub/Reasoning/Phonology"] == 1.0


# ---------------------------------------------------------------- prepare-mmsu

def wav_bytes(k: int, seconds: float = 0.2, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(buf, 0.2 * np.sin(2 * np.pi * (300 + 50 * k) * t), 16000, format=fmt, subtype=subtype)
    return buf.getvalue()


def release_rows() -> list[dict]:
    """Rows as the release's parquet holds them: the audio as {bytes, path}, empty choices as "" or null."""
    rows = []
    for i, (choices, answer) in enumerate(ITEMS):
        r = item(i, tuple(c or (None if i % 2 else "") for c in choices), answer, *GROUPS[i % 4])
        del r["audio_path"]
        fmt = ("FLAC", "PCM_16") if i == 3 else ("WAV", "PCM_16")
        rows.append({**r, "audio": {"bytes": wav_bytes(i, 0.2 + 0.1 * i, *fmt), "path": f"{r['id']}.wav"}})
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [(k, audio if k == "audio" else pa.string()) for k in rows[0]]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path)
    return path


def test_prepare_from_parquet(tmp_path, capsys):
    rows = release_rows()
    write_parquet(tmp_path / "dl" / "data" / "train-00000-of-00002.parquet", rows[:4])
    write_parquet(tmp_path / "dl" / "data" / "train-00001-of-00002.parquet", rows[4:])
    out = tmp_path / "mmsu"
    assert main(["prepare-mmsu", "--data", str(tmp_path / "dl" / "data"), "--out", str(out)]) in (0, None)
    assert "6 questions, 6 clips written" in capsys.readouterr().out
    records = read_records(out / "mmsu.jsonl")
    assert [r["audio_path"] for r in records] == [f"audio/mmsu-{i}.wav" for i in range(6)]
    assert records[1]["choice_b"] == "" and records[1]["choice_d"] == "" and records[4]["choice_b"] == "None"
    assert records[0]["linguistics_sub_discipline"] == "prosody" and "audio" not in records[0]
    assert (out / "audio" / "mmsu-0.wav").read_bytes() == rows[0]["audio"]["bytes"]  # a WAV byte for byte
    flac, rate = sf.read(io.BytesIO(rows[3]["audio"]["bytes"]), dtype="int16")
    wav, rate2 = sf.read(out / "audio" / "mmsu-3.wav", dtype="int16")
    assert sf.info(out / "audio" / "mmsu-3.wav").format == "WAV" and rate == rate2 and np.array_equal(flac, wav)
    card = json.loads((out / "data_card.json").read_text())
    split = card["splits"]["mmsu"]
    assert (card["dataset"], split["records"], split["usable"], split["audio"]["clips"]) == ("MMSU", 6, 6, 6)
    assert split["domains"] == {"Perception": 4, "Reasoning": 2} and split["audio"]["seconds"]["max"] == 0.7
    assert [s["file"] for s in card["sources"]] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    # the prepared file is the benchmark's: read, checked and scored as such
    assert check_data(val=str(out / "mmsu.jsonl")) == 0 and "format: mmsu" in capsys.readouterr().out
    assert [q.answer for q in read_questions(out / "mmsu.jsonl")][:3] == ["C. cow", "C. cat", "B. yes"]
    before = (out / "mmsu.jsonl").read_bytes()
    assert prepare_mmsu(data=str(tmp_path / "dl" / "data"), out=str(out)) == 0  # again: nothing to write
    assert "6 questions, 0 clips written" in capsys.readouterr().out and (out / "mmsu.jsonl").read_bytes() == before


def test_prepare_from_json_lines_with_clips_by_path(tmp_path, capsys):
    src = benchmark_file(tmp_path / "dl")
    out = tmp_path / "mmsu"
    assert prepare_mmsu(data=str(src), out=str(out)) == 0
    assert [r["audio_path"] for r in read_records(out / "mmsu.jsonl")] == [f"audio/mmsu-{i}.wav" for i in range(6)]
    assert (out / "audio" / "mmsu-5.wav").read_bytes() == (tmp_path / "dl" / "audio" / "mmsu-5.wav").read_bytes()
    flat = tmp_path / "flat"  # the clips in a folder of their own, named by --audio
    flat.mkdir()
    for p in (tmp_path / "dl" / "audio").iterdir():
        p.rename(flat / p.name)
    assert prepare_mmsu(data=str(src), out=str(tmp_path / "mmsu2"), audio=str(flat)) == 0
    capsys.readouterr()


@pytest.mark.parametrize("change, reason, where, text", [
    (lambda rows: [{k: v for k, v in r.items() if k != "answer_gt"} for r in rows], "missing_column", "file",
     "no column 'answer_gt'"),
    (lambda rows: rows[:2] + [{**rows[2], "choice_d": ""}] + rows[3:], "too_few_choices", "row 2",
     "id=mmsu-2: 1 non-empty choice"),
    (lambda rows: rows[:4] + [{**rows[4], "choice_c": "happy"}] + rows[5:], "duplicate_choice", "row 4",
     "id=mmsu-4: choice 'happy' is listed twice"),
    (lambda rows: rows[:1] + [{**rows[1], "answer_gt": "Cat"}] + rows[2:], "answer_not_in_choices", "row 1",
     "id=mmsu-1: answer_gt 'Cat' is not one of"),
    (lambda rows: rows[:3] + [{**rows[3], "audio": {"bytes": None, "path": "gone.wav"}}] + rows[4:], "missing_audio",
     "row 3", "id=mmsu-3: clip 'gone.wav' not found"),
    (lambda rows: rows[:5] + [{**rows[5], "audio": {"bytes": b"RIFF junk", "path": "x.wav"}}], "unreadable_audio",
     "row 5", "id=mmsu-5: cannot decode the clip"),
    (lambda rows: rows[:5] + [{**rows[5], "id": "mmsu-0"}], "duplicate_id", "row 5",
     "id=mmsu-0 is also release.parquet row 0"),
    (lambda rows: rows[:1] + [{**rows[1], "category": None}] + rows[2:], "missing_field", "row 1",
     "missing field 'category'"),
])
def test_prepare_refuses_bad_input_before_writing(tmp_path, change, reason, where, text):
    data = write_parquet(tmp_path / "release.parquet", change(release_rows()))
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        prepare_mmsu(data=str(data), out=str(out))
    assert (e.value.source, e.value.where, e.value.reason) == (str(data), where, reason)
    assert text in str(e.value) and not out.exists()  # nothing written


def test_prepare_refuses_a_bad_json_lines_record_and_a_missing_download(tmp_path):
    src = benchmark_file(tmp_path / "dl")
    (tmp_path / "dl" / "audio" / "mmsu-4.wav").unlink()
    with pytest.raises(DataError, match=r"mmsu\.jsonl:line 5: id=mmsu-4: clip 'audio/mmsu-4.wav' not found") as e:
        prepare_mmsu(data=str(src), out=str(tmp_path / "out"))
    assert e.value.reason == "missing_audio" and not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="no .parquet file") as e:
        prepare_mmsu(data=str(tmp_path / "dl" / "audio"), out=str(tmp_path / "out"))
    with pytest.raises(DataError, match="file not found"):
        prepare_mmsu(data=str(tmp_path / "nothing.parquet"), out=str(tmp_path / "out"))
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(DataError, match="not a parquet file") as e:
        prepare_mmsu(data=str(not_parquet), out=str(tmp_path / "out"))
    assert e.value.reason == "unreadable"


def test_left_out_reasons_counted_as_the_reference_does():
    """Each response kind on one item: the reference skips exactly those the result calls left out."""
    records = [item(i, ("dog", "", "cat", ""), "cat", response=r) for i, r in enumerate(RESPONSES)]
    result = mmsu.score_records(records)
    kept = [r for r in records if official([r])["left_out"] == 0]
    assert result["scored"] == len(kept) and result["left_out"]["records"] == len(records) - len(kept)
    assert Counter(read_letter(r.get("response", "")) is None for r in records)[True] == result["skipped"]
