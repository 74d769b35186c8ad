"""Closed forms for Gaussians: the oracles behind Lemmas 4.1-4.3, §4.4 and App. A.4 of Jeon et al. 2025.

Two slips in the paper are corrected here:
* Lemma 4.3's statement writes H ≡ −Σ; its proof (and the truth) is H = −Σ⁻¹, so E‖Hs‖² = tr Σ⁻³ = −tr H³.
* The eigenvalue sums of Lemma 4.2 and §4.4, Σ(λ_i − λ_{i,c})^p / λ_{i,c}, hold with λ the eigenvalues of
  Σ⁻¹ = −H (positive).  With the eigenvalues of H itself a sign appears: Σ(μ_i − μ_{i,c})^p / (−μ_{i,c}).
* A.4 also drops a Σ⁻¹: to second order E‖s^Δ‖² = tr(Σ⁻¹δΣ Σ⁻² δΣ), which equals the squared
  Fisher-Rao distance tr(Σ⁻¹δΣ Σ⁻¹δΣ) only when Σ = I (e.g. x_T of a diffusion); see
  :func:`score_delta_second_order`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gaussian_score(x: Tensor, mu: Tensor, Sigma: Tensor) -> Tensor:
    """s(x) = −Σ⁻¹(x − μ) for a batch x of shape (B, d)."""
    return -torch.linalg.solve(Sigma, (x - mu).T).T


def gaussian_hessian(Sigma: Tensor) -> Tensor:
    """H = −Σ⁻¹ (constant in x)."""
    return -torch.linalg.inv(Sigma)


def sample_gaussian(n: int, mu: Tensor, Sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """n draws from N(μ, Σ)."""
    L = torch.linalg.cholesky(Sigma)
    z = torch.randn(n, mu.shape[0], dtype=Sigma.dtype, generator=generator)
    return mu + z @ L.T


def random_covariance(
    d: int, cond: float = 10.0, generator: torch.Generator | None = None, dtype=torch.float64
) -> Tensor:
    """A random SPD matrix with eigenvalues log-uniform in [1/√cond, √cond] and a Haar-random eigenbasis."""
    Q, R = torch.linalg.qr(torch.randn(d, d, dtype=dtype, generator=generator))
    Q = Q * torch.sign(torch.diagonal(R))
    lam = torch.exp(
        (torch.rand(d, dtype=dtype, generator=generator) - 0.5) * torch.log(torch.tensor(cond, dtype=dtype))
    )
    return (Q * lam) @ Q.T


def lemma41_expected_sq_score(Sigma: Tensor) -> Tensor:
    """Lemma 4.1: E‖s(x)‖² = −tr H = tr Σ⁻¹."""
    return -torch.trace(gaussian_hessian(Sigma))


def lemma43_expected_sq_hs(Sigma: Tensor) -> Tensor:
    """Lemma 4.3 (corrected, H = −Σ⁻¹): E‖H s‖² = −tr H³ = tr Σ⁻³."""
    H = gaussian_hessian(Sigma)
    return -torch.trace(H @ H @ H)


def lemma42_expected_sq_delta(mu: Tensor, Sigma: Tensor, mu_c: Tensor, Sigma_c: Tensor) -> Tensor:
    """Lemma 4.2, general form: E_{x∼p(x|c)}‖s(x,c) − s(x)‖² = ‖Σ⁻¹(μ − μ_c)‖² + tr((Σ⁻¹ − Σ_c⁻¹)² Σ_c).

    The statement's trace term tr((H − H_c)² H_c⁻¹) has the wrong sign as printed (H_c⁻¹ = −Σ_c);
    the last line of its proof (App. B.3) has the correct, positive form used here.
    """
    P, Pc = torch.linalg.inv(Sigma), torch.linalg.inv(Sigma_c)
    D = P - Pc
    return (P @ (mu - mu_c)).pow(2).sum() + torch.trace(D @ D @ Sigma_c)


def section44_expected_sq_hdelta_sdelta(mu: Tensor, Sigma: Tensor, mu_c: Tensor, Sigma_c: Tensor) -> Tensor:
    """§4.4, general form: E_{x∼p(x|c)}‖H^Δ s^Δ‖² = ‖D Σ⁻¹(μ_c − μ)‖² + tr(D⁴ Σ_c).

    Here H^Δ = H_c − H = Σ⁻¹ − Σ_c⁻¹ =: D and s^Δ = D (x − μ_c) + Σ⁻¹(μ_c − μ).  With equal means and
    commuting covariances this is :func:`eigen_sum` with power 4.
    """
    P, Pc = torch.linalg.inv(Sigma), torch.linalg.inv(Sigma_c)
    D = P - Pc
    D2 = D @ D
    return (D @ P @ (mu_c - mu)).pow(2).sum() + torch.trace(D2 @ D2 @ Sigma_c)


def eigen_sum(lam: Tensor, lam_c: Tensor, power: int) -> Tensor:
    """Σ_i (λ_i − λ_{i,c})^power / λ_{i,c} with λ the (positive) eigenvalues of Σ⁻¹ = −H, paired along a common
    eigenbasis.

    power=2: Lemma 4.2's commuting reduction; power=4: the §4.4 expectation.
    """
    if (lam_c <= 0).any():
        raise ValueError("eigen_sum takes eigenvalues of Σ⁻¹ = −H (positive); negate the eigenvalues of H first")
    return ((lam - lam_c) ** power / lam_c).sum()


def fisher_rao_sq(Sigma: Tensor, Sigma_c: Tensor) -> Tensor:
    """Squared affine-invariant (Fisher-Rao) distance ‖log(Σ_c^{-1/2} Σ Σ_c^{-1/2})‖_F² (App. A.4)."""
    w, V = torch.linalg.eigh(Sigma_c)
    isqrt = (V / w.sqrt()) @ V.T
    A = isqrt @ Sigma @ isqrt
    return torch.log(torch.linalg.eigvalsh((A + A.T) / 2)).pow(2).sum()


def score_delta_second_order(Sigma: Tensor, dSigma: Tensor) -> Tensor:
    """Second-order expansion of E‖s^Δ‖² for Σ_c = Σ + δΣ, same mean: tr(Σ⁻¹ δΣ Σ⁻² δΣ) (App. A.4, corrected)."""
    P = torch.linalg.inv(Sigma)
    return torch.trace(P @ dSigma @ P @ P @ dSigma)


def fisher_rao_second_order(Sigma: Tensor, dSigma: Tensor) -> Tensor:
    """Second-order expansion of the squared Fisher-Rao distance: tr(Σ⁻¹ δΣ Σ⁻¹ δΣ) (App. A.4)."""
    P = torch.linalg.inv(Sigma)
    return torch.trace(P @ dSigma @ P @ dSigma)


class GaussianMixture:
    """An isotropic-component Gaussian mixture in R^d, the non-Gaussian oracle for App. B.2.

    log p, the score and the Hessian are exact (autograd of the closed-form log-density).
    """

    def __init__(self, weights: Tensor, means: Tensor, stds: Tensor):
        self.w = weights / weights.sum()
        self.means = means
        self.stds = stds

    def log_prob(self, x: Tensor) -> Tensor:
        d = self.means.shape[1]
        diff = x[:, None, :] - self.means[None]
        logc = (
            torch.log(self.w)[None]
            - 0.5 * diff.pow(2).sum(-1) / self.stds[None] ** 2
            - d * torch.log(self.stds)[None]
            - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
        )
        return torch.logsumexp(logc, dim=1)

    def _log_prob1(self, z: Tensor) -> Tensor:
        return self.log_prob(z[None])[0]

    def score(self, x: Tensor) -> Tensor:
        """(B, d) exact scores ∇ log p (composable with torch.func transforms)."""
        return torch.vmap(torch.func.grad(self._log_prob1))(x)

    def hessian(self, x: Tensor) -> Tensor:
        """(B, d, d) exact Hessians of log p."""
        return torch.vmap(torch.func.hessian(self._log_prob1))(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, generator=generator)
        return self.means[idx] + self.stds[idx, None] * z
