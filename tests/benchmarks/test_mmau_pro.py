"""MMAU-Pro: its three parts scored three ways (hand-computed on a small mixed file), the instruction-following
rules against pass and fail cases for every task_identifier, the choice-matcher seam (string rule; embedding with
a tiny BERT built here), the open-question judge (a fixed reply, and a tiny causal LM built here), the parquet
release read and prepared (zip archive, clip lists), bad input refused at start-up, and ``r1aqa score`` / ``eval``."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from r1aqa_pl.benchmarks import benchmark_for, get
from r1aqa_pl.benchmarks import instruction_following as instr
from r1aqa_pl.benchmarks.judge import LLMJudge, parse_scores, question_score
from r1aqa_pl.benchmarks.matchers import CHOICE_MATCHERS, ChoiceMatcher, EmbeddingMatch, StringMatch
from r1aqa_pl.benchmarks.mmau_pro import IF, MC, OPEN, MMAUPro, read_release, write_jsonl
from r1aqa_pl.cli import main
from r1aqa_pl.data.formats import check_audio, iter_questions
from r1aqa_pl.eval.score import score
from r1aqa_pl.task.question import DataError, Question

CHOICES = ["dog barking", "cat meowing", "bird singing"]


def rec(i, category, question, answer, choices, pred=None, sub="", task=None, kwargs=None, clips=1):
    """A record in the release's layout (every column of test.parquet), a prediction added when given."""
    r = {"id": f"pro-{i}", "audio_path": [f"data/c{i}_{k}.wav" for k in range(clips)], "question": question,
         "answer": answer, "choices": choices, "length_type": "short", "perceptual_skills": [], "reasoning_skills": [],
         "category": category, "transcription": None, "task_classification": None, "task_identifier": task,
         "kwargs": kwargs, "sub-cat": sub}
    if pred is not None:
        r["model_prediction"] = pred
    return r


MIXED = [
    rec(0, "sound", "What is heard?", "dog barking", CHOICES, "A dog barking.", sub="events"),  # right
    rec(1, "sound", "What is heard?", "cat meowing", CHOICES, "dog barking", sub="events"),  # wrong
    rec(2, "music", "Which instrument?", "violin", ["piano", "violin"], "violin", sub="timbre", clips=2),  # right
    rec(3, "music", "Which instrument?", "piano", ["piano", "violin"], sub="timbre"),  # no prediction: skipped
    rec(4, IF, "Describe it in lower case.", None, [], "all quiet here", task="All Lowercase", kwargs={}),  # passes
    rec(5, IF, "Three words at most.", None, [], "one two three four", task="Number Words (at most)",
        kwargs={"N": 3}),  # fails: four words
    rec(6, IF, "Mention rain and thunder.", None, [], "Rain and THUNDER", task="Include Keywords",
        kwargs={"keywords": "rain, thunder"}),  # passes: case-insensitive substrings
    rec(7, OPEN, "What happens?", "A storm approaches", [], "thunder in the distance"),
    rec(8, OPEN, "Why does it stop?", "The wind drops", [], "the wind"),
]


def jsonl(path: Path, records: list[dict]) -> Path:
    return write_jsonl(records, path)


# ---------------------------------------------------------------- the three parts, scored by hand

def test_mixed_file_scored_by_part_with_open_questions_counted_not_scored():
    res = get("mmau_pro").score_records(MIXED, bootstrap=0)
    # multiple choice 2/3 (rec 3 has no prediction), instruction following 2/3, open: 2 not scored locally
    assert res["scored"] == 6 and res["total"]["correct"] == 4 and res["total"]["acc"] == pytest.approx(4 / 6)
    assert res["left_out"]["by_reason"] == {"no_prediction": 1, "open_not_scored_locally": 2}
    assert {p: (c["correct"], c["total"]) for p, c in res["part"].items()} == {MC: (2, 3), IF: (2, 3)}
    # chance of a uniform guess, under the string rule: 1/3, 1/3, 1/2 -> 7/18; none where a part has no choices
    assert res["part"][MC]["chance"] == pytest.approx(7 / 18) and "chance" not in res["part"][IF]
    assert "chance" not in res["total"] and res["category"]["sound"]["chance"] == pytest.approx(1 / 3)
    assert list(res["category"]) == ["music", "sound", IF]
    assert {k: (c["correct"], c["total"]) for k, c in res["category"].items()} == {
        "music": (1, 1), "sound": (1, 2), IF: (2, 3)}
    assert res["scoring"] == {MC: "string rule (MMAU's)", IF: "official rules",
                              OPEN: "not scored locally (2 questions)"}
    table = get("mmau_pro").format_table(res)
    assert ("multiple choice: string rule (MMAU's); instruction following: official rules; "
            "open: not scored locally (2 questions)") in table.splitlines()[1]
    assert re.search(r"total\s+4\s+6\s+66\.67", table)


