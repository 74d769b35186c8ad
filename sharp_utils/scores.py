"""Scores of variance-preserving diffusion models (App. D.1 of Jeon et al. 2025).

Notation: ``alpha_bar`` is the cumulative product ᾱ_t of a VP schedule, so that
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε.  The score is s(x_t) = ∇ log p_t(x_t) = −E[ε | x_t] / √(1−ᾱ_t).

The *score-function interface* every model adapter implements is :class:`ScoreModel`: a raw
network output ``model_output(x, t, cond)`` (``cond=None`` = unconditional), its ``prediction_type``
and the schedule ``alphas_cumprod``.  Everything in :mod:`sharp_utils.metrics` and
:mod:`sharp_utils.sampling` talks to models only through it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _bcast(a: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample tensor ``a`` against a batch ``x`` of shape (B, ...)."""
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    if a.ndim == 0:
        return a
    return a.reshape(a.shape[0], *([1] * (x.ndim - 1)))


def eps_to_score(eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """ε-prediction → score, s = −ε/√(1−ᾱ_t) (App. D.1 of Jeon et al. 2025)."""
    return -eps / torch.sqrt(1 - _bcast(alpha_bar, eps))


def score_to_eps(score: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """Score → ε-prediction, ε = −√(1−ᾱ_t) s (inverse of :func:`eps_to_score`)."""
    return -score * torch.sqrt(1 - _bcast(alpha_bar, score))


def v_to_eps(v: Tensor, x: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """v-prediction → ε, with v = √ᾱ ε − √(1−ᾱ) x_0, so ε = √ᾱ v + √(1−ᾱ) x_t (Salimans & Ho 2022)."""
    a = _bcast(alpha_bar, x)
    return torch.sqrt(a) * v + torch.sqrt(1 - a) * x


def x0_to_eps(x0: Tensor, x: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """x_0-prediction → ε, ε = (x_t − √ᾱ x_0)/√(1−ᾱ)."""
    a = _bcast(alpha_bar, x)
    return (x - torch.sqrt(a) * x0) / torch.sqrt(1 - a)


def eps_to_x0(eps: Tensor, x: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """ε → the denoised estimate x̂_0 = (x_t − √(1−ᾱ) ε)/√ᾱ (inverse of :func:`x0_to_eps`)."""
    a = _bcast(alpha_bar, x)
    return (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)


def output_to_eps(output: Tensor, x: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    """Any VP network output (``epsilon``, ``v_prediction`` or ``sample``) → ε."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return v_to_eps(output, x, alpha_bar)
    if prediction_type == "sample":
        return x0_to_eps(output, x, alpha_bar)
    raise ValueError(f"prediction_type {prediction_type!r} is unknown: use one of {PREDICTION_TYPES}")


def output_to_score(output: Tensor, x: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    """Any VP network output → score s(x_t) (App. D.1 of Jeon et al. 2025)."""
    return eps_to_score(output_to_eps(output, x, alpha_bar, prediction_type), alpha_bar)


def cfg_combine(cond: Tensor, uncond: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance, u + w (c − u) (Ho & Salimans 2021); works for ε and scores alike."""
    return uncond + guidance_scale * (cond - uncond)


def repeat_condition(cond: Any, n: int) -> Any:
    """One condition for ``n`` batch rows: text embeddings (1, L, D) expanded, a one-key list repeated (exact
    models)."""
    if isinstance(cond, Tensor):
        return cond.expand(n, *cond.shape[1:])
    if isinstance(cond, (list, tuple)):
        if len(cond) != 1:
            raise ValueError(f"{len(cond)} conditions to repeat: give one")
        return list(cond) * n
    return cond


def score_delta(cond: Tensor, uncond: Tensor) -> Tensor:
    """s^Δ = s(x, c) − s(x), the conditioning direction of §4.3 of Jeon et al. 2025."""
    return cond - uncond


class ScoreModel:
    """The score-function interface: a VP noise/velocity/sample predictor with its schedule.

    Subclasses set ``prediction_type`` and ``alphas_cumprod`` (1-D tensor indexed by the integer
    training timestep) and implement :meth:`model_output`.  ``cond=None`` means unconditional.
    """

    prediction_type: str = "epsilon"
    alphas_cumprod: Tensor

    def model_output(self, x: Tensor, t: int, cond: Any = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: int) -> Tensor:
        return self.alphas_cumprod[int(t)]

    def eps(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        """ε(x_t, c) whatever the network predicts."""
        return output_to_eps(self.model_output(x, t, cond), x, self.alpha_bar(t).to(x), self.prediction_type)

    def score(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        """s_θ(x_t, c) = −ε_θ(x_t, c)/√(1−ᾱ_t)."""
        return eps_to_score(self.eps(x, t, cond), self.alpha_bar(t).to(x))

    def score_fn(self, t: int, cond: Any = None, space: str = "score") -> Callable[[Tensor], Tensor]:
        """x ↦ s(x, c) (``space="score"``) or x ↦ ε(x, c) (``space="eps"``) at a fixed timestep."""
        if space not in ("score", "eps"):
            raise ValueError(f"space {space!r} is unknown: use 'score' or 'eps'")
        f = self.score if space == "score" else self.eps
        return lambda x: f(x, t, cond)

    def delta_fn(self, t: int, cond: Any, uncond: Any = None, space: str = "score") -> Callable[[Tensor], Tensor]:
        """x ↦ s^Δ(x) = s(x, c) − s(x, ∅) at a fixed timestep (§4.3 of Jeon et al. 2025)."""
        fc = self.score_fn(t, cond, space)
        fu = self.score_fn(t, uncond, space)
        return lambda x: score_delta(fc(x), fu(x))


class GaussianVPModel(ScoreModel):
    """Exact ε-predictor of a VP diffusion on Gaussian data, x_0 | c ~ N(μ_c, Σ_c): a closed-form oracle.

    ``components`` maps a condition (any hashable; ``None`` = unconditional) to ``(mu, Sigma)``.
    The marginal at t is N(√ᾱ μ, ᾱ Σ + (1−ᾱ) I), so s and its Jacobian are known exactly.
    """

    def __init__(self, components: dict, alphas_cumprod: Tensor, prediction_type: str = "epsilon"):
        self.components = {k: (torch.as_tensor(m), torch.as_tensor(S)) for k, (m, S) in components.items()}
        self.alphas_cumprod = alphas_cumprod
        self.prediction_type = prediction_type

    def marginal(self, t: int, cond: Any = None) -> tuple[Tensor, Tensor]:
        """(mean, covariance) of x_t | c."""
        mu, S = self.components[cond]
        a = self.alpha_bar(t).to(S)
        return torch.sqrt(a) * mu, a * S + (1 - a) * torch.eye(S.shape[0], dtype=S.dtype)

    def exact_hessian(self, t: int, cond: Any = None) -> Tensor:
        """H(x_t, c) = −Cov(x_t | c)^{-1}, constant in x."""
        return -torch.linalg.inv(self.marginal(t, cond)[1])

    def model_output(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        m, C = self.marginal(t, cond)
        m, C = m.to(x), C.to(x)
        score = -torch.linalg.solve(C, (x - m).T).T
        a = self.alpha_bar(t).to(x)
        eps = -torch.sqrt(1 - a) * score
        if self.prediction_type == "epsilon":
            return eps
        x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
        if self.prediction_type == "sample":
            return x0
        return torch.sqrt(a) * eps - torch.sqrt(1 - a) * x0
