"""Swarm tables: multi-phase mixtures, ratio/metric file pairs, unique tokens and exposures.

Flattening of P training phases. A run trained in P phases over K domains has one mixture per phase, ``w_p``
(``sum_k w_{p,k} = 1``), and phase p takes the share ``s_p`` of the run's tokens (``sum_p s_p = 1``). It is stored as
one distribution over the P*K (phase, domain) pairs::

    h[p*K + k] = s_p * w_{p,k},        sum_{p,k} h[p*K + k] = sum_p s_p = 1,

so every law, fit, bootstrap and comparison works unchanged on the P*K flattened domains, named
``"<domain>@<phase>"`` (:func:`mixjax.data.phase_domain_name`; phases are ``phase_0``, ``phase_1``, ...).
:meth:`MixtureData.phase_weights` recovers ``w``.

Exposure. With ``D`` training tokens and ``U_k`` unique tokens available in domain k, the run reads
``D * sum_p h[p*K + k]`` tokens of domain k, i.e. ``E_k = D * sum_p h[p*K + k] / U_k`` epochs
(:meth:`MixtureData.exposures`).

Targets are metric columns chosen by exact name or by an ``fnmatch`` glob (``"eval/paloma/*/bpb"``); an objective
(``objective="mean"`` or ``{metric or glob: weight}``) averages the selected metrics into one target column.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib.resources
import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
import numpy as np

from .data import (
    MIXTURE_SUM_TOL,
    DataError,
    MixtureData,
    check_mixture_weights,
    check_column_names,
    numeric_column,
    readonly,
    from_arrays,
    phase_domain_name,
    read_table,
)

__all__ = [
    "load_phase_table",
    "load_ratios_metrics",
    "load_unique_tokens",
    "with_unique_tokens",
    "select_metrics",
    "load_swarm",
    "is_phase_table",
    "DEFAULT_ID_COLUMNS",
]

#: Columns that are never metrics (run identifiers and scale columns), besides non-numeric and unnamed ones.
DEFAULT_ID_COLUMNS = (
    "run", "run_id", "run_name", "name", "index", "wandb_run_id", "source_experiment", "status",
    "mixture_id", "split", "model_size", "n_tokens",
)
_PHASE_COLUMN = re.compile(r"^phase_(\d+)_(.+)$")
_GLOB = re.compile(r"[*?\[]")
_FIRST = 5  # how many names an error lists


# --------------------------------------------------------------------------- helpers
def _frame(source, name: str | None):
    """A DataFrame and a name from a DataFrame, a path or an open file."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        if len(source) == 0:
            raise DataError(f"dataset {name or 'data'!r} is empty (0 rows)")
        cols = [str(c).strip() for c in source.columns]
        check_column_names(cols, name or "data")
        return source.set_axis(cols, axis=1), name or "data"
    df, _, nm = read_table(source, name=name)
    if len(df) == 0:
        raise DataError(f"{nm}: the table is empty (0 rows)")
    return df, nm


def _few(names) -> str:
    names = list(names)
    head = ", ".join(repr(n) for n in names[:_FIRST])
    return head + (f" and {len(names) - _FIRST} more" if len(names) > _FIRST else "")


def _is_id(col: str, id_columns) -> bool:
    return col in id_columns or col == "" or col.startswith("Unnamed:")


def _metric_columns(df, exclude, id_columns) -> list[str]:
    """Numeric columns that are neither weights (``exclude``) nor identifiers."""
    out = []
    for c in df.columns:
        if c in exclude or _is_id(c, id_columns):
            continue
        if df[c].dtype.kind in "fiu":
            out.append(c)
    return out


def is_phase_table(columns) -> bool:
    """Whether a table's columns are the ``phase_<p>_<domain>`` layout (it has ``phase_0_`` columns)."""
    return any(_PHASE_COLUMN.match(str(c)) and str(c).startswith("phase_0_") for c in columns)