class FixedReply(LLMJudge):
    """A judge whose reply is given (no model): the official reader's rules on a known text."""

    def __init__(self, text: str):
        super().__init__(model="fixed")
        self.text = text

    def reply(self, question, reference, response):
        return self.text


def test_judged_open_questions_count_overall_over_five():
    # OVERALL 3 is replaced by the mean of the four criteria (4, 5, 3, 4 -> 4.0): each open question counts 0.8
    judge = FixedReply("CORRECTNESS: 4 - close\nRELEVANCE: 5 - on topic\nCOMPLETENESS: 3 - partial\n"
                       "CLARITY: 4 - clear\nOVERALL: 3 - fine")
    res = MMAUPro(judge=judge).score_records(MIXED, bootstrap=200)
    assert res["part"][OPEN] == {**res["part"][OPEN], "correct": 1.6, "total": 2, "acc": pytest.approx(0.8)}
    assert res["scored"] == 8 and res["total"]["correct"] == 5.6 and res["total"]["acc"] == pytest.approx(0.7)
    assert res["left_out"]["by_reason"] == {"no_prediction": 1}
    lo, hi = res["part"][OPEN]["ci"]
    assert lo == pytest.approx(0.8) and hi == pytest.approx(0.8)  # both questions 0.8: an interval of fractions
    assert res["scoring"][OPEN] == "LLM judge fixed (overall / 5)"


