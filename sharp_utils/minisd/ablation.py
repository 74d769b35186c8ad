"""Notebook 07's regime ablation: the same prompts and seeds through both learned MiniSDs and the exact densities of the
2 × 2 (unconditional pool × EM caption), and the MNIST copy rates of both checkpoints and both exact densities —
each a step a notebook cell calls."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .. import calibration, registry, toy_figures
from ..results import ResultWriter, results_dir
from ..toy import MNIST_LABELS, mnist_9_vs_3, mnist_exact
from . import experiments

# the table's columns: unconditional / EM copy rates, detection AUCs, Figure 3's first-step separation, SAIL's drop
COLUMNS = ("uncond_copy", "em_copy", "wen@1", "ours@1", "wen@{T}", "fig3_separation", "sail_drop")
HEADERS = {"uncond_copy": "uncond copy", "em_copy": "EM copy", "fig3_separation": "fig3 separation",
           "sail_drop": "SAIL drop (+ = lower copy score)"}


def models(device: str = "cpu", dev_nmem: list[str] | None = None) -> dict[str, tuple]:
    """{row name: (model, SAIL's ℓ_thres)} for the learned MiniSDs (their shipped middle setting) and the four exact
    densities (the middle of the same calibration, computed on each: the 50 % point over non-memorized dev prompts,
    official loss)."""
    pipes = {name: registry.load_model(name, device=device) for name in ("minisd-coupled", "minisd")}
    out = {f"learned, {registry.design(n)} ({n})": (pipes[n], registry.mitigation_grids(n)["sail"][2])
           for n in ("minisd-coupled", "minisd")}
    for uncond in ("coupled", "appc"):
        for em in ("single", "dominant"):
            ex = registry.exact_pipeline("minisd", pipes["minisd"], uncond, em)
            thr = calibration.calibrate_sail_grid(ex, dev_nmem or [], quantiles=(0.5,), alpha=0.05, loss="official")[0]
            out[f"exact, {uncond} pool, {em} EM"] = (ex, thr)
    return out


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def rows(models_: dict, copy_scorer, em_recs, det_recs, sail_recs, cfg: dict, out: Path, profile: str,
         seed: int = 0) -> dict[str, dict]:
    """One :func:`experiments.regime_row` per model, each kept under ``out/<slug>`` (only missing rows computed). The
    exact densities' unconditional samples depend on the pool only (one table per pool); v2's are notebook 03's."""
    v2 = models_["learned, v2 (minisd)"][0]
    table = {}
    for name, (m, thr) in models_.items():
        udir = (out / f"uncond_exact_{name.split(', ')[1].split()[0]}" if name.startswith("exact")
                else results_dir("03_sd_eigen_spectra", profile) if m is v2 else None)
        table[name] = experiments.regime_row(m, copy_scorer, em_recs, det_recs, sail_recs, thr, out / slug(name), seed,
                                             cfg["n_uncond"], cfg["em_n"], cfg["det_n"], cfg["sep"], cfg["sail_n"],
                                             cfg["sail_max_steps"], cfg["num_steps"], uncond_dir=udir,
                                             model_name=name.split("(")[-1].rstrip(")") if name.startswith("learned")
                                             else getattr(m, "name", ""))
        table[name]["sail_setting"] = thr
    return table


def _cell(column: str, value: float) -> str:
    if column == "fig3_separation":
        return f"{value:.2e}"
    # SAIL over 30 prompts × 4 images, one trajectory landing elsewhere moves it: printed with "~", its digits are
    # not checked by nbval (tests/nbtolerance.py), only its presence
    return ("~" if column == "sail_drop" else "") + f"{value:.3f}"


def table_markdown(table: dict[str, dict], num_steps: int) -> str:
    """The ablation as a Markdown table (scripts/claims_table.py copies it into README.md and docs/results.md)."""
    cols = [c.format(T=num_steps) for c in COLUMNS]
    head = "| model | " + " | ".join(HEADERS.get(c, c) for c in cols) + " |"
    lines = [head, "| --- |" + " ---: |" * len(cols)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(_cell(c, row[c]) for c in cols) + " |")
    return "\n".join(lines)


def mnist_copies(out: Path, n_uncond: int, n_nine: int, num_steps: int, seed: int = 0) -> dict[str, dict]:
    """{model: {group: (copies, n)}}: unconditional samples (guidance 1) and guided '9' samples (guidance 5), seeds
    50,000 on, copying the memorized nine (within App. C's threshold) for both MNIST checkpoints and the exact
    densities of both pools. Distances are appended to ``out/mnist_copies.csv``, only missing ones computed."""
    data = mnist_9_vs_3(seed)
    mn = {"learned, coupled": registry.load_model("mnist-coupled"),
          "learned, App. C": registry.load_model("mnist-appc")}
    for pool in ("coupled", "appc"):
        mn[f"exact, {pool}"] = mnist_exact(pool, seed)
    sizes = {"uncond": n_uncond, "nine": n_nine}
    thr = toy_figures.mnist_copy_threshold(data)  # half the median nearest-neighbour spacing of the training threes

    def key(r):
        return r["model"], r["group"], int(r["seed"]), int(r["num_steps"])
    path = Path(out) / "mnist_copies.csv"
    with ResultWriter(path, ("model", "group", "seed", "num_steps", "distance"), key) as w:
        for name, m in mn.items():
            for group, label, g in (("uncond", None, 1.0), ("nine", "9", 5.0)):
                seeds = range(50_000, 50_000 + sizes[group])
                todo = [s for s in seeds
                        if not w.is_done(dict(model=name, group=group, seed=s, num_steps=num_steps))]
                # an exact density's None is its unconditional pool; a learned model's None its unconditional branch
                c = MNIST_LABELS[label] if name.startswith("learned") or label is not None else None
                for i in range(0, len(todo), 200):  # appended batch by batch
                    x = toy_figures.generate(m, todo[i:i + 200], (1, 28, 28), c, g, num_steps).float()
                    for s, d in zip(todo[i:i + 200], toy_figures.nearest_distance(x, data["nine"][None])[0].tolist()):
                        w.write(dict(model=name, group=group, seed=s, num_steps=num_steps, distance=f"{d:.6g}"))
    with path.open(newline="", encoding="utf-8") as f:
        dist = {key(r): float(r["distance"]) for r in csv.DictReader(f)}
    out_rows: dict[str, dict] = {}
    for name in mn:
        for group in ("uncond", "nine"):
            d = np.array([dist[(name, group, s, num_steps)] for s in range(50_000, 50_000 + sizes[group])])
            out_rows.setdefault(name, {})[group] = (int((d < thr).sum()), len(d))
    return out_rows


def changed_since(out: Path, start: float, pattern: str = "*.csv") -> int:
    """How many result tables under ``out`` were written after ``start`` (what a manifest records)."""
    return sum(p.stat().st_mtime > start for p in Path(out).rglob(pattern))



def uncond_copy_rate(model, copy_scorer, n: int, seed: int = 0, num_steps: int = 50) -> tuple[int, int]:
    """(copies, n): of n unconditional samples (prompt "", guidance 1, generation g from ``prompt_seed(seed, "", g)``)
    how many copy an EM training image (copy score above the scorer's threshold)."""
    images = experiments.generate_images(model, [""], n, seed, num_steps, guidance_scale=1.0)
    return int(experiments.em_copies(copy_scorer, images).sum()), n
