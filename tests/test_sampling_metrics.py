import numpy as np
import pytest
import torch

from sharp_utils import metrics, sampling
from sharp_utils.gaussian import random_covariance
from sharp_utils.scores import GaussianVPModel


def sd_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)


@pytest.fixture
def model(gen):
    d = 6
    sched = sd_scheduler()
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    S = random_covariance(d, generator=gen)
    S_c = 0.05 * random_covariance(d, generator=gen)  # the condition sharpens the density
    return GaussianVPModel({None: (mu, S), "c": (mu + 0.5, S_c), "n": (mu, S)}, sched.alphas_cumprod.double())


def test_ddim_timesteps_match_diffusers():
    sched = sd_scheduler()
    for n in (1, 5, 50):
        sched.set_timesteps(n)
        assert sampling.ddim_timesteps(1000, n) == sched.timesteps.tolist()


def test_sample_ddim_matches_diffusers_loop(model, gen):
    sched = sd_scheduler()
    sched.set_timesteps(20)
    x = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    ref = x.clone()
    for t in sched.timesteps:
        eps = model.eps(ref, int(t), None) + 3.0 * (model.eps(ref, int(t), "c") - model.eps(ref, int(t), None))
        ref = sched.step(eps, t, ref).prev_sample
    ours = sampling.sample_ddim(model, x, "c", None, num_steps=20, guidance_scale=3.0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_per_step_guidance_matches_diffusers_loop(model, gen):
    sched = sd_scheduler()
    sched.set_timesteps(10)
    scales = [7.5] * 4 + [1.0] * 3 + [3.0] * 3
    x = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    ref = x.clone()
    for w, t in zip(scales, sched.timesteps):
        eps = model.eps(ref, int(t), None) + w * (model.eps(ref, int(t), "c") - model.eps(ref, int(t), None))
        ref = sched.step(eps, t, ref).prev_sample
    torch.testing.assert_close(sampling.sample_ddim(model, x, "c", None, num_steps=10, guidance_scale=scales), ref,
                               rtol=1e-5, atol=1e-6)
    constant = sampling.sample_ddim(model, x, "c", None, num_steps=10, guidance_scale=7.5)
    assert (constant - ref).abs().max() > 1e-3  # the switch changes the sample
    with pytest.raises(ValueError, match="one per step"):
        sampling.sample_ddim(model, x, "c", None, num_steps=10, guidance_scale=scales[:-1])


def test_eps_to_x0_inverts_x0_to_eps(gen):
    from sharp_utils.scores import eps_to_x0, x0_to_eps

    x0 = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=gen)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=gen)
    for a in (0.999, 0.3, 0.005):
        torch.testing.assert_close(eps_to_x0(x0_to_eps(x0, x, a), x, a), x0)


def test_sampling_is_deterministic_per_seed(model):
    x1 = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    x2 = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sampling.sample_ddim(model, x1, "c", num_steps=10),
                               sampling.sample_ddim(model, x2, "c", num_steps=10), rtol=0, atol=0)


def test_step_one_metrics_vs_closed_form(model, gen):
    t = sampling.ddim_timesteps(1000, 50)[0]
    x = torch.randn(4, 6, dtype=torch.float64, generator=gen)
    Hd = model.exact_hessian(t, "c") - model.exact_hessian(t, None)
    sd = model.score(x, t, "c") - model.score(x, t, None)
    exact_wen = sd.norm(dim=1)
    exact_ours = (sd @ Hd.T).pow(2).sum(1)
    got = metrics.first_steps_metrics(model, x, "c", None, k=1)
    torch.testing.assert_close(got["wen"], exact_wen)
    torch.testing.assert_close(got["ours-jvp"], exact_ours)
    rel = ((got["ours-fd"] - exact_ours).abs() / exact_ours).max()
    assert rel < 1e-6  # float64 forward difference on a linear score: only roundoff
    # ε space differs by constant factors at a fixed step: σ for Wen, σ⁴ for ours
    eps_space = metrics.first_steps_metrics(model, x, "c", None, k=1, space="eps")
    sigma = torch.sqrt(1 - model.alpha_bar(t))
    torch.testing.assert_close(eps_space["wen"], exact_wen * sigma)
    torch.testing.assert_close(eps_space["ours-jvp"], exact_ours * sigma ** 4)


