"""Figure of a law comparison: train and held-out MRE per law, best first."""

from __future__ import annotations

import numpy as np

from . import fit_titles, require_matplotlib, save_figure

__all__ = ["plot_comparison"]


def plot_comparison(comparison, path=None):
    """Horizontal bars of held-out MRE (%) on the cells every law counts, with each law's train MRE as a dot;
    laws best first (top). Saves to ``path`` when given (:func:`mixjax.plots.save_figure`); returns the matplotlib ``Figure``."""
    plt = require_matplotlib()
    scores = comparison.scores
    names = [s.law for s in scores]
    pct = lambda v: np.nan if v is None else 100 * v
    val = np.array([pct(s.val_mre_common) for s in scores])
    train = np.array([pct(s.train_mre) for s in scores])
    y = np.arange(len(scores))[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * len(scores)))
    ax.barh(y, np.nan_to_num(val), color="tab:blue", alpha=0.8, label="held-out MRE (common cells)")
    ax.plot(train, y, "o", color="black", ms=4, label="train MRE")
    ax.set_yticks(y, names)
    ax.set_xlabel("MRE (%)")
    ax.set_title(f"{comparison.data}: {comparison.protocol}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fit_titles(fig)
    if path is not None:
        save_figure(fig, path)
    return fig
