"""Figures: pred-vs-obs draws the rows at the fit's own scales, parameter-interval axes stay readable, titles fit
the figure, and figures written to a path get a new file's permissions."""

import contextlib
import dataclasses
import io
import json
import os
import stat
import types
import warnings

import numpy as np
import pytest

import mixjax
from mixjax._paths import OutputPathError
from mixjax.cli import main

pytest.importorskip("matplotlib")

SCALE = (200e6, 8e9)  # 25 of the 86 pile4 rows


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pile4():
    return mixjax.load_dataset("pile4")


@pytest.fixture(scope="module")
def one_scale(pile4, tmp_path_factory):
    """A tiny loglinear fit to the pile4 rows at one scale, and the path it is saved at."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 20 steps stop before convergence
        f = mixjax.fit("loglinear", pile4.at_scale(*SCALE), starts=1, max_steps=20, optimizer="adam")
    path = tmp_path_factory.mktemp("plots") / "fit.mixfit"
    mixjax.save_fit(path, f)
    return f, path


def _points(fig) -> int:
    return sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)


# --------------------------------------------------------------------------- pred-vs-obs at the fit's scales
def test_cli_pred_vs_obs_uses_the_fits_scale(pile4, one_scale, tmp_path):
    f, path = one_scale
    sub = pile4.at_scale(*SCALE)
    assert 0 < sub.n_rows < pile4.n_rows
    rc, out, err = cli("plot", "pred-vs-obs", path, "--data", "pile4", "--out", tmp_path / "a.png", "--json")
    assert rc == 0, err
    js = json.loads(out)
    assert js["rows_used"] == sub.n_rows == js["n_rows"] and js["rows_total"] == pile4.n_rows
    assert js["scales_used"] == [list(SCALE)]
    assert js["mre"] == pytest.approx(f.evaluate(sub)["mre"], rel=1e-9)
    assert f"{sub.n_rows} of {pile4.n_rows} rows" in err and "200M params / 8B tokens" in err

    rc, out, err = cli("plot", "pred-vs-obs", path, "--data", "pile4", "--all-scales", "--out", tmp_path / "b.png", "--json")
    assert rc == 0, err
    js = json.loads(out)
    assert js["rows_used"] == pile4.n_rows and len(js["scales_used"]) == len(pile4.scales())
    assert js["mre"] == pytest.approx(f.evaluate(pile4)["mre"], rel=1e-9)
    assert js["mre"] != pytest.approx(f.evaluate(sub)["mre"], rel=1e-3)


def test_cli_pred_vs_obs_without_rows_at_the_fits_scale(pile4, one_scale, tmp_path):
    csv = tmp_path / "other.csv"
    pile4.at_scale(90e6, 3e9).to_dataframe().to_csv(csv, index=False)
    rc, _, err = cli("plot", "pred-vs-obs", one_scale[1], "--data", csv, "--out", tmp_path / "c.png")
    lines = err.strip().splitlines()
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("mixjax plot: error")
    assert "--all-scales" in lines[0] and "-N/-D" in lines[0]
    assert not (tmp_path / "c.png").exists()
    rc, out, err = cli("plot", "pred-vs-obs", one_scale[1], "--data", csv, "--all-scales", "--out", tmp_path / "c.png", "--json")
    assert rc == 0, err
    assert json.loads(out)["rows_used"] == 16


def test_python_pred_vs_obs_leaves_out_other_scales(pile4, one_scale):
    from mixjax.plots.fit import plot_predicted_vs_observed

    f, _ = one_scale
    sub = pile4.at_scale(*SCALE)
    with pytest.warns(UserWarning, match=f"{sub.n_rows} of {pile4.n_rows} rows"):
        fig = plot_predicted_vs_observed(f, pile4)
    assert _points(fig) == f.evaluate(sub)["n_cells"]
    assert f"{100 * f.evaluate(sub)['mre']:.2f}%" in fig.texts[0].get_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_predicted_vs_observed(f, pile4, all_scales=True)
    assert _points(fig) == f.evaluate(pile4)["n_cells"]
    with pytest.raises(ValueError, match="all_scales=True"):
        plot_predicted_vs_observed(f, pile4.at_scale(90e6, 3e9))


# --------------------------------------------------------------------------- parameter-interval axes
TINY = np.finfo(np.float64).tiny


class _Intervals:
    """Stand-in for a BootstrapResult: just what plot_param_intervals reads."""

    level, method, n_resamples, n_failed, scheme = 0.9, "percentile", 200, 3, "rows"

    def __init__(self, law="loglinear", params=None):
        self.point = types.SimpleNamespace(record=mixjax.FitRecord(law=law, domains=["a", "b", "c", "d"], targets=["a", "b", "c", "d"]))
        self.params = params or {
            "b": {"estimate": np.array([TINY, 0.3, 2.0, 5e-3]), "lo": np.array([TINY, 0.1, TINY, 1e-3]), "hi": np.array([0.5, 1e13, 3.0, 0.01])},
            "E": {"estimate": np.array([1.5, 2.0, -0.3, 1.0]), "lo": np.array([1.2, 1.8, -1e12, 0.9]), "hi": np.array([1.7, 2.2, 0.1, 1.1])},
        }

    def param_intervals(self, level=None, method=None):
        return self.params


def test_param_interval_axes_are_readable():
    from mixjax.plots.intervals import plot_param_intervals

    res = _Intervals()
    fig = plot_param_intervals(res)
    ax_b, ax_e = fig.axes[:2]
    lo, hi = ax_b.get_xlim()
    assert ax_b.get_xscale() == "log"
    assert 0 < lo and np.log10(hi / lo) <= 8 + 1e-9
    est = res.params["b"]["estimate"]
    assert lo <= est[est > TINY].min() and est.max() <= hi
    xs = np.concatenate([ln.get_xdata() for ln in ax_b.lines]).astype(float)
    assert np.isfinite(xs[~np.isnan(xs)]).all() and xs[~np.isnan(xs)].min() >= lo and xs[~np.isnan(xs)].max() <= hi
    markers = {ln.get_marker(): ln for ln in ax_b.lines}
    assert len(markers["$0$"].get_xdata()) == 3 and np.allclose(markers["$0$"].get_xdata(), lo)  # the three values at the bound
    assert np.allclose(markers[">"].get_xdata(), hi)  # the runaway 1e13
    # a linear axis: limits around the estimates, the runaway -1e12 clipped to the edge
    lo, hi = ax_e.get_xlim()
    assert ax_e.get_xscale() == "linear" and lo <= -0.3 and hi >= 2.0 and hi - lo < 20
    assert {ln.get_marker() for ln in ax_e.lines} >= {"<"}
    # an ordinary panel keeps every value where it is
    sane = _Intervals(params={"W": {"estimate": np.array([1.0, 2.0]), "lo": np.array([0.5, 1.5]), "hi": np.array([1.5, 3.0])}})
    ax = plot_param_intervals(sane).axes[0]
    assert np.array_equal(ax.lines[0].get_xdata(), [1.0, 2.0])
    assert np.allclose(np.array(ax.collections[0].get_segments())[:, :, 0], [[0.5, 1.5], [1.5, 3.0]])
    assert ax.get_xlim()[0] < 0.5 and ax.get_xlim()[1] > 3.0


# --------------------------------------------------------------------------- titles inside the figure
def _assert_inside(fig, text):
    fig.canvas.draw()
    box, frame = text.get_window_extent(), fig.bbox
    assert frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5 and frame.y0 - 0.5 <= box.y0 and box.y1 <= frame.y1 + 0.5, (box, frame)


def test_long_titles_fit_the_figure(one_scale, pile4):
    from mixjax.plots.fit import plot_predicted_vs_observed
    from mixjax.plots.intervals import plot_param_intervals

    fig = plot_param_intervals(_Intervals(law="capacity_noise_with_a_long_user_defined_name"), names=["b"])
    title = fig.texts[0]
    raw = "capacity_noise_with_a_long_user_defined_name: 90% percentile intervals, 197 resamples (rows), 3 failed"
    assert title.get_text().split() == raw.split()  # wrapped, not cut
    wide = fig.text(0, 0, raw, fontsize=10)
    fig.canvas.draw()
    assert wide.get_window_extent().width > fig.bbox.width  # the title would not fit on one line
    wide.remove()
    _assert_inside(fig, title)

    f, _ = one_scale
    long = dataclasses.replace(f, record=f.record.replace(data="experiments/2025/mixing runs at several model sizes and token counts.csv"))
    fig = plot_predicted_vs_observed(long, pile4.at_scale(*SCALE), ncols=2)
    for t in [fig.texts[0]] + [ax.title for ax in fig.axes]:
        _assert_inside(fig, t)


# --------------------------------------------------------------------------- writing to a path
def test_figures_written_to_a_path(tmp_path):
    from mixjax.plots import plot_comparison

    score = types.SimpleNamespace(law="loglinear", val_mre_common=0.02, train_mre=0.015)
    comparison = types.SimpleNamespace(scores=[score], data="pile4", protocol="random split")
    old = os.umask(0o027)
    try:
        plot_comparison(comparison, tmp_path / "c.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "c.png").st_mode) == 0o640
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputPathError, match="directory"):
        plot_comparison(comparison, tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(OutputPathError, match="not a regular file"):
            plot_comparison(comparison, "/dev/null")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]
