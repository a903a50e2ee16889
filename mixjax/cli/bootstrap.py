"""``mixjax bootstrap``: bootstrap intervals of a law's parameters (all resamples refitted in one batched call)."""

from __future__ import annotations

import sys

from ._common import CliError, format_table, load_data, print_json, select_scale
from .fit import add_fit_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="bootstrap intervals of a law's parameters",
        description="Refit a law on R bootstrap resamples of the training runs (all resamples x starts in one "
        "batched, compiled call) and print percentile or BCa intervals of its parameters. Progress goes to stderr.",
    )
    add_fit_options(p)
    p.set_defaults(starts=8)
    p.add_argument("--resamples", "-R", type=int, default=1000, help="number of bootstrap resamples (default 1000)")
    p.add_argument("--scheme", default="rows", choices=["rows", "mixtures", "stratified"], help="what is resampled: rows, whole mixtures (all their checkpoints and scales together), or rows within each (N, D) scale (default rows)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--method", default="percentile", choices=["percentile", "bca"], help="interval method; bca adds one leave-one-out refit per row (or mixture) (default percentile)")
    p.add_argument("--chunk-size", type=int, help="fit the resamples x starts in chunks of this many members (bounds memory; progress per chunk)")
    p.add_argument("--save", metavar="PATH", help="save the bootstrap result (.npz) for later analysis")
    p.add_argument("--plot", metavar="PNG", help="write a figure of the parameter intervals")
    p.set_defaults(run=run)


def run(args) -> int:
    import mixjax

    if args.resamples < 1:
        raise CliError(f"--resamples must be >= 1, got {args.resamples}")
    if not 0.0 < args.level < 1.0:
        raise CliError(f"--level must be in (0, 1), got {args.level}")
    data = select_scale(load_data(args.train, args.targets), args.model_size, args.tokens)
    print(
        f"bootstrap of {args.law} on {data.n_rows} rows of {data.name}: {args.resamples} resamples ({args.scheme}) "
        f"x {args.starts} starts",
        file=sys.stderr,
    )
    res = mixjax.bootstrap(
        args.law, data, resamples=args.resamples, scheme=args.scheme, starts=args.starts, seed=args.seed,
        chunk_size=args.chunk_size, progress=True, level=args.level, method=args.method,
        objective=args.objective, optimizer=args.optimizer, max_steps=args.max_steps, dtype=args.dtype,
    )
    iv = res.param_intervals(args.level, args.method)
    params = {
        name: [
            {"estimate": float(e), "lo": float(lo), "hi": float(hi)}
            for e, lo, hi in zip(v["estimate"].reshape(-1), v["lo"].reshape(-1), v["hi"].reshape(-1))
        ]
        for name, v in iv.items()
    }
    if args.save:
        res.save(args.save)
        print(f"saved to {args.save}", file=sys.stderr)
    if args.plot:
        from mixjax.plots.intervals import plot_param_intervals

        plot_param_intervals(res, args.level, args.method).savefig(args.plot, dpi=120)
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
        "resample_status": res.info["resample_status"],
        "targets": res.point.info["targets"],
        "params": params,
        "seconds": res.info["seconds_point_fit"] + res.info["seconds_resamples"] + res.info.get("jackknife_seconds", 0.0),
    }
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
    print(format_table(rows, ["param", "target", "estimate", "lo", "hi"]))
    return 0
