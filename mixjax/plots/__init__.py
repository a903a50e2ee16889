"""Plots (matplotlib, an optional extra: ``pip install mixjax[plot]``). Each module is imported on demand so that
the core package never needs matplotlib."""

from __future__ import annotations

import textwrap
import warnings


def require_matplotlib():
    """Import matplotlib with the non-interactive Agg backend when no display is set; a clear error if missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mixjax[plot]'") from None
    import os

    backend = matplotlib.get_backend().lower()
    interactive_gui = backend not in ("agg", "svg", "pdf", "cairo") and not backend.startswith("module://")
    if not os.environ.get("DISPLAY") and interactive_gui:  # keep Jupyter's inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(comparison, path=None):
    """See :func:`mixjax.plots.compare.plot_comparison`."""
    from .compare import plot_comparison as _plot

    return _plot(comparison, path)


def save_figure(fig, path, **savefig_kw) -> None:
    """``fig.savefig`` to ``path`` through :func:`mixjax._paths.atomic_write` (checked path, new-file permissions,
    nothing left behind on failure)."""
    from .._paths import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kw), label="path")


# --------------------------------------------------------------------------- titles that fit the figure
_MIN_FONTSIZE = 5.0


def _title_texts(fig) -> list[tuple[object, float]]:
    """(text, available width in pixels) of the figure's suptitle and every visible axes title."""
    W = fig.bbox.width
    out = []
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text():
        x = sup.get_position()[0] * W
        out.append((sup, 0.96 * 2 * min(x, W - x)))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_position()
        for t in (ax.title, ax._left_title, ax._right_title):
            if not t.get_text():
                continue
            x = t.get_window_extent().x0 if t.get_horizontalalignment() == "left" else None
            if x is None:
                xc = (box.x0 + box.x1) / 2 * W
                room = 2 * min(xc, W - xc)
            else:
                room = W - x
            out.append((t, 0.98 * min(room, max(1.1 * box.width * W, 0.45 * W))))
    return out


def _wrap_to(t, raw: str, size: float, width: float) -> bool:
    """Set ``t`` to ``raw`` wrapped (and shrunk if a word is too long) to ``width`` pixels; True if it changed."""
    before = (t.get_text(), t.get_fontsize())
    t.set_fontsize(size)
    t.set_text(raw)
    while t.get_window_extent().width > width:
        lines = raw.split("\n")
        longest = max(len(s) for s in lines)
        n = max(8, int(longest * width / t.get_window_extent().width))
        fitted = False
        while True:
            t.set_text("\n".join(textwrap.fill(s, n, break_long_words=False, break_on_hyphens=False) or s for s in lines))
            if t.get_window_extent().width <= width:
                fitted = True
                break
            if n <= 8:
                break
            n -= max(1, n // 20)
        if fitted or t.get_fontsize() <= _MIN_FONTSIZE:
            break
        t.set_fontsize(max(_MIN_FONTSIZE, 0.9 * t.get_fontsize()))
    return (t.get_text(), t.get_fontsize()) != before


def fit_titles(fig, *, layout: bool = True):
    """Wrap the suptitle and axes titles of ``fig`` so each lies within the figure (shrinking a title only when
    a single word is wider than the room), then lay the figure out (``tight_layout``). Returns ``fig``."""
    raw = {id(t): (t.get_text(), t.get_fontsize()) for t, _ in _title_texts(fig)}
    for i in range(3):
        changed = False
        for t, width in _title_texts(fig):
            text, size = raw.setdefault(id(t), (t.get_text(), t.get_fontsize()))
            changed |= _wrap_to(t, text, size, width)
        if (i and not changed) or not layout:
            break
        engine = fig.get_layout_engine()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # axes that cannot be fitted keep their place
            if engine is not None:
                engine.execute(fig)
            else:
                fig.tight_layout()
    return fig
