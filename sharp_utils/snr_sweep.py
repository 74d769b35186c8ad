"""Notebook 08's steps: the first step's signal-to-noise swept on MiniSD v2's exact density.

At the first sampling step the exact density's Hessian is σ²H = −I + (ᾱ_T/σ²) Cov_π[z] (π: the posterior over
training latents). Scaling every latent z → k z with the schedule fixed multiplies the data covariance by k², so
ᾱ_T k² λ_max(Cov) sweeps the regime from "the prior wins at T" (σ²H ≈ −I everywhere) to "the likelihood wins"
(the posterior picks training points at T). At each k: Figure 3's first-step spectra by category, Figure 5's
conditional − unconditional gap, Table 1's step-1 detection (Wen vs ours) and exact guided sampling's copy rates.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from .detection import DetectOptions, detect
from .evidence import auc_diff, rate
from .exact import ExactDensityModel
from .exact_pipeline import ExactPipeline, exact_sample
from .minisd.figure3 import COLORS
from .prompts import MEMORIZED
from .results import DETECT_COLUMNS, ResultWriter
from .sampling import ddim_timesteps, per_sample_noise, prompt_seed
from .stats import auc

# The sweep (fixed before any result was computed): k such that ᾱ_T k² λ_max runs from about 0.1 to 30 on MiniSD v2.
KS = (0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 13.5)
K_TEST = 4.0  # the hypotheses' test point: the sweep point nearest the middle of SD's estimated band (see sd_position)


def pool_statistics(exact: ExactDensityModel) -> dict:
    """λ_max and trace of the unconditional pool's (weighted) covariance, and the pool's mean squared norm."""
    idx, logw = exact.conditions[None]
    z, w = exact.data[idx], logw.exp()
    m = w @ z
    zc = (z - m) * w.sqrt()[:, None]
    ev = torch.linalg.eigvalsh(zc.T @ zc)
    return {"lambda_max": float(ev[-1]), "trace": float(ev.sum()), "d": int(z.shape[1]),
            "mean_sq_norm": float(w @ z.pow(2).sum(1))}


def scaled(exact: ExactDensityModel, k: float) -> ExactDensityModel:
    """The exact density of the training latents k·z (same conditions, weights and schedule)."""
    conds = {key: (idx, logw.exp()) for key, (idx, logw) in exact.conditions.items()}
    return ExactDensityModel(exact.data.reshape(-1, *exact.shape) * k, conds, exact.alphas_cumprod)


def shared_x_T(seed: int, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Notebook 03's shared x_T of Figure 3 (seed ``prompt_seed(seed, "figure 3", 0)``), float64, (1, *latent_shape)."""
    return per_sample_noise([prompt_seed(seed, "figure 3", 0)], latent_shape).double()


def first_timestep(num_steps: int = 50, steps_offset: int = 1, num_train_timesteps: int = 1000) -> int:
    return ddim_timesteps(num_train_timesteps, num_steps, steps_offset)[0]


def sd_position(alpha_bar_T: float, d: int = 4 * 64 * 64, per_dim_var: float = 1.0, rho=(0.05, 0.3)) -> dict:
    """Where Stable Diffusion sits on the sweep's axes, under stated assumptions: latents of d = 4 × 64 × 64 dims whose
    per-dimension variance is ``per_dim_var`` (the VAE scaling factor 0.18215 was chosen to make it about 1), and
    within each of the 4 channels an average pairwise correlation ρ between the 4,096 positions (low-frequency image
    content), so that λ_max ≈ per_dim_var (1 + 4095 ρ) (an equicorrelated block) and tr Cov = d · per_dim_var; the
    same schedule as MiniSD (SD's scaled-linear β, the first of 50 DDIM steps)."""
    m = d // 4
    lam = [per_dim_var * (1 + (m - 1) * r) for r in rho]
    return {"lambda_max": tuple(lam), "trace": d * per_dim_var,
            "snr_lambda": tuple(alpha_bar_T * v for v in lam), "snr_trace": alpha_bar_T * d * per_dim_var}


