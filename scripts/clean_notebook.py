"""Strip run-specific metadata (timestamps, durations) that papermill writes, so re-runs diff cleanly."""
import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        pm.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        p = cell.metadata.get("papermill")
        if p is not None:
            for key in ("start_time", "end_time", "duration", "exception", "status"):
                p.pop(key, None)
    nb.metadata.kernelspec = {"name": "sharp", "display_name": "Python (sharp)", "language": "python"}
    nbformat.write(nb, path)
