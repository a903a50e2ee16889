"""``mixjax optimize``: fit a law, then find the mixture that minimizes its predicted loss at a target scale."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import numpy as np

from mixjax.units import ScaleError, check_scale

from ._common import CliError, check_output_path, format_table, load_data, parse_count, parse_scale, print_json, select_scale, write_atomic
from ._common import MAX_STEPS_HELP, add_distributed_options, add_phase_shares_option, parse_phase_shares, start_distributed


def add_parser(sub) -> None:
    p = sub.add_parser(
        "optimize",
        help="find the optimal mixture at a target scale",
        description="Fit a law on TRAIN (all rows, each with its own model size and tokens, or a --fit-model-size/"
        "--fit-tokens selection), then minimize its predicted loss over mixtures at the TARGET scale --model-size/"
        "--tokens, under per-domain floors, ceilings and data availability. With --bootstrap R, the law is refitted on "
        "R resamples and the optimum of each gives percentile intervals for the mixture and a selection-aware estimate of "
        "the picked mixture's objective (the fit's own prediction at its optimum is optimistic: the winner's curse). The "
        "result says how far the "
        "optimum lies outside the mixtures of TRAIN (per-domain measured range, total-variation distance to the nearest "
        "measured mixture against the typical spacing of the design) and warns on stderr when it extrapolates or when "
        "the law fixes the optimum regardless of its fitted parameters.",
    )
    p.add_argument("train", metavar="TRAIN", help="training data: a wide-layout CSV file or a bundled dataset name (see `mixjax datasets`)")
    p.add_argument("--law", default="capacity_noise", help="law to fit (see `mixjax laws`; default capacity_noise)")
    p.add_argument("--model-size", "-N", metavar="N", help="TARGET model size in parameters (e.g. 1.3B); needed by laws that use it")
    p.add_argument("--tokens", "-D", metavar="D", help="TARGET training tokens (e.g. 30B); needed by laws that use it")
    p.add_argument("--fit-model-size", metavar="N", help="fit only on TRAIN rows at this model size (default: all rows)")
    p.add_argument("--fit-tokens", metavar="D", help="fit only on TRAIN rows at this token count (default: all rows)")
    p.add_argument("--targets", nargs="+", metavar="NAME", help="loss columns to use (default: all)")
    p.add_argument("--floor", nargs="+", metavar="F", help="lowest weight: one number for every domain, or domain=value pairs")
    p.add_argument("--ceiling", nargs="+", metavar="C", help="highest weight: one number for every domain, or domain=value pairs")
    p.add_argument("--unique-tokens", metavar="FILE", help="CSV (columns domain,unique_tokens) or JSON {domain: tokens} of unique tokens available per domain (raw counts, e.g. 12B); caps h_i * tokens <= max_epochs * unique_i")
    p.add_argument("--max-epochs", type=float, help="times a domain's unique tokens may be repeated (default 1; needs --unique-tokens)")
    p.add_argument("--within-measured", action="store_true", help="keep every domain's weight inside the range measured in TRAIN (intersected with --floor/--ceiling)")
    add_phase_shares_option(p)
    p.add_argument("--prior", metavar="FILE|natural", help="prior mixture of the KL terms: CSV (domain,weight) or JSON {domain: weight} "
                   "summing to 1, or 'natural' (the unique tokens normalized; the default when they are known)")
    kl = p.add_mutually_exclusive_group()
    kl.add_argument("--kl-penalty", type=float, metavar="LAMBDA", help="add LAMBDA * sum_p s_p KL(w_p || prior) to the objective")
    kl.add_argument("--max-kl", type=float, metavar="B", help="keep sum_p s_p KL(w_p || prior) <= B (nats)")
    p.add_argument("--trust-radius", type=float, metavar="R", help="keep the mixture within total-variation distance R of a "
                   "measured mixture of TRAIN (searched in the balls of the few nearest ones)")
    p.add_argument("--target", metavar="NAME", help="minimize this one target's predicted loss (default: the mean over targets)")
    p.add_argument("--target-weights", nargs="+", metavar="NAME=W", help="minimize a weighted mean of the targets' losses")
    p.add_argument("--candidates", metavar="POOL.csv", help="choose the best of these mixtures (a CSV with one column per domain, "
                   "<domain> or weight_<domain>; other columns, such as losses, are ignored) instead of searching the simplex; needs --bootstrap")
    p.add_argument("--reference", metavar="REF", help="the mixture the pick must beat, for p_beats_reference with --bootstrap: 'uniform', "
                   "'proportional' (to the table's unique tokens) or a CSV of one mixture row (default: proportional when the table "
                   "carries unique tokens, else uniform)")
    p.add_argument("--bootstrap", type=int, metavar="R", help="refit on R bootstrap resamples: percentile intervals of the optimal mixture, and its objective corrected for the winner's curse (JSON field calibrated)")
    p.add_argument("--scheme", default="rows", choices=["rows", "mixtures", "stratified"], help="bootstrap resampling scheme (default rows)")
    p.add_argument("--level", type=float, default=0.9, help="interval level with --bootstrap (default 0.9)")
    p.add_argument("--cv-folds", default="auto", metavar="K", help="with --bootstrap: correct the pick's objective by the cross-validated "
                   "optimism of picks among held-out runs of TRAIN (K folds by mixture, repeated), which also sees the law's misfit; "
                   "'auto' (default): 5 folds when TRAIN has at least 20 usable runs, else the bootstrap correction alone; 0: off")
    p.add_argument("--cv-repeats", type=int, default=10, metavar="M", help="repeats of the --cv-folds split (default 10)")
    p.add_argument("--starts", type=int, default=16, help="random initializations of the fit (default 16)")
    p.add_argument("--mixture-starts", type=int, default=16, help="starting mixtures of the optimization (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--objective", default="mse", choices=["mse", "relative", "huber_log"], help="fitting objective (default mse)")
    p.add_argument("--optimizer", help="fit optimizer, e.g. lbfgs or adam (default: the fitting engine's default)")
    p.add_argument("--max-steps", type=int, default=None, help=MAX_STEPS_HELP)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="floating-point precision (default float64)")
    p.add_argument("--plot", metavar="PNG", help="also draw the optimal mixture (with intervals) to this image file")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead of tables")
    add_distributed_options(p)
    p.set_defaults(run=run)


def parse_bounds(tokens: list[str] | None, label: str):
    """``["0.05"]`` -> 0.05; ``["arxiv=0.1", "book=0.05"]`` (or comma-separated) -> ``{"arxiv": 0.1, ...}``."""
    if not tokens:
        return None
    items = [t for tok in tokens for t in tok.split(",") if t.strip()]
    if len(items) == 1 and "=" not in items[0]:
        return _number(items[0], label)
    out = {}
    for it in items:
        if "=" not in it:
            raise CliError(f"--{label}: give one number or name=value pairs (domains for --floor/--ceiling, targets for --target-weights), got {it!r} among several values")
        k, v = it.split("=", 1)
        out[k.strip()] = _number(v, f"{label} {k.strip()}")
    return out


def read_pool(path: str, domains) -> np.ndarray:
    """The (m, K) mixtures of a candidate pool CSV, matched to ``domains`` by column name (``<domain>`` or
    ``weight_<domain>``); other columns are ignored."""
    import pandas as pd

    from mixjax.laws._base import check_mixture_rows

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise CliError(f"--candidates: cannot read {path!r} as CSV ({e})") from None
    cols = {str(c)[len("weight_"):] if str(c).startswith("weight_") else str(c): c for c in frame.columns}
    missing = [d for d in domains if d not in cols]
    if missing:
        raise CliError(f"--candidates: {path!r} has no column for domain(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                       f"(columns <domain> or weight_<domain>)")
    if frame.shape[0] == 0:
        raise CliError(f"--candidates: {path!r} has no rows")
    try:
        H = np.stack([pd.to_numeric(frame[cols[d]], errors="raise").to_numpy(np.float64) for d in domains], axis=1)
        check_mixture_rows(H, f"--candidates {path!r}")
    except (ValueError, TypeError) as e:
        raise CliError(f"--candidates: {e}") from None
    return H


def parse_cv_folds(text: str):
    """``--cv-folds``: ``"auto"``, 0 (off) or an integer K >= 2."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise CliError(f"--cv-folds: give 'auto', 0 (off) or a number of folds >= 2, got {text!r}") from None
    if k == 1 or k < 0:
        raise CliError(f"--cv-folds: give 'auto', 0 (off) or a number of folds >= 2, got {text!r}")
    return k