def select_metrics(columns: Sequence[str], patterns, *, all_columns: Sequence[str] | None = None, label: str = "data") -> list[str]:
    """The metric columns named by ``patterns`` (a name or glob, or a list of them), in table order per pattern,
    each once. An exact column name wins over a glob reading; a glob uses :func:`fnmatch.fnmatchcase` (``*`` also
    matches ``/``). A name or glob that selects nothing is a :class:`DataError` naming it."""
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = [str(p) for p in patterns]
    if not patterns:
        raise DataError(f"{label}: no metric named; give at least one metric name or glob")
    columns = list(columns)
    out: list[str] = []
    for pat in patterns:
        if pat in columns:
            hits = [pat]
        elif _GLOB.search(pat):
            hits = [c for c in columns if fnmatch.fnmatchcase(c, pat)]
            if not hits:
                raise DataError(f"{label}: no metric column matches {pat!r} ({len(columns)} metric columns, e.g. {_few(columns)})")
        elif all_columns is not None and pat in all_columns:
            raise DataError(f"{label}: column {pat!r} is not a metric (a weight, identifier or non-numeric column)")
        else:
            close = difflib.get_close_matches(pat, columns, n=3)
            hint = f"; close matches: {close}" if close else f" ({len(columns)} metric columns, e.g. {_few(columns)})"
            raise DataError(f"{label}: no metric column {pat!r}{hint}")
        out.extend(h for h in hits if h not in out)
    return out


def _metric_matrix(df, cols, label) -> np.ndarray:
    return np.stack([numeric_column(df, c, label) for c in cols], axis=1)


