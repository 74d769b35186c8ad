"""Lemmas 4.1-4.3, the §4.4 expectation, App. B.2 and App. A.4 of Jeon et al. 2025, by Monte Carlo against closed
forms."""

import pytest
import torch

from sharp_utils import gaussian as G
from sharp_utils import hessian
from tests.conftest import mc_close

N = 40000


def setup(d, gen, cond=10.0):
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    S = G.random_covariance(d, cond=cond, generator=gen)
    return mu, S


@pytest.mark.parametrize("d", [2, 7])
def test_lemma_4_1(d, gen):
    mu, S = setup(d, gen)
    x = G.sample_gaussian(N, mu, S, gen)
    s = G.gaussian_score(x, mu, S)
    # −tr H from the library's own Jacobian of the score, not from the formula
    H = hessian.dense_jacobian(lambda z: G.gaussian_score(z, mu, S), x[0])
    torch.testing.assert_close(-torch.trace(H), G.lemma41_expected_sq_score(S))
    ok, msg = mc_close(s.pow(2).sum(1), -torch.trace(H))
    assert ok, msg


@pytest.mark.parametrize("d", [2, 7])
def test_lemma_4_3_with_the_proofs_hessian(d, gen):
    mu, S = setup(d, gen)
    x = G.sample_gaussian(N, mu, S, gen)
    f = lambda z: G.gaussian_score(z, mu, S)
    s = f(x)
    Hs = hessian.hvp_jvp(f, x, s)[1]  # H s through forward-mode AD
    expected = G.lemma43_expected_sq_hs(S)
    torch.testing.assert_close(expected, torch.trace(torch.linalg.matrix_power(torch.linalg.inv(S), 3)))
    ok, msg = mc_close(Hs.pow(2).sum(1), expected)
    assert ok, msg
    # the statement's literal H ≡ −Σ gives tr Σ³, which is not the expectation (paper slip)
    mean = Hs.pow(2).sum(1).mean()
    assert abs(mean - torch.trace(S @ S @ S)) > 10 * Hs.pow(2).sum(1).std() / N ** 0.5


def test_lemma_4_2_general_mean_shift_non_commuting(gen):
    d = 5
    mu, S = setup(d, gen)
    mu_c, S_c = setup(d, gen, cond=30.0)
    assert (S @ S_c - S_c @ S).abs().max() > 0.1  # really non-commuting
    x = G.sample_gaussian(N, mu_c, S_c, gen)  # x ~ p(x|c)
    delta = G.gaussian_score(x, mu_c, S_c) - G.gaussian_score(x, mu, S)
    ok, msg = mc_close(delta.pow(2).sum(1), G.lemma42_expected_sq_delta(mu, S, mu_c, S_c))
    assert ok, msg


def commuting_pair(d, gen):
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    lam = torch.rand(d, dtype=torch.float64, generator=gen) * 2 + 0.5  # eigenvalues of Σ⁻¹
    lam_c = lam * (1 + 3 * torch.rand(d, dtype=torch.float64, generator=gen))  # conditioning sharpens
    S = (Q / lam) @ Q.T
    S_c = (Q / lam_c) @ Q.T
    return S, S_c, lam, lam_c


def test_lemma_4_2_commuting_reduction_with_eigenvalues_of_minus_H(gen):
    d = 6
    S, S_c, lam, lam_c = commuting_pair(d, gen)
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    closed = G.lemma42_expected_sq_delta(mu, S, mu, S_c)
    torch.testing.assert_close(closed, G.eigen_sum(lam, lam_c, 2))
    x = G.sample_gaussian(N, mu, S_c, gen)
    delta = G.gaussian_score(x, mu, S_c) - G.gaussian_score(x, mu, S)
    ok, msg = mc_close(delta.pow(2).sum(1), G.eigen_sum(lam, lam_c, 2))
    assert ok, msg
    # with the eigenvalues of H (negative) the literal formula is negative: the sign slip
    mu_H, mu_Hc = -lam, -lam_c
    assert ((mu_H - mu_Hc) ** 2 / mu_Hc).sum() < 0
    with pytest.raises(ValueError, match="positive"):
        G.eigen_sum(mu_H, mu_Hc, 2)


