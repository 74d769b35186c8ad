"""Checkpoints as safetensors with a SHA-256 manifest; never unpickled.

A checkpoint folder holds ``<name>.safetensors`` files and ``MANIFEST.json``:
``{"files": {"<name>.safetensors": {"sha256": ..., "bytes": ...}}, "config": {...}, "recipe": {...}}``.
:func:`load_state` refuses a file whose hash does not match, naming how to fix it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MANIFEST = "MANIFEST.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match its manifest."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_state(folder: Path, name: str, state: dict[str, torch.Tensor], config: dict | None = None,
               recipe: dict | None = None) -> Path:
    """Write ``folder/name.safetensors`` and record its hash, config and training recipe in the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))
    man = read_manifest(folder) if (folder / MANIFEST).exists() else {"files": {}}
    man["files"][path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    if config is not None:
        man.setdefault("config", {})[name] = config
    if recipe is not None:
        man.setdefault("recipe", {})[name] = recipe
    (folder / MANIFEST).write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(folder: Path) -> dict:
    p = Path(folder) / MANIFEST
    if not p.exists():
        raise CheckpointError(
            f"no {MANIFEST} in {folder}: retrain with the notebook's paper profile or restore the folder from git"
        )
    return json.loads(p.read_text())


def manifest_sha256(folder: Path, name: str) -> str:
    """The SHA-256 that ``folder``'s manifest records for ``name.safetensors`` (what a derived result cites)."""
    return read_manifest(folder)["files"][f"{name}.safetensors"]["sha256"]


def load_state(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of ``folder/name.safetensors`` after checking its SHA-256 against the manifest."""
    folder = Path(folder)
    man = read_manifest(folder)
    fname = f"{name}.safetensors"
    path = folder / fname
    entry = man["files"].get(fname)
    if entry is None or not path.exists():
        raise CheckpointError(
            f"checkpoint {path} is missing: retrain it (profile='paper') or run `git checkout -- {folder}`"
        )
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (sha256 {digest[:12]}… != manifest {entry['sha256'][:12]}…): "
            f"run `git checkout -- {path}` or retrain it (profile='paper')")
    return load_file(str(path)), man.get("config", {}).get(name, {})
