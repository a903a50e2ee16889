"""``mixjax plot``: figures of a saved fit (predicted vs observed, loss along a line of mixtures, ternary map)."""

from __future__ import annotations

import sys

import numpy as np

from ._common import (
    CliError,
    check_output_path,
    load_data,
    parse_count,
    print_json,
    write_atomic,
)

KINDS = ("pred-vs-obs", "line", "ternary")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a figure of a saved fit",
        description="Draw a figure of a fit saved by `mixjax fit --output`. KIND is one of: pred-vs-obs (predicted "
        "against observed loss per target; needs --data), line (predicted loss along the line from --start to --end), "
        "ternary (mean predicted loss over the simplex of three domains, --domains; observed --data runs as points).",
    )
    p.add_argument("kind", metavar="KIND", choices=KINDS, help=" | ".join(KINDS))
    p.add_argument("fit", metavar="FIT", help="a fit file written by `mixjax fit --output`")
    p.add_argument("--data", metavar="CSV", help="runs to draw: a wide-layout CSV file or a bundled dataset name; its weight columns are read for the fit's domains (weight_<domain>), which must all be present")
    p.add_argument("--heldout", metavar="CSV", help="pred-vs-obs: held-out runs drawn in a second colour (same columns rule as --data)")
    p.add_argument("--targets", nargs="+", metavar="X,Y", help="loss columns of --data/--heldout to read (comma-separated; default: every *_loss column)")
    p.add_argument("--sum-tol", type=float, default=None, metavar="TOL", help="mixture rows of --data summing to 1 within TOL are renormalized (default 0.01)")
    p.add_argument("--out", "-o", metavar="FILE", default=None, help="output image (.png, .svg or .pdf; default <KIND>.png)")
    p.add_argument("--model-size", "-N", metavar="N", help="model size in parameters (default: the fit's only scale); also selects --data rows, instead of the fit's scales")
    p.add_argument("--tokens", "-D", metavar="D", help="training tokens (default: the fit's only scale); also selects --data rows, instead of the fit's scales")
    p.add_argument("--all-scales", action="store_true", help="draw every row of --data/--heldout (default without -N/-D: only rows at the "
                   "fit's own scales, as recorded in the fit)")
    p.add_argument("--start", help="line: mixture A (comma-separated weights or name=weight pairs)")
    p.add_argument("--end", help="line: mixture B (same forms as --start)")
    p.add_argument("--domains", help="ternary: the three domains to vary, comma-separated (needed when the fit has more than 3)")
    p.add_argument("--base", help="ternary: weights of the other domains (a full mixture; default uniform)")
    p.add_argument("--resolution", type=int, default=60, help="ternary: grid points per edge (default 60)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of raster output (default 150)")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the figure's numbers")
    p.set_defaults(run=run)


def _at_scale(data, N, D):
    if N is None and D is None:
        return data
    keep = np.ones(data.n_rows, bool)
    if N is not None:
        keep &= np.isclose(data.model_size, N, rtol=1e-3)
    if D is not None:
        keep &= np.isclose(data.n_tokens, D, rtol=1e-3)
    if not keep.any():
        raise CliError(f"no rows of {data.name!r} at the requested --model-size/--tokens")
    return data.subset(keep)


def _at_fit_scales(f, data, flag):
    """Rows of ``data`` at the fit's own scales, said on stderr; an error when there are none."""
    from mixjax.plots.fit import at_fit_scales, describe_scales, fit_scales

    scales = fit_scales(f)
    if not scales:
        return data
    keep = at_fit_scales(f, data)
    where = describe_scales(scales, most=4)
    if not keep.any():
        raise CliError(f"no row of {flag} {data.name!r} is at the fit's scale(s) {where}; pass --all-scales to draw every row, "
                       "or select rows with -N/-D")
    print(f"{flag} {data.name}: using {int(keep.sum())} of {data.n_rows} rows, those at the fit's scale(s) {where} "
          "(--all-scales uses every row)", file=sys.stderr)
    return data if keep.all() else data.subset(keep)


