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


@pytest.mark.filterwarnings("ignore:the best of 2 starts of capacity_noise on 'slimpajama7' stopped at max_steps=50:mixjax.MaxStepsWarning")
def test_fit_matches_python(saved, loaded, slim122):  # FIT_KW stops at 50 steps on purpose (a quick fit to compare)
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
    nonzero = h[0] > 0  # the capacity-noise law cannot predict a domain's loss at weight 0: null, with a reason
    iv = list(out["interval_90"].values())
    assert [v is None for v in iv] == list(~nonzero) and sorted(out["not_predicted"]) == ["arxiv", "book", "github", "stackexchange"]
    got = np.array([v for v in iv if v is not None])
    assert np.allclose(got[:, 0], lo[nonzero], rtol=1e-12) and np.allclose(got[:, 1], hi[nonzero], rtol=1e-12)


def test_predict_data_rows(saved, loaded, slim122, tmp_path):
    _, path = saved
    rows = slim122.subset(np.arange(5))
    df = rows.to_dataframe()
    df = df[list(df.columns[::-1])]  # columns in another order: matched by name
    df.to_csv(tmp_path / "rows.csv", index=False)
    out = cli_json("predict", path, "--data", tmp_path / "rows.csv")
    pred = np.array([[np.nan if v is None else v for v in r["predicted"].values()] for r in out["rows"]])
    counted = rows.mixtures > 0  # the fit's rule: cells of zero-weight domains are not scored (nor predicted)
    assert (np.isnan(pred) == ~counted).all()
    assert np.allclose(pred[counted], loaded.predict(rows)[counted], rtol=1e-13, atol=0)
    obs = rows.losses[:, : rows.n_domains]  # the 7 domain targets come first in the file
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

    out = cli_json("plot", "line", path, "--start", "c4=0.5,commoncrawl=0.5", "--end", "wikipedia=0.5,arxiv=0.5", "--out", tmp_path / "line.svg")
    assert (tmp_path / "line.svg").read_text().lstrip().startswith("<?xml")
    # the saved law's mean loss along h(t) = (1 - t) A + t B, at the plot's 101 points and on a 20x finer grid
    dom = loaded.info["domains"]
    a, b = np.zeros(7), np.zeros(7)
    a[[dom.index("c4"), dom.index("commoncrawl")]] = 0.5
    b[[dom.index("wikipedia"), dom.index("arxiv")]] = 0.5
    t, fine = np.linspace(0, 1, 101), np.linspace(0, 1, 2001)
    s = np.concatenate([t, fine])
    mean = np.asarray(loaded.law.predict(jnp.asarray((1 - s)[:, None] * a + s[:, None] * b), 122.0, 9.998)).mean(1)
    m, m_fine = mean[:101], mean[101:]
    assert out["mean_at_start"] == pytest.approx(m[0], rel=1e-12) and out["mean_at_end"] == pytest.approx(m[-1], rel=1e-12)
    assert out["t_min_mean"] == pytest.approx(t[np.argmin(m)], abs=1e-12) and out["min_mean"] == pytest.approx(m.min(), rel=1e-12)
    # the minimum lies inside the line (about t = 0.65 for this fit), and the 101 points find it to their spacing
    t_best = fine[np.argmin(m_fine)]
    assert 0.05 < t_best < 0.95 and abs(out["t_min_mean"] - t_best) <= 0.01
    assert out["min_mean"] - m_fine.min() < 1e-4