def _targets(df, metric_cols, targets, objective, objective_name, skipna, label, all_columns):
    """(target names, (n, V) values) from the ``targets``/``objective`` selection."""
    if objective is None:
        if targets is None:
            raise DataError(
                f"{label}: name the target metric(s) (targets=, --targets): {len(metric_cols)} metric columns, e.g. "
                f"{_few(metric_cols)}"
            )
        cols = select_metrics(metric_cols, targets, all_columns=all_columns, label=label)
        return cols, _metric_matrix(df, cols, label)
    if isinstance(objective, str):
        if objective != "mean":
            raise DataError(f"{label}: objective must be 'mean' or a {{metric or glob: weight}} mapping, got {objective!r}")
        if targets is None:
            raise DataError(f"{label}: objective='mean' averages the metrics named by targets=; name them (a glob such as '*' selects all)")
        cols = select_metrics(metric_cols, targets, all_columns=all_columns, label=label)
        weights = np.ones(len(cols))
    elif isinstance(objective, Mapping):
        if targets is not None:
            raise DataError(f"{label}: give the objective's metrics as the keys of objective=, not also as targets=")
        if not objective:
            raise DataError(f"{label}: the objective mapping is empty")
        cols, weights = [], []
        for pat, wt in objective.items():
            wt = float(wt)
            if not (np.isfinite(wt) and wt > 0):
                raise DataError(f"{label}: objective weight of {pat!r} must be a finite number > 0, got {wt!r}")
            for c in select_metrics(metric_cols, pat, all_columns=all_columns, label=label):
                if c in cols:
                    raise DataError(f"{label}: metric {c!r} is selected by two keys of the objective; give it once")
                cols.append(c)
                weights.append(wt)
        weights = np.asarray(weights)
    else:
        raise DataError(f"{label}: objective must be None, 'mean' or a {{metric or glob: weight}} mapping, got {type(objective).__name__}")
    M = _metric_matrix(df, cols, label)
    miss = ~np.isfinite(M)
    if miss.any() and not skipna:
        r, c = np.argwhere(miss)[0]
        raise DataError(
            f"{label}: metric {cols[c]!r} is missing in row {r} ({int(miss.sum())} missing cell(s) among the "
            f"{len(cols)} metrics of the objective); pass skipna=True to average the metrics present in each row"
        )
    W = np.where(miss, 0.0, weights[None, :])
    den = W.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        obj = np.where(den > 0, (W * np.where(miss, 0.0, M)).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    return [objective_name], obj[:, None]


def _check_rows(W: np.ndarray, cols: Sequence[str], sum_tol: float, label: str, where) -> np.ndarray:
    """Mixture rows as :func:`mixjax.data.check_mixture_weights` checks them; ``where(r)`` describes row r."""
    return check_mixture_weights(W, [repr(c) for c in cols], sum_tol=sum_tol, name=label, label=label, where=where, stacklevel=5)


def _scale(df, col: str, value, label: str):
    """A scale column (raw counts) when present, else the given scalar (or None: unknown)."""
    if col in df.columns:
        if value is not None:
            raise DataError(f"{label}: the table has a {col!r} column and {col}= was given too; give one")
        return numeric_column(df, col, label)
    return value


def _warn_zero_columns(h: np.ndarray, names: Sequence[str], label: str) -> None:
    zero = [names[j] for j in np.flatnonzero(np.all(h == 0, axis=0))]
    if zero:
        warnings.warn(
            f"{label}: {len(zero)} mixture column(s) are 0 in every row ({_few(zero)}): a law cannot learn their "
            "parameters from this data",
            stacklevel=4,
        )


# --------------------------------------------------------------------------- unique tokens
def load_unique_tokens(source) -> dict[str, float]:
    """Unique tokens per domain, from a mapping ``{domain: count}``, a DataFrame or a CSV (path or open file) with
    columns ``domain,unique_tokens``. Counts must be finite and > 0; a domain listed twice is an error."""
    import pandas as pd

    if isinstance(source, Mapping):
        items = [(str(k), v) for k, v in source.items()]
        label = "unique tokens"
    else:
        df, label = _frame(source, None if isinstance(source, (str, os.PathLike)) else "unique tokens")
        missing = [c for c in ("domain", "unique_tokens") if c not in df.columns]
        if missing:
            raise DataError(f"{label}: no column(s) {missing}; expected columns domain,unique_tokens (got {list(df.columns)})")
        vals = numeric_column(df, "unique_tokens", label)
        items = list(zip(df["domain"].astype(str).str.strip(), vals))
        if isinstance(source, pd.DataFrame):
            label = "unique tokens"
    out: dict[str, float] = {}
    for d, v in items:
        if d in out:
            raise DataError(f"{label}: domain {d!r} is listed twice")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise DataError(f"{label}: the count of {d!r} is not a number: {v!r}") from None
        if not (np.isfinite(v) and v > 0):
            raise DataError(f"{label}: the count of {d!r} must be a finite number > 0, got {v!r}")
        out[d] = v
    if not out:
        raise DataError(f"{label}: no domain counts")
    return out


def _match_unique_tokens(counts, domains: Sequence[str], label: str) -> np.ndarray:
    counts = load_unique_tokens(counts)
    missing = [d for d in domains if d not in counts]
    if missing:
        raise DataError(f"{label}: no unique-token count for {len(missing)} domain(s): {_few(missing)}")
    extra = [d for d in counts if d not in domains]
    if extra:
        warnings.warn(f"{label}: unique-token counts of {len(extra)} domain(s) not in the table are ignored: {_few(extra)}", stacklevel=4)
    return readonly(np.array([counts[d] for d in domains], dtype=np.float64))


def with_unique_tokens(data: MixtureData, unique_tokens) -> MixtureData:
    """``data`` with unique tokens per domain attached (for :meth:`MixtureData.exposures`): a mapping, DataFrame or
    CSV as in :func:`load_unique_tokens`. Every domain (of ``base_domains`` for a multi-phase table) needs a count
    (an error names the missing ones); counts of other domains are ignored with a warning."""
    domains = data.base_domains if data.phases is not None else data.domains
    return dataclasses.replace(data, unique_tokens=_match_unique_tokens(unique_tokens, domains, data.name))


# --------------------------------------------------------------------------- loaders
def load_phase_table(
    source,
    *,
    targets=None,
    objective=None,
    objective_name: str = "objective",
    skipna: bool = False,
    phase_shares: Sequence[float] | None = None,
    unique_tokens=None,
    model_size: float | None = None,
    n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
    name: str | None = None,
    sum_tol: float = MIXTURE_SUM_TOL,
    id_columns: Sequence[str] = DEFAULT_ID_COLUMNS,
) -> MixtureData:
    """Load the ``phase_<p>_<domain>`` layout (a path, open file or DataFrame) as a flattened P*K mixture.

    Domains are those of the ``phase_0_`` columns (or ``domains=``, a subset of them); every phase must have the
    same domains, and each phase's row must sum to 1 within ``sum_tol`` (renormalized with a warning; further off
    is an error naming the row, phase and sum). ``phase_shares``: the P phases' shares of the tokens (normalized to
    sum 1; default equal shares, with a warning). Targets: metric columns by name or glob (``targets=``), or one
    column ``objective_name`` from ``objective="mean"`` over the targets or ``objective={metric or glob: weight}``
    (a weighted mean; a missing metric is an error unless ``skipna``). ``model_size``/``n_tokens``: raw counts used
    when the table has no such column. ``unique_tokens``: see :func:`load_unique_tokens`."""
    df, label = _frame(source, name)
    cols = list(df.columns)
    phase_cols: dict[int, dict[str, str]] = {}
    for c in cols:
        m = _PHASE_COLUMN.match(c)
        if m:
            phase_cols.setdefault(int(m.group(1)), {})[m.group(2)] = c
    if 0 not in phase_cols:
        raise DataError(f"{label}: no phase_0_<domain> columns; this is not a phase table")
    P = max(phase_cols) + 1
    gaps = [p for p in range(P) if p not in phase_cols]
    if gaps:
        raise DataError(f"{label}: phases {sorted(phase_cols)} are not numbered 0..{P - 1} (no phase_{gaps[0]}_ columns)")
    base = list(phase_cols[0])
    for p in range(1, P):
        missing = [d for d in base if d not in phase_cols[p]]
        extra = [d for d in phase_cols[p] if d not in phase_cols[0]]
        if missing or extra:
            raise DataError(
                f"{label}: phase {p} has other domains than phase 0 (missing: {_few(missing) or 'none'}; not in phase 0: "
                f"{_few(extra) or 'none'}); every phase needs the same domains"
            )
    if domains is not None:
        domains = [str(d) for d in domains]
        missing = [d for d in domains if d not in phase_cols[0]]
        if missing:
            raise DataError(f"{label}: no phase_0_<domain> column for domain(s) {_few(missing)}")
        base = domains
    if not base:
        raise DataError(f"{label}: no domains to read")
    phases = tuple(f"phase_{p}" for p in range(P))
    if phase_shares is None:
        shares = np.full(P, 1.0 / P)
        if P > 1:
            warnings.warn(
                f"{label}: phase token shares not given; assuming equal shares 1/{P} for {', '.join(phases)} "
                "(pass phase_shares= with each phase's share of the training tokens)",
                stacklevel=2,
            )
    else:
        shares = np.asarray(phase_shares, dtype=np.float64).reshape(-1)
        if shares.shape != (P,) or not np.all(np.isfinite(shares) & (shares > 0)):
            raise DataError(f"{label}: phase_shares must be {P} finite numbers > 0 (one per phase), got {list(np.atleast_1d(phase_shares))}")
        shares = shares / shares.sum()
    blocks = []
    for p in range(P):
        pc = [phase_cols[p][d] for d in base]
        W = np.stack([numeric_column(df, c, label) for c in pc], axis=1)
        W = _check_rows(W, pc, sum_tol, label, lambda r, p=p: f"row {r}, phase {p}")
        blocks.append(shares[p] * W)
    h = np.concatenate(blocks, axis=1)
    flat = [phase_domain_name(d, ph) for ph in phases for d in base]
    _warn_zero_columns(h, flat, label)
    weight_cols = {c for p in phase_cols.values() for c in p.values()}
    metric_cols = _metric_columns(df, weight_cols, id_columns)
    tnames, Y = _targets(df, metric_cols, targets, objective, objective_name, skipna, label, cols)
    data = from_arrays(
        h, Y, _scale(df, "model_size", model_size, label), _scale(df, "n_tokens", n_tokens, label),
        domains=flat, targets=tnames, split=df["split"].to_numpy() if "split" in cols else None,
        name=label, sum_tol=sum_tol,
    )
    data = dataclasses.replace(data, phases=phases, phase_shares=readonly(shares), base_domains=tuple(base))
    return data if unique_tokens is None else with_unique_tokens(data, unique_tokens)


def load_ratios_metrics(
    ratios,
    metrics,
    *,
    on: str = "run",
    targets=None,
    objective=None,
    objective_name: str = "objective",
    skipna: bool = False,
    unique_tokens=None,
    model_size: float | None = None,
    n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
    name: str | None = None,
    sum_tol: float = MIXTURE_SUM_TOL,
    id_columns: Sequence[str] = DEFAULT_ID_COLUMNS,
) -> MixtureData:
    """Load a ratios file (one row per run: ``on`` and one column per domain, summing to 1) and a metrics file (the
    same runs: ``on`` and one column per metric), joined on ``on``, in the ratios file's row order.

    Domains: the numeric columns of the ratios file other than ``on`` and identifiers (``id_columns``, unnamed
    index columns), or ``domains=``. A run in one file and not the other, or listed twice, is an error naming it.
    Targets and the objective: as in :func:`load_phase_table`."""
    rdf, rlabel = _frame(ratios, name)
    mdf, mlabel = _frame(metrics, None)
    label = name or (rlabel[: -len("_ratios")] if rlabel.endswith("_ratios") else rlabel)
    for df, lab in ((rdf, rlabel), (mdf, mlabel)):
        if on not in df.columns:
            raise DataError(f"{lab}: no {on!r} column to join the ratios and metrics on (columns: {_few(df.columns)})")
        keys = df[on].astype(str)
        dup = keys[keys.duplicated()].unique()
        if len(dup):
            raise DataError(f"{lab}: run(s) listed more than once in column {on!r}: {_few(dup)}")
    rkeys, mkeys = rdf[on].astype(str).tolist(), mdf[on].astype(str).tolist()
    mpos = {k: i for i, k in enumerate(mkeys)}
    only_r = [k for k in rkeys if k not in mpos]
    rset = set(rkeys)
    only_m = [k for k in mkeys if k not in rset]
    if only_r or only_m:
        parts = []
        if only_r:
            parts.append(f"{len(only_r)} run(s) of {rlabel} are not in {mlabel}: {_few(only_r)}")
        if only_m:
            parts.append(f"{len(only_m)} run(s) of {mlabel} are not in {rlabel}: {_few(only_m)}")
        raise DataError(f"{label}: " + "; ".join(parts))
    mdf = mdf.iloc[[mpos[k] for k in rkeys]].reset_index(drop=True)
    rdf = rdf.reset_index(drop=True)
    if domains is not None:
        domains = [str(d) for d in domains]
        missing = [d for d in domains if d not in rdf.columns]
        if missing:
            raise DataError(f"{rlabel}: no ratio column for domain(s) {_few(missing)}")
    else:
        domains = _metric_columns(rdf, {on}, id_columns)
        if not domains:
            raise DataError(f"{rlabel}: no numeric ratio columns (besides {on!r} and identifiers)")
    W = np.stack([numeric_column(rdf, c, rlabel) for c in domains], axis=1)
    keys = rkeys
    h = _check_rows(W, domains, sum_tol, rlabel, lambda r: f"row {r} (run {keys[r]!r})")
    _warn_zero_columns(h, domains, label)
    metric_cols = _metric_columns(mdf, {on}, id_columns)
    tnames, Y = _targets(mdf, metric_cols, targets, objective, objective_name, skipna, mlabel, list(mdf.columns))

    def scale(col, value):
        present = [df for df in (rdf, mdf) if col in df.columns]
        return _scale(present[0], col, value, label) if present else value

    data = from_arrays(
        h, Y, scale("model_size", model_size), scale("n_tokens", n_tokens), domains=domains, targets=tnames,
        name=label, sum_tol=sum_tol,
    )
    return data if unique_tokens is None else with_unique_tokens(data, unique_tokens)


# --------------------------------------------------------------------------- bundled swarms
def _bundled(*parts: str) -> io.StringIO:
    return io.StringIO(importlib.resources.files("mixjax").joinpath("datasets", *parts).read_text())


_OLMIX = {"olmix64": "full_recomputation", "olmix22": "full_reuse_update_5_seed_0"}


def load_swarm(name: str, *, targets=None, objective=None, objective_name: str = "objective", skipna: bool = False,
               phase_shares: Sequence[float] | None = None) -> MixtureData:
    """A bundled swarm table (see ``mixjax/datasets/README.md``):

    * ``marin2phase``: 193 runs of the Marin two-phase swarm, 39 domains x 2 phases with token shares 0.8/0.2
      (``phase_shares=`` to change), 60M non-embedding parameters, 1.2B tokens, unique tokens attached; target
      ``eval/uncheatable_eval/bpb`` unless ``targets``/``objective`` say otherwise.
    * ``olmix64`` (512 runs, 64 domains) and ``olmix22`` (64 runs, 22 domains): Olmix swarms of 30M-parameter
      models at 5x Chinchilla tokens (3e9, taken as 20 tokens per parameter); target the mean of all 110 task BPB
      metrics (``objective``) unless ``targets``/``objective`` say otherwise."""
    kw = dict(objective_name=objective_name, skipna=skipna)
    if name == "marin2phase":
        if targets is None and objective is None:
            targets = "eval/uncheatable_eval/bpb"
        return load_phase_table(
            _bundled("marin_two_phase_60m.csv"), targets=targets, objective=objective,
            phase_shares=(0.8, 0.2) if phase_shares is None else phase_shares,
            unique_tokens=load_unique_tokens(_bundled("marin_unique_tokens.csv")),
            model_size=60e6, n_tokens=1.2e9, name=name, **kw,
        )
    if name in _OLMIX:
        if phase_shares is not None:
            raise DataError(f"{name} has one training phase; phase_shares does not apply")
        if targets is None and objective is None:
            targets, objective = "*", "mean"
        stem = _OLMIX[name]
        with warnings.catch_warnings():  # olmix22's s2pdfv1:adult is 0 in every run (documented in the README)
            warnings.filterwarnings("ignore", message=".*are 0 in every row")
            return load_ratios_metrics(
                _bundled("olmix", f"{stem}_ratios.csv"), _bundled("olmix", f"{stem}_metrics.csv"), targets=targets,
                objective=objective, model_size=30e6, n_tokens=3e9, name=name, **kw,
            )
    raise DataError(f"unknown swarm {name!r}; bundled swarms: marin2phase, {', '.join(_OLMIX)}")


def describe_swarm(data: MixtureData) -> str:
    """One line on a swarm table's domains (used by the command line)."""
    if data.phases is None:
        return f"{data.n_domains} domains"
    shares = "/".join(f"{s:.3g}" for s in np.asarray(data.phase_shares))
    return f"{len(data.base_domains)} domains x {len(data.phases)} phases (token shares {shares}) = {data.n_domains} flattened domains"

