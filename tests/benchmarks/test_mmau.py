"""The official MMAU rule on hand-worked cases, and the scorer / `r1aqa score` on the real test-mini file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from r1aqa_pl.benchmarks.mmau import MMAU, is_correct, tokenize
from r1aqa_pl.eval.score import score
from r1aqa_pl.task.answer_format import extract_answer

score_records, format_table = MMAU().score_records, MMAU().format_table

REPO = Path(__file__).resolve().parents[2]
MMAU = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmau" / "mmau-test-mini.json"
needs_mmau = pytest.mark.skipif(not MMAU.exists(), reason=f"{MMAU} not present")

VOICE = ["Man", "Woman", "Child", "Robot"]
KEYS = ["C major", "C minor"]
GUITAR = ["Acoustic guitar", "Electric guitar", "Piano", "Violin"]


def test_tokenize():
    assert tokenize("The answer is: MAN.") == ["the", "answer", "is", "man"]
    assert tokenize("light_switch-clicking, 2 beeps!") == ["light_switch", "clicking", "2", "beeps"]
    assert tokenize("  ...  ") == []


@pytest.mark.parametrize(
    "prediction, answer, choices, expected",
    [
        ("Man", "Man", VOICE, True),
        ("The answer is: MAN.", "Man", VOICE, True),  # case and punctuation are ignored
        ("man or woman", "Man", VOICE, False),  # a token of a wrong choice
        ("Woman", "Man", VOICE, False),  # "man" is not a token of "woman"
        ("", "Man", VOICE, False),  # empty is wrong
        ("   ", "Man", VOICE, False),
        ("?!", "Man", VOICE, False),  # no word tokens: as empty
        (None, "Man", VOICE, False),
        # shared words: incorrect tokens are {"minor"}; "c" is allowed but required
        ("C major", "C major", KEYS, True),
        ("the key is c major.", "C major", KEYS, True),
        ("major", "C major", KEYS, False),  # "c" missing
        ("C", "C major", KEYS, False),  # "major" missing
        ("C major, not C minor", "C major", KEYS, False),
        ("C minor", "C minor", KEYS, True),
        # numbers are plain tokens: no number words
        ("3", "3", ["2", "3", "4", "5"], True),
        ("three", "3", ["2", "3", "4", "5"], False),
        ("I hear 3 beeps", "3", ["2", "3", "4", "5"], True),
        ("2 or 3", "3", ["2", "3", "4", "5"], False),
        ("2 beeps", "2 beeps", ["2 beeps", "3 beeps"], True),
        ("2", "2 beeps", ["2 beeps", "3 beeps"], False),  # "beeps" missing
        ("two beeps", "2 beeps", ["2 beeps", "3 beeps"], False),
        # multi-word answers: all tokens, any order, extra neutral words fine
        ("Acoustic guitar", "Acoustic guitar", GUITAR, True),
        ("an acoustic guitar is playing", "Acoustic guitar", GUITAR, True),
        ("guitar, acoustic", "Acoustic guitar", GUITAR, True),
        ("guitar", "Acoustic guitar", GUITAR, False),
        ("acoustic guitar and piano", "Acoustic guitar", GUITAR, False),
        # a choice with the answer's token set is not a wrong choice
        ("man", "Man", ["Man", "man.", "Woman"], True),
        # ... and so a wrong choice with the same token set scores as right (the official quirk)
        ("first: neutral, second: frustration", "first: frustration, second: neutral",
         ["first: frustration, second: neutral", "first: neutral, second: frustration", "first: joy"], True),
    ],
)
def test_is_correct(prediction, answer, choices, expected):
    assert is_correct(prediction, answer, choices) is expected


@pytest.mark.parametrize(
    "output, expected",
    [
        ("<answer>Man</answer>", "Man"),
        ("<think>a deep voice</think>\n<answer> Man </answer>", "Man"),
        ("<answer>Man</answer> <answer>Woman</answer>", "Man"),  # the first one
        ("<answer>\nC major\n</answer>", "C major"),  # across lines
        ("  It is a man.  ", "It is a man."),  # no tags: the whole output
        ("<answer>Man", "<answer>Man"),  # unclosed: the whole output
        ("<answer></answer>", ""),
        ("", ""),
    ],
)
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


def _rec(task, difficulty, sub, answer, choices, pred=None, **extra):
    r = {"task": task, "difficulty": difficulty, "sub-category": sub, "answer": answer, "choices": choices, **extra}
    if pred is not None:
        r["model_prediction"] = pred
    return r


def test_score_records_small():
    records = [
        _rec("sound", "easy", "A", "Man", VOICE, "Man"),
        _rec("sound", "hard", "A", "Man", VOICE, "Woman"),
        _rec("music", "easy", "B", "C major", KEYS, "<answer>C major</answer>"),  # tags count as tokens
        _rec("speech", "medium", "C", "3", ["2", "3"], ""),
        _rec("speech", "medium", "C", "3", ["2", "3"]),  # no key: skipped
        _rec("speech", "medium", "C", "2", ["2", "3"], other="2"),
    ]
    res = score_records(records)
    assert (res["scored"], res["skipped"]) == (4, 2)
    # chance: a uniform guess among each item's choices, by the rule: 1/4, 1/4, 1/2, 1/2
    # ci: the 95 % bootstrap interval; 2 of 4 right resamples to anything from 0 to 1
    assert res["total"] == {"correct": 2, "total": 4, "acc": 0.5, "chance": pytest.approx(0.375), "ci": [0.0, 1.0]}
    assert list(res["task"]) == ["sound", "music", "speech"]
    assert res["task"]["sound"]["correct"] == 1 and res["task"]["music"]["correct"] == 1
    assert res["task"]["speech"] == {"correct": 0, "total": 1, "acc": 0.0, "chance": 0.5, "ci": [0.0, 0.0]}
    assert list(res["difficulty"]) == ["easy", "medium", "hard"]
    assert res["difficulty"]["easy"]["acc"] == 1.0
    assert res["sub-category"]["A"] == {"correct": 1, "total": 2, "acc": 0.5, "chance": 0.25, "ci": [0.0, 1.0]}
    assert score_records(records, key="other")["scored"] == 1
    table = format_table(res)
    assert "sound" in table and "50.00" in table and "2 skipped" in table and "chance %" in table
    assert table.splitlines()[-1].split()[-4:] == ["50.00", "37.50", "[0.00,", "100.00]"]  # total: acc, chance, CI


def test_bad_input_names_file_and_record(tmp_path):
    from r1aqa_pl.task.question import DataError

    with pytest.raises(DataError, match=r"f\.json:record 1:.*'answer'"):
        score_records([_rec("sound", "easy", "A", "Man", VOICE, "Man"), {"choices": VOICE}], source="f.json")
    with pytest.raises(DataError, match="model_prediction"):
        score_records([_rec("sound", "easy", "A", "Man", VOICE, ["Man"])])
    with pytest.raises(DataError, match="JSON list"):
        score_records({"a": 1})
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    with pytest.raises(DataError, match="bad.json"):
        score(str(bad))
    with pytest.raises(DataError, match="missing.json"):
        score(str(tmp_path / "missing.json"))


def test_answer_not_among_the_choices_is_refused(tmp_path):
    """As check-data refuses it: "Dog" is none of the choices, so no prediction can be right or wrong about it."""
    from r1aqa_pl.task.question import DataError

    records = [_rec("sound", "easy", "A", "Man", VOICE, "Man", id="a"),
               _rec("sound", "easy", "A", "Dog", VOICE, "Dog", id="b")]
    with pytest.raises(DataError, match=r"f\.json:record 1: id=b: answer 'Dog' is not one of") as e:
        score_records(records, source="f.json")
    assert e.value.reason == "answer_not_in_choices"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"p\.json:record 1 \(0-based\): id=b: answer 'Dog'"):
        score(str(path), benchmark="mmau")


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@needs_mmau
def test_real_file_all_right_then_some_wrong():
    records = json.loads(MMAU.read_text())
    for r in records:
        r["model_prediction"] = r["answer"]
    res = score_records(records)
    assert {t: c["total"] for t, c in res["task"].items()} == {"sound": 333, "music": 334, "speech": 333}
    assert all(c["acc"] == 1.0 for g in ("task", "difficulty", "sub-category") for c in res[g].values())
    # a uniform guess is right only on the choices whose token set is the answer's (mostly 1 of 4)
    chance = sum(sum(_tokens(c) == _tokens(r["answer"]) for c in r["choices"]) / len(r["choices"])
                 for r in records) / len(records)
    assert 0.25 < chance < 0.27
    assert res["total"] == {"correct": 1000, "total": 1000, "acc": 1.0, "chance": pytest.approx(chance),
                            "ci": [1.0, 1.0]}
    assert res["skipped"] == 0 and len(res["sub-category"]) == 27

    # every third record answers its first wrong choice; expected counts computed here, by hand
    expected = Counter()
    for i, r in enumerate(records):
        if i % 3 == 0:
            wrong = next(c for c in r["choices"] if c != r["answer"])
            r["model_prediction"] = wrong
            # a wrong choice only scores when its token set equals the answer's (official rule)
            expected[r["task"]] += _tokens(wrong) == _tokens(r["answer"])
        else:
            expected[r["task"]] += 1
    res = score_records(records)
    assert {t: c["correct"] for t, c in res["task"].items()} == dict(expected)
    assert res["total"]["correct"] == sum(expected.values())
    assert 660 < res["total"]["correct"] < 680

    for i, r in enumerate(records):
        if i % 5 == 0:
            del r["model_prediction"]
    res = score_records(records)
    assert (res["scored"], res["skipped"]) == (800, 200)


@needs_mmau
def test_cli_score_json(tmp_path):
    records = json.loads(MMAU.read_text())
    for i, r in enumerate(records):
        if i % 2:
            r["model_prediction"] = f"<answer>{r['answer']}</answer>"  # scorer sees the raw key
        r["pred"] = r["answer"]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(records))
    run = lambda *a: subprocess.run([sys.executable, "-m", "r1aqa_pl", "score", str(path), *a],
                                    cwd=REPO, capture_output=True, text=True, timeout=120)
    out = run("--json", "true")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert (res["scored"], res["skipped"]) == (500, 500) and res["total"]["acc"] == 1.0
    out = run("--key", "pred")
    assert out.returncode == 0, out.stderr
    assert "1000 scored, 0 skipped" in out.stdout and "100.00" in out.stdout
    path.write_text(json.dumps(records[:3] + [42]))
    out = run()
    assert out.returncode == 1 and "preds.json:record 3 (0-based): expected a JSON object" in out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: ")  # no traceback
