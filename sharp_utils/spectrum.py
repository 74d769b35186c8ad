"""Eigenvalues of the score Jacobian H = ∇_x s(x) from matrix-vector products (App. A.2 of Jeon et al. 2025).

A learned score Jacobian is *not* exactly symmetric (a true Hessian of log p_t is): the network
need not be a gradient field.  ``arnoldi`` and ``arpack`` (``eigs``) treat it as a general matrix, as
the paper does; ``lanczos`` works on its symmetric part (J + Jᵀ)/2, which needs the transpose product
(vjp); ``dense`` forms the matrix (d matvecs) and calls ``numpy.linalg.eigvals``.

Every method takes ``matvec`` acting on a flat float64 tensor of length ``dim`` and returns a float64
tensor; wrap a model with :func:`sharp_utils.hessian.jacobian_operator`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

MatVec = Callable[[Tensor], Tensor]
METHODS = ("arnoldi", "lanczos", "arpack", "dense")


class ArnoldiResult(NamedTuple):
    Q: Tensor  # (dim, m) orthonormal Krylov basis
    H: Tensor  # (m, m) upper Hessenberg matrix, Q^T A Q
    residual: float  # h_{m+1,m}; 0 when the Krylov space became invariant


def _mv(matvec: MatVec, q: Tensor) -> Tensor:
    return matvec(q).detach().reshape(-1).to(torch.float64)


def _start_vector(dim: int, v0: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if v0 is not None:
        b = v0.reshape(-1).to(torch.float64).cpu()
    else:
        b = torch.randn(dim, dtype=torch.float64, generator=generator)
    return b / b.norm()


def arnoldi(
    matvec: MatVec,
    dim: int,
    num_iter: int,
    v0: Tensor | None = None,
    eps: float = 1e-10,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> ArnoldiResult:
    """Algorithm 1 (Arnoldi iteration with Jacobian-vector products) of Jeon et al. 2025.

    Modified Gram-Schmidt as in the paper, followed by a second full re-orthogonalisation pass so the
    basis stays orthonormal to machine precision.  Stops early when h_{k+1,k} ≤ ``eps`` (invariant space).
    """
    m = min(int(num_iter), dim)
    Q = torch.zeros(dim, m + 1, dtype=torch.float64)
    h = torch.zeros(m + 1, m, dtype=torch.float64)
    Q[:, 0] = _start_vector(dim, v0, generator)
    done = m
    for k in tqdm(range(m), disable=not progress, desc="arnoldi"):
        v = _mv(matvec, Q[:, k]).cpu()
        for _ in range(2):  # MGS, then full re-orthogonalisation
            for j in range(k + 1):
                c = Q[:, j] @ v
                h[j, k] += c
                v = v - c * Q[:, j]
        h[k + 1, k] = v.norm()
        if callback is not None:
            callback({"k": k, "h": float(h[k + 1, k])})
        if h[k + 1, k] <= eps:
            done = k + 1
            break
        Q[:, k + 1] = v / h[k + 1, k]
    residual = float(h[done, done - 1])
    return ArnoldiResult(Q[:, :done], h[:done, :done], residual)


def lanczos(
    matvec: MatVec,
    dim: int,
    num_iter: int,
    v0: Tensor | None = None,
    eps: float = 1e-10,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Lanczos iteration with full re-orthogonalisation for a *symmetric* operator; returns the tridiagonal T (m ×
    m)."""
    m = min(int(num_iter), dim)
    Q = torch.zeros(dim, m, dtype=torch.float64)
    alpha = torch.zeros(m, dtype=torch.float64)
    beta = torch.zeros(m, dtype=torch.float64)
    Q[:, 0] = _start_vector(dim, v0, generator)
    done = m
    for k in tqdm(range(m), disable=not progress, desc="lanczos"):
        w = _mv(matvec, Q[:, k]).cpu()
        alpha[k] = Q[:, k] @ w
        for _ in range(2):
            w = w - Q[:, : k + 1] @ (Q[:, : k + 1].T @ w)
        b = w.norm()
        if callback is not None:
            callback({"k": k, "h": float(b)})
        if k + 1 == m:
            break
        if b <= eps:
            done = k + 1
            break
        beta[k] = b
        Q[:, k + 1] = w / b
    T = torch.diag(alpha[:done]) + torch.diag(beta[: done - 1], 1) + torch.diag(beta[: done - 1], -1)
    return T


