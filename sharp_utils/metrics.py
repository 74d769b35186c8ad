"""Memorization detection metrics of Jeon et al. 2025 (§4.3, §4.4, §5.1) and their evaluation (§4.5).

Higher score = more likely memorized, for every metric.  Scores are per sample; average the n
generations of a prompt with :func:`mean_over_generations`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .hessian import ScoreFn, hvp, hvp_jvp
from .sampling import alpha_bar_prev, ddim_step, ddim_timesteps
from .scores import ScoreModel, cfg_combine


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


@dataclass(frozen=True)
class StepMetric:
    """A detection metric computed at every sampling step from s^Δ (one row of ``STEP_METRICS``)."""

    about: str  # what it is, citing the paper
    compute: Callable[[ScoreFn, Tensor, Tensor, float | None], Tensor]  # (s^Δ as a function, x_t, ε^Δ, FD step)
    power: int  # the score-space value is the ε-space value over σ_t ** power (s = −ε/σ_t)
    space: str  # the space Table 1 reports it in: 'eps' (Wen et al.'s convention) or 'score' (the paper's)


# The per-step metrics: trajectory_metrics computes them, detection and the exact pipeline take their lists from here.
STEP_METRICS: dict[str, StepMetric] = {
    "wen": StepMetric("Wen et al.'s ‖s(x_t, c) − s(x_t)‖ (§4.3)", lambda f, x, d, h: wen_metric(d), 1, "eps"),
    "ours-jvp": StepMetric("the paper's ‖H^Δ s^Δ‖² (§4.4) by an exact forward-mode JVP under math attention",
                           lambda f, x, d, h: hessian_score_metric(f, x, "jvp", d, h), 4, "score"),
    "ours-fd": StepMetric("the paper's ‖H^Δ s^Δ‖² (§4.4) by the finite difference of §5.1, in the model's dtype",
                          lambda f, x, d, h: hessian_score_metric(f, x, "fd", d, h), 4, "score"),
}
METRICS = tuple(STEP_METRICS)  # the trajectory metrics of trajectory_metrics


def _space_of(space: str | dict, metric: str) -> str:
    sp = space.get(metric, "score") if isinstance(space, dict) else space
    if sp not in ("score", "eps"):
        raise ValueError(f"space {sp!r} is unknown: use 'score' or 'eps'")
    return sp


def trajectory_metrics(
    model: ScoreModel,
    x_T: Tensor,
    cond: Any,
    uncond: Any = None,
    ks: tuple[int, ...] = (1,),
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    metrics: tuple[str, ...] = METRICS,
    space: str | dict = "score",
    steps_offset: int = 1,
    rel_step: float | None = None,
    callback: Callable[[dict], None] | None = None,
) -> dict[str, dict[int, Tensor]]:
    """Detection metrics averaged over the first k DDIM steps from ``x_T``, for every k in ``ks`` (§4.3-4.5 of Jeon
    et al. 2025).

    One trajectory of max(ks) guided DDIM steps serves every k.  Returns {metric: {k: per-sample mean}}.
    ``space`` ('score', 'eps', or {metric: space}) picks s = −ε/√(1−ᾱ_t) (the paper's analysis) or ε
    (Wen et al.'s and the official code's convention).  Everything is computed on ε and rescaled exactly:
    ‖s^Δ‖ = ‖ε^Δ‖/σ_t and ‖H^Δ s^Δ‖² = ‖J_ε ε^Δ‖²/σ_t⁴ with σ_t = √(1−ᾱ_t) (the FD probe point is the same).
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"metrics {sorted(unknown)} are unknown: use {METRICS}")
    spaces = {m: _space_of(space, m) for m in metrics}
    ts = ddim_timesteps(model.num_train_timesteps, num_inference_steps, steps_offset)
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1 or ks[-1] > len(ts):
        raise ValueError(f"steps {ks} must lie in [1, {len(ts)}]")
    sums = {m: torch.zeros(x_T.shape[0], dtype=torch.float64) for m in metrics}
    out: dict[str, dict[int, Tensor]] = {m: {} for m in metrics}
    x = x_T
    for i, t in enumerate(ts[:ks[-1]]):
        a = model.alpha_bar(t).to(x)
        sigma = float(torch.sqrt(1 - model.alpha_bar(t).double()))
        with torch.no_grad():
            eps_c, eps_u = model.eps(x, t, cond), model.eps(x, t, uncond)
        d_eps = eps_c - eps_u
        delta_fn = model.delta_fn(t, cond, uncond, "eps")
        row = {}
        for m in metrics:
            val = STEP_METRICS[m].compute(delta_fn, x, d_eps, rel_step)
            row[m] = val.detach().double().cpu() / (sigma ** STEP_METRICS[m].power if spaces[m] == "score" else 1.0)
            sums[m] += row[m]
        if callback is not None:
            callback({"i": i, "t": t, "x": x, **row})
        if i + 1 in ks:
            for m in metrics:
                out[m][i + 1] = sums[m] / (i + 1)
        if i + 1 < ks[-1]:
            a_prev = alpha_bar_prev(model, t, num_inference_steps).to(x)
            x = ddim_step(x, cfg_combine(eps_c, eps_u, guidance_scale), a, a_prev)
    return out


