"""MiniSD: a small latent text-to-image diffusers pipeline trained here as Stable Diffusion's stand-in.

``data`` (training set, prompt records, the v2 / coupled designs), ``model`` (diffusers parts, checkpoints,
``pipeline_dir``), ``training_set`` (a design's training set as a typed record, its latents and exact density),
``evaluators`` (copy and alignment scorers), ``experiments`` (the regime experiments of notebooks 03 and 07),
``train`` (``python -m sharp_utils.minisd.train`` or ``sharp minisd``).  The names of ``data`` and ``model`` are
re-exported here.
"""
from .data import *  # noqa: F401,F403
from .data import _frame  # noqa: F401
from .model import *  # noqa: F401,F403
