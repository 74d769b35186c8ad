"""The ``sharp`` command line: ``detect``, ``evaluate``, ``prompts download``, ``info``.

Errors the user can fix (a bad prompt file, missing weights, a mismatched result file) print one line
naming the fix and exit with status 2.
"""
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


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give integers separated by commas, e.g. 1,5,50") from None


def _detect(args: argparse.Namespace) -> int:
    from .detection import METHODS, DetectOptions, detect
    from .pipeline import load_pipeline
    from .prompts import read_prompts
    from .results import ResultWriter, shard, shard_path

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"--method {','.join(bad)}: unknown; choose from {','.join(METHODS)}")
    ps = read_prompts(args.prompts)
    if ps.duplicates:
        shown = "; ".join(f"{p[:60]!r} ×{c}" for p, c in list(ps.duplicates.items())[:5])
        print(f"warning: {len(ps.duplicates)} prompts occur more than once (kept, scored per line): {shown}",
              file=sys.stderr)
    rank, world = shard()
    out = shard_path(args.out, rank, world)
    mine = [i for i in range(len(ps.prompts)) if i % world == rank]
    model = load_pipeline(args.model, dtype=args.dtype, device=args.device)
    long = model.over_length([ps.prompts[i] for i in mine])
    if long:
        print(f"warning: {len(long)} prompts exceed {model.max_tokens} tokens and are truncated: "
              + "; ".join(repr(p[:60]) for p in long[:5]), file=sys.stderr)
    opts = DetectOptions(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
                         fd_rel_step=args.fd_step)
    meta = {"model": args.model, "dtype": args.dtype, "guidance_scale": args.guidance_scale,
            "num_inference_steps": args.num_inference_steps}
    sub = [ps.prompts[i] for i in mine]
    with ResultWriter(out) as w:
        def done(j, p, m, k, n):
            return w.is_done({"prompt_index": mine[j], "prompt": p, "method": m, "steps": k, "n": n, "seed": args.seed})

        count = 0
        for row in detect(model, sub, methods, args.steps, args.n, args.seed, args.batch_size, opts, done,
                          progress=not args.quiet, log=lambda s: print(s, file=sys.stderr)):
            row["prompt_index"] = mine[row["prompt_index"]]
            w.write({**row, **meta})
            count += 1
    print(f"{out}: {count} new rows ({len(w.done)} in all)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import csv

    from .results import evaluate_tables, markdown_table, read_results

    rows = evaluate_tables(read_results(args.mem), read_results(args.nmem))
    if not rows:
        raise UserError("no (method, steps, n) appears in both files: run `sharp detect` with the same settings on both sets")
    print(markdown_table(rows))
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.out}")
    return 0


def _prompts_download(args: argparse.Namespace) -> int:
    from .prompts import download_sd_prompts

    download_sd_prompts(args.dest)
    return 0


class UserError(Exception):
    """An error the user fixes by changing the command; printed as one line."""


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

    from .detection import METHODS
    from .pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS

    d = sub.add_parser("detect", help="score prompts for memorization (Table 1's methods); appends to a CSV, resumable",
                       description="Score every prompt of --prompts with each --method; one CSV row per "
                       "(prompt, method, steps, n). Rerunning skips finished rows. Under accelerate launch / torchrun "
                       "each process takes its share of prompts and writes OUT's part .rankR-of-W.csv.")
    d.add_argument("--model", required=True, help="diffusers Stable Diffusion folder (save_pretrained) or hub id")
    d.add_argument("--prompts", required=True, help="prompt file: .txt (a caption a line) or .jsonl ('caption')")
    d.add_argument("--method", default="ours-fd", help=f"comma-separated, from {','.join(METHODS)} (default ours-fd)")
    d.add_argument("--steps", type=_int_list, default=[1], help="comma-separated first-k step counts (default 1)")
    d.add_argument("-n", "--n", "--generations", dest="n", type=_int_list, default=[4],
                   help="generations per prompt, comma-separated (default 4); under torchrun/accelerate write -n")
    d.add_argument("--out", required=True, help="result CSV (appended; resumed)")
    d.add_argument("--seed", type=int, default=0, help="base seed; generation g of prompt p uses hash(seed, p, g)")
    d.add_argument("--batch-size", type=int, default=16, help="(prompt, generation) items per UNet batch; halves on OOM")
    d.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (FD methods run in it)")
    d.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    d.add_argument("--num-inference-steps", type=int, default=DEFAULT_STEPS)
    d.add_argument("--guidance-scale", type=float, default=DEFAULT_GUIDANCE)
    d.add_argument("--fd-step", type=float, default=None, help="relative FD step r in h = r(1+|x|)/|v| (default √u)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_detect)

    e = sub.add_parser("evaluate", help="AUC and TPR@1%%FPR per (method, steps, n) from two result files")
    e.add_argument("mem", help="results on memorized prompts (a CSV, or the stem of its shard parts)")
    e.add_argument("nmem", help="results on non-memorized prompts")
    e.add_argument("--out", default=None, help="also write the table as CSV")
    e.set_defaults(func=_evaluate)

    pr = sub.add_parser("prompts", help="the paper's SD prompt sets")
    prs = pr.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    dl = prs.add_parser("download", help="fetch sd1_mem.txt, sd1_nmem.txt, sd2_*.txt ... (needs network)")
    dl.add_argument("--dest", default=None, help="folder (default prompts/sd, git-ignored)")
    dl.set_defaults(func=_prompts_download)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .pipeline import PipelineLoadError
    from .prompts import PromptFileError
    from .results import ResultFileError

    try:
        return int(args.func(args) or 0)
    except (UserError, PromptFileError, PipelineLoadError, ResultFileError) as e:
        print(f"sharp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
