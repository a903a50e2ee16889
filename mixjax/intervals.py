"""Interval maths shared by mixjax: percentile and BCa intervals over resampled values (pure numpy).

Every interval in mixjax (bootstrap parameters and predictions, optimal-mixture ensembles, ensemble predictions on
the command line) is computed here, with one default level, :data:`DEFAULT_LEVEL` = 0.9 (a 90 % interval).

Conventions:

* ``values`` holds resampled values with the resample axis first: shape ``(R, ...)``; intervals have the trailing
  shape ``(...)``.
* Non-finite values (NaN, +-inf) are left out **per element**: each element's interval uses the finite values of
  that element only; an element with no finite value gets a NaN interval. Callers that want to report how many
  values were dropped count ``numpy.isfinite(values).sum(0)`` themselves.
* Quantiles interpolate linearly between order statistics at position ``(m - 1) q`` among the ``m`` finite
  sorted values: the default (``"linear"``, Hyndman-Fan type 7) method of :func:`numpy.quantile`.

Percentile interval at level ``c``: quantiles ``(1 - c)/2`` and ``(1 + c)/2`` of the values.

BCa interval (Efron & Tibshirani 1993, sections 14.3 and 22.4): with ``alpha = (1 - c)/2``, bias correction
``z0 = Phi^-1(P)`` where ``P`` is the fraction of values below the estimate (ties count one half; clipped to
``[1/(2m), 1 - 1/(2m)]`` so that ``z0`` stays finite), acceleration from the jackknife values ``t_(j)`` with mean
``t_(.)``::

    a = sum_j (t_(.) - t_(j))^3 / (6 [sum_j (t_(.) - t_(j))^2]^(3/2))     (0 when all t_(j) are equal)

and quantile levels ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(alpha)`` and ``Phi^-1(1 - alpha)``
(level 0 or 1 when the denominator is not positive). Elements whose estimate is not finite fall back to the
percentile levels.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = [
    "DEFAULT_LEVEL",
    "METHODS",
    "check_level",
    "norm_cdf",
    "norm_ppf",
    "quantile",
    "percentile_interval",
    "bca_levels",
    "bca_interval",
    "interval",
]

#: The one default interval level of mixjax (a 90 % two-sided interval).
DEFAULT_LEVEL = 0.9

#: Interval methods understood by :func:`interval`.
METHODS = ("percentile", "bca")

_STD_NORMAL = statistics.NormalDist()


def check_level(level) -> float:
    """``level`` as a float, or ValueError unless it is a number strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    return float(level)


def norm_cdf(x) -> np.ndarray:
    """Standard normal CDF Phi(x), elementwise (float64; ``0.5 erfc(-x / sqrt 2)``, accurate in both tails)."""
    x = np.asarray(x, np.float64)
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), otypes=[np.float64])(x)


def norm_ppf(p) -> np.ndarray:
    """Standard normal quantile Phi^-1(p), elementwise, for p in (0, 1); -inf at 0, +inf at 1, NaN outside.

    Uses Wichura's AS241 algorithm (via :class:`statistics.NormalDist`), accurate to about 1e-16 relative."""
    p = np.asarray(p, np.float64)

    def one(v):
        if v == 0.0:
            return -math.inf
        if v == 1.0:
            return math.inf
        if not 0.0 < v < 1.0:
            return math.nan
        return _STD_NORMAL.inv_cdf(v)

    return np.vectorize(one, otypes=[np.float64])(p)