@pytest.mark.parametrize("text, overall", [
    ("CORRECTNESS: 4\nRELEVANCE: 5\nCOMPLETENESS: 3\nCLARITY: 4\nOVERALL: 4.5", 4.5),
    ("correctness: 2 - off\nRelevance: 2\nCOMPLETENESS: 1\nCLARITY: 3\nOVERALL: 3", 2.0),  # 3 -> mean of four
    ("CORRECTNESS: 5\nCLARITY: 1", 3.0),  # missing ones count 3; no OVERALL -> mean (5 + 3 + 3 + 1) / 4
    ("no scores at all", 3.0),
])
def test_judge_reply_read_as_the_official_reader(text, overall):
    scores = parse_scores(text)
    assert scores["overall"] == pytest.approx(overall) and question_score(scores) == pytest.approx(overall / 5)


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A 1-layer Llama with a word-level tokenizer and a chat template, built offline; its vocabulary has no
    score labels, so its replies hold none."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny_judge")
    words = ["<pad>", "<unk>", "<eos>", "the", "wind", "storm", "sound", "answer", "question", "model", "grade"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant:{% endif %}")
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=0, eos_token_id=2, bos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_judge_runs_a_causal_lm_through_transformers(tiny_causal_lm):
    """A real judge call: chat template, sampling at 0.1 (seeded), decoding; a reply without scores counts 3/5."""
    bench = MMAUPro(judge={"model": str(tiny_causal_lm), "max_new_tokens": 6, "device": "cpu"})
    first = bench.judge.reply("What happens?", "A storm approaches", "the wind")
    assert first == bench.judge.reply("What happens?", "A storm approaches", "the wind")  # seeded: the same reply
    assert set(first.split()) <= {"the", "wind", "storm", "sound", "answer", "question", "model", "grade"}
    res = bench.score_records([r for r in MIXED if r["category"] == OPEN], bootstrap=0)
    assert res["part"][OPEN]["correct"] == 1.2 and res["total"]["acc"] == pytest.approx(0.6)
    message = bench.judge.messages("Q?", "ref", "resp")
    assert message[0]["role"] == "system" and all(s in message[1]["content"] for s in ("Q?", "ref", "resp", "OVERALL:"))


# ---------------------------------------------------------------- instruction following: every rule, pass and fail

RULE_CASES = [  # (task_identifier, kwargs, response, passes) -- each rule's pass and its fail, by hand
    ("Include Keywords", {"keywords": "rain, thunder"}, "Rain, then Thunder.", True),
    ("Include Keywords", {"keywords": "rain, thunder"}, "Rain only.", False),
    ("Include Keywords", {"keywords": "rain, thunder"}, "rainbow, thunderous", True),  # substrings, as official
    ("Keyword Frequency", {"keyword": "dog", "N": 2}, "Dog and dog, not dogs.", True),  # whole words only
    ("Keyword Frequency", {"keyword": "dog", "N": 2}, "dog and dogs", False),
    ("Forbidden Words", {"forbidden_words": "loud, noisy"}, "A calm scene.", True),
    ("Forbidden Words", {"forbidden_words": "loud, noisy"}, "Quite Noisy.", False),
    ("Forbidden Words", {"forbidden_words": "loud, noisy"}, "read aloud", False),  # "aloud" holds "loud"
    ("Number Paragraphs", {"N": 2}, "First part. *** Second part.", True),
    ("Number Paragraphs", {"N": 2}, "One part. *** ", False),
    ("Number Words (at least)", {"N": 3}, "one two three", True),
    ("Number Words (at least)", {"N": 3}, "one two", False),
    ("Number Words (at most)", {"N": 3}, "one two three", True),
    ("Number Words (at most)", {"N": 3}, "one two three four", False),
    ("Number Words (range)", {"N1": 2, "N2": 3}, "one two", True),
    ("Number Words (range)", {"N1": 2, "N2": 3}, "one", False),
    ("Postscript", {"postscript_marker": "P.S."}, "Bye.\np.s. see you", True),
    ("Postscript", {"postscript_marker": "P.S."}, "Bye, see you", False),
    ("Number Placeholder", {"N": 2}, "Meet [name] at [place].", True),
    ("Number Placeholder", {"N": 2}, "Meet [name] there.", False),
    ("Number Bullets", {"N": 2}, "Items:\n* one\n* two", True),
    ("Number Bullets", {"N": 2}, "* one\n*two", False),  # no space after the second star
    ("Title", {}, "<<Storm Report>> It rains.", True),
    ("Title", {}, "<Storm Report> It rains.", False),
    ("Minimum Number Highlighted Section", {"N": 2}, "*one* and *two*", True),
    ("Minimum Number Highlighted Section", {"N": 2}, "*one* only", False),
    ("Multiple Sections", {"N": 2, "section_splitter": "SECTION"}, "SECTION 1 intro SECTION 2 end", True),
    ("Multiple Sections", {"N": 2, "section_splitter": "SECTION"}, "SECTION 1 everything", False),
    ("Repeat Prompt", {}, "what is heard? A dog barking.", True),
    ("Repeat Prompt", {}, "A dog barking. What is heard?", False),
    ("Two Responses", {}, "A dog. ****** A cat.", True),
    ("Two Responses", {}, "A dog. ****** a DOG. ", False),  # the same, case and spaces aside
    ("All Uppercase", {}, "LOUD NOISE!", True),
    ("All Uppercase", {}, "Loud noise", False),
    ("All Lowercase", {}, "quiet, calm.", True),
    ("All Lowercase", {}, "Quiet", False),
    ("All-capital Words (at least)", {"N": 2}, "NASA and the USA", True),
    ("All-capital Words (at least)", {"N": 2}, "NASA only", False),
    ("All-capital Words (at most)", {"N": 1}, "NASA only", True),
    ("All-capital Words (at most)", {"N": 1}, "NASA USA", False),
    ("All-capital Words (range)", {"N1": 1, "N2": 2}, "I saw NASA", True),  # "I" counts
    ("All-capital Words (range)", {"N1": 1, "N2": 2}, "no capitals", False),
    ("Start Checker", {"start_phrase": "My answer is"}, "my answer is: a dog", True),
    ("Start Checker", {"start_phrase": "My answer is"}, "The answer is a dog", False),
    ("End Checker", {"end_phrase": "Any other questions?"}, "That is all. Any other questions?", True),
    ("End Checker", {"end_phrase": "Any other questions?"}, "That is all. Any other questions? ", False),  # trailing
    ("Quotation", {}, '  "A dog barks."  ', True),
    ("Quotation", {}, 'A "dog" barks.', False),
    ("No Commas", {}, "a dog barks", True),
    ("No Commas", {}, "a dog, barking", False),
]


@pytest.mark.parametrize("identifier, kwargs, response, passes", RULE_CASES)
def test_instruction_rules(identifier, kwargs, response, passes):
    assert instr.problem(identifier, kwargs) is None
    assert instr.follows(identifier, kwargs, response, question="What is heard?") is passes


def test_every_official_rule_has_a_pass_and_a_fail_case():
    cases = {(i, p) for i, _, _, p in RULE_CASES} | {(i, p) for i, _, _, p in SENTENCE_CASES}
    assert len(instr.RULES) == 27 and cases == {(i, p) for i in instr.RULES for p in (True, False)}


def simple_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


SENTENCE_CASES = [
    ("Number Sentences (at least)", {"N": 2}, "It rains. It pours.", True),
    ("Number Sentences (at least)", {"N": 2}, "It rains.", False),
    ("Number Sentences (at most)", {"N": 1}, "It rains.", True),
    ("Number Sentences (at most)", {"N": 1}, "It rains. It pours.", False),
    ("Number Sentences (range)", {"N1": 2, "N2": 3}, "One. Two. Three.", True),
    ("Number Sentences (range)", {"N1": 2, "N2": 3}, "One. Two. Three. Four.", False),
]


@pytest.mark.parametrize("identifier, kwargs, response, passes", SENTENCE_CASES)
def test_sentence_rules_with_a_sentence_splitter(monkeypatch, identifier, kwargs, response, passes):
    monkeypatch.setattr(instr, "sentence_splitter", lambda: simple_sentences)
    assert instr.follows(identifier, kwargs, response) is passes


def test_sentence_rules_without_punkt_are_left_out_and_said(monkeypatch):
    monkeypatch.setattr(instr, "sentence_splitter", lambda: None)
    assert instr.follows("Number Sentences (at least)", {"N": 1}, "It rains.") is None
    item = rec(9, IF, "Two sentences.", None, [], "It rains. It pours.", task="Number Sentences (at least)",
               kwargs={"N": 2})
    res = get("mmau_pro").score_records([*MIXED, item], bootstrap=0)
    assert res["scored"] == 6 and res["left_out"]["by_reason"]["needs_nltk_punkt"] == 1
    assert "1 sentence-count item(s) not scored (NLTK's punkt_tab" in res["scoring"][IF]


def test_sentences_counted_by_nltk_punkt_where_installed():
    if instr.sentence_splitter() is None:
        pytest.skip("NLTK's punkt_tab is not installed here (the official counter)")
    assert instr.sentence_count("Dr. Smith arrived at 5 p.m. today. He sat down.") == 2


@pytest.mark.parametrize("identifier, kwargs, why", [
    ("Rhyme Scheme", {}, "unknown task_identifier 'Rhyme Scheme'"),
    ("Number Words (at least)", {}, "needs kwargs['N']"),
    ("Number Words (at least)", {"N": None, "keywords": "x"}, "needs kwargs['N']"),  # a struct's empty field
    ("Number Words (range)", {"N1": 2, "N2": "5"}, "kwargs['N2'] must be a number"),
    ("Include Keywords", {"keywords": ["a", "b"]}, "kwargs['keywords'] must be a string"),
    ("Title", "{not json", "not valid JSON"),
])
def test_an_instruction_that_cannot_be_checked_is_named(identifier, kwargs, why):
    assert why in instr.problem(identifier, kwargs)


def test_kwargs_as_json_text_or_struct():
    assert instr.kwargs_of('{"N": 3}') == {"N": 3} and instr.kwargs_of(None) == {}
    assert instr.kwargs_of({"N": 3, "keywords": None}) == {"N": 3}
    assert instr.follows("Number Words (at most)", '{"N": 2}', "two words") is True


# ---------------------------------------------------------------- bad input: refused at start-up, named

GOOD_MC = rec(20, "sound", "What is heard?", "dog barking", CHOICES, "dog barking")


@pytest.mark.parametrize("change, reason", [
    ({"choices": ["dog barking"]}, "too_few_choices"),
    ({"choices": ["dog barking", "cat meowing", "dog barking"]}, "duplicate_choice"),
    ({"answer": "horse neighing"}, "answer_not_in_choices"),
    ({"choices": "dog barking, cat meowing"}, "bad_field"),
    ({"category": IF, "task_identifier": "Rhyme Scheme", "kwargs": {}}, "bad_instruction"),
    ({"category": IF, "task_identifier": "Keyword Frequency", "kwargs": {"keyword": "dog"}}, "bad_instruction"),
    ({"category": OPEN, "answer": None, "choices": []}, "missing_field"),
    ({"category": None}, "missing_field"),
])
def test_bad_records_refused_at_start_up_by_score_and_reader(tmp_path, change, reason, capsys):
    path = jsonl(tmp_path / "pro.jsonl", [MIXED[0], {**GOOD_MC, **change}])
    with pytest.raises(DataError) as e:
        score(str(path), benchmark="mmau_pro")
    assert e.value.reason == reason and e.value.where == "line 2" and "id=pro-20" in str(e.value)
    assert capsys.readouterr().out == ""  # nothing printed: no table of a partly broken file
    items = list(iter_questions(path))
    assert isinstance(items[0], Question) and isinstance(items[1], DataError) and items[1].reason == reason
    assert str(items[1]).startswith(f"{path}:line 2:")


def test_a_clip_list_with_a_missing_clip_is_refused_at_start_up(tmp_path):
    record = rec(30, "music", "Which is louder?", "the first", ["the first", "the second"], clips=2)
    path = jsonl(tmp_path / "pro.jsonl", [record])
    (tmp_path / "data").mkdir()
    wav(tmp_path / "data" / "c30_0.wav")  # the second clip is missing
    [q] = list(iter_questions(path))
    assert q.clips == [str(tmp_path / "data" / "c30_0.wav"), str(tmp_path / "data" / "c30_1.wav")]
    e = check_audio(q)
    assert isinstance(e, DataError) and e.reason == "missing_audio" and str(e).startswith(f"{path}:line 1:")
    wav(tmp_path / "data" / "c30_1.wav")
    assert check_audio(q) is q


# ---------------------------------------------------------------- files: parquet release, project JSONL, score

def test_project_file_parsed_with_clip_lists_in_order(tmp_path):
    path = jsonl(tmp_path / "mmau-pro.jsonl", MIXED)
    assert benchmark_for(path).name == "mmau_pro"
    qs = list(iter_questions(path))
    assert all(isinstance(q, Question) for q in qs)
    q2 = qs[2]
    assert q2.audio_path == [str(tmp_path / "data/c2_0.wav"), str(tmp_path / "data/c2_1.wav")]
    assert q2.clips == q2.audio_path
    assert (q2.choices, q2.answer, q2.category, q2.sub_category, q2.dataset) == (
        ["piano", "violin"], "violin", "music", "timbre", "MMAU-Pro")
    assert (qs[4].choices, qs[4].answer, qs[7].choices, qs[7].answer) == ([], "", [], "A storm approaches")


def test_score_from_the_command_line(tmp_path, capsys):
    path = jsonl(tmp_path / "predictions.jsonl", MIXED)
    main(["score", str(path), "--benchmark", "mmau_pro"])
    out = capsys.readouterr().out
    assert "MMAU-Pro accuracy (model_prediction), version unknown: 6 scored" in out
    assert "open: not scored locally (2 questions)" in out
    assert re.search(r"part\s+multiple choice\s+2\s+3\s+66\.67", out)
    assert score(str(path))["benchmark"] == "mmau_pro"  # recognised from the file


def release_table(rows: list[dict]):
    """test.parquet's schema: list columns, a struct ``kwargs`` (None for the fields a row does not use)."""
    import pyarrow as pa

    kw_type = pa.struct([("N", pa.int64()), ("keywords", pa.string())])
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["kwargs"] = [{"N": None, "keywords": None, **(r["kwargs"] or {})} if r["kwargs"] is not None else None
                         for r in rows]
    types = {"audio_path": pa.list_(pa.string()), "choices": pa.list_(pa.string()), "kwargs": kw_type,
             "perceptual_skills": pa.list_(pa.string()), "reasoning_skills": pa.list_(pa.string()),
             "transcription": pa.string(), "task_classification": pa.string(), "task_identifier": pa.string(),
             "answer": pa.string()}
    return pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})


