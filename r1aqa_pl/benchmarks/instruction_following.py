"""MMAU-Pro's instruction-following checks: one small pure function per ``task_identifier``.

Re-implemented from the official ``evaluate_mmau_pro_comprehensive.py`` (repository sonalkum/MMAUPro), so
that a response passes here exactly when it passes there: the same text operations (``str.split`` word
counts, case-sensitive ``isupper``/``islower``, substring keyword tests, the same regular expressions for
bullets, highlights, placeholders and titles, letters-only comparisons for postscripts and start/end
phrases). The response is the whole answer text; "Repeat Prompt" compares it with the record's question.

Two deliberate differences, both about bad data, never about a well-formed record:

* a record whose ``task_identifier`` is not one of :data:`RULES`, or that lacks a value its rule reads
  (``N``, ``keywords`` ...), is refused at start-up (:func:`problem`); the official script scores the first
  as a failure and fills the second with a default (N=0, N2=999, an empty keyword), i.e. scores it against
  a constraint nobody set;
* sentence counts use NLTK's Punkt tokenizer, as the official script does; where NLTK or its ``punkt_tab``
  model is not installed, the sentence rules return None (left out and counted, never guessed with
  another splitter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

NUMBER = (int, float)
TEXT = (str,)

# -- counting, as the official script counts ---------------------------------------------------------------


def word_count(text: str) -> int:
    """Whitespace-separated words (``str.split``)."""
    return len(text.split())


@lru_cache(maxsize=1)
def sentence_splitter() -> Callable[[str], list[str]] | None:
    """NLTK's ``sent_tokenize`` (the official counter) when NLTK and its punkt_tab model are installed, else None."""
    try:
        import nltk

        nltk.data.find("tokenizers/punkt_tab/english/")
    except (ImportError, LookupError):
        return None
    from nltk.tokenize import sent_tokenize

    return sent_tokenize


def sentence_count(text: str) -> int | None:
    """Sentences by NLTK's Punkt; None without it (a regex split would disagree on "Dr." or "e.g.")."""
    split = sentence_splitter()
    return None if split is None else len(split(text))


def paragraph_count(text: str) -> int:
    """Non-blank parts between ``***`` markers."""
    return sum(1 for part in text.split("***") if part.strip())


_BULLET = re.compile(r"(?:\A|\n)\s*\*\s+")  # "* " at the very start or after a newline
_HIGHLIGHT = re.compile(r"\*[^*]+\*")  # *highlighted*
_PLACEHOLDER = re.compile(r"\[[^\]]+\]")  # [placeholder]
_TITLE = re.compile(r"<<[^>]+>>")  # <<title>>


def bullet_count(text: str) -> int:
    return len(_BULLET.findall(text))


def highlight_count(text: str) -> int:
    return len(_HIGHLIGHT.findall(text))


def placeholder_count(text: str) -> int:
    return len(_PLACEHOLDER.findall(text))


def capital_word_count(text: str) -> int:
    """Words that are upper case as a whole (``"NASA"``, ``"I"``, ``"U.S."``)."""
    return sum(1 for word in text.split() if word.isupper())


def keyword_count(text: str, keyword: str) -> int:
    """Case-insensitive whole-word occurrences of ``keyword``."""
    return len(re.findall(rf"\b{re.escape(keyword.lower())}\b", text.lower()))


def letters(text: str, spaces: bool = False) -> str:
    """Lower-cased ASCII letters only (and spaces, if asked): how postscripts and start/end phrases compare."""
    return re.sub(r"[^a-zA-Z ]" if spaces else r"[^a-zA-Z]", "", text).lower()


def section_count(text: str, splitter: str) -> int:
    """Non-blank parts of the stripped text split at ``splitter`` (whitespace around it included)."""
    parts = re.split(rf"\s*{re.escape(splitter)}\s*", text.strip())
    return sum(1 for part in parts if part.strip())


# -- one check per task_identifier --------------------------------------------------------------------------


def include_keywords(text: str, keywords: str) -> bool:
    """Every keyword of the ", "-separated list occurs (as a substring, any case)."""
    return all(k.lower() in text.lower() for k in keywords.split(", "))


def forbidden_words(text: str, forbidden_words: str) -> bool:
    """No word of the ", "-separated list occurs (as a substring, any case)."""
    return not any(w.lower() in text.lower() for w in forbidden_words.split(", "))


def keyword_frequency(text: str, keyword: str, N) -> bool:
    return keyword_count(text, keyword) == N


def number_paragraphs(text: str, N) -> bool:
    return paragraph_count(text) == N


def words_at_least(text: str, N) -> bool:
    return word_count(text) >= N


def words_at_most(text: str, N) -> bool:
    return word_count(text) <= N


def words_in_range(text: str, N1, N2) -> bool:
    return N1 <= word_count(text) <= N2


def sentences_at_least(text: str, N) -> bool | None:
    n = sentence_count(text)
    return None if n is None else n >= N


def sentences_at_most(text: str, N) -> bool | None:
    n = sentence_count(text)
    return None if n is None else n <= N


def sentences_in_range(text: str, N1, N2) -> bool | None:
    n = sentence_count(text)
    return None if n is None else N1 <= n <= N2


def postscript(text: str, postscript_marker: str) -> bool:
    """The marker's letters occur in the text's letters (so "P.S." matches "PS" and "p. s.")."""
    return letters(postscript_marker) in letters(text)


def placeholders_at_least(text: str, N) -> bool:
    return placeholder_count(text) >= N


def number_bullets(text: str, N) -> bool:
    return bullet_count(text) == N


def has_title(text: str) -> bool:
    return _TITLE.search(text) is not None


