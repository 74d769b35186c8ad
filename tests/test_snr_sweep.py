"""Notebook 08's steps against hand computations: the pool's covariance (numpy), the first-step spectra from a
posterior computed here with numpy, the small-k limit of the closed form (σ²H → −I + ᾱk²Cov/σ²), a one-image
condition's −I, nearest training latents (numpy), and the copy bookkeeping of exact guided sampling."""
import numpy as np
import pytest
import torch

from sharp_utils import snr_sweep
from sharp_utils.exact import ExactDensityModel
from sharp_utils.toy import ddpm_alphas_cumprod

AC = ddpm_alphas_cumprod()


@pytest.fixture
def model():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(12, 2, 2, 1, dtype=torch.float64, generator=g) * torch.tensor([3.0, 1.0, 0.5, 0.2]).reshape(
        1, 2, 2, 1).double()
    w = torch.rand(12, dtype=torch.float64, generator=g) + 0.5
    conds = {None: (range(12), w), "one": ([4], None), "three": ([0, 5, 7], [2.0, 1.0, 1.0])}
    return ExactDensityModel(z, conds, AC)


def test_pool_statistics_are_numpys_weighted_covariance(model):
    z = model.data.numpy()
    w = model.conditions[None][1].exp().numpy()
    C = np.cov(z.T, aweights=w, bias=True)
    got = snr_sweep.pool_statistics(model)
    assert got["lambda_max"] == pytest.approx(np.linalg.eigvalsh(C)[-1], rel=1e-10)
    assert got["trace"] == pytest.approx(np.trace(C), rel=1e-10)
    assert got["mean_sq_norm"] == pytest.approx(float(w @ (z ** 2).sum(1)), rel=1e-10)


def _hand_spectrum(model, x, t, key, k=1.0):
    """σ²H from a posterior computed with numpy: π ∝ w exp(−‖x − √ᾱ k z‖²/(2σ²))."""
    a = float(AC[t])
    s2 = 1 - a
    idx, logw = model.conditions[key]
    z = k * model.data.numpy()[idx.numpy()]
    logits = logw.numpy() - ((x.reshape(-1).numpy() - np.sqrt(a) * z) ** 2).sum(1) / (2 * s2)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    m = p @ z
    cov = ((z - m) * p[:, None]).T @ (z - m)
    return np.linalg.eigvalsh(-np.eye(z.shape[1]) + a * cov / s2)


@pytest.mark.parametrize("k", [1.0, 7.0])
def test_spectra_rows_match_the_closed_form_by_hand(model, k):
    t = 900
    x = torch.randn(1, 2, 2, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ex = snr_sweep.scaled(model, k)
    recs = [{"caption": "one", "category": "em"}, {"caption": "three", "category": "nmem"}]
    rows = snr_sweep.spectra_rows(ex, recs, x, t, k)
    unc = _hand_spectrum(model, x, t, None, k)
    for r, key in zip(rows, ("one", "three")):
        ev = _hand_spectrum(model, x, t, key, k)
        assert r["nonneg"] == int((ev >= 0).sum())
        assert r["mean_eig"] == pytest.approx(ev.mean(), rel=1e-8)
        assert r["max_eig"] == pytest.approx(ev.max(), rel=1e-8, abs=1e-12)
        assert r["gap"] == pytest.approx(np.clip(ev - unc, None, 0).sum(), rel=1e-8, abs=1e-12)
        assert r["uncond_max_eig"] == pytest.approx(unc.max(), rel=1e-8)
    assert rows[0]["mean_eig"] == pytest.approx(-1.0) and rows[0]["max_eig"] == pytest.approx(-1.0)  # one image


def test_small_k_is_the_prior_limit(model):
    """k → 0: the posterior is the prior, σ²H_u → −I + (ᾱ k²/σ²) Cov, its largest eigenvalue −1 + ᾱk²λ_max/σ²."""
    t, k = 981, 1e-3
    a = float(AC[t])
    x = torch.randn(1, 2, 2, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (r,) = snr_sweep.spectra_rows(snr_sweep.scaled(model, k), [{"caption": "three", "category": "x"}], x, t, k)
    lam = snr_sweep.pool_statistics(model)["lambda_max"]
    assert r["uncond_max_eig"] + 1 == pytest.approx(a * k**2 * lam / (1 - a), rel=1e-3)


def test_nearest_ids_are_numpys_argmin(model):
    g = torch.Generator().manual_seed(2)
    k = 2.5
    samples = k * model.data[[3, 8, 1]].reshape(3, 2, 2, 1) + 1e-3 * torch.randn(3, 2, 2, 1, generator=g).double()
    got = snr_sweep.nearest_ids(model, samples)  # against the model's own (unscaled) data
    d = ((samples.reshape(3, 1, -1).numpy() - model.data.numpy()[None]) ** 2).sum(-1)
    assert got.tolist() == d.argmin(1).tolist()
    ex = snr_sweep.scaled(model, k)
    assert snr_sweep.nearest_ids(ex, samples).tolist() == [3, 8, 1]


def test_sd_position_follows_its_stated_assumptions():
    got = snr_sweep.sd_position(0.005, rho=(0.1,))
    assert got["lambda_max"] == (pytest.approx(1 + 4095 * 0.1),)
    assert got["snr_trace"] == pytest.approx(0.005 * 16384)
    assert got["snr_lambda"][0] == pytest.approx(0.005 * (1 + 409.5))


def test_copies_count_rows():
    rows = [{"k": "4.0", "group": "em", "copy": "1"}, {"k": "4.0", "group": "em", "copy": "0"},
            {"k": "4.0", "group": "uncond", "copy": "0"}, {"k": "1.0", "group": "em", "copy": "1"}]
    assert snr_sweep.copies(rows, 4.0, "em") == (1, 2)
    assert snr_sweep.copies(rows, 4.0, "uncond") == (0, 1)
