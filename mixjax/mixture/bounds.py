"""Per-domain floors and ceilings of a mixture search, checked for feasibility.

``lo_i <= h_i <= hi_i`` with the user's floors and ceilings (weights in [0, 1]) and data availability: a domain with
U_i unique tokens repeated at most E_i times (``max_epochs``) in D training tokens gives the ceiling
``h_i <= E_i U_i / D`` (U_i and D in the same units). The set ``{h : sum_i h_i = 1, lo <= h <= hi}`` is non-empty
exactly when ``lo <= hi`` and ``sum lo <= 1 <= sum hi``; otherwise :class:`InfeasibleMixtureError` names the domains
at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["InfeasibleMixtureError", "mixture_bounds"]


class InfeasibleMixtureError(ValueError):
    """The floors and ceilings admit no mixture (the message names the domains at fault)."""


def per_domain_vector(value, K: int, domains: Sequence[str], label: str, default: float) -> np.ndarray:
    """A per-domain vector from None, a number, a length-K sequence, or a ``{domain: value}`` mapping."""
    if value is None:
        return np.full(K, default)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in domains]
        if unknown:
            raise ValueError(f"{label}: unknown domain(s) {unknown}; domains are {list(domains)}")
        out = np.full(K, default)
        for k, v in value.items():
            out[list(domains).index(k)] = float(v)
    else:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out = np.full(K, float(arr))
        elif arr.shape == (K,):
            out = arr.copy()
        else:
            raise ValueError(f"{label} has shape {arr.shape}; expected a number, {K} values or a {{domain: value}} mapping")
    bad = np.flatnonzero(~np.isfinite(out) & ~(out == np.inf))
    if bad.size:
        raise ValueError(f"{label} for domain {domains[bad[0]]!r} is {out[bad[0]]!r}; expected a finite number")
    return out


def mixture_bounds(
    n_domains: int,
    *,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain bounds ``(lo, hi)`` of the feasible set, checked for feasibility.

    floors / ceilings: a number (every domain), K numbers, or ``{domain: value}``; weights in [0, 1].
    unique_tokens: U_i per domain (same form; in the units of ``n_tokens``), with ``max_epochs`` E (default 1):
    adds the ceiling ``h_i <= E U_i / n_tokens``. Raises :class:`InfeasibleMixtureError` naming the domains when
    a floor exceeds its ceiling, the floors sum above 1, or the ceilings sum below 1."""
    K = int(n_domains)
    names = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(names) != K:
        raise ValueError(f"{len(names)} domain names for {K} domains")
    lo = per_domain_vector(floors, K, names, "floors", 0.0)
    hi = per_domain_vector(ceilings, K, names, "ceilings", 1.0)
    for arr, label in ((lo, "floor"), (hi, "ceiling")):
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise ValueError(f"{label} of domain {names[neg[0]]!r} is {arr[neg[0]]!r}; mixture weights are >= 0")
    big = np.flatnonzero(lo > 1)
    if big.size:
        raise InfeasibleMixtureError(f"floor of domain {names[big[0]]!r} is {lo[big[0]]!r} > 1")
    hi = np.minimum(hi, 1.0)
    avail = np.full(K, np.inf)
    if unique_tokens is not None:
        if n_tokens is None or not (math.isfinite(n_tokens) and n_tokens > 0):
            raise ValueError(f"unique_tokens needs the training token count n_tokens > 0, got {n_tokens!r}")
        U = per_domain_vector(unique_tokens, K, names, "unique_tokens", np.inf)
        if (U < 0).any():
            i = int(np.flatnonzero(U < 0)[0])
            raise ValueError(f"unique_tokens of domain {names[i]!r} is {U[i]!r}; expected >= 0")
        E = 1.0 if max_epochs is None else per_domain_vector(max_epochs, K, names, "max_epochs", 1.0)
        if np.any(np.asarray(E) <= 0):
            raise ValueError(f"max_epochs must be > 0, got {max_epochs!r}")
        avail = np.asarray(E) * U / float(n_tokens)
        hi = np.minimum(hi, avail)
    elif max_epochs is not None:
        raise ValueError("max_epochs needs unique_tokens (the unique tokens available per domain)")
    bad = np.flatnonzero(lo > hi * (1 + 1e-12) + 1e-15)
    if bad.size:
        desc = ", ".join(
            f"{names[i]} (floor {lo[i]:.6g} > ceiling {hi[i]:.6g}{' from data availability' if avail[i] <= hi[i] else ''})" for i in bad
        )
        raise InfeasibleMixtureError(f"floor above ceiling for domain(s): {desc}")
    hi = np.maximum(hi, lo)
    if lo.sum() > 1 + 1e-12:
        pos = [f"{names[i]}={lo[i]:.4g}" for i in np.flatnonzero(lo > 0)]
        raise InfeasibleMixtureError(f"floors sum to {lo.sum():.6g} > 1: {', '.join(pos)}")
    if hi.sum() < 1 - 1e-12:
        caps = [f"{names[i]}={hi[i]:.4g}{' (data availability)' if avail[i] <= hi[i] else ''}" for i in range(K)]
        raise InfeasibleMixtureError(f"ceilings sum to {hi.sum():.6g} < 1, no mixture fits: {', '.join(caps)}")
    return lo, hi