def highlights_at_least(text: str, N) -> bool:
    return highlight_count(text) >= N


def multiple_sections(text: str, N, section_splitter: str) -> bool:
    return section_count(text, section_splitter) == N


def repeat_prompt(text: str, question: str) -> bool:
    """The response starts with the question itself (case-insensitive, outer whitespace ignored)."""
    return text.strip().lower().startswith(question.strip().lower())


def two_responses(text: str) -> bool:
    """Exactly two parts around ``******``, different from each other."""
    parts = text.split("******")
    return len(parts) == 2 and parts[0].lower().strip() != parts[1].lower().strip()


def all_uppercase(text: str) -> bool:
    return text.isupper()


def all_lowercase(text: str) -> bool:
    return text.islower()


def capital_words_at_least(text: str, N) -> bool:
    return capital_word_count(text) >= N


def capital_words_at_most(text: str, N) -> bool:
    return capital_word_count(text) <= N


def capital_words_in_range(text: str, N1, N2) -> bool:
    return N1 <= capital_word_count(text) <= N2


def start_checker(text: str, start_phrase: str) -> bool:
    return letters(text, spaces=True).startswith(letters(start_phrase, spaces=True))


def end_checker(text: str, end_phrase: str) -> bool:
    return letters(text, spaces=True).endswith(letters(end_phrase, spaces=True))


def quotation(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith('"') and stripped.endswith('"')


def no_commas(text: str) -> bool:
    return "," not in text


@dataclass(frozen=True)
class Rule:
    """A check and the ``kwargs`` it reads, in its argument order, with the types each must have."""

    check: Callable[..., bool | None]
    needs: tuple[tuple[str, tuple[type, ...]], ...] = ()
    question: bool = False  # the check also reads the record's question ("Repeat Prompt")


N, N1, N2 = ("N", NUMBER), ("N1", NUMBER), ("N2", NUMBER)

# task_identifier -> rule: the official script's 27 identifiers
RULES: dict[str, Rule] = {
    "Include Keywords": Rule(include_keywords, (("keywords", TEXT),)),
    "Keyword Frequency": Rule(keyword_frequency, (("keyword", TEXT), N)),
    "Forbidden Words": Rule(forbidden_words, (("forbidden_words", TEXT),)),
    "Number Paragraphs": Rule(number_paragraphs, (N,)),
    "Number Words (at least)": Rule(words_at_least, (N,)),
    "Number Words (at most)": Rule(words_at_most, (N,)),
    "Number Words (range)": Rule(words_in_range, (N1, N2)),
    "Number Sentences (at least)": Rule(sentences_at_least, (N,)),
    "Number Sentences (at most)": Rule(sentences_at_most, (N,)),
    "Number Sentences (range)": Rule(sentences_in_range, (N1, N2)),
    "Postscript": Rule(postscript, (("postscript_marker", TEXT),)),
    "Number Placeholder": Rule(placeholders_at_least, (N,)),
    "Number Bullets": Rule(number_bullets, (N,)),
    "Title": Rule(has_title),
    "Minimum Number Highlighted Section": Rule(highlights_at_least, (N,)),
    "Multiple Sections": Rule(multiple_sections, (N, ("section_splitter", TEXT))),
    "Repeat Prompt": Rule(repeat_prompt, question=True),
    "Two Responses": Rule(two_responses),
    "All Uppercase": Rule(all_uppercase),
    "All Lowercase": Rule(all_lowercase),
    "All-capital Words (at least)": Rule(capital_words_at_least, (N,)),
    "All-capital Words (at most)": Rule(capital_words_at_most, (N,)),
    "All-capital Words (range)": Rule(capital_words_in_range, (N1, N2)),
    "Start Checker": Rule(start_checker, (("start_phrase", TEXT),)),
    "End Checker": Rule(end_checker, (("end_phrase", TEXT),)),
    "Quotation": Rule(quotation),
    "No Commas": Rule(no_commas),
}
SENTENCE_RULES = frozenset(k for k in RULES if k.startswith("Number Sentences"))


def kwargs_of(value: Any) -> dict:
    """A record's ``kwargs`` as a dict: a parquet struct arrives with None for the fields other rows use
    (dropped: None means absent), a JSON string is parsed, None is no arguments."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"'kwargs' is not valid JSON: {value!r}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"'kwargs' must be an object, got {type(value).__name__} {value!r}")
    return {k: v for k, v in value.items() if v is not None}


def problem(identifier: Any, kwargs: Any) -> str | None:
    """Why a record's constraint cannot be checked (unknown identifier, a missing or mistyped argument), or None."""
    if identifier not in RULES:
        known = ", ".join(RULES)
        return f"unknown task_identifier {identifier!r} (the official rules know: {known})"
    try:
        args = kwargs_of(kwargs)
    except ValueError as e:
        return str(e)
    for name, types in RULES[identifier].needs:
        if name not in args:
            return f"task_identifier {identifier!r} needs kwargs[{name!r}]; kwargs are {args}"
        if isinstance(args[name], bool) or not isinstance(args[name], types):
            want = "a number" if types is NUMBER else "a string"
            return f"task_identifier {identifier!r}: kwargs[{name!r}] must be {want}, got {args[name]!r}"
    return None


def follows(identifier: str, kwargs: Any, response: str, question: str = "") -> bool | None:
    """Whether ``response`` meets the constraint; None when it cannot be judged here (a sentence rule
    without NLTK's Punkt). Call :func:`problem` first: this assumes a well-formed record."""
    rule, args = RULES[identifier], kwargs_of(kwargs)
    extra = (question,) if rule.question else ()
    return rule.check(response, *extra, *(args[name] for name, _ in rule.needs))
