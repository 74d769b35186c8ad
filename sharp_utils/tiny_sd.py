"""Tiny Stable Diffusion pipelines with random weights, built from configs (no download).

They have SD's exact architecture family — ``UNet2DConditionModel`` with cross-attention,
``AutoencoderKL``, a CLIP text encoder with a locally built byte-level BPE tokenizer, and
``DDIMScheduler`` with SD's configuration — only small.  Tests and the CPU benchmark load them
through :func:`sharp_utils.pipeline.load_pipeline` exactly as they would load SD.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .pipeline import SD_SCHEDULER

# SD's scheduler configuration (CompVis/stable-diffusion-v1-4, stabilityai/stable-diffusion-2)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE uses."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer(max_length: int = 16):
    """A CLIPTokenizer over bytes plus a few merges: every string is encodable, nothing is downloaded."""
    from transformers import CLIPTokenizer

    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>")]
    for m in merges:
        vocab["".join(m)] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def build_tiny_pipeline(prediction_type: str = "epsilon", seed: int = 0, max_length: int = 16,
                        sample_size: int = 8, cross_dim: int = 32):
    """A random-weight ``StableDiffusionPipeline``: latents 4×``sample_size``², images 2× larger, 11 cross-attention
    layers."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer(max_length)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=cross_dim, intermediate_size=2 * cross_dim, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=cross_dim, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=2 * sample_size)
    sched = DDIMScheduler(prediction_type=prediction_type, **SD_SCHEDULER)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_tiny_pipeline(folder: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Build a tiny pipeline and ``save_pretrained`` it (safetensors) into ``folder``; returns the folder."""
    folder = Path(folder)
    build_tiny_pipeline(prediction_type, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_clip(folder: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A random-weight ``CLIPModel`` + ``CLIPProcessor`` saved with ``save_pretrained`` (tests of the CLIP scorer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    tok = tiny_tokenizer(16)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    folder = Path(folder)
    CLIPModel(cfg).save_pretrained(folder, safe_serialization=True)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                            crop_size={"height": image_size, "width": image_size}),
                         tokenizer=tok)
    proc.save_pretrained(folder)
    return folder