def test_parquet_release_read(tmp_path):
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED]
    pq.write_table(release_table(rows), tmp_path / "test.parquet")
    records = read_release(tmp_path / "test.parquet")
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert records[2]["audio_path"] == ["data/c2_0.wav", "data/c2_1.wav"]
    assert records[3]["choices"] == ["piano", "violin"]
    assert records[5]["kwargs"] == {"N": 3} and records[6]["kwargs"] == {"keywords": "rain, thunder"}
    assert records[0]["kwargs"] is None and records[4]["answer"] is None


def test_parquet_with_the_wrong_columns_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED]
    pq.write_table(release_table(rows).drop_columns(["choices"]), tmp_path / "no_choices.parquet")
    with pytest.raises(DataError, match=r"no_choices\.parquet:columns: no column 'choices'") as e:
        read_release(tmp_path / "no_choices.parquet")
    assert e.value.reason == "missing_column"
    pq.write_table(release_table(rows).drop_columns(["task_identifier"]), tmp_path / "no_task.parquet")
    with pytest.raises(DataError, match="instruction-following rows but no column 'task_identifier'"):
        read_release(tmp_path / "no_task.parquet")
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(DataError, match="no column 'audio_path', 'question', 'answer', 'choices', 'category'"):
        read_release(tmp_path / "other.parquet")
    (tmp_path / "text.parquet").write_text("id,question\n")
    with pytest.raises(DataError, match="not a readable parquet file") as e:
        read_release(tmp_path / "text.parquet")
    assert e.value.reason == "unreadable"


