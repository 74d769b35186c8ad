"""Figure 6's experiment: every (prompt, method, setting, generation) → an image, a copy score and an alignment score.

Generation g of prompt p starts from x_T drawn with seed hash(seed, p, g) (:func:`prompt_seed`) for every
method but SAIL, so the no-mitigation image and each mitigated image of the same (p, g) are directly comparable;
SAIL's first round starts from those same x_T and replaces only the ones it optimises or re-draws. ``sail`` uses the
loss in ``sail_kw`` (§5.1's by default), ``sail-official`` the official code's; ``redraw`` is SAIL's control: the x_T
SAIL accepted, taken before its optimisation steps (it re-draws as often as SAIL does, without optimising).  Rows
are appended to ``DIR/results.csv`` one by one and a rerun skips the
(prompt, method, setting) groups already complete; images go to ``DIR/images/<method>/<setting>/``.
"""
from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

import torch

from .image_scorers import AlignmentScorer, CopyScorer, ScorerError, copy_scores, load_image, save_image
from .mitigation import (
    SAIL_DEFAULTS,
    generate,
    random_number_addition,
    random_token_addition,
    sail,
    summary_token_mask,
    wen_embedding_optimization,
    word_vocabulary,
)
from .pipeline import PipelineScoreModel
from .results import ResultWriter
from .sampling import prompt_seed
from .stats import bootstrap_ci

MITIGATION_METHODS = ("none", "sail", "sail-official", "redraw", "rta", "rna", "wen", "ren")
MITIGATION_COLUMNS = ("prompt_index", "prompt", "method", "setting", "generation", "seed", "used_prompt", "copy_score",
                      "alignment", "prior_ratio", "opt_steps", "seconds", "image", "model", "copy_scorer",
                      "alignment_scorer")
# App. D.2's five settings per method and SD version.  SAIL's ℓ_thres grids are on the official loss's scale.  The
# stand-ins' calibrated grids live in their registry specs (``registry.mitigation_grids``).
SETTINGS = {
    "sd1": {"sail": SAIL_DEFAULTS["sd1"]["thresholds"], "rta": (1, 2, 4, 6, 8), "rna": (1, 2, 4, 6, 8),
            "wen": (1, 2, 3, 4, 5), "ren": (1.1, 1.2, 1.25, 1.3, 1.5), "none": (0,)},
    "sd2": {"sail": SAIL_DEFAULTS["sd2"]["thresholds"], "rta": (1, 2, 4, 6, 8), "rna": (1, 2, 4, 6, 8),
            "wen": (1, 1.25, 1.5, 1.75, 2), "ren": (1.1, 1.2, 1.25, 1.3, 1.5), "none": (0,)},
}


class MitigationSetupError(ValueError):
    """A mitigation run that cannot start as asked; the message names the fix."""


def sd_version(model: PipelineScoreModel) -> str:
    """'sd2' for v-prediction pipelines (SD 2.x), 'sd1' otherwise — selects App. D.2's defaults."""
    return "sd2" if model.prediction_type == "v_prediction" else "sd1"


def default_settings(method: str, grids: dict[str, tuple[float, ...]], sail_loss: str = "official"
                     ) -> tuple[float, ...]:
    """``method``'s grid among a model's ``grids`` (App. D.2's ``SETTINGS[version]``, or a stand-in's calibrated
    ones); SAIL's paper loss has none (its scale is α‖x_T‖² ≈ α·d)."""
    if method not in MITIGATION_METHODS:
        raise MitigationSetupError(f"method {method!r} is unknown: choose from {','.join(MITIGATION_METHODS)}")
    if method in ("sail", "redraw") and sail_loss == "paper":
        raise MitigationSetupError("SAIL's paper loss has no published ℓ_thres grid (the paper's grids are on the "
                                   "official loss's scale): give --setting, or use --sail-loss official")
    return grids["sail" if method in ("sail-official", "redraw") else method]


def fmt_setting(v: float) -> str:
    return f"{float(v):g}"


def _key(row: dict) -> tuple:
    return (int(row["prompt_index"]), str(row["prompt"]), str(row["method"]), fmt_setting(row["setting"]),
            int(row["generation"]), int(row["seed"]))


