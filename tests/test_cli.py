"""The command line end to end on bundled data: every sub-command's JSON checked against the Python API, bad input
rejected with a one-line message, and the installed ``mixjax`` console script."""

import contextlib
import io
import json
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax.cli import COMMAND_MODULES, main
from mixjax.plots.fit import barycentric_to_xy

# tiny settings; adam compiles faster than L-BFGS
FIT_ARGS = ["slimpajama7", "--model-size", "122M", "--tokens", "9.998B", "--starts", "2", "--max-steps", "50", "--optimizer", "adam"]
FIT_KW = dict(starts=2, max_steps=50, optimizer="adam", seed=0)


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def cli_json(*args):
    rc, out, err = cli(*args, "--json")
    assert rc == 0, err
    return json.loads(out)


def assert_one_line_error(rc, err, *words):
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]  # progress lines may precede it
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert lines[0].startswith("mixjax ")
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`mixjax fit ... --output` once for the module: (fit JSON, path of the saved fit)."""
    path = tmp_path_factory.mktemp("cli") / "fit.mixfit"
    return cli_json("fit", *FIT_ARGS, "--output", path), path


@pytest.fixture(scope="module")
def loaded(saved):
    return mixjax.load_fit(saved[1])


# --------------------------------------------------------------------------- datasets, laws, fit
def test_datasets_and_laws():
    rows = {r["name"]: r for r in cli_json("datasets")["datasets"]}
    assert rows["slimpajama7"]["rows"] == mixjax.load_dataset("slimpajama7").n_rows
    assert rows["pile4"]["domains"] == 4
    laws = {r["name"]: r for r in cli_json("laws", "--domains", "5")["laws"]}
    assert laws["capacity_noise"]["n_params"] == 5 * 5 + 1  # b, c, A, a, E per domain and one H


def test_fit_matches_python(saved, loaded, slim122):
    out, _ = saved
    f = mixjax.fit("capacity_noise", slim122, **FIT_KW)
    ev = f.evaluate(slim122)
    assert out["train_mre"] == pytest.approx(ev["mre"], rel=1e-12)
    assert out["loss"] == pytest.approx(f.loss, rel=1e-12)
    assert out["n_params"] == 36 and out["n_rows"] == 60
    assert np.allclose(out["params"]["E"], np.asarray(f.params()["E"]), rtol=1e-12)
    # the saved fit is that fit
    assert np.array_equal(loaded.predict(slim122), f.predict(slim122))
    assert loaded.info["seed"] == 0 and loaded.config.optimizer == "adam" and loaded.config.max_steps == 50


# --------------------------------------------------------------------------- predict
def test_predict_mixture(saved, loaded):
    _, path = saved
    w = np.array([0.1, 0.05, 0.3, 0.1, 0.25, 0.1, 0.1])
    out = cli_json("predict", path, "--mixture", ",".join(map(str, w)), "--model-size", "122M", "--tokens", "9.998B")
    ref = np.asarray(loaded.law.predict(jnp.asarray(w[None]), 122.0, 9.998))[0]
    assert np.allclose(list(out["predicted"].values()), ref, rtol=1e-13, atol=0)
    assert out["mean"] == pytest.approx(ref.mean(), rel=1e-13)
    assert out["notes"] == []
    # name=weight pairs, slightly off 1: renormalized (with a note) to the same mixture
    pairs = ",".join(f"{d}={1.004 * x}" for d, x in zip(out["domains"], w))
    out2 = cli_json("predict", path, "--mixture", pairs, "-N", "1.22e8", "-D", "9998000000")
    assert np.allclose(list(out2["predicted"].values()), ref, rtol=1e-12)
    assert "renormalized" in out2["notes"][0]


def test_predict_with_ensemble(loaded, tmp_path):
    ens = loaded.starts.law  # any batched law of the fit's class works as an ensemble (R = 2 here)
    mixjax.save_fit(tmp_path / "e.mixfit", loaded, ensemble=ens)
    out = cli_json("predict", tmp_path / "e.mixfit", "--mixture", "c4=0.4,commoncrawl=0.3,wikipedia=0.3", "-N", "122M", "-D", "9.998B")
    h = np.zeros((1, 7))
    h[0, [2, 4, 6]] = [0.4, 0.3, 0.3]
    members = np.stack([np.asarray(jax.tree_util.tree_map(lambda x: x[r], ens).predict(jnp.asarray(h), 122.0, 9.998))[0] for r in range(2)])
    lo, hi = np.quantile(members, [0.05, 0.95], axis=0)  # numpy's linear interpolation between the two members
    got = np.array(list(out["interval_90"].values()))
    assert np.allclose(got[:, 0], lo, rtol=1e-12) and np.allclose(got[:, 1], hi, rtol=1e-12)


def test_predict_data_rows(saved, loaded, slim122, tmp_path):
    _, path = saved
    rows = slim122.subset(np.arange(5))
    df = rows.to_dataframe()
    df = df[list(df.columns[::-1])]  # columns in another order: matched by name
    df.to_csv(tmp_path / "rows.csv", index=False)
    out = cli_json("predict", path, "--data", tmp_path / "rows.csv")
    pred = np.array([list(r["predicted"].values()) for r in out["rows"]])
    assert np.allclose(pred, loaded.predict(rows), rtol=1e-13, atol=0)
    obs = rows.losses[:, : rows.n_domains]  # the 7 domain targets come first in the file
    counted = rows.mixtures > 0  # the fit's rule: cells of zero-weight domains are not scored
    assert out["mre"] == pytest.approx(float(np.mean((np.abs(pred - obs) / obs)[counted])), rel=1e-12)
    assert out["mre"] == pytest.approx(loaded.evaluate(rows)["mre"], rel=1e-12)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["predict", "nope.mixfit", "--mixture", "1"], ["predict", "nope.mixfit"]),
        (["fit", "no_such_data.csv"], ["no_such_data.csv"]),
        (["fit", *FIT_ARGS, "--law", "no_such_law"], ["unknown law", "no_such_law"]),
        (["predict", "FIT", "--mixture", "0.5,0.2,0.1,0,0,0,0", "-N", "122M", "-D", "9.998B"], ["sum to 0.8"]),
        (["predict", "FIT", "--mixture", "c4=1.1,book=-0.1", "-N", "122M", "-D", "9.998B"], ["book", "negative"]),
        (["predict", "FIT", "--mixture", "c4=0.5,books=0.5", "-N", "122M", "-D", "9.998B"], ["unknown domain", "books"]),
        (["predict", "FIT", "--mixture", "0.5,0.5", "-N", "122M", "-D", "9.998B"], ["2 weights", "7 domains"]),
        (["predict", "FIT", "--mixture", "c4=1", "-N", "122 apples", "-D", "9.998B"], ["122 apples"]),
        (["predict", "FIT", "--mixture", "c4=1", "-D", "9.998B"], ["--model-size"]),
        (["plot", "line", "FIT", "--start", "c4=1"], ["--start and --end"]),
    ],
)
def test_bad_input(saved, args, words):
    args = [str(saved[1]) if a == "FIT" else a for a in args]
    rc, out, err = cli(*args)
    assert rc == 2 and out == ""
    assert_one_line_error(rc, err, *words)


def test_not_a_fit_file(tmp_path):
    (tmp_path / "x.csv").write_text("weight_a,a_loss\n1,2\n")
    assert_one_line_error(*cli("predict", tmp_path / "x.csv", "--mixture", "1")[::2], "not a mixjax fit file")


# --------------------------------------------------------------------------- plots
PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_pred_vs_obs_and_line(saved, loaded, tmp_path):
    fit_out, path = saved
    out = cli_json("plot", "pred-vs-obs", path, "--data", "slimpajama7", "-N", "122M", "-D", "9.998B", "--out", tmp_path / "pvo.png")
    assert (tmp_path / "pvo.png").read_bytes()[:8] == PNG
    assert out["n_rows"] == 60
    assert out["mre"] == pytest.approx(fit_out["train_mre"], rel=1e-12)  # the fit's own training error
    for t, v in fit_out["per_target_train_mre"].items():
        assert out["per_target_mre"][t] == pytest.approx(v, rel=1e-12)

    out = cli_json("plot", "line", path, "--start", "c4=0.5,commoncrawl=0.5", "--end", "c4=0.2,commoncrawl=0.2,wikipedia=0.2,book=0.2,arxiv=0.2", "--out", tmp_path / "line.svg")
    assert (tmp_path / "line.svg").read_text().lstrip().startswith("<?xml")
    a = np.zeros(7)
    a[[2, 4]] = 0.5
    start = np.asarray(loaded.law.predict(jnp.asarray(a[None]), 122.0, 9.998))[0]
    assert out["mean_at_start"] == pytest.approx(start.mean(), rel=1e-12)
    assert out["min_mean"] <= min(out["mean_at_start"], out["mean_at_end"])


@pytest.fixture(scope="module")
def three_domain(tmp_path_factory):
    """A known 3-domain capacity-noise law saved as a fit, and runs generated from it on a 1/20 grid."""
    law = mixjax.CapacityNoiseLaw.from_params(b=[0.3, 0.5, 0.4], c=[3.0, 5.0, 4.0], A=[0.5, 0.8, 0.3], a=[0.3, 0.2, 0.4],
                                              E=[1.5, 2.0, 1.0], H=5.0)
    p = np.array([(i, j, 20 - i - j) for i in range(1, 20) for j in range(1, 20 - i)], float) / 20
    y = np.asarray(law.predict(jnp.asarray(p), 122.0, 9.998))
    data = mixjax.from_arrays(p, y, 122e6, 9.998e9, domains=["x", "y", "z"], name="synthetic")
    batch = jax.tree_util.tree_map(lambda v: v[None], law)
    res = mixjax.FitResult(batch, jnp.zeros(1), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.zeros(1))
    info = {"law": "capacity_noise", "data": "synthetic", "domains": ["x", "y", "z"], "targets": ["x", "y", "z"],
            "scales": [[122e6, 9.998e9]], "mask_zero_weight": True, "seed": 0}
    fit = mixjax.Fit(law=law, loss=0.0, status=mixjax.Status.converged, num_steps=0, starts=res, config=mixjax.FitConfig(), info=info)
    d = tmp_path_factory.mktemp("three")
    mixjax.save_fit(d / "law3.mixfit", fit)
    data.to_dataframe().to_csv(d / "runs.csv", index=False)
    return d, law, data


def test_plot_ternary_three_domains(three_domain):
    d, law, data = three_domain
    out = cli_json("plot", "ternary", d / "law3.mixfit", "--data", d / "runs.csv", "--out", d / "tern.png", "--resolution", "40")
    assert (d / "tern.png").read_bytes()[:8] == PNG
    assert out["mre"] < 1e-12  # the runs were generated by the law itself
    h = np.array(out["argmin_mixture"])
    assert h.sum() == pytest.approx(1.0) and (h >= 0).all()
    at_min = np.asarray(law.predict(jnp.asarray(h[None]), 122.0, 9.998))[0].mean()
    assert out["min_mean"] == pytest.approx(at_min, rel=1e-12)
    # every run lies on the 1/40 grid, so the grid minimum is no larger than any run's mean loss
    assert out["min_mean"] <= data.losses.mean(1).min() + 1e-12
    assert out["domains"] == ["x", "y", "z"]
    # pred-vs-obs on the same runs: zero error
    assert cli_json("plot", "pred-vs-obs", d / "law3.mixfit", "--data", d / "runs.csv", "--out", d / "p.png")["mre"] < 1e-12
    # corners and centroid of the ternary layout, in closed form
    xy = barycentric_to_xy(np.vstack([np.eye(3), np.full(3, 1 / 3)]))
    assert np.allclose(xy, [[0, 0], [1, 0], [0.5, np.sqrt(3) / 2], [0.5, np.sqrt(3) / 6]])


def test_plot_ternary_needs_three_domains(saved):
    rc, _, err = cli("plot", "ternary", saved[1], "--out", "unused.png")
    assert_one_line_error(rc, err, "7 domains")


# --------------------------------------------------------------------------- optional sub-commands
OPTIONAL = [c for c in ("bootstrap", "optimize") if c in COMMAND_MODULES]


def check_bootstrap(slim122):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 50 steps stop before convergence, and bootstrap says so
        out = cli_json("bootstrap", *FIT_ARGS, "--resamples", "3")
    assert out["n_resamples"] == 3 and out["n_rows"] == 60
    entries = [v for vals in out["params"].values() for v in vals]
    assert len(entries) == 36
    assert all(v["lo"] <= v["hi"] for v in entries)


def check_optimize(slim122):
    out = cli_json("optimize", "slimpajama7", "--fit-model-size", "122M", "--fit-tokens", "9.998B", "-N", "122M", "-D", "9.998B",
                   "--starts", "2", "--max-steps", "50", "--mixture-starts", "2", "--floor", "0.02")
    h = np.array(list(out["mixture"].values()))
    assert h.sum() == pytest.approx(1.0, abs=1e-9) and (h >= 0.02 - 1e-9).all()
    f = mixjax.fit("capacity_noise", slim122, starts=2, max_steps=50, seed=0)
    pred = np.asarray(f.law.predict(jnp.asarray(h[None]), 122.0, 9.998))[0]
    assert np.allclose(list(out["predicted_loss"].values()), pred, rtol=1e-9)
    uniform = np.asarray(f.law.predict(jnp.full((1, 7), 1 / 7), 122.0, 9.998))[0]
    assert pred.mean() <= uniform.mean()


def test_optional_commands(slim122):
    """bootstrap and optimize, for those registered in this installation (tiny settings)."""
    for name in OPTIONAL:
        {"bootstrap": check_bootstrap, "optimize": check_optimize}[name](slim122)
    assert set(OPTIONAL) <= set(COMMAND_MODULES)


# --------------------------------------------------------------------------- console script
def test_console_script():
    exe = "mixjax"
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in COMMAND_MODULES:
        assert name in r.stdout
    r = subprocess.run([sys.executable, "-m", "mixjax.cli", "predict", "missing.mixfit", "--mixture", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "mixjax predict: error: no such fit file: missing.mixfit"