# ---------------------------------------------------------------- prepare-mmau-pro

def wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def release(tmp_path: Path, rows: list[dict], clips: list[str]) -> tuple[Path, Path]:
    """test.parquet and data.zip as the release ships them (clips under data/)."""
    import pyarrow.parquet as pq

    src = tmp_path / "download"
    (src / "data").mkdir(parents=True)
    pq.write_table(release_table(rows), src / "test.parquet")
    with zipfile.ZipFile(src / "data.zip", "w") as z:
        for name in clips:
            z.write(wav(src / name), name)
    return src / "test.parquet", src / "data.zip"


def test_prepare_writes_the_project_file_and_reports_a_missing_clip(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED[:5]]
    present = [c for r in rows for c in r["audio_path"] if c != "data/c2_1.wav"]  # question 2's second clip missing
    parquet, archive = release(tmp_path, rows, present)
    out = tmp_path / "mmau_pro"
    with pytest.raises(SystemExit) as e:
        main(["prepare-mmau-pro", "--parquet", str(parquet), "--audio", str(archive), "--out", str(out)])
    assert e.value.code == 1
    printed = capsys.readouterr().out
    assert "4 of 5 questions have all their clips" in printed and "FAIL: 1 questions" in printed
    records = [json.loads(x) for x in (out / "mmau-pro.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows] and records[4]["kwargs"] == {}
    [problem] = json.loads((out / "report.json").read_text())["test"]
    assert problem["record"] == 2 and problem["audio_path"] == "data/c2_1.wav" and problem["reason"] == "missing_audio"
    card = json.loads((out / "data_card.json").read_text())
    split = card["splits"]["test"]
    assert (split["records"], split["usable"], split["missing_by_reason"]) == (5, 4, {"missing_audio": 1})
    assert split["question_types"] == {MC: 3, IF: 1} and split["audio"]["clips"] == 5
    assert [s["role"] for s in card["sources"]] == ["questions", "audio archive"]
    qs = list(iter_questions(out / "mmau-pro.jsonl"))
    assert [type(check_audio(q)).__name__ for q in qs] == ["Question", "Question", "DataError", "Question", "Question"]
    # the clip arrives: the same command succeeds, keeping what is in place
    with zipfile.ZipFile(archive, "a") as z:
        z.write(wav(tmp_path / "c2_1.wav"), "data/c2_1.wav")
    assert main(["prepare-mmau-pro", "--parquet", str(parquet), "--audio", str(archive), "--out", str(out)]) is None
    assert json.loads((out / "report.json").read_text()) == {"test": []}


def test_prepare_refuses_an_unsafe_archive_and_a_wrong_parquet(tmp_path):
    from r1aqa_pl.data.mmau_pro_prepare import prepare_mmau_pro

    rows = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED[:2]]
    parquet, archive = release(tmp_path, rows, ["data/c0_0.wav"])
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("../evil.wav", b"x")
    with pytest.raises(DataError, match="refused: member '../evil.wav' is outside the output folder") as e:
        prepare_mmau_pro(parquet=str(parquet), audio=str(archive), out=str(tmp_path / "out"))
    assert e.value.reason == "unsafe_archive_member" and not (tmp_path / "out" / "data").exists()
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet file"):
        prepare_mmau_pro(parquet=str(tmp_path / "bad.parquet"), audio=str(archive), out=str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()  # refused before anything was unpacked


# ---------------------------------------------------------------- the choice-matcher seam

class FirstWord(ChoiceMatcher):
    """A user's own matcher: right when the prediction starts with the answer's first word."""

    def is_correct(self, prediction, answer, choices):
        words = (prediction or "").lower().split()
        return bool(words) and words[0] == answer.lower().split()[0]


def test_matcher_selected_by_name_class_path_or_instance():
    assert isinstance(CHOICE_MATCHERS.build("string"), StringMatch)
    emb = CHOICE_MATCHERS.build({"class_path": "embedding", "init_args": {"model": "some/folder"}})
    assert isinstance(emb, EmbeddingMatch) and emb.model == "some/folder"
    assert isinstance(MMAUPro(matcher="r1aqa_pl.benchmarks.matchers.StringMatch").matcher, StringMatch)
    with pytest.raises(ValueError, match="unknown choice matcher 'nearest'"):
        MMAUPro(matcher="nearest")
    mc = [r for r in MIXED if r["category"] not in (IF, OPEN)]
    # the string rule: 2 of 3; first word: rec 0 "A dog barking." fails, rec 1 "dog barking" vs "cat" fails, 2 right
    for spec in (f"{__name__}.FirstWord", {"class_path": f"{__name__}.FirstWord"}, FirstWord()):
        res = MMAUPro(matcher=spec).score_records(mc, bootstrap=0)
        assert (res["total"]["correct"], res["total"]["total"]) == (1, 3)
        assert res["scoring"][MC] == "FirstWord"
    assert get("mmau_pro_official").matcher.model == "nvidia/NV-Embed-v2"
    assert get("mmau_pro_official").judge.model == "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """An encoder whose output is, per token, the LayerNorm of a one-hot vector (no layers, no positions):
    mean pooling is then a bag of words, whose cosines are worked out by hand below."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "the", "dog", "barks", "loudly", "cat", "meows", "bird", "sings", "a"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", vocab["[CLS]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]")
    fast.save_pretrained(d)
    model = BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=0, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=64))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.copy_(torch.eye(len(words), 16))
        model.embeddings.position_embeddings.weight.zero_()
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(d)
    return d


