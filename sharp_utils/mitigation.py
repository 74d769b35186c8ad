"""Inference-time mitigation: SAIL (§5 and Algorithm 2 of Jeon et al. 2025) and the four baselines of Figure 6.

Every method returns what generation needs — initial noises x_T (SAIL), prompts (RTA/RNA), text embeddings
(Wen et al.) or an attention-rescaling setting (Ren et al.) — and :func:`generate` turns it into latents by
the usual guided DDIM, so the comparison differs only in the intervention.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .pipeline import PipelineScoreModel
from .sampling import ddim_timesteps, prompt_seed, sample_ddim
from .scores import repeat_condition

SAIL_LOSSES = ("paper", "official")
# App. D.2: α and the ℓ_thres grid per SD version; the grids are on the scale of the official loss
# ‖ε^Δ(x_T + d̂)‖ + α‖x_T‖ (α‖x_T‖ ≈ 0.05·128 = 6.4 for SD1's 16,384-d latents).
SAIL_DEFAULTS = {
    "sd1": {"alpha": 0.05, "thresholds": (7.6, 7.8, 8.2, 8.6, 9.0)},
    "sd2": {"alpha": 0.01, "thresholds": (4.0, 4.5, 5.0, 5.5, 6.0)},
}


class MitigationError(RuntimeError):
    """Optimisation diverged or found nothing; the message names the setting to change."""


@dataclass
class SailResult:
    x_T: Tensor  # (n, C, h, w) accepted initial noises, in acceptance order
    losses: list[float]  # loss of each accepted candidate when it passed
    steps: list[int]  # optimisation steps each needed
    threshold: float  # the threshold finally used (raised by the fallback)
    rounds: int
    prior_ratio: list[float] = field(default_factory=list)  # ‖x_T‖²/d of each accepted x_T (≈ 1 under N(0, I))
    seeds: list[int] = field(default_factory=list)  # the seed each accepted x_T was drawn from (before optimisation)


def sail_objective(
    model, x: Tensor, t: int, cond: Tensor, alpha: float, loss: str = "paper", delta: float = 1.0
) -> Tensor:
    """SAIL's per-candidate objective at t = T−1 (§5.1, Algorithm 2 of Jeon et al. 2025).

    ``paper``: ‖s^Δ(x + δ ŝ) − s^Δ(x)‖² + α‖x‖² with ŝ = s^Δ(x)/‖s^Δ(x)‖ (Alg. 2 normalises the step; δ = 1
    as in the official code), the Taylor form of ‖H^Δ s^Δ‖ · δ.  ``official``: ‖ε^Δ(x + ε̂)‖ + α‖x‖ with
    ε̂ the unit-norm ε^Δ(x) — the official code's variant (no square, no subtraction, ε-space).
    """
    if loss not in SAIL_LOSSES:
        raise ValueError(f"loss {loss!r} is unknown: use one of {SAIL_LOSSES}")
    space = "score" if loss == "paper" else "eps"
    f = model.delta_fn(t, cond, None, space)
    d0 = f(x)
    step = d0 / d0.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (x.ndim - 1)))
    d1 = f(x + delta * step)
    xn = x.flatten(1).norm(dim=1)
    if loss == "paper":
        return (d1 - d0).flatten(1).pow(2).sum(1) + alpha * xn.pow(2)
    return d1.flatten(1).norm(dim=1) + alpha * xn


def sail_seeds(prompt: str, rnd: int, budget: int, seed: int = 0) -> list[int]:
    """Seeds of SAIL's ``budget`` candidate x_T in round ``rnd``: round 0 starts from the generation seeds (candidate
    c = the unmitigated run's generation c, so an x_T accepted unchanged gives the unmitigated image); later rounds
    draw fresh seeds."""
    if rnd == 0:
        return [prompt_seed(seed, prompt, c) for c in range(budget)]
    return [prompt_seed(seed, f"{prompt}\x1fsail-round-{rnd}", c) for c in range(budget)]


def sail(model: PipelineScoreModel, prompt: str, n: int, threshold: float, alpha: float = 0.05, loss: str = "paper",
         budget: int = 8, lr: float = 0.05, max_steps: int = 50, fallback: bool = True, max_rounds: int = 12,
         seed: int = 0, num_inference_steps: int = 50, delta: float = 1.0, cond: Tensor | None = None,
         callback=None) -> SailResult:
    """SAIL: optimise ``budget`` candidate x_T with Adam until n reach loss ≤ ℓ_thres (Algorithm 2 of Jeon et al. 2025).

    Each candidate stops (its x_T frozen) the first time its loss is ≤ ``threshold``.  After ``max_steps``
    without n accepted, a new round starts from fresh seeds; with ``fallback`` (the official code's rule)
    ℓ_thres rises by 0.1 every third round.  After ``max_rounds`` a :class:`MitigationError` is raised.
    NaN or infinite losses raise at once.  ``callback`` gets {'round', 'step', 'loss'} each step.  ``cond``
    (1, L, D) replaces the prompt's encoding (the prompt then only names the seeds).
    """
    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    cond = model.encode([prompt]) if cond is None else cond
    accepted: list[Tensor] = []
    losses, steps, from_seed = [], [], []
    thres = float(threshold)
    d = None
    for rnd in range(max_rounds):
        seeds = sail_seeds(prompt, rnd, budget, seed)
        x = model.initial_noise(seeds).float().clone().requires_grad_(True)
        d = x[0].numel()
        opt = torch.optim.Adam([x], lr=lr)
        frozen = torch.zeros(budget, dtype=torch.bool, device=x.device)
        for step in range(max_steps + 1):
            L = sail_objective(model, x.to(model.dtype), t, repeat_condition(cond, budget), alpha, loss, delta).float()
            if not torch.isfinite(L).all():
                raise MitigationError(
                    f"SAIL loss became {L[~torch.isfinite(L)][0].item()} at round {rnd}, step {step}: "
                    "lower lr (default 0.05) or run the model in float32"
                )
            if callback is not None:
                callback({"round": rnd, "step": step, "loss": L.detach()})
            newly = (L.detach() <= thres) & ~frozen
            for i in torch.nonzero(newly).flatten().tolist():
                if len(accepted) < n:
                    accepted.append(x[i].detach().clone())
                    losses.append(float(L[i].detach()))
                    steps.append(step)
                    from_seed.append(seeds[i])
            frozen |= newly  # an accepted x_T was copied when it passed; later moves of it are never used
            if len(accepted) >= n or step == max_steps or frozen.all():
                break
            opt.zero_grad()
            L.sum().backward()
            opt.step()
        if len(accepted) >= n:
            break
        if fallback and (rnd + 1) % 3 == 0:
            thres += 0.1
    else:
        raise MitigationError(
            f"SAIL accepted {len(accepted)}/{n} candidates for {prompt[:60]!r} after {max_rounds} rounds "
            f"(final ℓ_thres {thres:.2f}): raise --threshold or max_steps"
        )
    xs = torch.stack(accepted[:n])
    ratio = (xs.flatten(1).pow(2).sum(1) / d).tolist()
    return SailResult(xs.to(model.device, model.dtype), losses[:n], steps[:n], thres, rnd + 1, ratio, from_seed[:n])


# ---------------------------------------------------------------- prompt perturbations (Somepalli et al. 2023b)


def _insert_words(prompt: str, words: list[str], rng: random.Random) -> str:
    out = prompt.split()
    for w in words:
        out.insert(rng.randint(0, len(out)), w)
    return " ".join(out)


def random_token_addition(prompt: str, k: int, vocab: list[str], seed: int) -> str:
    """RTA: insert k random vocabulary words at random word positions (Somepalli et al. 2023b; App. D.2)."""
    rng = random.Random(seed)
    return _insert_words(prompt, [rng.choice(vocab) for _ in range(k)], rng)


def random_number_addition(prompt: str, k: int, seed: int) -> str:
    """RNA: insert k random integers in [0, 10⁶) at random word positions (Somepalli et al. 2023b; App. D.2)."""
    rng = random.Random(seed)
    return _insert_words(prompt, [str(rng.randrange(10**6)) for _ in range(k)], rng)


def word_vocabulary(tokenizer) -> list[str]:
    """Whole-word alphabetic entries of a CLIP-style BPE vocabulary (``word</w>``), for RTA."""
    words = sorted(
        {tok[:-4] for tok in tokenizer.get_vocab() if tok.endswith("</w>") and re.fullmatch(r"[a-z]{2,}", tok[:-4])}
    )
    if not words:  # byte-level toy tokenizers: fall back to letters
        words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return words


# ---------------------------------------------------------------- Wen et al. 2024: text-embedding optimisation


def wen_embedding_optimization(model: PipelineScoreModel, prompt: str, x_T: Tensor, target: float, lr: float = 0.05,
                               max_iters: int = 10, num_inference_steps: int = 50) -> tuple[Tensor, list[float]]:
    """Wen et al. 2024: AdamW on the prompt embedding to make ‖ε(x_T, c) − ε(x_T, ∅)‖ ≤ ℓ_target at step 1 (App. D.2).

    The loss is the mean over the n initial noises ``x_T``; returns (embedding (1, L, D), losses).
    """
    t = ddim_timesteps(model.num_train_timesteps, num_inference_steps, model.steps_offset)[0]
    emb = model.encode([prompt]).detach().float().clone().requires_grad_(True)
    opt = torch.optim.AdamW([emb], lr=lr)
    with torch.no_grad():
        eps_u = model.eps(x_T, t, None)
    hist = []
    for _ in range(max_iters):
        eps_c = model.eps(x_T, t, emb.to(model.dtype).expand(x_T.shape[0], -1, -1))
        L = (eps_c - eps_u).flatten(1).norm(dim=1).mean()
        if not torch.isfinite(L):
            raise MitigationError("Wen et al.'s embedding optimisation diverged: lower lr (default 0.05)")
        hist.append(float(L.detach()))
        if L.item() <= target:
            break
        opt.zero_grad()
        L.backward()
        opt.step()
    return emb.detach().to(model.dtype), hist


# ---------------------------------------------------------------- Ren et al. 2024: attention re-scaling


def summary_token_mask(model: PipelineScoreModel, prompts: list[str]) -> Tensor:
    """(B, L) True at the summary tokens (end token and padding) — the tokens Ren et al.'s mitigation masks."""
    lengths = torch.tensor([min(n, model.max_tokens) for n in model.token_lengths(prompts)])
    return torch.arange(model.max_tokens)[None, :] >= (lengths[:, None] - 1)


# ---------------------------------------------------------------- generation


def generate(model: PipelineScoreModel, x_T: Tensor, cond: Tensor, guidance_scale: float | list[float] = 7.5,
             num_inference_steps: int = 50, bos_scale: float = 1.0, token_mask: Tensor | None = None) -> Tensor:
    """Guided DDIM from ``x_T`` with text embeddings ``cond``; Ren et al.'s rescaling when ``bos_scale`` ≠ 1 or a mask.

    The rescaling acts on the conditional branch only (∅ has no trigger tokens to mask).
    """
    with torch.no_grad():
        if bos_scale != 1.0 or token_mask is not None:
            with model.attention_rescaling(bos_scale, token_mask):
                return sample_ddim(model, x_T, cond, None, num_inference_steps, guidance_scale, model.steps_offset)
        return sample_ddim(model, x_T, cond, None, num_inference_steps, guidance_scale, model.steps_offset)
