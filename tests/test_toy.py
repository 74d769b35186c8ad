import json

import numpy as np
import pytest
import torch

from sharp_utils import checkpoints, toy
from sharp_utils import toy_figures
from sharp_utils.gaussian import random_covariance
from sharp_utils.scores import GaussianVPModel
from sharp_utils.stats import rate_ci


def test_second_order_loss_is_minimised_by_the_true_hessian(gen):
    """For Gaussian data E[ℓℓᵀ | x_t] = I + σ²H (second-order Tweedie), so among models whose Jacobian is γ·J*, the
    loss L2(γ) = E‖−σγJ* + I − ℓℓᵀ‖_F² is a parabola with its vertex at γ = 1."""
    d, t, N = 3, 400, 200_000
    al = toy.ddpm_alphas_cumprod()
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    S = random_covariance(d, cond=5.0, generator=gen)
    model = GaussianVPModel({None: (mu, S)}, al)
    a = al[t]
    x0 = mu + torch.randn(N, d, dtype=torch.float64, generator=gen) @ torch.linalg.cholesky(S).T
    eps = torch.randn(N, d, dtype=torch.float64, generator=gen)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    sigma = (1 - a).sqrt().expand(N)
    eps_star = model.eps(xt, t)
    losses = []
    for gamma in (0.5, 1.0, 1.5):
        f = lambda z, g=gamma: g * model.eps(z, t)
        losses.append(toy.second_order_dsm_loss(f, xt, eps, sigma, eps_hat=eps_star, exact=True).item())
    l0, l1, l2 = losses  # parabola through γ = 0.5, 1, 1.5
    vertex = 1.0 - 0.5 * (l2 - l0) / (2 * (l2 - 2 * l1 + l0))
    assert abs(vertex - 1.0) < 0.03, (vertex, losses)
    # the wrong sign convention (σ²H = +σ∇ε) would put the vertex at γ = −1: make sure we are far from it
    assert l1 < l0 and l1 < l2


def test_probe_estimate_matches_exact_frobenius(gen):
    d, t, N = 2, 300, 4000
    al = toy.ddpm_alphas_cumprod()
    net = toy.TimeMLP(dim=d, hidden=32, depth=2).double()
    xt = torch.randn(N, d, dtype=torch.float64, generator=gen)
    eps = torch.randn(N, d, dtype=torch.float64, generator=gen)
    tt = torch.full((N,), t)
    f = lambda z: net(z, tt)
    sigma = (1 - al[t]).sqrt().expand(N)
    exact = toy.second_order_dsm_loss(f, xt, eps, sigma, exact=True).item()
    probes = [toy.second_order_dsm_loss(f, xt, eps, sigma, num_probes=8, generator=gen).item() for _ in range(20)]
    m = torch.tensor(probes)
    assert abs(m.mean().item() - exact) < 4.5 * m.std().item() / 20 ** 0.5 + 1e-9


def test_training_reduces_the_loss():
    x, _ = toy.toy_mixture_data(0, n=300)
    net, rec = toy.train_score_model(toy.TimeMLP(hidden=32, depth=2), x, alphas_cumprod=toy.ddpm_alphas_cumprod(),
                                     steps=200, batch_size=128, lr=3e-3, exact_jacobian=True, log_every=199)
    assert rec["steps"] == 200 and rec["log"][-1]["dsm"] < rec["log"][0]["dsm"]


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    net = toy.TimeMLP(hidden=8, depth=1)
    checkpoints.save_state(tmp_path, "m", net.state_dict(), config=net.config, recipe={"steps": 1})
    state, config = checkpoints.load_state(tmp_path, "m")
    assert config == net.config
    for k, v in net.state_dict().items():
        torch.testing.assert_close(state[k], v)
    path = tmp_path / "m.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(checkpoints.CheckpointError, match="corrupt.*git checkout"):
        checkpoints.load_state(tmp_path, "m")
    with pytest.raises(checkpoints.CheckpointError, match="missing"):
        checkpoints.load_state(tmp_path, "other")
    (tmp_path / "MANIFEST.json").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="MANIFEST"):
        checkpoints.load_state(tmp_path, "m")


def test_corrupt_checkpoint_is_not_loaded_but_retrained(tmp_path, monkeypatch):
    net = toy.TimeMLP(hidden=8, depth=1)
    checkpoints.save_state(tmp_path, "toy2d", net.state_dict(), config=net.config)
    (tmp_path / "toy2d.safetensors").write_bytes(b"garbage")
    monkeypatch.setattr(toy_figures, "TOY2D_DIR", tmp_path)
    calls = []
    monkeypatch.setattr(toy_figures, "train_toy2d", lambda **kw: (calls.append(kw), (toy.TimeMLP(), {}))[1])
    messages = []
    model = toy_figures._load_or_train(
        tmp_path, "toy2d", lambda c: toy.TimeMLP(**c), lambda: toy_figures.train_toy2d(), False, messages.append
    )
    assert calls and "corrupt" in messages[0]
    assert isinstance(model, toy.TimeMLP)