def test_embedding_matcher_picks_the_nearest_choice(tiny_bert):
    """Token vectors u (LayerNorm of one-hot rows, d = 16): u.u = 16, u.v = -16/15. With [CLS] in every text,
    "the dog barks loudly" (5 tokens) shares 3 with "dog barks" and 1 with "cat meows" / "bird sings":
    dots 48 - 12/15*16 = 35.2 and 16 - 14/15*16 = 1.0667, norms^2 80 - 20*16/15 = 58.667 and 48 - 6*16/15 = 41.6,
    so cosines 35.2 / sqrt(58.667 * 41.6) = 0.7125 and 0.0216."""
    m = EmbeddingMatch(model=str(tiny_bert), device="cpu")
    sims = m.similarities("the dog barks loudly", ["dog barks", "cat meows", "bird sings"])
    assert sims == pytest.approx([0.7125, 0.0216, 0.0216], abs=1e-4)
    assert m.nearest("The dog barks loudly.", ["dog barks", "cat meows", "bird sings"]) == 0
    assert m.nearest("bird sings", ["dog barks", "bird sings"]) == 1
    assert m.chance("dog barks", ["dog barks", "cat meows", "bird sings"]) == pytest.approx(1 / 3)
    # batched with a longer text (padding), a text embeds as it does alone: the mask keeps the pads out
    alone, batch = m.embed(["dog barks"]), m.embed(["dog barks", "the dog barks loudly a cat"])
    assert batch[0].tolist() == pytest.approx(alone[0].tolist(), abs=1e-6)


