"""An exact density as a pipeline (:class:`ExactPipeline`): the ideal model of a stand-in's training set
(:class:`sharp_utils.exact.ExactDensityModel`; builders beside each stand-in's data, ``toy.mnist_exact`` and
``minisd.training_set.minisd_exact``) behind the interface that :func:`sharp_utils.detection.detect`, SAIL and the
mitigation runner use, so every method runs on the exact density and on the network through the same code; and
guided DDIM samples of an exact density from the networks' per-(prompt, generation) seeds.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .exact import ExactDensityModel
from .metrics import STEP_METRICS
from .sampling import per_sample_noise, prompt_seed, sample_ddim
from .scores import ScoreModel


def exact_sample(model: ExactDensityModel, prompts: list[str], latent_shape: tuple[int, ...], n: int = 1, seed: int = 0,
                 num_steps: int = 50, guidance_scale: float = 7.5, steps_offset: int = 1) -> Tensor:
    """Guided DDIM samples of the exact model (float64, (P·n, *latent_shape)) from the seeds of ``detect``."""
    items = [(p, g) for p in prompts for g in range(n)]
    x_T = per_sample_noise([prompt_seed(seed, p, g) for p, g in items], latent_shape).double()  # a network's x_T
    cond = [None if p == "" else p for p, _ in items]
    return sample_ddim(model, x_T, cond, None, num_steps, guidance_scale, steps_offset)


class ExactPipeline(ScoreModel):
    """A pipeline's face on an exact density, for SAIL and the mitigation runner (:mod:`sharp_utils.tradeoff`).

    Conditions are caption keys (``encode`` maps ``""`` to the unconditional pool); x_T comes from the same
    per-seed generators as the pipeline's, in ``dtype``; latents become images through the pipeline's VAE.
    """

    methods = (*STEP_METRICS, "tiled-l2")  # the detection methods that need no attention maps
    mitigation_methods = ("none", "sail")  # the others edit the text or its attention: no exact counterpart

    def __init__(self, exact: ExactDensityModel, pipe=None, dtype: torch.dtype = torch.float64, name: str = "exact",
                 latent_shape: tuple[int, ...] | None = None, steps_offset: int = 1):
        """``pipe`` (a network pipeline of the same latent space) gives the latent shape, the step offset, the
        tokenizer's lengths and the VAE; without it, give ``latent_shape`` (and ``steps_offset``): no images."""
        self.exact, self.pipe, self.name = exact, pipe, name
        self.alphas_cumprod = exact.alphas_cumprod
        self.prediction_type = "epsilon"
        self.steps_offset = int(pipe.steps_offset if pipe is not None else steps_offset)
        self.latent_shape = tuple(pipe.latent_shape if pipe is not None else latent_shape)
        self.device, self.dtype = torch.device("cpu"), dtype

    def encode(self, prompts: list[str]) -> list:
        return [None if p == "" else p for p in prompts]

    @property
    def max_tokens(self) -> int:
        return self.pipe.max_tokens if self.pipe is not None else 10**6

    def token_lengths(self, prompts: list[str]) -> list[int]:
        return self.pipe.token_lengths(prompts) if self.pipe is not None else [len(p.split()) + 2 for p in prompts]

    def over_length(self, prompts: list[str]) -> list[str]:
        return self.pipe.over_length(prompts) if self.pipe is not None else []

    def initial_noise(self, seeds) -> Tensor:
        """The network pipeline's x_T (drawn in float32) in ``dtype``."""
        return per_sample_noise(seeds, self.latent_shape).to(self.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        if self.pipe is None:
            raise ValueError("this exact density has no VAE: build ExactPipeline(exact, pipe) with a network pipeline")
        return self.pipe.decode(latents.to(self.pipe.device, self.pipe.dtype))

    def model_output(self, x: Tensor, t: int, cond=None) -> Tensor:
        return self.exact.model_output(x, t, cond)
