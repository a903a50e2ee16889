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
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise CliError(f"{text!r} must be a positive count")
    return value


def load_data(source: str, targets: list[str] | None = None):
    """A dataset from a CSV path or a bundled name (``mixjax datasets`` lists them)."""
    import os

    from mixjax.data import DataError, list_datasets, load_csv, load_dataset

    try:
        if os.path.exists(source):
            d = load_csv(source)
        elif source in list_datasets():
            d = load_dataset(source)
        else:
            raise CliError(f"{source!r} is neither a CSV file nor a bundled dataset ({', '.join(list_datasets())})")
        return d.select_targets(targets) if targets else d
    except DataError as e:
        raise CliError(str(e)) from None


def select_scale(data, model_size: str | None, tokens: str | None):
    """Rows at the given scale (raw counts or suffixed), or all rows when neither is given."""
    from mixjax.data import DataError

    if model_size is None and tokens is None:
        return data
    try:
        return data.at_scale(
            parse_count(model_size) if model_size is not None else None,
            parse_count(tokens) if tokens is not None else None,
            rtol=1e-3,
        )
    except DataError as e:
        raise CliError(str(e)) from None


def to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return to_jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def print_json(obj: dict) -> None:
    json.dump(to_jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)])
