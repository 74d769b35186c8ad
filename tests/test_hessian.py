import pytest
import torch
import torch.nn.functional as F

from sharp_utils import hessian
from sharp_utils.gaussian import random_covariance
from sharp_utils.scores import GaussianVPModel
from tests.test_scores import linear_alphas


class TinyScore(torch.nn.Module):
    """A non-linear, non-symmetric-Jacobian score with an attention block (exercises the SDPA backend)."""

    def __init__(self, d=6, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W1 = torch.nn.Parameter(torch.randn(16, d, generator=g, dtype=dtype) / d ** 0.5)
        self.W2 = torch.nn.Parameter(torch.randn(d, 16, generator=g, dtype=dtype) / 4)
        self.q = torch.nn.Parameter(torch.randn(d, d, generator=g, dtype=dtype) / d ** 0.5)

    def forward(self, x):
        h = torch.tanh(x @ self.W1.T) @ self.W2.T
        # treat the d features as d tokens of width 1 to run real scaled_dot_product_attention
        q = (x @ self.q.T)[:, None, :, None]
        k = x[:, None, :, None]
        att = F.scaled_dot_product_attention(q, k, k)[:, 0, :, 0]
        return h + att - 0.5 * x


@pytest.fixture
def f():
    return TinyScore().eval()


def dense_batch(f, x):
    return torch.stack([hessian.dense_jacobian(f, xi) for xi in x])


def test_jvp_matches_dense_jacobian_batched(f, gen):
    x = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    v = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    J = dense_batch(f, x)
    fx, hv = hessian.hvp_jvp(f, x, v)
    torch.testing.assert_close(fx, f(x))
    torch.testing.assert_close(hv, torch.einsum("bij,bj->bi", J, v), rtol=1e-10, atol=1e-10)
    # and the dense oracle itself (reverse mode) agrees with forward mode
    with hessian.math_attention():  # forward mode has no flash-attention kernel
        Jr = torch.func.jacfwd(lambda z: f(z[None])[0])(x[0]).detach()
    torch.testing.assert_close(J[0], Jr)


def test_vjp_transpose_matches_dense(f, gen):
    x = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    u = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    J = dense_batch(f, x)
    assert (J - J.transpose(1, 2)).abs().max() > 1e-2  # the test operator really is non-symmetric
    _, htu = hessian.vjp_transpose(f, x, u)
    torch.testing.assert_close(htu, torch.einsum("bji,bj->bi", J, u), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "dtype,scheme,tol",
    [(torch.float64, "forward", 1e-5), (torch.float64, "central", 1e-8),
     (torch.float32, "forward", 3e-3), (torch.float32, "central", 3e-4)],
)
def test_finite_difference_vs_jvp(dtype, scheme, tol, gen):
    f = TinyScore(dtype=dtype).eval()
    x = torch.randn(5, 6, dtype=dtype, generator=gen)
    v = torch.randn(5, 6, dtype=dtype, generator=gen) * 3.0
    _, exact = hessian.hvp_jvp(f, x, v)
    _, approx = hessian.hvp_fd(f, x, v, scheme=scheme)
    rel = ((approx - exact).norm(dim=1) / exact.norm(dim=1)).max().item()
    assert rel < tol, rel


def test_fd_step_rule():
    x = torch.zeros(2, 4)
    x[1] = 3.0  # ‖x‖ = 6
    v = torch.ones(2, 4)  # ‖v‖ = 2
    h = hessian.fd_step(x, v, "forward").reshape(-1)
    r = torch.finfo(torch.float32).eps ** 0.5
    torch.testing.assert_close(h, torch.tensor([r * 1 / 2, r * 7 / 2]))
    hc = hessian.fd_step(x, v, "central", rel_step=1e-3).reshape(-1)
    torch.testing.assert_close(hc, torch.tensor([1e-3 / 2, 7e-3 / 2]))
    with pytest.raises(ValueError, match="forward"):
        hessian.fd_step(x, v, "backward")


def test_gaussian_score_jacobian_is_minus_inverse_covariance(gen):
    d = 5
    S = random_covariance(d, generator=gen)
    model = GaussianVPModel({None: (torch.zeros(d, dtype=torch.float64), S)}, linear_alphas())
    for t in (1, 400, 981):
        J = hessian.dense_jacobian(model.score_fn(t), torch.randn(d, dtype=torch.float64, generator=gen))
        torch.testing.assert_close(J, model.exact_hessian(t))


@pytest.mark.parametrize("method", ["jvp", "fd-central"])
def test_jacobian_operator(f, method, gen):
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    J = hessian.dense_jacobian(f, x)
    matvec, rmatvec, dim = hessian.jacobian_operator(f, x, method)
    assert dim == 6
    v = torch.randn(6, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(matvec(v), J @ v, rtol=1e-6, atol=1e-6)
    if method == "jvp":
        torch.testing.assert_close(rmatvec(v), J.T @ v)
    else:
        assert rmatvec is None


def test_hvp_dispatch_rejects_unknown(f):
    with pytest.raises(ValueError, match="jvp"):
        hessian.hvp(f, torch.zeros(1, 6, dtype=torch.float64), torch.ones(1, 6, dtype=torch.float64), "magic")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_batched_vs_dense(f, gen, mode):
    x = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(hessian.jacobian_batched(f, x, mode), dense_batch(f, x))
    with pytest.raises(ValueError, match="reverse"):
        hessian.jacobian_batched(f, x, "sideways")


@pytest.mark.parametrize("chunk", [1, 4, 6, 64])
def test_dense_jacobian_chunked_copies_match_forward_mode(f, gen, chunk):
    """The batched-copies route (chunks that do not divide d included) = jacfwd, and = −Σ_t⁻¹ for a Gaussian."""
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    with hessian.math_attention():
        Jf = torch.func.jacfwd(lambda z: f(z[None])[0])(x).detach()
    torch.testing.assert_close(hessian.dense_jacobian(f, x, chunk=chunk), Jf)
    S = random_covariance(5, generator=gen)
    model = GaussianVPModel({None: (torch.zeros(5, dtype=torch.float64), S)}, linear_alphas())
    J = hessian.dense_jacobian(model.score_fn(400), torch.randn(5, dtype=torch.float64, generator=gen), chunk=chunk)
    torch.testing.assert_close(J, model.exact_hessian(400))
