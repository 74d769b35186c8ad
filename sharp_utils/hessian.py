"""Hessian-vector products of a score function, H v = ∇_x s(x) v (§3 and App. A.2 of Jeon et al. 2025).

A *score function* here is any callable ``f`` mapping a batch ``x`` of shape (B, ...) to a batch of
the same shape, with no interaction between samples (a UNet in eval mode qualifies).  Then the
Jacobian-vector product of the batch is the batch of per-sample products, so every function below is
batched over samples for free.

Forward-mode AD and double backward have no flash / memory-efficient SDPA kernel, so exact products run
inside :func:`math_attention`.  Finite differences run in the model's own dtype with any kernel.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vjp

ScoreFn = Callable[[Tensor], Tensor]

FD_SCHEMES = ("forward", "central")


@contextlib.contextmanager
def math_attention():
    """Force the math SDPA backend: the only one with forward-mode AD and double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _per_sample_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).reshape(x.shape[0], *([1] * (x.ndim - 1)))


def hvp_jvp(f: ScoreFn, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Exact H v by forward-mode AD: returns (s(x), ∇s(x) v) (App. A.2 of Jeon et al. 2025)."""
    with math_attention():  # contiguous(): jvp rejects broadcast (expanded) primals and tangents
        return jvp(f, (x.contiguous(),), (v.to(x.dtype).contiguous(),))


def vjp_transpose(f: ScoreFn, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Hᵀ u = (uᵀ ∇s(x))ᵀ by reverse-mode AD: returns (s(x), Hᵀ u). Needed because a learned H is not symmetric."""
    with math_attention():
        out, pullback = vjp(f, x)
        return out, pullback(u.to(out.dtype))[0]


def fd_step(x: Tensor, v: Tensor, scheme: str = "forward", rel_step: float | None = None) -> Tensor:
    """Per-sample finite-difference step h = r (1 + ‖x‖) / ‖v‖.

    r defaults to √u (forward) or ∛u (central), with u the unit roundoff of ``x.dtype``: the classic
    choice balancing truncation against cancellation error.  h is in units of ‖v‖, so that the probe
    x + h v moves by r(1 + ‖x‖) whatever the scale of v.
    """
    if scheme not in FD_SCHEMES:
        raise ValueError(f"scheme {scheme!r} is unknown: use one of {FD_SCHEMES}")
    if rel_step is None:
        u = torch.finfo(x.dtype).eps
        rel_step = u ** 0.5 if scheme == "forward" else u ** (1.0 / 3.0)
    vn = _per_sample_norm(v).clamp_min(torch.finfo(v.dtype).tiny)
    return rel_step * (1 + _per_sample_norm(x)) / vn


def hvp_fd(
    f: ScoreFn,
    x: Tensor,
    v: Tensor,
    scheme: str = "forward",
    rel_step: float | None = None,
    fx: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Finite-difference H v: (s(x+hv) − s(x))/h or (s(x+hv) − s(x−hv))/2h; returns (s(x), H v).

    Same form as the Taylor approximation of §5.1 of Jeon et al. 2025.  ``fx`` reuses a known s(x).
    The step rule is :func:`fd_step`.
    """
    h = fd_step(x, v, scheme, rel_step)
    if scheme == "forward":
        if fx is None:
            fx = f(x)
        return fx, (f(x + h * v) - fx) / h
    if fx is None:
        fx = f(x)
    return fx, (f(x + h * v) - f(x - h * v)) / (2 * h)


def hvp(f: ScoreFn, x: Tensor, v: Tensor, method: str = "jvp", **kw) -> tuple[Tensor, Tensor]:
    """H v by ``method`` in {'jvp', 'fd', 'fd-central'}; returns (s(x), H v)."""
    if method == "jvp":
        return hvp_jvp(f, x, v)
    if method == "fd":
        return hvp_fd(f, x, v, scheme="forward", **kw)
    if method == "fd-central":
        return hvp_fd(f, x, v, scheme="central", **kw)
    raise ValueError(f"method {method!r} is unknown: use 'jvp', 'fd' or 'fd-central'")


def dense_jacobian(f: ScoreFn, x: Tensor, chunk: int | None = None) -> Tensor:
    """Oracle: the dense (d × d) Jacobian ∇s(x) of one sample x (no batch dim), d = x.numel().

    Reverse mode.  ``chunk=None``: ``torch.func.jacrev`` (d vector-Jacobian products in one vmapped backward; the
    faster route for MiniSD's UNet).  ``chunk=k``: a batch of k copies of x, row i the gradient of output i of copy
    i (a score function treats batch rows independently), one backward per chunk; 1.5× faster than ``jacrev``
    for the convolution-only MNIST UNet on one CPU thread (17 s vs 25 s at k = 112).
    """
    if chunk is None:
        shape = x.shape

        def flat(z: Tensor) -> Tensor:
            return f(z.reshape(1, *shape)).reshape(-1)

        with math_attention():
            return jacrev(flat)(x.reshape(-1)).detach()
    d = x.numel()
    rows = []
    with math_attention(), torch.enable_grad():
        for lo in range(0, d, chunk):
            k = min(chunk, d - lo)
            xb = x.detach().reshape(1, d).repeat(k, 1).requires_grad_(True)
            out = f(xb.reshape(k, *x.shape)).reshape(k, d)
            picked = out[torch.arange(k), torch.arange(lo, lo + k)].sum()
            rows.append(torch.autograd.grad(picked, xb)[0])
    return torch.cat(rows)


def jacobian_operator(f: ScoreFn, x: Tensor, method: str = "jvp", **kw):
    """(matvec, rmatvec, dim) acting on flat vectors for the Jacobian of ``f`` at one sample ``x`` (no batch dim).

    ``rmatvec`` (the transpose, by vjp) is ``None`` for finite differences.
    """
    shape = x.shape
    xb = x.unsqueeze(0)
    fx = f(xb) if method.startswith("fd") else None

    def matvec(v: Tensor) -> Tensor:
        vb = v.reshape(1, *shape).to(device=x.device, dtype=x.dtype)
        if method.startswith("fd"):
            return hvp(f, xb, vb, method, fx=fx, **kw)[1].reshape(-1)
        return hvp(f, xb, vb, method)[1].reshape(-1)

    def transpose_matvec(u: Tensor) -> Tensor:
        return vjp_transpose(f, xb, u.reshape(1, *shape).to(device=x.device, dtype=x.dtype))[1].reshape(-1)

    return matvec, (transpose_matvec if method == "jvp" else None), x.numel()


def jacobian_batched(f: ScoreFn, x: Tensor, mode: str = "forward") -> Tensor:
    """Dense per-sample Jacobians (B, d, d) for small d = x[0].numel(): d forward-mode products on the batch, or
    (``mode="reverse"``) d backward passes of the batch-summed output i (rows independent), 6× faster for the 2D
    toy MLP on CPU."""
    B, d = x.shape[0], x[0].numel()
    if mode == "reverse":
        xr = x.detach().requires_grad_(True)
        with math_attention(), torch.enable_grad():
            out = f(xr).reshape(B, d)
            rows = [torch.autograd.grad(out[:, i].sum(), xr, retain_graph=i < d - 1)[0].reshape(B, d) for i in range(d)]
        return torch.stack(rows, dim=1).detach()
    if mode != "forward":
        raise ValueError(f"mode {mode!r} is unknown: use 'forward' or 'reverse'")
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    cols = [hvp_jvp(f, x, eye[i].reshape(x.shape[1:]).expand_as(x))[1].reshape(B, d) for i in range(d)]
    return torch.stack(cols, dim=-1).detach()
