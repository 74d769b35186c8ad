"""Experiments on the toy models (Figures 1, 2 and 4 of Jeon et al. 2025): load shipped checkpoints or retrain,
sample, measure memorization.  Sits on top of :mod:`sharp_utils.toy`."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from . import paths
from .checkpoints import CheckpointError, load_state, manifest_sha256, read_manifest
from .gaussian import GaussianMixture
from .hessian import dense_jacobian, jacobian_batched, jacobian_operator
from .sampling import per_sample_noise, sample_ddim
from .spectrum import top_eigenvalues
from .stats import rate_ci
from .toy import (
    MNIST_LABELS,
    TOY_MIXTURE,
    ClassUNet,
    TimeMLP,
    TorchScoreModel,
    ddpm_alphas_cumprod,
    mnist_9_vs_3,
    shift_threes,
    toy_mixture_data,
    train_score_model,
)

TOY2D_DIR = paths.CHECKPOINTS / "toy2d"
# MNIST 9-vs-3 designs (toy.mnist_9_vs_3): "coupled" = the unconditional branch learns the labelled set; "appc" =
# App. C's, the unconditional branch learns every three and every nine (the default; its checkpoint is fine-tuned
# from the coupled one: docs/development.md)
MNIST_DIRS = {"coupled": paths.CHECKPOINTS / "mnist_9v3_coupled", "appc": paths.CHECKPOINTS / "mnist_9v3_appc"}
MNIST_DEFAULT = "appc"
# App. C's copy rates of a checkpoint, per sample (scripts/check_mnist_memorization.py --out)
MNIST_COPY_RESULTS = {"appc": paths.RESULTS / "mnist_9v3_appc_copies.csv"}

# Recipes: the shipped checkpoints were trained with exactly these (scripts/train_toy.py); 'paper' retrains with them.
TOY2D_RECIPE = dict(steps=12000, batch_size=512, lr=1e-3, second_order_weight=0.5, exact_jacobian=True)
MNIST_RECIPE = dict(steps=30000, batch_size=256, lr=2e-4, second_order_weight=0.5, num_probes=1, cfg_drop=0.2,
                    null_label=MNIST_LABELS[None])


def train_toy2d(seed: int = 0, device: str = "cpu", max_seconds: float | None = None, **overrides):
    """Train the 2D mixture's score MLP with L_DSM + 0.5 L_DSM^(2) (exact 2×2 Jacobian)."""
    x, _ = toy_mixture_data(seed)
    net = TimeMLP()
    rec = {**TOY2D_RECIPE, **overrides}
    return train_score_model(net, x, alphas_cumprod=ddpm_alphas_cumprod(), seed=seed, device=device,
                             max_seconds=max_seconds, **rec)


def train_mnist(seed: int = 0, device: str = "cpu", max_seconds: float | None = None, augment: bool = True,
                design: str = MNIST_DEFAULT, resume: Path | None = None, **overrides):
    """Train the MNIST 9-vs-3 class-conditional UNet with CFG dropout 0.2 and L_DSM + 0.5 L_DSM^(2); ``design``:
    where the label-dropped examples come from (:func:`sharp_utils.toy.mnist_9_vs_3`); ``resume``: a checkpoint
    folder to fine-tune from (its hash and recipe go into the new recipe)."""
    data = mnist_9_vs_3(seed, design=design)
    if resume is None:
        net, resumed = ClassUNet(), None
    else:
        state, config = load_state(Path(resume), "mnist_9v3")
        net = ClassUNet(config)
        net.load_state_dict(state)
        man = read_manifest(Path(resume))
        resumed = {"folder": Path(resume).resolve().relative_to(paths.REPO_ROOT).as_posix()
                   if Path(resume).resolve().is_relative_to(paths.REPO_ROOT) else str(resume),
                   "sha256": manifest_sha256(resume, "mnist_9v3"),
                   "recipe": man.get("recipe", {}).get("mnist_9v3")}
    rec = {**MNIST_RECIPE, **overrides}
    net, recipe = train_score_model(net, data["x"], data["y"], alphas_cumprod=ddpm_alphas_cumprod(), seed=seed,
                                    device=device, max_seconds=max_seconds, augment=shift_threes if augment else None,
                                    uncond_x=data["uncond"], **rec)
    recipe["design"] = design
    if resumed is not None:
        recipe["resumed_checkpoint"] = resumed
    return net, recipe


