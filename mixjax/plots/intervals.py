"""Plots of bootstrap intervals: parameters with their intervals, and predicted versus observed losses with
interval bars (from a :class:`mixjax.BootstrapResult`)."""

from __future__ import annotations

import numpy as np

from . import require_matplotlib

__all__ = ["plot_param_intervals", "plot_predicted_vs_observed"]


def _labels(result, name: str, size: int) -> list[str]:
    info = result.point.info
    for key in ("targets", "domains"):
        names = info.get(key) or []
        if len(names) == size:
            return list(names)
    return [f"{name}[{i}]" for i in range(size)]


def plot_param_intervals(result, level: float | None = None, method: str | None = None, *, names=None, log: bool | None = None, fig=None):
    """One panel per readable parameter: the full-data estimate (dot) and its bootstrap interval (line) for each
    element (labelled by domain or target where the sizes match). ``log``: logarithmic value axis (default: when
    every value of the panel is positive and they span more than a factor 20). Returns the figure."""
    plt = require_matplotlib()
    iv = result.param_intervals(level, method)
    names = list(iv) if names is None else list(names)
    unknown = [n for n in names if n not in iv]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the law has {list(iv)}")
    level = result.level if level is None else level
    method = result.method if method is None else method
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    if fig is None:
        fig = plt.figure(figsize=(4.2 * ncols, 0.6 + 2.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax, name in zip(axes, names):
        est = np.atleast_1d(iv[name]["estimate"]).reshape(-1)
        lo = np.atleast_1d(iv[name]["lo"]).reshape(-1)
        hi = np.atleast_1d(iv[name]["hi"]).reshape(-1)
        labels = _labels(result, name, est.size) if est.size > 1 else [name]
        yy = np.arange(est.size)[::-1]
        ax.plot(est, yy, "o", color="C0", ms=4.5, zorder=3, label="full-data fit")
        ax.hlines(yy, lo, hi, color="C0", lw=1.8, alpha=0.75)
        ax.plot(np.concatenate([lo, hi]), np.concatenate([yy, yy]), "|", color="C0", ms=8)
        ax.set_yticks(yy, labels, fontsize=8)
        ax.set_ylim(-0.7, est.size - 0.3)
        vals = np.concatenate([est, lo, hi])
        vals = vals[np.isfinite(vals)]
        use_log = log if log is not None else bool(vals.size and (vals > 0).all() and vals.max() / vals.min() > 20)
        if use_log:
            ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{result.point.info['law']}: {100 * level:g}% {method} intervals, {result.n_resamples - result.n_failed} "
        f"resamples ({result.scheme}), {result.n_failed} failed",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_predicted_vs_observed(result, data, level: float | None = None, method: str | None = None, *, targets=None, ax=None):
    """Observed (x) versus predicted (y) loss for every measured cell of ``data``, with the bootstrap interval of
    each prediction as a vertical bar, one colour per target, and the diagonal y = x. Returns the figure."""
    plt = require_matplotlib()
    from ..metrics import fit_cells

    _, obs, used = fit_cells(result.point, data)
    obs = np.where(used, obs, np.nan)  # the cells the fit counts
    iv = result.predict_intervals(data, level=level, method=method)
    names = result.point.info["targets"]
    if obs.shape[1] != len(names):
        names = [f"target{j}" for j in range(obs.shape[1])]
    pick = range(len(names)) if targets is None else [names.index(t) for t in targets]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 5.6))
    else:
        fig = ax.figure
    level = result.level if level is None else level
    method = result.method if method is None else method
    allv = []
    for c, j in enumerate(pick):
        m = np.isfinite(obs[:, j])
        if not m.any():
            continue
        o, e = obs[m, j], iv["estimate"][m, j]
        ax.vlines(o, iv["lo"][m, j], iv["hi"][m, j], color=f"C{c % 10}", lw=0.9, alpha=0.6)
        ax.plot(o, e, "o", ms=3, alpha=0.85, color=f"C{c % 10}", label=names[j])
        allv.append(np.concatenate([o, iv["lo"][m, j], iv["hi"][m, j]]))
    if allv:
        v = np.concatenate(allv)
        v = v[np.isfinite(v)]
        a, b = v.min(), v.max()
        pad = 0.03 * (b - a)
        ax.plot([a - pad, b + pad], [a - pad, b + pad], color="0.4", lw=0.8, ls="--", zorder=0)
        ax.set_xlim(a - pad, b + pad)
        ax.set_ylim(a - pad, b + pad)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"{result.point.info['law']} on {data.name}: {100 * level:g}% {method} intervals", fontsize=10)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
