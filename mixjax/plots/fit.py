"""Figures of a fitted law: predicted versus observed losses, loss along a line between two mixtures, and a
ternary (2-simplex) map of the mean predicted loss over three domains.

Model sizes and token counts are raw counts (``1.22e8`` parameters, ``9.998e9`` tokens), as on the command line;
the laws see millions and billions. Each ``plot_*`` function returns a matplotlib ``Figure``; the numbers behind
the line and ternary plots come from :func:`mixture_line` and :func:`ternary_grid`, which need no matplotlib.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import equinox as eqx
import numpy as np

from ..data import MixtureData
from ..fitting import Fit
from ..metrics import fit_cells, mre
from ..units import model_size_to_law, tokens_to_law
from . import fit_titles, require_matplotlib

__all__ = [
    "at_fit_scales",
    "barycentric_to_xy",
    "describe_scales",
    "fit_scales",
    "mixture_line",
    "plot_mixture_line",
    "plot_predicted_vs_observed",
    "plot_ternary",
    "ternary_grid",
]

SQRT3_2 = np.sqrt(3.0) / 2.0


@eqx.filter_jit
def _predict_jit(law, h, N, D):
    return law.predict(h, N, D)


def _predict(fit: Fit, h, model_size, n_tokens) -> np.ndarray:
    """Predicted losses ``(n, V)``: mixtures ``(n, K)``, raw model size and tokens (scalars or ``(n,)``).

    Rows are padded to a power of two (at least 128) so that the figures of one session share a few compiled
    programs instead of compiling one per row count."""
    dt = np.dtype(fit.config.dtype)
    h = np.asarray(h, dt)
    n = h.shape[0]
    N = np.broadcast_to(model_size_to_law(model_size), (n,)).astype(dt)
    D = np.broadcast_to(tokens_to_law(n_tokens), (n,)).astype(dt)
    N, D = np.where(np.isfinite(N), N, 1.0), np.where(np.isfinite(D), D, 1.0)  # unknown scale: laws that need it refuse earlier
    size = max(128, 1 << (n - 1).bit_length())
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])
    return np.asarray(_predict_jit(fit.law, pad(h), pad(N), pad(D)))[:n]


def _fit_predict(fit: Fit, data: MixtureData) -> np.ndarray:
    """``fit.predict(data)`` through the padded, compiled path."""
    return _predict(fit, data.mixtures, data.model_size, data.n_tokens)


def _default_scale(fit: Fit, model_size, n_tokens) -> tuple[float, float]:
    scales = fit.record.scales or []
    if model_size is None or n_tokens is None:
        if len(scales) != 1:
            raise ValueError(f"the fit spans {len(scales)} (model_size, n_tokens) scales; pass model_size and n_tokens (raw counts)")
        model_size = scales[0][0] if model_size is None else model_size
        n_tokens = scales[0][1] if n_tokens is None else n_tokens
    return float(model_size), float(n_tokens)


def _mixture(fit: Fit, m, label: str) -> np.ndarray:
    domains = list(fit.record.domains)
    if isinstance(m, dict):
        unknown = [k for k in m if k not in domains]
        if unknown:
            raise ValueError(f"{label} names unknown domain(s) {unknown}; domains are {domains}")
        m = [float(m.get(d, 0.0)) for d in domains]
    w = np.asarray(m, float)
    if w.shape != (len(domains),):
        raise ValueError(f"{label} has {w.size} weights, the fit has {len(domains)} domains")
    if not np.all(np.isfinite(w)) or (w < 0).any() or abs(w.sum() - 1) > 0.01:
        raise ValueError(f"{label} must be finite, >= 0 and sum to 1 (+- 0.01); got sum {w.sum():.6g}")
    return w / w.sum()


def _short_mixture(w: np.ndarray, domains: Sequence[str], top: int = 3) -> str:
    order = np.argsort(-w)[:top]
    text = ", ".join(f"{domains[i]} {w[i]:.2f}" for i in order if w[i] > 0)
    return text + (", ..." if (w > 0).sum() > top else "")


def _fmt_count(v: float, unit: str) -> str:
    for s, f in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= f:
            return f"{v / f:.4g}{s} {unit}"
    return f"{v:.4g} {unit}"


def _grid_shape(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return (n + ncols - 1) // ncols, ncols


def fit_scales(fit: Fit) -> list[tuple[float, float]]:
    """The (model_size, n_tokens) scales a fit was made at, raw counts (NaN where unknown); empty when the fit
    records none."""
    scales = np.asarray(fit.record.scales or np.zeros((0, 2)), float).reshape(-1, 2)
    return [(float(a), float(b)) for a, b in scales]


def at_fit_scales(fit: Fit, data: MixtureData, rtol: float = 1e-6) -> np.ndarray:
    """Row mask ``(n,)`` of ``data``: rows at one of the fit's scales (matched as :meth:`MixtureData.at_scale`;
    unknown sizes match unknown). Every row when the fit records no scales."""
    scales = fit_scales(fit)
    if not scales:
        return np.ones(data.n_rows, bool)
    keep = np.zeros(data.n_rows, bool)
    for N, D in scales:
        keep |= np.isclose(data.model_size, N, rtol=rtol, atol=0, equal_nan=True) & np.isclose(data.n_tokens, D, rtol=rtol, atol=0, equal_nan=True)
    return keep


def describe_scales(scales, most: int = 3) -> str:
    """``"122M params / 9.998B tokens"`` for each (model_size, n_tokens), the first ``most`` of them."""
    def name(v, unit):
        return _fmt_count(v, unit) if np.isfinite(v) else f"unknown {unit}"

    scales = [(a, b) for a, b, *_ in scales]
    text = "; ".join(f"{name(a, 'params')} / {name(b, 'tokens')}" for a, b in scales[:most])
    return text + (f" and {len(scales) - most} more" if len(scales) > most else "")


def _rows_at_fit_scales(fit: Fit, data: MixtureData, label: str) -> MixtureData:
    keep = at_fit_scales(fit, data)
    where = describe_scales(fit_scales(fit))
    if not keep.any():
        raise ValueError(f"no row of {label} {data.name!r} is at the fit's scale(s) {where}; pass all_scales=True to draw every row")
    if keep.all():
        return data
    warnings.warn(
        f"{label} {data.name!r}: drawing the {int(keep.sum())} of {data.n_rows} rows at the fit's scale(s) {where}; "
        "all_scales=True draws every row",
        stacklevel=3,
    )
    return data.subset(keep)


# --------------------------------------------------------------------------- predicted vs observed
def plot_predicted_vs_observed(fit: Fit, data: MixtureData, *, heldout: MixtureData | None = None, all_scales: bool = False,
                               ncols: int = 4, panel_size: float = 2.6):
    """One panel per target: predicted against observed loss for every counted cell of ``data`` (and of
    ``heldout``, in a second colour), the line y = x, and the mean relative error in each panel's title.

    Only rows at the fit's own scales (:func:`at_fit_scales`) are drawn, with a warning when others are left out;
    ``all_scales=True`` draws every row."""
    plt = require_matplotlib()
    if not all_scales:
        data = _rows_at_fit_scales(fit, data, "data")
        heldout = None if heldout is None else _rows_at_fit_scales(fit, heldout, "heldout")
    targets = list(fit.record.targets)
    sets = [("train" if heldout is not None else "runs", data, "C0")]
    if heldout is not None:
        sets.append(("held out", heldout, "C3"))
    series = []
    for label, d, color in sets:
        pred, obs, used = fit_cells(fit, d)
        series.append((label, pred, np.where(used, obs, np.nan), color))
    rows, cols = _grid_shape(len(targets), ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols, panel_size * rows + 0.7), squeeze=False)
    for j, t in enumerate(targets):
        ax = axes[j // cols][j % cols]
        lo, hi, parts = np.inf, -np.inf, []
        for label, pred, obs, color in series:
            m = np.isfinite(obs[:, j])
            if not m.any():
                continue
            ax.scatter(obs[m, j], pred[m, j], s=12, color=color, alpha=0.75, label=label, linewidths=0)
            lo, hi = min(lo, obs[m, j].min(), pred[m, j].min()), max(hi, obs[m, j].max(), pred[m, j].max())
            parts.append(f"{100 * float(mre(pred[:, j], obs[:, j], m)):.2f}%")
        if np.isfinite(lo):
            pad = 0.05 * (hi - lo) + 1e-9
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=0.8, ls="--", zorder=0)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{t}\nMRE {' / '.join(parts) if parts else 'n/a'}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal", adjustable="box")
        if j % cols == 0:
            ax.set_ylabel("predicted loss", fontsize=8)
        if j // cols == rows - 1 or j + cols >= len(targets):
            ax.set_xlabel("observed loss", fontsize=8)
    for j in range(len(targets), rows * cols):
        axes[j // cols][j % cols].axis("off")
    overall = " / ".join(f"{lab} MRE {100 * float(mre(p, o, np.isfinite(o))):.2f}%" for lab, p, o, _ in series)
    drawn = data.scales() + ([] if heldout is None else heldout.scales())
    drawn = list(dict.fromkeys((a, b) for a, b, _ in drawn))
    at = f"at {describe_scales(drawn)}" if len(drawn) <= 2 else f"at {len(drawn)} scales"
    fig.suptitle(f"{fit.record.law} fitted to {fit.record.data}, runs {at}: {overall}", fontsize=10)
    if heldout is not None:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False)
    fit_titles(fig)
    return fig


# --------------------------------------------------------------------------- loss along a line
def mixture_line(fit: Fit, start, end, model_size=None, n_tokens=None, *, n: int = 101):
    """Predicted losses along h(t) = (1 - t) start + t end, t in [0, 1]: returns ``(t (n,), mixtures (n, K),
    losses (n, V))``. ``start``/``end`` are weights in domain order or ``{domain: weight}`` dicts."""
    a, b = _mixture(fit, start, "start"), _mixture(fit, end, "end")
    N, D = _default_scale(fit, model_size, n_tokens)
    t = np.linspace(0.0, 1.0, n)
    h = (1 - t)[:, None] * a + t[:, None] * b
    return t, h, _predict(fit, h, N, D)


def plot_mixture_line(fit: Fit, start, end, model_size=None, n_tokens=None, *, n: int = 101, ncols: int = 4, panel_size: float = 2.6):
    """One panel per target (and one for the mean): predicted loss along the line from mixture A (t = 0) to
    mixture B (t = 1), with each curve's minimum marked."""
    plt = require_matplotlib()
    N, D = _default_scale(fit, model_size, n_tokens)
    t, h, pred = mixture_line(fit, start, end, N, D, n=n)
    targets = list(fit.record.targets)
    domains = list(fit.record.domains)
    curves = [(tg, pred[:, j]) for j, tg in enumerate(targets)] + [("mean of targets", pred.mean(1))]
    rows, cols = _grid_shape(len(curves), ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols, panel_size * 0.85 * rows + 1.0), squeeze=False, sharex=True)
    for j, (name, y) in enumerate(curves):
        ax = axes[j // cols][j % cols]
        ax.plot(t, y, color="C2" if j == len(curves) - 1 else "C0", lw=1.5)
        i = int(np.argmin(y))
        ax.plot(t[i], y[i], "o", color="C3", ms=4)
        ax.set_title(f"{name}\nmin {y[i]:.4f} at t={t[i]:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        if j % cols == 0:
            ax.set_ylabel("predicted loss", fontsize=8)
        if j + cols >= len(curves):
            ax.set_xlabel("t  (0 = A, 1 = B)", fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
    for j in range(len(curves), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(
        f"{fit.record.law} at {_fmt_count(N, 'params')}, {_fmt_count(D, 'tokens')}\n"
        f"A: {_short_mixture(h[0], domains)}    B: {_short_mixture(h[-1], domains)}",
        fontsize=9,
    )
    fit_titles(fig)
    return fig


# --------------------------------------------------------------------------- ternary view
def barycentric_to_xy(p) -> np.ndarray:
    """Cartesian points of barycentric coordinates ``(..., 3)`` in the equilateral triangle with corners
    (0, 0) [first domain], (1, 0) [second] and (1/2, sqrt(3)/2) [third]: x = p2 + p3/2, y = p3 sqrt(3)/2."""
    p = np.asarray(p, float)
    return np.stack([p[..., 1] + 0.5 * p[..., 2], SQRT3_2 * p[..., 2]], axis=-1)


def _pick_domains(fit: Fit, domains) -> list[int]:
    names = list(fit.record.domains)
    if domains is None:
        if len(names) != 3:
            raise ValueError(f"the fit has {len(names)} domains; name the 3 to vary (domains=[...]), the others stay at their base weights")
        return [0, 1, 2]
    if len(domains) != 3 or len(set(domains)) != 3:
        raise ValueError(f"domains must name 3 different domains, got {list(domains)}")
    unknown = [d for d in domains if d not in names]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; domains are {names}")
    return [names.index(d) for d in domains]


def ternary_grid(fit: Fit, domains: Sequence[str] | None = None, model_size=None, n_tokens=None, *, base=None, resolution: int = 60):
    """The law's mean predicted loss (over targets) on a triangular grid of the 2-simplex of three domains.

    With K = 3 the grid covers every mixture. With K > 3 the other domains keep their ``base`` weights (default
    uniform 1/K) and the three named domains share the rest, m = sum of their base weights:
    h = base outside, m p on the three, p on the 2-simplex. Points p = (i, j, k) / resolution, i + j + k =
    resolution. Returns a dict with ``p`` (P, 3), ``xy`` (P, 2), ``mixtures`` (P, K), ``losses`` (P, V),
    ``mean`` (P,), ``domains`` (the three indices) and ``share`` m."""
    idx = _pick_domains(fit, domains)
    K = len(fit.record.domains)
    N, D = _default_scale(fit, model_size, n_tokens)
    b = np.full(K, 1.0 / K) if base is None else _mixture(fit, base, "base")
    share = float(b[idx].sum())
    if share <= 0:
        raise ValueError("the base mixture gives the three domains no weight to share")
    r = int(resolution)
    p = np.array([(i, j, r - i - j) for i in range(r + 1) for j in range(r + 1 - i)], float) / r
    h = np.repeat(b[None, :], p.shape[0], axis=0)
    h[:, idx] = share * p
    losses = _predict(fit, h, N, D)
    return {"p": p, "xy": barycentric_to_xy(p), "mixtures": h, "losses": losses, "mean": losses.mean(1), "domains": idx, "share": share}


def plot_ternary(fit: Fit, domains: Sequence[str] | None = None, model_size=None, n_tokens=None, *, data: MixtureData | None = None,
                 base=None, resolution: int = 60, levels: int = 14):
    """Filled contours of the mean predicted loss over the 2-simplex of three domains (see :func:`ternary_grid`),
    the grid's minimum as a star, and the observed runs of ``data`` at this scale as points coloured by their
    observed mean loss (with K > 3, runs are projected onto the three domains and drawn hollow)."""
    plt = require_matplotlib()
    import matplotlib.tri as mtri

    N, D = _default_scale(fit, model_size, n_tokens)
    g = ternary_grid(fit, domains, N, D, base=base, resolution=resolution)
    names = [fit.record.domains[i] for i in g["domains"]]
    K = len(fit.record.domains)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    tri = mtri.Triangulation(g["xy"][:, 0], g["xy"][:, 1])
    z = g["mean"]
    hi = float(np.quantile(z, 0.75))  # the edges (a domain near 0) would otherwise take every colour level
    lv = np.linspace(float(z.min()), hi, levels)
    cs = ax.tricontourf(tri, np.minimum(z, hi), levels=lv, cmap="viridis", extend="max")
    cb = fig.colorbar(cs, ax=ax, shrink=0.8, pad=0.02)
    cb.set_label("mean predicted loss over targets", fontsize=9)
    # reference lines: each coordinate at 0.2, 0.4, 0.6, 0.8
    for q in (0.2, 0.4, 0.6, 0.8):
        for a in range(3):
            b_, c_ = [(1, 2), (2, 0), (0, 1)][a]
            ends = np.zeros((2, 3))
            ends[:, a] = q
            ends[0, b_], ends[1, c_] = 1 - q, 1 - q
            xy = barycentric_to_xy(ends)
            ax.plot(xy[:, 0], xy[:, 1], color="white", lw=0.4, alpha=0.5)
    corners = barycentric_to_xy(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=1)
    offsets = [(0.0, -0.05), (0.0, -0.05), (0.0, 0.045)]
    for (x, y), name, (dx, dy) in zip(corners, names, offsets):
        ax.text(x + dx, y + dy, name, ha="center", va="center", fontsize=10, fontweight="bold")
    i = int(np.argmin(z))
    ax.plot(*g["xy"][i], marker="*", color="red", ms=14, mec="white", mew=0.8, ls="none",
            label=f"law minimum {z[i]:.4f} (" + ", ".join(f"{n} {v:.3g}" for n, v in zip(names, g["mixtures"][i][g["domains"]])) + ")")
    if data is not None:
        d = data
        rows = np.isclose(d.model_size, N, rtol=1e-3) & np.isclose(d.n_tokens, D, rtol=1e-3)
        if rows.any():
            d = d.subset(rows)
            hsel = d.mixtures[:, g["domains"]]
            s = hsel.sum(1)
            keep = s > 0
            tnames = list(fit.record.targets)
            cols = [list(d.targets).index(t) for t in tnames if t in d.targets]
            y = np.nanmean(d.losses[:, cols], axis=1) if cols else np.full(d.n_rows, np.nan)
            xy = barycentric_to_xy(hsel[keep] / s[keep, None])
            if K == 3:
                ax.scatter(xy[:, 0], xy[:, 1], c=np.minimum(y[keep], hi), cmap="viridis", vmin=lv[0], vmax=hi, s=30, edgecolors="white",
                           linewidths=0.8, label=f"observed runs ({int(keep.sum())})", zorder=3)
            else:
                ax.scatter(xy[:, 0], xy[:, 1], facecolors="none", edgecolors="#ff7f0e", s=22, linewidths=0.9,
                           label=f"observed runs, projected ({int(keep.sum())})", zorder=3)
    sub = "" if K == 3 else f"\nother domains at base weights; the three share {g['share']:.3g}"
    ax.set_title(f"{fit.record.law}: {_fmt_count(N, 'params')}, {_fmt_count(D, 'tokens')}{sub}", fontsize=10)
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.25, SQRT3_2 + 0.08)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="lower center", fontsize=7.5, frameon=False, bbox_to_anchor=(0.5, -0.02), ncols=1)
    fit_titles(fig)
    return fig
