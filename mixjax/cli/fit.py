"""``mixjax fit``: fit a law to a dataset and report its parameters and errors."""

from __future__ import annotations

import sys

from ._common import (
    CliError,
    MAX_STEPS_HELP,
    progress_bar,
    add_distributed_options,
    check_output_path,
    format_table,
    load_data,
    print_json,
    select_scale,
    start_distributed,
)


def add_data_options(p) -> None:
    """Options that say which columns of a table are read (fit, bootstrap)."""
    p.add_argument("--domains", metavar="A,B,...", help="the mixture's domains, read from weight_<domain> columns (comma-separated); other weight_* columns are ignored. Default: every weight_* column that holds mixture weights")
    p.add_argument("--targets", nargs="+", metavar="X,Y", help="loss targets, read from <target>_loss columns (comma-separated; 'loss' means a bare loss column). Default: every *_loss column (train_loss included). For a phase table (phase_<p>_<domain> columns) or a ratios file with --metrics: metric column names or globs ('eval/paloma/*/bpb'), or mean:GLOB for one target 'objective', the mean of the metrics matching GLOB")
    p.add_argument("--sum-tol", type=float, default=None, metavar="TOL", help="mixture rows summing to 1 within TOL are renormalized; further off is an error (default 0.01)")
    p.add_argument("--metrics", metavar="CSV", help="a metrics CSV file (one row per run: a run column and one column per metric) joined on run with the ratios CSV file given as data (one row per run: run and one column per domain, summing to 1); --targets then names metric columns, or mean:GLOB for their mean")


def add_fit_options(p) -> None:
    """Options shared by every sub-command that fits (fit, bootstrap)."""
    p.add_argument("train", metavar="TRAIN", help="training data: a wide-layout CSV file or a bundled dataset name (see `mixjax datasets`)")
    p.add_argument("--law", default="capacity_noise", help="law to fit (see `mixjax laws`; default capacity_noise)")
    p.add_argument("--model-size", "-N", metavar="N", help="use only rows at this model size, in parameters (e.g. 122M or 1.22e8); default: all rows, each with its own size")
    p.add_argument("--tokens", "-D", metavar="D", help="use only rows at this token count, in tokens (e.g. 9.998B); default: all rows, each with its own count")
    add_data_options(p)
    add_solver_options(p, starts=16)
    p.add_argument("--huber-delta", type=float, default=None, metavar="DELTA", help="threshold of the Huber loss of --objective huber_log, on log-loss residuals (default 1e-3, as Hoffmann et al. 2022)")
    p.add_argument("--grid", action="store_true", help="start the fit from the grid of Hoffmann et al. / Besiroglu et al. (4500 starts in one batch; chinchilla law only) instead of --starts random draws")
    p.add_argument("--timings", action="store_true", help="report wall-clock seconds (left out by default, so that the same inputs give the same output bytes)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of tables")


def add_solver_options(p, starts: int) -> None:
    """How each fit runs: starts, seed, objective, solver, steps, precision (fit, bootstrap, compare)."""
    p.add_argument("--starts", type=int, default=starts, help=f"random initializations fitted in one batch; the best is kept (default {starts})")
    p.add_argument("--seed", type=int, default=0, help="random seed for starts (and resamples, folds); same seed, same result (default 0)")
    p.add_argument("--objective", default="mse", choices=["mse", "relative", "huber_log"], help="fitting objective (default mse)")
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "lm", "adam"], help="solver: lbfgs (default), lm (Levenberg-Marquardt) or adam")
    p.add_argument("--max-steps", type=int, default=None, help=MAX_STEPS_HELP)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="floating-point precision (default float64)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a law to training runs",
        description="Fit a law to training runs in one batched, compiled call over random starts; print its "
        "parameters, train (and validation) errors with the cells they count, and status.",
    )
    add_fit_options(p)
    p.add_argument("--eval", metavar="VAL", help="validation data (CSV or bundled name, same domains as TRAIN) scored with the fitted law, at the same --model-size/--tokens selection")
    p.add_argument("--polish", action="store_true", help="with --dtype float32: continue the best start in float64 (the fast float32 search, a float64 answer)")
    p.add_argument("--val-fraction", type=float, help="hold out this fraction (strictly between 0 and 1) of TRAIN rows (random, --seed) as validation instead of --eval")
    p.add_argument("--output", "-o", metavar="FILE", help="save the fit to FILE (reload with `mixjax predict FILE` or mixjax.load_fit); checked before fitting")
    add_distributed_options(p)
    p.set_defaults(run=run)


