"""Plots (matplotlib, an optional extra: ``pip install mixjax[plot]``). Each module is imported on demand so that
the core package never needs matplotlib."""


def require_matplotlib():
    """Import matplotlib with the non-interactive Agg backend when no display is set; a clear error if missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mixjax[plot]'") from None
    import os

    if not os.environ.get("DISPLAY") and matplotlib.get_backend().lower() not in ("agg", "svg", "pdf"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
