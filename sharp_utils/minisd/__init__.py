"""MiniSD: a small latent text-to-image diffusers pipeline trained here as Stable Diffusion's stand-in.

``data`` (training set, prompt records, the v2 / coupled designs), ``model`` (diffusers parts, checkpoints,
``pipeline_dir``), ``evaluators`` (copy and alignment scorers), ``experiments`` (notebooks 03–07 and the CLI),
``train`` (``python -m sharp_utils.minisd.train`` or ``sharp minisd``).  The names of ``data`` and ``model`` are
re-exported here.
"""
from .data import *  # noqa: F401,F403
from .data import _frame  # noqa: F401
from .model import *  # noqa: F401,F403
