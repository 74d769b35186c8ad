"""Every model this project names, resolved in one place: its loader, prompt sets, mitigation grids, training data
and exact density (the ideal model of its training set).

Names: ``toy2d`` (Figure 1's 2D mixture), ``mnist-appc`` / ``mnist-coupled`` (Figure 2's MNIST 9-vs-3 designs),
``minisd`` / ``minisd-coupled`` (MiniSD v2 and the first MiniSD, Stable Diffusion's stand-ins), ``exact:<name>[:<option>
…]`` (the exact density of that model's training set; MiniSD's options are the unconditional pool and the EM
captions, MNIST's the pool), and any other string: a local diffusers Stable Diffusion folder or a hub id.
Adding a stand-in is one :class:`ModelSpec` in ``SPECS`` plus its data module (docs/development.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from . import paths
from .exact_pipeline import ExactPipeline
from .minisd.model import CHECKPOINTS as MINISD_CHECKPOINTS
from .minisd.model import pipeline_dir
from .minisd.training_set import minisd_exact, training_data
from .pipeline import PipelineLoadError, load_pipeline
from .prompts import read_prompts, sd_prompt_file
from .toy import mnist_9_vs_3, mnist_exact, toy_mixture_data
from .toy_figures import MNIST_DIRS, TOY2D_DIR, load_mnist, load_toy2d
from .tradeoff import SETTINGS, sd_version

EXACT = "exact:"


@dataclass(frozen=True)
class ModelSpec:
    """One model name: how to load it and what belongs to it (None where a model has no such thing)."""

    name: str
    family: str  # "toy2d" | "mnist" | "minisd" | "sd"
    about: str
    load: Callable[..., Any]  # load(device=, dtype=, **options) -> a ScoreModel
    design: str | None = None  # the training design of a stand-in (MNIST: 'appc' / 'coupled'; MiniSD: 'v2' / ...)
    checkpoint: Path | None = None
    prompt_records: Callable[..., list[dict]] | None = None  # prompt_records(split, version) -> records
    grids: dict[str, tuple[float, ...]] | None = None  # mitigation settings per method (SD: App. D.2's per version)
    training_data: Callable[[], Any] | None = None
    exact: Callable[..., Any] | None = None  # exact(loaded model, *options) -> ExactDensityModel
    exact_options: tuple[tuple[str, ...], ...] = ()  # the allowed values of each option; the first is the default
    base: str | None = None  # for "exact:…": the learned model whose training set it is
    options: tuple[str, ...] = field(default=())  # for "exact:…": the options in force

    @property
    def text_to_image(self) -> bool:
        """Prompts in, images out: what the CLI's detection and mitigation run on."""
        return self.family in ("minisd", "sd")


# ---------------------------------------------------------------- loaders


def _load_toy2d(device=None, dtype="float32", **kw):
    return load_toy2d(device=device or "cpu", **kw)


def _load_mnist(design):
    def load(device=None, dtype="float32", **kw):
        return load_mnist(device=device or "cpu", design=design, **kw)

    return load


def _mnist_exact(_model, pool):
    return mnist_exact(pool)


def _load_minisd(design):
    def load(device=None, dtype="float32", **kw):
        return load_pipeline(pipeline_dir(MINISD_CHECKPOINTS[design]), dtype=dtype, device=device or "cpu")

    return load


def _minisd_records(split: str = "eval", version: str = "sd1") -> list[dict]:
    if split not in ("dev", "eval"):
        raise ValueError(f"split {split!r} is unknown: use 'dev' or 'eval'")
    path = paths.PROMPTS / f"minisd_{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `python -m sharp_utils.minisd.train prepare "
            "--out .device/minisd_prep.safetensors`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sd_records(split: str = "eval", version: str = "sd1") -> list[dict]:
    """The paper's SD prompt sets of ``version`` (no split: the full sets), categories mem / nmem."""
    return [{"caption": p, "category": cat} for cat in ("mem", "nmem")
            for p in read_prompts(sd_prompt_file(f"{version}_{cat}.txt")).prompts]