def spectra_rows(exact: ExactDensityModel, records: list[dict], x: torch.Tensor, t: int, k: float) -> list[dict]:
    """Per record at one shared x_T: σ²-scaled eigenvalues of the conditional exact Hessian → the count of
    non-negative ones, their mean, the largest, and Figure 5's gap Σ min(0, λᵢ(H_c) − λᵢ(H_u)) (both ascending)."""
    s2 = float(1 - exact.alpha_bar(t))
    unc = torch.linalg.eigvalsh(exact.exact_hessian(x, t, None))[0].numpy() * s2
    rows = []
    for r in records:
        ev = torch.linalg.eigvalsh(exact.exact_hessian(x, t, r["caption"]))[0].numpy() * s2
        rows.append({"k": k, "caption": r["caption"], "category": r["category"],
                     "nonneg": int((ev >= 0).sum()), "mean_eig": float(ev.mean()), "max_eig": float(ev.max()),
                     "gap": float(np.clip(ev - unc, None, 0).sum()), "uncond_max_eig": float(unc.max())})
    return rows


def detection_rows(exact: ExactDensityModel, prompts: list[str], n: int, seed: int, num_steps: int,
                   latent_shape: tuple[int, ...], steps_offset: int = 1) -> list[dict]:
    """Table 1's step-1 scores (Wen's ‖ε^Δ‖, ours ‖H^Δ s^Δ‖² by FD) of the exact density, the networks' x_T."""
    pipe = ExactPipeline(exact, latent_shape=latent_shape, steps_offset=steps_offset)
    return list(detect(pipe, prompts, ("wen", "ours-fd"), (1,), (n,), seed, batch_size=256,
                       opts=DetectOptions(num_inference_steps=num_steps), log=lambda s: None))


def nearest_ids(exact: ExactDensityModel, samples: torch.Tensor) -> np.ndarray:
    """Index (into the exact density's training latents, scaled as the density is) of the one nearest to each
    sample."""
    x = samples.reshape(len(samples), -1).to(exact.data.dtype)
    return (exact.sqnorm[None] - 2 * x @ exact.data.T).argmin(1).numpy()  # ‖x‖² is the same for every candidate


def copy_rows(exact: ExactDensityModel, em_records: list[dict], n_em: int, n_uncond: int, seed: int, num_steps: int,
              latent_shape: tuple[int, ...], em_ids: list[int], k: float) -> list[dict]:
    """Exact guided DDIM (guidance 7.5) from the networks' x_T: each EM generation lands on a training latent — a
    copy when it is the record's memorized image; unconditional ones ("", guidance 1) copy when they land on any EM
    image. Captioned latents come first in the data (ids = training image ids), then the pool."""
    em_set = set(em_ids)
    caps = [r["caption"] for r in em_records]
    x0 = exact_sample(exact, caps, latent_shape, n_em, seed, num_steps, 7.5)
    near = nearest_ids(exact, x0)
    rows = [{"k": k, "group": "em", "caption": c, "generation": g, "nearest": int(near[i * n_em + g]),
             "copy": int(near[i * n_em + g] in em_records[i]["train_ids"])}
            for i, c in enumerate(caps) for g in range(n_em)]
    u = exact_sample(exact, [""], latent_shape, n_uncond, seed, num_steps, 1.0)
    near = nearest_ids(exact, u)
    rows += [{"k": k, "group": "uncond", "caption": "", "generation": g, "nearest": int(near[g]),
              "copy": int(near[g] in em_set)} for g in range(n_uncond)]
    return rows


