"""``mixjax fit``: fit a law to a dataset and report its parameters and errors."""

from __future__ import annotations

import sys

from ._common import CliError, format_table, load_data, print_json, select_scale


def add_fit_options(p) -> None:
    """Options shared by every sub-command that fits (fit, bootstrap, optimize)."""
    p.add_argument("train", metavar="TRAIN", help="training data: a wide-layout CSV file or a bundled dataset name (see `mixjax datasets`)")
    p.add_argument("--law", default="capacity_noise", help="law to fit (see `mixjax laws`; default capacity_noise)")
    p.add_argument("--model-size", "-N", metavar="N", help="use only rows at this model size, in parameters (e.g. 122M or 1.22e8); default: all rows, each with its own size")
    p.add_argument("--tokens", "-D", metavar="D", help="use only rows at this token count, in tokens (e.g. 9.998B); default: all rows, each with its own count")
    p.add_argument("--targets", nargs="+", metavar="NAME", help="loss columns to use (default: all)")
    p.add_argument("--starts", type=int, default=16, help="random initializations fitted in one batch; the best is kept (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed for starts (and resamples); same seed, same result (default 0)")
    p.add_argument("--objective", default="mse", choices=["mse", "relative", "huber_log"], help="fitting objective (default mse)")
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"], help="optimizer (default lbfgs)")
    p.add_argument("--max-steps", type=int, default=400, help="optimizer iterations per start (default 400)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="floating-point precision (default float64)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of tables")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a law to training runs",
        description="Fit a law to training runs in one batched, compiled call over random starts; print its "
        "parameters, train (and validation) errors and status.",
    )
    add_fit_options(p)
    p.add_argument("--eval", metavar="VAL", help="validation data (CSV or bundled name) scored with the fitted law, at the same --model-size/--tokens selection")
    p.add_argument("--val-fraction", type=float, help="hold out this fraction of TRAIN rows (random, --seed) as validation instead of --eval")
    p.add_argument("--output", "-o", metavar="FILE", help="save the fit to FILE (reload with `mixjax predict FILE` or mixjax.load_fit)")
    p.set_defaults(run=run)


def fit_from_args(args, data):
    import mixjax

    return mixjax.fit(
        args.law, data, starts=args.starts, seed=args.seed, objective=args.objective, optimizer=args.optimizer,
        max_steps=args.max_steps, dtype=args.dtype,
    )


def run(args) -> int:
    train = select_scale(load_data(args.train, args.targets), args.model_size, args.tokens)
    val = None
    if args.eval and args.val_fraction:
        raise CliError("give either --eval or --val-fraction, not both")
    if args.eval:
        val = select_scale(load_data(args.eval, args.targets), args.model_size, args.tokens)
    elif args.val_fraction:
        train, val = train.split_rows(args.val_fraction, seed=args.seed)
    if not args.json:
        print(f"fitting {args.law} to {train.n_rows} rows of {train.name} ({args.starts} starts)...", file=sys.stderr)
    f = fit_from_args(args, train)
    tr = f.evaluate(train)
    out = {
        "law": f.info["law"],
        "n_params": f.n_params,
        "status": f.status.name,
        "objective": f.config.objective,
        "loss": f.loss,
        "train_mre": tr["mre"],
        "train_mae": tr["mae"],
        "train_rmse": tr["rmse"],
        "params": {k: v.reshape(-1).tolist() for k, v in f.params().items()},
        "domains": f.info["domains"],
        "targets": f.info["targets"],
        "n_rows": train.n_rows,
        "start_status": f.info["start_status"],
        "seconds": f.info["seconds"],
    }
    if val is not None:
        ev = f.evaluate(val)
        out.update(val_mre=ev["mre"], val_mae=ev["mae"], val_rmse=ev["rmse"], n_val_rows=val.n_rows)
        out["per_target_val_mre"] = {t: v["mre"] for t, v in ev["per_target"].items()}
    out["per_target_train_mre"] = {t: v["mre"] for t, v in tr["per_target"].items()}
    if args.output:
        from mixjax.io import save_fit

        save_fit(args.output, f)
        out["output"] = args.output
        if not args.json:
            print(f"saved the fit to {args.output}", file=sys.stderr)
    if args.json:
        print_json(out)
        return 0
    print(f"law {out['law']} ({out['n_params']} free parameters), status {out['status']}, {args.objective} objective {out['loss']:.6g}")
    print(f"train MRE {100 * out['train_mre']:.3f} %" + (f"   validation MRE {100 * out['val_mre']:.3f} %" if val is not None else ""))
    print()
    params = f.params()
    vec = {k: v for k, v in params.items() if v.ndim == 1 and v.size == len(out["targets"])}
    rows = [[t] + [float(v[j]) for v in vec.values()] + [100 * out["per_target_train_mre"][t]] + ([100 * out["per_target_val_mre"][t]] if val is not None else []) for j, t in enumerate(out["targets"])]
    print(format_table(rows, ["target", *vec.keys(), "train MRE %"] + (["val MRE %"] if val is not None else [])))
    other = {k: v for k, v in params.items() if k not in vec}
    for k, v in other.items():
        print(f"{k} = {v.round(6).tolist()}")
    return 0
