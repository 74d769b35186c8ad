"""Mitigation grids calibrated on a model's own prompts: SAIL's ℓ_thres and Wen et al.'s ℓ_target as quantiles of
their initial objectives over non-memorized prompts (for models without published grids, e.g. MiniSD)."""
from __future__ import annotations

import torch
from torch import Tensor

from .metrics import wen_metric
from .mitigation import sail_objective, sail_seeds
from .sampling import ddim_timesteps, prompt_seed
from .scores import ScoreModel


def sail_initial_losses(model: ScoreModel, prompts: list[str], budget: int = 8, alpha: float = 0.05,
                        loss: str = "official", seed: int = 0, num_inference_steps: int = 50,
                        batch: int = 64) -> Tensor:
    """SAIL's objective at the un-optimised candidates of round 0, (P, budget): what ℓ_thres is compared with.
    Prompts share batches of about ``batch`` candidates (per-candidate seeds: the values do not depend on it)."""
    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    out = []
    per = max(1, batch // budget)
    for i in range(0, len(prompts), per):
        ps = prompts[i:i + per]
        x = model.initial_noise([s for p in ps for s in sail_seeds(p, 0, budget, seed)])
        with torch.no_grad():
            L = sail_objective(model, x, t, model.encode([p for p in ps for _ in range(budget)]), alpha, loss)
        out.append(L.float().cpu().reshape(len(ps), budget))
    return torch.cat(out)



def _quantile_grid(values: Tensor, quantiles) -> tuple[float, ...]:
    """A mitigation grid: the given quantiles of all values, rounded to 3 decimals."""
    L = values.flatten()
    return tuple(round(float(v), 3) for v in torch.quantile(L, torch.tensor(quantiles, dtype=L.dtype)))



def calibrate_sail_grid(model: ScoreModel, nonmemorized: list[str], quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
                        **kw) -> tuple[float, ...]:
    """MiniSD's ℓ_thres grid: quantiles of SAIL's initial objective over *non-memorized* prompts, i.e. "as smooth
    as a typical non-memorized prompt" at several strictness levels (lower = stronger mitigation)."""
    return _quantile_grid(sail_initial_losses(model, nonmemorized, **kw), quantiles)



def calibrate_wen_grid(model: ScoreModel, nonmemorized: list[str], quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
                       **kw) -> tuple[float, ...]:
    """MiniSD's ℓ_target grid for Wen et al.'s mitigation: quantiles of their initial metric over non-memorized
    prompts."""
    return _quantile_grid(wen_initial_metric(model, nonmemorized, **kw), quantiles)



def wen_initial_metric(model: ScoreModel, prompts: list[str], n: int = 8, seed: int = 0,
                       num_inference_steps: int = 50, batch: int = 64) -> Tensor:
    """Wen et al.'s ‖ε(x_T, c) − ε(x_T, ∅)‖ at the first step for n seeded x_T per prompt, (P, n): the quantity
    their embedding optimisation drives below ℓ_target.  Prompts share batches of about ``batch`` items."""
    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    out = []
    per = max(1, batch // n)
    for i in range(0, len(prompts), per):
        ps = prompts[i:i + per]
        x = model.initial_noise([prompt_seed(seed, p, g) for p in ps for g in range(n)])
        with torch.no_grad():
            d = model.delta_fn(t, model.encode([p for p in ps for _ in range(n)]), None, "eps")(x)
        out.append(wen_metric(d).float().cpu().reshape(len(ps), n))
    return torch.cat(out)

