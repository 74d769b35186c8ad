"""Hutchinson trace estimators for the sharpness proxies −tr H and −tr H³ (Lemmas 4.1 and 4.3 of Jeon et al. 2025)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

BatchMatVec = Callable[[Tensor], Tensor]


def rademacher(
    shape: tuple[int, ...], generator: torch.Generator | None = None, dtype=torch.float32, device=None
) -> Tensor:
    """Rademacher probes: independent ±1 entries."""
    z = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
    return (2 * z - 1).to(dtype=dtype, device=device)


def hutchinson(
    matvec: BatchMatVec,
    shape: tuple[int, ...],
    num_probes: int,
    power: int = 1,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
    device=None,
) -> tuple[float, float]:
    """Estimate tr(A^power) as the mean of zᵀ A^power z over Rademacher z; returns (estimate, standard error).

    ``matvec`` maps probes of shape (P, *shape) to A applied to each; ``shape`` is one probe's shape.
    For power = 3, zᵀA³z = (Aᵀz)ᵀ A (A z) would need Aᵀ; we use zᵀ A(A(A z)) which is unbiased for any A.
    """
    if power < 1:
        raise ValueError("power must be ≥ 1")
    batch_size = batch_size or num_probes
    samples = []
    done = 0
    while done < num_probes:
        p = min(batch_size, num_probes - done)
        z = rademacher((p, *shape), generator, dtype, device)
        w = z
        for _ in range(power):
            w = matvec(w)
        samples.append((z * w).flatten(1).sum(1).detach().double().cpu())
        done += p
    s = torch.cat(samples)
    se = float(s.std(unbiased=True) / num_probes ** 0.5) if num_probes > 1 else float("nan")
    return float(s.mean()), se


def trace_estimate(matvec: BatchMatVec, shape: tuple[int, ...], num_probes: int, **kw) -> tuple[float, float]:
    """Hutchinson estimate of tr(A) with its standard error; −tr H is the Lemma 4.1 sharpness."""
    return hutchinson(matvec, shape, num_probes, power=1, **kw)


def trace_cubed_estimate(matvec: BatchMatVec, shape: tuple[int, ...], num_probes: int, **kw) -> tuple[float, float]:
    """Hutchinson estimate of tr(A³) with its standard error; −tr H³ is the Lemma 4.3 sharpness."""
    return hutchinson(matvec, shape, num_probes, power=3, **kw)


def exact_sharpness(J: Tensor, s: Tensor) -> dict[str, float]:
    """Exact −tr H and −tr H³ from a dense score Jacobian J = H (d × d) beside their proxies ‖s‖² and ‖Hs‖² at one
    point (Lemmas 4.1 and 4.3 of Jeon et al. 2025; Figure 4's axes), in float64."""
    J, s = J.double(), s.detach().double().reshape(-1)
    return {"trH": -torch.trace(J).item(), "s2": s.pow(2).sum().item(),
            "trH3": -torch.trace(J @ J @ J).item(), "hs2": (J @ s).pow(2).sum().item()}