class OwnEncode(EmbeddingMatch):
    """A model with its own ``encode`` (as NV-Embed-v2 has): called as the official script calls it."""

    calls: list = []

    def _load(self):
        import torch

        vectors = {"dog": [3.0, 4.0], "dog barks": [6.0, 8.1], "cat meows": [-4.0, 3.0]}

        class Model:
            def encode(self, texts, instruction, max_length):
                OwnEncode.calls.append((tuple(texts), instruction, max_length))
                return torch.tensor([vectors[t] for t in texts])

        return None, Model()


def test_a_model_with_its_own_encode_is_asked_as_the_official_script_asks():
    m = OwnEncode(model="own", max_length=4096)
    assert m.nearest("dog", ["cat meows", "dog barks"]) == 1
    assert OwnEncode.calls[-2:] == [(("dog",), "", 4096), (("cat meows", "dog barks"), "", 4096)]
    assert m.similarities("dog", ["cat meows"]) == pytest.approx([0.0])  # normalised: (3*-4 + 4*3) / 25


def test_benchmark_scores_multiple_choice_by_embedding(tiny_bert):
    """"dog" is nearest "dog barks" (2 shared tokens of 2 against 1), which the string rule calls wrong (no
    "barks"): embedding 2 of 3, string rule 1 of 3."""
    mc = [rec(40, "sound", "What?", "dog barks", ["dog barks", "cat meows"], "dog"),
          rec(41, "sound", "What?", "cat meows", ["dog barks", "cat meows"], "the dog barks loudly"),
          rec(42, "sound", "What?", "bird sings", ["dog barks", "bird sings"], "bird sings")]
    emb = MMAUPro(matcher={"class_path": "embedding", "init_args": {"model": str(tiny_bert), "device": "cpu"}})
    res = emb.score_records(mc, bootstrap=0)
    assert (res["total"]["correct"], res["total"]["chance"]) == (2, pytest.approx(0.5))
    assert res["scoring"][MC] == f"nearest choice by embedding ({tiny_bert})"
    assert get("mmau_pro").score_records(mc, bootstrap=0)["total"]["correct"] == 1


