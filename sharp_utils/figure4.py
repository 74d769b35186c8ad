"""Lemmas 4.1–4.3, §4.4, App. A.4 and Figure 4 of Jeon et al. 2025 as notebook 04 runs them: Monte-Carlo checks on
random Gaussians against the closed forms, and the (trace, proxy) points of Figure 4 on MNIST and MiniSD — each a
step a notebook cell calls. Random draws come from the caller's generator, in call order."""
from __future__ import annotations

import numpy as np
import torch

from . import gaussian, path_spectra
from .hessian import dense_jacobian, hvp_jvp
from .plotting import identity_line
from .sampling import ddim_timesteps, prompt_seed
from .toy import MNIST_LABELS
from .toy_figures import trajectory
from .trace import exact_sharpness, trace_estimate

TRACE_KEYS = ("trH", "s2", "trH3", "hs2", "hut", "hut_se")  # a point's stored values, in order


def _mc(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return v.mean().item(), (v.std() / v.numel() ** 0.5).item()


def lemma41_43_rows(n_cov: int, dims, n_samples: int, probes: int, gen: torch.Generator) -> list[dict]:
    """Per random Gaussian (dimension cycling through ``dims``, condition number log-uniform in [1, 10³]): the
    Monte-Carlo means of ‖s‖² and ‖Hs‖² (H s by forward mode) with their standard errors beside −tr H and −tr H³
    (Lemmas 4.1, 4.3), and Hutchinson's estimate of −tr H from H v products."""
    rows = []
    for i in range(n_cov):
        d = dims[i % len(dims)]
        cond = float(10 ** (3 * torch.rand(1, generator=gen)))
        mu = torch.randn(d, dtype=torch.float64, generator=gen)
        S = gaussian.random_covariance(d, cond=cond, generator=gen)

        def f(z, mu=mu, S=S):
            return gaussian.gaussian_score(z, mu, S)
        x = gaussian.sample_gaussian(n_samples, mu, S, gen)
        s, Hs = hvp_jvp(f, x, f(x))
        m1, se1 = _mc(s.pow(2).sum(1))
        m3, se3 = _mc(Hs.pow(2).sum(1))
        hut, hut_se = trace_estimate(lambda P: hvp_jvp(f, x[:1].expand(P.shape[0], d), P)[1], (d,), probes,
                                     generator=gen, dtype=torch.float64)
        rows.append(dict(d=d, cond=cond, trH=gaussian.lemma41_expected_sq_score(S).item(), s2=m1, s2_se=se1,
                         trH3=gaussian.lemma43_expected_sq_hs(S).item(), hs2=m3, hs2_se=se3, hut=-hut, hut_se=hut_se))
    return rows


def _pair(d: int, commuting: bool, gen: torch.Generator):
    if commuting:  # a shared eigenbasis and mean: the eigenvalue sums apply
        Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
        lam = 0.5 + 2 * torch.rand(d, dtype=torch.float64, generator=gen)  # eigenvalues of Σ⁻¹ = −H
        lam_c = lam * (1 + 4 * torch.rand(d, dtype=torch.float64, generator=gen) ** 2)  # conditioning sharpens
        mu = torch.randn(d, dtype=torch.float64, generator=gen)
        return mu, (Q / lam) @ Q.T, mu, (Q / lam_c) @ Q.T, lam, lam_c
    mu, mu_c = torch.randn(d, dtype=torch.float64, generator=gen), torch.randn(d, dtype=torch.float64, generator=gen)
    S, S_c = gaussian.random_covariance(d, 10.0, gen), 0.3 * gaussian.random_covariance(d, 10.0, gen)
    return mu, S, mu_c, S_c, None, None


def lemma42_rows(n_cov: int, dims, n_samples: int, gen: torch.Generator) -> list[dict]:
    """Per pair (Σ, Σ_c), alternately commuting with equal means and general: Monte-Carlo E‖s^Δ‖² (Wen, Lemma 4.2)
    and E‖H^Δ s^Δ‖² (§4.4) under x ~ p(x | c), their closed forms and, for commuting pairs, the eigenvalue sums."""
    rows = []
    for i in range(n_cov):
        d = dims[i % len(dims)]
        commuting = i % 2 == 0
        mu, S, mu_c, S_c, lam, lam_c = _pair(d, commuting, gen)

        def delta_fn(z, mu=mu, S=S, mu_c=mu_c, S_c=S_c):
            return gaussian.gaussian_score(z, mu_c, S_c) - gaussian.gaussian_score(z, mu, S)
        x = gaussian.sample_gaussian(n_samples, mu_c, S_c, gen)
        sd, hd_sd = hvp_jvp(delta_fn, x, delta_fn(x))
        w, w_se = _mc(sd.pow(2).sum(1))
        o, o_se = _mc(hd_sd.pow(2).sum(1))
        rows.append(dict(
            d=d, commuting=commuting, wen=w, wen_se=w_se, ours=o, ours_se=o_se,
            wen_closed=gaussian.lemma42_expected_sq_delta(mu, S, mu_c, S_c).item(),
            ours_closed=gaussian.section44_expected_sq_hdelta_sdelta(mu, S, mu_c, S_c).item(),
            wen_eig=gaussian.eigen_sum(lam, lam_c, 2).item() if commuting else np.nan,
            ours_eig=gaussian.eigen_sum(lam, lam_c, 4).item() if commuting else np.nan))
    return rows


def z_scores(rows: list[dict], value: str, closed: str, se: str) -> np.ndarray:
    """(Monte-Carlo mean − closed form) / standard error, per row."""
    return np.array([(r[value] - r[closed]) / r[se] for r in rows])


def fisher_rao_ratios(gen: torch.Generator, d: int = 8, eps_grid=np.logspace(-4, -1, 13)) -> dict:
    """App. A.4: E‖s^Δ‖² against the squared Fisher–Rao distance for Σ_c = Σ + ε E (E symmetric, unit spectral norm):
    the ratio at Σ = I, at a general Σ, and at the general Σ against the corrected tr(Σ⁻¹δΣΣ⁻²δΣ)."""
    E = torch.randn(d, d, dtype=torch.float64, generator=gen)
    E = (E + E.T) / 2
    E = E / torch.linalg.matrix_norm(E, 2)  # Σ + ε E stays SPD for ε ≤ 0.1
    S = gaussian.random_covariance(d, cond=20.0, generator=gen)
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    out = {"eps": np.asarray(eps_grid), "I": [], "S": [], "S_fixed": []}
    for eps in eps_grid:
        dS = float(eps) * E
        out["I"].append(
            (gaussian.lemma42_expected_sq_delta(zero, eye, zero, eye + dS)
             / gaussian.fisher_rao_sq(eye, eye + dS)).item()
        )
        exact = gaussian.lemma42_expected_sq_delta(zero, S, zero, S + dS)
        out["S"].append((exact / gaussian.fisher_rao_sq(S, S + dS)).item())
        out["S_fixed"].append((exact / gaussian.score_delta_second_order(S, dS)).item())
    return out


# ---------------------------------------------------------------- Figure 4 on networks


def mnist_points(model, per_class: int, n_t: int, num_steps: int, store, seed: int = 0) -> list[dict]:
    """Figure 4 on MNIST: at n_t timesteps of guided '9' and '3' trajectories (guidance 5), per sample the exact
    −tr H and −tr H³ (dense 784×784 conditional Jacobian), ‖s‖², ‖Hs‖² and a 64-probe Hutchinson estimate of −tr H.
    Points come from ``store`` (an ArrayStore; missing ones computed and kept with their x_t)."""
    points = []
    for digit in ("9", "3"):
        ts, xs, _ = trajectory(model, range(seed, seed + per_class), (1, 28, 28), MNIST_LABELS[digit], 5.0, num_steps)
        for i in np.linspace(0, len(ts) - 1, n_t).round().astype(int):
            for n in range(per_class):
                f, x = model.score_fn(ts[i], MNIST_LABELS[digit]), xs[i, n]

                def compute(f=f, x=x, i=i, n=n):
                    J = dense_jacobian(f, x, chunk=112)  # batched copies: faster for this UNet
                    g = torch.Generator().manual_seed(int(seed * 10**6 + 1000 * n + i))  # per point
                    hut, hut_se = trace_estimate(lambda P: hvp_jvp(f, x.expand(P.shape[0], *x.shape), P)[1].detach(),
                                                 x.shape, 64, generator=g)
                    return [*exact_sharpness(J, f(x[None])).values(), -hut, hut_se]
                v = store.get(f"'{digit}'|t={ts[i]}|{n}|seed {seed}", compute, inputs={"x": x.numpy()},
                              meta={"t": int(ts[i]), "label": int(MNIST_LABELS[digit]), "model": "mnist"})
                points.append(dict(digit=digit, t=ts[i], step=int(i), **dict(zip(TRACE_KEYS, v.tolist()))))
    return points


def minisd_points(model, records: list[dict], steps, store, seed: int = 0) -> list[dict]:
    """Figure 4 on MiniSD: at step indices ``steps`` of each prompt's guided 50-step path (x_T from its first
    generation seed), the exact −tr H, ‖s‖², −tr H³ and ‖Hs‖² of the conditional score (dense 256×256 Jacobian).
    Points come from ``store``; a prompt's path is sampled only when one of its points is missing."""
    ts = ddim_timesteps(model.num_train_timesteps, 50, model.steps_offset)  # t of each step index
    points = []
    for r in records:
        cond = model.encode([r["caption"]])
        todo = [i for i in steps if f"{r['caption']}|{i}|seed {seed}" not in store.data]
        x_T = model.initial_noise([prompt_seed(seed, r["caption"], 0)])
        pts = path_spectra.path_points(model, x_T, cond, list(steps)) if todo else {}  # the guided path, only if needed
        for i in steps:
            t = int(ts[i])

            def compute(i=i, t=t):
                J = path_spectra.score_jacobian(model, pts[i][1][0], t, cond)
                return list(exact_sharpness(J, model.score_fn(t, cond)(pts[i][1])).values())
            v = store.get(f"{r['caption']}|{i}|seed {seed}", compute,
                          inputs={"x": pts[i][1][0].float().numpy()} if i in pts else None,
                          meta={"t": t, "caption": r["caption"], "model": "minisd"})
            points.append(dict(category=r["category"], step=int(i), t=t, **dict(zip(TRACE_KEYS[:4], v.tolist()))))
    return points


PANELS = (("trH", "s2", r"$-\mathrm{tr}\,H_\theta(x_t,c)$", r"$\|s_\theta(x_t,c)\|^2$"),
          ("trH3", "hs2", r"$-\mathrm{tr}\,H_\theta^3$", r"$\|H_\theta s_\theta\|^2$"))


def plot_trace_alignment(axes, points: list[dict], group: str, markers: dict, n_steps: int) -> None:
    """Figure 4's two panels, each point coloured by its sampling step (viridis: step 1 dark → last step light) and
    marked by its group (``markers``: group value → marker), with the y = x line; a point whose trace is ≤ 0 (a
    learned Jacobian is not symmetric) cannot sit on a log axis and is left out."""
    import matplotlib.pyplot as plt

    norm = plt.Normalize(1, n_steps)
    for ax, (xk, yk, xl, yl) in zip(axes, PANELS):
        for g, marker in markers.items():
            pp = sorted([p for p in points if p[group] == g and p[xk] > 0 and p[yk] > 0], key=lambda p: -p["step"])
            if not pp:
                continue
            sc = ax.scatter([p[xk] for p in pp], [p[yk] for p in pp], c=[p["step"] + 1 for p in pp], cmap="viridis",
                            norm=norm, marker=marker, s=22, edgecolors="k", linewidths=0.3, label=str(g))
        ax.set_xscale("log")
        ax.set_yscale("log")
        identity_line(ax)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        leg = ax.legend(fontsize=7, title=group, title_fontsize=7)
        for h in leg.legend_handles:  # the markers say the group; colour is the step (colour bar)
            h.set_facecolor("0.7")
    axes[-1].figure.colorbar(sc, ax=list(axes), label=f"sampling step (of {n_steps})")