def _load_or_train(folder: Path, name: str, build, train, retrain: bool, log=print):
    if not retrain:
        try:
            state, config = load_state(folder, name)
            net = build(config)
            net.load_state_dict(state)
            return net.eval()
        except CheckpointError as e:
            log(f"{e} -> retraining from the fixed seed")
    net, _recipe = train()
    return net.eval()


def load_toy2d(retrain: bool = False, device: str = "cpu", max_seconds: float | None = None) -> TorchScoreModel:
    """The 2D mixture's score model: shipped checkpoint, or retrained when ``retrain`` or the checkpoint is bad."""
    net = _load_or_train(TOY2D_DIR, "toy2d", lambda c: TimeMLP(**c) if c else TimeMLP(),
                         lambda: train_toy2d(device=device, max_seconds=max_seconds), retrain)
    return TorchScoreModel(net, ddpm_alphas_cumprod())


def load_mnist(retrain: bool = False, device: str = "cpu", max_seconds: float | None = None,
               design: str = MNIST_DEFAULT) -> TorchScoreModel:
    """The MNIST 9-vs-3 model of ``design`` ("coupled" or "appc"; null label 2): shipped checkpoint, or retrained."""
    if design not in MNIST_DIRS:
        raise ValueError(f"design {design!r} is unknown: use one of {tuple(MNIST_DIRS)}")
    net = _load_or_train(MNIST_DIRS[design], "mnist_9v3", lambda c: ClassUNet(c or None),
                         lambda: train_mnist(device=device, max_seconds=max_seconds, design=design), retrain)
    return TorchScoreModel(net, ddpm_alphas_cumprod(), null_label=MNIST_LABELS[None])


@torch.no_grad()
def generate(model: TorchScoreModel, seeds, shape, cond=None, guidance_scale: float = 1.0, num_steps: int = 50,
             batch_size: int = 256, callback=None, device: str | torch.device = "cpu") -> Tensor:
    """DDIM samples, one ``torch.Generator`` per seed (independent of batch size); returns (len(seeds), *shape)."""
    seeds = list(seeds)
    out = []
    for i in range(0, len(seeds), batch_size):
        xT = per_sample_noise(seeds[i:i + batch_size], shape).to(device)
        out.append(sample_ddim(model, xT, cond, None, num_steps=num_steps, guidance_scale=guidance_scale,
                               steps_offset=0, callback=callback).cpu())
    return torch.cat(out)


@torch.no_grad()
def trajectory(model: TorchScoreModel, seeds, shape, cond=None, guidance_scale: float = 1.0, num_steps: int = 50,
               device: str | torch.device = "cpu") -> tuple[list[int], Tensor, Tensor]:
    """(timesteps, states (num_steps, B, *shape) before each step, final samples) of one DDIM batch."""
    ts, xs = [], []

    def keep(d):
        ts.append(d["t"])
        xs.append(d["x"].cpu())

    final = generate(model, seeds, shape, cond, guidance_scale, num_steps, batch_size=len(list(seeds)),
                     callback=keep, device=device)
    return ts, torch.stack(xs), final


