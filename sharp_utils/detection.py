"""Memorization detection on text-to-image pipelines: every method of Table 1 of Jeon et al. 2025, batched.

Each method is one function with one signature, ``method(model, batch, steps, opts) -> {steps: scores}``:
``batch`` holds B (prompt, generation) items, ``steps`` the requested step counts, and the result maps
each step count the method produced to a per-item tensor (B,) — higher = more likely memorized.  Tiled ℓ2
is the exception that needs all n generations of a prompt at once: it returns final images and is
reduced per prompt by :func:`sharp_utils.metrics.tiled_l2_score`.

:func:`detect` drives a model over prompts × generations with per-(prompt, generation) seeds, in UNet
batches that halve on out-of-memory, and yields one row per (prompt, method, steps, n).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import (STEP_METRICS, attention_entropy, channel_cosine, masked_wen_metric, summary_entropy,
                      tiled_l2_score, trajectory_metrics, wen_metric)
from .pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, PipelineScoreModel
from .sampling import ddim_timesteps, prompt_seed, sample_ddim


@dataclass
class Batch:
    """B (prompt, generation) items: initial noise, text embeddings and token bookkeeping."""

    x_T: Tensor
    cond: Tensor
    prompts: list[str]
    lengths: Tensor  # tokens incl. begin/end, clipped to the tokenizer's max length
    end_index: Tensor  # position of the end token


@dataclass
class DetectOptions:
    """Hyperparameters shared by the methods (defaults: App. D.1 of Jeon et al. 2025 and the cited papers)."""

    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    fd_rel_step: float | None = None  # None: h = √u (1+‖x‖)/‖v‖, u = unit roundoff of the model dtype
    le_layer: int = 3  # Ren et al.: 4th cross-attention layer in execution order (SD: down_blocks.1.attentions.1)
    be_layers: tuple[int, ...] = (0, 1)  # Chen et al.: the first two down-sampling cross-attention layers
    aniso_weight: float | None = None  # Asthana & Belagiannis: γ₂ = 2 (ε-prediction, SD1) / 0.1 (v, SD2)
    aniso_norm_weight: float = 1.0  # γ₁
    aniso_late_index: int = -3  # the late timestep: 3rd-last DDIM step (t = 41 of 1000 at 50 steps)


def _steps_ok(steps: Iterable[int], total: int, name: str) -> tuple[int, ...]:
    s = tuple(sorted(set(int(k) for k in steps)))
    if not s or s[0] < 1 or s[-1] > total:
        raise ValueError(f"{name}: steps {s} must lie in [1, {total}] (num_inference_steps={total})")
    return s


def _trajectory(model, batch: Batch, steps, opts: DetectOptions, metric: str) -> dict[int, Tensor]:
    s = _steps_ok(steps, opts.num_inference_steps, metric)
    out = trajectory_metrics(model, batch.x_T, batch.cond, None, s, opts.num_inference_steps, opts.guidance_scale,
                             (metric,), STEP_METRICS[metric].space, model.steps_offset, opts.fd_rel_step)
    return out[metric]


def trajectory_method(metric: str) -> Callable:
    """The detection method of a per-step metric of ``metrics.STEP_METRICS``, averaged over the first k steps."""

    def method(model, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
        return _trajectory(model, batch, steps, opts, metric)

    method.__name__ = metric.replace("-", "_")
    method.__doc__ = f"{STEP_METRICS[metric].about}, averaged over the first k DDIM steps (Jeon et al. 2025)."
    return method


TRAJECTORY_METHODS = {m: trajectory_method(m) for m in STEP_METRICS}
wen, ours_jvp, ours_fd = (TRAJECTORY_METHODS[m] for m in ("wen", "ours-jvp", "ours-fd"))


def layer_entropy(model: PipelineScoreModel, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
    """LE (Ren et al. 2024): entropy of the head- and pixel-averaged attention over tokens in one layer at step 1."""
    t = ddim_timesteps(model.num_train_timesteps, opts.num_inference_steps, model.steps_offset)[0]
    with model.recording() as store, torch.no_grad():
        model.model_output(batch.x_T, t, batch.cond)
        if not -len(store.token_means) <= opts.le_layer < len(store.token_means):
            raise ValueError(f"le_layer={opts.le_layer}: the UNet has {len(store.token_means)} cross-attention layers")
        return {1: attention_entropy(store.token_means[opts.le_layer]).cpu()}


def _sample_with_attention(model: PipelineScoreModel, batch: Batch, opts: DetectOptions, on_step: Callable,
                           map_tokens: Tensor | None = None, map_layers: tuple[int, ...] = ()) -> Tensor:
    """Guided DDIM from x_T recording the conditional pass's cross-attention; ``on_step(i, info, store)`` each step."""
    with model.recording(map_tokens, map_layers) as store:
        def cb(info):
            on_step(info["i"], info, store)
            store.reset()
        return sample_ddim(model, batch.x_T, batch.cond, None, opts.num_inference_steps, opts.guidance_scale,
                           model.steps_offset, callback=cb)


