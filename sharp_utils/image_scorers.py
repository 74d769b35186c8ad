"""Copy and alignment scores of generated images (Figure 6's axes), behind one small interface.

A *copy scorer* embeds images; the copy score of a generation is the largest cosine similarity between its
embedding and those of the prompt's training image(s) (Somepalli et al. 2023's SSCD similarity, max over
references).  An *alignment scorer* gives the cosine similarity of an image and a caption (CLIP score,
Radford et al. 2021, without the ×100 of some papers).  Images are float tensors (B, 3, H, W) in [0, 1].

Implementations: :class:`SSCDCopyScorer` (a local SSCD TorchScript file), :class:`CLIPAlignmentScorer`
(a local ``transformers`` CLIP folder), :class:`PixelCopyScorer` (a model-free stand-in: centred grey
thumbnails; for tests and tiny pipelines, not a substitute for SSCD).  MiniSD registers its own pair.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class ScorerError(ValueError):
    """A scorer that cannot be loaded or applied; the message names the fix."""


class CopyScorer(Protocol):
    name: str

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D) unit-norm descriptors."""


class AlignmentScorer(Protocol):
    name: str

    def score(self, images: Tensor, prompts: list[str]) -> Tensor:
        """(B, 3, H, W) in [0, 1] and B captions → (B,) image–text similarity."""


def copy_scores(scorer: CopyScorer, images: Tensor, references: list[Tensor]) -> Tensor:
    """Copy score of each image: max cosine similarity to its own reference images (list of (R_i, 3, H, W))."""
    if len(references) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(references)} reference sets")
    g = scorer.embed(images)
    out = []
    for i, refs in enumerate(references):
        if refs is None or len(refs) == 0:
            out.append(float("nan"))
            continue
        out.append(float((scorer.embed(refs) @ g[i]).max()))
    return torch.tensor(out)


class PixelCopyScorer:
    """Cosine similarity of mean-centred grey ``size``×``size`` thumbnails (model-free stand-in for SSCD)."""

    name = "pixel"

    def __init__(self, size: int = 32):
        self.size = size

    def embed(self, images: Tensor) -> Tensor:
        g = F.interpolate(images.float().mean(1, keepdim=True), size=(self.size, self.size), mode="area").flatten(1)
        return F.normalize(g - g.mean(1, keepdim=True), dim=1)


class SSCDCopyScorer:
    """SSCD (Pizzi et al. 2022) from a local TorchScript file (e.g. ``sscd_disc_mixup.torchscript.pt``).

    Preprocessing as SSCD's README: resize the short side to 288 px, ImageNet mean/std normalisation.
    TorchScript archives are loaded with ``torch.jit.load`` (TorchScript's own loader, no Python unpickling of
    arbitrary objects); only load files you trust.
    """

    name = "sscd"
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", size: int = 288):
        path = Path(path)
        if not path.is_file():
            raise ScorerError(f"{path}: no SSCD TorchScript file there; download sscd_disc_mixup.torchscript.pt "
                              "(github.com/facebookresearch/sscd-copy-detection) and pass its path")
        try:
            with warnings.catch_warnings():  # SSCD ships only as TorchScript, which torch now marks deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise ScorerError(
                f"{path}: not a TorchScript archive ({str(e).splitlines()[0]}); give SSCD's .torchscript.pt"
            ) from None
        self.device, self.size = torch.device(device), size

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        x = images.float().to(self.device)
        h, w = x.shape[-2:]
        s = self.size / min(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False)
        x = (x - torch.tensor(self.MEAN, device=x.device)[:, None, None]) / torch.tensor(self.STD, device=x.device)[
            :, None, None
        ]
        return F.normalize(self.model(x).float(), dim=1).cpu()


class CLIPAlignmentScorer:
    """CLIP score: cosine of ``CLIPModel`` image and text embeddings, from a local folder (or a hub id)."""

    name = "clip"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise ScorerError(f"{path}: cannot load a CLIP model and processor there ({str(e).splitlines()[0][:120]}); "
                              "give a folder saved by CLIPModel/CLIPProcessor.save_pretrained "
                              "(e.g. openai/clip-vit-large-patch14)") from None
        self.device = torch.device(device)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: list[str]) -> Tensor:
        arr = [np.asarray((im.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu()) for im in images]
        inp = self.processor(text=list(prompts), images=arr, return_tensors="pt", padding="max_length", truncation=True)
        inp = {k: v.to(self.device) for k, v in inp.items()}
        out = self.model(**inp)
        i = F.normalize(out.image_embeds.float(), dim=1)
        t = F.normalize(out.text_embeds.float(), dim=1)
        return (i * t).sum(1).cpu()


def load_image(path: str | Path) -> Tensor:
    """An image file → (3, H, W) float in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise ScorerError(
            f"{path}: cannot read it as an image ({type(e).__name__}); give PNG/JPEG reference images"
        ) from None
    return torch.from_numpy(a).permute(2, 0, 1)


def save_image(image: Tensor, path: str | Path) -> None:
    """(3, H, W) in [0, 1] → PNG."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    a = (image.detach().float().clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(a).save(path)