_MINISD_SHARED = {"rta": (1, 2, 4, 6, 8), "rna": (1, 2, 4, 6, 8), "ren": (1.1, 1.2, 1.25, 1.3, 1.5), "none": (0,)}

SPECS: dict[str, ModelSpec] = {
    "toy2d": ModelSpec("toy2d", "toy2d", "Figure 1's 2D Gaussian mixture (time-conditioned MLP)", _load_toy2d,
                       checkpoint=TOY2D_DIR, training_data=toy_mixture_data),
    "mnist-appc": ModelSpec("mnist-appc", "mnist", "MNIST 9-vs-3, App. C's design (unconditional branch on all data)",
                            _load_mnist("appc"), design="appc", checkpoint=MNIST_DIRS["appc"],
                            training_data=partial(mnist_9_vs_3, design="appc"), exact=_mnist_exact,
                            exact_options=(("appc", "coupled"),)),
    "mnist-coupled": ModelSpec("mnist-coupled", "mnist", "MNIST 9-vs-3, coupled design (one training set for both "
                               "branches)", _load_mnist("coupled"), design="coupled",
                               checkpoint=MNIST_DIRS["coupled"], training_data=partial(mnist_9_vs_3, design="coupled"),
                               exact=_mnist_exact, exact_options=(("coupled", "appc"),)),
    # MiniSD's grids: SAIL (official loss, α = 0.05) and Wen's ℓ_target calibrated on the *dev* split as the 10/25/50/
    # 75/90 % quantiles of the initial objective over non-memorized prompts (calibration.calibrate_sail_grid,
    # calibrate_wen_grid; printed by `python -m sharp_utils.minisd.train calibrate --model NAME`). Memorized dev
    # prompts' Wen medians for comparison: 1.018 (first MiniSD), 0.958 (v2). SAIL's grids were recalibrated when its
    # first round began starting from the generation seeds (2026-12-05).
    "minisd": ModelSpec("minisd", "minisd", "MiniSD v2, in SD's memorization regime (App. C's principle)",
                        _load_minisd("v2"), design="v2", checkpoint=MINISD_CHECKPOINTS["v2"],
                        prompt_records=_minisd_records,
                        grids={"sail": (1.325, 1.443, 1.606, 1.792, 1.978),
                               "wen": (0.486, 0.582, 0.711, 0.896, 1.071), **_MINISD_SHARED},
                        training_data=partial(training_data, "v2"), exact=minisd_exact,
                        exact_options=(("appc", "coupled"), ("dominant", "single"))),
    "minisd-coupled": ModelSpec("minisd-coupled", "minisd", "the first MiniSD (coupled design, outside SD's regime)",
                                _load_minisd("coupled"), design="coupled",
                                checkpoint=MINISD_CHECKPOINTS["coupled"],
                                prompt_records=_minisd_records,
                                grids={"sail": (1.336, 1.428, 1.568, 1.771, 1.948),
                                       "wen": (0.512, 0.582, 0.707, 0.884, 1.07), **_MINISD_SHARED},
                                training_data=partial(training_data, "coupled"), exact=minisd_exact,
                                exact_options=(("coupled", "appc"), ("single", "dominant"))),
}


def _with_defaults(base: ModelSpec, given) -> tuple[str, ...]:
    """Exact-density options: the ``given`` ones, then the model's own for the rest."""
    return tuple(given) + tuple(o[0] for o in base.exact_options[len(given):])


def _exact_usage() -> str:
    return "; ".join(f"exact:{n}" + "".join(f"[:<{'|'.join(o)}>" for o in s.exact_options) + "]" * len(s.exact_options)
                     for n, s in SPECS.items() if s.exact)


