"""Write the claims tables from the executed notebooks: the short one into README.md, the full one into
docs/results.md, each between the markers ``<!-- claims:begin -->`` and ``<!-- claims:end -->``; and notebook 07's
regime table into README.md between ``<!-- regime:begin -->`` and ``<!-- regime:end -->``.

    python scripts/claims_table.py           # rewrite both files (run_all.sh runs it last)
    python scripts/claims_table.py --check   # exit 1 if either file differs from what the notebooks print
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from sharp_utils.claims import markdown_table, read_notebook_claims

ROOT = Path(__file__).resolve().parent.parent

BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
REGIME = ("<!-- regime:begin -->", "<!-- regime:end -->")
REGIME_NB = ROOT / "notebooks" / "07_regime_ablation.ipynb"
TARGETS = {ROOT / "README.md": dict(front_only=True, link_prefix=""),
           ROOT / "docs" / "results.md": dict(front_only=False, link_prefix="../")}


def collected() -> dict:
    results = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        results.update(read_notebook_claims(nb))
    return results


def regime_table() -> str:
    """Notebook 07's regime table: the Markdown table it displays (``sharp_utils.minisd.ablation.table_markdown``)."""
    import json

    nb = json.loads(REGIME_NB.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        for o in c.get("outputs", []) if c["cell_type"] == "code" else []:
            md = "".join(o.get("data", {}).get("text/markdown", ""))
            if md.startswith("| model |"):
                return md.strip()
    raise KeyError(
        f"{REGIME_NB.name} displayed no regime table: rerun it (bash run_all.sh {REGIME_NB.relative_to(ROOT)})"
    )


def render(text: str, table: str, path: Path, markers: tuple[str, str] = (BEGIN, END)) -> str:
    begin, end = markers
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {begin} ... {end} markers: add them where the table goes")
    return pattern.sub(lambda _: f"{begin}\n{table}\n{end}", text, count=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = ap.parse_args(argv)
    results = collected()
    stale = []
    for path, kw in TARGETS.items():
        text = path.read_text(encoding="utf-8")
        try:
            table = markdown_table(results, **kw)
            new = render(text, table, path)
            if REGIME[0] in text:
                new = render(new, regime_table(), path, REGIME)
        except KeyError as e:  # a notebook not (yet) executed with its claim lines
            print(f"claims_table: {e.args[0]}")
            return 1
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"claims tables out of date in {', '.join(map(str, stale))}: run python scripts/claims_table.py")
        return 1
    print(
        ("up to date: " if args.check or not stale else "wrote ") + ", ".join(str(p.relative_to(ROOT)) for p in TARGETS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