def reference_mixture(text: str | None, train) -> tuple[np.ndarray, str]:
    """The reference mixture of ``--reference`` and how it was chosen."""
    K = train.n_domains
    if text is None:
        text = "proportional" if train.unique_tokens is not None else "uniform"
    phased = train.phases is not None and len(train.phases) > 1
    if text in ("uniform", "proportional") and phased:  # every phase gets the mixture, scaled to its share
        from mixjax.data import phase_domain_name

        base = list(train.base_domains)
        if text == "proportional" and train.unique_tokens is None:
            raise CliError("--reference proportional needs unique tokens per domain, which this table does not carry")
        u = np.ones(len(base)) if text == "uniform" else np.asarray(train.unique_tokens, np.float64)
        col = {d: j for j, d in enumerate(train.domains)}
        h = np.zeros(K)
        for p, share in zip(train.phases, np.asarray(train.phase_shares, np.float64)):
            for d, x in zip(base, u / u.sum()):
                h[col[phase_domain_name(d, p)]] = share * x
        return h, "uniform" if text == "uniform" else "proportional to unique tokens"
    if text == "uniform":
        return np.full(K, 1.0 / K), "uniform"
    if text == "proportional":
        if train.unique_tokens is None:
            raise CliError("--reference proportional needs unique tokens per domain, which this table does not carry")
        u = np.asarray(train.unique_tokens, np.float64)
        return u / u.sum(), "proportional to unique tokens"
    H = read_pool(text, train.domains)
    if H.shape[0] != 1:
        raise CliError(f"--reference: {text!r} has {H.shape[0]} rows; give one mixture")
    return H[0], text


