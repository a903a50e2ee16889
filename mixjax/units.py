"""The one place that knows the laws' units.

Data, the command line and saved results use raw counts: parameters (1.22e8) and tokens (9.998e9). Laws see model
size in **millions of parameters** and tokens in **billions of tokens** (the seed paper's units), which keeps their
fitted coefficients near 1. Convert only through these functions.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

__all__ = ["Scale", "scale_arguments", "law_scale", "MODEL_SIZE_UNIT", "TOKENS_UNIT", "model_size_to_law", "tokens_to_law", "model_size_from_law", "tokens_from_law", "ScaleError",
           "ScaleExtrapolationWarning", "check_scale", "extrapolation", "extrapolation_message", "PLAUSIBLE_MODEL_SIZE", "PLAUSIBLE_TOKENS"]

MODEL_SIZE_UNIT = 1e6  #: parameters per law unit of model size (millions)
TOKENS_UNIT = 1e9  #: tokens per law unit of data (billions)


def model_size_to_law(raw):
    """Parameters -> millions of parameters (arrays or scalars)."""
    return np.asarray(raw, dtype=np.float64) / MODEL_SIZE_UNIT


def tokens_to_law(raw):
    """Tokens -> billions of tokens (arrays or scalars)."""
    return np.asarray(raw, dtype=np.float64) / TOKENS_UNIT


def model_size_from_law(value):
    """Millions of parameters -> parameters."""
    return np.asarray(value, dtype=np.float64) * MODEL_SIZE_UNIT


def tokens_from_law(value):
    """Billions of tokens -> tokens."""
    return np.asarray(value, dtype=np.float64) * TOKENS_UNIT


# --------------------------------------------------------------------------- plausibility
#: Raw model sizes (parameters) and token counts that a language-model run can have. A value outside is almost always
#: a unit slip: millions written where raw counts are expected (122 for 1.22e8), or raw counts passed where the laws
#: take millions / billions (1.3e9 as model_size).
PLAUSIBLE_MODEL_SIZE = (1e4, 1e14)
PLAUSIBLE_TOKENS = (1e5, 1e16)
#: A scale this many times beyond the fitted range (either way) is far extrapolation: warned, and flagged in JSON.
FAR_EXTRAPOLATION = 100.0

_KINDS = {
    "model_size": (PLAUSIBLE_MODEL_SIZE, MODEL_SIZE_UNIT, "parameters", "millions of parameters", "M", "122M or 1.22e8"),
    "n_tokens": (PLAUSIBLE_TOKENS, TOKENS_UNIT, "tokens", "billions of tokens", "B", "9.998B or 9.998e9"),
}


class ScaleError(ValueError):
    """A model size or token count outside what a language-model run can have (a unit slip, usually)."""


class ScaleExtrapolationWarning(UserWarning):
    """A prediction or an optimum asked for far outside the model sizes or token counts the law was fitted on."""


def check_scale(values, kind: str, *, units: str = "raw", where: str = "") -> None:
    """Raise :class:`ScaleError` when a finite value of ``values`` lies outside the plausible range of ``kind``
    (``"model_size"`` or ``"n_tokens"``), given in ``units`` ``"raw"`` (counts) or ``"law"`` (millions of parameters /
    billions of tokens). NaN (unknown) passes. ``where`` names the argument or column in the message."""
    (lo, hi), unit, noun, law_noun, suffix, example = _KINDS[kind]
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    raw = v * unit if units == "law" else v
    ok = ~np.isfinite(raw) | ((raw >= lo) & (raw <= hi))
    if ok.all():
        return
    i = int(np.flatnonzero(~ok)[0])
    at = f" (row {i})" if v.size > 1 else ""
    label = where or kind
    rng = f"range ({lo:.0e} to {hi:.0e} {noun})"
    if units == "law":
        if raw[i] > hi:
            raise ScaleError(
                f"{label}={v[i]:.6g}{at} is in {law_noun}, so {raw[i]:.3g} {noun}: outside the plausible {rng}. Laws take "
                f"{law_noun}: a raw count of {v[i]:.6g} {noun} is {v[i] / unit:.6g} here (or pass raw_{kind}=)"
            )
        raise ScaleError(f"{label}={v[i]:.6g}{at} is in {law_noun}, so {raw[i]:.3g} {noun}: outside the plausible {rng}")
    others = raw[np.isfinite(raw) & ok]
    mixed = f"; other rows hold values up to {others.max():.4g}: the column mixes units" if others.size and raw[i] < lo else ""
    if raw[i] < lo:
        raise ScaleError(
            f"{label}{at} is {v[i]:.6g} {noun}, below the plausible {rng}: it looks like {law_noun}{mixed}. {kind} holds "
            f"raw counts: write {example} ({v[i]:.6g}{suffix} is {v[i] * unit:.4g})"
        )
    raise ScaleError(f"{label}{at} is {v[i]:.6g} {noun}, above the plausible {rng}")


def extrapolation(value_raw: float, fitted_raw, kind: str) -> dict:
    """How far a raw ``value_raw`` lies from the fitted raw values ``fitted_raw`` (NaN ignored): ``{"value",
    "fitted_min", "fitted_max", "factor", "far"}``, ``factor`` = value / fitted max (>= 1 above), fitted min /
    value (below), 1 inside; ``far`` when it exceeds :data:`FAR_EXTRAPOLATION`. Empty fitted values give NaN bounds."""
    f = np.asarray(fitted_raw, dtype=np.float64).reshape(-1)
    f = f[np.isfinite(f)]
    v = float(value_raw)
    if not f.size or not np.isfinite(v):
        return {"value": v, "fitted_min": None, "fitted_max": None, "factor": None, "far": False}
    lo, hi = float(f.min()), float(f.max())
    factor = v / hi if v > hi else (lo / v if v < lo else 1.0)
    return {"value": v, "fitted_min": lo, "fitted_max": hi, "factor": factor, "far": bool(factor > FAR_EXTRAPOLATION)}


def extrapolation_message(report: dict, kind: str) -> str | None:
    """One line for a far extrapolation of :func:`extrapolation`, else None."""
    if not report.get("far"):
        return None
    noun = _KINDS[kind][2]
    side = "above the largest" if report["value"] > report["fitted_max"] else "below the smallest"
    return (f"{kind} {report['value']:.4g} {noun} is {report['factor']:.3g}x {side} fitted value "
            f"({report['fitted_min']:.4g}-{report['fitted_max']:.4g}); a law fitted there may not hold this far out")


# --------------------------------------------------------------------------- a scale that knows its units
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def _count(value, kind: str) -> float:
    """A raw count from a number or a string with a suffix (``"1.3B"``, ``"122M"``, ``"30e9"``)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?\d+)?)\s*([kmbgt]?)\s*", value, re.IGNORECASE)
        if not m:
            raise ValueError(f"{kind}: cannot read {value!r} as a count; use e.g. 122M, 1.22e8 or 9.998B")
        value = float(m.group(1)) * _SUFFIXES[m.group(2).lower()]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{kind} must be a number or a string such as '1.3B', got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{kind} must be a positive finite count, got {value!r}")
    check_scale(value, kind)
    return value


