"""Every filesystem location the project uses, in one place."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# $SHARP_FIGURES_DIR redirects figures (the smoke tests use it so they never touch committed figures)
FIGURES = Path(os.environ.get("SHARP_FIGURES_DIR", REPO_ROOT / "figures"))
NOTEBOOKS = REPO_ROOT / "notebooks"
PROMPTS = REPO_ROOT / "prompts"
CHECKPOINTS = REPO_ROOT / "checkpoints"
RESULTS = REPO_ROOT / "results"  # heavy results computed once, each with a JSON of its settings beside it


def sd_prompts_dir() -> Path:
    """Folder holding the paper's SD prompt sets (sd1_mem.txt, ...).

    ``$SHARP_SD_PROMPTS`` wins; otherwise ``../shared/data/sd_prompts`` beside the checkout
    (where tests and CI find them), otherwise ``prompts/sd`` (where ``sharp prompts download`` puts them).
    """
    env = os.environ.get("SHARP_SD_PROMPTS")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data" / "sd_prompts"
    if shared.is_dir():
        return shared
    return PROMPTS / "sd"


def figure_path(name: str, ext: str) -> Path:
    """Path of figure ``name`` with extension ``ext`` inside ``figures/`` (created on demand)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    return FIGURES / f"{name}.{ext}"
