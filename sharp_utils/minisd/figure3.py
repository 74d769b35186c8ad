"""Figures 3 and 5 (§4.2–4.3 of Jeon et al. 2025) and MiniSD's regime as notebook 03 runs them: the regime's rates
and figure, spectra on guided paths (kept in a results store), the seaborn eigenvalue distributions, Algorithm 1's
check and the exact density's spectra — each a step a notebook cell calls."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from .. import path_spectra
from ..claims import Ev
from ..evidence import median_diff, rate
from ..exact_pipeline import exact_sample
from ..pipeline import PipelineScoreModel
from . import experiments, training_set

COLORS = {"em": "tab:red", "pm": "tab:orange", "mem": "tab:red", "nmem": "tab:blue"}


# ---------------------------------------------------------------- the regime


def regime_lines(reg: dict, copy_threshold: float, align_threshold: float, em_n: int, model: str) -> list[str]:
    """The regime's rates against MiniSD's bars (``experiments.REGIME_BARS``), one printed line each."""
    bars, share = experiments.REGIME_BARS, experiments.memorized_shares(model)
    per_prompt = np.bincount(reg["em_per_prompt"], minlength=em_n + 1).tolist()
    nm_t, pm_t = reg["nmem_template_best"], reg["pm_template"]
    return [
        f"copy threshold {copy_threshold:.3f}, alignment threshold {align_threshold:.3f}",
        f"memorized (EM) share of the training rows as drawn: conditional {share['conditional']:.1%}, "
        f"unconditional {share['unconditional']:.2%}",
        f"unconditional generations copying an EM image: {reg['uncond_copy']:.1%} of {reg['uncond_n']} "
        f"(bar <= {bars['uncond_copy_max']:.0%})",
        f"EM generations copying their memorized image: {reg['em_copy']:.1%} of {reg['em_n']} "
        f"(bar >= {bars['em_copy_min']:.0%}); prompts copying in 0/1/.../{em_n} of {em_n} generations: {per_prompt}",
        f"PM frame template score: median {np.median(pm_t):.3f} (non-memorized images, best frame: "
        f"{np.median(nm_t):.3f}); PM content copies {reg['pm_content_copy']:.0%}",
        f"non-memorized generations: copies of a training image {reg['nmem_copy']:.1%}, aligned "
        f"{reg['nmem_aligned']:.1%} of {reg['nmem_n']} (bars <= {bars['nmem_copy_max']:.0%}, "
        f">= {bars['nmem_aligned_min']:.0%})",
    ]


def _rate(frac: float, n: int) -> Ev:
    """A rate stored as a fraction of n, back as k of n with its Wilson interval."""
    return rate(round(frac * n), n)


def regime_evidence(reg: dict) -> dict[str, list[Ev]]:
    """Evidence of the four regime claims (minisd-uncond, -em, -pm, -nmem): rates with Wilson intervals. PM's frame
    share counts PM frame scores above the 99th percentile of non-memorized images' best-frame scores."""
    pm_t, nm_t = reg["pm_template"], reg["nmem_template_best"]
    return {"minisd-uncond": [_rate(reg["uncond_copy"], reg["uncond_n"])],
            "minisd-em": [_rate(reg["em_copy"], reg["em_n"])],
            "minisd-pm": [_rate(float(np.mean(pm_t > np.quantile(nm_t, 0.99))), len(pm_t)),
                          _rate(reg["pm_content_copy"], len(pm_t))],
            "minisd-nmem": [_rate(reg["nmem_copy"], reg["nmem_n"]), _rate(reg["nmem_aligned"], reg["nmem_n"])]}