def _sorted_finite(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort along axis 0 with non-finite values moved to the end (as NaN); and the finite count per element."""
    v = np.where(np.isfinite(values), values, np.nan)
    return np.sort(v, axis=0), np.isfinite(v).sum(axis=0)


def _quantile_sorted(sorted_v: np.ndarray, count: np.ndarray, q) -> np.ndarray:
    """Quantile ``q`` (a number or one per element) of the first ``count`` sorted values of each element."""
    q = np.broadcast_to(np.asarray(q, np.float64), count.shape)
    pos = np.clip(q, 0.0, 1.0) * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    frac = pos - lo
    a = np.take_along_axis(sorted_v, lo[None], axis=0)[0]
    b = np.take_along_axis(sorted_v, hi[None], axis=0)[0]
    out = np.where(frac > 0, a + frac * (b - a), a)
    return np.where(count > 0, out, np.nan)


def _as_values(values) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if v.ndim == 0 or v.shape[0] == 0:
        raise ValueError(f"values must have a leading resample axis with at least one entry, got shape {v.shape}")
    return v


def quantile(values, q) -> np.ndarray:
    """Quantile ``q`` in [0, 1] over axis 0 of ``values`` (R, ...), ignoring non-finite values per element.

    ``q`` is one number or an array of the trailing shape (one level per element). With all values finite this is
    ``numpy.quantile(values, q, axis=0)`` (linear interpolation)."""
    sv, count = _sorted_finite(_as_values(values))
    return _quantile_sorted(sv, count, q)


def percentile_interval(values, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``(lo, hi)``: quantiles ``(1 - level)/2`` and ``(1 + level)/2`` over axis 0 of
    ``values`` (R, ...), non-finite values left out per element. Returns two arrays of the trailing shape."""
    level = check_level(level)
    sv, count = _sorted_finite(_as_values(values))
    alpha = (1.0 - level) / 2.0
    return _quantile_sorted(sv, count, alpha), _quantile_sorted(sv, count, 1.0 - alpha)


def bca_levels(values, estimate, jackknife_values, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The BCa-adjusted quantile levels ``(q_lo, q_hi)`` (module docstring), per element.

    values: (R, ...) resampled values; estimate: (...) the full-data estimate; jackknife_values: (U, ...)
    leave-one-unit-out estimates (non-finite ones are left out per element)."""
    level = check_level(level)
    boot = _as_values(values)
    est = np.broadcast_to(np.asarray(estimate, np.float64), boot.shape[1:])
    jack = np.asarray(jackknife_values, np.float64)
    if jack.ndim == 0 or jack.shape[1:] != boot.shape[1:]:
        raise ValueError(f"jackknife_values has shape {jack.shape}; expected (U,) + {boot.shape[1:]}")
    alpha = (1.0 - level) / 2.0
    finite = np.isfinite(boot)
    m = np.maximum(finite.sum(0), 1)
    below = (np.where(finite, boot < est, False).sum(0) + 0.5 * np.where(finite, boot == est, False).sum(0)) / m
    below = np.clip(below, 0.5 / m, 1.0 - 0.5 / m)
    z0 = norm_ppf(below)
    jok = np.isfinite(jack)
    nj = np.maximum(jok.sum(0), 1)
    d = np.where(jok, jack.sum(0, where=jok) / nj - jack, 0.0)
    s2 = (d**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        acc = np.where(s2 > 0, (d**3).sum(0) / (6.0 * np.maximum(s2, 1e-300) ** 1.5), 0.0)

    def adjust(z):
        num = z0 + z
        den = 1.0 - acc * num
        safe = np.where(den > 0, den, 1.0)
        return np.where(den > 0, norm_cdf(z0 + num / safe), np.where(num > 0, 1.0, 0.0))

    q_lo, q_hi = adjust(float(norm_ppf(alpha))), adjust(float(norm_ppf(1.0 - alpha)))
    ok = np.isfinite(est)
    return np.where(ok, q_lo, alpha), np.where(ok, q_hi, 1.0 - alpha)


def bca_interval(values, estimate, jackknife_values, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated interval ``(lo, hi)`` (module docstring) over axis 0 of ``values`` (R, ...),
    given the full-data ``estimate`` (...) and the jackknife values (U, ...)."""
    q_lo, q_hi = bca_levels(values, estimate, jackknife_values, level)
    sv, count = _sorted_finite(_as_values(values))
    return _quantile_sorted(sv, count, q_lo), _quantile_sorted(sv, count, q_hi)


def interval(values, level: float = DEFAULT_LEVEL, method: str = "percentile", estimate=None, jackknife_values=None) -> tuple[np.ndarray, np.ndarray]:
    """``percentile_interval`` or ``bca_interval`` by name (``method`` in :data:`METHODS`); BCa needs
    ``estimate`` and ``jackknife_values``."""
    if method == "percentile":
        return percentile_interval(values, level)
    if method == "bca":
        if estimate is None or jackknife_values is None:
            raise ValueError("method='bca' needs the full-data estimate and the jackknife values")
        return bca_interval(values, estimate, jackknife_values, level)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