def average_entropy(model: PipelineScoreModel, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
    """AE (Ren et al. 2024's D): mean entropy over the last T/5 steps + mean |E^summary_t − E^summary_T| (App. D.1).

    E_t is the entropy of the token distribution averaged over heads, pixels and all cross-attention layers;
    summary tokens are the end token and the padding.  Ren et al.'s code uses the signed difference; we
    follow the formula printed in App. D.1 (absolute value).
    """
    T = opts.num_inference_steps
    T_D = max(1, T // 5)
    ent, summ, first_summ = [], [], []

    def on_step(i, info, store):
        abar = torch.stack(store.token_means).mean(0)  # (B, L): mean over layers (heads, pixels already)
        if i == 0:
            first_summ.append(summary_entropy(abar, batch.lengths))
        if i >= T - T_D:
            ent.append(attention_entropy(abar))
            summ.append(summary_entropy(abar, batch.lengths))

    _sample_with_attention(model, batch, opts, on_step)
    e = torch.stack(ent).mean(0)
    d = (torch.stack(summ) - first_summ[0]).abs().mean(0)
    return {T: (e + d).cpu()}


def bright_ending(model: PipelineScoreModel, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
    """BE (Chen et al. 2024): Wen's metric masked by the end token's attention map at the last step (App. D.1).

    The mask m is the end token's cross-attention over pixels, averaged over heads and the layers
    ``opts.be_layers``, at t = 1.  The masked metric ‖ε^Δ ∘ m‖/mean(m) is averaged over the first k steps
    of a pass with the same seed; as DDIM is deterministic that pass is the same trajectory, so the ε^Δ
    of the first max(k) steps are kept (on CPU) instead of sampling twice.
    """
    s = _steps_ok(steps, opts.num_inference_steps, "be")
    deltas: list[Tensor] = []
    last: dict[int, Tensor] = {}

    def on_step(i, info, store):
        if i < s[-1]:
            deltas.append((info["eps_c"] - info["eps_u"]).detach().float().cpu())
        if i == opts.num_inference_steps - 1:
            last.update(store.token_maps)

    _sample_with_attention(model, batch, opts, on_step, batch.end_index, opts.be_layers)
    h, w = batch.x_T.shape[-2:]
    maps = []
    for layer in opts.be_layers:
        if layer not in last:
            raise ValueError(
                f"be_layers={opts.be_layers}: layer {layer} was not recorded (too few cross-attention layers)"
            )
        m = last[layer].float().cpu()
        side = int(round(m.shape[1] ** 0.5))
        m = m.reshape(-1, 1, side, m.shape[1] // side)
        maps.append(
            m if m.shape[-2:] == (h, w) else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        )
    mask = torch.stack(maps).mean(0)[:, 0]
    per_step = torch.stack([masked_wen_metric(d, mask).double() for d in deltas])  # (k_max, B)
    return {k: per_step[:k].mean(0) for k in s}


def anisotropy(model, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
    """Asthana & Belagiannis 2026: γ₁‖ε_c − ε_u‖ at step 1 + γ₂ cos(ε_u, ε_c − ε_u) of the same x_T at a late timestep.

    The cosine is taken over channels at each latent pixel and averaged over pixels, as in their code;
    γ₁ = 1, γ₂ = 2 for ε-prediction (their SD1 setting) and 0.1 for v-prediction (SD2); the late timestep
    is the third-last DDIM step.  Both terms use ε (their SD2 code mixes v and scores).
    """
    ts = ddim_timesteps(model.num_train_timesteps, opts.num_inference_steps, model.steps_offset)
    t_late = ts[opts.aniso_late_index] if len(ts) >= abs(opts.aniso_late_index) else ts[-1]
    g2 = opts.aniso_weight if opts.aniso_weight is not None else (2.0 if model.prediction_type == "epsilon" else 0.1)
    with torch.no_grad():
        d1 = model.eps(batch.x_T, ts[0], batch.cond) - model.eps(batch.x_T, ts[0], None)
        eu = model.eps(batch.x_T, t_late, None)
        dl = model.eps(batch.x_T, t_late, batch.cond) - eu
    score = opts.aniso_norm_weight * wen_metric(d1).double() + g2 * channel_cosine(eu, dl).double()
    return {1: score.cpu()}


def final_images(model: PipelineScoreModel, batch: Batch, steps, opts: DetectOptions) -> dict[int, Tensor]:
    """Tiled ℓ2's per-item part: the decoded final image of each generation (reduced per prompt later)."""
    with torch.no_grad():
        z = sample_ddim(model, batch.x_T, batch.cond, None, opts.num_inference_steps, opts.guidance_scale,
                        model.steps_offset)
        return {opts.num_inference_steps: model.decode(z).cpu()}


@dataclass(frozen=True)
class Method:
    fn: Callable
    fixed_steps: str | None = None  # None: honours the requested steps; 'first' = 1; 'all' = num_inference_steps
    per_prompt: Callable | None = None  # reduces the n per-item outputs of a prompt; None = mean
    min_n: int = 1


METHODS: dict[str, Method] = {
    **{m: Method(f) for m, f in TRAJECTORY_METHODS.items()},  # wen, ours-jvp, ours-fd
    "tiled-l2": Method(final_images, "all", per_prompt=tiled_l2_score, min_n=2),
    "le": Method(layer_entropy, "first"),
    "ae": Method(average_entropy, "all"),
    "be": Method(bright_ending),
    "anisotropy": Method(anisotropy, "first"),
}


def method_steps(name: str, steps: Iterable[int], num_inference_steps: int) -> tuple[int, ...]:
    """The step counts a method reports for requested ``steps`` (LE/anisotropy: 1; AE/tiled ℓ2: all steps)."""
    m = METHODS[name]
    if m.fixed_steps == "first":
        return (1,)
    if m.fixed_steps == "all":
        return (num_inference_steps,)
    return _steps_ok(steps, num_inference_steps, name)


# ---------------------------------------------------------------- batching


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


def run_batched(
    fn: Callable[[slice], dict], n_items: int, batch_size: int, log: Callable[[str], None] = print
) -> tuple[dict, int]:
    """Run ``fn`` over item slices of at most ``batch_size``, halving the batch on out-of-memory.

    Concatenates the per-step tensors; returns (results, batch size that worked).  Per-item seeds make the
    results independent of the batch size.
    """
    parts: list[dict] = []
    i, bs = 0, max(1, int(batch_size))
    while i < n_items:
        sl = slice(i, min(n_items, i + bs))
        try:
            parts.append(fn(sl))
        except Exception as e:  # noqa: BLE001 - only OOM is retried
            if not is_oom(e) or bs == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            log(f"out of memory: batch size halved to {bs}")
            continue
        i = sl.stop
    keys = parts[0].keys()
    return {k: torch.cat([p[k] for p in parts]) for k in keys}, bs


# ---------------------------------------------------------------- the engine


def make_batch(model: PipelineScoreModel, prompts: list[str], seeds: list[int], emb: dict[str, Tensor]) -> Batch:
    lengths = torch.tensor([min(n, model.max_tokens) for n in model.token_lengths(prompts)])
    conds = [emb[p] for p in prompts]  # text embeddings (1, L, D), or one-key lists (exact models)
    cond = torch.cat(conds) if isinstance(conds[0], Tensor) else [k for c in conds for k in c]
    return Batch(x_T=model.initial_noise(seeds), cond=cond, prompts=list(prompts),
                 lengths=lengths, end_index=lengths - 1)


def detect(
    model: PipelineScoreModel,
    prompts: list[str],
    methods: Iterable[str] = ("ours-fd",),
    steps: Iterable[int] = (1,),
    ns: Iterable[int] = (4,),
    seed: int = 0,
    batch_size: int = 16,
    opts: DetectOptions | None = None,
    done: Callable[[int, str, str, int, int], bool] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> Iterator[dict]:
    """Detection scores for ``prompts``: yields one row per (prompt, method, steps, n) as soon as it is known.

    Generation g of prompt p starts from the seed :func:`sharp_utils.pipeline.prompt_seed` (seed, p, g);
    n ∈ ``ns`` uses the first n generations, so every n comes from one run of max(ns) generations.
    ``done(index, prompt, method, steps, n)`` lets a resumed run skip finished rows.  Rows hold
    prompt_index, prompt, method, steps, n, score, seed and seconds (wall time of the prompt's share of
    its batch; shared by the step counts that one trajectory produced).
    """
    from tqdm import tqdm

    opts = opts or DetectOptions()
    methods, ns = list(methods), sorted(set(int(n) for n in ns))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are unknown: use {sorted(METHODS)}")
    if not ns or ns[0] < 1:
        raise ValueError(f"n must be ≥ 1, got {ns}")
    n_max = ns[-1]
    per_chunk = max(1, batch_size // n_max)
    done = done or (lambda *a: False)
    bar = tqdm(total=len(prompts) * len(methods), disable=not progress, desc="detect", unit="prompt·method")
    for c0 in range(0, len(prompts), per_chunk):
        idx = list(range(c0, min(len(prompts), c0 + per_chunk)))
        chunk = [prompts[i] for i in idx]
        emb = None
        for name in methods:
            meth = METHODS[name]
            msteps = method_steps(name, steps, opts.num_inference_steps)
            use_ns = [n for n in ns if n >= meth.min_n]
            todo = [(i, p) for i, p in zip(idx, chunk)
                    if any(not done(i, p, name, k, n) for k in msteps for n in use_ns)]
            if not todo or not use_ns:
                bar.update(len(chunk))
                continue
            if emb is None:
                emb = {p: model.encode([p]) for p in dict.fromkeys(chunk)}
            items = [(p, g) for _, p in todo for g in range(n_max)]
            seeds = [prompt_seed(seed, p, g) for p, g in items]
            t0 = time.perf_counter()

            def run(sl, items=items, seeds=seeds):
                b = make_batch(model, [p for p, _ in items[sl]], seeds[sl], emb)
                return meth.fn(model, b, msteps, opts)

            res, _ = run_batched(run, len(items), batch_size, log)
            secs = (time.perf_counter() - t0) / len(todo)
            for j, (i, p) in enumerate(todo):
                for k in msteps:
                    per_item = res[k][j * n_max:(j + 1) * n_max]
                    for n in use_ns:
                        if done(i, p, name, k, n):
                            continue
                        score = (
                            meth.per_prompt(per_item[:n]) if meth.per_prompt else float(per_item[:n].double().mean())
                        )
                        yield {"prompt_index": i, "prompt": p, "method": name, "steps": k, "n": n,
                               "score": float(score), "seed": seed, "seconds": secs}
            bar.update(len(chunk))
    bar.close()