def check_fit_args(args) -> type:
    """Validate the fitting options before any data is read; returns the law class."""
    from mixjax.fitting import check_seed
    from mixjax.laws import get_law

    if args.starts < 1:
        raise CliError(f"--starts must be >= 1, got {args.starts}")
    check_seed(args.seed, "--seed")
    if args.max_steps is not None and args.max_steps < 1:
        raise CliError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.sum_tol is not None and not (args.sum_tol >= 0 and args.sum_tol < float("inf")):
        raise CliError(f"--sum-tol must be a finite number >= 0, got {args.sum_tol}")
    if args.huber_delta is not None:
        if not (args.huber_delta > 0 and args.huber_delta < float("inf")):
            raise CliError(f"--huber-delta must be a finite number > 0, got {args.huber_delta}")
        if args.objective != "huber_log":
            raise CliError(f"--huber-delta applies to --objective huber_log only (the objective is {args.objective})")
    try:
        cls = get_law(args.law)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.grid and cls.name != "chinchilla":
        raise CliError(f"--grid is the starting grid of the chinchilla law; law {cls.name} draws random starts (--starts)")
    return cls


def fit_settings(args, data) -> dict:
    """Keyword arguments of mixjax.fit / mixjax.bootstrap shared by both commands: the grid of starts (--grid) and
    the Huber threshold (--huber-delta) when given."""
    kw = {}
    if args.huber_delta is not None:
        kw["huber_delta"] = args.huber_delta
    if args.grid:
        from mixjax.laws import chinchilla_grid

        kw["init"] = chinchilla_grid(data.n_targets, dtype=args.dtype)
    return kw


def read_training_data(args, cls):
    """TRAIN as selected by --domains/--targets/--sum-tol and --model-size/--tokens, checked against the law:
    a per-domain law needs domains, and is warned about loss columns it ignores and domains without a loss."""
    import warnings

    data = load_data(args.train, args.targets, domains=args.domains, sum_tol=args.sum_tol, announce=True, metrics=args.metrics)
    data = select_scale(data, args.model_size, args.tokens)
    if data.n_domains == 0 and getattr(cls, "uses_mixture", True):
        raise CliError(
            f"law {cls.name} is a function of the training mixture, but {data.name!r} has no weight_<domain> columns "
            "(a table without mixtures); fit a law that does not use the mixture (chinchilla), or add weight columns"
        )
    if cls.per_domain:
        if data.n_domains == 0:
            raise CliError(
                f"law {cls.name} predicts one loss per training domain, but {data.name!r} has no weight_<domain> "
                "columns (a table without mixtures); choose a law that does not use the mixture, or add weight columns"
            )
        extra = data.unmatched_targets()
        if extra:
            warnings.warn(
                f"loss column(s) {[t + '_loss' if t != 'loss' else t for t in extra]} match no domain of {data.name!r}; "
                f"law {cls.name} predicts one loss per domain and ignores them (name the targets with --targets)",
                stacklevel=2,
            )
        lacking = data.domains_without_loss()
        if lacking and len(lacking) < data.n_domains:
            warnings.warn(
                f"domain(s) {list(lacking)} of {data.name!r} have no loss column: law {cls.name} fits their "
                "parameters without observing their loss, and their predictions are not scored",
                stacklevel=2,
            )
    return data


def fit_from_args(args, data, main: bool = True):
    import mixjax

    try:
        return mixjax.fit(
            args.law, data, starts=args.starts, seed=args.seed, objective=args.objective, optimizer=args.optimizer,
            max_steps=args.max_steps, dtype=args.dtype, progress=progress_bar("fit", main=main, json_mode=args.json), polish=args.polish, **fit_settings(args, data),
        )
    except mixjax.DataError as e:
        raise CliError(str(e)) from None


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.3f} %"