def spec(name: str) -> ModelSpec:
    """The spec of a model name (module docstring); an unknown "exact:…" name raises, naming the valid ones."""
    name = str(name)
    if name in SPECS:
        return SPECS[name]
    if name.startswith(EXACT):
        parts = name.split(":")
        base = SPECS.get(parts[1]) if len(parts) > 1 else None
        if base is None or base.exact is None or len(parts) - 2 > len(base.exact_options) or any(
                p not in allowed for p, allowed in zip(parts[2:], base.exact_options)):
            raise PipelineLoadError(f"model {name!r}: exact densities exist for the stand-ins' training sets only: "
                                    + _exact_usage())
        options = _with_defaults(base, parts[2:])

        def load(device=None, dtype="float32", **kw):
            learned = base.load(device="cpu", dtype="float32")
            if base.family != "minisd":
                return base.exact(learned, *options)
            return exact_pipeline(base.name, learned, *parts[2:])

        return replace(base, name=name, about=f"the exact density of {base.name}'s training set {options}",
                       load=load, base=base.name, options=options)
    return ModelSpec(name, "sd", "a Stable Diffusion pipeline (diffusers folder or hub id)",
                     lambda device=None, dtype="float32", **kw: load_pipeline(name, dtype=dtype, device=device),
                     prompt_records=_sd_records)


def load_model(name: str = "minisd", device: str | None = None, dtype: str = "float32", **options):
    """Load a model by name (``options`` go to its loader, e.g. ``retrain=`` for the toy models)."""
    return spec(name).load(device=device, dtype=dtype, **options)


def load_text_to_image(name: str, device: str | None = None, dtype: str = "float32"):
    """Load a text-to-image model (MiniSD, its exact densities, an SD folder); the toy models raise, naming the fix."""
    s = spec(name)
    if not s.text_to_image:
        raise PipelineLoadError(f"model {name!r} is {s.about}, not a text-to-image model: give minisd, "
                                "minisd-coupled, exact:minisd[:…] or a Stable Diffusion folder")
    return s.load(device=device, dtype=dtype)


def is_minisd(name: str) -> bool:
    """A MiniSD model, or the exact density of its training set (same prompts, scorers and training images)."""
    return spec(name).family == "minisd"


def design(name: str) -> str:
    """The training design of a stand-in (learned or exact)."""
    d = spec(name).design
    if d is None:
        raise ValueError(f"model {name!r} has no training design: it is not one of this project's stand-ins")
    return d


def prompt_records(name: str = "minisd", split: str = "eval", version: str = "sd1") -> list[dict]:
    """Prompt records with 'caption' and 'category' (MiniSD: em / pm / nmem with train_ids, split 'dev' or 'eval'
    fixed before tuning; SD: the paper's mem / nmem sets of ``version``, no split)."""
    s = spec(name)
    if s.prompt_records is None:
        raise ValueError(f"model {name!r} has no prompt sets: it is not a text-to-image model")
    return s.prompt_records(split, version)


def mitigation_grids(name: str, model=None) -> dict[str, tuple[float, ...]]:
    """Figure 6's settings per method: a stand-in's calibrated grids, or App. D.2's for an SD pipeline's version
    (``model``, loaded, tells SD 1 from SD 2)."""
    s = spec(name)
    if s.grids is not None:
        return s.grids
    return SETTINGS["sd1" if model is None else sd_version(model)]


def own_exact_options(name: str) -> tuple[str, ...]:
    """The options of a stand-in's own training density (MiniSD v2: ("appc", "dominant"); the first MiniSD:
    ("coupled", "single"))."""
    s = spec(name)
    return s.options if s.base else _with_defaults(s, ())


def exact_density(name: str, model=None, *options):
    """The exact density of a stand-in's training set (its own pools unless ``options`` say otherwise); ``model``
    is the loaded network whose VAE gives MiniSD's latents."""
    s = spec(name)
    base = SPECS[s.base] if s.base else s
    if base.exact is None:
        raise ValueError(f"model {name!r} has no exact density: " + _exact_usage())
    return base.exact(model, *(tuple(options) + own_exact_options(name)[len(options):]))


def exact_pipeline(name: str, model, *options) -> ExactPipeline:
    """A MiniSD model's exact density behind the pipeline interface, with ``model``'s (the loaded network's) VAE,
    tokenizer and x_T; named as the registry resolves it: ``exact:<name>[:<options given>]``."""
    return ExactPipeline(exact_density(name, model, *options), model,
                         name=":".join(["exact", spec(name).base or name, *options]))