# ---------------------------------------------------------------- r1aqa eval

def test_eval_on_mmau_pro(tiny_dir, tmp_path, capsys):
    """A tiny model answers every question (one over two clips); the table scores what it can and says the rest."""
    from r1aqa_pl.eval import evaluate as ev

    data = tmp_path / "mmau_pro"
    (data / "data").mkdir(parents=True)
    records = [{k: v for k, v in r.items() if k != "model_prediction"} for r in MIXED]
    for c in {c for r in records for c in r["audio_path"]}:
        wav(data / c)
    path = write_jsonl(records, data / "mmau-pro.jsonl")
    results = ev.evaluate(checkpoint=str(tiny_dir), data=str(path), benchmark="mmau_pro", out=str(tmp_path / "ev"),
                          batch_size=4, max_new_tokens=4, bootstrap=0)
    assert results["benchmark"] == "mmau_pro" and results["records"] == 9 and results["scored"] == 7
    assert results["left_out"]["by_reason"] == {"open_not_scored_locally": 2}
    logged = results["logged"]  # the validation callback's numbers: the table's, open questions left out
    assert logged["val/count/total"] == results["scored"] and logged["val/count/left_out"] == 2
    assert logged["val/acc/total"] == pytest.approx(results["total"]["acc"])
    assert {k: logged[f"val/acc/{k}"] for k in results["category"]} == {
        k: pytest.approx(c["acc"]) for k, c in results["category"].items()}
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(p["model_prediction"], str) for p in preds)
    assert preds[2]["audio_path"] == records[2]["audio_path"]
    rescored = get("mmau_pro").score_records(preds, bootstrap=0)
    assert rescored["total"]["correct"] == results["total"]["correct"] and rescored["part"] == results["part"]
    assert "open: not scored locally (2 questions)" in capsys.readouterr().out
