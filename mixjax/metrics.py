"""Fit-quality metrics over measured cells: mean relative error, mean absolute error, root mean squared error.

All take predictions and observations of shape ``(n, V)`` and a boolean mask of measured cells; cells outside the
mask are ignored. MRE is ``mean |pred - obs| / obs`` (a fraction; multiply by 100 for percent).

:func:`cell_report` / :func:`score_fit` say which cells a score counts: cells used by the fit, measured cells it
excluded, and cells whose prediction is not finite (counted, reported as None, never averaged away).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mre", "mae", "rmse", "metric_table", "cell_report", "fit_cells", "score_fit"]


def _prep(pred, obs, mask):
    pred = np.asarray(pred, np.float64)
    obs = np.asarray(obs, np.float64)
    mask = np.isfinite(obs) if mask is None else np.asarray(mask, bool) & np.isfinite(obs)
    if pred.shape != obs.shape:
        raise ValueError(f"pred has shape {pred.shape}, obs has {obs.shape}")
    return pred, np.where(mask, obs, 1.0), mask


def _masked_mean(x, mask, axis=None):
    n = mask.sum(axis=axis)
    s = np.where(mask, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def mre(pred, obs, mask=None, axis=None):
    """Mean relative error ``|pred - obs| / obs`` over measured cells."""
    p, o, m = _prep(pred, obs, mask)
    return _masked_mean(np.abs(p - o) / o, m, axis)


def mae(pred, obs, mask=None, axis=None):
    """Mean absolute error over measured cells."""
    p, o, m = _prep(pred, obs, mask)
    return _masked_mean(np.abs(p - o), m, axis)


def rmse(pred, obs, mask=None, axis=None):
    """Root mean squared error over measured cells."""
    p, o, m = _prep(pred, obs, mask)
    return np.sqrt(_masked_mean((p - o) ** 2, m, axis))


def metric_table(pred, obs, mask, targets) -> dict:
    """Overall and per-target MRE, MAE, RMSE and cell counts, as plain floats (JSON-ready)."""
    pred, obs, mask = np.asarray(pred), np.asarray(obs), np.asarray(mask, bool)
    out = {
        "mre": float(mre(pred, obs, mask)),
        "mae": float(mae(pred, obs, mask)),
        "rmse": float(rmse(pred, obs, mask)),
        "n_cells": int((mask & np.isfinite(obs)).sum()),
        "per_target": {},
    }
    for j, t in enumerate(targets):
        out["per_target"][t] = {
            "mre": float(mre(pred[:, j], obs[:, j], mask[:, j])),
            "mae": float(mae(pred[:, j], obs[:, j], mask[:, j])),
            "rmse": float(rmse(pred[:, j], obs[:, j], mask[:, j])),
            "n_cells": int((mask[:, j] & np.isfinite(obs[:, j])).sum()),
        }
    return out


# --------------------------------------------------------------------------- honest cell accounting
def _mre_or_none(pred, obs, cells) -> float | None:
    """MRE over ``cells``; None when there is no cell, or when a counted cell's prediction is not finite (its error
    is unbounded: reporting the mean of the others would hide it)."""
    if not cells.any() or not np.isfinite(pred[cells]).all():
        return None
    return float(np.mean(np.abs(pred[cells] - obs[cells]) / obs[cells]))


def cell_report(pred, obs, used, targets) -> dict:
    """Which measured cells a score counts, and the scores over them (JSON-ready: ints, floats or None).

    pred, obs: ``(n, V)`` predictions and observed losses (NaN where not measured); used: ``(n, V)`` bool, the
    measured cells the fit counts (for example without the cells of zero-weight domains). Returns::

        {"n_cells_measured", "n_cells_used", "n_cells_excluded",   # measured = used + excluded
         "n_cells_nonfinite",                                      # measured cells whose prediction is NaN/inf
         "mre": MRE over used cells, "mre_all": MRE over every measured cell,
         "per_target": {target: the same keys}}

    MRE is a fraction (``mean |pred - obs| / obs``); it is None (JSON null) where there is no cell or where any of
    its cells has a non-finite prediction, which ``n_cells_nonfinite`` counts: never a NaN, never a silent drop."""
    pred = np.asarray(pred, np.float64)
    obs = np.asarray(obs, np.float64)
    if pred.shape != obs.shape or pred.ndim != 2:
        raise ValueError(f"pred has shape {pred.shape}, obs has {obs.shape}; expected equal (n, V) shapes")
    measured = np.isfinite(obs)
    used = np.asarray(used, bool) & measured
    targets = list(targets)
    if len(targets) != pred.shape[1]:
        raise ValueError(f"{len(targets)} target names for {pred.shape[1]} prediction columns")
    bad = measured & ~np.isfinite(pred)

    def block(sl) -> dict:
        m, u, b = measured[:, sl], used[:, sl], bad[:, sl]
        return {
            "n_cells_measured": int(m.sum()),
            "n_cells_used": int(u.sum()),
            "n_cells_excluded": int((m & ~u).sum()),
            "n_cells_nonfinite": int(b.sum()),
            "mre": _mre_or_none(pred[:, sl], obs[:, sl], u),
            "mre_all": _mre_or_none(pred[:, sl], obs[:, sl], m),
        }

    out = block(slice(None))
    out["per_target"] = {t: block(slice(j, j + 1)) for j, t in enumerate(targets)}
    return out


def fit_cells(fit, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions of a :class:`mixjax.Fit` on ``data`` and the cells they are scored on.

    Returns ``(pred, obs, used)``, each ``(n, V)`` in the fit's target order (``fit.record.targets``): predictions
    from ``fit.predict(data)``, the observed loss of the same-named target of ``data`` (NaN where the data has no
    such column or the cell is missing), and the measured cells the fit counts (cells of a domain whose own weight
    is 0 are left out for per-domain laws fitted with ``mask_zero_weight``)."""
    targets = list(fit.record.targets)
    want = list(fit.record.domains)
    data = data.align(want, to=f"the fit of {fit.record.law}")  # mixtures matched to the fit's domains by name
    pred = np.asarray(fit.predict(data), np.float64)
    obs = np.full((data.n_rows, len(targets)), np.nan)
    for j, t in enumerate(targets):
        if t in data.targets:
            obs[:, j] = data.losses[:, data.targets.index(t)]
    used = np.isfinite(obs)
    per_domain = bool(getattr(type(fit.law), "per_domain", False))
    if per_domain and fit.record.mask_zero_weight and data.n_domains:
        for j, t in enumerate(targets):
            if t in data.domains:
                used[:, j] &= data.mixtures[:, data.domains.index(t)] > 0
    if pred.shape != obs.shape:
        raise ValueError(f"the fit predicts {pred.shape[1:]} targets per row, expected {len(targets)} ({targets})")
    return pred, obs, used


def score_fit(fit, data) -> dict:
    """:func:`cell_report` of a fit on a dataset (see :func:`fit_cells`): counted and all-cell MRE with counts."""
    pred, obs, used = fit_cells(fit, data)
    return cell_report(pred, obs, used, fit.record.targets)