@pytest.mark.parametrize(
    "folder,name", [(toy_figures.TOY2D_DIR, "toy2d"), (toy_figures.MNIST_DIRS["coupled"], "mnist_9v3")]
)
def test_shipped_checkpoints_match_their_manifest(folder, name):
    state, config = checkpoints.load_state(folder, name)
    recipe = json.loads((folder / checkpoints.MANIFEST).read_text())["recipe"][name]
    assert recipe["steps"] > 0 and "device" in recipe and "seconds" in recipe
    assert (folder / f"{name}.safetensors").stat().st_size < 10_000_000


def test_sampling_is_deterministic_and_independent_of_batching():
    model = toy.TorchScoreModel(toy.TimeMLP(hidden=16, depth=2), toy.ddpm_alphas_cumprod())
    a = toy_figures.generate(model, [5, 6, 7], (2,), num_steps=10, batch_size=3)
    b = toy_figures.generate(model, [5, 6, 7], (2,), num_steps=10, batch_size=1)
    c = toy_figures.generate(model, [7, 6, 5], (2,), num_steps=10, batch_size=2)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a, c.flip(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a, toy_figures.generate(model, [5, 6, 7], (2,), num_steps=10), rtol=0, atol=0)


def test_mnist_data_layout():
    d = toy.mnist_9_vs_3(0)
    assert d["x"].shape == (600, 1, 28, 28) and d["x"].min() >= -1 and d["x"].max() <= 1
    assert (d["y"] == toy.MNIST_LABELS["3"]).sum() == 500 and (d["y"] == toy.MNIST_LABELS["9"]).sum() == 100
    assert torch.equal(d["x"][-1], d["nine"]) and torch.equal(d["x"][500], d["nine"])


def test_shift_augmentation_leaves_the_nine_alone(gen):
    d = toy.mnist_9_vs_3(0)
    idx = torch.tensor([0, 1, 2, 550, 599])
    out = toy.shift_threes(d["x"][idx], d["y"][idx], gen)
    assert torch.equal(out[3:], d["x"][idx][3:])
    for i in range(3):
        assert any(
            torch.equal(out[i], torch.roll(d["x"][idx][i], (a, b), (-2, -1)))
            for a in range(-2, 3)
            for b in range(-2, 3)
        )


def test_appc_design_gives_the_unconditional_branch_every_three_and_nine():
    c, a = toy.mnist_9_vs_3(0), toy.mnist_9_vs_3(0, design="appc")
    assert c["uncond"] is None
    assert torch.equal(a["x"], c["x"]) and torch.equal(a["y"], c["y"])  # the labelled sets are the same
    assert a["uncond"].shape == (1000, 1, 28, 28)
    assert torch.equal(a["uncond"][:500], a["threes"])
    nine_hits = (a["uncond"][500:] == a["nine"]).flatten(1).all(1)
    assert int(nine_hits.sum()) == 1  # the memorized nine once, among 499 other nines
    with pytest.raises(ValueError, match="coupled"):
        toy.mnist_9_vs_3(0, design="other")


def test_label_dropout_draws_the_unconditional_examples_from_their_own_set():
    """drop_labels over many batches vs its probabilities: P(drop) = 0.2; a dropped row is null-labelled and a
    uniform draw from uncond_x; a kept row keeps its example and label (App. C's sampler)."""
    g = torch.Generator().manual_seed(0)
    B, rounds, null = 500, 40, 2
    x = torch.arange(B, dtype=torch.float32).reshape(B, 1, 1, 1)  # example i has value i
    y = torch.arange(B) % 2
    uncond = -1.0 - torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)  # values -1 … -10
    drops, counts = 0, torch.zeros(10)
    for _ in range(rounds):
        x0, yy = toy.drop_labels(x, y, 0.2, null, uncond, g)
        dropped = yy == null
        drops += int(dropped.sum())
        assert torch.equal(x0[~dropped], x[~dropped]) and torch.equal(yy[~dropped], y[~dropped])
        vals = x0[dropped].flatten()
        assert (vals < 0).all()
        counts += torch.bincount((-vals - 1).long(), minlength=10).float()
    n = B * rounds
    assert abs(drops / n - 0.2) < 4.5 * (0.2 * 0.8 / n) ** 0.5
    expected = drops / 10  # uniform over the 10 unconditional examples: chi-square, 9 dof, p < 0.001 at 27.9
    assert float(((counts - expected) ** 2 / expected).sum()) < 27.9
    # coupled design: a dropped row keeps its own example
    x0, yy = toy.drop_labels(x, y, 0.2, null, None, torch.Generator().manual_seed(1))
    assert torch.equal(x0, x) and (yy == null).any()


