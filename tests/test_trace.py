import torch

from sharp_utils import hessian, trace
from tests.conftest import mc_close
from tests.test_hessian import TinyScore


def test_hutchinson_trace_and_cube_vs_exact(gen):
    d = 20
    A = torch.randn(d, d, dtype=torch.float64, generator=gen) / d ** 0.5 + torch.eye(d, dtype=torch.float64)
    mv = lambda Z: Z @ A.T
    for power, exact in ((1, torch.trace(A)), (3, torch.trace(A @ A @ A))):
        est, se = trace.hutchinson(mv, (d,), 4000, power=power, batch_size=512, generator=gen, dtype=torch.float64)
        assert se > 0
        assert abs(est - exact.item()) <= 4.5 * se, (power, est, exact, se)


def test_hutchinson_exact_for_diagonal(gen):
    # zᵀ D z = tr D for every Rademacher z: zero variance
    D = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    est, se = trace.trace_estimate(lambda Z: Z @ D, (5,), 10, generator=gen, dtype=torch.float64)
    assert est == 15.0 and se == 0.0
    est3, _ = trace.trace_cubed_estimate(lambda Z: Z @ D, (5,), 10, generator=gen, dtype=torch.float64)
    assert est3 == float((torch.arange(1.0, 6.0) ** 3).sum())


def test_standard_error_is_calibrated(gen):
    # over many independent runs, |est - tr| / se behaves like |N(0,1)|
    d = 8
    A = torch.randn(d, d, dtype=torch.float64, generator=gen)
    zs = []
    for _ in range(200):
        est, se = trace.trace_estimate(lambda Z: Z @ A.T, (d,), 200, generator=gen, dtype=torch.float64)
        zs.append((est - torch.trace(A).item()) / se)
    zs = torch.tensor(zs)
    ok, msg = mc_close(zs, 0.0)
    assert ok, msg
    assert 0.8 < zs.std().item() < 1.2


def test_trace_of_network_jacobian_through_jvp(gen):
    f = TinyScore(d=6).eval()
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    J = hessian.dense_jacobian(f, x)
    P = 3000
    mv = lambda Z: hessian.hvp_jvp(f, x.expand(Z.shape[0], 6), Z)[1]
    est, se = trace.trace_estimate(mv, (6,), P, batch_size=1000, generator=gen, dtype=torch.float64)
    assert abs(est - torch.trace(J).item()) <= 4.5 * se


def test_exact_sharpness_vs_eigenvalues_and_gaussian(gen):
    # −tr H and −tr H³ against numpy's eigenvalues of a non-symmetric J; for a Gaussian score (H = −Σ⁻¹) the
    # per-sample ‖s‖² and ‖Hs‖² average to them (Lemmas 4.1, 4.3)
    import numpy as np

    d = 7
    J = torch.randn(d, d, dtype=torch.float64, generator=gen)
    lam = np.linalg.eigvals(J.numpy())
    q = trace.exact_sharpness(J, torch.ones(d))
    assert abs(q["trH"] + lam.sum().real) < 1e-10 and abs(q["trH3"] + (lam ** 3).sum().real) < 1e-9
    assert abs(q["hs2"] - float(np.linalg.norm(J.numpy() @ np.ones(d)) ** 2)) < 1e-9 and q["s2"] == d
    A = torch.randn(d, d, dtype=torch.float64, generator=gen)
    S = A @ A.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    H = -torch.linalg.inv(S)
    x = torch.randn(4000, d, dtype=torch.float64, generator=gen) @ torch.linalg.cholesky(S).T
    rows = [trace.exact_sharpness(H, H @ xi) for xi in x]
    for proxy, exact in (("s2", "trH"), ("hs2", "trH3")):
        ok, msg = mc_close(torch.tensor([r[proxy] for r in rows]), rows[0][exact])
        assert ok, (proxy, msg)
