"""Table 1 (§4.5 of Jeon et al. 2025) as notebook 05 runs it: resumable detection, the ROC figure, the exact
density's table and the split by kind of non-memorized prompt — each a step a notebook cell calls."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import registry
from ..detection import DetectOptions, detect
from ..pipeline import PipelineScoreModel
from ..results import ResultWriter, evaluate_tables, read_results, write_manifest


def run_detection(pipe: PipelineScoreModel, prompts: list[str], runs, opts: DetectOptions, csv: Path,
                  seed: int = 0) -> int:
    """Every (methods, steps, ns) of ``runs`` through :func:`sharp_utils.detection.detect` (the code of
    ``sharp detect``), appended row by row to ``csv``; rows already there are skipped. Returns how many were new."""
    new = 0
    with ResultWriter(csv) as w:
        for methods, steps, ns in runs:
            def done(i, p, m, k, n):
                return w.is_done({"prompt_index": i, "prompt": p, "method": m, "steps": k, "n": n, "seed": seed})
            for row in detect(pipe, prompts, methods, steps, ns, seed=seed, batch_size=256, opts=opts, done=done,
                              log=lambda s: None):
                w.write(row)
                new += 1
    return new


def split(rows: list[dict], is_mem: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Detection rows of memorized and of non-memorized prompts."""
    return ([r for r in rows if is_mem[int(r["prompt_index"])]],
            [r for r in rows if not is_mem[int(r["prompt_index"])]])


def plot_roc(ax, rows: list[dict], table: list[dict], is_mem: np.ndarray, full_steps: int) -> None:
    """ROC curves of each (method, steps) at its largest n, Wen at step 1 and over the full trajectory; false positive
    rate on a symlog axis (TPR@1%FPR is readable) with the chance line drawn as the curve TPR = FPR."""
    from sklearn.metrics import roc_curve

    largest = {}
    for r in table:
        largest[(r["method"], r["steps"])] = max(largest.get((r["method"], r["steps"]), 0), r["n"])
    for r in table:
        if r["n"] != largest[(r["method"], r["steps"])] or (r["method"] == "wen" and r["steps"] not in (1, full_steps)):
            continue
        s = {int(q["prompt_index"]): float(q["score"]) for q in rows
             if (q["method"], int(q["steps"]), int(q["n"])) == (r["method"], r["steps"], r["n"])}
        idx = sorted(s)
        fpr, tpr, _ = roc_curve(is_mem[idx], [s[i] for i in idx])
        ax.plot(fpr, tpr, lw=1.5 if r["method"].startswith("ours") else 1,
                ls="--" if r["method"] == "ours-jvp" else "-",  # it lies on ours-fd's curve
                label=f"{r['method']}@{r['steps']}, n={r['n']} (AUC {r['auc']:.3f})")
    chance = np.linspace(0, 1, 501)  # many points: a curve on the symlog axis
    ax.plot(chance, chance, ":", color="gray", label="chance (TPR = FPR)")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))


def exact_detection(pipe: PipelineScoreModel, model: str, prompts: list[str], n: int, num_steps: int,
                    guidance_scale: float, out: Path, seed: int = 0) -> tuple[str, list[dict]]:
    """Wen and ours (FD at steps 1, 5, 50; JVP at step 1) on the exact density of ``model``'s training set (its own
    unconditional pool) from the same per-generation x_T; rows kept in ``out/exact-<pool>.csv``, computed when any
    is missing. Returns (pool, rows of this n and seed)."""
    pool = registry.own_exact_options(model)[0]
    runs = [(("wen", "ours-fd"), tuple(k for k in (1, 5, 50) if k <= num_steps)), (("ours-jvp",), (1,))]
    want = [{"prompt_index": i, "prompt": p, "method": m, "steps": k, "n": n, "seed": seed}
            for ms, ks in runs for m in ms for k in ks for i, p in enumerate(prompts)]
    csv = Path(out) / f"exact-{pool}.csv"
    with ResultWriter(csv) as w:
        if not all(w.is_done(r) for r in want):
            ex = registry.exact_pipeline(model, pipe, pool)
            opts = DetectOptions(num_inference_steps=num_steps, guidance_scale=guidance_scale)
            t0 = time.time()
            for ms, ks in runs:
                for r in detect(ex, prompts, ms, ks, (n,), seed, batch_size=256, opts=opts, log=lambda s: None):
                    r.update(model=ex.name, num_inference_steps=num_steps,
                             guidance_scale=guidance_scale, seconds=f"{(time.time() - t0) / len(prompts):.4g}")
                    if not w.is_done(r):
                        w.write(r)
            write_manifest(out, section=csv.name, pool=pool, prompts=len(prompts), n=n, runs=runs,
                           seconds=round(time.time() - t0))
    return pool, [{**r, "prompt_index": int(r["prompt_index"])} for r in read_results(csv)
                  if int(r["n"]) == n and int(r["seed"]) == seed]


def by_kind_frame(table: list[dict], rows: list[dict], is_mem: np.ndarray, records: list[dict]):
    """AUC of every (method, steps, n) against all non-memorized prompts and against each kind of them (MiniSD:
    training captions, paraphrases) as a DataFrame; None where the prompt set has no kinds (SD)."""
    import pandas as pd

    kinds = sorted({r.get("kind") for r in records if r["category"] == "nmem"} - {None})
    if not kinds:
        return None
    mem_rows, nmem_rows = split(rows, is_mem)
    out = pd.DataFrame([{"method": r["method"], "steps": r["steps"], "n": r["n"], "AUC vs all": round(r["auc"], 3)}
                        for r in table])
    for k in kinds:
        sub = {(t["method"], t["steps"], t["n"]): t["auc"] for t in evaluate_tables(
            mem_rows, [r for r in nmem_rows if records[int(r["prompt_index"])].get("kind") == k])}
        count = sum(r.get("kind") == k for r in records)
        out[f"AUC vs {k}s ({count})"] = [round(sub[key], 3) if key in sub else np.nan
                                         for key in zip(out["method"], out["steps"], out["n"])]
    return out
