"""The ``sharp`` command line: ``detect``, ``evaluate``, ``mitigate``, ``plot-tradeoff``, ``verify``,
``prompts download``, ``info``.

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


def _verify(args: argparse.Namespace) -> int:
    from .verify import tables, verify

    todo = args.tables or tables()
    bad = 0
    for t in todo:
        try:
            n, mismatches = verify(t, args.rows, args.seed)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        for m in mismatches:
            print(f"MISMATCH {m}")
        bad += len(mismatches)
        print(f"{t}: {n - len(mismatches)}/{n} recomputed rows agree")
    return 1 if bad else 0


def _int_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give integers separated by commas, e.g. 1,5,50") from None


def _detect(args: argparse.Namespace) -> int:
    from .detection import METHODS, DetectOptions, detect
    from .registry import load_text_to_image as load_model
    from .prompts import read_prompts
    from .results import ResultWriter, shard, shard_path

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"--method {','.join(bad)}: unknown; choose from {','.join(METHODS)}")
    ps = _select(read_prompts(args.prompts), args.category, args.limit)
    if ps.duplicates:
        shown = "; ".join(f"{p[:60]!r} ×{c}" for p, c in list(ps.duplicates.items())[:5])
        print(f"warning: {len(ps.duplicates)} prompts occur more than once (kept, scored per line): {shown}",
              file=sys.stderr)
    rank, world = shard()
    out = shard_path(args.out, rank, world)
    mine = [i for i in range(len(ps.prompts)) if i % world == rank]
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    allowed = getattr(model, "methods", None)
    if allowed is not None and set(methods) - set(allowed):
        raise UserError(f"--method {','.join(sorted(set(methods) - set(allowed)))}: needs a network's attention maps; "
                        f"an exact density runs {','.join(allowed)}")
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
        raise UserError(
            "no (method, steps, n) appears in both files: run `sharp detect` with the same settings on both sets"
        )
    print(markdown_table(rows))
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.out}")
    return 0


def _float_list(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give numbers separated by commas, e.g. 7.6,8.2") from None


def _mitigate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .minisd.experiments import reference_paths
    from .registry import is_minisd, mitigation_grids
    from .registry import load_text_to_image as load_model
    from .tradeoff import (MITIGATION_METHODS, SETTINGS, check_scorers, default_settings, reference_images,
                           run_mitigation, sd_version)
    from .prompts import read_prompts
    from .image_scorers import CLIPAlignmentScorer, PixelCopyScorer, SSCDCopyScorer

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in MITIGATION_METHODS]
    if bad:
        raise UserError(f"--method {','.join(bad)}: unknown; choose from {','.join(MITIGATION_METHODS)}")
    if args.setting is not None and len(methods) > 1:
        raise UserError(
            "--setting applies to one method: give one --method, or leave --setting out for App. D.2's grids"
        )
    ps = _select(read_prompts(args.prompts), args.category, args.limit)
    minisd = is_minisd(args.model)
    if minisd and not all("train_ids" in (r or {}) for r in ps.records or [None]):
        raise UserError("--model minisd scores copies against each record's 'train_ids' (its training images): give "
                        "a MiniSD prompt file (prompts/minisd_eval.jsonl or prompts/minisd_dev.jsonl)")
    model = load_model(args.model, dtype=args.dtype, device=args.device)
    allowed = getattr(model, "mitigation_methods", None)
    if allowed is not None and set(methods) - set(allowed):
        raise UserError(f"--method {','.join(sorted(set(methods) - set(allowed)))}: edits the text or its attention; "
                        f"an exact density runs {','.join(allowed)}")
    version = args.sd_version or sd_version(model)
    plan = [("none", 0.0)] if args.baseline and "none" not in methods else []
    grids = SETTINGS[args.sd_version] if args.sd_version and not minisd else mitigation_grids(args.model, model)
    for m in methods:  # MiniSD: the grids calibrated on its dev split
        grid = args.setting if args.setting is not None else default_settings(m, grids, args.sail_loss)
        plan += [(m, s) for s in grid]
    copy_scorer = (SSCDCopyScorer(args.sscd, device=model.device) if args.sscd
                   else PixelCopyScorer() if args.copy_scorer == "pixel" else None)
    align = CLIPAlignmentScorer(args.clip, device=model.device) if args.clip else None
    refs = None
    if minisd and (copy_scorer is None or align is None):  # MiniSD's own scorers and training images
        from .minisd.evaluators import load_evaluators

        mini_copy, mini_align = load_evaluators()
        copy_scorer, align = copy_scorer or mini_copy, align or mini_align
        refs = reference_paths(ps.records, Path(args.out) / "references")
    elif copy_scorer is not None:
        refdir = Path(args.references) if args.references else None
        recs = ps.records or [None] * len(ps.prompts)
        refs = [reference_images(recs[i], i, ps.path, refdir) for i in range(len(ps.prompts))]
        check_scorers(copy_scorer, refs)
        missing = [q for r in refs for q in r if not q.is_file()]
        if missing:
            raise UserError(f"{len(missing)} reference images do not exist, e.g. {missing[0]}: fix the paths")
    if copy_scorer is None or align is None:
        print(
            "warning: "
            + ", ".join(
                x
                for x, s in (
                    ("no copy scorer (--sscd FILE or --copy-scorer pixel)", copy_scorer),
                    ("no alignment scorer (--clip DIR)", align),
                )
                if s is None
            )
            + ": those columns stay empty",
            file=sys.stderr,
        )
    sail_kw = {"alpha": args.alpha if args.alpha is not None else (0.05 if version == "sd1" else 0.01),
               "loss": args.sail_loss, "budget": args.budget, "max_steps": args.sail_max_steps,
               "fallback": not args.no_fallback, "num_inference_steps": args.num_inference_steps}
    count = 0
    for _ in run_mitigation(model, ps.prompts, plan, args.n, args.out, args.seed, copy_scorer, align, refs, sail_kw,
                            model_name=args.model, progress=not args.quiet, batch=args.batch_size):
        count += 1
    print(f"{Path(args.out) / 'results.csv'}: {count} rows this run; images under {Path(args.out) / 'images'}")
    return 0


def _plot_tradeoff(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .tradeoff import plot_grid, plot_tradeoff, read_mitigation
    from .plotting import savefig

    rows = read_mitigation(args.dir)
    ax = plot_tradeoff(rows)
    ax.legend(fontsize=7)
    written = savefig(ax.figure, "tradeoff", directory=args.dir)
    plt.close(ax.figure)
    fig = plot_grid(rows, args.dir, n_prompts=args.grid_prompts)
    written += savefig(fig, "grid", directory=args.dir)
    plt.close(fig)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _prompts_download(args: argparse.Namespace) -> int:
    from .prompts import download_sd_prompts

    download_sd_prompts(args.dest)
    return 0


class UserError(Exception):
    """An error the user fixes by changing the command; printed as one line."""


def _select(ps, categories: str | None, limit: int | None = None):
    """The prompts of a .jsonl prompt file whose 'category' is one of ``categories`` (comma-separated; all if None),
    the first ``limit`` of them (all if None)."""
    from dataclasses import replace

    keep = list(range(len(ps.prompts)))
    if categories:
        want = {c.strip() for c in categories.split(",") if c.strip()}
        if not ps.records or any("category" not in r for r in ps.records):
            raise UserError(f"--category needs a .jsonl prompt file whose records have a 'category' (e.g. "
                            f"prompts/minisd_eval.jsonl); {ps.path} has none")
        keep = [i for i in keep if ps.records[i]["category"] in want]
        if not keep:
            found = sorted({r["category"] for r in ps.records})
            raise UserError(f"--category {categories}: no prompt has it; {ps.path} has {','.join(found)}")
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit {limit}: give a positive number of prompts")
        keep = keep[:limit]
    return replace(
        ps, prompts=[ps.prompts[i] for i in keep], records=[ps.records[i] for i in keep] if ps.records else []
    )


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
    d.add_argument("--model", required=True, help="diffusers Stable Diffusion folder (save_pretrained), hub id, or "
                   "'minisd' (the shipped MiniSD v2, CPU), 'minisd-coupled' (the first MiniSD), or 'exact:minisd' / "
                   "'exact:minisd-coupled' (the exact density of its training set, its ideal model: methods wen, "
                   "ours-fd, ours-jvp, tiled-l2; docs/cli.md)")
    d.add_argument("--prompts", required=True, help="prompt file: .txt (a caption a line) or .jsonl ('caption')")
    d.add_argument("--category", default=None, help="only the .jsonl records of these categories, e.g. em,pm or nmem")
    d.add_argument("--limit", type=int, default=None, help="only the first N prompts (after --category)")
    d.add_argument("--method", default="ours-fd", help=f"comma-separated, from {','.join(METHODS)} (default ours-fd)")
    d.add_argument("--steps", type=_int_list, default=[1], help="comma-separated first-k step counts (default 1)")
    d.add_argument("-n", "--n", "--generations", dest="n", type=_int_list, default=[4],
                   help="generations per prompt, comma-separated (default 4); under torchrun/accelerate write -n")
    d.add_argument("--out", required=True, help="result CSV (appended; resumed)")
    d.add_argument("--seed", type=int, default=0, help="base seed; generation g of prompt p uses hash(seed, p, g)")
    d.add_argument(
        "--batch-size", type=int, default=16, help="(prompt, generation) items per UNet batch; halves on OOM"
    )
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

    from .tradeoff import MITIGATION_METHODS

    mt = sub.add_parser(
        "mitigate",
        help="generate with SAIL or a baseline (Figure 6); PNGs + a resumable CSV",
        description="For every prompt and every (method, setting): n images (seeded per prompt and "
        "generation, shared by all methods) with copy and alignment scores, one CSV row per image in "
        "OUT/results.csv; rerunning skips finished groups. Without --setting each method runs App. D.2's "
        "five settings for the model's SD version.",
    )
    mt.add_argument(
        "--model",
        required=True,
        help="diffusers Stable Diffusion folder (save_pretrained), hub id, or "
        "'minisd' / 'minisd-coupled' (MiniSD v2 / the first MiniSD, with their copy / alignment scorers and "
        "calibrated grids), or 'exact:minisd' / 'exact:minisd-coupled' (the exact density of the training "
        "set; methods none, sail)",
    )
    mt.add_argument("--prompts", required=True, help="prompt file (.txt or .jsonl; jsonl 'images' = training images)")
    mt.add_argument("--category", default=None, help="only the .jsonl records of these categories, e.g. em")
    mt.add_argument("--limit", type=int, default=None, help="only the first N prompts (after --category)")
    mt.add_argument("--method", default="sail", help=f"comma-separated, from {','.join(MITIGATION_METHODS)}")
    mt.add_argument("--setting", type=_float_list, default=None,
                    help="comma-separated: SAIL ℓ_thres | RTA/RNA tokens added | Wen ℓ_target | Ren C")
    mt.add_argument("-n", "--n", dest="n", type=int, default=5, help="images per prompt and setting (default 5)")
    mt.add_argument("--out", required=True, help="output folder (results.csv, images/)")
    mt.add_argument("--seed", type=int, default=0)
    mt.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the unmitigated generations")
    mt.add_argument("--batch-size", type=int, default=0,
                    help="images sampled at once across prompts of one setting (default 0: one prompt at a time)")
    mt.add_argument(
        "--sd-version", choices=("sd1", "sd2"), default=None, help="App. D.2 defaults (default: from the scheduler)"
    )
    mt.add_argument("--sail-loss", choices=("paper", "official"), default="official",
                    help="SAIL objective: the paper's ‖s^Δ(x+δŝ)−s^Δ(x)‖²+α‖x‖² or the official code's (default; "
                    "the published ℓ_thres grids are on its scale)")
    mt.add_argument("--alpha", type=float, default=None, help="SAIL's α (default 0.05 SD1 / 0.01 SD2)")
    mt.add_argument("--budget", type=int, default=8, help="SAIL candidates optimised together")
    mt.add_argument("--sail-max-steps", type=int, default=50, help="Adam steps per SAIL round")
    mt.add_argument("--no-fallback", action="store_true", help="no raising of ℓ_thres by 0.1 every third round")
    mt.add_argument("--sscd", default=None, help="SSCD TorchScript file for the copy score")
    mt.add_argument("--copy-scorer", choices=("pixel",), default=None, help="model-free stand-in copy score")
    mt.add_argument("--references", default=None, help="folder of training images <index>.png (jsonl 'index' or line)")
    mt.add_argument(
        "--clip", default=None, help="local CLIP folder (CLIPModel + CLIPProcessor) for the alignment score"
    )
    mt.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    mt.add_argument("--device", default=None)
    mt.add_argument("--num-inference-steps", type=int, default=DEFAULT_STEPS)
    mt.add_argument("--quiet", action="store_true", help="no progress bar")
    mt.set_defaults(func=_mitigate)

    pt = sub.add_parser("plot-tradeoff", help="Figure 6 (left) and a qualitative grid from a `sharp mitigate` folder")
    pt.add_argument("dir", help="the --out folder of sharp mitigate")
    pt.add_argument("--grid-prompts", type=int, default=4)
    pt.set_defaults(func=_plot_tradeoff)

    v = sub.add_parser("verify", help="recompute random rows of committed results tables; exit 1 on a mismatch",
                       description="Recompute --rows random rows of each results table (all committed ones under "
                       "results/ by default) with today's code; a value beyond the table's tolerance is printed with "
                       "the table, the row and both values, and the exit status is 1.")
    v.add_argument("tables", nargs="*", help="results tables (default: every committed one)")
    v.add_argument("--rows", type=int, default=2, help="rows per table (default 2)")
    v.add_argument("--seed", type=int, default=0, help="which rows (default 0)")
    v.set_defaults(func=_verify)
    sub.add_parser("minisd", add_help=False, help="prepare / train / evaluators / calibrate / verify MiniSD "
                   "(= python -m sharp_utils.minisd.train; sharp minisd -h lists them)")

    pr = sub.add_parser("prompts", help="the paper's SD prompt sets")
    prs = pr.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)
    dl = prs.add_parser("download", help="fetch sd1_mem.txt, sd1_nmem.txt, sd2_*.txt ... (needs network)")
    dl.add_argument("--dest", default=None, help="folder (default prompts/sd, git-ignored)")
    dl.set_defaults(func=_prompts_download)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["minisd"]:  # MiniSD's training tool keeps its own argument parser
        from .minisd.train import main as minisd_main

        minisd_main(argv[1:], prog="sharp minisd")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .mitigation import MitigationError
    from .tradeoff import MitigationSetupError
    from .pipeline import PipelineLoadError
    from .prompts import PromptFileError
    from .results import ResultFileError
    from .image_scorers import ScorerError

    try:
        return int(args.func(args) or 0)
    except (UserError, PromptFileError, PipelineLoadError, ResultFileError, MitigationError, MitigationSetupError,
            ScorerError) as e:
        print(f"sharp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