def first_steps_metrics(
    model: ScoreModel,
    x_T: Tensor,
    cond: Any,
    uncond: Any = None,
    k: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    metrics: tuple[str, ...] = METRICS,
    space: str | dict = "score",
    steps_offset: int = 1,
    rel_step: float | None = None,
    callback: Callable[[dict], None] | None = None,
) -> dict[str, Tensor]:
    """Detection metrics averaged over the first ``k`` DDIM steps from ``x_T`` (§4.3-4.5 of Jeon et al. 2025).

    Returns {metric: per-sample mean over the first k steps}; see :func:`trajectory_metrics`.  At a single
    step the 'score' and 'eps' spaces differ by a constant factor, so detection is unchanged.
    """
    out = trajectory_metrics(model, x_T, cond, uncond, (k,), num_inference_steps, guidance_scale, metrics, space,
                             steps_offset, rel_step, callback)
    return {m: v[k] for m, v in out.items()}


def attention_entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Σ_i −p_i log p_i over ``dim`` (terms with p_i = 0 count 0): Ren et al. 2024's E_t (App. D.1 of Jeon et al.
    2025)."""
    p = p.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim)


def summary_entropy(token_probs: Tensor, lengths: Tensor) -> Tensor:
    """Entropy terms of the summary tokens only (end token and padding, index ≥ length − 1): Ren et al.'s E^summary."""
    L = token_probs.shape[-1]
    mask = torch.arange(L, device=token_probs.device)[None, :] >= (lengths.to(token_probs.device)[:, None] - 1)
    p = token_probs.double()
    return -(p * torch.log(p.clamp_min(1e-300)) * mask).sum(-1)


def masked_wen_metric(delta: Tensor, mask: Tensor) -> Tensor:
    """Chen et al. 2024's bright-ending metric at one step, ‖ε^Δ ∘ m‖ / mean(m) per sample (App. D.1 of Jeon et al.
    2025).

    ``mask`` (B, h, w) broadcasts over the latent channels; its scale cancels.
    """
    m = mask.to(delta).unsqueeze(1)
    return (delta * m).flatten(1).norm(dim=1) / m.flatten(1).mean(1).clamp_min(torch.finfo(delta.dtype).tiny)


def channel_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between ``a`` and ``b`` over the channel axis at every pixel, averaged over pixels, per sample."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).flatten(1).mean(1)


def tile_size(height: int, reference_tile: int = 128, reference_height: int = 512) -> int:
    """Carlini et al.'s 128-px tiles at SD's 512 px, scaled to other resolutions (at least 1 px)."""
    return max(1, round(reference_tile * height / reference_height))


def tiled_l2_distance(a: Tensor, b: Tensor, tile: int) -> Tensor:
    """Max over non-overlapping ``tile``×``tile`` tiles of the RMS pixel distance between images ``a`` and ``b`` (C,
    H, W)."""
    C, H, W = a.shape
    if H % tile or W % tile:
        raise ValueError(f"image size {H}x{W} is not a multiple of the tile size {tile}")
    d = (a.double() - b.double()).pow(2).reshape(C, H // tile, tile, W // tile, tile)
    return d.mean(dim=(0, 2, 4)).sqrt().max()


def tiled_l2_score(images: Tensor, tile: int | None = None) -> float:
    """Carlini et al. 2023's tiled ℓ2 over the n generations of one prompt, as a detection score (higher = memorized).

    For each pair of generations, the distance is the max over tiles of the RMS tile distance (App. D.1
    of Jeon et al. 2025); the score is minus the mean over all n(n−1)/2 pairs (memorized prompts give
    near-identical images whatever the seed).  Needs n ≥ 2.
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError("tiled ℓ2 compares generations of the same prompt: it needs n ≥ 2")
    tile = tile or tile_size(images.shape[-2])
    d = [tiled_l2_distance(images[i], images[j], tile) for i in range(n) for j in range(i + 1, n)]
    return -float(torch.stack(d).mean())


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
