"""Plots (matplotlib, an optional extra: ``pip install mixjax[plot]``). Each module is imported on demand so that
the core package never needs matplotlib."""


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
