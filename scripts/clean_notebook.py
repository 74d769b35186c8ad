"""Make an executed notebook diff cleanly and run as it reads: fold the values papermill injected into the
``parameters`` cell and drop papermill's injected cell (so an edit of the parameters cell in JupyterLab takes effect),
strip papermill's run metadata (timestamps, durations), and drop library warnings from stderr outputs
(tqdm's IProgress notice that diffusers' and transformers' ``tqdm.auto`` import raises in a kernel without
ipywidgets, and any ``file.py:N: SomeWarning:`` line with the source line Python prints under it).

    python scripts/clean_notebook.py notebooks/01_toy_2d_mixture.ipynb [...]
"""
import re
import sys

import nbformat

# a top-level assignment "name = value  # comment" of a parameters cell
ASSIGN = re.compile(r"^(\w+)\s*=\s*(.*?)(\s+#.*)?$")
# a warning as Python's warnings module prints it: "<path>.py:<line>: <Category>Warning: <message>"
WARNING_LINE = re.compile(r"^\S+\.py:\d+: \w*Warning: ")


def clean_stderr(text: str) -> str:
    """``text`` without warning lines (and the indented source line Python prints under each)."""
    out, skip_source = [], False
    for line in text.splitlines(keepends=True):
        if skip_source and line.startswith("  "):
            skip_source = False
            continue
        skip_source = bool(WARNING_LINE.match(line))
        if not skip_source:
            out.append(line)
    return "".join(out)


def fold_injected(nb) -> None:
    """Write papermill's injected assignments into the ``parameters`` cell (keeping its comments) and drop the
    injected cell: the committed notebook shows, and runs with, the values its outputs came from."""
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not injected:
        return
    if len(params) != 1:
        raise SystemExit("clean_notebook: tag exactly one cell 'parameters' so papermill's values can go into it")
    values = {}
    for c in injected:
        for line in c.source.splitlines():
            m = ASSIGN.match(line)
            if m:
                values[m.group(1)] = m.group(2)
    src = params[0].source
    lines = src.splitlines()
    for i, line in enumerate(lines):
        m = ASSIGN.match(line)
        if m and m.group(1) in values:
            lines[i] = f"{m.group(1)} = {values.pop(m.group(1))}{m.group(3) or ''}"
    lines += [f"{k} = {v}" for k, v in values.items()]
    params[0].source = "\n".join(lines) + ("\n" if src.endswith("\n") else "")
    nb.cells = [c for c in nb.cells if all(c is not i for i in injected)]


def clean(nb) -> None:
    fold_injected(nb)
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        pm.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        p = cell.metadata.get("papermill")
        if p is not None:
            for key in ("start_time", "end_time", "duration", "exception", "status"):
                p.pop(key, None)
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.outputs:
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                o.text = clean_stderr(o.text)
                if not o.text.strip():
                    continue
            kept.append(o)
        cell.outputs = kept
    nb.metadata.kernelspec = {"name": "sharp", "display_name": "Python (sharp)", "language": "python"}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        nb = nbformat.read(path, as_version=4)
        clean(nb)
        nbformat.write(nb, path)
