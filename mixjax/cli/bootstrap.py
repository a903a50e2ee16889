"""``mixjax bootstrap``: bootstrap intervals of a law's parameters (all resamples refitted in one batched call)."""

from __future__ import annotations

import sys

import numpy as np

from ._common import (
    CliError,
    progress_bar,
    add_distributed_options,
    check_output_path,
    format_table,
    parse_slice_option,
    print_json,
    start_distributed,
    write_atomic,
)
from .fit import add_fit_options, check_fit_args, fit_settings, read_training_data


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="bootstrap intervals of a law's parameters",
        description="Refit a law on R bootstrap resamples of the training runs (all resamples x starts in one "
        "batched, compiled call) and print percentile or BCa intervals of its parameters. Progress goes to stderr.",
    )
    add_fit_options(p)
    p.set_defaults(starts=2)  # per resample: the full-data fit (warm start) and one random draw
    p.add_argument("--resamples", "-R", type=int, default=1000, help="number of bootstrap resamples (default 1000)")
    p.add_argument("--scheme", default="rows", choices=["rows", "mixtures", "stratified"], help="what is resampled: rows, whole mixtures (all their checkpoints and scales together), or rows within each (N, D) scale (default rows)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--method", default="percentile", choices=["percentile", "bca"], help="interval method; bca adds one leave-one-out refit per row (or mixture) (default percentile)")
    p.add_argument("--chunk-size", type=int, help="fit the resamples x starts in chunks of this many members (bounds memory; progress per chunk)")
    p.add_argument("--save", metavar="PATH", help="save the bootstrap result as a fit file with the resamples as its ensemble (.mixfit; mixjax predict reads it) for later analysis (checked before fitting)")
    p.add_argument("--plot", metavar="PNG", help="write a figure of the parameter intervals (.png, .svg or .pdf; checked before fitting)")
    p.add_argument("--fit", metavar="FIT.mixfit", help="the full-data fit, saved by `mixjax fit --output` with the same law, "
                   "table and settings: used instead of refitting it (every slice of a job array can share one); a fit of "
                   "another table, law or settings is an error")
    p.add_argument("--slice", metavar="I/N", help="fit only slice I of N of the resamples (counted from 0; needs --save) and save it as a part file; `mixjax merge` joins the N parts into the file one run writes. For job arrays: every slice runs on its own, and a lost one reruns alone")
    add_distributed_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    import mixjax

    main = start_distributed(args)
    cls = check_fit_args(args)
    from mixjax.resampling import check_resamples

    check_resamples(args.resamples, "--resamples")
    part = None
    if args.slice is not None:
        part = parse_slice_option(args.slice, args.resamples)
        if args.save is None:
            raise CliError("--slice fits part of the resamples: give --save PART for its part file (mixjax merge joins the parts)")
        if args.plot is not None:
            raise CliError("--slice makes a part file, not intervals: plot after `mixjax merge`")
    if not 0.0 < args.level < 1.0:
        raise CliError(f"--level must be in (0, 1), got {args.level}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise CliError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.save is not None and main:
        check_output_path(args.save, "--save", args=args)
    if args.plot is not None and main:
        check_output_path(args.plot, "--plot", (".png", ".svg", ".pdf"), args=args)
    data = read_training_data(args, cls)
    point = None
    if args.fit is not None:
        from mixjax.io import load_fit

        point = load_fit(args.fit)
    if main:
        which = "" if part is None else f" (slice {part[0]}/{part[1]})"
        print(
            f"bootstrap of {args.law} on {data.n_rows} rows of {data.name}: {args.resamples} resamples ({args.scheme}) "
            f"x {args.starts} starts{which}",
            file=sys.stderr,
        )
    try:
        res = mixjax.bootstrap(
            args.law, data, resamples=args.resamples, scheme=args.scheme, starts=args.starts, seed=args.seed,
            chunk_size=args.chunk_size, progress=progress_bar("bootstrap", main=main, json_mode=args.json), level=args.level, method=args.method,
            objective=args.objective, optimizer=args.optimizer, max_steps=args.max_steps, dtype=args.dtype, part=part,
            point=point, **fit_settings(args, data),
        )
    except mixjax.DataError as e:
        raise CliError(str(e)) from None
    if part is not None:
        return _save_part(args, res, main)
    iv = res.param_intervals(args.level, args.method)  # every process: a BCa jackknife is fitted by all of them
    params = {
        name: [
            {"estimate": float(e), "lo": float(lo), "hi": float(hi)}
            for e, lo, hi in zip(v["estimate"].reshape(-1), v["lo"].reshape(-1), v["hi"].reshape(-1))
        ]
        for name, v in iv.items()
    }
    raw = {}
    if hasattr(res.point.law, "raw_count_params"):  # the chinchilla law: A, B also for N, D in raw counts
        ivr = res.interval(lambda law: law.raw_count_params(), args.level, args.method)
        raw = {
            name: [
                {"estimate": float(e), "lo": float(lo), "hi": float(hi)}
                for e, lo, hi in zip(np.ravel(ivr["estimate"][name]), np.ravel(ivr["lo"][name]), np.ravel(ivr["hi"][name]))
            ]
            for name in ("A", "B")
        }
    if not main:  # every process holds the same result; process 0 reports and writes it
        return 0
    if args.save is not None:
        write_atomic(args.save, res.save, args, "--save")
        print(f"saved to {args.save}", file=sys.stderr)
    if args.plot is not None:
        from mixjax.plots.intervals import plot_param_intervals

        fig = plot_param_intervals(res, args.level, args.method)
        write_atomic(args.plot, lambda tmp: fig.savefig(tmp, dpi=120), args, "--plot")
        print(f"figure written to {args.plot}", file=sys.stderr)
    out = {
        "law": res.point.info["law"],
        "n_rows": data.n_rows,
        "n_resamples": res.n_resamples,
        "n_failed": res.n_failed,
        "scheme": res.scheme,
        "level": args.level,
        "method": args.method,
        "seed": res.seed,
        "starts": args.starts,
        "point_loss": res.point.loss,
        "point_status": res.point.status.name,
        "resample_status": dict(res.record.resample_status),
        "targets": res.point.info["targets"],
        "params": params,
    }
    if raw:
        out["params_raw_counts"] = raw
    if args.timings:
        rec = res.record
        out["seconds"] = sum(float(v) for v in (rec.seconds_point_fit, rec.seconds_resamples, rec.jackknife_seconds) if v is not None)
    if args.json:
        print_json(out)
        return 0
    print(
        f"law {out['law']}: {out['n_resamples']} resamples ({out['scheme']}), {out['n_failed']} failed; "
        f"{100 * args.level:g}% {args.method} intervals; full-data fit {out['point_status']}, objective {out['point_loss']:.6g}"
    )
    print()
    targets = out["targets"]
    rows = []
    for name, vals in params.items():
        for j, v in enumerate(vals):
            label = targets[j] if len(vals) == len(targets) else ("" if len(vals) == 1 else str(j))
            rows.append([name, label, v["estimate"], v["lo"], v["hi"]])
    for name, vals in raw.items():
        for j, v in enumerate(vals):
            rows.append([f"{name} (raw counts)", targets[j] if len(vals) == len(targets) else str(j), v["estimate"], v["lo"], v["hi"]])
    print(format_table(rows, ["param", "target", "estimate", "lo", "hi"]))
    return 0


def _save_part(args, res, main: bool) -> int:
    """Write the part file of one slice (process 0) and report what it holds."""
    if not main:
        return 0
    write_atomic(args.save, res.save, args, "--save")
    sl = res.record.slice
    out = {
        "law": res.point.info["law"], "slice": f"{sl['index']}/{sl['count']}", "resamples": [sl["first"], sl["stop"]],
        "n_resamples": res.n_resamples, "n_failed": res.n_failed, "resample_status": dict(res.record.resample_status),
        "point_loss": res.point.loss, "point_status": res.point.status.name, "save": args.save,
    }
    if args.json:
        print_json(out)
    else:
        print(f"slice {out['slice']}: resamples {sl['first']}..{sl['stop'] - 1} of {args.resamples} of {out['law']} "
              f"({out['n_failed']} failed) saved to {args.save}; join the parts with `mixjax merge PART... --save FILE`")
    return 0