def test_section_4_4_expectation(gen):
    d = 6
    S, S_c, lam, lam_c = commuting_pair(d, gen)
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    x = G.sample_gaussian(N, mu, S_c, gen)
    delta_fn = lambda z: G.gaussian_score(z, mu, S_c) - G.gaussian_score(z, mu, S)
    hd_sd = hessian.hvp_jvp(delta_fn, x, delta_fn(x))[1]
    closed = G.section44_expected_sq_hdelta_sdelta(mu, S, mu, S_c)
    torch.testing.assert_close(closed, G.eigen_sum(lam, lam_c, 4))
    ok, msg = mc_close(hd_sd.pow(2).sum(1), closed)
    assert ok, msg


def test_section_4_4_general_form(gen):
    d = 4
    mu, S = setup(d, gen)
    mu_c, S_c = setup(d, gen, cond=5.0)
    x = G.sample_gaussian(N, mu_c, S_c, gen)
    delta_fn = lambda z: G.gaussian_score(z, mu_c, S_c) - G.gaussian_score(z, mu, S)
    hd_sd = hessian.hvp_jvp(delta_fn, x, delta_fn(x))[1]
    ok, msg = mc_close(hd_sd.pow(2).sum(1), G.section44_expected_sq_hdelta_sdelta(mu, S, mu_c, S_c))
    assert ok, msg


def test_b2_identity_on_a_non_gaussian_mixture(gen):
    mix = G.GaussianMixture(
        torch.tensor([0.05, 0.95], dtype=torch.float64),
        torch.tensor([[2.0, 2.0, 0.0], [-2.0, -2.0, 0.0]], dtype=torch.float64),
        torch.tensor([0.1, 1.0], dtype=torch.float64),
    )
    x = mix.sample(20000, gen)
    s = mix.score(x)
    trH = torch.diagonal(mix.hessian(x), dim1=1, dim2=2).sum(1)
    # non-Gaussian: −tr H varies with x, yet E‖s‖² = −E tr H
    assert trH.std() > 1.0
    ok, msg = mc_close(s.pow(2).sum(1) + trH, 0.0)
    assert ok, msg
    # score and Hessian agree with the library's Jacobian of the score
    torch.testing.assert_close(hessian.dense_jacobian(mix.score, x[0]), mix.hessian(x[:1])[0])


def test_fisher_rao_agreement_at_identity_and_the_missing_inverse(gen):
    d = 4
    E = torch.randn(d, d, dtype=torch.float64, generator=gen)
    E = (E + E.T) / 2
    ratios_I, ratios_S, ratios_fix = [], [], []
    S = G.random_covariance(d, cond=8.0, generator=gen)
    for eps in (1e-2, 1e-3, 1e-4):
        dS = eps * E
        eye = torch.eye(d, dtype=torch.float64)
        z = torch.zeros(d, dtype=torch.float64)
        ratios_I.append((G.lemma42_expected_sq_delta(z, eye, z, eye + dS) / G.fisher_rao_sq(eye, eye + dS)).item())
        exact_S = G.lemma42_expected_sq_delta(z, S, z, S + dS)
        ratios_S.append((exact_S / G.fisher_rao_sq(S, S + dS)).item())
        ratios_fix.append((exact_S / G.score_delta_second_order(S, dS)).item())
        torch.testing.assert_close(G.fisher_rao_sq(S, S + dS) / G.fisher_rao_second_order(S, dS),
                                   torch.tensor(1.0, dtype=torch.float64), rtol=20 * eps, atol=0)
    # Σ = I: the two agree to second order, error shrinking with ε
    assert abs(ratios_I[-1] - 1) < 1e-3 and abs(ratios_I[-1] - 1) < abs(ratios_I[0] - 1)
    # general Σ: E‖s^Δ‖² matches tr(Σ⁻¹δΣΣ⁻²δΣ), not the Fisher-Rao distance
    assert abs(ratios_fix[-1] - 1) < 1e-3
    assert abs(ratios_S[-1] - 1) > 0.05