def reference_images(record: dict | None, index: int, prompts_file: Path | None,
                     references: Path | None) -> list[Path]:
    """A prompt's training images: the record's 'images' (list) or 'image' (paths relative to the prompt file),
    else ``references/<record index or line index>.{png,jpg,jpeg,webp}``; [] when there are none."""
    rec = record or {}
    listed = rec.get("images", rec.get("image"))
    if listed:
        base = prompts_file.parent if prompts_file else Path(".")
        return [p if p.is_absolute() else base / p for p in map(Path, [listed] if isinstance(listed, str) else listed)]
    if references is None:
        return []
    stem = str(rec.get("index", index))
    return sorted(p for ext in ("png", "jpg", "jpeg", "webp") for p in references.glob(f"{stem}.{ext}"))


def prepare_prompt(model: PipelineScoreModel, prompt: str, method: str, setting: float, n: int, seed: int = 0,
                   sail_kw: dict | None = None, vocab: list[str] | None = None) -> dict:
    """One prompt under one (method, setting), up to its sampling: {x_T, cond, used, extra, bos_scale, token_mask}."""
    x_T = model.initial_noise([prompt_seed(seed, prompt, g) for g in range(n)])
    used = [prompt] * n
    extra: dict = {"prior_ratio": [float("nan")] * n, "opt_steps": [0] * n}
    cond, bos_scale, mask = None, 1.0, None
    if method in ("sail", "sail-official", "redraw"):
        kw = dict(sail_kw or {})
        if method == "sail-official":
            kw["loss"] = "official"
        res = sail(model, prompt, n, float(setting), seed=seed, **kw)
        extra = {"prior_ratio": res.prior_ratio, "opt_steps": res.steps}
        x_T = res.x_T if method != "redraw" else model.initial_noise(res.seeds)
    elif method in ("rta", "rna"):
        k = int(setting)
        if method == "rta":
            vocab = vocab or word_vocabulary(model.pipe.tokenizer)
            used = [random_token_addition(prompt, k, vocab, prompt_seed(seed, prompt, g)) for g in range(n)]
        else:
            used = [random_number_addition(prompt, k, prompt_seed(seed, prompt, g)) for g in range(n)]
    elif method == "wen":
        emb, hist = wen_embedding_optimization(model, prompt, x_T, target=float(setting))
        extra["opt_steps"] = [len(hist) - 1] * n
        cond = emb.expand(n, -1, -1)
    elif method == "ren":
        bos_scale, mask = float(setting), summary_token_mask(model, used)
    elif method != "none":
        raise MitigationSetupError(f"method {method!r} is unknown: choose from {','.join(MITIGATION_METHODS)}")
    if cond is None:
        cond = model.encode(used)
    return {"x_T": x_T, "cond": cond, "used": used, "extra": extra, "bos_scale": bos_scale, "token_mask": mask}


def _sample(model: PipelineScoreModel, preps: list[dict]) -> torch.Tensor:
    """Latents of several prepared prompts sharing one (method, setting), sampled as one batch."""
    masks, conds = [p["token_mask"] for p in preps], [p["cond"] for p in preps]
    cond = (
        torch.cat(conds) if torch.is_tensor(conds[0]) else [c for cs in conds for c in cs]
    )  # exact densities: captions
    return generate(model, torch.cat([p["x_T"] for p in preps]), cond,
                    bos_scale=preps[0]["bos_scale"], token_mask=None if masks[0] is None else torch.cat(masks))


def mitigate_prompt(
    model: PipelineScoreModel,
    prompt: str,
    method: str,
    setting: float,
    n: int,
    seed: int = 0,
    sail_kw: dict | None = None,
    vocab: list[str] | None = None,
) -> tuple[torch.Tensor, list[str], dict]:
    """One prompt under one (method, setting): (latents (n, C, h, w), the prompt each generation used, extras)."""
    prep = prepare_prompt(model, prompt, method, setting, n, seed, sail_kw, vocab)
    return _sample(model, [prep]), prep["used"], prep["extra"]


