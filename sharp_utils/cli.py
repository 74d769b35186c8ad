"""The ``sharp`` command line.  Subcommands arrive with the detection and mitigation engines."""
from __future__ import annotations

import argparse
import platform
import sys

from . import __version__


def _info(args: argparse.Namespace) -> int:
    import torch

    from . import paths

    print(f"sharp_utils {__version__}")
    print(f"python      {platform.python_version()}")
    print(f"torch       {torch.__version__} (cuda available: {torch.cuda.is_available()})")
    print(f"repo        {paths.REPO_ROOT}")
    print(f"sd prompts  {paths.sd_prompts_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sharp",
        description="Detect and mitigate memorization in diffusion models via sharpness "
        "(Jeon, Kim, No; ICML 2025).",
    )
    p.add_argument("--version", action="version", version=f"sharp_utils {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("info", help="print versions, device and data paths")
    s.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
