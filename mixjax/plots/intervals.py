"""Plots of bootstrap intervals: parameters with their intervals, and predicted versus observed losses with
interval bars (from a :class:`mixjax.BootstrapResult`)."""

from __future__ import annotations

import numpy as np

from . import fit_titles, require_matplotlib

__all__ = ["param_axis", "plot_param_intervals", "plot_predicted_vs_observed"]


def _labels(result, name: str, size: int) -> list[str]:
    record = result.point.record
    for key in ("targets", "domains"):
        names = getattr(record, key) or []
        if len(names) == size:
            return list(names)
    return [f"{name}[{i}]" for i in range(size)]


# Coefficients held at a non-negativity bound are stored as the smallest normal float of the fit's dtype
# (np.finfo(dtype).tiny); any value this close to 0 is drawn as "at bound (0)".
_BOUND = 1.5 * float(np.finfo(np.float32).tiny)
_MAX_DECADES = 8.0  # widest logarithmic value axis, padding included
_PAD = 0.05


def _at_bound(v: np.ndarray) -> np.ndarray:
    return np.isfinite(v) & (np.abs(v) <= _BOUND)


def _densest(x: np.ndarray, width: float) -> tuple[float, float]:
    """Smallest and largest of the most values of sorted ``x`` that fit in a window of ``width`` (ties: nearest
    the median)."""
    j = np.searchsorted(x, x + width, side="right")
    count = j - np.arange(x.size)
    best = np.flatnonzero(count == count.max())
    mid = np.median(x)
    i = best[np.argmin(np.abs((x[best] + x[j[best] - 1]) / 2 - mid))]
    return float(x[i]), float(x[j[i] - 1])


_REACH = 3.0  # interval ends further than this (decades, or multiples of the estimates' scale) are runaways


def _log_limits(est: np.ndarray, ends: np.ndarray) -> tuple[float, float]:
    """Limits of a log axis: the estimates (or their densest part, when they span too many decades), widened to the
    interval ends within ``_REACH`` decades of them while the whole stays within ``_MAX_DECADES``."""
    span = _MAX_DECADES / (1 + 2 * _PAD)
    e, a = np.sort(np.log10(est)), np.log10(ends)
    if e.size:
        lo, hi = _densest(e, span)
    elif a.size:
        lo = hi = float(np.median(a))
    else:
        return 0.1, 10.0
    a = a[(a >= lo - _REACH) & (a <= hi + _REACH)]
    if a.size:
        room = span - (hi - lo)
        want_lo, want_hi = max(0.0, lo - a.min()), max(0.0, a.max() - hi)
        take_lo = min(want_lo, max(room / 2, room - want_hi))
        lo, hi = lo - take_lo, hi + min(want_hi, room - take_lo)
    pad = _PAD * (hi - lo) if hi > lo else 0.5
    return 10 ** (lo - pad), 10 ** (hi + pad)


def _linear_limits(est: np.ndarray, ends: np.ndarray) -> tuple[float, float]:
    """Limits of a linear axis: the estimates, widened to the interval ends within ``_REACH`` times the estimates'
    own scale of them."""
    if est.size:
        lo, hi = float(est.min()), float(est.max())
    elif ends.size:
        lo = hi = float(np.median(ends))
    else:
        return -1.0, 1.0
    reach = _REACH * max(hi - lo, abs(lo), abs(hi)) or 1.0
    ends = ends[(ends >= lo - reach) & (ends <= hi + reach)]
    if ends.size:
        lo, hi = min(lo, float(ends.min())), max(hi, float(ends.max()))
    pad = _PAD * (hi - lo) if hi > lo else max(0.5 * abs(hi), 0.5)
    return lo - pad, hi + pad


def param_axis(est, lo, hi, log: bool | None = None) -> tuple[bool, float, float]:
    """``(log, xmin, xmax)`` of the value axis of one parameter panel.

    Values at the non-negativity bound (about ``np.finfo(dtype).tiny``) and non-finite values do not set the
    limits, nor do runaway interval ends; a log axis spans at most ``_MAX_DECADES`` decades.
    ``log=None``: logarithmic when every other value is positive and they span more than a factor 20."""
    est, ends = np.ravel(np.asarray(est, float)), np.concatenate([np.ravel(np.asarray(lo, float)), np.ravel(np.asarray(hi, float))])
    core = np.concatenate([est, ends])
    core = core[np.isfinite(core) & ~_at_bound(core)]
    if log is None:
        log = bool(core.size and (core > 0).all() and core.max() / core.min() > 20)
    if log:
        return True, *_log_limits(est[np.isfinite(est) & (est > _BOUND)], ends[np.isfinite(ends) & (ends > _BOUND)])
    return False, *_linear_limits(est[np.isfinite(est)], ends[np.isfinite(ends)])


def _place(v: np.ndarray, xmin: float, xmax: float, log: bool):
    """Positions of ``v`` on an axis [xmin, xmax] (clipped into it) and masks: inside, below, above, at the bound
    (log axes: at or below 0, drawn at the left edge)."""
    with np.errstate(invalid="ignore"):
        bound = (_at_bound(v) | (v <= 0)) & ~np.isnan(v) if log else np.zeros(v.shape, bool)
        below, above = (v < xmin) & ~bound, v > xmax
    pos = np.where(bound, xmin, np.clip(v, xmin, xmax))
    inside = np.isfinite(v) & ~(below | above | bound)
    return pos, inside, below, above, bound


