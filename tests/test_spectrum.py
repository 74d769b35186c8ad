import numpy as np
import pytest
import torch

from sharp_utils import hessian, spectrum
from tests.test_hessian import TinyScore


def sym_matrix(d, gen, spread=True):
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    if spread:  # a few sharp negative directions well separated from a bulk, like a memorized sample
        lam = torch.cat([torch.tensor([-60.0, -45.0, -35.0, -28.0, -22.0, 12.0], dtype=torch.float64),
                         torch.linspace(-5, 5, d - 6, dtype=torch.float64)])
    else:
        lam = torch.randn(d, dtype=torch.float64, generator=gen)
    return (Q * lam) @ Q.T


def topk_oracle(A: np.ndarray, k: int) -> np.ndarray:
    w = np.linalg.eig(A)[0]
    w = w[np.argsort(-np.abs(w), kind="stable")[:k]]
    return np.sort(w.real)


def mv(A):
    return lambda v: A @ v


@pytest.mark.parametrize("method", ["arnoldi", "lanczos", "arpack", "dense"])
def test_symmetric_top_k_vs_numpy(method, gen):
    A = sym_matrix(40, gen)
    kw = {"symmetric": True} if method in ("lanczos", "arpack") else {}
    got = spectrum.top_eigenvalues(mv(A), 40, 5, method=method, num_iter=30, generator=gen, **kw)
    np.testing.assert_allclose(got.numpy(), topk_oracle(A.numpy(), 5), rtol=1e-6, atol=1e-6)
    assert torch.all(got[1:] >= got[:-1])  # ascending


@pytest.mark.parametrize("method", ["arnoldi", "arpack", "dense"])
def test_mildly_nonsymmetric_vs_numpy(method, gen):
    d = 30
    A = sym_matrix(d, gen) + 0.05 * torch.randn(d, d, dtype=torch.float64, generator=gen)
    assert (A - A.T).abs().max() > 0.05
    got = spectrum.top_eigenvalues(mv(A), d, 6, method=method, num_iter=d, generator=gen)
    np.testing.assert_allclose(got.numpy(), topk_oracle(A.numpy(), 6), rtol=1e-6, atol=1e-6)


def test_lanczos_targets_symmetric_part(gen):
    d = 30
    A = sym_matrix(d, gen) + 0.3 * torch.randn(d, d, dtype=torch.float64, generator=gen)
    got = spectrum.top_eigenvalues(mv(A), d, 4, method="lanczos", num_iter=d, rmatvec=mv(A.T), generator=gen)
    np.testing.assert_allclose(got.numpy(), topk_oracle(((A + A.T) / 2).numpy(), 4), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="rmatvec"):
        spectrum.top_eigenvalues(mv(A), d, 4, method="lanczos")


def test_arnoldi_relation_and_orthonormality(gen):
    d, m = 50, 20
    A = torch.randn(d, d, dtype=torch.float64, generator=gen)
    res = spectrum.arnoldi(mv(A), d, m, generator=gen)
    Q, H = res.Q, res.H
    torch.testing.assert_close(Q.T @ Q, torch.eye(m, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(Q.T @ A @ Q, H, atol=1e-10, rtol=0)
    assert torch.all(torch.tril(H, -2) == 0)  # upper Hessenberg
    # A Q_m = Q_m H_m + h_{m+1,m} q_{m+1} e_m^T: the residual lies in the last column only
    R = A @ Q - Q @ H
    assert R[:, :-1].abs().max() < 1e-10
    np.testing.assert_allclose(R[:, -1].norm().item(), res.residual, rtol=1e-10)


def test_arnoldi_full_dimension_recovers_whole_spectrum(gen):
    d = 25
    A = sym_matrix(d, gen, spread=False) + 0.01 * torch.randn(d, d, dtype=torch.float64, generator=gen)
    res = spectrum.arnoldi(mv(A), d, d, generator=gen)
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(res.H.numpy())),
                               np.sort_complex(np.linalg.eigvals(A.numpy())), atol=1e-8)


def test_arnoldi_stops_on_invariant_subspace(gen):
    d = 20
    U = torch.randn(d, 3, dtype=torch.float64, generator=gen)
    A = U @ U.T  # rank 3
    res = spectrum.arnoldi(mv(A), d, 10, generator=gen)
    assert res.Q.shape[1] <= 4 and res.residual < 1e-8


def test_on_a_network_jacobian_vs_dense_eig(gen):
    f = TinyScore(d=6).eval()
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    J = hessian.dense_jacobian(f, x).numpy()
    matvec, rmatvec, dim = hessian.jacobian_operator(f, x)
    for method in ("arnoldi", "dense"):
        got = spectrum.top_eigenvalues(matvec, dim, 3, method=method, num_iter=6, generator=gen)
        np.testing.assert_allclose(got.numpy(), topk_oracle(J, 3), rtol=1e-7, atol=1e-9)
    got = spectrum.top_eigenvalues(matvec, dim, 3, method="lanczos", rmatvec=rmatvec, num_iter=6, generator=gen)
    np.testing.assert_allclose(got.numpy(), topk_oracle((J + J.T) / 2, 3), rtol=1e-7, atol=1e-9)


def test_argument_errors():
    A = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="k=9"):
        spectrum.top_eigenvalues(mv(A), 4, 9)
    with pytest.raises(ValueError, match="unknown"):
        spectrum.top_eigenvalues(mv(A), 4, 2, method="qr")
    with pytest.raises(ValueError, match="dense"):
        spectrum.top_eigenvalues(mv(A), 4, 3, method="arpack")