def run_mitigation(model: PipelineScoreModel, prompts: list[str], plan: list[tuple[str, float]], n: int,
                   out_dir: str | Path, seed: int = 0, copy_scorer: CopyScorer | None = None,
                   alignment_scorer: AlignmentScorer | None = None, references: list[list[Path]] | None = None,
                   sail_kw: dict | None = None, prompt_indices: list[int] | None = None, model_name: str = "",
                   progress: bool = False, log: Callable[[str], None] = print, batch: int = 0) -> Iterator[dict]:
    """Run every (prompt, (method, setting)) of ``plan``; append rows to ``out_dir/results.csv``; yield them.

    Prompts under the same (method, setting) are sampled together, up to ``batch`` images at once (0: one prompt at
    a time); each image's x_T comes from its own seed, so the batch changes only floating-point rounding."""
    out_dir = Path(out_dir)
    idx = prompt_indices or list(range(len(prompts)))
    refs_cache: dict[int, torch.Tensor | None] = {}
    jobs = [(j, m, s) for m, s in plan for j in range(len(prompts))]
    cap = max(int(batch), n)
    with ResultWriter(out_dir / "results.csv", MITIGATION_COLUMNS, _key) as w:
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(jobs), desc="mitigate", unit="setting")
        vocab: list[str] | None = None
        pending: list[tuple] = []  # (j, method, setting, rows, prep, seconds)

        def flush():
            t0 = time.perf_counter()
            images_all = model.decode(_sample(model, [q[4] for q in pending]))
            share = (time.perf_counter() - t0) / len(images_all)
            for k, (j, method, setting, rows, prep, prep_s) in enumerate(pending):
                images = images_all[k * n:(k + 1) * n]
                secs = prep_s / n + share
                cs = [float("nan")] * n
                if copy_scorer is not None and references is not None:
                    if j not in refs_cache:
                        paths_j = references[j]
                        refs_cache[j] = torch.stack([load_image(q) for q in paths_j]) if paths_j else None
                        if refs_cache[j] is not None and refs_cache[j].shape[-2:] != images.shape[-2:]:
                            refs_cache[j] = torch.nn.functional.interpolate(refs_cache[j], size=images.shape[-2:],
                                                                            mode="bilinear", antialias=True)
                    cs = copy_scores(copy_scorer, images, [refs_cache[j]] * n).tolist()
                p, pi = prompts[j], idx[j]
                al = (alignment_scorer.score(images, [p] * n).tolist() if alignment_scorer is not None
                      else [float("nan")] * n)
                used, extra = prep["used"], prep["extra"]
                for g, r in enumerate(rows):
                    img = out_dir / "images" / method / fmt_setting(setting) / f"{pi:05d}_g{g}.png"
                    save_image(images[g], img)
                    r.update(used_prompt=used[g], copy_score=f"{cs[g]:.6g}", alignment=f"{al[g]:.6g}",
                             prior_ratio=f"{extra['prior_ratio'][g]:.6g}", opt_steps=extra["opt_steps"][g],
                             seconds=f"{secs:.4g}", image=str(img.relative_to(out_dir)), model=model_name,
                             copy_scorer=getattr(copy_scorer, "name", ""),
                             alignment_scorer=getattr(alignment_scorer, "name", ""))
                    if not w.is_done(r):
                        w.write(r)
                    yield r
                if bar:
                    bar.update()
            pending.clear()

        for j, method, setting in jobs:
            if pending and (pending[0][1], pending[0][2]) != (method, setting):
                yield from flush()
            rows = [{"prompt_index": idx[j], "prompt": prompts[j], "method": method, "setting": fmt_setting(setting),
                     "generation": g, "seed": seed} for g in range(n)]
            if all(w.is_done(r) for r in rows):
                if bar:
                    bar.update()
                continue
            if method == "rta" and vocab is None:
                vocab = word_vocabulary(model.pipe.tokenizer)
            t0 = time.perf_counter()
            prep = prepare_prompt(model, prompts[j], method, setting, n, seed, sail_kw, vocab)
            pending.append((j, method, setting, rows, prep, time.perf_counter() - t0))
            if len(pending) * n + n > cap:
                yield from flush()
        if pending:
            yield from flush()
        if bar:
            bar.close()


