"""Helpers shared by the sub-commands: reading data, parsing sizes, printing tables and JSON."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import numpy as np


class CliError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """A raw count from ``"122000000"``, ``"1.22e8"``, ``"122M"``, ``"9.998B"`` or ``"1.3T"`` (case-insensitive)."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?\d+)?)\s*([kmbgt]?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise CliError(f"cannot read {text!r} as a count; use e.g. 122M, 1.22e8 or 9.998B")
    try:
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    except ValueError:
        raise CliError(f"cannot read {text!r} as a count; use e.g. 122M, 1.22e8 or 9.998B") from None
    if not math.isfinite(value) or value <= 0:
        raise CliError(f"{text!r} must be a positive count")
    return value


def parse_scale(text: str, kind: str, flag: str) -> float:
    """A raw model size (``kind="model_size"``) or token count (``"n_tokens"``) from the command line: a count as in
    :func:`parse_count`, within the plausible range of :func:`mixjax.units.check_scale` (``122`` is refused as a
    likely ``122M``)."""
    from mixjax.units import ScaleError, check_scale

    value = parse_count(text)
    try:
        check_scale(value, kind, where=flag)
    except ScaleError as e:
        raise CliError(str(e)) from None
    return value


def split_names(values, flag: str) -> list[str] | None:
    """Names from ``--flag a,b,c`` (or ``--flag a b c``): a list without blanks or repeats; None when not given."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values for n in str(v).split(",")]
    if any(not n for n in names) or not names:
        raise CliError(f"{flag} has an empty name in {','.join(map(str, values))!r}; give comma-separated names")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise CliError(f"{flag} names {dups} more than once")
    return names


#: A ``--targets`` entry ``mean:GLOB`` averages the metrics matching GLOB into one target named ``objective``.
MEAN_PREFIX = "mean:"


def target_spec(targets) -> tuple[list[str] | None, str | None]:
    """``--targets`` split into metric names or globs and the objective: ``mean:GLOB`` entries (one or more; every
    entry must be one) select the metrics averaged into the one target ``objective``; otherwise each name is a
    target of its own. Returns ``(names, "mean" or None)``."""
    names = split_names(targets, "--targets")
    if names is None:
        return None, None
    means = [t[len(MEAN_PREFIX) :].strip() for t in names if t.startswith(MEAN_PREFIX)]
    if not means:
        return names, None
    if len(means) != len(names):
        raise CliError("--targets: give either metric names (or globs), each a target, or mean:GLOB entries, averaged "
                       "into one objective; not both")
    if not all(means):
        raise CliError("--targets: mean: needs a metric name or glob after it, e.g. 'mean:*' or 'mean:eval/paloma/*/bpb'")
    return means, "mean"


def load_data(source: str, targets=None, *, domains=None, sum_tol: float | None = None, announce: bool = False,
              metrics=None, phase_shares=None, unique_tokens=None):
    """A dataset from a CSV path or a bundled name (``mixjax datasets`` lists them).

    Layouts: the wide layout (``weight_<domain>`` and ``<target>_loss`` columns); a phase table
    (``phase_<p>_<domain>`` columns, detected by its ``phase_0_`` columns; targets are metric columns by name or
    glob); a ratios file with a ``metrics`` file (CSV, joined on ``run``). For the last two, ``--targets mean:GLOB``
    averages the metrics matching GLOB into one target ``objective`` (see :mod:`mixjax.swarm`).

    ``domains``/``targets``: names (or comma-separated strings) of the weight and loss columns to read, all of which
    must exist; ``sum_tol``: tolerance of mixture sums before renormalizing (default that of :mod:`mixjax.data`).
    ``phase_shares`` (phase tables) and ``unique_tokens`` (swarm layouts) pass to the :mod:`mixjax.swarm` loaders.
    ``announce``: print the domains and targets read to stderr (one line)."""
    import os

    from mixjax.data import MIXTURE_SUM_TOL, DataError, SWARM_BUNDLED, from_dataframe, list_datasets, load_dataset, read_table
    from mixjax.swarm import describe_swarm, is_phase_table, load_phase_table, load_ratios_metrics, load_swarm

    domains = split_names(domains, "--domains")
    names, objective = target_spec(targets)
    tol = MIXTURE_SUM_TOL if sum_tol is None else sum_tol
    if not (math.isfinite(tol) and tol >= 0):
        raise CliError(f"--sum-tol must be a finite number >= 0, got {tol!r}")
    wide_only = "mean:GLOB reads a phase table (phase_<p>_<domain> columns) or a ratios file with --metrics"
    flat = domains is not None and all(re.search(r"@phase_[0-9]+$", x) for x in domains)
    try:
        if metrics is not None:
            if not os.path.isfile(source):
                raise CliError(f"--metrics pairs a ratios CSV file with a metrics CSV file; {source!r} is not a file")
            d = load_ratios_metrics(source, metrics, targets=names, objective=objective, domains=domains, sum_tol=tol,
                                    unique_tokens=unique_tokens)
        elif os.path.exists(source):
            df, header, name = read_table(source)
            if is_phase_table(df.columns):
                d = load_phase_table(df, targets=names, objective=objective, domains=None if flat else domains, name=name,
                                     sum_tol=tol, phase_shares=phase_shares, unique_tokens=unique_tokens)
                if flat:
                    d = d.align(domains, to="--domains")
            elif objective is not None:
                raise CliError(f"{wide_only}; {source} is a wide-layout table")
            else:
                d = from_dataframe(df, name=name, domains=domains, targets=names, sum_tol=tol, header=header)
        elif source in SWARM_BUNDLED:
            d = load_swarm(source, targets=names, objective=objective, phase_shares=phase_shares)
            if domains is not None:
                d = d.align(domains, to="--domains")
        elif source in list_datasets():
            if objective is not None:
                raise CliError(f"{wide_only}; {source} is a wide-layout dataset")
            d = load_dataset(source)
            if domains is not None or names is not None:
                d = from_dataframe(d.to_dataframe(), name=d.name, domains=domains, targets=names, sum_tol=max(tol, 0.01))
        else:
            raise CliError(f"{source!r} is neither a CSV file nor a bundled dataset ({', '.join(list_datasets())})")
    except DataError as e:
        raise CliError(str(e)) from None
    if announce:
        if d.phases is not None or d.n_domains > 20:
            dom = describe_swarm(d)
        else:
            dom = ", ".join(d.domains) if d.n_domains else "none (no weight_<domain> columns: a table without mixtures)"
        tgt = ", ".join(d.targets)
        if objective is not None:
            tgt += f" (the mean of the metrics matching {', '.join(names)})"
        print(f"read {d.n_rows} rows of {d.name}: domains {dom}; targets {tgt}", file=sys.stderr)
    return d


#: Arguments that name files a command writes; every other argument naming an existing file is one of its inputs.
OUTPUT_ARGS = ("output", "out", "save", "plot")


def input_paths(args) -> list[str]:
    """The existing files named by the arguments of a command other than its outputs (``OUTPUT_ARGS``)."""
    import os

    found = []
    for name, value in vars(args).items():
        if name in OUTPUT_ARGS or callable(value):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and os.fspath(v) and os.path.exists(v):
                found.append(os.fspath(v))
    return found


def check_output_path(path, flag: str, suffixes: tuple[str, ...] | None = None, args=None) -> str:
    """Check, before any work, that ``path`` may be written (rules of :mod:`mixjax._paths`: not a directory, a
    device, a FIFO or one of the files the command reads, found in ``args``; its folder exists and is writable).
    Returns the path as a string."""
    import os

    from mixjax._paths import OutputPathError, check_output_target

    if args is not None and isinstance(path, (str, os.PathLike)) and os.fspath(path):
        for name in OUTPUT_ARGS:
            other = getattr(args, name, None)
            if name != flag.lstrip("-") and isinstance(other, (str, os.PathLike)) and os.fspath(other) and (
                    os.path.realpath(other) == os.path.realpath(path)):
                raise CliError(f"{flag} and --{name} name the same file {os.fspath(path)!r}; give each output its own name")
    try:
        return check_output_target(path, inputs=input_paths(args) if args is not None else (), label=flag, suffixes=suffixes)
    except OutputPathError as e:
        raise CliError(str(e)) from None


def write_atomic(path: str, write, args=None, flag: str = "output path") -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path`` (same extension), then move it into place: a
    failure leaves nothing at ``path`` (see :func:`mixjax._paths.atomic_write`)."""
    from mixjax._paths import OutputPathError, atomic_write

    try:
        atomic_write(path, write, inputs=input_paths(args) if args is not None else (), label=flag)
    except OutputPathError as e:
        raise CliError(str(e)) from None


