"""MiniSD's evaluators, the analogues of SSCD and CLIP score (Figure 6's axes), plus memorization checks.

* :class:`MiniSDCopyScorer` — a small CNN descriptor trained here like SSCD (Pizzi et al. 2022): instance
  discrimination (NT-Xent) between two augmented views of every unique training image, with shifts, small
  rotations/scales, colour gain, Gaussian noise, low-frequency blotches and PM frames pasted on as overlays, so
  a copy with generation artefacts still matches its source while a different digit does not.  Copy score =
  cosine similarity, max over a prompt's training images (``image_scorers.copy_scores``).
* :class:`MiniSDAlignmentScorer` — a small CNN classifier of the three attributes captions state (digit,
  colour, frame); the alignment of (image, caption) is the mean predicted probability of the attributes the
  caption states (a caption without a frame states "no frame").  Captions are parsed by :func:`parse_caption`.

Both are trained by ``python -m sharp_utils.minisd.train evaluators`` into ``checkpoints/minisd_eval`` and
validated by :func:`validate_copy` / :func:`validate_alignment`, which also fix the thresholds: the copy
threshold is the 99th percentile of the similarity between a held-out image and its most similar *other*
training image (1 % false positives); the alignment threshold is the 5th percentile of matched pairs.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import paths
from ..checkpoints import load_state, save_state
from .data import COLOURS, DIGITS, FRAMES, _frame

EVAL_CHECKPOINT = paths.CHECKPOINTS / "minisd_eval"
COLOUR_NAMES = tuple(COLOURS)
FRAME_NAMES = ("no frame",) + FRAMES


# ---------------------------------------------------------------- captions


def parse_caption(caption: str) -> dict:
    """{'digit': int | None, 'colour': int | None, 'frame': int} stated by a MiniSD caption (frame 0 = none)."""
    text = caption.lower()
    words = re.findall(r"[a-z]+", text)
    digit = next((DIGITS.index(w) for w in words if w in DIGITS), None)
    colour = next((COLOUR_NAMES.index(w) for w in words if w in COLOUR_NAMES), None)
    frame = next((k + 1 for k, f in enumerate(FRAMES) if f in text), 0)
    return {"digit": digit, "colour": colour, "frame": frame}


def sibling_captions(captions: list[str]) -> list[bool]:
    """Per caption: does another caption of the list state the same colour and digit (EM "siblings", which differ
    only in their two-word name)."""
    kind = [(q["colour"], q["digit"]) for q in map(parse_caption, captions)]
    return [kind.count(k) > 1 for k in kind]


def label_groups(labels: dict[str, Tensor]) -> Tensor:
    """One integer per image for its (digit, colour, frame) combination."""
    return labels["digit"] * 100 + labels["colour"] * 10 + labels["frame"]


def image_labels(data: dict) -> dict[str, Tensor]:
    """Attribute labels of every unique image of ``minisd.build_data`` (from its training caption; PM digits are
    white)."""
    n = len(data["images"])
    cap_of = np.zeros(n, dtype=np.int64)
    cap_of[data["train_image"]] = data["train_caption"]
    lab = {"digit": [], "colour": [], "frame": []}
    for i in range(n):
        p = parse_caption(data["captions"][cap_of[i]])
        lab["digit"].append(p["digit"])
        lab["colour"].append(p["colour"] if p["colour"] is not None else COLOUR_NAMES.index("white"))
        lab["frame"].append(p["frame"])
    return {k: torch.tensor(v) for k, v in lab.items()}


def frame_templates() -> Tensor:
    """(5, 3, 32, 32) the PM frames in [0, 1]."""
    return torch.from_numpy(np.stack([_frame(k) for k in range(len(FRAMES))]))


def template_score(images: Tensor, frame: int) -> Tensor:
    """How much of PM frame ``frame`` (1..5) an image carries: 1 − mean |image − frame| over the frame's pixels."""
    f = frame_templates()[frame - 1]
    mask = (f.sum(0) > 0).to(images.device)
    diff = (images.float() - f.to(images.device)).abs().mean(1)  # (B, 32, 32)
    return 1.0 - diff[:, mask].mean(1)


