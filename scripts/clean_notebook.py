"""Make an executed notebook diff cleanly: strip papermill's run metadata (timestamps, durations), give the cell
papermill injects a fixed id (it draws a new one every run), and drop library warnings from stderr outputs
(tqdm's IProgress notice that diffusers' and transformers' ``tqdm.auto`` import raises in a kernel without
ipywidgets, and any ``file.py:N: SomeWarning:`` line with the source line Python prints under it).

    python scripts/clean_notebook.py notebooks/01_toy_2d_mixture.ipynb [...]
"""
import re
import sys

import nbformat

INJECTED_ID = "injected-parameters"
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


def clean(nb) -> None:
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        pm.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        p = cell.metadata.get("papermill")
        if p is not None:
            for key in ("start_time", "end_time", "duration", "exception", "status"):
                p.pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = INJECTED_ID
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