def select_scale(data, model_size: str | None, tokens: str | None):
    """Rows at the given scale (raw counts or suffixed), or all rows when neither is given."""
    from mixjax.data import DataError

    if model_size is None and tokens is None:
        return data
    try:
        return data.at_scale(
            parse_scale(model_size, "model_size", "--model-size") if model_size is not None else None,
            parse_scale(tokens, "n_tokens", "--tokens") if tokens is not None else None,
            rtol=1e-3,
        )
    except DataError as e:
        raise CliError(str(e)) from None


def to_jsonable(x: Any) -> Any:
    """Plain JSON types: numpy arrays and scalars as lists and numbers, non-finite floats as None."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return to_jsonable(np.asarray(x).tolist())
    if isinstance(x, float):
        return float(x) if math.isfinite(x) else None
    return x


def print_json(obj: dict) -> None:
    """One JSON object on stdout: strict JSON (non-finite numbers become null, never NaN or Infinity)."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _at_zero_bound(v: float) -> bool:
    """True for the smallest positive normal float32 or float64: a coefficient at its non-negativity bound, which the
    laws store as log(tiny) (exactly 0 would have no logarithm)."""
    return v > 0 and any(abs(v / float(np.finfo(t).tiny) - 1) < 1e-3 for t in (np.float32, np.float64))


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""

    def fmt(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
        if isinstance(v, float):
            return "0" if _at_zero_bound(v) else f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def progress_bar(label: str, *, main: bool = True, json_mode: bool = False, unit: str = "fits"):
    """A tqdm bar (:class:`mixjax.ProgressBar`) for the ``progress(done, total)`` callback of a long call, or None:
    drawn on process 0 only, when stderr is a terminal, and never with ``--json``."""
    if not main or json_mode:
        return None
    from mixjax.progress import ProgressBar

    return ProgressBar(label, unit=unit)


#: Help of ``--max-steps`` (the defaults of :func:`mixjax.fitting.default_max_steps`, spelled out so that building
#: the parser imports no JAX).
MAX_STEPS_HELP = "solver steps per start of each fit (default: 2000; 8000 for a law with more than 50 parameters, 20000 above 200, 40000 above 1000)"


def add_distributed_options(p) -> None:
    """--coordinator/--num-processes/--process-id: run one command as several processes (``jax.distributed``)."""
    g = p.add_argument_group("several processes", "run the same command in N processes (one per host or per device "
                             "group); they split the batch, every one gets the whole result, only process 0 prints and "
                             "writes files. Default: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; none: one process")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, which every process connects to (e.g. localhost:12355)")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes taking part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 .. N-1 (0 prints and writes)")


