"""``mixjax predict``: predicted losses of a saved fit for a new mixture (or for every row of a CSV file)."""

from __future__ import annotations

import sys

import numpy as np

from ._common import CliError, format_table, parse_count, print_json
from mixjax.units import MODEL_SIZE_UNIT, TOKENS_UNIT

#: Mixture weights must sum to 1 within this before they are renormalized (as in :mod:`mixjax.data`).
SUM_TOL = 0.01


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict losses with a saved fit",
        description="Predict the loss of every target for a new mixture at a given model size and token count, "
        "with a fit saved by `mixjax fit --output FIT`.",
    )
    p.add_argument("fit", metavar="FIT", help="a fit file written by `mixjax fit --output` (or mixjax.save_fit)")
    p.add_argument("--mixture", "-m", help="mixture weights: comma-separated in domain order (0.2,0.1,...) or name=weight pairs (c4=0.5,book=0.5; unnamed domains get 0)")
    p.add_argument("--data", metavar="CSV", help="predict every row of a CSV with weight_<domain> columns (and model_size, n_tokens; <target>_loss columns are scored when present); for a fit of a law bound to a swarm table's layout (exposure), a table of the same layout: a phase table (read with the fit's phase shares) or a bundled swarm, whose phases, domains and unique tokens are checked against the fit's")
    p.add_argument("--model-size", "-N", metavar="N", help="model size in parameters (e.g. 122M or 1.22e8)")
    p.add_argument("--tokens", "-D", metavar="D", help="training tokens (e.g. 9.998B or 9.998e9)")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    p.set_defaults(run=run)