def plot_param_intervals(result, level: float | None = None, method: str | None = None, *, names=None, log: bool | None = None, fig=None):
    """One panel per readable parameter: the full-data estimate (dot) and its bootstrap interval (line) for each
    element (labelled by domain or target where the sizes match). Axis limits follow :func:`param_axis`; values
    beyond them are drawn as arrows at the edge, values at the non-negativity bound as a "0" at the left edge of
    log axes. ``log``: logarithmic value axis (default: see :func:`param_axis`). Returns the figure."""
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
        est = np.atleast_1d(np.asarray(iv[name]["estimate"], float)).reshape(-1)
        lo = np.atleast_1d(np.asarray(iv[name]["lo"], float)).reshape(-1)
        hi = np.atleast_1d(np.asarray(iv[name]["hi"], float)).reshape(-1)
        labels = _labels(result, name, est.size) if est.size > 1 else [name]
        yy = np.arange(est.size)[::-1]
        use_log, xmin, xmax = param_axis(est, lo, hi, log)
        _, ie, be, ae, ze = _place(est, xmin, xmax, use_log)
        pl, il, bl, al, zl = _place(lo, xmin, xmax, use_log)
        ph, ih, bh, ah, zh = _place(hi, xmin, xmax, use_log)
        ax.plot(np.where(ie, est, np.nan), yy, "o", color="C0", ms=4.5, zorder=3, label="full-data fit")
        ax.hlines(yy, pl, ph, color="C0", lw=1.8, alpha=0.75)
        ends = np.concatenate([np.where(il, lo, np.nan), np.where(ih, hi, np.nan)])
        ax.plot(ends, np.concatenate([yy, yy]), "|", color="C0", ms=8)
        y2 = np.concatenate([yy, yy, yy])
        beyond_lo, beyond_hi, bound = (np.concatenate(m) for m in ((be, bl, bh), (ae, al, ah), (ze, zl, zh)))
        extra = False
        if beyond_lo.any():
            ax.plot(np.full(beyond_lo.sum(), xmin), y2[beyond_lo], "<", color="C3", ms=6, clip_on=False, zorder=4, label="beyond the axis")
            extra = True
        if beyond_hi.any():
            ax.plot(np.full(beyond_hi.sum(), xmax), y2[beyond_hi], ">", color="C3", ms=6, clip_on=False, zorder=4,
                    label=None if beyond_lo.any() else "beyond the axis")
            extra = True
        if bound.any():
            ax.plot(np.full(bound.sum(), xmin), y2[bound], ls="none", marker="$0$", color="C2", ms=7, clip_on=False, zorder=4, label="at bound (0)")
            extra = True
        ax.set_yticks(yy, labels, fontsize=8)
        ax.set_ylim(-0.7, est.size - 0.3)
        if use_log:
            ax.set_xscale("log")
        ax.set_xlim(xmin, xmax)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if extra:
            ax.legend(fontsize=7, frameon=False, loc="best")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{result.point.record.law}: {100 * level:g}% {method} intervals, {result.n_resamples - result.n_failed} "
        f"resamples ({result.scheme}), {result.n_failed} failed",
        fontsize=10,
    )
    fit_titles(fig)
    return fig


def plot_predicted_vs_observed(result, data, level: float | None = None, method: str | None = None, *, targets=None, ax=None):
    """Observed (x) versus predicted (y) loss for every measured cell of ``data``, with the bootstrap interval of
    each prediction as a vertical bar, one colour per target, and the diagonal y = x. Returns the figure."""
    plt = require_matplotlib()
    from ..metrics import fit_cells

    _, obs, used = fit_cells(result.point, data)
    obs = np.where(used, obs, np.nan)  # the cells the fit counts
    iv = result.predict_intervals(data, level=level, method=method)
    names = result.point.record.targets
    if obs.shape[1] != len(names):
        names = [f"target{j}" for j in range(obs.shape[1])]
    pick = range(len(names)) if targets is None else [names.index(t) for t in targets]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.2, 5.6))
    else:
        fig = ax.figure
    level = result.level if level is None else level
    method = result.method if method is None else method
    allv, core_v = [], []
    for c, j in enumerate(pick):
        m = np.isfinite(obs[:, j])
        if not m.any():
            continue
        o, e = obs[m, j], iv["estimate"][m, j]
        ax.vlines(o, iv["lo"][m, j], iv["hi"][m, j], color=f"C{c % 10}", lw=0.9, alpha=0.6)
        ax.plot(o, e, "o", ms=3, alpha=0.85, color=f"C{c % 10}", label=names[j])
        allv.append(np.concatenate([o, iv["lo"][m, j], iv["hi"][m, j]]))
        core_v.append(np.concatenate([o, e]))
    if allv:
        v = np.concatenate(allv)
        v = v[np.isfinite(v)]
        core = np.concatenate(core_v)
        core = core[np.isfinite(core)]  # observed and estimated losses set the range; interval ends widen it a little
        a, b = core.min(), core.max()
        span = (b - a) or max(abs(b), 1e-9)
        a, b = max(min(a, v.min()), a - span), min(max(b, v.max()), b + span)  # runaway bars stop at the edge
        pad = 0.03 * (b - a)
        ax.plot([a - pad, b + pad], [a - pad, b + pad], color="0.4", lw=0.8, ls="--", zorder=0)
        ax.set_xlim(a - pad, b + pad)
        ax.set_ylim(a - pad, b + pad)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"{result.point.record.law} on {data.name}: {100 * level:g}% {method} intervals", fontsize=10)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fit_titles(fig)
    return fig
