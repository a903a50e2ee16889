"""``mixjax suggest``: bootstrap a law, then suggest the mixtures to train next (see :mod:`mixjax.design`)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ._common import CliError, add_distributed_options, format_table, load_data, parse_scale, print_json, select_scale, start_distributed
from ._common import MAX_STEPS_HELP, add_phase_shares_option, parse_phase_shares
from .optimize import parse_bounds


def add_parser(sub) -> None:
    p = sub.add_parser(
        "suggest",
        help="suggest the mixtures to train next",
        description="Bootstrap a law on DATA (the runs measured so far), then pick --n mixtures for the next runs at the "
        "scale --model-size/--tokens: where the bootstrap members disagree most about the predicted loss (variance across "
        "members, capped a few noise units above the worst member's best) among mixtures that members consider near-optimal, "
        "picked one by one with the ensemble conditioned on each pick (kriging believer), so the batch is diverse. "
        "Candidates are a pool (--candidates CSV) or sampled from the bounded simplex around the members' optimal mixtures. "
        "A law that diverges at zero weight (capacity_noise, bimix) keeps every weight at or above its min_weight, and "
        "candidates where some member predicts a non-finite or absurd loss are left out (with a warning). On a phase table "
        "(phase_<p>_<domain> columns) a candidate has weights per phase, each phase drawn on its own bounded simplex, and "
        "distances are the phases' total-variation distances weighted by their token shares.",
    )
    p.add_argument("data", metavar="DATA", help="measured runs: a wide-layout CSV file or a bundled dataset name (see `mixjax datasets`)")
    p.add_argument("--law", default="capacity_noise", help="law to bootstrap (see `mixjax laws`; default capacity_noise)")
    p.add_argument("--n", type=int, default=8, help="number of runs to suggest (default 8)")
    p.add_argument("--model-size", "-N", metavar="N", help="model size of the next runs in parameters (e.g. 122M); default: the data's only one")
    p.add_argument("--tokens", "-D", metavar="D", help="training tokens of the next runs (e.g. 10B); default: the data's only value")
    p.add_argument("--fit-model-size", metavar="N", help="fit only on DATA rows at this model size (default: all rows)")
    p.add_argument("--fit-tokens", metavar="D", help="fit only on DATA rows at this token count (default: all rows)")
    p.add_argument("--targets", nargs="+", metavar="NAME", help="loss columns to use (default: all)")
    p.add_argument("--target", metavar="NAME", help="design for this one target's predicted loss (default: the mean over targets)")
    p.add_argument("--floor", nargs="+", metavar="F", help="lowest weight: one number for every domain, or domain=value pairs")
    p.add_argument("--ceiling", nargs="+", metavar="C", help="highest weight: one number for every domain, or domain=value pairs")
    p.add_argument("--candidates", metavar="CSV", help="pool of allowed mixtures: a CSV with a weight_<domain> (or <domain>) column for every domain of DATA; "
                   "for a phase table, a phase_<p>_<domain> column for every phase and domain (each phase's weights summing to 1)")
    p.add_argument("--n-candidates", type=int, default=2048, help="mixtures sampled from the simplex without --candidates (default 2048)")
    p.add_argument("--min-distance", type=float, default=0.01, help="least total-variation distance between suggestions and from measured runs (default 0.01)")
    p.add_argument("--resamples", type=int, default=32, help="bootstrap resamples (default 32)")
    p.add_argument("--starts", type=int, default=2, help="starts per resample (default 2)")
    p.add_argument("--point-starts", type=int, default=16, help="starts of the full-data fit (default 16)")
    p.add_argument("--max-steps", type=int, default=None, help=MAX_STEPS_HELP)
    p.add_argument("--optimizer", help="fit optimizer, e.g. lbfgs or adam (default: the fitting engine's default)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap and the candidate draws (default 0)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of a table")
    add_phase_shares_option(p)
    add_distributed_options(p)
    p.set_defaults(run=run)


def _read_pool(path: str):
    """The ``--candidates`` CSV as a DataFrame, or a one-line error (no such file, a directory, not CSV)."""
    import pandas as pd

    if not os.path.exists(path):
        raise CliError(f"--candidates: no such file {path!r}")
    if os.path.isdir(path):
        raise CliError(f"--candidates: {path!r} is a directory")
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CliError(f"--candidates: cannot read {path} as CSV ({e})") from None


def _pool_column(df, c: str, path: str) -> np.ndarray:
    """Column ``c`` of a pool as floats, or a one-line error naming the first row that is not a finite number."""
    import pandas as pd

    v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise CliError(f"--candidates: {path} row {bad[0]}, column {c}: {df[c].iloc[bad[0]]!r} is not a finite number")
    return v


def read_candidates(path: str, domains) -> np.ndarray:
    """(m, K) mixtures from a CSV with ``weight_<domain>`` or ``<domain>`` columns for every domain (others ignored)."""
    df = _read_pool(path)
    cols = []
    for d in domains:
        for c in (f"weight_{d}", d):
            if c in df.columns:
                cols.append(c)
                break
        else:
            raise CliError(f"--candidates: {path} has no column weight_{d} (or {d}); it needs one per domain of the data: "
                           + ", ".join(domains))
    if len(df) == 0:
        raise CliError(f"--candidates: {path} has no rows")
    out = np.empty((len(df), len(cols)))
    for j, c in enumerate(cols):
        out[:, j] = _pool_column(df, c, path)
    return out


def read_phase_candidates(path: str, data) -> np.ndarray:
    """(m, P, K) per-phase weights from a CSV with a ``<phase>_<domain>`` column (``phase_0_<domain>``, the phase
    table's layout) for every phase and domain of ``data`` (others ignored)."""
    df = _read_pool(path)
    names = [[f"{p}_{d}" for d in data.base_domains] for p in data.phases]
    missing = [c for row in names for c in row if c not in df.columns]
    if missing:
        raise CliError(f"--candidates: {path} has no column {missing[0]} ({len(missing)} missing); a pool for a phase table needs "
                       f"a <phase>_<domain> column for every phase ({', '.join(data.phases)}) and domain ({', '.join(data.base_domains)})")
    if len(df) == 0:
        raise CliError(f"--candidates: {path} has no rows")
    out = np.empty((len(df), len(data.phases), len(data.base_domains)))
    for p, row in enumerate(names):
        for k, c in enumerate(row):
            out[:, p, k] = _pool_column(df, c, path)
    return out


def run(args) -> int:
    import warnings

    import mixjax
    from mixjax.data import DataError
    from mixjax.fitting import FitConfig
    from mixjax.mixture import InfeasibleMixtureError, mixture_bounds
    from mixjax.design import law_floors, suggest
    from mixjax.fitting import check_seed
    from mixjax.resampling import check_resamples

    main = start_distributed(args)
    check_resamples(args.resamples, "--resamples")
    check_seed(args.seed, "--seed")
    for flag, v, least in (("--n", args.n, 1), ("--starts", args.starts, 1),
                           ("--point-starts", args.point_starts, 1), ("--n-candidates", args.n_candidates, 1), ("--max-steps", args.max_steps, 1)):
        if v is not None and v < least:
            raise CliError(f"{flag} must be at least {least}, got {v}")
    if not 0 <= args.min_distance < 1:
        raise CliError(f"--min-distance must be in [0, 1), got {args.min_distance}")
    if args.optimizer is not None:
        try:
            FitConfig(optimizer=args.optimizer)
        except ValueError as e:
            raise CliError(f"--optimizer: {e}") from None
    try:
        cls = mixjax.get_law(args.law)
    except ValueError as e:
        raise CliError(str(e)) from None
    data = load_data(args.data, args.targets, announce=main and not args.json, phase_shares=parse_phase_shares(args.phase_shares))
    phased = data.phases is not None and len(data.phases) > 1
    if args.phase_shares is not None and not phased:
        raise CliError(f"--phase-shares applies to a table with several training phases; {data.name} has one")
    data = select_scale(data, args.fit_model_size, args.fit_tokens)
    if data.n_domains < 2:
        raise CliError(f"{data.name} has {data.n_domains} domain(s); suggesting mixtures needs at least 2")
    N = parse_scale(args.model_size, "model_size", "--model-size") if args.model_size else None
    D = parse_scale(args.tokens, "n_tokens", "--tokens") if args.tokens else None
    floors, ceilings = parse_bounds(args.floor, "floor"), parse_bounds(args.ceiling, "ceiling")
    try:
        if phased:  # floors and ceilings bound each phase's weights
            from mixjax.mixture import phase_problem

            phase_problem(data.domains, phases=data.phases, phase_shares=data.phase_shares, floors=floors, ceilings=ceilings,
                          min_weight=cls.min_weight)
        else:
            lo, hi = mixture_bounds(data.n_domains, floors=floors, ceilings=ceilings, domains=data.domains)
            law_floors(cls, lo, hi, data.domains)
    except (InfeasibleMixtureError, ValueError) as e:
        raise CliError(str(e)) from None
    if args.target is not None and args.target not in (data.domains if cls.per_domain else data.targets):
        raise CliError(f"--target: unknown target {args.target!r}; targets are {', '.join(data.domains if cls.per_domain else data.targets)}")
    pool = None if not args.candidates else read_phase_candidates(args.candidates, data) if phased else read_candidates(args.candidates, data.domains)
    fit_kw = {"max_steps": args.max_steps}
    if args.optimizer is not None:
        fit_kw["optimizer"] = args.optimizer
    if main and not args.json:
        print(f"bootstrapping {args.law} on {data.n_rows} rows of {data.name} ({args.resamples} resamples x {args.starts} starts), "
              "then scoring candidates...", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mixjax.ExtrapolationWarning)
            res = suggest(data, args.law, args.n, raw_model_size=N, raw_n_tokens=D, target=args.target, floors=floors,
                          ceilings=ceilings, candidates=pool, n_candidates=args.n_candidates, resamples=args.resamples,
                          starts=args.starts, point_starts=args.point_starts, seed=args.seed, min_distance=args.min_distance,
                          **fit_kw)
    except DataError as e:
        raise CliError(str(e)) from None
    if not main:  # every process holds the same suggestions; process 0 prints them
        return 0
    out = {"data": data.name, "fit_rows": data.n_rows, "target_model_size": N, "target_tokens": D, **res.as_dict()}
    if args.json:
        print_json(out)
        return 0
    print(f"{res.n} suggested runs for {res.law} ({res.objective}; {res.members} bootstrap members, {res.n_candidates} "
          f"{res.candidates} candidates; noise variance {res.noise:.3g}):")
    header = ["#", "criterion", "predicted", "sd", "near-opt"] + list(res.domains)
    rows = [[i + 1, float(res.criterion[i]), float(res.predicted[i]), float(res.disagreement[i]), float(res.near_optimal[i]),
             *(float(x) for x in res.mixtures[i])] for i in range(res.n)]
    print(format_table(rows, header))
    if res.phase_mixtures is not None:
        print("phases: " + ", ".join(f"{p} (share {s:.3g})" for p, s in zip(res.phases, res.phase_shares)) + "; the weights above are "
              "the flattened mixture (share x phase weight), weights per phase in the JSON field phase_mixtures")
    if cls.min_weight > 0:
        print(f"(every weight >= {cls.min_weight:g}: {res.law} diverges at a zero domain weight)")
    return 0
