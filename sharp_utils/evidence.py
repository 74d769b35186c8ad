"""Evidence for a claim: one statistic, its 95 % interval and n (an :class:`~sharp_utils.claims.Ev`), built the
same way wherever a notebook compares two groups, a rate, two detectors or a proxy against a trace.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .claims import Ev
from .stats import auc, auc_diff_ci, corr_ci, median_ci, median_diff_ci, rate_ci


def share_within(z: Sequence[float], z_max: float) -> Ev:
    """Share of Monte-Carlo checks whose |z| (standard errors from the closed form) is below ``z_max``, with its
    Wilson interval."""
    k = int((np.abs(np.asarray(z)) < z_max).sum())
    return rate(k, len(z))


def rate(k: int, n: int, at: str = "") -> Ev:
    """k of n as a rate with its Wilson interval."""
    return Ev(k / n, rate_ci(k, n), n, at)


def median_diff(x: Sequence[float], y: Sequence[float], at: str = "") -> Ev:
    """median(x) − median(y) with its bootstrap interval; n = 'len(x) vs len(y)'."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return Ev(float(np.median(x) - np.median(y)), median_diff_ci(x, y), f"{len(x)} vs {len(y)}", at)


def auc_gap(is_mem: np.ndarray, rows: list[dict], a: tuple, b: tuple) -> Ev:
    """AUC(a) − AUC(b), each a (method, steps, n) of detection ``rows``, over the prompts both scored; the interval
    is a bootstrap paired over prompts (Table 1's comparison). ``is_mem[prompt_index]`` says which are memorized."""
    sc = {k: {int(r["prompt_index"]): float(r["score"]) for r in rows
              if (r["method"], int(r["steps"]), int(r["n"])) == k} for k in (a, b)}
    idx = sorted(set(sc[a]) & set(sc[b]))
    if not idx:
        raise ValueError(f"no prompt has rows of both {a} and {b}: run detection for both first")
    y = np.asarray(is_mem)[idx]
    return auc_diff(y, *(np.array([sc[k][i] for i in idx]) for k in (a, b)))


def auc_diff(y: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> Ev:
    """AUC of scores ``sa`` − AUC of ``sb`` on the same items (``y``: memorized), with a bootstrap interval paired
    over the items; n = 'memorized vs non-memorized'."""
    y = np.asarray(y, bool)
    return Ev(auc(sa[y], sa[~y]) - auc(sb[y], sb[~y]), auc_diff_ci(y, sa, sb), f"{y.sum()} vs {(~y).sum()}")


def per_timestep(points: list[dict], trace: str, proxy: str, key: str = "t",
                 label="t = {}") -> tuple[list[Ev], list[Ev]]:
    """Per timestep (``key``): the log-log Pearson r of ``proxy`` against ``trace`` and the median ratio
    proxy / trace, each with its bootstrap interval (Figure 4's reading of Lemmas 4.1 and 4.3). ``label`` names
    a timestep: a format string or a function of the key's value."""
    r, ratio = [], []
    for t in sorted({p[key] for p in points}):
        pt = [p for p in points if p[key] == t and p[trace] > 0 and p[proxy] > 0]  # a learned tr H³ may be ≤ 0
        x, y = np.log10([p[trace] for p in pt]), np.log10([p[proxy] for p in pt])
        q = np.array([p[proxy] / p[trace] for p in pt])
        at = label(t) if callable(label) else label.format(t)
        r.append(Ev(np.corrcoef(x, y)[0, 1] if len(pt) > 2 else float("nan"), corr_ci(x, y), len(pt), at))
        ratio.append(Ev(float(np.median(q)), median_ci(q), len(pt), at))
    return r, ratio