def read_mitigation(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise MitigationSetupError(f"{path}: not found; run `sharp mitigate --out {out_dir}` first")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tradeoff_points(rows: list[dict]) -> dict[str, list[tuple[float, float, float, int]]]:
    """{method: [(setting, mean copy score, mean alignment, count), ...]} sorted by setting (NaNs ignored)."""
    acc: dict = defaultdict(lambda: [0.0, 0, 0.0, 0])
    for r in rows:
        a = acc[(r["method"], float(r["setting"]))]
        c, al = float(r["copy_score"]), float(r["alignment"])
        if c == c:
            a[0] += c
            a[1] += 1
        if al == al:
            a[2] += al
            a[3] += 1
    out: dict = defaultdict(list)
    for (m, s), (cs, cn, als, an) in sorted(acc.items()):
        out[m].append((s, cs / cn if cn else float("nan"), als / an if an else float("nan"), max(cn, an)))
    return dict(out)


_LABELS = {"none": "no mitigation", "sail": "SAIL", "sail-official": "SAIL, official loss",
           "redraw": "re-draw control"}
_STYLE = {
    "none": dict(marker="*", ms=14, color="k"),
    "sail": dict(marker="D", ms=6, color="tab:purple"),
    "sail-official": dict(marker="s", ms=5, color="tab:brown"),
    "redraw": dict(marker="x", ms=6, color="tab:gray"),
    "rta": dict(marker="o", ms=5, color="tab:red"),
    "rna": dict(marker="o", ms=5, color="tab:green"),
    "wen": dict(marker="o", ms=5, color="tab:pink"),
    "ren": dict(marker="o", ms=5, color="tab:orange"),
}


def tradeoff_intervals(rows: list[dict]) -> dict[str, list[dict]]:
    """Per method and setting: mean copy score and alignment over prompts (each prompt's mean over its
    generations), each with a bootstrap 95 % interval over prompts — Figure 6's points with their error bars."""
    import numpy as np

    out: dict = defaultdict(list)
    for m, s in sorted({(r["method"], float(r["setting"])) for r in rows}):
        pt = {"setting": s}
        for col in ("copy_score", "alignment"):
            v = np.array(list(per_prompt_means(rows, m, s, col).values()))
            pt[col] = float(v.mean()) if len(v) else float("nan")
            pt[col + "_ci"] = bootstrap_ci(np.mean, v) if len(v) > 1 else (pt[col], pt[col])
        out[m].append(pt)
    return dict(out)


def copy_rate(rows: list[dict], method: str, setting: float, threshold: float) -> float:
    """Share of (method, setting)'s images whose copy score is above ``threshold`` (NaN where it has none)."""
    v = [float(r["copy_score"]) > threshold for r in rows if r["method"] == method
         and float(r["setting"]) == float(setting)]
    return sum(v) / len(v) if v else float("nan")


def tradeoff_frame(rows: list[dict], copy_threshold: float | None = None):
    """Figure 6's numbers as a DataFrame: per (method, setting) the mean copy score and alignment over prompts with
    their 95 % intervals and, given the copy threshold, the share of images above it."""
    import pandas as pd

    out = []
    for m, vals in tradeoff_intervals(rows).items():
        for v in vals:
            row = {"method": m, "setting": round(v["setting"], 4), "copy": round(v["copy_score"], 3),
                   "copy 95% CI": "[{:.3f}, {:.3f}]".format(*v["copy_score_ci"]), "alignment": round(v["alignment"], 3),
                   "alignment 95% CI": "[{:.3f}, {:.3f}]".format(*v["alignment_ci"])}
            if copy_threshold is not None:
                row["above copy threshold"] = round(copy_rate(rows, m, v["setting"], copy_threshold), 3)
            out.append(row)
    order = {m: i for i, m in enumerate(MITIGATION_METHODS)}
    return pd.DataFrame(out).sort_values(["method", "setting"], key=lambda c: c.map(order) if c.name == "method"
                                         else c).reset_index(drop=True)

def plot_tradeoff(rows: list[dict], ax=None, methods=None, labelled=("sail", "rta", "rna", "wen", "ren"),
                  unlabelled_box=None, bar_alpha=0.9):
    """Figure 6 (left): mean copy score against mean alignment per (method, setting), a line per method through its
    settings, error bars = 95 % intervals over prompts; ``methods`` restricts what is drawn (e.g. a zoomed panel),
    ``labelled`` names the methods whose settings are written beside their points, except inside ``unlabelled_box``
    (x0, x1, y0, y1: a region a zoomed panel shows)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    pts = tradeoff_intervals(rows)
    for m in [m for m in MITIGATION_METHODS if m in pts and (methods is None or m in methods)]:
        vals = pts[m]
        x = [v["alignment"] for v in vals]
        y = [v["copy_score"] for v in vals]
        xerr = [
            [v["alignment"] - v["alignment_ci"][0] for v in vals],
            [v["alignment_ci"][1] - v["alignment"] for v in vals],
        ]
        yerr = [
            [v["copy_score"] - v["copy_score_ci"][0] for v in vals],
            [v["copy_score_ci"][1] - v["copy_score"] for v in vals],
        ]
        st = _STYLE.get(m, dict(marker="o", ms=5, color=None))
        line = ax.errorbar(x, y, xerr=xerr, yerr=yerr, ls="--" if m in ("redraw", "sail-official") else "-",
                           lw=1.8 if m == "sail" else 1.0, elinewidth=0.6, capsize=1.5,
                           label=_LABELS.get(m, m.upper()), zorder=6 if m.startswith("sail") else 4, **st)
        for bars in line[2]:
            bars.set_alpha(bar_alpha)
        if m in labelled:
            for k, v in enumerate(vals):
                if unlabelled_box and (unlabelled_box[0] <= v["alignment"] <= unlabelled_box[1]
                                       and unlabelled_box[2] <= v["copy_score"] <= unlabelled_box[3]):
                    continue
                off = (5, 2) if k % 2 == 0 else (-24, -7)  # alternate sides: neighbouring settings do not overlap
                ax.annotate(f"{v['setting']:.4g}", (v["alignment"], v["copy_score"]), fontsize=6, xytext=off,
                            textcoords="offset points", color=st.get("color"))
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))  # a narrow alignment range would crowd its tick labels
    ax.set_xlabel("alignment (higher is better)")
    ax.set_ylabel("copy score (lower is better)")
    return ax


def plot_grid(rows: list[dict], out_dir: str | Path, n_prompts: int = 4, generation: int = 0,
              references: list[list[Path]] | None = None):
    """Qualitative grid: per prompt, its training image (``references``), the unmitigated image and each method's
    image from the same seed. SAIL (and its re-draw control) shows the setting where SAIL's image differs most from
    the unmitigated one (written under the image); the baselines their middle setting. Prompts: those where SAIL
    changes its image most first."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    by = {(int(r["prompt_index"]), r["method"], float(r["setting"]), int(r["generation"])): r for r in rows}
    img = lambda r: load_image(out_dir / r["image"])
    methods = ["none"] + [m for m in MITIGATION_METHODS[1:] if any(k[1] == m for k in by)]
    settings = {m: sorted({k[2] for k in by if k[1] == m}) for m in methods}
    mid = {m: s[len(s) // 2] for m, s in settings.items() if s}

    def sail_change(pi):  # (largest mean |pixel difference| of SAIL's image to the unmitigated one, its setting)
        row = by.get((pi, "none", 0.0, generation))
        base = img(row) if row is not None else None
        cands = [(float((img(by[(pi, "sail", s, generation)]) - base).abs().mean()), s)
                 for s in settings.get("sail", []) if base is not None and (pi, "sail", s, generation) in by]
        return max(cands) if cands else (0.0, mid.get("sail"))

    change = {pi: sail_change(pi) for pi in sorted({k[0] for k in by})}
    prompts = sorted(change, key=lambda pi: -change[pi][0])[:n_prompts]
    cols = (["training image"] if references else []) + methods
    fig, axes = plt.subplots(len(prompts), len(cols), figsize=(1.5 * len(cols), 1.75 * len(prompts)), squeeze=False)
    for i, pi in enumerate(prompts):
        for j, col in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == "training image":
                if references[pi]:
                    ax.imshow(load_image(references[pi][0]).permute(1, 2, 0).numpy())
                ax.set_xlabel(f"prompt {pi}", fontsize=7)
            else:
                same = col in ("sail", "redraw")  # the re-draw control at SAIL's setting: its x_T before optimising
                s = change[pi][1] if same else (0.0 if col == "none" else mid.get(col))
                r = by.get((pi, col, s, generation))
                if r is None:
                    ax.axis("off")
                    continue
                ax.imshow(img(r).permute(1, 2, 0).numpy())
                ax.set_xlabel(
                    ("" if col == "none" else f"{s:.4g} · ") + f"copy {float(r['copy_score']):.2f}", fontsize=6
                )
            if i == 0:
                ax.set_title(_LABELS.get(col, col.upper()) if col != "training image" else col, fontsize=7)
    fig.tight_layout()
    return fig


def check_scorers(copy_scorer, references: list[list[Path]] | None) -> None:
    """Refuse a copy scorer with no reference images at all (every copy score would be empty)."""
    if copy_scorer is not None and (references is None or not any(references)):
        raise ScorerError("no reference (training) images found for any prompt: give a .jsonl with 'images' "
                          "paths, or --references DIR holding <index>.png per prompt")


def per_prompt_means(rows: list[dict], method: str, setting: float, column: str = "copy_score") -> dict[int, float]:
    """{prompt_index: mean of ``column`` over its generations} for one (method, setting)."""
    acc: dict = defaultdict(list)
    for r in rows:
        if r["method"] == method and float(r["setting"]) == float(setting) and float(r[column]) == float(r[column]):
            acc[int(r["prompt_index"])].append(float(r[column]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def paired_lead(rows: list[dict], a: tuple[str, float], b: tuple[str, float], column: str = "copy_score",
                lower_is_better: bool = True) -> tuple[float, tuple[float, float], int]:
    """How much (method, setting) ``a`` leads ``b`` on ``column`` (positive = ``a`` better), as the mean over prompts
    of per-prompt mean differences, with a bootstrap interval paired over the prompts both ran; (value, ci, n
    prompts)."""
    import numpy as np

    ma, mb = per_prompt_means(rows, *a, column), per_prompt_means(rows, *b, column)
    idx = sorted(set(ma) & set(mb))
    d = np.array([mb[i] - ma[i] for i in idx]) * (1 if lower_is_better else -1)
    return float(d.mean()) if len(d) else float("nan"), bootstrap_ci(np.mean, d), len(idx)


def pareto_leads(rows: list[dict], sail: tuple[str, float], baselines=("rta", "rna", "wen", "ren")) -> list[tuple]:
    """Figure 6's Pareto comparison of one SAIL setting against each baseline, decided with intervals: per baseline, its
    setting that aligns at least as well as SAIL (mean alignment) with the lowest copy score, and SAIL's copy-score
    lead over it; where no setting aligns as well, SAIL's alignment lead over the best-aligned one.
    [(value, ci, n prompts, label)], one per baseline that ran."""
    pts = tradeoff_points(rows)
    s_align = next(a for s, _, a, _ in pts[sail[0]] if s == float(sail[1]))
    out = []
    for m in baselines:
        if m not in pts:
            continue
        ok = [(c, s) for s, c, a, _ in pts[m] if a >= s_align - 1e-9]
        if ok:
            q = min(ok)[1]
            v, ci, n = paired_lead(rows, sail, (m, q))
            out.append((v, ci, n, f"{m} {q:g}, copy score"))
        else:
            q = max((a, s) for s, _, a, _ in pts[m])[1]
            v, ci, n = paired_lead(rows, sail, (m, q), "alignment", lower_is_better=False)
            out.append((v, ci, n, f"{m} {q:g}, alignment"))
    return out
