"""Memorization detection metrics of Jeon et al. 2025 (§4.3, §4.4, §5.1) and their evaluation (§4.5).

Higher score = more likely memorized, for every metric.  Scores are per sample; average the n
generations of a prompt with :func:`mean_over_generations`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .hessian import ScoreFn, hvp, hvp_jvp
from .sampling import alpha_bar_prev, ddim_step, ddim_timesteps
from .scores import ScoreModel, cfg_combine, eps_to_score

METRICS = ("wen", "ours-jvp", "ours-fd")


def _sqnorm(x: Tensor) -> Tensor:
    return x.flatten(1).pow(2).sum(1)


def wen_metric(delta: Tensor) -> Tensor:
    """Wen et al.'s ‖s^Δ(x_t)‖ = ‖s(x_t, c) − s(x_t)‖ per sample (§4.3 of Jeon et al. 2025)."""
    return _sqnorm(delta).sqrt()


def hessian_score_metric(
    delta_fn: ScoreFn,
    x: Tensor,
    method: str = "jvp",
    delta: Tensor | None = None,
    rel_step: float | None = None,
) -> Tensor:
    """The paper's ‖H^Δ s^Δ‖² per sample (§4.4 of Jeon et al. 2025), H^Δ = ∇s^Δ.

    ``method='jvp'``: exact forward-mode product.  ``method='fd'``: the Taylor form of §5.1,
    ‖s^Δ(x + h s^Δ(x)) − s^Δ(x)‖²/h² with h from :func:`sharp_utils.hessian.fd_step`;
    ``'fd-central'`` uses the central difference.  ``delta`` reuses a known s^Δ(x).
    """
    if delta is None:
        with torch.no_grad():
            delta = delta_fn(x)
    if method == "jvp":
        return _sqnorm(hvp_jvp(delta_fn, x, delta)[1])
    if method in ("fd", "fd-central"):
        with torch.no_grad():
            return _sqnorm(hvp(delta_fn, x, delta, method, rel_step=rel_step, fx=delta)[1])
    raise ValueError(f"method {method!r} is unknown: use 'jvp', 'fd' or 'fd-central'")


def first_steps_metrics(
    model: ScoreModel,
    x_T: Tensor,
    cond: Any,
    uncond: Any = None,
    k: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    metrics: tuple[str, ...] = METRICS,
    space: str = "score",
    steps_offset: int = 1,
    rel_step: float | None = None,
    callback: Callable[[dict], None] | None = None,
) -> dict[str, Tensor]:
    """Detection metrics averaged over the first ``k`` DDIM steps from ``x_T`` (§4.3-4.5 of Jeon et al. 2025).

    Returns {metric: per-sample mean over the first k steps}.  ``space='score'`` uses s = −ε/√(1−ᾱ_t)
    (the paper's analysis); ``space='eps'`` uses ε directly (Wen et al.'s and the official code's
    convention).  At a single step the two differ by a constant factor, so detection is unchanged.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"metrics {sorted(unknown)} are unknown: use {METRICS}")
    if space not in ("score", "eps"):
        raise ValueError(f"space {space!r} is unknown: use 'score' or 'eps'")
    ts = ddim_timesteps(model.num_train_timesteps, num_inference_steps, steps_offset)
    if not 1 <= k <= len(ts):
        raise ValueError(f"k={k} must be in [1, {len(ts)}]")
    sums = {m: torch.zeros(x_T.shape[0], dtype=torch.float64) for m in metrics}
    x = x_T
    for i, t in enumerate(ts[:k]):
        a = model.alpha_bar(t).to(x)
        with torch.no_grad():
            eps_c, eps_u = model.eps(x, t, cond), model.eps(x, t, uncond)
        d_eps = eps_c - eps_u
        delta = d_eps if space == "eps" else eps_to_score(d_eps, a)
        delta_fn = model.delta_fn(t, cond, uncond, space)
        row = {}
        for m in metrics:
            if m == "wen":
                row[m] = wen_metric(delta)
            else:
                row[m] = hessian_score_metric(delta_fn, x, "jvp" if m == "ours-jvp" else "fd", delta, rel_step)
            sums[m] += row[m].detach().double().cpu()
        if callback is not None:
            callback({"i": i, "t": t, "x": x, **row})
        if i + 1 < k:
            a_prev = alpha_bar_prev(model, t, num_inference_steps).to(x)
            x = ddim_step(x, cfg_combine(eps_c, eps_u, guidance_scale), a, a_prev)
    return {m: s / k for m, s in sums.items()}


def mean_over_generations(scores: Tensor, n: int) -> Tensor:
    """Average per-sample scores laid out prompt-major, (P·n,) → (P,)."""
    if scores.numel() % n:
        raise ValueError(f"{scores.numel()} scores cannot be split into groups of n={n}")
    return scores.reshape(-1, n).mean(1)


def detection_report(mem_scores, nmem_scores) -> dict[str, float]:
    """AUC, TPR@1%FPR and TPR@3%FPR with memorized as the positive class (§4.5 of Jeon et al. 2025).

    TPR@x is the largest TPR among ROC points with FPR ≤ x.  Higher score = memorized; labels are
    never flipped (the official evaluation flips them when AUC < 0.5, and reads TPR at the nearest FPR).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    mem = np.asarray(mem_scores, dtype=np.float64).reshape(-1)
    nmem = np.asarray(nmem_scores, dtype=np.float64).reshape(-1)
    if mem.size == 0 or nmem.size == 0:
        raise ValueError("detection_report needs at least one memorized and one non-memorized score")
    if not (np.isfinite(mem).all() and np.isfinite(nmem).all()):
        raise ValueError("detection_report got NaN or infinite scores: check the model's dtype and the FD step")
    y = np.r_[np.ones(mem.size), np.zeros(nmem.size)]
    s = np.r_[mem, nmem]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out = {"auc": float(roc_auc_score(y, s))}
    for x in (0.01, 0.03):
        out[f"tpr@{x:.0%}fpr"] = float(tpr[fpr <= x + 1e-12].max())
    out["n_mem"], out["n_nmem"] = int(mem.size), int(nmem.size)
    return out
