"""The regime experiments of notebooks 03 and 07 on a MiniSD model (learned or exact) or a Stable Diffusion folder:
seeded generations, the memorization regime against its bars (``REGIME_BARS``), the regime ablation's rows, and the
reference images of the mitigation runs.  Models are named and loaded through :mod:`sharp_utils.registry`."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import registry
from ..checkpoints import read_manifest
from ..detection import DetectOptions, detect
from ..image_scorers import load_image, save_image
from ..mitigation import generate
from ..path_spectra import score_jacobian
from ..pipeline import PipelineScoreModel
from ..prompts import MEMORIZED
from ..results import ResultWriter, evaluate_tables, read_results
from ..sampling import ddim_timesteps, prompt_seed
from ..tradeoff import fmt_setting, paired_lead, read_mitigation, run_mitigation
from .evaluators import parse_caption, template_score
from .training_set import em_image_ids, training_images


def generate_images(model: PipelineScoreModel, prompts: list[str], n: int, seed: int = 0, num_steps: int = 50,
                    guidance_scale: float | list[float] = 7.5, batch: int = 256) -> Tensor:
    """n images per prompt (B·n, 3, H, W) in [0, 1], generation g of prompt p from ``prompt_seed(seed, p, g)``."""
    items = [(p, g) for p in prompts for g in range(n)]
    out = []
    for i in range(0, len(items), batch):
        x, cond = seeded_inputs(model, items[i:i + batch], seed)
        out.append(model.decode(generate(model, x, cond, guidance_scale, num_steps)))
    return torch.cat(out)


def em_copies(copy_scorer, images: Tensor) -> Tensor:
    """Whether each image (B, 3, H, W) in [0, 1] copies a memorized (EM) training image: its copy score against the
    nearest EM image is above the scorer's threshold (the regime's unconditional copy criterion)."""
    em_ids = em_image_ids()
    E = copy_scorer.embed(torch.from_numpy(training_images()[em_ids]).float() / 255.0)
    return (copy_scorer.embed(images) @ E.T).max(1).values > copy_scorer.threshold


def seeded_inputs(model: PipelineScoreModel, items: list[tuple[str, int]], seed: int = 0) -> tuple[Tensor, Tensor]:
    """(x_T, text embeddings) for (prompt, generation) pairs, x_T of each from ``prompt_seed(seed, prompt,
    generation)``."""
    return model.initial_noise([prompt_seed(seed, p, g) for p, g in items]), model.encode([p for p, _ in items])


def verify_memorization(model: PipelineScoreModel, records: list[dict], copy_scorer, alignment_scorer, n: int = 4,
                        seed: int = 0, images: np.ndarray | None = None,
                        guidance_scale: float | list[float] = 7.5, num_steps: int = 50) -> tuple[list[dict], Tensor]:
    """Generate n images per MiniSD record and score them: copy score against the record's own training images
    (max), against the nearest training image overall, PM template score, alignment.  Returns (rows, images)."""
    images = training_images() if images is None else images
    train = torch.from_numpy(images).float() / 255.0
    E = copy_scorer.embed(train)
    gen = generate_images(model, [r["caption"] for r in records], n, seed, num_steps, guidance_scale)
    G = copy_scorer.embed(gen)
    align = alignment_scorer.score(gen, [r["caption"] for r in records for _ in range(n)])
    nearest = (G @ E.T).max(1).values
    rows = []
    for j, r in enumerate(records):
        own = G[j * n:(j + 1) * n] @ E[r["train_ids"]].T
        frame = parse_caption(r["caption"])["frame"]
        tmpl = template_score(gen[j * n:(j + 1) * n], frame) if frame else torch.full((n,), float("nan"))
        for g in range(n):
            rows.append({"caption": r["caption"], "category": r["category"], "generation": g,
                         "copy_own": float(own[g].max()), "copy_nearest": float(nearest[j * n + g]),
                         "template": float(tmpl[g]), "alignment": float(align[j * n + g])})
    return rows, gen


REGIME_BARS = {"uncond_copy_max": 0.02, "em_copy_min": 0.60, "nmem_copy_max": 0.02, "nmem_aligned_min": 0.90}


def memorized_shares(model: str = "minisd") -> dict:
    """Share of memorized (EM) examples among a MiniSD model's conditional and unconditional training rows, as its
    recipe draws them (``em_weight`` from the manifest; v2's unconditional rows come from its pool)."""
    s = registry.spec(model)
    d = s.training_data()
    em_weight = float(read_manifest(s.checkpoint)["recipe"]["unet"].get("em_weight", 1.0))
    em_ids = d.em_image_ids()
    em_cap = [d.caption_index(r["caption"]) for r in d.em_records()]
    w = np.where(np.isin(d.train_caption, em_cap), em_weight, 1.0)  # a row's sampling weight
    cond = float(w[np.isin(d.train_image, em_ids)].sum() / w.sum())
    uncond = len(em_ids) / len(d.uncond_images) if d.uncond_images is not None else cond
    return {"conditional": cond, "unconditional": uncond, "em_weight": em_weight}


REGIME_COLUMNS = ("group", "caption", "generation", "seed", "guidance", "num_steps", "copy_em", "copy_own",
                  "copy_nearest", "template", "template_best", "alignment", "image")


def _regime_key(row: dict) -> tuple:
    return (str(row["group"]), str(row["caption"]), int(row["generation"]), int(row["seed"]), float(row["guidance"]),
            int(row["num_steps"]))


def regime_generations(model: PipelineScoreModel, copy_scorer, alignment_scorer,
                       groups: list[tuple[str, list[dict], int, float]], out_dir: str | Path, seed: int = 0,
                       num_steps: int = 50, batch: int = 64, keep_images=("em", "nmem")) -> list[dict]:
    """Generate and score MiniSD samples for the regime check, one row per image in ``out_dir/regime.csv``
    (resumable).  ``groups``: (name, records, n per record, guidance); generation g of caption c starts from
    ``prompt_seed(seed, c, g)``.  Columns: copy score to the nearest EM image (``copy_em``), to the record's own
    training images (``copy_own``) and to the nearest training image (``copy_nearest``); the caption's PM frame
    template score and the best over all five frames; alignment with the caption.  Images of ``keep_images`` groups
    are saved as PNGs."""
    out_dir = Path(out_dir)
    E = copy_scorer.embed(torch.from_numpy(training_images()).float() / 255.0)
    em_ids = em_image_ids()
    nan = float("nan")
    with ResultWriter(out_dir / "regime.csv", REGIME_COLUMNS, _regime_key) as w:
        for name, records, n, guidance in groups:
            rows = [{"group": name, "caption": r["caption"], "generation": g, "seed": seed, "guidance": guidance,
                     "num_steps": num_steps, "_rec": r} for r in records for g in range(n)]
            todo = [r for r in rows if not w.is_done(r)]
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                x, cond = seeded_inputs(model, [(r["caption"], r["generation"]) for r in chunk], seed)
                gen = model.decode(generate(model, x, cond, guidance, num_steps)).float().clamp(0, 1)
                G = copy_scorer.embed(gen)
                sims = G @ E.T
                best_t = torch.stack([template_score(gen, f) for f in range(1, 6)]).max(0).values
                caps = [r["caption"] for r in chunk]
                align = (alignment_scorer.score(gen, caps) if alignment_scorer is not None and all(caps)
                         else torch.full((len(chunk),), nan))
                for k, r in enumerate(chunk):
                    ids = r["_rec"].get("train_ids") or []
                    frame = parse_caption(r["caption"])["frame"] if r["caption"] else 0
                    img = ""
                    if name in keep_images:
                        img = f"regime_images/{name}/{_regime_stem(r)}.png"
                        save_image(gen[k], out_dir / img)
                    r.update(copy_em=f"{float(sims[k, em_ids].max()):.6g}",
                             copy_own=f"{float(sims[k, ids].max()):.6g}" if ids else "nan",
                             copy_nearest=f"{float(sims[k].max()):.6g}",
                             template=f"{float(template_score(gen[k:k + 1], frame)[0]):.6g}" if frame else "nan",
                             template_best=f"{float(best_t[k]):.6g}", alignment=f"{float(align[k]):.6g}", image=img)
                    w.write(r)
    with (out_dir / "regime.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def regime_rows(rows: list[dict], group: str, records: list[dict], n: int, guidance: float, seed: int,
                num_steps: int) -> list[dict]:
    """The rows of ``group`` for generations 0..n−1 of each record, in record order (KeyError where one is missing)."""
    by_key = {_regime_key(r): r for r in rows}
    return [by_key[_regime_key({"group": group, "caption": r["caption"], "generation": g, "seed": seed,
                                "guidance": guidance, "num_steps": num_steps})] for r in records for g in range(n)]


def _regime_stem(row: dict) -> str:
    import hashlib

    return (
        hashlib.sha1(f"{row['caption']}|{row['seed']}|{row['guidance']}|{row['num_steps']}".encode()).hexdigest()[:12]
        + f"_g{row['generation']}"
    )


def regime_figures(
    model: PipelineScoreModel,
    copy_scorer,
    alignment_scorer,
    em_records: list[dict],
    pm_records: list[dict],
    nmem_records: list[dict],
    seed: int = 0,
    n_uncond: int = 200,
    em_n: int = 2,
    n: int = 1,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    out_dir: str | Path | None = None,
) -> dict:
    """MiniSD's memorization regime (notebook 03): the share of unconditional generations (``""``, guidance 1)
    copying an EM image, of EM generations copying their memorized image (``em_n`` each, with the per-prompt counts),
    PM template / content copies, non-memorized copies (nearest training image) and alignment.  Rows are kept in
    ``out_dir/regime.csv`` (:func:`regime_generations`; a temporary folder when None) and only missing ones computed."""
    import tempfile

    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    uncond = [{"caption": "", "category": "uncond", "train_ids": []}]
    groups = [("uncond", uncond, n_uncond, 1.0), ("em", em_records, em_n, guidance_scale),
              ("pm", pm_records, n, guidance_scale), ("nmem", nmem_records, n, guidance_scale)]
    csv_path = Path(out_dir) / "regime.csv"
    before = sum(1 for _ in csv_path.open(encoding="utf-8")) - 1 if csv_path.exists() else 0
    start = time.perf_counter()
    rows = regime_generations(model, copy_scorer, alignment_scorer, groups, out_dir, seed, num_steps)
    seconds = time.perf_counter() - start
    col = lambda rs, c: np.array([float(r[c]) for r in rs])
    tc, ta = copy_scorer.threshold, alignment_scorer.threshold
    u, em, pm, nm = (regime_rows(rows, *g, seed, num_steps) for g in groups)  # this call's rows, in record order
    own = col(em, "copy_own")  # EM records' train_ids = [the memorized image]
    images = lambda rs: torch.stack([load_image(Path(out_dir) / r["image"]) for r in rs]) if rs else torch.zeros(0)
    out = {"uncond_copy": float((col(u, "copy_em") > tc).mean()), "uncond_n": len(u),
           "em_copy": float((own > tc).mean()), "em_n": len(own),
           "em_per_prompt": (own > tc).reshape(len(em_records), em_n).sum(1), "em_scores": own,
           "pm_template": col(pm, "template"), "pm_content_copy": float(np.mean(col(pm, "copy_own") > tc)),
           "nmem_copy": float(np.mean(col(nm, "copy_nearest") > tc)),
           "nmem_aligned": float(np.mean(col(nm, "alignment") > ta)), "nmem_n": len(nm),
           "nmem_template_best": col(nm, "template_best"),
           "em_images": images(em), "nmem_images": images(nm[::n][:12]),  # first generation of 12 prompts
           "rows": u + em + pm + nm,
           "new": len(rows) - max(before, 0), "seconds": seconds}  # rows computed by this call, and its time
    if tmp is not None:
        tmp.cleanup()
    return out


def regime_row(model: PipelineScoreModel, copy_scorer, em_records: list[dict], det_records: list[dict],
               sail_records: list[dict], sail_threshold: float, out_dir: str | Path, seed: int = 0,
               n_uncond: int = 200, em_n: int = 2, det_n: int = 2, sep_per_category: int = 2, sail_n: int = 2,
               sail_max_steps: int = 50, num_steps: int = 50, uncond_dir: str | Path | None = None,
               model_name: str = "") -> dict:
    """One row of notebook 07's regime ablation for a MiniSD model (learned or exact): unconditional copy rate of EM
    images; EM copy rate (guidance 7.5); Wen@1, ours@1 and Wen@``num_steps`` AUC (memorized em / pm vs nmem
    ``det_records``);
    Figure 3's first-step separation (median mean eigenvalue × σ_t² of EM minus non-memorized prompts, at a shared
    x_T; negative: memorized sharper); SAIL's drop of the mean copy score at ``sail_threshold`` on ``sail_records``
    (positive = lower with SAIL; paired over prompts, with its interval). Also the counts behind each rate and, per
    detection method, (is memorized, score) per prompt for paired intervals.
    Every sample is a row of a resumable table in ``out_dir`` (regime.csv, detect.csv, fig3.csv, results.csv), so a
    rerun computes only missing rows; the unconditional samples go to ``uncond_dir`` (default ``out_dir``), which
    models sharing one unconditional density (the exact densities of one pool) can share.  ``model_name`` (what
    :func:`load_model` resolves) goes to ``model.json`` in each folder that has no manifest, for ``sharp verify``."""
    out_dir = Path(out_dir)
    sail_kw = dict(alpha=0.05, loss="official", max_steps=sail_max_steps)
    for d, info in (
        (out_dir, {"model": model_name, "sail_kw": sail_kw}),
        (Path(uncond_dir or out_dir), {"model": model_name}),
    ):
        named = d / "model.json"
        old = json.loads(named.read_text(encoding="utf-8")) if named.exists() else {}
        if model_name and not (d / "manifest.json").exists() and not set(info) <= set(old):
            d.mkdir(parents=True, exist_ok=True)
            named.write_text(json.dumps(info | old) + "\n", encoding="utf-8")
    tc = copy_scorer.threshold
    groups = {
        "uncond": ("uncond", [{"caption": "", "train_ids": []}], n_uncond, 1.0),
        "em": ("em", em_records, em_n, 7.5),
    }
    got = regime_generations(model, copy_scorer, None, [groups["uncond"]], uncond_dir or out_dir, seed, num_steps,
                             keep_images=())
    u = np.array([float(r["copy_em"]) > tc for r in regime_rows(got, *groups["uncond"], seed, num_steps)])
    row = {"uncond_copy": float(u.mean()), "uncond_n": len(u), "uncond_copies": int(u.sum())}
    got = regime_generations(model, copy_scorer, None, [groups["em"]], out_dir, seed, num_steps, keep_images=())
    own = np.array([float(r["copy_own"]) for r in regime_rows(got, *groups["em"], seed, num_steps)])
    row["em_copy"], row["em_n"] = float((own > tc).mean()), len(own)
    prompts = [r["caption"] for r in det_records]
    with ResultWriter(out_dir / "detect.csv") as w:
        def done(j, p, m, k, n):
            return w.is_done({"prompt_index": j, "prompt": p, "method": m, "steps": k, "n": n, "seed": seed})

        for r in detect(model, prompts, ("wen", "ours-fd"), (1, num_steps), (det_n,), seed=seed, batch_size=256,
                        opts=DetectOptions(num_inference_steps=num_steps), done=done, log=lambda s: None):
            w.write({**r, "model": getattr(model, "name", ""), "num_inference_steps": num_steps})
    rows = [r for r in read_results(out_dir / "detect.csv") if int(r["seed"]) == seed and int(r["n"]) == det_n
            and int(r["prompt_index"]) < len(prompts) and r["prompt"] == prompts[int(r["prompt_index"])]]
    mem = [det_records[int(r["prompt_index"])]["category"] in MEMORIZED for r in rows]
    tab = {(t["method"], t["steps"]): t["auc"] for t in evaluate_tables([r for r, m in zip(rows, mem) if m],
                                                                        [r for r, m in zip(rows, mem) if not m])}
    row.update({"wen@1": tab[("wen", 1)], "ours@1": tab[("ours-fd", 1)], f"wen@{num_steps}": tab[("wen", num_steps)]})
    row["det_scores"] = {}  # (method, steps) -> (is memorized, score), in prompt order
    for m, k in (("wen", 1), ("ours-fd", 1), ("wen", num_steps)):
        got_ = sorted((int(r["prompt_index"]), float(r["score"])) for r in rows
                      if r["method"] == m and int(r["steps"]) == k)
        row["det_scores"][(m, k)] = (np.array([det_records[i]["category"] in MEMORIZED for i, _ in got_]),
                                     np.array([v for _, v in got_]))
    x_T = model.initial_noise([prompt_seed(seed, "figure 3", 0)])
    t0 = ddim_timesteps(model.num_train_timesteps, num_steps, model.steps_offset)[0]
    s2 = float(1 - model.alphas_cumprod[t0])
    mean_eig = {}
    key3 = lambda r: (str(r["caption"]), int(r["seed"]), int(r["t"]))
    with ResultWriter(out_dir / "fig3.csv", ("caption", "category", "seed", "t", "mean_eig_s2"), key3) as w:
        for cat in ("em", "nmem"):  # sep_per_category = 0: skipped (nan)
            caps = [r["caption"] for r in det_records if r["category"] == cat][:sep_per_category]
            for c in caps:
                r = {"caption": c, "category": cat, "seed": seed, "t": int(t0)}
                if not w.is_done(r):
                    v = float(torch.diagonal(score_jacobian(model, x_T[0], t0, model.encode([c]))).mean()) * s2
                    w.write({**r, "mean_eig_s2": f"{v:.8g}"})
    with (out_dir / "fig3.csv").open(newline="", encoding="utf-8") as f:
        f3 = {(r["caption"], int(r["seed"]), int(r["t"])): float(r["mean_eig_s2"]) for r in csv.DictReader(f)}
    for cat in ("em", "nmem"):
        caps = [r["caption"] for r in det_records if r["category"] == cat][:sep_per_category]
        mean_eig[cat] = float(np.median([f3[(c, seed, int(t0))] for c in caps])) if caps else float("nan")
    row["fig3_separation"] = mean_eig["em"] - mean_eig["nmem"]
    caps = [r["caption"] for r in sail_records]
    plan = [("none", 0.0), ("sail", sail_threshold)]
    for _ in run_mitigation(model, caps, plan, sail_n, out_dir, seed=seed, copy_scorer=copy_scorer,
                            references=reference_paths(sail_records, out_dir / "refs"),
                            model_name=getattr(model, "name", ""), log=lambda s: None, batch=32, sail_kw=sail_kw):
        pass
    want = {(j, c, m, fmt_setting(v), g) for j, c in enumerate(caps) for m, v in plan for g in range(sail_n)}
    res = [r for r in read_mitigation(out_dir) if int(r["seed"]) == seed and (int(r["prompt_index"]), r["prompt"],
           r["method"], r["setting"], int(r["generation"])) in want]
    row["sail_drop"], row["sail_drop_ci"], row["sail_prompts"] = paired_lead(
        res, ("sail", sail_threshold), ("none", 0.0)
    )
    return row


def reference_paths(records: list[dict], folder: str | Path, per_record: int = 8) -> list[list[Path]]:
    """PNG paths of each MiniSD record's training images (its first ``per_record`` ``train_ids``), written into
    ``folder`` once: the reference images the mitigation engine's copy scorer compares generations with."""
    train, folder = training_images(), Path(folder)
    out = []
    for r in records:
        paths_r = []
        for k in r["train_ids"][:per_record]:
            p = folder / f"{k}.png"
            if not p.exists():
                save_image(torch.from_numpy(train[k]).float() / 255, p)
            paths_r.append(p)
        out.append(paths_r)
    return out



# ---------------------------------------------------------------- Hessian spectra along the sampling path




