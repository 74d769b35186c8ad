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
    v = claims.report("fig1-end", claims.Ev(66.3, (41.0, 92.5), "120 vs 1880"))
    w = claims.report(
        "fig4-sd-lemma-4.1",
        [claims.Ev(0.95, (0.91, 0.97), 20, "step 1"), claims.Ev(0.5, (0.2, 0.93), 20, "step 50")],
        claims.Ev(1.2, (1.1, 1.3), 100),
    )
    x = claims.report("alg1-exact", claims.Ev(2e-3, None, 2), note="x: y")
    printed = capsys.readouterr().out
    assert (v, w, x) == ("held", "inconclusive", "not held")
    assert printed.startswith("claim [fig1-end] held: memorized samples")
    parsed = claims.parse_claims(printed)
    assert parsed["fig1-end"] == (
        "held",
        "median λ_min, memorized / non-memorized > 10: 66.3 [41, 92.5], n = 120 vs 1880",
    )
    assert parsed["fig4-sd-lemma-4.1"][1].count("(held)") == 2 and "(inconclusive)" in parsed["fig4-sd-lemma-4.1"][1]
    assert parsed["alg1-exact"][1].endswith("2.0e-03 exact, n = 2 · x: y")
    with pytest.raises(KeyError, match="add it there first"):
        claims.report("no-such-claim", claims.Ev(1, None, 1))
    with pytest.raises(ValueError, match="2 tests"):
        claims.report("fig2-first", claims.Ev(1, None, 1))


def test_no_held_claim_has_an_interval_reaching_the_other_side():
    """Read back from the committed notebooks: every test of a held claim has its whole interval on the claimed side."""
    for nb in NOTEBOOKS:
        for key, (verdict, evidence) in claims.read_notebook_claims(nb).items():
            assert verdict in claims.VERDICTS
            assert "n = " in evidence and ("[" in evidence or "exact" in evidence), (key, evidence)
            if verdict == "held":
                assert "(not held)" not in evidence and "(inconclusive)" not in evidence, key


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
    results = {k: ("held" if k == "fig1-end" else "inconclusive", "n") for k in claims.CLAIMS}
    short = claims.markdown_table(results, front_only=True)
    full = claims.markdown_table(results, link_prefix="../")
    assert short.count("\n") + 1 == 2 + sum(c.front for c in claims.CLAIMS.values())
    assert full.count("\n") + 1 == 2 + len(claims.CLAIMS)
    assert "| **held** |" in short and "| inconclusive |" in short and "(../notebooks/01_toy_2d_mixture.ipynb)" in full
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


def test_every_committed_verdict_has_its_reason():
    """Each claim's verdict in the committed notebooks has a recorded reason (claims.EXPLAINED), which the notebook's
    verdict section and docs/results.md show; a claim without one names itself."""
    results = _script().collected()
    assert set(claims.EXPLAINED) == set(claims.CLAIMS)
    for key, (verdict, _) in results.items():
        assert verdict in claims.EXPLAINED[key].why, f"{key}: no reason recorded for '{verdict}'"


def test_verdict_section_reports_this_kernels_claims_with_their_reasons():
    claims._REPORTED.clear()
    claims.report("fig1-end", claims.Ev(66.0, (64.0, 68.0), "106 vs 1894"))
    claims.report("fig1-middle", claims.Ev(1.0, (0.9, 1.1), "106 vs 1894"))  # not held (interval below 10)
    md = claims.verdicts("01_toy_2d_mixture.ipynb")._repr_markdown_()
    assert "`fig1-end`" in md and "**held**" in md and claims.EXPLAINED["fig1-end"].why["held"] in md
    assert claims.EXPLAINED["fig1-middle"].why["not held"] in md
    assert "results.md#01--toy-2d-mixture-figure-1" in md
    claims._REPORTED.clear()
    claims.report("fig1-end", claims.Ev(5.0, (4.0, 6.0), "n"))  # a verdict without a recorded reason
    assert "no reason recorded for 'not held'" in claims.verdicts("01_toy_2d_mixture.ipynb")._repr_markdown_()
    claims._REPORTED.clear()
