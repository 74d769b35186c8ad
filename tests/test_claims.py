"""The claims registry, the lines notebooks print, and the generated tables in README.md / docs/results.md."""
import importlib.util

import nbformat
import pytest

from sharp_utils import claims, paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _script():
    spec = importlib.util.spec_from_file_location("claims_table", paths.REPO_ROOT / "scripts" / "claims_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_prints_a_line_parse_reads_back(capsys):
    claims.report("fig1-end", 1 > 0, "median λ_min −895 vs −13.5 | x: y")
    claims.report("fig6-pareto", [], "")
    printed = capsys.readouterr().out
    assert printed.startswith("claim held [fig1-end] (")
    assert claims.parse_claims(printed) == {"fig1-end": (True, "median λ_min −895 vs −13.5 | x: y"),
                                            "fig6-pareto": (False, "")}
    with pytest.raises(KeyError, match="add it there first"):
        claims.report("no-such-claim", True)


def test_every_claim_is_printed_by_its_notebook_and_no_other():
    printed = {nb.name: claims.read_notebook_claims(nb) for nb in NOTEBOOKS}
    for key, c in claims.CLAIMS.items():
        assert key in printed[c.notebook], f"{c.notebook} prints no line for claim {key}"
    for name, found in printed.items():
        assert set(found) <= set(claims.CLAIMS), f"{name} prints claims missing from CLAIMS"
        assert all(claims.CLAIMS[k].notebook == name for k in found), name


def test_figures_named_by_claims_exist():
    for key, c in claims.CLAIMS.items():
        if c.figure:
            assert (paths.REPO_ROOT / "figures" / f"{c.figure}.png").is_file(), key


def test_committed_tables_match_the_committed_notebooks(capsys):
    assert _script().main(["--check"]) == 0, capsys.readouterr().out


def test_table_marks_held_claims_and_links_notebooks():
    results = {k: (k == "fig1-end", "n") for k in claims.CLAIMS}
    short = claims.markdown_table(results, front_only=True)
    full = claims.markdown_table(results, link_prefix="../")
    assert short.count("\n") + 1 == 2 + sum(c.front for c in claims.CLAIMS.values())
    assert full.count("\n") + 1 == 2 + len(claims.CLAIMS)
    assert "| **yes** |" in short and "(../notebooks/01_toy_2d_mixture.ipynb)" in full
    with pytest.raises(KeyError, match="rerun"):
        claims.markdown_table({})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_clean(path):
    """No machine paths or library warnings in committed outputs; cell ids unique."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            text = o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items() if k == "text/plain")
            for bad in ("/work/", "/tmp/", "/home/", "site-packages", "Warning:"):
                assert bad not in text, f"{path.name}: {bad!r} in an output: {text[:200]}"
    ids = [c.id for c in nb.cells]
    assert len(ids) == len(set(ids))
