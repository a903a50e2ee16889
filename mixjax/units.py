"""The one place that knows the laws' units.

Data, the command line and saved results use raw counts: parameters (1.22e8) and tokens (9.998e9). Laws see model
size in **millions of parameters** and tokens in **billions of tokens** (the seed paper's units), which keeps their
fitted coefficients near 1. Convert only through these functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MODEL_SIZE_UNIT", "TOKENS_UNIT", "model_size_to_law", "tokens_to_law", "model_size_from_law", "tokens_from_law", "ScaleError",
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
