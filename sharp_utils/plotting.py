"""One ``savefig`` for every figure: PNG + PDF into ``figures/``."""
from __future__ import annotations

from pathlib import Path

from . import paths


def savefig(fig, name: str, dpi: int = 150, directory: str | Path | None = None) -> list[Path]:
    """Write ``figures/<name>.png`` and ``figures/<name>.pdf`` (or into ``directory``); returns both paths."""
    out = []
    for ext in ("png", "pdf"):
        p = paths.figure_path(name, ext) if directory is None else Path(directory) / f"{name}.{ext}"
        # fixed metadata so re-running a notebook does not change the PDF bytes
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=meta)
        out.append(p)
    return out


def identity_line(ax, **kw) -> None:
    """Draw y = x across the current limits of ``ax``."""
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color=kw.pop("color", "k"), lw=kw.pop("lw", 1), ls=kw.pop("ls", "--"), **kw)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
