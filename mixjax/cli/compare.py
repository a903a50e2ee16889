"""``mixjax compare``: fit every applicable law on the same splits of a dataset and rank them on held-out cells."""

from __future__ import annotations

import sys
import warnings

from ._common import (
    CliError,
    progress_bar,
    add_distributed_options,
    check_output_path,
    format_table,
    load_data,
    parse_count,
    parse_slice_option,
    print_json,
    select_scale,
    split_names,
    start_distributed,
    write_atomic,
    write_json,
)
from .fit import add_data_options, add_solver_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="rank laws by held-out error on one dataset",
        description="Fit every applicable law (or --laws) on the same splits of DATA, one batched call per law, "
        "and print a leaderboard, best first: parameters, train and held-out MRE with the cells counted and "
        "excluded, the held-out MRE on the cells every law counts (the ranking key), the held-out RMSE in the targets' "
        "units, Spearman rank correlation across held-out mixtures, the rank given to the measured-best held-out "
        "mixture (ties share their average rank), regret@1 (measured objective of the mixture predicted best minus the "
        "best measured one), whether a fit is constant in the mixture, AIC/BIC, status and the parameters out of their sane range.",
    )
    p.add_argument("data", metavar="DATA", help="a wide-layout CSV file or a bundled dataset name (see `mixjax datasets`)")
    p.add_argument("--laws", default="all", help="comma-separated law names, or 'all' (default): every registered law that applies to DATA")
    p.add_argument("--cv", metavar="SPEC", help="cross-validation: mixtures:K (default mixtures:5; all rows of one mixture on one side), rows:K, or split (the data's own split column)")
    p.add_argument("--holdout-scale", metavar="SIZE", help="fit on smaller models, score the model size SIZE ('largest', or parameters like 1.235B); instead of --cv")
    ck = p.add_mutually_exclusive_group()
    ck.add_argument("--final-checkpoints", action="store_true", help="keep only the last checkpoint (most tokens) of each mixture and model size "
                    "(the default with --holdout-scale on data with several model sizes)")
    ck.add_argument("--all-checkpoints", action="store_true", help="keep every checkpoint row, also with --holdout-scale")
    p.add_argument("--max-model-size", metavar="N", help="use only rows up to this model size (e.g. 1.235B: then --holdout-scale largest scores 1.235B)")
    p.add_argument("--model-size", "-N", metavar="N", help="use only rows at this model size")
    p.add_argument("--tokens", "-D", metavar="D", help="use only rows at this token count")
    add_data_options(p)
    add_solver_options(p, starts=8)
    p.add_argument("--plot", metavar="FILE", help="save a chart of train and held-out MRE per law (PNG, PDF or SVG; needs matplotlib)")
    p.add_argument("--timings", action="store_true", help="report seconds per law (left out by default: same inputs, same output bytes)")
    p.add_argument("--json", action="store_true", help="print one JSON object: 'laws' is the leaderboard, best first")
    p.add_argument("--save", metavar="FILE", help="also write the JSON object of --json to FILE (checked before fitting); "
                   "with --slice: the part file")
    p.add_argument("--slice", metavar="I/N", help="fit only slice I of N (counted from 0; needs --save) of the cells law x "
                   "split (each law on each split's training rows, and with cross-validation on all rows) and save them as a "
                   "part file; `mixjax merge` joins the N parts into the comparison one run gives. For job arrays: every "
                   "slice runs on its own, and a lost one reruns alone")
    add_distributed_options(p)
    p.set_defaults(run=run)


def _law_list(text: str) -> str | list[str]:
    from mixjax.laws import LAWS

    if text == "all":
        return "all"
    names = split_names([text], "--laws") or []
    unknown = [n for n in names if n not in LAWS]
    if unknown:
        raise CliError(f"unknown law(s) {unknown}; available: {sorted(LAWS)}")
    if not names:
        raise CliError("--laws is empty")
    return names


