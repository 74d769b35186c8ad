"""95 % intervals for the claims' statistics, from maintained code (scipy.stats), and the three-way verdict.

Rates get Wilson binomial intervals (:func:`rate_ci`); medians, AUCs, correlations and their differences get
bootstrap intervals (:func:`bootstrap_ci`), paired over prompts where two methods score the same prompts
(:func:`auc_diff_ci`). :func:`verdict` turns an interval and the claim's line into held / not held / inconclusive.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
N_RESAMPLES = 2000
HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


def rate_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of a binomial rate k / n (``scipy.stats.binomtest(...).proportion_ci``)."""
    if n <= 0:
        raise ValueError("rate_ci: n must be positive (no trials, no rate)")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_ci(statistic: Callable, *samples: Sequence, paired: bool = False, level: float = LEVEL,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (BCa, percentile where BCa degenerates) of ``statistic(*samples)``; ``paired``
    resamples the same indices in every sample (they must have one length)."""
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    if any(len(s) < 2 for s in samples):
        return float("nan"), float("nan")  # one observation: no interval
    point = float(statistic(*samples))
    if all(np.ptp(s) == 0 for s in samples):
        return point, point  # every resample gives the same value
    for method in ("BCa", "percentile"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's degenerate-data notices: a NaN interval says it (inconclusive)
            try:
                res = stats.bootstrap(samples, statistic, paired=paired, vectorized=False, n_resamples=n_resamples,
                                      confidence_level=level, method=method, rng=np.random.default_rng(seed))
            except (ValueError, FloatingPointError):
                continue
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi
    return float("nan"), float("nan")


def median_ci(x: Sequence, **kw) -> tuple[float, float]:
    """Bootstrap interval of a median."""
    return bootstrap_ci(np.median, x, **kw)


def median_diff_ci(x: Sequence, y: Sequence, paired: bool = False, **kw) -> tuple[float, float]:
    """Bootstrap interval of median(x) − median(y) (two independent groups, or paired: the median difference)."""
    if paired:
        return bootstrap_ci(lambda a, b: np.median(a - b), x, y, paired=True, **kw)
    return bootstrap_ci(lambda a, b: np.median(a) - np.median(b), x, y, **kw)


def median_ratio_ci(x: Sequence, y: Sequence, **kw) -> tuple[float, float]:
    """Bootstrap interval of median(x) / median(y), two independent groups."""
    return bootstrap_ci(lambda a, b: np.median(a) / np.median(b), x, y, **kw)


def auc(pos: Sequence, neg: Sequence) -> float:
    """P(score of a positive > score of a negative), ties counted 1/2 (the ROC AUC, Mann–Whitney U / (m n))."""
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    ranks = stats.rankdata(np.concatenate([pos, neg]))  # midranks: ties count 1/2
    m = len(pos)
    return float(ranks[:m].sum() - m * (m + 1) / 2) / (m * len(neg))


def _auc_of(labels: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> float:
    y, s = labels[idx.astype(int)], scores[idx.astype(int)]
    if y.all() or not y.any():
        return float("nan")
    return auc(s[y], s[~y])


def auc_ci(labels: Sequence, scores: Sequence, **kw) -> tuple[float, float]:
    """Bootstrap interval of an AUC, resampling prompts (label and score together)."""
    y, s = np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)
    return bootstrap_ci(lambda i: _auc_of(y, s, i), np.arange(len(y)), **kw)


def auc_diff_ci(labels: Sequence, scores_a: Sequence, scores_b: Sequence, **kw) -> tuple[float, float]:
    """Bootstrap interval of AUC(a) − AUC(b) where both methods scored the same prompts: paired, each resample
    draws prompts once and scores them with both methods."""
    y = np.asarray(labels, dtype=bool)
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if not len(y) == len(a) == len(b):
        raise ValueError("auc_diff_ci: labels and both score arrays must cover the same prompts in the same order")
    return bootstrap_ci(lambda i: _auc_of(y, a, i) - _auc_of(y, b, i), np.arange(len(y)), **kw)


def corr_ci(x: Sequence, y: Sequence, **kw) -> tuple[float, float]:
    """Bootstrap interval of Pearson's r over pairs (x_i, y_i)."""
    return bootstrap_ci(lambda a, b: np.corrcoef(a, b)[0, 1], x, y, paired=True, **kw)


def verdict(ci: tuple[float, float] | None, value: float, side: str, line) -> str:
    """held: the interval lies entirely on the claimed side of the line (``side`` '<', '>' or 'in' a (lo, hi)
    band); not held: entirely on the other side; inconclusive otherwise — a tie or an interval across the line.
    ``ci`` None: an exact computation (no sampling), judged on ``value``; a NaN interval is inconclusive."""
    lo, hi = (value, value) if ci is None else ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if side == ">":
        return HELD if lo > line else NOT_HELD if hi < line else INCONCLUSIVE
    if side == "<":
        return HELD if hi < line else NOT_HELD if lo > line else INCONCLUSIVE
    if side == "in":
        a, b = line
        return HELD if a < lo and hi < b else NOT_HELD if hi < a or lo > b else INCONCLUSIVE
    raise ValueError(f"verdict: side must be '<', '>' or 'in', not {side!r}")


def combine(verdicts: Sequence[str]) -> str:
    """A claim of several tests: held if all held, not held if any is not held, else inconclusive."""
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    return HELD if verdicts and all(v == HELD for v in verdicts) else INCONCLUSIVE
