"""``mixjax merge``: join the part files of a sliced bootstrap (``mixjax bootstrap --slice i/n``) or a sliced
comparison (``mixjax compare --slice i/n``) into what one run gives."""

from __future__ import annotations

import sys
import zipfile

from ._common import CliError, check_output_path, print_json, write_atomic


def add_parser(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="join the part files of a sliced bootstrap or comparison",
        description="Join the part files written by `mixjax bootstrap ... --slice i/n --save PART` into the file one "
        "unsliced run writes, or those of `mixjax compare ... --slice i/n --save PART` into the comparison one run "
        "gives (printed as its table, or its JSON with --json; --save writes that JSON). Every slice 0 .. n-1 exactly "
        "once, any order; a missing, repeated or mismatched part (other law(s), data, seed, splits or settings) is an error.",
    )
    p.add_argument("parts", nargs="+", metavar="PART", help="part files, one per slice")
    p.add_argument("--save", metavar="FILE", help="the joined file: for a bootstrap (needed) the .mixfit file mixjax predict "
                   "and BootstrapResult.load read; for a comparison the JSON object of --json")
    p.add_argument("--plot", metavar="FILE", help="comparison parts: a chart of train and held-out MRE per law (PNG, PDF or SVG)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    kinds = {path: "bootstrap" if zipfile.is_zipfile(path) else "comparison" for path in args.parts}
    if len(set(kinds.values())) > 1:
        boot = next(p for p, k in kinds.items() if k == "bootstrap")
        comp = next(p for p, k in kinds.items() if k == "comparison")
        raise CliError(f"the parts mix a bootstrap part ({boot}) and a comparison part ({comp}); join the parts of one run")
    if args.save is not None:
        check_output_path(args.save, "--save", args=args)
    if set(kinds.values()) == {"comparison"}:
        return _merge_comparison(args)
    if args.save is None:
        raise CliError("joining bootstrap parts writes a file: give --save FILE")
    if args.plot is not None:
        raise CliError("--plot draws a joined comparison; for a bootstrap use `mixjax plot` on the joined file")
    from mixjax.io import FitFileError
    from mixjax.resampling import BootstrapResult, merge

    parts = []
    for path in args.parts:
        try:
            parts.append(BootstrapResult.load(path))
        except FitFileError as e:
            raise CliError(f"{e}" if path in str(e) else f"{path}: {e}") from None
    try:
        res = merge(parts, names=args.parts)
    except ValueError as e:
        raise CliError(str(e)) from None
    write_atomic(args.save, res.save, args, "--save")
    out = {"law": res.point.info["law"], "n_parts": len(parts), "n_resamples": res.n_resamples, "n_failed": res.n_failed,
           "resample_status": dict(res.record.resample_status), "save": args.save}
    if args.json:
        print_json(out)
    else:
        print(f"joined {len(parts)} parts: {res.n_resamples} resamples of {out['law']} ({res.n_failed} failed) saved to {args.save}",
              file=sys.stderr)
    return 0


def _merge_comparison(args) -> int:
    """Join comparison parts and report the comparison as `mixjax compare` does."""
    from mixjax.comparison import ComparisonPart, merge

    from .compare import report

    if args.plot is not None:
        check_output_path(args.plot, "--plot", (".png", ".pdf", ".svg"), args=args)
    parts = []
    for path in args.parts:
        try:
            parts.append(ComparisonPart.load(path))
        except ValueError as e:
            raise CliError(str(e)) from None
    try:
        result = merge(parts, names=args.parts)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not args.json:
        print(f"joined {len(parts)} parts of the comparison", file=sys.stderr)
    return report(result, args, plot=args.plot, save=args.save)
