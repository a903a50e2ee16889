"""Fit-quality metrics over measured cells: mean relative error, mean absolute error, root mean squared error.

All take predictions and observations of shape ``(n, V)`` and a boolean mask of measured cells; cells outside the
mask are ignored. MRE is ``mean |pred - obs| / obs`` (a fraction; multiply by 100 for percent).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mre", "mae", "rmse", "metric_table"]


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