# ---------------------------------------------------------------- networks


class _Backbone(nn.Module):
    def __init__(self, width: int = 32, out: int = 128):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.GELU(),
            nn.Flatten(), nn.Linear(4 * w * 16, out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


class CopyNet(nn.Module):
    """Image → unit-norm 128-d copy descriptor."""

    def __init__(self, width: int = 32, dim: int = 128):
        super().__init__()
        self.backbone = _Backbone(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.backbone(x), dim=1)


class AttributeNet(nn.Module):
    """Image → logits of digit (10), colour (8) and frame (6, 0 = none)."""

    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        self.backbone = _Backbone(width, hidden)
        self.heads = nn.ModuleDict(
            {
                "digit": nn.Linear(hidden, len(DIGITS)),
                "colour": nn.Linear(hidden, len(COLOUR_NAMES)),
                "frame": nn.Linear(hidden, len(FRAME_NAMES)),
            }
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = F.gelu(self.backbone(x))
        return {k: head(h) for k, head in self.heads.items()}


# ---------------------------------------------------------------- augmentation


def augment(x: Tensor, gen: torch.Generator, overlays: bool = True, strength: float = 1.0) -> Tensor:
    """Random copy-preserving edits of images in [0, 1]: affine jitter, colour gain, noise, blotches, frame overlays."""
    B = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    ang = (u(B) - 0.5) * 2 * math.radians(8) * strength
    sc = 1 + (u(B) - 0.5) * 0.2 * strength
    tx, ty = [(u(B) - 0.5) * 2 * (2.5 / 16) * strength for _ in range(2)]
    theta = torch.stack([torch.stack([sc * torch.cos(ang), -sc * torch.sin(ang), tx], 1),
                         torch.stack([sc * torch.sin(ang), sc * torch.cos(ang), ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    y = y * (1 + (u(B, 3, 1, 1) - 0.5) * 0.4 * strength)
    blot = F.interpolate(torch.rand(B, 3, 4, 4, generator=gen), size=x.shape[-2:], mode="bilinear", align_corners=False)
    y = y + blot * (u(B, 1, 1, 1) * 0.35 * strength) * (u(B, 1, 1, 1) < 0.5)
    if overlays:
        fr = frame_templates()[torch.randint(0, len(FRAMES), (B,), generator=gen)]
        on = (u(B, 1, 1, 1) < 0.4).float() * (0.3 + 0.7 * u(B, 1, 1, 1))
        y = torch.maximum(y, fr * on)
    y = y + torch.randn(y.shape, generator=gen) * (u(B, 1, 1, 1) * 0.15 * strength)
    return y.clamp(0, 1)


# ---------------------------------------------------------------- training


def _update(opt, sched, loss: Tensor, log: list, step: int, steps: int, log_every: int) -> None:
    """One optimiser + schedule step; logs the loss every ``log_every`` steps and at the last."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % log_every == 0 or step == steps - 1:
        log.append([step, round(float(loss.detach()), 4)])


def train_copy_net(images: Tensor, groups: Tensor, steps: int = 1500, batch: int = 256, lr: float = 2e-3,
                   tau: float = 0.1, seed: int = 0, log_every: int = 100) -> tuple[CopyNet, dict]:
    """Instance discrimination (NT-Xent, temperature ``tau``) on two augmented views of each image (uint8 (N,3,32,32)).

    Half of each batch comes from 8 random ``groups`` (same digit, colour and frame): hard negatives.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = images.float() / 255.0
    members = [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)]
    members = [m for m in members if len(m) >= 2]
    net = CopyNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log = []
    for step in range(steps):
        hard = [m[torch.randperm(len(m), generator=gen)[:batch // 16]]
                for m in (members[int(j)] for j in torch.randint(0, len(members), (8,), generator=gen))]
        idx = torch.cat(hard + [torch.randint(0, len(x_all), (batch,), generator=gen)])[:batch]
        x = x_all[idx]
        z = net(torch.cat([augment(x, gen), augment(x, gen)]))
        sim = z @ z.T / tau
        sim.fill_diagonal_(-1e9)
        target = torch.cat([torch.arange(batch) + batch, torch.arange(batch)])
        same = (idx[:, None] == idx[None, :]).repeat(2, 2) & ~torch.eye(2 * batch, dtype=torch.bool)
        same[torch.arange(2 * batch), target] = False
        sim = sim.masked_fill(same, -1e9)  # a duplicate draw of the same image is not a negative
        loss = F.cross_entropy(sim, target)
        _update(opt, sched, loss, log, step, steps, log_every)
    return net.eval().requires_grad_(False), {"steps": steps, "batch": batch, "lr": lr, "tau": tau, "log": log,
                                               "objective": "NT-Xent instance discrimination, two augmented views"}


def train_attribute_net(
    images: Tensor,
    labels: dict[str, Tensor],
    train_idx: Tensor,
    steps: int = 600,
    batch: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 100,
) -> tuple[AttributeNet, dict]:
    """Cross-entropy on digit, colour and frame of the images ``train_idx`` (mild augmentation, no overlays)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x_all = images.float() / 255.0
    net = AttributeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    log = []
    for step in range(steps):
        idx = train_idx[torch.randint(0, len(train_idx), (batch,), generator=gen)]
        out = net(augment(x_all[idx], gen, overlays=False, strength=0.6))
        loss = sum(F.cross_entropy(out[k], labels[k][idx]) for k in out)
        _update(opt, sched, loss, log, step, steps, log_every)
    return net.eval().requires_grad_(False), {"steps": steps, "batch": batch, "lr": lr, "log": log,
                                               "objective": "sum of digit, colour and frame cross-entropies"}


# ---------------------------------------------------------------- scorers


def _batched(net: nn.Module, images: Tensor, chunk: int = 512) -> list:
    """``net`` over (B, 3, H, W) images in [0, 1], resized to 32×32 when needed, in chunks (CPU)."""
    x = images.float().cpu()
    if x.shape[-2:] != (32, 32):
        x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return [net(x[i:i + chunk]) for i in range(0, len(x), chunk)]


class MiniSDCopyScorer:
    """SSCD analogue for MiniSD (see the module docstring); ``embed`` takes (B, 3, 32, 32) images in [0, 1]."""

    name = "minisd-copy"

    def __init__(self, net: CopyNet, threshold: float = float("nan")):
        self.net, self.threshold = net, threshold

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        return torch.cat(_batched(self.net, images))


class MiniSDAlignmentScorer:
    """CLIP-score analogue for MiniSD: mean probability of the attributes the caption states."""

    name = "minisd-align"

    def __init__(self, net: AttributeNet, threshold: float = float("nan")):
        self.net, self.threshold = net, threshold

    @torch.no_grad()
    def probabilities(self, images: Tensor) -> dict[str, Tensor]:
        out = _batched(self.net, images)
        return {k: torch.cat([o[k] for o in out]).softmax(1) for k in out[0]}

    def score(self, images: Tensor, prompts: list[str]) -> Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} captions")
        probs = self.probabilities(images)
        out = []
        for i, p in enumerate(prompts):
            attrs = parse_caption(p)
            vals = [probs["frame"][i, attrs["frame"]]]
            if attrs["digit"] is not None:
                vals.append(probs["digit"][i, attrs["digit"]])
            if attrs["colour"] is not None:
                vals.append(probs["colour"][i, attrs["colour"]])
            out.append(torch.stack(vals).mean())
        return torch.stack(out)


def save_evaluators(copy_net: CopyNet, attr_net: AttributeNet, folder: str | Path = EVAL_CHECKPOINT,
                    recipe: dict | None = None, thresholds: dict | None = None) -> None:
    cfg = dict(thresholds or {})
    save_state(Path(folder), "copy", copy_net.state_dict(), config={"threshold": cfg.get("copy")},
               recipe=(recipe or {}).get("copy"))
    save_state(Path(folder), "alignment", attr_net.state_dict(), config={"threshold": cfg.get("alignment")},
               recipe=(recipe or {}).get("alignment"))


def load_evaluators(folder: str | Path = EVAL_CHECKPOINT) -> tuple[MiniSDCopyScorer, MiniSDAlignmentScorer]:
    """The shipped (hash-checked) MiniSD copy and alignment scorers, thresholds included."""
    sd, cfg = load_state(Path(folder), "copy")
    c = CopyNet()
    c.load_state_dict(sd)
    sd, acfg = load_state(Path(folder), "alignment")
    a = AttributeNet()
    a.load_state_dict(sd)
    return (MiniSDCopyScorer(c.eval().requires_grad_(False), float(cfg.get("threshold") or "nan")),
            MiniSDAlignmentScorer(a.eval().requires_grad_(False), float(acfg.get("threshold") or "nan")))


# ---------------------------------------------------------------- validation


def validate_copy(scorer, images: Tensor, heldout: Tensor, seed: int = 1) -> dict:
    """Copies vs other images: similarity of exact, perturbed and strongly perturbed copies of the held-out images to
    their source, and of each held-out image to its most similar *other* image; AUC and the 1 %-FPR threshold."""
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(seed)
    x_all = images.float() / 255.0
    E = scorer.embed(x_all)
    x = x_all[heldout]
    own = E[heldout]
    sims = own @ E.T
    sims[torch.arange(len(heldout)), heldout] = -2.0
    other = sims.max(1).values
    exact = (scorer.embed(x) * own).sum(1)
    light = (scorer.embed(augment(x, gen, overlays=False, strength=0.5)) * own).sum(1)
    strong = (scorer.embed(augment(x, gen, overlays=True, strength=1.0)) * own).sum(1)
    thr = float(torch.quantile(other, 0.99))
    y = np.r_[np.ones(len(light)), np.zeros(len(other))]
    return {"threshold": thr, "auc_light_vs_other": float(roc_auc_score(y, np.r_[light.numpy(), other.numpy()])),
            "auc_strong_vs_other": float(roc_auc_score(y, np.r_[strong.numpy(), other.numpy()])),
            "exact_min": float(exact.min()), "light_frac_above": float((light > thr).float().mean()),
            "strong_frac_above": float((strong > thr).float().mean()), "other_median": float(other.median()),
            "n": len(heldout)}


def validate_alignment(scorer, images: Tensor, labels: dict[str, Tensor], heldout: Tensor, seed: int = 1) -> dict:
    """Matched vs mismatched caption–image pairs on held-out images: attribute accuracy, AUC, threshold (5th pct.
    matched)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    x = images[heldout].float() / 255.0
    lab = {k: v[heldout] for k, v in labels.items()}
    probs = scorer.probabilities(x)
    acc = {k: float((probs[k].argmax(1) == lab[k]).float().mean()) for k in probs}

    def caption(d: int, c: int, f: int) -> str:
        return f"a {DIGITS[d]} inside {FRAMES[f - 1]}" if f else f"a {COLOUR_NAMES[c]} handwritten {DIGITS[d]}"

    matched = [caption(int(lab["digit"][i]), int(lab["colour"][i]), int(lab["frame"][i])) for i in range(len(heldout))]
    wrong = []
    for i in range(len(heldout)):  # change one stated attribute at random: the hardest kind of mismatch
        d, c, f = int(lab["digit"][i]), int(lab["colour"][i]), int(lab["frame"][i])
        if f or rng.random() < 0.5:
            d = int((d + rng.integers(1, 10)) % 10)
        else:
            c = int((c + rng.integers(1, len(COLOUR_NAMES))) % len(COLOUR_NAMES))
        wrong.append(caption(d, c, f))
    sm, sw = scorer.score(x, matched), scorer.score(x, wrong)
    thr = float(torch.quantile(sm, 0.05))
    y = np.r_[np.ones(len(sm)), np.zeros(len(sw))]
    return {"threshold": thr, "auc_matched_vs_mismatched": float(roc_auc_score(y, np.r_[sm.numpy(), sw.numpy()])),
            "mismatched_frac_above": float((sw > thr).float().mean()), "accuracy": acc, "n": len(heldout)}


def record_references(record: dict, images: np.ndarray | Tensor) -> Tensor:
    """A prompt record's training images as float (R, 3, 32, 32) in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)[record["train_ids"]])
    return x.float() / 255.0