def run(args) -> int:
    import mixjax
    from mixjax.comparison import CheckpointWarning, compare
    from mixjax.fitting import check_seed

    main = start_distributed(args)
    if args.starts < 1:
        raise CliError(f"--starts must be >= 1, got {args.starts}")
    check_seed(args.seed, "--seed")
    if args.max_steps is not None and args.max_steps < 1:
        raise CliError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.cv and args.holdout_scale:
        raise CliError("give either --cv or --holdout-scale, not both")
    part = None
    if args.slice is not None:
        part = parse_slice_option(args.slice, what="cells")
        if args.save is None:
            raise CliError("--slice fits part of the comparison: give --save PART for its part file (mixjax merge joins the parts)")
        if args.plot is not None:
            raise CliError("--slice makes a part file, not a comparison: give --plot to `mixjax merge`")
    if args.plot is not None and main:
        check_output_path(args.plot, "--plot", (".png", ".pdf", ".svg"), args=args)
    if args.save is not None and main:
        check_output_path(args.save, "--save", args=args)
    laws = _law_list(args.laws)
    holdout = None
    if args.holdout_scale:
        holdout = "largest" if args.holdout_scale == "largest" else parse_count(args.holdout_scale)
    data = load_data(args.data, args.targets, domains=args.domains, sum_tol=args.sum_tol, announce=main and not args.json,
                     metrics=args.metrics)
    data = select_scale(data, args.model_size, args.tokens)
    if args.max_model_size:
        cap = parse_count(args.max_model_size)
        keep = data.model_size <= cap * (1 + 1e-6)
        if not keep.any():
            raise CliError(f"no row of {data.name!r} has a model size up to {cap:.4g}")
        data = data.subset(keep)
    checkpoints = "final" if args.final_checkpoints else "all" if args.all_checkpoints else None
    if main:
        _announce_checkpoints(data, checkpoints, holdout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CheckpointWarning)  # said above, with the command's own flags
            if not main:
                warnings.simplefilter("ignore", UserWarning)  # process 0 says them
            result = compare(
                data, laws, cv=args.cv, holdout_scale=holdout, starts=args.starts, max_steps=args.max_steps,
                objective=args.objective, optimizer=args.optimizer, seed=args.seed, dtype=args.dtype,
                progress=progress_bar("compare", main=main, json_mode=args.json, unit="laws"), checkpoints=checkpoints, part=part,
            )
    except (mixjax.DataError, ValueError) as e:
        raise CliError(f"--slice: {e}" if part is not None and "slices of" in str(e) else str(e)) from None
    if not main:  # every process holds the same result; process 0 reports and writes it
        return 0
    if part is not None:
        return _save_part(args, result)
    return report(result, args, plot=args.plot, save=args.save)


