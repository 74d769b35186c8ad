"""The course kit (course/, docs/course.md): `bash course/build.sh` builds every assignment with otter assign; graded
with its own autograder (otter run, no Docker), each master's solutions earn every code point and each student
notebook, run top to bottom as handed out, earns none; no student notebook carries solution code or hidden tests.
Graded at the small size (SHARP_COURSE_SMALL=1); the full size is the instructor's (times in docs/course.md)."""
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from sharp_utils import paths

ROOT = paths.REPO_ROOT
MASTERS = sorted((ROOT / "course").glob("a[0-9]_*.ipynb"))
OTTER = str(ROOT / ".venv" / "bin" / "otter") if (ROOT / ".venv" / "bin" / "otter").exists() else "otter"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "dist"
    out.mkdir()
    env = {**os.environ, "SHARP_COURSE_SMALL": "1"}
    subprocess.run(["bash", str(ROOT / "course" / "build.sh"), str(out)], check=True, env=env, cwd=ROOT,
                   capture_output=True, text=True)
    return out


def _grade(built, name, notebook, tmp_path):
    zip_ = next((built / name / "autograder").glob("*-autograder_*.zip"))
    out = tmp_path / "graded"
    out.mkdir()
    env = {**os.environ, "SHARP_COURSE_SMALL": "1"}
    subprocess.run([OTTER, "run", "-a", str(zip_), "-o", str(out), "--no-logo", str(notebook)], check=True,
                   env=env, capture_output=True, text=True, cwd=notebook.parent)
    tests = json.loads((out / "results.json").read_text())["tests"]
    return {t["name"]: (t["score"], t["max_score"]) for t in tests if t["name"] != "Public Tests"}


def _code_questions(master):
    """Names and points of the master's auto-graded questions."""
    nb = nbformat.read(master, as_version=4)
    out = {}
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION") and "manual: true" not in c.source:
            name = re.search(r"name: (\S+)", c.source)[1]
            out[name] = float(re.search(r"points: (\S+)", c.source)[1])
    return out


def test_there_are_four_assignments_and_their_guide():
    assert [m.stem for m in MASTERS] == ["a1_sharpness", "a2_hvp_traces", "a3_detection", "a4_sail"]
    guide = (ROOT / "docs" / "course.md").read_text(encoding="utf-8")
    assert "bash course/build.sh" in guide and "bash course/grade.sh" in guide
    assert "docs/course.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_solutions_earn_every_point(built, master, tmp_path):
    scores = _grade(built, master.stem, built / master.stem / "autograder" / f"{master.stem}.ipynb", tmp_path)
    questions = _code_questions(master)
    assert set(scores) == set(questions)
    for q, points in questions.items():
        assert scores[q] == (points, points), f"{master.stem} {q}: the solution scores {scores[q]}"


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_student_notebook_as_handed_out_earns_nothing(built, master, tmp_path):
    scores = _grade(built, master.stem, built / master.stem / "student" / f"{master.stem}.ipynb", tmp_path)
    assert scores and all(s == 0 for s, _ in scores.values()), scores


def _solution_lines(master):
    """The master's solution code: lines between BEGIN/END SOLUTION and lines marked # SOLUTION (long enough to be
    distinctive), and every line of its hidden tests."""
    nb = nbformat.read(master, as_version=4)
    lines, hidden_tests = [], []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if "hidden: true" in c.source:
            hidden_tests += [ln.strip() for ln in c.source.split('# END TEST CONFIG')[-1].splitlines()]
        block = False
        for ln in c.source.splitlines():
            s = ln.strip()
            if s == "# BEGIN SOLUTION":
                block = True
            elif s == "# END SOLUTION":
                block = False
            elif (block or s.endswith("# SOLUTION")) and not s.startswith("#"):
                lines.append(s.replace("# SOLUTION", "").strip())
    keep = lambda xs: [x for x in xs if len(x) > 25]
    return keep(lines), keep(hidden_tests)


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_no_solution_or_hidden_test_reaches_the_student(built, master):
    solution, hidden = _solution_lines(master)
    assert solution and hidden
    text = nbformat.read(built / master.stem / "student" / f"{master.stem}.ipynb", as_version=4)
    student = "\n".join(c.source for c in text.cells) + json.dumps(text.metadata)
    for line in solution:
        assert line not in student, f"solution line in the student notebook: {line!r}"
    for line in hidden:
        assert line not in student and json.dumps(line)[1:-1] not in student, f"hidden test reaches students: {line!r}"
    assert sorted(p.name for p in (built / master.stem / "student").iterdir()) == [f"{master.stem}.ipynb"]


def test_master_cells_fit_a_laptop_screen():
    for master in MASTERS:
        for i, c in enumerate(nbformat.read(master, as_version=4).cells):
            if c.cell_type == "code":
                wide = [ln for ln in c.source.splitlines() if len(ln) > 120]
                assert not wide, f"{master.name} cell {i}: {wide[0][:60]!r}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