def test_first_k_steps_average_follows_the_sampling_path(model, gen):
    x = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    seen = []
    sampling.sample_ddim(model, x, "c", None, num_steps=50, guidance_scale=7.5,
                         callback=lambda d: seen.append(d["x"]) if d["i"] < 5 else None)
    manual = torch.stack([(model.score(xi, t, "c") - model.score(xi, t, None)).norm(dim=1)
                          for xi, t in zip(seen, sampling.ddim_timesteps(1000, 50)[:5])]).mean(0)
    got = metrics.first_steps_metrics(model, x, "c", None, k=5, metrics=("wen",))
    torch.testing.assert_close(got["wen"], manual)


def test_memorized_condition_scores_higher(model, gen):
    # condition 'c' sharpens the density, 'n' leaves it unchanged: both metrics separate them perfectly
    x = torch.randn(64, 6, dtype=torch.float64, generator=gen)
    mem = metrics.first_steps_metrics(model, x, "c", None, k=1)
    nmem = metrics.first_steps_metrics(model, x, "n", None, k=1)
    for m in ("wen", "ours-jvp"):
        assert metrics.detection_report(mem[m], nmem[m])["auc"] == 1.0


def test_metric_argument_errors(model):
    x = torch.zeros(1, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown"):
        metrics.first_steps_metrics(model, x, "c", metrics=("carlini",))
    with pytest.raises(ValueError, match=r"\(51,\)"):
        metrics.first_steps_metrics(model, x, "c", k=51)


def hand_auc(mem, nmem):
    """Mann-Whitney U: P(score_mem > score_nmem) + ½ P(tie), by counting pairs."""
    wins = sum((m > n) + 0.5 * (m == n) for m in mem for n in nmem)
    return wins / (len(mem) * len(nmem))


def test_detection_report_vs_hand_computed_roc_with_ties():
    mem = [3.0, 2.0, 2.0, 1.0, 5.0]
    nmem = [2.0, 1.0, 0.0, 0.0, 2.0, -1.0, 0.5, 0.2, 0.1, 0.3]
    r = metrics.detection_report(mem, nmem)
    assert r["auc"] == pytest.approx(hand_auc(mem, nmem))
    # thresholds: >2 gives TPR 2/5 at FPR 0; ≥2 gives TPR 4/5 but FPR 2/10 > 1%, 3%
    assert r["tpr@1%fpr"] == pytest.approx(0.4)
    assert r["tpr@3%fpr"] == pytest.approx(0.4)
    assert (r["n_mem"], r["n_nmem"]) == (5, 10)


def test_detection_report_reads_the_largest_tpr_below_the_fpr():
    rng = np.random.default_rng(0)
    nmem = rng.normal(size=200)
    mem = rng.normal(loc=2.0, size=100)
    r = metrics.detection_report(mem, nmem)
    for x, key in ((0.01, "tpr@1%fpr"), (0.03, "tpr@3%fpr")):
        thr_ok = [t for t in np.r_[mem, nmem, np.inf] if (nmem >= t).mean() <= x]
        assert r[key] == pytest.approx(max((mem >= t).mean() for t in thr_ok))
    assert r["auc"] == pytest.approx(hand_auc(mem, nmem))


def test_detection_report_never_flips_labels():
    r = metrics.detection_report([0.0, 0.1], [1.0, 2.0])
    assert r["auc"] == 0.0 and r["tpr@1%fpr"] == 0.0


def test_detection_report_errors():
    with pytest.raises(ValueError, match="at least one"):
        metrics.detection_report([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.detection_report([float("nan")], [1.0])


def test_mean_over_generations():
    s = torch.arange(6.0)
    torch.testing.assert_close(metrics.mean_over_generations(s, 3), torch.tensor([1.0, 4.0]))
    with pytest.raises(ValueError, match="n=4"):
        metrics.mean_over_generations(s, 4)