def parse_mixture(text: str, domains: list[str]) -> tuple[np.ndarray, list[str]]:
    """Weights ``(K,)`` in domain order from ``"0.2,0.8"`` or ``"c4=0.2,book=0.8"``; validated (finite, >= 0, sum
    1 within :data:`SUM_TOL`) and renormalized. Returns the weights and notes for the user."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    K = len(domains)
    if not parts:
        raise CliError("--mixture is empty")
    named = ["=" in p for p in parts]
    if any(named) and not all(named):
        raise CliError("--mixture mixes plain weights and name=weight pairs; use one form")
    w = np.zeros(K)
    if all(named):
        seen = set()
        for p in parts:
            name, _, val = p.partition("=")
            name = name.strip()
            if name not in domains:
                raise CliError(f"--mixture names unknown domain {name!r}; the fit's domains are {domains}")
            if name in seen:
                raise CliError(f"--mixture gives domain {name!r} twice")
            seen.add(name)
            w[domains.index(name)] = _number(val, name)
    else:
        if len(parts) != K:
            raise CliError(f"--mixture has {len(parts)} weights, the fit has {K} domains ({', '.join(domains)})")
        w = np.array([_number(v, d) for v, d in zip(parts, domains)])
    return check_weights(w, domains, "--mixture")


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CliError(f"--mixture weight for {name!r} is not a number: {text.strip()!r}") from None


def check_weights(w: np.ndarray, domains: list[str], label: str) -> tuple[np.ndarray, list[str]]:
    notes = []
    if not np.all(np.isfinite(w)):
        raise CliError(f"{label} weight for {domains[int(np.flatnonzero(~np.isfinite(w))[0])]!r} is not finite")
    if (w < 0).any():
        i = int(np.flatnonzero(w < 0)[0])
        raise CliError(f"{label} weight for {domains[i]!r} is negative ({w[i]:g}); weights must be >= 0")
    s = float(w.sum())
    if abs(s - 1.0) > SUM_TOL + 1e-12:
        raise CliError(f"{label} weights sum to {s:.6g}, expected 1 +- {SUM_TOL}")
    if abs(s - 1.0) > 1e-12:
        notes.append(f"{label} weights summed to {s:.6g}; renormalized to sum 1")
    return w / s, notes


def _scale(text, label, needed, law_name):
    if text is None:
        if needed:
            raise CliError(f"law {law_name} needs {label}; give it (e.g. {'--model-size 122M' if label == '--model-size' else '--tokens 9.998B'})")
        return float("nan")
    return parse_count(text)


def read_rows(path: str, domains: list[str], targets: list[str], model_size, tokens):
    """Mixtures ``(n, K)`` in the fit's domain order, raw model sizes and tokens ``(n,)``, observed losses ``(n, V)``
    (NaN where absent) and notes, from a wide-layout CSV."""
    from mixjax.data import DataError, read_table

    try:
        df, _, _ = read_table(path)
    except DataError as e:
        raise CliError(str(e)) from None
    wcols = [c for c in df.columns if str(c).startswith("weight_")]
    have = [c[len("weight_") :] for c in wcols]
    missing = [d for d in domains if d not in have]
    extra = [d for d in have if d not in domains]
    if missing or extra:
        raise CliError(f"{path}: weight columns must match the fit's domains {domains}; missing {missing}, unknown {extra}")
    if len(df) == 0:
        raise CliError(f"{path} has no rows")

    def numeric(c):
        import pandas as pd

        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy() & df[c].notna().to_numpy())
        if bad.size:
            raise CliError(f"{path}: column {c!r} row {bad[0]} is {df[c].iloc[bad[0]]!r}, not a number")
        return v.to_numpy(dtype=float, na_value=np.nan)

    h = np.stack([numeric(f"weight_{d}") for d in domains], axis=1) if domains else np.zeros((len(df), 0))
    notes = []
    out = np.empty_like(h)
    for r in range(h.shape[0] if domains else 0):
        out[r], n = check_weights(h[r], domains, f"{path} row {r}")
        notes += n

    def col(name, given):
        if given is not None:
            own = numeric(name) if name in df.columns else np.full(len(df), np.nan)
            known = own[np.isfinite(own)]
            if known.size and not np.allclose(known, given, rtol=1e-3, atol=0):
                flag = "--model-size" if name == "model_size" else "--tokens"
                raise CliError(f"{flag} {given:.4g} would replace the {name} column of {path}, which holds "
                               f"{known.min():.4g} to {known.max():.4g}: losses measured at one scale would be scored "
                               f"against predictions at another. Leave {flag} out to use each row's own {name}")
            return np.full(len(df), given)
        if name in df.columns:
            return numeric(name)
        return np.full(len(df), np.nan)

    N, D = col("model_size", model_size), col("n_tokens", tokens)
    lcol = lambda t: "loss" if t == "loss" else f"{t}_loss"  # noqa: E731
    y = np.stack([numeric(lcol(t)) if lcol(t) in df.columns else np.full(len(df), np.nan) for t in targets], axis=1)
    return out, N, D, y, notes


def read_bound_rows(path: str, fit_path: str, cls, domains: list[str], targets: list[str], model_size, tokens):
    """As :func:`read_rows`, for a fit whose law is bound to its table's layout (the exposure laws on a swarm): the
    table is read as ``mixjax fit`` reads it (a phase table, a bundled swarm or a wide CSV; a CSV phase table with
    the fit's phase shares), matched to the fit's domains by name, and refused unless its layout is the binding's
    (phases and shares, domains, unique tokens where the table has them)."""
    import os
    import warnings

    from mixjax.data import DataError

    from ._common import load_data

    shares = (cls.binding() or {}).get("phase_shares")
    # A CSV phase table records no shares: read it with the fit's (if it has another number of phases, read it as it
    # is, and the check below names the difference). Targets: the fit's; failing that, the table is read for its
    # mixtures and scales only (a phase table needs some metric: "mean:*"), and nothing is scored.
    share_options = [shares, None] if os.path.isfile(path) and shares is not None else [None]
    first_error, table, scored = None, None, False
    for share in share_options:
        for target in (list(targets), None, "mean:*"):
            try:
                with warnings.catch_warnings():
                    if share is None and len(share_options) > 1:
                        warnings.simplefilter("ignore")
                    table = load_data(path, target, phase_shares=share)
            except CliError as e:
                first_error = first_error or e
                continue
            scored = target is not None
            break
        if table is not None:
            break
    if table is None:
        raise first_error
    try:
        table = table.align(domains, to=f"the fit in {fit_path}")
        problem = cls.layout_mismatch(table, require_phases=True)
    except DataError as e:  # other domains: name the layout's difference where there is one
        problem = cls.layout_mismatch(table, require_phases=True)
        if not problem:
            raise CliError(str(e)) from None
    if problem:
        raise CliError(f"{path} does not match the table the fit in {fit_path} was made on: law {cls.name} is bound to "
                       f"{cls.describe_binding()}, but {table.name!r} {problem}")
    notes = []
    if cls.unique_tokens_b is not None and table.unique_tokens is None:
        notes.append(f"{table.name} carries no unique tokens; the repetition term uses those the law was fitted with")

    def scale(values, given, name, flag):
        if given is None:
            return np.asarray(values, float)
        known = values[np.isfinite(values)]
        if known.size and not np.allclose(known, given, rtol=1e-3, atol=0):
            raise CliError(f"{flag} {given:.4g} would replace the {name} column of {path}, which holds {known.min():.4g} to "
                           f"{known.max():.4g}: losses measured at one scale would be scored against predictions at another. "
                           f"Leave {flag} out to use each row's own {name}")
        return np.full(table.n_rows, float(given))

    Ns = scale(table.model_size, model_size, "model_size", "--model-size")
    Ds = scale(table.n_tokens, tokens, "n_tokens", "--tokens")
    y = np.stack([table.losses[:, table.targets.index(t)] if scored and t in table.targets else np.full(table.n_rows, np.nan)
                  for t in targets], axis=1)
    if not scored:
        notes.append(f"{path} has no loss column of the fit's targets {targets}; predictions are not scored")
    return np.asarray(table.mixtures, float), Ns, Ds, y, notes


def run(args) -> int:
    import jax

    from mixjax.io import load_ensemble, load_fit
    from mixjax.metrics import mre

    if args.mixture is not None and args.data is not None:
        raise CliError("give either --mixture or --data, not both")
    f = load_fit(args.fit)
    cls = type(f.law)  # the registered class, or the class bound to the fitted table's layout (read from the file)
    binding = getattr(cls, "binding", None)
    bound = binding is not None and binding() is not None
    domains, targets = list(f.record.domains), list(f.record.targets)
    notes: list[str] = []
    if not domains and args.data is None:  # a fit without mixtures: only the scale is needed
        if args.mixture is not None:
            raise CliError(f"the fit of {cls.name} in {args.fit} has no mixture domains; leave out --mixture")
        N = _scale(args.model_size, "--model-size", cls.uses_model_size, cls.name)
        D = _scale(args.tokens, "--tokens", cls.uses_tokens, cls.name)
        h, Ns, Ds, y = np.zeros((1, 0)), np.array([N]), np.array([D]), np.full((1, len(targets)), np.nan)
    elif args.mixture is None and args.data is None:
        raise CliError("give --mixture (weights of the fit's domains) or --data (a CSV of runs)")
    elif args.mixture is not None:
        N = _scale(args.model_size, "--model-size", cls.uses_model_size, cls.name)
        D = _scale(args.tokens, "--tokens", cls.uses_tokens, cls.name)
        w, notes = parse_mixture(args.mixture, domains)
        h, Ns, Ds, y = w[None, :], np.array([N]), np.array([D]), np.full((1, len(targets)), np.nan)
    else:
        N = parse_count(args.model_size) if args.model_size is not None else None
        D = parse_count(args.tokens) if args.tokens is not None else None
        if bound:
            h, Ns, Ds, y, notes = read_bound_rows(args.data, args.fit, cls, domains, targets, N, D)
        else:
            h, Ns, Ds, y, notes = read_rows(args.data, domains, targets, N, D)
    for flag, v, label in ((cls.uses_model_size, Ns, "model_size"), (cls.uses_tokens, Ds, "n_tokens")):
        bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
        if flag and bad.size:
            raise CliError(f"law {cls.name} needs {label} > 0; missing or invalid in row {bad[0]} (give --{'model-size' if label == 'model_size' else 'tokens'})")
    extrapolation = _check_scales(f, Ns, Ds, "--model-size" if args.data is None else f"{args.data}: model_size",
                                  "--tokens" if args.data is None else f"{args.data}: n_tokens")
    dt = np.dtype(f.config.dtype)
    fill = lambda v, unit: np.where(np.isfinite(v), v / unit, 1.0).astype(dt)  # noqa: E731
    hN, hD = fill(Ns, MODEL_SIZE_UNIT), fill(Ds, TOKENS_UNIT)
    pred = np.asarray(f.law.predict(h.astype(dt), hN, hD))
    # A law whose prediction diverges at a zero domain weight (its fits leave those cells out) cannot predict that
    # domain's loss there: such cells are reported as null with a reason, never as numbers.
    no_pred = np.zeros(pred.shape, bool)
    if cls.mask_zero_weight and cls.per_domain and h.shape[1] == pred.shape[1]:
        no_pred = (h == 0) | (h < cls.min_weight)
        if no_pred.any():
            import warnings

            warnings.warn(
                f"law {cls.name} cannot predict a domain's loss where that domain's weight is below {cls.min_weight:g} "
                f"(its min_weight: the noise term diverges at 0); {int(no_pred.sum())} such prediction(s) reported as null/n/a",
                stacklevel=2,
            )
    pred = np.where(no_pred, np.nan, pred)
    out: dict = {"law": cls.name, "fit": str(args.fit), "domains": domains, "targets": targets, "units": {"model_size": "parameters", "n_tokens": "tokens"}}
    ens = load_ensemble(args.fit)
    band = None
    if ens is not None:
        ep = np.asarray(jax.vmap(lambda law: law.predict(h.astype(dt), hN, hD))(ens))  # (R, n, V)
        band = np.quantile(ep, [0.05, 0.95], axis=0)
    rows = []
    for r in range(h.shape[0]):
        row = {
            "mixture": dict(zip(domains, h[r].tolist())),
            "model_size": float(Ns[r]),
            "n_tokens": float(Ds[r]),
            "predicted": {t: (None if no_pred[r, j] else float(pred[r, j])) for j, t in enumerate(targets)},
            "mean": None if no_pred[r].any() else float(pred[r].mean()),
        }
        if no_pred[r].any():
            row["not_predicted"] = {t: f"weight below {cls.min_weight:g}: the law diverges there" for j, t in enumerate(targets) if no_pred[r, j]}
        if band is not None:
            row["interval_90"] = {t: (None if no_pred[r, j] else [float(band[0, r, j]), float(band[1, r, j])]) for j, t in enumerate(targets)}
        if np.isfinite(y[r]).any():
            row["observed"] = {t: (float(y[r, j]) if np.isfinite(y[r, j]) else None) for j, t in enumerate(targets)}
        rows.append(row)
    if args.data is None:
        out.update(rows[0])
    else:
        out["rows"] = rows
        m = np.isfinite(y) & ~no_pred  # as the fit scored cells: a domain's loss is not counted where its weight is 0
        if m.any():
            out["mre"] = float(mre(pred, y, m))
            out["per_target_mre"] = {t: float(mre(pred[:, j], y[:, j], m[:, j])) for j, t in enumerate(targets) if m[:, j].any()}
    out["notes"] = notes
    out["scale_extrapolation"] = extrapolation
    if args.json:
        print_json(out)
        return 0
    for n in notes[:5]:
        print(f"note: {n}", file=sys.stderr)
    if len(notes) > 5:
        print(f"note: ... and {len(notes) - 5} more rows renormalized", file=sys.stderr)
    if args.data is None:
        print(f"law {cls.name}; model size {Ns[0]:.4g} parameters, {Ds[0]:.4g} tokens")
        if domains:
            print("mixture: " + ", ".join(f"{d}={v:.4g}" for d, v in zip(domains, h[0])))
        print()
        table = [[t, float(pred[0, j])] + (list(out["interval_90"][t] or [float("nan")] * 2) if band is not None else []) for j, t in enumerate(targets)]
        table.append(["mean", float(pred[0].mean())] + ([float("nan")] * 2 if band is not None else []))
        print(format_table(table, ["target", "predicted loss"] + (["5%", "95%"] if band is not None else [])))
    else:
        table = [[r, float(Ns[r]), float(Ds[r]), *pred[r].tolist(), float(pred[r].mean())] for r in range(h.shape[0])]
        print(format_table(table, ["row", "model_size", "n_tokens", *targets, "mean"]))
        if "mre" in out:
            print(f"\nMRE against the observed losses: {100 * out['mre']:.3f} %")
    return 0


def _check_scales(f, Ns, Ds, size_label: str, tokens_label: str) -> dict:
    """Refuse implausible scales (:func:`mixjax.units.check_scale`); warn when a scale lies far outside the fitted
    ones. Returns the farthest value of each kind against the fitted range (``Fit.scale_extrapolation``)."""
    import warnings

    from mixjax.units import ScaleError, ScaleExtrapolationWarning, check_scale, extrapolation_message

    report = {}
    for values, kind, label in ((Ns, "model_size", size_label), (Ds, "n_tokens", tokens_label)):
        try:
            check_scale(values, kind, where=label)
        except ScaleError as e:
            raise CliError(str(e)) from None
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        ends = [f.scale_extrapolation(**{kind: float(v)})[kind] for v in (finite.min(), finite.max())]
        report[kind] = max(ends, key=lambda r: r["factor"] or 0.0)
        msg = extrapolation_message(report[kind], kind)
        if msg:
            warnings.warn(msg, ScaleExtrapolationWarning, stacklevel=2)
    return report