def report(result, args, plot: str | None = None, save: str | None = None) -> int:
    """Write ``--plot`` and ``--save`` and print the leaderboard (a table, or JSON with ``--json``) of a comparison:
    a run of ``mixjax compare`` and the parts ``mixjax merge`` joins report alike."""
    timings = bool(getattr(args, "timings", False))
    if plot is not None:
        from mixjax.plots import plot_comparison

        write_atomic(plot, lambda tmp: plot_comparison(result, tmp), args, "--plot")
    if save is not None:
        write_json(save, result.as_dict(timings=timings), args, "--save")
    if args.json:
        out = result.as_dict(timings=timings)
        if plot is not None:
            out["plot"] = plot
        print_json(out)
        return 0
    print(f"{result.data}: {result.protocol}; {len(result.scores)} laws ranked by held-out MRE on the "
          f"{result.n_common_cells} cells every law counts")
    for s in result.splits:
        print(f"  {s.name}: {int(s.train.sum())} train rows, {int(s.test.sum())} held-out rows")
    ex = result.extrapolation
    if ex.get("worst"):
        w = ex["worst"]
        print(f"  {ex['n_rows']} of {ex['n_test_rows']} held-out rows lie outside the training rows' range of some domain's "
              f"weight (furthest: row {w['row']} in {w['split']}, {w['domain']} = {w['weight']:.3g} where training has "
              f"{w['range'][0]:.3g}-{w['range'][1]:.3g}): their cells are extrapolations for every law")
    print()
    rows, head = [], ["law", "k", "train MRE %", "val MRE % common", "val MRE % own", "val MRE % all", "val RMSE",
                      "cells used/excl", "Spearman", "best rank", "regret@1", "flat in mixture", "AIC", "status", "out of range"]
    if timings:
        head.append("s")
    for s, t in zip(result.scores, result.table()):
        row = [t[h] for h in head if h != "s"]
        if timings:
            row.append(s.seconds)
        rows.append(row)
    print(format_table(rows, head))
    print()
    print(f"val MRE % common: on the {result.n_common_cells} held-out cells every law counts (the ranking key); own: on the "
          "cells the law counts (cells used/excl); all: on every measured held-out cell")
    print("val RMSE: held-out root mean squared error in the targets' units, on the cells the law counts; regret@1: measured "
          "objective of the held-out mixture predicted best minus the best measured one (targets' units; mean over splits)")
    print("best rank: 1 = the measured-best held-out mixture predicted best, ties share their average rank; "
          "flat in mixture: predictions constant across mixtures at every scale; out of range: parameters of the best "
          "fits outside their sane range")
    for name, reason in result.skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if plot is not None:
        print(f"saved the chart to {plot}", file=sys.stderr)
    if save is not None:
        print(f"saved the comparison to {save}", file=sys.stderr)
    return 0


def _save_part(args, part) -> int:
    """Write the part file of one slice and report what it holds."""
    write_atomic(args.save, part.save, args, "--save")
    cells = [[c.law, c.group] for c in part.cells]
    total = len(part.plan.laws) * part.plan.n_groups
    out = {"slice": f"{part.index}/{part.count}", "cells": cells, "n_cells": len(cells), "n_cells_total": total,
           "laws": sorted({c.law for c in part.cells}, key=[lp.name for lp in part.plan.laws].index), "save": args.save}
    if args.json:
        print_json(out)
    else:
        print(f"slice {out['slice']}: {len(cells)} of {total} cells (law x split) of {', '.join(out['laws'])} saved to "
              f"{args.save}; join the parts with `mixjax merge PART...`")
    return 0


def _announce_checkpoints(data, checkpoints: str | None, holdout) -> None:
    """Say on stderr which checkpoint rows the comparison uses."""
    from mixjax.comparison import checkpoint_mode, final_checkpoint_rows, has_checkpoints

    if not has_checkpoints(data):
        return
    n_final, n = final_checkpoint_rows(data).size, data.n_rows
    mode = checkpoint_mode(data, checkpoints, holdout)
    if mode == "final":
        tail = "--all-checkpoints keeps every row" if holdout is not None else "without --final-checkpoints every row is kept"
        print(f"using the final checkpoint of each run: {n_final} of {n} rows; {tail}", file=sys.stderr)
    elif holdout is not None and checkpoint_mode(data, None, holdout) == "all":
        print(f"{data.name} has one model size: the token count is the scale held out, and every checkpoint row is kept "
              f"({n} rows)", file=sys.stderr)
    elif holdout is not None:
        print(f"using every checkpoint row (--all-checkpoints): {n} rows of {n_final} runs; by default only the final "
              "checkpoint of each run is used", file=sys.stderr)
    else:
        print(f"{data.name} has several checkpoints per run ({n} rows of {n_final} runs): cross-validation keeps every row, "
              "all checkpoints of a mixture on one side of a 'mixtures' fold; --final-checkpoints keeps the final "
              "checkpoint of each run", file=sys.stderr)