@pytest.fixture(scope="module")
def three_domain(tmp_path_factory):
    """A known 3-domain capacity-noise law saved as a fit, and runs generated from it on a 1/20 grid."""
    law = mixjax.CapacityNoiseLaw.from_params(b=[0.3, 0.5, 0.4], c=[3.0, 5.0, 4.0], A=[0.5, 0.8, 0.3], a=[0.3, 0.2, 0.4],
                                              E=[1.5, 2.0, 1.0], H=5.0)
    p = np.array([(i, j, 20 - i - j) for i in range(1, 20) for j in range(1, 20 - i)], float) / 20
    y = np.asarray(law.predict(jnp.asarray(p), 122.0, 9.998))
    data = mixjax.from_arrays(p, y, 122e6, 9.998e9, domains=["x", "y", "z"], name="synthetic")
    batch = jax.tree_util.tree_map(lambda v: v[None], law)
    res = mixjax.Solution(batch, jnp.zeros(1), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.zeros(1))
    info = {"law": "capacity_noise", "data": "synthetic", "domains": ["x", "y", "z"], "targets": ["x", "y", "z"],
            "scales": [[122e6, 9.998e9]], "mask_zero_weight": True, "seed": 0}
    fit = mixjax.Fit(law=law, loss=0.0, status=mixjax.Status.converged, num_steps=0, starts=res, config=mixjax.FitConfig(), record=mixjax.FitRecord.from_dict(info))
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