def plot_regime(reg: dict, em_records: list[dict], em_n: int, copy_threshold: float):
    """EM prompts' memorized training images above their first generations, 12 non-memorized generations, and the
    histogram of EM copy scores against the copy threshold."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 3.4))
    gs = fig.add_gridspec(2, 3)
    train = training_set.training_images()
    k = min(12, len(em_records))
    top = torch.cat([torch.from_numpy(train[r["train_ids"][0]]).float() / 255 for r in em_records[:k]], 2)
    bottom = torch.cat([reg["em_images"][j * em_n] for j in range(k)], 2)
    strips = ((torch.cat([top, bottom], 1), "EM: memorized training image (top) / first generation (bottom)"),
              (torch.cat(list(reg["nmem_images"][:12]), 2), "non-memorized: first generation of 12 prompts"))
    for row, (strip, title) in enumerate(strips):
        ax = fig.add_subplot(gs[row, :2])
        ax.imshow(strip.permute(1, 2, 0).numpy())
        ax.set_axis_off()
        ax.set_title(title, fontsize=8)
    ax = fig.add_subplot(gs[:, 2])
    ax.hist(reg["em_scores"], bins=30, color="tab:red", alpha=0.8)
    ax.axvline(copy_threshold, color="k", lw=0.8, ls="--", label="copy threshold")
    ax.set_xlabel("copy score to the memorized image")
    ax.set_ylabel("EM generations")
    ax.legend(fontsize=7)
    ax.set_title(f"EM copy scores ({reg['em_copy']:.0%} above)", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- spectra on guided paths


class Spectra:
    """Eigenvalues of H_θ(x_t, c) (or of the unconditional H_θ(x_t)) at x_t on the guided DDIM path of (caption, x_T
    from a seed): all of them from the dense Jacobian (``dense``), else the top k by Arnoldi. Kept in ``store``
    (an :class:`sharp_utils.results.ArrayStore`, with the input x_t for ``sharp verify``; None: nothing kept)."""

    def __init__(self, pipe: PipelineScoreModel, store, num_steps: int, dense: bool, k: int):
        self.pipe, self.store, self.num_steps, self.dense, self.k = pipe, store, num_steps, dense, k
        self._paths: dict = {}

    def key(self, caption: str, seed: int, step: int, conditional: bool = True) -> str:
        text = f"{caption}|{seed}|{step}|{conditional}|{self.num_steps}|{'dense' if self.dense else self.k}"
        return hashlib.sha1(text.encode()).hexdigest()

    def point(self, caption: str, seed: int, step: int):
        """(t, x_t) at step index ``step`` (0 = step 1): the stored point, else the path (all steps kept)."""
        key, s = self.key(caption, seed, step), self.store
        if s is not None and key in s.data and s.input(key, "x") is not None:
            return s.meta[key]["t"], torch.from_numpy(s.input(key, "x"))[None]
        if (caption, seed) not in self._paths:
            self._paths[(caption, seed)] = path_spectra.path_points(
                self.pipe, self.pipe.initial_noise([seed]), self.pipe.encode([caption]), list(range(self.num_steps)),
                self.num_steps)
        return self._paths[(caption, seed)][step]

    def __call__(self, caption: str, seed: int, step: int, conditional: bool = True) -> np.ndarray:
        def compute():
            t, x = self.point(caption, seed, step)
            cond = self.pipe.encode([caption]) if conditional else None
            return path_spectra.spectrum(self.pipe, x[0], t, cond, k=self.k, dense_max=10**6 if self.dense else 0)
        if self.store is None:
            return compute()
        t, x = self.point(caption, seed, step)
        return self.store.get(self.key(caption, seed, step, conditional), compute,
                              inputs={"x": x[0].float().numpy()},
                              meta=dict(caption=caption, t=int(t), conditional=conditional, dense=self.dense,
                                        k=self.k))


def spectra_frame(points: list[dict]):
    """Long-form DataFrame (category, step, eigenvalue) of spectrum records {category, step, eig}, for seaborn."""
    import pandas as pd

    return pd.concat([pd.DataFrame({"category": p["category"], "step": p["step"], "eigenvalue": np.real(p["eig"])})
                      for p in points], ignore_index=True)


def plot_spectra(ax, points: list[dict], step: int, categories, title: str, legend: bool = True) -> None:
    """Figure 3's panel: density of the eigenvalues of H_θ(x_t, c) per category at one step (seaborn, log y)."""
    import seaborn as sns

    df = spectra_frame([p for p in points if p["step"] == step])
    sns.histplot(df, x="eigenvalue", hue="category", hue_order=[c for c in categories if c in set(df["category"])],
                 bins=60, stat="density", common_norm=False, element="step", fill=False,
                 palette=COLORS, ax=ax, linewidth=1.4, legend=legend)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("eigenvalue of $H_\\theta(x_t, c)$")


def arnoldi_errors(spectra: Spectra, caption: str, seed: int, steps, k: int, rng_seed: int = 0):
    """Algorithm 1 against the dense spectrum at each step index: max relative error of the k Ritz values of
    largest magnitude (Krylov dimension 2k+1), over all k and over the 3 most negative."""
    pipe = spectra.pipe
    err_all, err_top = [], []
    for step in steps:
        t, x = spectra.point(caption, seed, step)
        cond = pipe.encode([caption])
        ritz = path_spectra.arnoldi_eigenvalues(pipe, x[0], t, cond, k=k, num_iter=2 * k + 1, seed=rng_seed)
        J = path_spectra.score_jacobian(pipe, x[0], t, cond)
        full = np.linalg.eigvals(J.double().numpy())  # complex, as Arnoldi ranks
        exact = np.sort(full[np.argsort(-np.abs(full))[:k]].real)  # the k of largest modulus, ascending
        scale = np.abs(exact).max()
        err_all.append(np.abs(ritz - exact).max() / scale)
        err_top.append(np.abs(ritz[:3] - exact[:3]).max() / scale)
    return err_all, err_top