def nearest_distance(samples: Tensor, train: Tensor, exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """(ℓ2 distance to the nearest training sample, its index) for each sample (App. C's memorization check)."""
    d = torch.cdist(samples.flatten(1).double(), train.flatten(1).double())
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    return d.min(1)


# App. C's memorization check on MNIST 9-vs-3, per group: (label, guidance or None for the caller's, first seed).
# The seeds are those of notebook 02's figures: '3' from 0, '9' from 10⁶, unconditional from 2·10⁶.
MNIST_COPY_GROUPS = {"uncond_nine": (None, 1.0, 2 * 10**6), "cond_nine": ("9", None, 10**6),
                     "cond_three": ("3", None, 0)}


def copy_threshold(reference: Tensor, factor: float = 0.5) -> tuple[float, float]:
    """(threshold, median spacing): ``factor`` × the median leave-one-out nearest-neighbour ℓ2 spacing of
    ``reference``, App. C's 'copy' distance."""
    loo, _ = nearest_distance(reference, reference, exclude_self=True)
    return factor * float(loo.median()), float(loo.median())


def mnist_copy_threshold(data: dict, factor: float = 0.5) -> float:
    """App. C's copy threshold on MNIST 9-vs-3: from the spacing of the training threes."""
    return copy_threshold(data["threes"], factor)[0]


def mnist_copy_distances(model: TorchScoreModel, data: dict, group: str, seeds, guidance: float = 5.0,
                         num_steps: int = 50, device: str | torch.device = "cpu") -> Tensor:
    """ℓ2 distance of each seed's DDIM sample of ``group`` (:data:`MNIST_COPY_GROUPS`) to its nearest reference:
    the memorized nine, or the training threes for ``"cond_three"``."""
    if group not in MNIST_COPY_GROUPS:
        raise ValueError(f"group {group!r} is unknown: use one of {tuple(MNIST_COPY_GROUPS)}")
    label, w, _ = MNIST_COPY_GROUPS[group]
    x = generate(model, seeds, (1, 28, 28), MNIST_LABELS[label], guidance if w is None else w, num_steps,
                 device=device).float()
    ref = data["threes"] if group == "cond_three" else data["nine"][None]
    return nearest_distance(x, ref)[0].float()


def copy_rates(rows, threshold: float) -> dict:
    """``{group: (copies, n, (low, high))}`` of rows ``{"group", "distance"}``: copies lie below ``threshold``;
    Wilson 95 % intervals (:func:`sharp_utils.stats.rate_ci`)."""
    out = {}
    for g in dict.fromkeys(r["group"] for r in rows):
        d = [float(r["distance"]) for r in rows if r["group"] == g]
        copies = sum(x < threshold for x in d)
        out[g] = (copies, len(d), rate_ci(copies, len(d)))
    return out


def read_copy_results(path: Path, folder: Path) -> tuple[list[dict], dict]:
    """(rows, settings) written by ``scripts/check_mnist_memorization.py --out path``, checked to come from the
    checkpoint in ``folder`` (same SHA-256)."""
    import csv
    import json

    path, meta = Path(path), Path(path).with_suffix(".json")
    if not path.exists() or not meta.exists():
        raise FileNotFoundError(f"{path} or {meta.name} is missing: run scripts/check_mnist_memorization.py "
                                f"{folder} --out {path}")
    settings = json.loads(meta.read_text())
    if settings["sha256"] != manifest_sha256(folder, "mnist_9v3"):
        raise CheckpointError(f"{path} was computed from another checkpoint than {folder}: delete it and rerun "
                              "scripts/check_mnist_memorization.py")
    with open(path, newline="") as f:
        rows = [
            {"group": r["group"], "seed": int(r["seed"]), "distance": float(r["distance"])} for r in csv.DictReader(f)
        ]
    return rows, settings


def memorization_summary(
    samples: Tensor, train: Tensor, train_reference: Tensor | None = None, factor: float = 0.5
) -> dict:
    """Fraction of samples within ``factor`` × (median leave-one-out nearest-neighbour distance of the training set)
    of a training sample: 'copies'.  The reference spread comes from ``train_reference`` (default ``train``)."""
    thr, spacing = copy_threshold(train if train_reference is None else train_reference, factor)
    d, _ = nearest_distance(samples, train)
    return {"threshold": thr, "copied_fraction": float((d < thr).double().mean()),
            "median_nn_distance": float(d.median()), "median_train_nn_distance": spacing}


# ---------------------------------------------------------------- Figure 1 (notebook 01)


def learned_eigenvalues(model: TorchScoreModel, ts: list[int], xs: Tensor) -> Tensor:
    """Real parts of the eigenvalues of the learned 2×2 score Jacobian H_θ(x_t) at every state of a trajectory,
    ascending: (steps, samples, 2), float64 (Figure 1 of Jeon et al. 2025; a learned Jacobian is not symmetric)."""
    eig = torch.empty(len(ts), xs.shape[1], 2, dtype=torch.float64)
    for i, (t, xt) in enumerate(zip(ts, xs)):
        J = jacobian_batched(model.score_fn(t), xt, mode="reverse")
        eig[i] = torch.linalg.eigvals(J.double()).real.sort(dim=1).values
    return eig


def exact_lambda_min(model: TorchScoreModel, ts: list[int], xs: Tensor, **overrides) -> Tensor:
    """λ_min of the exact Hessian of the diffused training mixture p_t = Σ_k w_k N(√ᾱ_t μ_k, (ᾱ_t σ_k² + 1 − ᾱ_t) I)
    at the same states: (steps, samples) — the ideal model of Figure 1's data (``overrides`` change TOY_MIXTURE)."""
    p = {**TOY_MIXTURE, **overrides}
    w = torch.tensor([p["mem_fraction"], 1 - p["mem_fraction"]], dtype=torch.float64)
    mu = torch.tensor([p["mean_mem"], p["mean_gen"]], dtype=torch.float64)
    sd = torch.tensor([p["std_mem"], p["std_gen"]], dtype=torch.float64)
    out = torch.empty(len(ts), xs.shape[1], dtype=torch.float64)
    for i, (t, xt) in enumerate(zip(ts, xs)):
        a = model.alpha_bar(t)
        mix = GaussianMixture(w, a.sqrt() * mu, (a * sd ** 2 + 1 - a).sqrt())
        out[i] = torch.linalg.eigvalsh(mix.hessian(xt.double()))[:, 0]
    return out


def separation(lam_min: Tensor, mem: Tensor, i: int) -> float:
    """How many times more negative the memorized samples' median λ_min is at step index i (Figure 1's contrast)."""
    return float(lam_min[i, mem].median() / lam_min[i, ~mem].median())


def separated_from(lam_min: Tensor, mem: Tensor, ts: list[int], factor: float = 10.0) -> int | None:
    """The earliest timestep from which the separation stays ≥ ``factor`` until the end of sampling (None: never)."""
    ok = [separation(lam_min, mem, i) >= factor for i in range(len(ts))]
    bad = [i for i, good in enumerate(ok) if not good]
    if not bad:
        return ts[0]
    return ts[bad[-1] + 1] if bad[-1] + 1 < len(ts) else None


def plot_score_field(ax, model: TorchScoreModel, t: int, train: Tensor, is_mem: Tensor, extent: float = 3.0):
    """Figure 1(a): directions of the learned score on a grid at timestep t (colour: log₁₀ of its norm) over the
    training points of both modes."""
    import numpy as np

    g = torch.linspace(-extent, extent, 25)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        s = model.score(grid, t)
    mag = s.norm(dim=1)
    u = (s / mag[:, None]).numpy()
    q = ax.quiver(grid[:, 0], grid[:, 1], u[:, 0], u[:, 1], np.log10(mag.numpy()), cmap="viridis", scale=35,
                  width=0.004)
    ax.figure.colorbar(q, ax=ax, label=r"$\log_{10}\|s_\theta(x, t)\|$")
    ax.scatter(train[~is_mem, 0], train[~is_mem, 1], s=2, c="tab:blue", alpha=0.3, label="training (broad mode)")
    ax.scatter(train[is_mem, 0], train[is_mem, 1], s=6, c="tab:red", label="training (narrow mode)")
    ax.set_aspect("equal")


# ---------------------------------------------------------------- Figure 2 (notebook 02)


def mnist_spectra(model: TorchScoreModel, groups: dict, steps: dict, ts: list[int], store, seed: int = 0) -> dict:
    """{(group, step name): (samples, 784) real parts of the eigenvalues of the dense conditional score Jacobian}
    at each group's states (``groups``: name → (states (steps, B, 1, 28, 28), label); ``steps``: name → index).
    Spectra come from ``store`` (a :class:`sharp_utils.results.ArrayStore`; missing ones computed and kept with
    their input x_t for ``sharp verify``)."""
    import numpy as np

    def eig_of(J):
        return np.linalg.eigvals(J.double().numpy()).real

    eigs = {}
    for g, (states, label) in groups.items():
        for sname, i in steps.items():
            eigs[(g, sname)] = np.stack([store.get(
                f"{g}|{sname}|{n}|seed {seed}",
                lambda i=i, n=n: eig_of(dense_jacobian(model.score_fn(ts[i], label), states[i, n], chunk=112)),
                inputs={"x": states[i, n].numpy()}, meta={"t": int(ts[i]), "label": int(label)})
                for n in range(states.shape[1])])
    return eigs


def spectrum_frame(eigs: dict, labels: dict | None = None):
    """Long-form DataFrame (group, step, eigenvalue) of :func:`mnist_spectra`'s output, for seaborn; ``labels`` maps
    step names to what a figure prints."""
    import pandas as pd

    return pd.concat([pd.DataFrame({"group": g, "step": (labels or {}).get(s, s), "eigenvalue": e.ravel()})
                      for (g, s), e in eigs.items()], ignore_index=True)


def plot_generations(data: dict, gen9: Tensor, gen3: Tensor, nn3: Tensor, k: int = 8):
    """Figure 2's samples: the training nine and k generated nines; k generated threes above their nearest training
    threes."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, k + 1, figsize=(10, 4.8))

    def show(ax, img, title=None):
        ax.imshow(img.reshape(28, 28).clamp(-1, 1), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            ax.set_title(title, fontsize=8)

    show(axes[0, 0], data["nine"], "training 9")
    for j in range(k):
        show(axes[0, j + 1], gen9[j], "generated" if j == 0 else None)
        show(axes[2, j + 1], gen3[j], "generated" if j == 0 else None)
        show(axes[3, j + 1], data["threes"][nn3[j]], "nearest train" if j == 0 else None)
    for ax in (axes[1, 0], axes[2, 0], axes[3, 0], *axes[1, 1:]):
        ax.axis("off")
    axes[1, 1].text(0, 0.5, "memorized class '9' (above) collapses onto the training nine; general class '3' "
                    "(below) varies", fontsize=8, transform=axes[1, 1].transAxes)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)  # tight_layout cannot fit the caption row
    return fig


def ritz_means(model: TorchScoreModel, states: Tensor, label: int, t: int, m: int, k: int = 10, seed: int = 0):
    """Per state: the mean of the k Ritz values of largest magnitude after m Arnoldi iterations (Algorithm 1) on the
    conditional score Jacobian at timestep t."""
    import numpy as np

    out = []
    for x in states:
        mv, _, dim = jacobian_operator(model.score_fn(t, label), x)
        out.append(top_eigenvalues(mv, dim, k, num_iter=m, generator=torch.Generator().manual_seed(seed)).mean().item())
    return np.array(out)


def eigensolver_errors(model: TorchScoreModel, x: Tensor, t: int, label: int, krylov, k: int = 10, seed: int = 0,
                       arpack: bool = True) -> dict:
    """Algorithm 1's accuracy at one state: max relative error of the k eigenvalues of largest magnitude by Arnoldi
    and by Lanczos (against those of the symmetric part) at each Krylov dimension in ``krylov``, and ARPACK's error
    and product count when run to convergence; also ‖J − Jᵀ‖/‖J‖."""
    import numpy as np

    f = model.score_fn(t, label)
    J = dense_jacobian(f, x, chunk=112).double().numpy()
    ev = np.linalg.eigvals(J)
    exact = np.sort(ev[np.argsort(-np.abs(ev))[:k]].real)
    sym = np.linalg.eigvalsh((J + J.T) / 2)
    exact_sym = np.sort(sym[np.argsort(-np.abs(sym))[:k]])
    matvec0, rmatvec, dim = jacobian_operator(f, x)
    count = [0]

    def matvec(v):
        count[0] += 1
        return matvec0(v)

    errors = {m: [] for m in ("arnoldi", "lanczos")}
    for m_iter in krylov:
        for method in errors:
            got = top_eigenvalues(matvec, dim, k, method=method, num_iter=m_iter, rmatvec=rmatvec,
                                  generator=torch.Generator().manual_seed(seed)).numpy()
            ref = exact_sym if method == "lanczos" else exact
            errors[method].append(np.abs(got - ref).max() / np.abs(ref).max())
    out = dict(errors=errors, arpack_error=float("nan"), arpack_products=0,
               asymmetry=np.linalg.norm(J - J.T) / np.linalg.norm(J))
    if arpack:  # ARPACK restarts until converged: one run, with its number of products
        count[0] = 0
        got = top_eigenvalues(matvec, dim, k, method="arpack", num_iter=2 * k + 1,
                              generator=torch.Generator().manual_seed(seed))
        out.update(arpack_error=np.abs(got.numpy() - exact).max() / np.abs(exact).max(), arpack_products=count[0])
    return out