# --------------------------------------------------------------------------- bootstrap and optimize
def check_bootstrap(slim122, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 50 steps stop before convergence, and bootstrap says so
        out = cli_json("bootstrap", *FIT_ARGS, "--resamples", "3", "--save", tmp_path / "boot.mixfit")
    assert out["n_resamples"] == 3 and out["n_rows"] == 60 and out["n_failed"] == 0
    assert sum(len(vals) for vals in out["params"].values()) == 36
    # each interval is numpy's 5th and 95th percentiles of that parameter over the three saved resample fits
    ens = mixjax.load_ensemble(tmp_path / "boot.mixfit")
    members = [jax.tree_util.tree_map(lambda x, r=r: x[r], ens).params() for r in range(3)]
    for name, vals in out["params"].items():
        per_member = np.stack([np.ravel(m[name]) for m in members])
        lo, hi = np.percentile(per_member, [5, 95], axis=0)
        assert np.allclose([v["lo"] for v in vals], lo, rtol=1e-12, atol=0), name
        assert np.allclose([v["hi"] for v in vals], hi, rtol=1e-12, atol=0), name


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


@pytest.mark.slow  # real-data bootstrap and optimize through the CLI (about 25 s); the fuzz tests cover their errors
@pytest.mark.filterwarnings("ignore:the best of 2 starts of capacity_noise on 'slimpajama7' stopped at max_steps=50:mixjax.MaxStepsWarning")
def test_bootstrap_and_optimize_commands(slim122, tmp_path):  # the Python fit repeats the command's 50 steps
    """bootstrap and optimize on real data (tiny settings)."""
    check_bootstrap(slim122, tmp_path)
    check_optimize(slim122)


# --------------------------------------------------------------------------- console script
def test_console_script():
    exe = "mixjax"
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in COMMAND_MODULES:
        assert name in r.stdout
    r = subprocess.run([sys.executable, "-m", "mixjax.cli", "predict", "missing.mixfit", "--mixture", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "mixjax predict: error: no such fit file: missing.mixfit"


# --------------------------------------------------------------------------- messy input: one line, exit status 2
def tiny_frame(n=8, seed=0):
    """8 runs of a 3-domain table (weights, scale, 3 losses): the shape every quick fit below shares."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(3), n)
    return pd.DataFrame({"weight_a": h[:, 0], "weight_b": h[:, 1], "weight_c": h[:, 2], "model_size": 1e8, "n_tokens": 2e9,
                         "a_loss": 3.0 - h[:, 0], "b_loss": 3.2 - h[:, 1], "c_loss": 2.9 - 0.5 * h[:, 2]})


QUICK = ["--law", "loglinear", "--starts", "1", "--max-steps", "5", "--optimizer", "adam"]  # compiles in seconds


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    tiny_frame().to_csv(path, index=False)
    return path


def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        (None, ["fit", "DIR"], ["is a directory"]),
        (b"weight_a,a_loss\n0.5\xe9,2\n", ["fit", "FILE"], ["bad.csv", "not UTF-8", "0xe9"]),
        (b"weight_a,weight_b,a_loss,a_loss\n0.5,0.5,2,3\n", ["fit", "FILE"], ["duplicate column", "a_loss"]),
        (b"weight_a,weight_b,weight_decay,a_loss\n0.5,0.5,0.1,2\n", ["fit", "FILE"], ["weight_decay", "--domains"]),
        (b"weight_a,weight_b,a_loss\n0.5,0.35,2\n", ["fit", "FILE"], ["row 0 sums to 0.85", "weight_a, weight_b", "--sum-tol"]),
        (b"weight_a,weight_b,a_loss\n0.5,0.5,2\n", ["fit", "FILE", "--domains", "a,z"], ["domain(s) ['z']"]),
        (b"weight_a,weight_b,a_loss\n0.5,0.5,2\n", ["fit", "FILE", "--targets", "a,,b"], ["--targets", "empty name"]),
        (b"model_size,n_tokens,loss\n1e8,1e9,3\n", ["fit", "FILE", "--law", "capacity_noise"], ["capacity_noise", "no weight_<domain> columns"]),
        (b"", ["fit", "FILE"], ["bad.csv", "empty"]),
        (None, ["laws", "-K", "0"], ["--domains", "got 0"]),
        (None, ["laws", "-K", "x"], ["invalid int value"]),
        (None, ["fit", "TINY", "--val-fraction", "0"], ["--val-fraction", "strictly between 0 and 1"]),
        (None, ["fit", "TINY", "--val-fraction", "1.5"], ["--val-fraction"]),
        (None, ["fit", "TINY", "--sum-tol", "-1"], ["--sum-tol"]),
        (None, ["fit", "TINY", "--starts", "0"], ["--starts"]),
        (None, ["fit", "TINY", "--max-steps", "0"], ["--max-steps", "got 0"]),
        (None, ["optimize", "missing.csv", "--max-steps", "0"], ["--max-steps", "got 0"]),  # refused before the data are read
        (None, ["fit", "TINY", "--output", "OUTDIR/missing/f.mixfit"], ["--output", "does not exist"]),
        (None, ["fit", "TINY", "--output", "OUTDIR"], ["--output", "is a directory"]),
        (None, ["bootstrap", "TINY", "--plot", "OUTDIR/fig.txt"], ["--plot", ".png"]),
        (None, ["predict", "FIT", "--mixture", "c4=1", "-N", "1.2.3", "-D", "1B"], ["1.2.3"]),
        (None, ["plot", "pred-vs-obs", "FIT", "--data", "pile4", "--out", "OUTDIR/p.png"], ["pile4", "no weight column for domain(s)"]),
        (None, ["plot", "pred-vs-obs", "FIT", "--data", "slimpajama7", "--out", "OUTDIR/missing/p.png"], ["--out", "does not exist"]),
    ],
)
def test_messy_input_is_one_line_exit_2(saved, tiny_csv, tmp_path, make, args, words):
    subst = {"DIR": str(tmp_path), "FILE": str(tmp_path / "bad.csv"), "TINY": str(tiny_csv), "FIT": str(saved[1])}
    if make is not None:
        write(tmp_path / "bad.csv", make)
    args = [subst.get(a, a.replace("OUTDIR", str(tmp_path))) for a in args]
    before = set(tmp_path.iterdir())
    quick = args[0] in ("fit", "bootstrap") and args[1] == str(tiny_csv)
    rc, out, err = cli(*args[:2], *QUICK, *args[2:]) if quick else cli(*args)  # the case's own value wins
    assert rc == 2 and out == "", (out, err)
    assert "Traceback" not in err
    assert_one_line_error(rc, err, *words)
    assert set(tmp_path.iterdir()) == before  # nothing written


def test_a_long_error_keeps_its_start_and_its_end(tmp_path):
    """A message longer than 400 characters (a deep path) keeps both the file it names and what was wrong."""
    deep = tmp_path.joinpath(*["d" * 60] * 8)
    deep.mkdir(parents=True)
    rc, out, err = cli("fit", deep)
    assert_one_line_error(rc, err, str(deep), "is a directory")
    assert len(err.strip()) > 400


def damaged_copies(path, tmp_path):
    """A saved fit with one flipped byte in its law's values, and one whose first parameter was set to NaN (with its
    checksum recomputed, as a careful forger would)."""
    import hashlib
    import zipfile

    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    at = bytes(raw).index(members["law.eqx"][-40:])
    raw[at + 3] ^= 0x01
    write(tmp_path / "flipped.mixfit", bytes(raw))
    law = mixjax.load_fit(path).law
    flat, treedef = jax.tree_util.tree_flatten(law)
    flat[0] = jnp.asarray(flat[0]).at[0].set(jnp.nan)
    import equinox as eqx

    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, jax.tree_util.tree_unflatten(treedef, flat))
    header = json.loads(members["header.json"])
    header["checksums"]["law.eqx"] = hashlib.sha256(buf.getvalue()).hexdigest()
    members.update({"law.eqx": buf.getvalue(), "header.json": json.dumps(header).encode()})
    members["header.sha256"] = (hashlib.sha256(members["header.json"]).hexdigest() + "  header.json\n").encode()
    with zipfile.ZipFile(tmp_path / "nan.mixfit", "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return tmp_path / "flipped.mixfit", tmp_path / "nan.mixfit"


def test_damaged_fit_files_are_refused(saved, tmp_path):
    flipped, nan = damaged_copies(saved[1], tmp_path)
    mix = ["--mixture", "c4=1", "-N", "122M", "-D", "9.998B"]
    assert_one_line_error(*cli("predict", flipped, *mix)[::2], "flipped.mixfit", "law.eqx", "damaged")
    assert_one_line_error(*cli("predict", nan, *mix)[::2], "nan.mixfit", "non-finite parameters")
    assert_one_line_error(*cli("plot", "line", nan, "--start", "c4=1", "--end", "book=1", "--out", tmp_path / "l.png")[::2], "non-finite")
    assert_one_line_error(*cli("predict", tmp_path, *mix)[::2], "is a directory")
    assert not (tmp_path / "l.png").exists()


def test_broken_pipe_ends_quietly(monkeypatch):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", Closed())
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["laws"]) == 141
    assert err.getvalue() == ""


def test_unexpected_exception_is_one_line_unless_debugging(monkeypatch):
    import mixjax.cli.laws as laws_cmd

    def boom(args):
        raise AttributeError("something inside broke\nsecond line")

    monkeypatch.setattr(laws_cmd, "run", boom)
    rc, out, err = cli("laws")
    assert rc == 2 and err == "mixjax laws: internal error: AttributeError: something inside broke second line\n"
    monkeypatch.setenv("MIXJAX_DEBUG", "1")
    with pytest.raises(AttributeError, match="something inside broke"):
        main(["laws"])


def test_same_inputs_same_bytes(tiny_csv, tmp_path):
    """`fit --json --output` twice: byte-identical JSON and fit files; wall-clock seconds only with --timings."""
    outs = []
    for name in ("f1.mixfit", "f2.mixfit"):
        rc, out, err = cli("fit", tiny_csv, *QUICK, "--json", "--output", tmp_path / name)
        assert rc == 0, err
        outs.append(out.replace(name, "F"))
    assert outs[0] == outs[1]
    assert (tmp_path / "f1.mixfit").read_bytes() == (tmp_path / "f2.mixfit").read_bytes()
    assert "seconds" not in outs[0] and "NaN" not in outs[0]
    rc, out, _ = cli("fit", tiny_csv, *QUICK, "--json", "--timings")
    assert rc == 0 and json.loads(out)["seconds"] > 0


def test_fit_json_counts_cells(tiny_csv, tmp_path):
    """n_cells_used / excluded / nonfinite and the all-cells MRE, train and validation, against numpy."""
    df = tiny_frame()
    df.loc[2, "b_loss"] = np.nan  # one missing cell: neither used nor excluded, not measured
    df["train_loss"] = 2.5  # a target like any other unless excluded; the fit says which it picked up
    df.to_csv(tmp_path / "t.csv", index=False)
    rc, out, err = cli("fit", tmp_path / "t.csv", *QUICK, "--json", "--val-fraction", "0.25", "--output", tmp_path / "f.mixfit")
    assert rc == 0, err
    assert "targets a, b, c, train" in err
    res = json.loads(out)
    f = mixjax.load_fit(tmp_path / "f.mixfit")
    with pytest.warns(UserWarning, match="train_loss hold one value in all their measured rows"):
        data = mixjax.load_csv(tmp_path / "t.csv")
    train, val = data.split_rows(0.25, seed=0)
    assert res["n_cells_used"] == {"train": int(train.mask.sum()), "val": int(val.mask.sum())}
    assert res["n_cells_used"]["train"] + res["n_cells_used"]["val"] == 8 * 4 - 1
    assert res["n_cells_excluded"] == {"train": 0, "val": 0} and res["n_cells_nonfinite"] == {"train": 0, "val": 0}
    for d, key in ((train, "train"), (val, "val")):
        p, y = f.predict(d), d.losses
        m = np.isfinite(y)
        assert res[f"{key}_mre_all"] == pytest.approx(np.mean(np.abs(p - y)[m] / y[m]), rel=1e-12)
        assert res[f"{key}_mre"] == pytest.approx(f.evaluate(d)["mre"], rel=1e-12)
        for j, t in enumerate(d.targets):
            assert res["cells"][key]["per_target"][t]["n_cells_used"] == int(m[:, j].sum())
    # a zero-weight domain's loss is measured but excluded by a per-domain law's mask: counted as excluded
    from mixjax.metrics import cell_report

    pred = np.array([[2.0, np.inf], [2.0, 3.0], [1.0, 3.0]])
    obs = np.array([[2.0, 3.0], [4.0, np.nan], [2.0, 3.0]])
    used = np.array([[True, True], [True, True], [False, True]])
    rep = cell_report(pred, obs, used, ["x", "y"])
    assert (rep["n_cells_measured"], rep["n_cells_used"], rep["n_cells_excluded"], rep["n_cells_nonfinite"]) == (5, 4, 1, 1)
    assert rep["mre"] is None and rep["mre_all"] is None  # an infinite prediction is never averaged away
    assert rep["per_target"]["x"]["mre"] == pytest.approx(0.25) and rep["per_target"]["x"]["mre_all"] == pytest.approx((0.5 + 0.5) / 3)
    assert rep["per_target"]["y"]["n_cells_nonfinite"] == 1 and rep["per_target"]["y"]["mre"] is None
    json.dumps(rep, allow_nan=False)


def test_explicit_columns_and_sum_tol(tiny_csv, tmp_path):
    df = tiny_frame()
    df["weight_decay"] = 0.1
    df.to_csv(tmp_path / "wd.csv", index=False)
    rc, _, err = cli("fit", tmp_path / "wd.csv", *QUICK, "--json")
    assert_one_line_error(rc, err, "weight_decay", "--domains")
    out = cli_json("fit", tmp_path / "wd.csv", *QUICK, "--domains", "a,b,c", "--targets", "a,b", "c")
    assert out["domains"] == ["a", "b", "c"] and out["targets"] == ["a", "b", "c"]
    df = tiny_frame()
    df[["weight_a", "weight_b", "weight_c"]] *= 0.95
    df.to_csv(tmp_path / "off.csv", index=False)
    assert_one_line_error(*cli("fit", tmp_path / "off.csv", *QUICK)[::2], "sums to 0.95", "weight_a, weight_b, weight_c", "--sum-tol")
    rc, out, err = cli("fit", tmp_path / "off.csv", *QUICK, "--sum-tol", "0.06", "--json")
    assert rc == 0 and "warning: " in err and "renormalized" in err
    ref = cli_json("fit", tiny_csv, *QUICK)
    got = json.loads(out)["params"]
    for k, v in ref["params"].items():  # renormalized to the same mixtures (to rounding)
        assert np.allclose(got[k], v, rtol=1e-9, atol=1e-12), k


def test_per_domain_law_names_domains_without_loss(tmp_path):
    df = tiny_frame().drop(columns=["n_tokens", "c_loss"])
    df["openhermes_loss"] = 2.0
    df.to_csv(tmp_path / "t.csv", index=False)
    rc, _, err = cli("fit", tmp_path / "t.csv", "--law", "capacity_noise")
    lines = err.strip().splitlines()
    assert rc == 2
    assert any("warning:" in ln and "['openhermes_loss']" in ln and "match no domain" in ln for ln in lines), err
    assert any("warning:" in ln and "domain(s) ['c']" in ln and "no loss column" in ln for ln in lines), err
    assert "needs n_tokens" in lines[-1]  # the law then refuses the rows without a token count


def test_table_without_mixtures(tmp_path):
    write(tmp_path / "c.csv", "model_size,n_tokens,loss\n" + "".join(f"{n:.6g},{d:.6g},{1.7 + 400 / n ** 0.34 + 400 / d ** 0.28:.6f}\n"
                                                                       for n in (1e8, 3e8, 1e9) for d in (2e9, 8e9, 3e10)))
    out = cli_json("fit", tmp_path / "c.csv", "--law", "chinchilla", "--starts", "2", "--max-steps", "200", "--output", tmp_path / "c.mixfit")
    assert out["domains"] == [] and out["targets"] == ["loss"] and out["n_cells_used"]["train"] == 9
    # the table was generated from E = 1.7, A = B = 400, alpha = 0.34, beta = 0.28 (raw counts), rounded to 1e-6
    assert out["status"] == "converged"
    p = {k: float(np.ravel(v)[0]) for k, v in mixjax.load_fit(tmp_path / "c.mixfit").law.raw_count_params().items()}
    assert p["E"] == pytest.approx(1.7, abs=1e-4) and p["alpha"] == pytest.approx(0.34, abs=1e-4) and p["beta"] == pytest.approx(0.28, abs=1e-4)
    assert p["A"] == pytest.approx(400, rel=1e-3) and p["B"] == pytest.approx(400, rel=1e-3)


def test_command_line_turns_on_float64_itself(saved, loaded):
    """The command line does not rely on importing mixjax to enable float64: a float64 fit loads and predicts."""
    before = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        rc, out, err = cli("predict", saved[1], "--mixture", "0.1,0.1,0.3,0.1,0.2,0.1,0.1", "-N", "122M", "-D", "9.998B", "--json")
        assert rc == 0, err
        assert jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", before)
    # the float64 law's own prediction, to float64 rounding
    w = np.array([0.1, 0.1, 0.3, 0.1, 0.2, 0.1, 0.1])
    ref = np.asarray(loaded.law.predict(jnp.asarray(w[None]), 122.0, 9.998))[0]
    assert np.allclose(list(json.loads(out)["predicted"].values()), ref, rtol=1e-13, atol=0)


def test_table_prints_a_coefficient_at_its_bound_as_zero():
    """Coefficients at their non-negativity bound are stored as log(tiny); tables print them as 0, and nothing else."""
    import numpy as np

    from mixjax.cli._common import format_table

    row = [float(np.finfo(np.float64).tiny), float(np.finfo(np.float32).tiny), 1e-30, 2.5e-308, 0.1234567]
    cells = format_table([row], ["a", "b", "c", "d", "e"]).splitlines()[2].split()
    assert cells == ["0", "0", "1e-30", "2.5e-308", "0.1235"]


def test_the_max_steps_help_states_the_default_limits():
    """The ``--max-steps`` help of every command that fits states the limits :func:`default_max_steps` applies (the
    help is spelled out so that building the parser imports no JAX; this keeps the two in step)."""
    import argparse
    import re

    from mixjax.cli import build_parser
    from mixjax.fitting import default_max_steps

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {name: next((a.help for a in p._actions if "--max-steps" in a.option_strings), None) for name, p in sub.choices.items()}
    helps = {name: h for name, h in helps.items() if h is not None}
    assert {"fit", "optimize", "suggest"} <= set(helps)
    for name, text in helps.items():
        numbers = [int(x) for x in re.findall(r"\d+", text)]
        assert numbers == [default_max_steps(1), default_max_steps(51), 50, default_max_steps(201), 200, default_max_steps(1001), 1000], (name, text)
