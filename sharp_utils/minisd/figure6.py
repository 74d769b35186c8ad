"""Figure 6 (§5 of Jeon et al. 2025) as notebook 06 runs it: the prompts and the (method, setting) plan, SAIL on the
exact density, and the evidence for its claims — each a step a notebook cell calls."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import calibration, registry
from ..claims import Ev
from ..pipeline import PipelineScoreModel
from ..prompts import pick
from ..tradeoff import (
    paired_lead,
    pareto_leads,
    read_mitigation,
    run_mitigation,
    sd_version,
    tradeoff_points,
)
from . import experiments

ALPHA = 0.05  # SAIL's α (App. D.2, SD v1)


@dataclass
class Plan:
    """What notebook 06 runs: memorized prompts, SAIL's ℓ_thres grid and every (method, setting) pair."""
    records: list[dict]
    sail_grid: tuple[float, ...]
    sail_loss: str  # 'paper' (§5.1's objective) on MiniSD; 'official' on SD (the paper's grids are for it)
    dev_nmem: list[str]  # the non-memorized dev prompts the grids were calibrated on
    pairs: list[tuple[str, float]]

    @property
    def prompts(self) -> list[str]:
        return [r["caption"] for r in self.records]


def plan(model: str, pipe: PipelineScoreModel, settings: tuple[int, ...], em: int | None, pm: int | None,
         seed: int = 0) -> Plan:
    """Figure 6's plan: no mitigation; SAIL and its re-draw control at ``settings`` (indices into the ℓ_thres grid,
    MiniSD: calibrated on the dev split's non-memorized prompts); the official-loss variant and the four baselines
    at the same indices of their grids (``registry.mitigation_grids``)."""
    minisd = registry.is_minisd(model)
    grid = registry.mitigation_grids(model, pipe)
    recs = registry.prompt_records(model, "eval", sd_version(pipe))
    recs = (pick(recs, em, seed, ["em"]) + pick(recs, pm, seed, ["pm"]) if minisd
            else pick(recs, em, seed, ["mem"]))
    loss = "paper" if minisd else "official"
    dev = [r["caption"] for r in registry.prompt_records(model, "dev") if r["category"] == "nmem"] if minisd else []
    sail_grid = calibration.calibrate_sail_grid(pipe, dev, alpha=ALPHA, loss="paper") if minisd else grid["sail"]
    pairs = [("none", 0)] + [(m, sail_grid[i]) for m in ("sail", "redraw") for i in settings]
    variants = ("sail-official",) if loss == "paper" else ()
    pairs += [(m, grid["sail" if m == "sail-official" else m][i])
              for m in (*variants, "rta", "rna", "wen", "ren") for i in settings]
    return Plan(recs, tuple(sail_grid), loss, dev, pairs)


def best_sail(rows: list[dict], method: str = "sail") -> float:
    """SAIL's setting with the lowest mean copy score (the claim is 'at some setting')."""
    return min(tradeoff_points(rows)[method], key=lambda p: p[1])[0]


def lower_evidence(rows: list[dict], n: int) -> Ev:
    """SAIL's copy-score drop at its best setting against no mitigation (positive = lower copy score), paired over
    prompts."""
    best = best_sail(rows)
    prompts = len({r["prompt_index"] for r in rows})
    return Ev(*paired_lead(rows, ("sail", best), ("none", 0))[:2], f"{prompts} prompts × {n}", f"ℓ_thres {best:.4g}")


def pareto_evidence(rows: list[dict]) -> list[Ev]:
    """SAIL's lead over each baseline's closest setting (``tradeoff.pareto_leads``), at SAIL's best setting."""
    return [Ev(v, ci, f"{k} prompts", at) for v, ci, k, at in pareto_leads(rows, ("sail", best_sail(rows)))]


def shell_evidence(rows: list[dict]) -> tuple[Ev, np.ndarray, np.ndarray]:
    """max |‖x_T‖²/d − 1| over the x_T SAIL optimised (exact: no sampling), and every SAIL image's ratio and whether
    its x_T was optimised (a candidate accepted at step 0 is a plain N(0, I) draw)."""
    sail_rows = [r for r in rows if r["method"] == "sail"]
    opt = np.array([int(r["opt_steps"]) > 0 for r in sail_rows])
    ratios = np.array([float(r["prior_ratio"]) for r in sail_rows])
    worst = float(np.abs(ratios[opt] - 1).max()) if opt.any() else float("nan")
    return Ev(worst, None, int(opt.sum())), ratios, opt


def exact_sail(pipe: PipelineScoreModel, model: str, p: Plan, settings: tuple[int, ...], n: int, out: Path,
               copy_scorer, align_scorer, max_steps: int, seed: int = 0) -> tuple[str, tuple, list[dict]]:
    """SAIL on the exact density of ``model``'s training set (its own unconditional pool), the same prompts, seeds
    and scorers; its ℓ_thres grid by the learned model's rule computed on the exact model. Rows are kept under
    ``out/exact-<pool>`` and only missing ones computed. Returns (pool, grid, rows)."""
    pool = registry.own_exact_options(model)[0]
    ex = registry.exact_pipeline(model, pipe, pool)
    grid = calibration.calibrate_sail_grid(ex, p.dev_nmem, alpha=ALPHA, loss="paper")
    ex_out = Path(out) / f"exact-{pool}"
    pairs = [("none", 0)] + [("sail", grid[i]) for i in settings]
    refs = experiments.reference_paths(p.records, ex_out / "references")
    list(run_mitigation(ex, p.prompts, pairs, n, ex_out, seed=seed, copy_scorer=copy_scorer,
                        alignment_scorer=align_scorer, references=refs,
                        model_name=ex.name, sail_kw=dict(alpha=ALPHA, loss="paper", max_steps=max_steps),
                        log=lambda s: None, batch=32))
    return pool, tuple(grid), read_mitigation(ex_out)