COLUMNS = {
    "spectra": ("k", "caption", "category", "nonneg", "mean_eig", "max_eig", "gap", "uncond_max_eig"),
    "detect": ("k", *DETECT_COLUMNS),
    "copies": ("k", "group", "caption", "generation", "nearest", "copy"),
}


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(exact: ExactDensityModel, records: list[dict], em_records: list[dict], em_ids: list[int], out: str | Path,
        ks=KS, n_det: int = 4, n_em: int = 2, n_uncond: int = 300, seed: int = 0, num_steps: int = 50,
        latent_shape: tuple[int, ...] = (4, 8, 8), log=print) -> dict[str, list[dict]]:
    """Every k's rows in three resumable tables under ``out`` (spectra.csv, detect.csv, copies.csv); a k whose rows
    are all there is read back, not recomputed."""
    out = Path(out)
    t = first_timestep(num_steps)
    x = shared_x_T(seed, latent_shape)
    prompts = [r["caption"] for r in records]
    tables = {"spectra": (("k", "caption"), lambda ex, k: spectra_rows(ex, records, x, t, k), len(records)),
              "detect": (("k", "prompt_index", "method"),
                         lambda ex, k: [{**r, "k": k, "model": f"exact:minisd, z x {k:g}",
                                         "num_inference_steps": num_steps}
                                        for r in detection_rows(ex, prompts, n_det, seed, num_steps, latent_shape)],
                         2 * len(records)),
              "copies": (("k", "group", "caption", "generation"),
                         lambda ex, k: copy_rows(ex, em_records, n_em, n_uncond, seed, num_steps, latent_shape,
                                                 em_ids, k), len(em_records) * n_em + n_uncond)}
    committed = {name: _read(out / f"{name}.csv") for name in tables}  # a k's rows are written only by that k
    for k in ks:
        ex = None
        for name, (keys, compute, want) in tables.items():
            path = out / f"{name}.csv"
            if len(_at(committed[name], k)) >= want:
                continue
            ex = ex or scaled(exact, k)
            log(f"k = {k:g}: computing {name}")
            with ResultWriter(path, COLUMNS[name], lambda r, keys=keys: tuple(str(r[c]) for c in keys)) as w:
                for r in compute(ex, k):
                    if not w.is_done(r):
                        w.write(r)
    return {name: [r for r in _read(out / f"{name}.csv") if any(math.isclose(float(r["k"]), k) for k in ks)]
            for name in tables}


# ---------------------------------------------------------------- reading the sweep


def _at(rows: list[dict], k: float) -> list[dict]:
    return [r for r in rows if math.isclose(float(r["k"]), k)]


def per_category(rows: list[dict], k: float, column: str, category: str) -> np.ndarray:
    """One value of ``column`` per prompt of ``category`` at scale k (the spectra table)."""
    return np.array([float(r[column]) for r in _at(rows, k) if r["category"] == category])