def dense_matrix(matvec: MatVec, dim: int) -> Tensor:
    """Form the operator column by column (``dim`` matvecs): the oracle for small ``dim``."""
    eye = torch.eye(dim, dtype=torch.float64)
    return torch.stack([_mv(matvec, eye[:, i]).cpu() for i in range(dim)], dim=1)


def _select(values: np.ndarray, k: int) -> Tensor:
    values = np.asarray(values)
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return torch.from_numpy(np.sort(values[order].real).astype(np.float64))


def top_eigenvalues(
    matvec: MatVec,
    dim: int,
    k: int,
    method: str = "arnoldi",
    num_iter: int | None = None,
    rmatvec: MatVec | None = None,
    symmetric: bool = False,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """The ``k`` eigenvalues of largest magnitude of the operator, real parts in ascending order (App. A.2 of Jeon
    et al. 2025).

    ``method``: 'arnoldi' (paper Algorithm 1; Ritz values of H_m), 'lanczos' (on (J + Jᵀ)/2, needs
    ``rmatvec`` unless ``symmetric``), 'arpack' (scipy ``eigs``, or ``eigsh`` when ``symmetric``) or 'dense'.
    ``num_iter`` is the Krylov dimension m (default max(2k + 1, 20), at most ``dim``).  A learned score Jacobian
    is not exactly symmetric, so the methods agree only up to its asymmetry.
    """
    if not 1 <= k <= dim:
        raise ValueError(f"k={k} must be between 1 and dim={dim}")
    m = min(dim, num_iter if num_iter is not None else max(2 * k + 1, 20))
    if m < k:
        raise ValueError(f"num_iter={m} is smaller than k={k}: raise num_iter")
    if method == "dense":
        return _select(np.linalg.eigvals(dense_matrix(matvec, dim).numpy()), k)
    if method == "arnoldi":
        res = arnoldi(matvec, dim, m, v0=v0, generator=generator, progress=progress, callback=callback)
        return _select(np.linalg.eigvals(res.H.numpy()), k)
    if method == "lanczos":
        if rmatvec is None and not symmetric:
            raise ValueError("method='lanczos' needs rmatvec (the transpose product, e.g. by vjp) or symmetric=True")
        sym = matvec if rmatvec is None else (lambda v: 0.5 * (_mv(matvec, v) + _mv(rmatvec, v)))
        T = lanczos(sym, dim, m, v0=v0, generator=generator, progress=progress, callback=callback)
        return _select(np.linalg.eigvalsh(T.numpy()), k)
    if method == "arpack":
        from scipy.sparse.linalg import LinearOperator, eigs, eigsh

        if k >= dim - 1 and not symmetric:
            raise ValueError(f"arpack eigs needs k < dim - 1 (k={k}, dim={dim}): use method='dense'")
        op = LinearOperator(
            (dim, dim),
            dtype=np.float64,
            matvec=lambda v: _mv(matvec, torch.from_numpy(np.ascontiguousarray(v).reshape(-1))).cpu().numpy(),
        )
        start = _start_vector(dim, v0, generator).numpy()
        ncv = min(dim, max(m, 2 * k + 1))
        if symmetric:
            vals = eigsh(op, k=min(k, dim - 1), which="LM", v0=start, ncv=ncv, return_eigenvectors=False)
        else:
            vals = eigs(op, k=k, which="LM", v0=start, ncv=ncv, return_eigenvectors=False)
        return _select(vals, k)
    raise ValueError(f"method {method!r} is unknown: use one of {METHODS}")