def test_train_mnist_appc_runs_and_records_its_design():
    net, rec = toy_figures.train_mnist(steps=2, batch_size=4, augment=False, design="appc", log_every=1)
    assert rec["design"] == "appc" and rec["uncond_examples"] == 1000 and rec["steps"] == 2
    assert all(torch.isfinite(torch.tensor([r["dsm"], r["dsm2"]])).all() for r in rec["log"])
    with pytest.raises(ValueError, match="appc"):
        toy_figures.load_mnist(design="other")


def test_train_mnist_resumes_a_checkpoint_and_records_it(tmp_path):
    """A fine-tune starts from the saved weights (zero learning rate leaves them as saved) and records their hash."""
    from sharp_utils.checkpoints import read_manifest, save_state

    net0 = toy.ClassUNet()
    save_state(tmp_path, "mnist_9v3", net0.state_dict(), config=net0.config, recipe={"steps": 7})
    net, rec = toy_figures.train_mnist(
        steps=2,
        batch_size=4,
        augment=False,
        design="appc",
        resume=tmp_path,
        lr=0.0,
        second_order_weight=0.0,
        ema_decay=0.0,
    )
    for k, v in net0.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)
    resumed = rec["resumed_checkpoint"]
    assert resumed["sha256"] == read_manifest(tmp_path)["files"]["mnist_9v3.safetensors"]["sha256"]
    assert resumed["recipe"] == {"steps": 7} and rec["second_order_weight"] == 0.0 and rec["ema_decay"] == 0.0


def test_copy_rates_counts_rows_below_the_threshold():
    rows = [{"group": "a", "distance": d} for d in (0.5, 1.5, 0.99, 3.0)] + [{"group": "b", "distance": 2.0}]
    rates = toy_figures.copy_rates(rows, threshold=1.0)
    assert rates["a"][:2] == (2, 4) and rates["b"][:2] == (0, 1)
    assert rates["a"][2] == rate_ci(2, 4)


def test_mnist_copy_threshold_is_half_the_median_spacing_of_the_threes():
    data = toy.mnist_9_vs_3(0)
    x = data["threes"].flatten(1).double().numpy()
    d = ((x[:, None] - x[None]) ** 2).sum(-1) ** 0.5  # numpy oracle
    np.fill_diagonal(d, np.inf)
    nn = np.sort(d.min(1))
    # torch's median of an even count is the lower middle value (numpy's the mean of both): 500 threes
    assert toy_figures.mnist_copy_threshold(data) == pytest.approx(0.5 * nn[(len(nn) - 1) // 2], rel=1e-9)


def test_shipped_appc_copy_rows_match_todays_code():
    """Spot check of results/mnist_9v3_appc_copies.csv: regenerate a few rows per group from the shipped checkpoint
    (through `sharp verify`'s recomputation and tolerance: 1e-2 in l2, the copy threshold is 5.4)."""
    from sharp_utils.verify import verify_mnist_copies

    path = toy_figures.MNIST_COPY_RESULTS["appc"]
    rows, settings = toy_figures.read_copy_results(path, toy_figures.MNIST_DIRS["appc"])
    assert settings["threshold"] == pytest.approx(toy_figures.mnist_copy_threshold(toy.mnist_9_vs_3(0)), rel=1e-6)
    picks = [
        i
        for group in toy_figures.MNIST_COPY_GROUPS
        for i in sorted((i for i, r in enumerate(rows) if r["group"] == group), key=lambda i: int(rows[i]["seed"]))[:3]
    ]
    n, mismatches = verify_mnist_copies(path, picks)
    assert n == 3 * len(toy_figures.MNIST_COPY_GROUPS) and not mismatches, [str(m) for m in mismatches]


def test_read_copy_results_refuses_rows_of_another_checkpoint(tmp_path):
    import shutil

    shutil.copy(toy_figures.MNIST_COPY_RESULTS["appc"], tmp_path / "c.csv")
    shutil.copy(toy_figures.MNIST_COPY_RESULTS["appc"].with_suffix(".json"), tmp_path / "c.json")
    with pytest.raises(checkpoints.CheckpointError, match="another checkpoint"):
        toy_figures.read_copy_results(tmp_path / "c.csv", toy_figures.MNIST_DIRS["coupled"])
    with pytest.raises(FileNotFoundError, match="check_mnist_memorization"):
        toy_figures.read_copy_results(tmp_path / "missing.csv", toy_figures.MNIST_DIRS["appc"])