def run(args) -> int:
    main = start_distributed(args)
    cls = check_fit_args(args)
    if args.eval and args.val_fraction is not None:
        raise CliError("give either --eval or --val-fraction, not both")
    if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
        raise CliError(f"--val-fraction must be strictly between 0 and 1 (leave it out for no validation), got {args.val_fraction}")
    if args.polish and args.dtype != "float32":
        raise CliError("--polish continues a float32 fit in float64: give it with --dtype float32")
    if args.output is not None and main:
        check_output_path(args.output, "--output", args=args)
    train = read_training_data(args, cls)
    val = None
    if args.eval:
        val = load_data(args.eval, args.targets, domains=list(train.domains), sum_tol=args.sum_tol)
        val = select_scale(val, args.model_size, args.tokens)
    elif args.val_fraction is not None:
        from mixjax.data import DataError

        try:
            train, val = train.split_rows(args.val_fraction, seed=args.seed)
        except DataError as e:
            raise CliError(str(e)) from None
    if not args.json and main:
        how = "the grid of 4500 starts" if args.grid else f"{args.starts} starts"
        print(f"fitting {args.law} to {train.n_rows} rows of {train.name} ({how})...", file=sys.stderr)
    f = fit_from_args(args, train, main)
    if not main:  # every process holds the same fit; process 0 reports and saves it
        return 0
    from mixjax.metrics import score_fit

    targets = list(f.info["targets"])
    if val is not None and not any(t in val.targets for t in targets):
        raise CliError(f"validation data {val.name!r} has none of the fit's targets {targets} (its loss columns: {list(val.targets)})")
    tr = f.evaluate(train)
    cells = {"train": score_fit(f, train)}
    out = {
        "law": f.info["law"],
        "n_params": f.n_params,
        "status": f.status.name,
        "objective": f.config.objective,
        "loss": f.loss,
        "train_mre": cells["train"]["mre"],
        "train_mre_all": cells["train"]["mre_all"],
        "train_mae": tr["mae"],
        "train_rmse": tr["rmse"],
        "params": {k: v.reshape(-1).tolist() for k, v in f.params().items()},
        **raw_count_params(f.law),
        "domains": f.info["domains"],
        "targets": targets,
        "n_rows": train.n_rows,
        "start_status": f.info["start_status"],
    }
    if args.timings:
        out["seconds"] = f.info.get("seconds")
    if val is not None:
        cells["val"] = score_fit(f, val)
        ev = f.evaluate(val)
        out.update(val_mre=cells["val"]["mre"], val_mre_all=cells["val"]["mre_all"], val_mae=ev["mae"], val_rmse=ev["rmse"], n_val_rows=val.n_rows)
        out["per_target_val_mre"] = {t: v["mre"] for t, v in cells["val"]["per_target"].items()}
    out["per_target_train_mre"] = {t: v["mre"] for t, v in cells["train"]["per_target"].items()}
    for key in ("n_cells_used", "n_cells_excluded", "n_cells_nonfinite"):
        out[key] = {split: c[key] for split, c in cells.items()}
    out["cells"] = cells
    if args.output is not None:
        from mixjax.io import save_fit

        save_fit(args.output, f)
        out["output"] = args.output
        if not args.json:
            print(f"saved the fit to {args.output}", file=sys.stderr)
    if args.json:
        print_json(out)
        return 0
    print(f"law {out['law']} ({out['n_params']} free parameters), status {out['status']}, {args.objective} objective {out['loss']:.6g}")
    for split, c in cells.items():
        label = "train" if split == "train" else "validation"
        extra = f", {c['n_cells_nonfinite']} with a non-finite prediction" if c["n_cells_nonfinite"] else ""
        print(f"{label} MRE {_pct(c['mre'])} over {c['n_cells_used']} counted cells; {_pct(c['mre_all'])} over all "
              f"{c['n_cells_measured']} measured cells ({c['n_cells_excluded']} excluded by the fit's mask{extra})")
    if args.timings:
        print(f"fit time {out['seconds']:.3f} s")
    print()
    params = f.params()
    vec = {k: v for k, v in params.items() if v.ndim == 1 and v.size == len(targets)}

    def pct(v):
        return float("nan") if v is None else 100 * v

    rows = []
    for j, t in enumerate(targets):
        row = [t] + [float(v[j]) for v in vec.values()]
        for split in cells:
            pt = cells[split]["per_target"][t]
            row += [pct(pt["mre"]), f"{pt['n_cells_used']}/{pt['n_cells_measured']}"]
        rows.append(row)
    head = ["target", *vec.keys()]
    for split in cells:
        head += [f"{split} MRE %", f"{split} cells"]
    print(format_table(rows, head))
    other = {k: v for k, v in params.items() if k not in vec}
    for k, v in other.items():
        print(f"{k} = {v.round(6).tolist()}")
    if "params_raw_counts" in out:
        raw = out["params_raw_counts"]
        print("\nfor N and D in raw counts (parameters, tokens), as published fits quote them:")
        print(format_table([[t] + [raw[k][j] for k in raw] for j, t in enumerate(targets)], ["target", *raw]))
    return 0


def raw_count_params(law) -> dict:
    """``{"params_raw_counts": {...}}`` for a law that also states its parameters for N, D in raw counts (the
    chinchilla law: A_raw = A 1e6^alpha, B_raw = B 1e9^beta); empty otherwise."""
    import numpy as np

    if not hasattr(law, "raw_count_params"):
        return {}
    return {"params_raw_counts": {k: np.asarray(v).reshape(-1).tolist() for k, v in law.raw_count_params().items()}}
