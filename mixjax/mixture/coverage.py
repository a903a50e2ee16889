"""Where an optimal mixture lies relative to the measured mixtures, and when it is an extrapolation.

Given the measured mixtures (``measured=``: an (n, K) array or a dataset), :func:`measured_coverage` reports per
domain the measured range [min, max] and how far the mixture lies outside it (0 inside); the total-variation
distance ``TV(h, m) = 0.5 sum_i |h_i - m_i|`` (half the L1 distance, in [0, 1]) to the nearest measured mixture;
and, as a yardstick, the median over the distinct measured mixtures of the TV distance to their nearest other
measured mixture (the typical spacing of the design). The mixture is an **extrapolation** (and an
:class:`ExtrapolationWarning` is issued) when some domain lies more than :data:`EXTRAPOLATION_MARGIN` (0.02) outside
its measured range, or the nearest measured mixture is more than :data:`EXTRAPOLATION_SPACING_FACTOR` (2) times the
typical spacing away. ``within_measured=True`` intersects the floors and ceilings with the measured per-domain
ranges, so that no domain leaves its measured range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .bounds import InfeasibleMixtureError, mixture_bounds

__all__ = ["MeasuredCoverage", "measured_coverage", "measured_mixtures", "ExtrapolationWarning", "EXTRAPOLATION_MARGIN",
           "EXTRAPOLATION_SPACING_FACTOR"]


#: An optimum more than this far (absolute weight) outside a domain's measured [min, max] is an extrapolation.
EXTRAPOLATION_MARGIN = 0.02
#: An optimum whose nearest measured mixture is farther than this many typical spacings is an extrapolation.
EXTRAPOLATION_SPACING_FACTOR = 2.0


class ExtrapolationWarning(UserWarning):
    """The optimal mixture lies outside the measured mixtures (the threshold: :mod:`mixjax.mixture.coverage`)."""


def measured_mixtures(measured, n_domains: int | None = None) -> np.ndarray:
    """The distinct measured mixtures (m, K) from an (n, K) array, a :class:`mixjax.MixtureData` (its
    ``mixtures``), or an object carrying one as ``.data``. Rows that agree to 1e-9 count once (the same mixture
    at several scales or checkpoints is one design point)."""
    if hasattr(measured, "mixtures"):
        src = measured.mixtures
    elif hasattr(getattr(measured, "data", None), "mixtures"):
        src = measured.data.mixtures
    else:
        src = measured
    H = np.asarray(src, dtype=np.float64)
    if H.ndim == 1 and n_domains is not None and H.size == n_domains:
        H = H[None]
    if H.ndim != 2 or H.shape[0] < 1:
        raise ValueError(f"measured mixtures must be an (n, K) array with n >= 1, got shape {H.shape}")
    if n_domains is not None and H.shape[1] != n_domains:
        raise ValueError(f"measured mixtures have {H.shape[1]} domains; the law has {n_domains}")
    if not np.isfinite(H).all():
        raise ValueError("measured mixtures must be finite")
    _, first = np.unique(np.round(H, 9), axis=0, return_index=True)
    return H[np.sort(first)]


def tv_distances(points: np.ndarray, H: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(p, m) total-variation distances 0.5 * sum |a - b|, computed in chunks of ``points``."""
    out = np.empty((points.shape[0], H.shape[0]))
    for i in range(0, points.shape[0], chunk):
        out[i : i + chunk] = 0.5 * np.abs(points[i : i + chunk, None, :] - H[None]).sum(-1)
    return out


def measured_spacing(H: np.ndarray) -> float:
    """Median over the distinct measured mixtures of the TV distance to the nearest other one (NaN if m < 2)."""
    if H.shape[0] < 2:
        return math.nan
    d = tv_distances(H, H)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


