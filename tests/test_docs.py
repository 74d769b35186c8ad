"""README.md and docs/: every relative link resolves; the README's two commands are the ones CI and run_all.sh use."""
import re

import pytest

from sharp_utils import paths

ROOT = paths.REPO_ROOT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_images_resolve(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = page.parent / path if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: no heading for {target}"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_notebook_links_resolve(notebook):
    """Links in a notebook's text (glossary entries, docs sections) resolve from notebooks/."""
    import nbformat

    text = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown")
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = notebook.parent / path
        assert dest.exists(), f"{notebook.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(dest), f"{notebook.name}: no heading for {target}"


def test_readme_is_a_short_front_page_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 10 * 1024, "README.md over 10 KB: move detail to docs/"
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash run_all.sh", "bash run_tests.sh"]
    assert "bash run_tests.sh" in (ROOT / ".ci" / "run").read_text()
    assert "ruff check ." in (ROOT / "run_tests.sh").read_text()  # the linter runs with the tests
    run_all = (ROOT / "run_all.sh").read_text()
    assert "papermill" in run_all and "scripts/claims_table.py" in run_all
    for script in ("run_all.sh", "run_tests.sh"):
        assert "scripts/setup_venv.sh" in (ROOT / script).read_text(), f"{script} must set up .venv itself"