def detection_scores(rows: list[dict], records: list[dict], k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is memorized, Wen@1, ours@1) per prompt at scale k, in prompt order."""
    sc = {m: {int(r["prompt_index"]): float(r["score"]) for r in _at(rows, k) if r["method"] == m}
          for m in ("wen", "ours-fd")}
    idx = sorted(set(sc["wen"]) & set(sc["ours-fd"]))
    y = np.array([records[i]["category"] in MEMORIZED for i in idx])
    return y, np.array([sc["wen"][i] for i in idx]), np.array([sc["ours-fd"][i] for i in idx])


def copies(rows: list[dict], k: float, group: str) -> tuple[int, int]:
    """(copies, samples) of a group ('em' or 'uncond') at scale k."""
    got = [int(r["copy"]) for r in _at(rows, k) if r["group"] == group]
    return sum(got), len(got)


def summary(tables: dict[str, list[dict]], records: list[dict], snr: dict[float, float],
            categories=("em", "pm", "nmem")):
    """One row per k (a DataFrame): the x axis, Figure 3's and 5's per-category medians, Table 1's AUCs and their
    paired difference with its interval, the copy rates with their Wilson intervals."""
    import pandas as pd

    out = []
    for k in sorted(snr):
        row = {"k": k, "ᾱk²λmax": snr[k]}
        for col, name in (("nonneg", "non-neg"), ("mean_eig", "mean eig"), ("max_eig", "max eig"), ("gap", "gap")):
            for c in categories:
                row[f"{name} {c}"] = float(np.median(per_category(tables["spectra"], k, col, c)))
        row["max eig uncond"] = float(_at(tables["spectra"], k)[0]["uncond_max_eig"])
        y, wen, ours = detection_scores(tables["detect"], records, k)
        row["AUC Wen@1"], row["AUC ours@1"] = auc(wen[y], wen[~y]), auc(ours[y], ours[~y])
        d = auc_diff(y, ours, wen)
        row["ours − Wen"], row["95 % CI"] = d.value, d.ci
        for g in ("em", "uncond"):
            ev = rate(*copies(tables["copies"], k, g))
            row[f"{g} copy"], row[f"{g} copy CI"] = ev.value, ev.ci
        out.append(row)
    return pd.DataFrame(out)


def plot(axes, table, marks: dict[str, float], sd_band: tuple[float, float], memorized=("em", "pm")) -> None:
    """Five panels against ᾱ_T k² λ_max: Figure 3's non-negative count per category, Figure 5's gap of memorized
    minus non-memorized prompts, Table 1's AUCs, their paired difference with its interval, and the copy rates;
    MiniSD (k = 1), the test point and SD's estimated band marked."""
    x = table["ᾱk²λmax"].to_numpy()
    a, b, c, d, e = axes
    for cat in (*memorized, "nmem"):
        a.plot(x, table[f"non-neg {cat}"], "o-", color=COLORS[cat], label=cat, alpha=0.8)
    for cat in memorized:
        b.plot(x, table[f"gap {cat}"] - table["gap nmem"], "o-", color=COLORS[cat], label=f"{cat} − nmem")
    a.set_ylabel("median count of eigenvalues ≥ 0\nof σ²H(x_T, c)")
    b.set_ylabel("median gap, memorized − nmem\n(< 0: memorized further below)")
    b.set_yscale("symlog", linthresh=0.1)
    b.axhline(0, color="k", lw=0.5)
    c.plot(x, table["AUC Wen@1"], "s-", color="tab:gray", label="Wen@1")
    c.plot(x, table["AUC ours@1"], "o-", color="tab:purple", label="ours@1")
    c.axhline(0.5, color="k", lw=0.5)
    c.set_ylabel("AUC at step 1 (memorized vs not)")
    diff = table["ours − Wen"].to_numpy()
    ci = np.array([list(v) for v in table["95 % CI"]])
    d.errorbar(x, diff, yerr=[diff - ci[:, 0], ci[:, 1] - diff], fmt="o-", color="tab:purple", capsize=2,
               label="ours@1 − Wen@1 (paired 95 % CI)")
    d.axhline(0, color="k", lw=0.5)
    d.set_ylabel("AUC difference")
    for g, col, lab in (("em", "tab:red", "EM prompts copy their image"),
                        ("uncond", "tab:blue", "unconditional samples copy an EM image")):
        ci = np.array([list(v) for v in table[f"{g} copy CI"]])
        r = table[f"{g} copy"].to_numpy()
        e.errorbar(x, r, yerr=[r - ci[:, 0], ci[:, 1] - r], fmt="o-", color=col, capsize=2, label=lab)
    e.set_ylabel("copy rate (exact guided DDIM)")
    for i, ax in enumerate(axes):
        ax.set_xscale("log")
        ax.axvspan(*sd_band, color="tab:orange", alpha=0.12, label="SD (estimate)" if i == 0 else None)
        for name, v in marks.items():
            ax.axvline(v, color="k", ls=":" if name.startswith("MiniSD") else "--", lw=0.8)
        ax.set_xlabel("ᾱ_T k² λ_max(Cov)")
        ax.legend(fontsize=7)