@dataclasses.dataclass(frozen=True)
class MeasuredCoverage:
    """Where a mixture lies relative to the measured mixtures (distances are total variation, half the L1).

    ``low`` / ``high`` (K,): each domain's measured range; ``outside`` (K,): how far the mixture lies outside it
    (0 inside); ``nearest_distance``: TV distance to the nearest measured mixture ``nearest``; ``typical_spacing``:
    median nearest-neighbour TV distance among the ``n_measured`` distinct measured mixtures (NaN with one);
    ``extrapolation``: the module docstring's rule, with the reasons that fired in ``reasons``."""

    low: np.ndarray
    high: np.ndarray
    outside: np.ndarray
    nearest_distance: float
    nearest: np.ndarray
    typical_spacing: float
    n_measured: int
    extrapolation: bool
    reasons: tuple[str, ...]

    def as_dict(self, domains: Sequence[str]) -> dict[str, Any]:
        return {
            "measured_range": {d: [float(a), float(b)] for d, a, b in zip(domains, self.low, self.high)},
            "outside_range": {d: float(x) for d, x in zip(domains, self.outside)},
            "nearest_measured_distance": float(self.nearest_distance),
            "typical_measured_spacing": None if math.isnan(self.typical_spacing) else float(self.typical_spacing),
            "n_measured_mixtures": int(self.n_measured),
            "distance": "total variation (half the L1 distance)",
            "extrapolation": bool(self.extrapolation),
            "extrapolation_reasons": list(self.reasons),
        }


def measured_coverage(mixture, measured, *, domains: Sequence[str] | None = None, margin: float = EXTRAPOLATION_MARGIN,
                      spacing_factor: float = EXTRAPOLATION_SPACING_FACTOR, typical_spacing: float | None = None) -> MeasuredCoverage:
    """Where ``mixture`` (K,) lies relative to the ``measured`` mixtures (see :func:`measured_mixtures` for the
    forms accepted): measured ranges, distance outside them, nearest measured mixture (TV distance), the design's
    typical spacing, and whether this is an extrapolation (some domain more than ``margin`` outside its range, or
    the nearest measured mixture farther than ``spacing_factor`` typical spacings). ``typical_spacing``: a
    precomputed spacing of the same measured mixtures (to skip the O(n^2) computation in loops)."""
    h = np.asarray(mixture, np.float64).reshape(-1)
    K = h.size
    names = list(domains) if domains is not None else [f"domain{i}" for i in range(K)]
    H = measured_mixtures(measured, K)
    low, high = H.min(axis=0), H.max(axis=0)
    outside = np.maximum(np.maximum(low - h, h - high), 0.0)
    d = tv_distances(h[None], H)[0]
    j = int(np.argmin(d))
    spacing = measured_spacing(H) if typical_spacing is None else float(typical_spacing)
    reasons = []
    far = np.flatnonzero(outside > margin)
    if far.size:
        reasons.append("outside the measured range by more than {:g}: ".format(margin) + ", ".join(
            f"{names[i]} = {h[i]:.4g} (measured {low[i]:.4g} to {high[i]:.4g})" for i in far))
    if np.isfinite(spacing) and d[j] > spacing_factor * spacing:
        reasons.append(f"nearest measured mixture at TV distance {d[j]:.3g}, more than {spacing_factor:g} x the typical "
                       f"spacing {spacing:.3g} of the {H.shape[0]} measured mixtures")
    return MeasuredCoverage(low=low, high=high, outside=outside, nearest_distance=float(d[j]), nearest=H[j],
                            typical_spacing=spacing, n_measured=int(H.shape[0]), extrapolation=bool(reasons),
                            reasons=tuple(reasons))


def measured_of(obj):
    """Measured mixtures carried by a law container (a dataset as ``.data``, or a bootstrap's training arrays), or
    None."""
    data = getattr(obj, "data", None)
    if data is not None and hasattr(data, "mixtures"):
        return data.mixtures
    arrays = getattr(obj, "training_arrays", None)
    h = getattr(arrays, "h", None)
    return None if h is None else np.asarray(h)


def within_measured_bounds(lo, hi, H, domains):
    """Floors/ceilings intersected with the measured per-domain ranges; InfeasibleMixtureError if empty."""
    mlo, mhi = H.min(axis=0), H.max(axis=0)
    lo2, hi2 = np.maximum(lo, mlo), np.minimum(hi, mhi)
    try:
        return mixture_bounds(len(domains), floors=lo2, ceilings=hi2, domains=domains)
    except InfeasibleMixtureError as e:
        ranges = ", ".join(f"{d} [{a:.4g}, {b:.4g}]" for d, a, b in zip(domains, mlo, mhi))
        raise InfeasibleMixtureError(
            f"within_measured: the floors and ceilings leave no mixture inside the measured ranges ({ranges}): {e}") from None
