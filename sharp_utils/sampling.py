"""Deterministic DDIM sampling through the :class:`~sharp_utils.scores.ScoreModel` interface (Song et al. 2021a).

Timesteps follow diffusers' ``DDIMScheduler`` with ``timestep_spacing="leading"`` and SD's
``steps_offset=1``: 50 steps of a 1000-step schedule visit t = 981, 961, …, 1.
"""
from __future__ import annotations

import hashlib

from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from .scores import ScoreModel, cfg_combine, eps_to_x0


def per_sample_noise(seeds, shape: tuple[int, ...], dtype=torch.float32) -> Tensor:
    """x_T for each seed from its own CPU ``torch.Generator``: results do not depend on batch size or order."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype) for s in seeds]
    )


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int, steps_offset: int = 1) -> list[int]:
    """The ``num_inference_steps`` timesteps of DDIM, largest first (diffusers 'leading' spacing)."""
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be in [1, {num_train_timesteps}]")
    ratio = num_train_timesteps // num_inference_steps
    return [i * ratio + steps_offset for i in reversed(range(num_inference_steps))]


def ddim_step(x: Tensor, eps: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    """One deterministic DDIM update (η = 0): x_{t−1} = √ᾱ' x̂_0 + √(1−ᾱ') ε."""
    x0 = eps_to_x0(eps, x, alpha_bar)
    return torch.sqrt(alpha_bar_prev) * x0 + torch.sqrt(1 - alpha_bar_prev) * eps


def alpha_bar_prev(model: ScoreModel, t: int, num_inference_steps: int) -> Tensor:
    """ᾱ of the step after t; past t = 0, ᾱ_0 (SD's ``set_alpha_to_one=False``)."""
    prev = t - model.num_train_timesteps // num_inference_steps
    return model.alphas_cumprod[prev] if prev >= 0 else model.alphas_cumprod[0]


def guided_eps(
    model: ScoreModel, x: Tensor, t: int, cond: Any, uncond: Any, guidance_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(guided ε, ε(x, c), ε(x, ∅)) with classifier-free guidance."""
    eps_c = model.eps(x, t, cond)
    if guidance_scale == 1.0:
        return eps_c, eps_c, eps_c
    eps_u = model.eps(x, t, uncond)
    return cfg_combine(eps_c, eps_u, guidance_scale), eps_c, eps_u


def sample_ddim(
    model: ScoreModel,
    x: Tensor,
    cond: Any = None,
    uncond: Any = None,
    num_steps: int = 50,
    guidance_scale: float | Sequence[float] = 7.5,
    steps_offset: int = 1,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = True,
) -> Tensor:
    """DDIM (η = 0) from x_T with classifier-free guidance; ``callback`` gets {'i', 't', 'x', 'eps', 'eps_c',
    'eps_u'} each step.

    ``guidance_scale`` is one scale or one per step (largest t first), e.g. to locate where guidance acts.
    """
    ts = ddim_timesteps(model.num_train_timesteps, num_steps, steps_offset)
    scales = [float(guidance_scale)] * num_steps if isinstance(guidance_scale, (int, float)) else list(guidance_scale)
    if len(scales) != num_steps:
        raise ValueError(
            f"guidance_scale has {len(scales)} values for {num_steps} steps: give one scale or one per step"
        )
    for i, t in enumerate(tqdm(ts, disable=disable, desc="ddim")):
        with torch.no_grad():
            eps, eps_c, eps_u = guided_eps(model, x, t, cond, uncond, scales[i])
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "eps": eps, "eps_c": eps_c, "eps_u": eps_u})
        a = model.alpha_bar(t).to(x)
        a_prev = alpha_bar_prev(model, t, num_steps).to(x)
        x = ddim_step(x, eps, a, a_prev)
    return x


def step_label(index: int, timesteps: list[int]) -> str:
    """The notebooks' one timestep convention: 'step k of N (t = …)' for the 0-based ``index`` into the DDIM
    ``timesteps`` (step 1 of N is the paper's t = T−1, step N its t = 1; docs/glossary.md#timesteps)."""
    return f"step {index + 1} of {len(timesteps)} (t = {timesteps[index]})"


def prompt_seed(base_seed: int, prompt: str, generation: int) -> int:
    """Seed of generation ``generation`` of ``prompt``: a hash of (seed, prompt text, index), so it depends on
    neither batch size nor prompt order (NVlabs/edm-style per-sample seeds)."""
    h = hashlib.sha256(f"{int(base_seed)}\x1f{prompt}\x1f{int(generation)}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
