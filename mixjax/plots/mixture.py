"""Plot of an optimal mixture: one bar per domain, with its bootstrap interval, bounds and reference mixtures."""

from __future__ import annotations

import numpy as np

from . import fit_titles, require_matplotlib

__all__ = ["plot_mixture"]


def plot_mixture(result, level: float = 0.9, *, references: dict | None = None, title: str | None = None, ax=None):
    """Bar chart of the optimal mixture (weights per domain).

    ``result``: a :class:`mixjax.MixtureResult`, or a :class:`mixjax.MixtureEnsemble` (bars at its point estimate,
    or the median when it has none, with error bars spanning the ``level`` percentile interval over the usable
    members). Floors and ceilings that bind are drawn as dashes. ``references``: ``{label: mixture (K,)}`` drawn as
    markers (for example a measured best mixture). Returns the figure."""
    plt = require_matplotlib()
    ensemble = hasattr(result, "mixtures")
    point = result.point if ensemble else result
    if ensemble:
        est = point.mixture if point is not None else result.median()
        lo, hi = result.interval(level)
    else:
        est = result.mixture
    domains = list(result.domains)
    K = len(domains)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * K + 1.5), 3.8))
    else:
        fig = ax.figure
    x = np.arange(K)
    bars = ax.bar(x, est, width=0.62, color="#4C72B0", alpha=0.85, label="optimal mixture" + (" (point fit)" if ensemble and point is not None else ""))
    if ensemble:
        yerr = np.stack([np.maximum(est - lo, 0.0), np.maximum(hi - est, 0.0)])
        ax.errorbar(x, est, yerr=yerr, fmt="none", ecolor="black", elinewidth=1.2, capsize=4,
                    label=f"{100 * level:g}% bootstrap interval ({result.n_ok} fits)")
    lower, upper = np.asarray(result.lower), np.asarray(result.upper)
    shown = False
    for i in range(K):
        for bound in (lower[i], upper[i]):
            if 0 < bound < 1:
                ax.hlines(bound, i - 0.38, i + 0.38, colors="#C44E52", linestyles="dashed", linewidth=1.2,
                          label=None if shown else "floor / ceiling")
                shown = True
    markers = iter(["D", "o", "s", "^", "v"])
    for label, mix in (references or {}).items():
        ax.scatter(x, np.asarray(mix, float), marker=next(markers, "o"), s=28, zorder=3, label=label)
    top = np.maximum(est, hi if ensemble else est)
    for i, b in enumerate(bars):
        ax.text(b.get_x() + b.get_width() / 2, top[i] + 0.006, f"{est[i]:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(domains, rotation=30 if K > 5 else 0, ha="right" if K > 5 else "center")
    ax.set_ylabel("weight in the mixture")
    drawn = [b for b in np.concatenate([lower, upper]) if 0 < b < 1]
    ymax = max(float(np.max(top)), max(drawn, default=0.0), max((float(np.max(m)) for m in (references or {}).values()), default=0.0))
    ax.set_ylim(0, ymax * 1.22 + 0.01)
    scale = f"N = {result.model_size:g}M params, D = {result.n_tokens:g}B tokens"
    ax.set_title(title or f"Optimal mixture at {scale}\n({result.objective})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    fit_titles(fig)
    return fig