@dataclasses.dataclass(frozen=True)
class Scale:
    """A training scale that knows its units: ``model_size`` in parameters and ``n_tokens`` in tokens, raw counts
    (numbers, or strings with a suffix: ``Scale("1.3B", "30B")``). Either may be None for a law that does not use it.

    Laws work in millions of parameters and billions of tokens: :meth:`from_law_units` builds a scale from those, and
    :attr:`law_model_size` / :attr:`law_n_tokens` give them back. Pass a scale as ``scale=`` to
    :func:`mixjax.optimize_mixture`, :func:`mixjax.optimize_mixture_ensemble` and :func:`mixjax.suggest`, instead
    of ``model_size``/``n_tokens`` (law units) or ``raw_model_size``/``raw_n_tokens`` (counts). A value outside
    what a language-model run can have (a unit slip, 1300 for 1.3B) is a :class:`ScaleError`."""

    model_size: float | None = None
    n_tokens: float | None = None

    def __post_init__(self):
        for kind in ("model_size", "n_tokens"):
            value = getattr(self, kind)
            if value is not None:
                object.__setattr__(self, kind, _count(value, kind))

    @classmethod
    def from_law_units(cls, model_size: float | None = None, n_tokens: float | None = None) -> Scale:
        """A scale from millions of parameters and billions of tokens (the laws' units)."""
        return cls(None if model_size is None else float(model_size_from_law(model_size)),
                   None if n_tokens is None else float(tokens_from_law(n_tokens)))

    @property
    def law_model_size(self) -> float | None:
        """The model size in millions of parameters."""
        return None if self.model_size is None else float(model_size_to_law(self.model_size))

    @property
    def law_n_tokens(self) -> float | None:
        """The token count in billions of tokens."""
        return None if self.n_tokens is None else float(tokens_to_law(self.n_tokens))

    def __str__(self) -> str:
        parts = []
        if self.model_size is not None:
            parts.append(f"{self.model_size:.4g} parameters")
        if self.n_tokens is not None:
            parts.append(f"{self.n_tokens:.4g} tokens")
        return ", ".join(parts) or "no scale"


def scale_arguments(scale, model_size, n_tokens, raw_model_size, raw_n_tokens):
    """``(model_size, n_tokens, raw_model_size, raw_n_tokens)`` of an entry point given a :class:`Scale` as
    ``scale`` (its raw counts), or the arguments unchanged without one; a ValueError when both are given."""
    if scale is None:
        return model_size, n_tokens, raw_model_size, raw_n_tokens
    if not isinstance(scale, Scale):
        raise TypeError(f"scale must be a mixjax.Scale, got {type(scale).__name__}")
    given = [k for k, v in (("model_size", model_size), ("n_tokens", n_tokens), ("raw_model_size", raw_model_size),
                            ("raw_n_tokens", raw_n_tokens)) if v is not None]
    if given:
        raise ValueError(f"give scale= or {'/'.join(given)}, not both")
    return None, None, scale.model_size, scale.n_tokens


def law_scale(model_size, n_tokens, raw_model_size, raw_n_tokens):
    """``(model_size, n_tokens)`` in the laws' units (millions of parameters, billions of tokens; None where not
    given) from an entry point's law-unit and raw-count arguments; a ValueError when both forms of one are given."""
    if raw_model_size is not None:
        if model_size is not None:
            raise ValueError("give model_size (millions of parameters) or raw_model_size (parameters), not both")
        model_size = float(model_size_to_law(raw_model_size))
    if raw_n_tokens is not None:
        if n_tokens is not None:
            raise ValueError("give n_tokens (billions of tokens) or raw_n_tokens (tokens), not both")
        n_tokens = float(tokens_to_law(raw_n_tokens))
    return model_size, n_tokens
