"""The statistics behind robust scores, as small pure functions (numpy only): bootstrap intervals over
questions, the paired difference of two prediction files, choice-order permutations, majority vote and pass@k.

A benchmark accuracy is a mean over a few hundred questions; its sampling error is a few points (MMAU
test-mini's 1000 questions: about ±3 points at 60 %), which is the size of most reported gains. Every
table therefore carries a 95 % interval, computed the same way everywhere:

* **bootstrap over questions**: ``n_resamples`` resamples (default :data:`RESAMPLES`, 1000) of the
  questions with replacement, drawn as ``numpy.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``
  (seed default :data:`SEED`, 0): the same seed gives the same interval, on any machine;
* **percentile method**: the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
  resampled means, with numpy's default (linear) interpolation between order statistics.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

RESAMPLES = 1000  # bootstrap resamples per interval
SEED = 0  # bootstrap seed
LEVEL = 0.95  # interval coverage
_CHUNK = 1 << 22  # indices drawn per block (numpy's stream is the same drawn in blocks or at once)


def bootstrap_settings(n_resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """How the intervals were computed, for ``results.json`` and the provenance record."""
    return {"resamples": n_resamples, "seed": seed, "level": level, "method": "percentile",
            "over": "questions"}


def resampled_means(outcomes, n_resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The mean over questions of each bootstrap resample: shape (n_resamples,) for outcomes of shape (n,),
    (n_resamples, m) for (n, m) (m numbers per question, resampled together).

    Row r resamples the questions ``rng.integers(0, n, size=(n_resamples, n))[r]`` with
    ``rng = numpy.random.default_rng(seed)``; drawn in blocks so that memory stays small for large files.
    """
    x = np.asarray(outcomes, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        raise ValueError("a bootstrap needs at least one outcome")
    if n_resamples < 1:
        raise ValueError(f"n_resamples = {n_resamples}: must be >= 1")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // n)
    out = []
    for start in range(0, n_resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, n_resamples - start), n))
        out.append(x[idx].mean(axis=1))
    return np.concatenate(out)


def percentile_interval(values, level: float = LEVEL) -> list[float]:
    """[lo, hi]: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``values`` (linear interpolation)."""
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: must be in (0, 1)")
    tail = round((1 - level) / 2, 12)  # 0.025 itself, not 1 - 0.95 in binary (0.025000000000000022)
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [tail, 1 - tail])
    return [float(lo), float(hi)]


def bootstrap_ci(outcomes: Sequence[float], n_resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = LEVEL) -> list[float]:
    """Percentile-bootstrap interval of the mean of per-question outcomes (1 right, 0 wrong, or a fraction
    such as the share of a question's samples that are right): ``[lo, hi]``."""
    return percentile_interval(resampled_means(outcomes, n_resamples, seed), level)


def bootstrap_worst_ci(outcomes, n_resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> list[float]:
    """Interval of the worst of m accuracies measured on the same questions (outcomes (n, m), e.g. one column
    per choice order): each resample takes the questions' rows together and keeps its lowest column mean."""
    means = resampled_means(np.asarray(outcomes, dtype=np.float64).reshape(len(outcomes), -1), n_resamples, seed)
    return percentile_interval(means.min(axis=1), level)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> dict:
    """Accuracy of ``a`` and ``b`` (outcomes on the same questions, in the same order), their difference
    ``b - a`` and its paired interval: each resample draws questions, not predictions, so the correlation
    of two models on one question (both right on the easy ones) is kept and the interval is narrower than
    two separate ones would suggest."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes of different lengths: {len(x)} and {len(y)}")
    return {"a": float(x.mean()), "b": float(y.mean()), "difference": float(y.mean() - x.mean()),
            "ci": bootstrap_ci(y - x, n_resamples, seed, level)}


# ---------------------------------------------------------------- choice order

def question_seed(seed: int, *parts: object) -> np.random.SeedSequence:
    """A seed for one question from the run's seed and the question's own text (crc32, stable across
    processes, unlike ``hash``): its permutations do not depend on batch size, order or the other questions."""
    return np.random.SeedSequence([seed, zlib.crc32(repr(parts).encode("utf-8"))])


def permutation_orders(n: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """k orders of n choices: the identity, then k - 1 random permutations, each new while new ones remain."""
    orders = [list(range(n))]
    while len(orders) < k:
        order = [int(i) for i in rng.permutation(n)]
        if order not in orders or len(orders) >= math.factorial(n):
            orders.append(order)
    return orders


def permuted(question, k: int, seed: int = SEED) -> list:
    """The question under k orders of its choices: itself first, then k - 1 seeded permutations (distinct
    from each other and from the original while n! allows). The answer is the choice string, so it follows its
    choice; the source record (``raw``) is permuted too, so prediction files show the order asked."""
    if k < 1:
        raise ValueError(f"k = {k}: at least 1 order (the original)")
    rng = np.random.default_rng(question_seed(seed, question.id, question.question, list(question.choices)))
    out = [question]
    for order in permutation_orders(len(question.choices), k, rng)[1:]:
        choices = [question.choices[i] for i in order]
        raw = {**question.raw, "choices": choices} if question.raw else question.raw
        out.append(replace(question, choices=choices, raw=raw))
    return out


# ---------------------------------------------------------------- several samples

def vote_key(answer: str) -> str:
    """What a vote counts: the answer's words, lower-cased (``Man.`` and ``man`` are one vote)."""
    return " ".join(re.findall(r"\w+", answer.lower()))


def majority_vote(answers: Sequence[str], key: Callable[[str], str] = vote_key) -> str:
    """The most frequent answer (compared by ``key``); a tie goes to the answer among the tied ones that was
    sampled first. An answer with no words abstains; when all abstain the vote is "" (scored wrong)."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for a in answers:
        k = key(a)
        if not k:
            continue
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, a)
    if not counts:
        return ""
    best = max(counts.values())
    return first[next(k for k in counts if counts[k] == best)]  # dicts keep first-sampled order


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k answers drawn without replacement from n samples (c of them right) is
    right: ``1 - C(n-c, k) / C(n, k)`` (the unbiased estimator of Chen et al. 2021); k = n: any right."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k(n={n}, c={c}, k={k}): needs 0 <= c <= n and 1 <= k <= n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