def run(args) -> int:
    from mixjax.io import load_fit
    from mixjax.plots import fit as plots

    from .predict import parse_mixture

    out_path = check_output_path(args.out or f"{args.kind}.png", "--out", (".png", ".svg", ".pdf"), args=args)
    if args.resolution < 2 or args.resolution > 1000:
        raise CliError(f"--resolution must be between 2 and 1000, got {args.resolution}")
    if args.dpi < 1 or args.dpi > 2000:
        raise CliError(f"--dpi must be between 1 and 2000, got {args.dpi}")
    f = load_fit(args.fit)
    domains = list(f.record.domains)
    N = parse_count(args.model_size) if args.model_size else None
    D = parse_count(args.tokens) if args.tokens else None

    summary: dict = {"kind": args.kind, "fit": args.fit, "out": out_path}

    def read(source, flag):
        d = load_data(source, args.targets, domains=domains, sum_tol=args.sum_tol)
        shared = [t for t in f.record.targets if t in d.targets]
        if args.kind == "pred-vs-obs" and not shared:
            raise CliError(f"{flag} {source}: none of the fit's targets {list(f.record.targets)} has a loss column (its targets: {list(d.targets)})")
        total = d.n_rows
        d = _at_scale(d, N, D) if N is not None or D is not None or args.all_scales else _at_fit_scales(f, d, flag)
        key = "rows_used" if flag == "--data" else "heldout_rows_used"
        summary.update({key: d.n_rows, key.replace("used", "total"): total})
        if flag == "--data":
            summary["scales_used"] = [[a, b] for a, b, _ in d.scales()]
        return d

    data = read(args.data, "--data") if args.data else None
    try:
        if args.kind == "pred-vs-obs":
            if data is None:
                raise CliError("pred-vs-obs needs --data (the observed runs)")
            held = read(args.heldout, "--heldout") if args.heldout else None
            fig = plots.plot_predicted_vs_observed(f, data, heldout=held, all_scales=True)  # rows already selected
            ev = _scores(f, data)
            summary.update(mre=ev["mre"], mre_all=ev["mre_all"], n_cells_used=ev["n_cells_used"], n_cells_nonfinite=ev["n_cells_nonfinite"],
                           per_target_mre={t: v["mre"] for t, v in ev["per_target"].items()}, n_rows=data.n_rows)
            if held is not None:
                summary["heldout_mre"] = _scores(f, held)["mre"]
        elif args.kind == "line":
            if not (args.start and args.end):
                raise CliError("line needs --start and --end mixtures")
            a, _ = parse_mixture(args.start, domains)
            b, _ = parse_mixture(args.end, domains)
            fig = plots.plot_mixture_line(f, a, b, N, D)
            t, _, pred = plots.mixture_line(f, a, b, N, D)
            mean = pred.mean(1)
            summary.update(t_min_mean=float(t[np.argmin(mean)]), min_mean=float(mean.min()), mean_at_start=float(mean[0]), mean_at_end=float(mean[-1]))
        else:
            names = [s.strip() for s in args.domains.split(",")] if args.domains else None
            base = parse_mixture(args.base, domains)[0] if args.base else None
            fig = plots.plot_ternary(f, names, N, D, data=data, base=base, resolution=args.resolution)
            g = plots.ternary_grid(f, names, N, D, base=base, resolution=args.resolution)
            i = int(np.argmin(g["mean"]))
            summary.update(domains=[domains[k] for k in g["domains"]], argmin_mixture=g["mixtures"][i].tolist(), min_mean=float(g["mean"][i]))
            if data is not None and len(domains) == 3:
                summary["mre"] = _scores(f, data)["mre"]
    except ValueError as e:
        raise CliError(str(e)) from None
    write_atomic(out_path, lambda tmp: fig.savefig(tmp, dpi=args.dpi), args, "--out")
    import matplotlib.pyplot as plt

    plt.close(fig)
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {out_path}", file=sys.stderr)
    return 0


def _scores(f, data) -> dict:
    """MRE of the fit on ``data`` over the cells its fit counts (as ``Fit.evaluate``), with cell counts
    (:func:`mixjax.metrics.score_fit`)."""
    from mixjax.metrics import score_fit

    return score_fit(f, data)