def start_distributed(args) -> bool:
    """Start ``jax.distributed`` as the options of :func:`add_distributed_options` (or the environment) ask, first
    thing in a command that fits; returns whether this process is the main one (index 0), the only one that prints
    results and writes files (the others make the same calls and exit 0)."""
    from mixjax import distributed

    try:
        distributed.initialize(getattr(args, "coordinator", None), getattr(args, "num_processes", None), getattr(args, "process_id", None))
    except ValueError as e:
        raise CliError(str(e)) from None
    return distributed.is_main()


def parse_slice_option(text, total: int | None = None, flag: str = "--slice", what: str = "resamples") -> tuple[int, int]:
    """``--slice i/n`` as ``(i, n)``, checked against the number of items when given (``what``: their name)."""
    from mixjax.distributed import check_slice, parse_slice

    try:
        i, n = parse_slice(text)
        check_slice(i, n, total, what)
    except ValueError as e:
        raise CliError(f"{flag}: {e}") from None
    return i, n


def write_json(path: str, obj: dict, args=None, flag: str = "--save") -> None:
    """``obj`` as the JSON :func:`print_json` prints, written to ``path`` through :func:`write_atomic`."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, write, args, flag)


def add_phase_shares_option(p) -> None:
    """--phase-shares: each training phase's share of the tokens, for a phase table whose shares are not given."""
    p.add_argument("--phase-shares", metavar="S0,S1,...", help="each training phase's share of the training tokens, in phase "
                   "order (e.g. 0.8,0.2), for a phase table (phase_<p>_<domain> columns); default: the bundled table's own "
                   "shares, or equal shares with a warning")


def parse_phase_shares(text: str | None) -> list[float] | None:
    """``"0.8,0.2"`` -> ``[0.8, 0.2]`` (finite, > 0, summing to 1 within 1e-6); None -> None."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        vals = [float(t) for t in items]
    except ValueError:
        raise CliError(f"--phase-shares: give comma-separated numbers, one per phase (e.g. 0.8,0.2), got {text!r}") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise CliError(f"--phase-shares: every share must be a finite number > 0, got {text!r}")
    if abs(sum(vals) - 1) > 1e-6:
        raise CliError(f"--phase-shares: the shares sum to {sum(vals):.8g}; expected 1 (each phase's share of the tokens)")
    return vals