def top10_mean(eig: np.ndarray, k: int = 10) -> float:
    """Mean of the k most negative eigenvalues (more negative = sharper)."""
    return float(np.sort(np.real(eig))[:k].mean())


def nonnegative(eig: np.ndarray) -> float:
    """Count of non-negative eigenvalues (Figure 3's caption: memorized prompts have fewer)."""
    return float((np.real(eig) >= 0).sum())


def per_prompt(points: list[dict], stat, step: int, categories) -> np.ndarray:
    """One value of ``stat`` per prompt of ``categories`` at one step."""
    return np.array([stat(p["eig"]) for p in points if p["step"] == step and p["category"] in categories])


def versus(points: list[dict], stat, step: int, a, b, at: str | None = None) -> Ev:
    """median(a) − median(b) of ``stat`` over prompts, with its bootstrap interval (labelled with a's categories)."""
    return median_diff(per_prompt(points, stat, step, a), per_prompt(points, stat, step, b),
                       "+".join(a).upper() if at is None else at)


def gap(diffs: list[dict], step: int, categories) -> np.ndarray:
    """Figure 5's statistic per prompt: the sum of the negative differences λᵢ(H(x_t, c)) − λᵢ(H(x_t))."""
    return np.array([np.real(p["d"]).clip(max=0).sum() for p in diffs
                     if p["step"] == step and p["category"] in categories])


# ---------------------------------------------------------------- the exact density


def exact_spectrum(exact, spectra: Spectra, caption: str, seed: int, step: int, conditional: bool = True):
    """All eigenvalues of the exact density's Hessian (``exact``: an ExactDensityModel) at the same x_t as
    ``spectra``, of the caption's conditional density or (``conditional=False``) of the unconditional pool."""
    t, x = spectra.point(caption, seed, step)
    return torch.linalg.eigvalsh(exact.exact_hessian(x, t, caption if conditional else None))[0].numpy()


def mean_eigenvalues(spec_fn, records: list[dict], seed: int, step: int, sigma2: float, categories) -> dict:
    """{category: per-prompt mean eigenvalue × σ_t²} (−1 = the sharpest possible at t): every exact Hessian has
    −1/σ_t² with high multiplicity, so its 10 most negative eigenvalues tie and the mean is what separates."""
    return {c: np.array([float(np.mean(spec_fn(r["caption"], seed, step)).real) * sigma2
                         for r in records if r["category"] == c]) for c in categories}


def exact_generation_rates(exact, pipe: PipelineScoreModel, copy_scorer, records: list[dict], n: int, n_uncond: int,
                           seed: int, num_steps: int, categories) -> tuple[dict, float]:
    """The exact density's own generations (n per record, guidance 7.5) scored like the learned model's: per category
    the share copying one of the record's training images; and the share of ``n_uncond`` unconditional samples
    (guidance 1) copying an EM image."""
    E = copy_scorer.embed(torch.from_numpy(training_set.training_images()).float() / 255.0)
    tc = copy_scorer.threshold
    lat = exact_sample(exact, [r["caption"] for r in records], pipe.latent_shape, n, seed, num_steps)
    G = copy_scorer.embed(pipe.decode(lat.float()))
    own = np.array([float((G[j * n + g] @ E[r["train_ids"]].T).max()) for j, r in enumerate(records)
                    for g in range(n)])
    cat = np.array([r["category"] for r in records for _ in range(n)])
    lat = exact_sample(exact, [""], pipe.latent_shape, n_uncond, seed, num_steps, guidance_scale=1.0)
    unc = float(experiments.em_copies(copy_scorer, pipe.decode(lat.float())).float().mean())
    return {c: float((own[cat == c] > tc).mean()) for c in categories}, unc


def plot_gaps(ax, diffs: list[dict], steps, names: dict, categories) -> None:
    """Figure 5's statistic as the claims use it: per prompt the sum of the negative eigenvalue differences
    (conditional − unconditional), by category at each step (seaborn box + points; symlog y)."""
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([{"step": names[p["step"]], "category": p["category"],
                        "gap": float(np.real(p["d"]).clip(max=0).sum())} for p in diffs if p["step"] in steps])
    order = [names[s] for s in steps]
    hue_order = [c for c in categories if c in set(df["category"])]
    sns.boxplot(df, x="step", y="gap", hue="category", order=order, hue_order=hue_order, palette=COLORS, ax=ax,
                fliersize=0, linewidth=0.8, boxprops=dict(alpha=0.4))
    sns.stripplot(df, x="step", y="gap", hue="category", order=order, hue_order=hue_order, palette=COLORS, ax=ax,
                  dodge=True, size=3, legend=False)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(top=0.5)  # every sum is ≤ 0
    sns.move_legend(ax, "lower left", fontsize=8, title=None)
    ax.set_xlabel("")
    ax.set_ylabel("sum of negative differences\n(more negative = sharper conditional)")