def _number(text: str, label: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CliError(f"--{label}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise CliError(f"--{label}: {text!r} is not finite")
    return v


def _domain_values(path: str, flag: str, value: str, json_value: str, is_value, missing_hint: str = "") -> list[tuple[str, object]]:
    """``(domain, raw value)`` pairs of a ``domain,<value>`` CSV file (a header line is skipped when its second cell
    is not a value by ``is_value``) or of a JSON object ``{domain: value}``; a malformed file is a CliError naming
    ``flag``."""
    if not os.path.exists(path):
        raise CliError(f"{flag}: no such file {path!r}{missing_hint}")
    with open(path) as f:
        text = f.read()
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise CliError(f"{flag}: {path} is not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise CliError(f"{flag}: {path} must hold a JSON object {{domain: {json_value}}}")
        return [(str(k), v) for k, v in raw.items()]
    rows = [[c.strip() for c in ln.split(",")] for ln in text.splitlines() if ln.strip()]
    if rows and len(rows[0]) >= 2 and not is_value(rows[0][1]):
        rows = rows[1:]  # a header line
    bad = [r for r in rows if len(r) != 2]
    if bad:
        raise CliError(f"{flag}: each CSV line must be 'domain,{value}'; got {','.join(bad[0])!r}")
    return [(r[0], r[1]) for r in rows]


def _parses(fn):
    def ok(text):
        try:
            fn(text)
        except (CliError, ValueError):
            return False
        return True

    return ok


def _no_repeats(items, flag: str, path: str) -> None:
    seen = set()
    for k, _ in items:
        if k in seen:
            raise CliError(f"{flag}: domain {k!r} is listed more than once in {path}")
        seen.add(k)


def read_unique_tokens(path: str) -> dict[str, float]:
    """Unique tokens per domain (raw counts) from ``domain,unique_tokens`` CSV or a JSON object."""
    items = _domain_values(path, "--unique-tokens", "unique_tokens", "tokens", _parses(parse_count))
    _no_repeats(items, "--unique-tokens", path)
    out = {}
    for k, v in items:
        out[k] = parse_count(str(v)) if not isinstance(v, (int, float)) else float(v)
        if out[k] <= 0:
            raise CliError(f"--unique-tokens: domain {k!r} has {v!r} tokens; expected a positive count")
        try:
            check_scale(out[k], "n_tokens", where=f"--unique-tokens: domain {k!r}")
        except ScaleError as e:
            raise CliError(str(e)) from None
    return out


def read_prior(path: str) -> dict[str, float]:
    """A prior mixture ``{domain: weight}`` from a ``domain,weight`` CSV file or a JSON object (checked by the optimizer:
    every domain present, weights >= 0 summing to 1)."""
    items = _domain_values(path, "--prior", "weight", "weight", _parses(float),
                           " (give a CSV domain,weight file, a JSON {domain: weight} file or 'natural')")
    _no_repeats(items, "--prior", path)
    out = {}
    for k, v in items:
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise CliError(f"--prior: the weight of domain {k!r} is {v!r}, not a number") from None
    return out


def run(args) -> int:
    import mixjax
    from mixjax.data import DataError
    from mixjax.fitting import check_seed
    from mixjax.mixture import ExtrapolationWarning, FixedOptimumWarning, InfeasibleMixtureError, mixture_bounds

    main = start_distributed(args)
    if args.starts < 1:
        raise CliError(f"--starts must be >= 1, got {args.starts}")
    check_seed(args.seed, "--seed")
    if args.max_steps is not None and args.max_steps < 1:
        raise CliError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.plot is not None and main:
        check_output_path(args.plot, "--plot", (".png", ".pdf", ".svg"), args=args)
    shares = parse_phase_shares(args.phase_shares)
    train = select_scale(load_data(args.train, args.targets, phase_shares=shares), args.fit_model_size, args.fit_tokens)
    phased = train.phases is not None and len(train.phases) > 1
    if shares is not None and not phased:
        raise CliError(f"--phase-shares applies to a table with several training phases; {train.name} has one")
    cls = mixjax.get_law(args.law)
    N = parse_scale(args.model_size, "model_size", "--model-size") if args.model_size else None
    D = parse_scale(args.tokens, "n_tokens", "--tokens") if args.tokens else None
    if cls.uses_model_size and N is None:
        raise CliError(f"law {cls.name} depends on model size: give the target --model-size (e.g. 1.3B)")
    if cls.uses_tokens and D is None:
        raise CliError(f"law {cls.name} depends on tokens: give the target --tokens (e.g. 30B)")
    unique = read_unique_tokens(args.unique_tokens) if args.unique_tokens else None
    if unique is not None and D is None:
        raise CliError("--unique-tokens needs the target --tokens")
    if args.max_epochs is not None and unique is None and train.unique_tokens is not None:
        unique = dict(zip(train.base_domains or train.domains, map(float, train.unique_tokens)))  # the table's own counts
        if D is None:
            raise CliError("--max-epochs needs the target --tokens")
    if args.max_epochs is not None and unique is None:
        raise CliError("--max-epochs needs --unique-tokens")
    if args.bootstrap is not None and args.bootstrap < 2:
        raise CliError(f"--bootstrap needs at least 2 resamples, got {args.bootstrap}")
    if args.candidates is not None and not args.bootstrap:
        raise CliError("--candidates needs --bootstrap R: the pick among a pool is reported with its calibrated estimate")
    if args.reference is not None and not args.bootstrap:
        raise CliError("--reference needs --bootstrap R (p_beats_reference is a bootstrap estimate)")
    cv_folds = parse_cv_folds(args.cv_folds)
    if (cv_folds != "auto" or args.cv_repeats != 10) and not args.bootstrap:
        raise CliError("--cv-folds and --cv-repeats need --bootstrap R (they calibrate the pick's objective)")
    if args.cv_repeats < 1:
        raise CliError(f"--cv-repeats must be >= 1, got {args.cv_repeats}")
    tw = parse_bounds(args.target_weights, "target-weights") if args.target_weights else None
    if not (0 < args.level < 1):
        raise CliError(f"--level must lie strictly between 0 and 1, got {args.level}")
    names = list(train.domains) if cls.per_domain else list(train.targets)
    if args.target is not None and args.target not in names and not (str(args.target).isdigit() and int(args.target) < len(names)):
        raise CliError(f"--target {args.target!r} is not one of the law's targets {names}")
    unknown = [t for t in (tw or {}) if isinstance(tw, dict) and t not in names]
    if unknown:
        raise CliError(f"--target-weights names {unknown}, which are not among the law's targets {names}")
    common = dict(
        raw_model_size=N, raw_n_tokens=D,
        target=args.target, target_weights=tw, floors=parse_bounds(args.floor, "floor"),
        ceilings=parse_bounds(args.ceiling, "ceiling"), unique_tokens=unique, max_epochs=args.max_epochs,
        starts=args.mixture_starts, seed=args.seed, measured=train, within_measured=args.within_measured,
    )
    prior = None if args.prior is None else (args.prior if args.prior == "natural" else read_prior(args.prior))
    extra = {k: v for k, v in dict(prior=prior, kl_penalty=args.kl_penalty, max_kl=args.max_kl, trust_radius=args.trust_radius).items()
             if v is not None}
    pool = reference = None
    if args.bootstrap and (extra or (phased and args.candidates is None)):
        if args.candidates is not None or args.reference is not None:
            raise CliError("--candidates and --reference apply without --prior/--kl-penalty/--max-kl/--trust-radius, and on a table "
                           "with several phases only together with --candidates (a pool of phased mixtures)")
    elif args.bootstrap:
        pool = read_pool(args.candidates, train.domains) if args.candidates is not None else None
        reference = reference_mixture(args.reference, train)
    if (phased or extra) and args.within_measured:
        raise CliError("--within-measured applies to single-phase searches without --prior/--kl-penalty/--max-kl/--trust-radius; "
                       "use --trust-radius to stay near the measured mixtures")
    try:  # check the constraints before any fitting
        if phased or extra:
            from mixjax.mixture import phase_problem

            phase_problem(train.domains, phases=train.phases if phased else None, phase_shares=train.phase_shares if phased else None,
                          floors=common["floors"], ceilings=common["ceilings"], unique_tokens=unique, max_epochs=args.max_epochs,
                          n_tokens=D, min_weight=cls.min_weight, natural=train.unique_tokens, **extra)
        else:
            lo, hi = mixture_bounds(train.n_domains, floors=common["floors"], ceilings=common["ceilings"], unique_tokens=unique,
                                    max_epochs=args.max_epochs, n_tokens=D, domains=train.domains)
            if cls.min_weight > 0:  # the law's implicit floor, as optimize_mixture applies it
                try:
                    lo, hi = mixture_bounds(train.n_domains, floors=np.maximum(lo, cls.min_weight), ceilings=hi, domains=train.domains)
                except InfeasibleMixtureError as e:
                    raise InfeasibleMixtureError(f"law {cls.name} is only meaningful with every weight at least {cls.min_weight:g} "
                                                 f"(its min_weight; it diverges at 0): {e}") from None
            if args.within_measured:
                mixture_bounds(train.n_domains, floors=np.maximum(lo, train.mixtures.min(0)), ceilings=np.minimum(hi, train.mixtures.max(0)),
                               domains=train.domains)
    except InfeasibleMixtureError as e:
        if args.within_measured:
            ranges = ", ".join(f"{d} [{a:.4g}, {b:.4g}]" for d, a, b in zip(train.domains, train.mixtures.min(0), train.mixtures.max(0)))
            raise CliError(f"--within-measured: the floors and ceilings leave no mixture inside the measured ranges ({ranges}): {e}") from None
        raise CliError(str(e)) from None
    except ValueError as e:
        raise CliError(str(e)) from None
    fit_kw = dict(starts=args.starts, seed=args.seed, objective=args.objective, max_steps=args.max_steps, dtype=args.dtype)
    if args.optimizer is not None:
        from mixjax.fitting import FitConfig

        try:
            FitConfig(optimizer=args.optimizer)
        except ValueError as e:
            raise CliError(f"--optimizer: {e}") from None
        fit_kw["optimizer"] = args.optimizer
    say = (lambda m: None) if args.json or not main else (lambda m: print(m, file=sys.stderr))
    ens = cal = None
    caveats = (ExtrapolationWarning, FixedOptimumWarning)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # the optimizer's caveats are printed below as plain stderr lines; other warnings are re-issued as they were
            warnings.simplefilter("always")
            if args.bootstrap:
                boot_fn = getattr(mixjax, "bootstrap", None)
                if boot_fn is None:
                    raise CliError("--bootstrap needs mixjax.bootstrap, which this installation does not provide")
                say(f"bootstrapping {args.law} on {train.n_rows} rows of {train.name} ({args.bootstrap} resamples x {args.starts} starts)...")
                boot = boot_fn(args.law, train, resamples=args.bootstrap, scheme=args.scheme, **fit_kw)
                say(f"optimizing the mixture of each resample's law ({args.mixture_starts} starts each)...")
                ens = mixjax.optimize_mixture_ensemble(boot, **{**common, **extra, "starts": min(args.mixture_starts, 8)})
                fit, res = boot.point, ens.point
                if reference is not None:  # the calibration's search is the plain one: not with KL, trust region or phases
                    # (a phased table: its pool only, the candidates themselves being the mixtures allowed)
                    bounds = dict(floors=None, ceilings=None, unique_tokens=None, max_epochs=None) if phased else {}
                    cal = mixjax.calibrate_optimum(boot, ensemble=None if pool is not None else ens, candidates=pool,
                                                   reference=reference[0], data=train, level=args.level, cv_folds=cv_folds,
                                                   cv_repeats=args.cv_repeats,
                                                   **{**common, **bounds, "starts": min(args.mixture_starts, 8)})
            else:
                say(f"fitting {args.law} to {train.n_rows} rows of {train.name} ({args.starts} starts)...")
                fit = mixjax.fit(args.law, train, **fit_kw)
                res = mixjax.optimize_mixture(fit, **common, **extra)
    except (InfeasibleMixtureError, DataError) as e:
        raise CliError(str(e)) from None
    finally:
        for w in caught:
            if not issubclass(w.category, caveats):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not main:  # every process holds the same result; process 0 reports and writes it
        return 0
    notes = res.notes()
    if ens is not None and ens.optimum_fixed_by_law and not res.optimum_fixed_by_law:
        notes.append(ens.fixed_message)
    if cal is not None:  # its caveat is an ExtrapolationWarning, caught above with the optimizer's
        notes += cal.notes()
    for line in notes:  # on stderr, with --json too: stdout stays one JSON object
        print(f"warning: {line}", file=sys.stderr)

    out = {
        "law": fit.info["law"],
        "fit_status": fit.status.name,
        "fit_rows": train.n_rows,
        "target_model_size": N,
        "target_tokens": D,
        **res.as_dict(),
    }
    if ens is not None:
        out["bootstrap"] = ens.as_dict(args.level)
        out["calibrated"] = None if cal is None else cal.as_dict()
    if cal is not None:  # the report of the pick: the pool's best candidate, or the optimum of the search
        out.update(
            mixture={d: float(x) for d, x in zip(cal.domains, cal.mixture)},
            source=cal.source,
            candidate_index=cal.index,
            predicted=cal.predicted,
            predicted_corrected=cal.calibrated,
            interval=None if cal.run_interval is None else [float(cal.run_interval[0]), float(cal.run_interval[1])],
            level=args.level,
            reference={"mixture": {d: float(x) for d, x in zip(cal.domains, cal.reference)}, "chosen": reference[1],
                       "predicted": cal.reference_predicted},
            p_beats_reference=cal.p_beats_reference,
            expected_regret=cal.regret,
            nearest_measured_distance=cal.nearest_measured_distance,
            correction=cal.method,
            predicted_corrected_bootstrap=cal.bootstrap_calibrated,
            interval_bootstrap=None if cal.bootstrap_run_interval is None else [float(x) for x in cal.bootstrap_run_interval],
            cv_optimism=cal.cv_optimism,
            cv_optimism_se=cal.cv_optimism_se,
            cv_folds=cal.cv_folds,
            cv_picks=cal.cv_picks,
            cv_reach=cal.cv_reach,
        )
    if args.plot is not None:
        from mixjax.plots.mixture import plot_mixture

        fig = plot_mixture(ens if ens is not None else res, level=args.level)
        write_atomic(args.plot, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight"), args, "--plot")
        out["plot"] = args.plot
    if args.json:
        print_json(out)
        return 0
    scale = ", ".join(x for x in (f"N = {N:.4g} parameters" if N else "", f"D = {D:.4g} tokens" if D else "") if x)
    print(f"optimal mixture for {out['law']} at {scale or 'the fitted scale'}: {res.objective} = {res.value:.6g} ({res.status.name})")
    header = ["domain", "weight"]
    if ens is not None:
        lo, hi = ens.interval(args.level)
        header += [f"{100 * args.level:g}% interval"]
    header += ["floor", "ceiling", "bound", "measured range", "outside"]
    cov = res.coverage
    rows = []
    for i, d in enumerate(res.domains):
        row = [d, float(res.mixture[i])]
        if ens is not None:
            row.append(f"[{lo[i]:.4f}, {hi[i]:.4f}]")
        row += [float(res.lower[i]), float(res.upper[i]), out["active"][d]]
        row += [f"[{cov.low[i]:.4f}, {cov.high[i]:.4f}]", float(cov.outside[i])] if cov is not None else ["", ""]
        rows.append(row)
    print(format_table(rows, header))
    print()
    print("predicted losses: " + ", ".join(f"{t} {v:.4f}" for t, v in zip(res.targets, res.losses)))
    if res.problem is not None:  # phases, caps, KL, trust region
        pb, act = res.problem, res.active_constraints
        if pb.n_phases > 1:
            print("phases: " + ", ".join(f"{p} (share {s:.3g})" for p, s in zip(pb.phases, pb.shares)) + "; weights per phase in the "
                  "JSON field phase_mixtures")
        if res.epochs is not None:
            k = int(np.argmax(res.epochs))
            print(f"epochs at {pb.tokens:.4g} tokens: at most {res.epochs[k]:.4g} ({pb.base_domains[k]}); at the repetition cap: "
                  + (", ".join(act["repetition_cap"]) or "none"))
        if res.kl_to_prior is not None:
            print(f"KL to the prior (sum over phases of share x KL): {res.kl_to_prior:.4g} nats"
                  + (f" (bound {pb.max_kl:g}{', active' if act['max_kl'] else ''})" if pb.max_kl is not None else "")
                  + (f"; penalty {pb.kl_penalty:g}, penalized objective {res.penalized_value:.6g}" if pb.kl_penalty > 0 else ""))
        if pb.trust_radius is not None:
            print(f"trust region: total-variation distance {res.nearest_measured_distance:.4g} to the nearest measured mixture "
                  f"(radius {pb.trust_radius:g}{', active' if act['trust_region'] else ''})")
    if cov is not None:
        spacing = "n/a" if out["typical_measured_spacing"] is None else f"{cov.typical_spacing:.4f}"
        print(f"nearest measured mixture: total-variation distance {cov.nearest_distance:.4f} (typical spacing of the "
              f"{cov.n_measured} measured mixtures: {spacing}); extrapolation: {'yes' if cov.extrapolation else 'no'}")
    if res.optimum_fixed_by_law is not None:
        print(f"optimum fixed by the law: {'yes' if res.optimum_fixed_by_law else 'no'} ({res.fixed_message})")
    if cal is not None:
        pct = f"{100 * args.level:g}%"
        if cal.source == "pool":
            pick = ", ".join(f"{d}={x:.4f}" for d, x in zip(cal.domains, cal.mixture))
            print(f"best candidate of {args.candidates}: row {cal.index} ({pick}); the search above is for comparison")
        how = (f"cross-validated picks, {cal.cv_folds} folds x {cal.cv_repeats}" if cal.method == "cv" else "bootstrap")
        print(f"winner's curse: the fit predicts {cal.predicted:.6g} at its own pick; corrected for the selection ({how}), "
              f"{cal.calibrated:.6g} (optimism {cal.optimism:.3g}), {pct} interval [{cal.interval[0]:.6g}, {cal.interval[1]:.6g}]")
        if cal.run_interval is not None:
            noise = "" if cal.run_noise is None else (f"{100 * cal.run_noise:.3g} %" if cal.log_scale else f"{cal.run_noise:.3g}")
            src = "split-conformal on the cross-validated picks" if cal.method == "cv" else f"run noise {noise}, from out-of-bag residuals"
            print(f"one run at this mixture: {pct} interval [{cal.run_interval[0]:.6g}, {cal.run_interval[1]:.6g}] "
                  f"({src}); expected regret {cal.regret:.3g}")
        if cal.p_beats_reference is not None:
            print(f"P(a run at the pick beats one at the {reference[1]} reference, predicted {cal.reference_predicted:.6g}) = "
                  f"{cal.p_beats_reference:.3f}; nearest measured mixture at total-variation distance "
                  f"{cal.nearest_measured_distance if cal.nearest_measured_distance is not None else float('nan'):.4f}")
    if ens is not None:
        print(f"bootstrap: {ens.n_ok} of {ens.ok.size} resamples used")
        if ens.member_extrapolation is not None:
            print(f"bootstrap: {int(ens.member_extrapolation[ens.ok].sum())} of {ens.n_ok} resamples' optima extrapolate")
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0
