"""``mixjax merge``: join the part files of a sliced bootstrap (``mixjax bootstrap --slice i/n``) into one file."""

from __future__ import annotations

import sys

from ._common import CliError, check_output_path, print_json, write_atomic


def add_parser(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="join the part files of a sliced bootstrap",
        description="Join the part files written by `mixjax bootstrap ... --slice i/n --save PART` (every slice 0 .. "
        "n-1 exactly once, any order) into the file one unsliced run writes. A missing, repeated or mismatched "
        "part (other law, data, seed, scheme or settings) is an error.",
    )
    p.add_argument("parts", nargs="+", metavar="PART", help="part files, one per slice")
    p.add_argument("--save", required=True, metavar="FILE", help="the joined bootstrap file (.mixfit; read by mixjax predict and BootstrapResult.load)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    from mixjax.io import FitFileError
    from mixjax.resampling import BootstrapResult, merge

    check_output_path(args.save, "--save", args=args)
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
           "resample_status": res.info["resample_status"], "save": args.save}
    if args.json:
        print_json(out)
    else:
        print(f"joined {len(parts)} parts: {res.n_resamples} resamples of {out['law']} ({res.n_failed} failed) saved to {args.save}",
              file=sys.stderr)
    return 0
