"""Input validation shared by the command line and the Python API: an output never replaces an input, a device or a
FIFO; model sizes and token counts are checked for their units; domains and targets are matched by name; tables
that cannot be fitted meaningfully are refused. Property-based (hypothesis) where a rule holds for every input, with
one regression case per class.

One small fit (the log-linear law, one start, 30 Adam steps) serves the module, so every prediction below reuses one
compiled program."""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import stat
import tempfile
import warnings

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "mixjax-hypothesis"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax._paths import OutputPathError, atomic_write, check_output_target  # noqa: E402
from mixjax.cli import main  # noqa: E402
from mixjax.units import FAR_EXTRAPOLATION, ScaleError, ScaleExtrapolationWarning, check_scale, extrapolation  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
QUICK = ["--law", "loglinear", "--starts", "1", "--max-steps", "5", "--optimizer", "adam"]


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def digest(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def slim(slim122):
    train, val = slim122.split_rows(0.2, seed=0)
    return train, val


@pytest.fixture(scope="module")
def small_fit(slim):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mj.MaxStepsWarning)  # 30 steps are plenty for these checks, not a minimum
        return mj.fit("loglinear", slim[0], starts=1, max_steps=30, optimizer="adam", seed=0)


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory, slim):
    path = tmp_path_factory.mktemp("valid") / "train.csv"
    slim[0].to_dataframe().to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("command", [["fit", *QUICK, "--output"], ["bootstrap", *QUICK, "--resamples", "2", "--save"]])
def test_an_output_path_that_is_an_input_is_refused_and_the_input_kept(train_csv, tmp_path, command):
    before = digest(train_csv)
    link = tmp_path / "same_file.csv"
    os.link(train_csv, link)  # another name of the same file counts as the input too
    for target in (train_csv, link):
        rc, out, err = run(command[0], train_csv, *command[1:], target)
        assert rc == 2 and "is the input file" in err and "Traceback" not in err, err
    assert digest(train_csv) == before


def test_devices_fifos_and_folders_are_never_written(train_csv, tmp_path):
    fifo = tmp_path / "pipe.mixfit"
    os.mkfifo(fifo)
    for target, what in ((os.devnull, "character device"), (fifo, "FIFO"), (tmp_path, "directory")):
        rc, _, err = run("fit", train_csv, *QUICK, "--output", target)
        assert rc == 2 and what in err, err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)


@SETTINGS
@given(st.text(alphabet="abcdefghij_-.", min_size=1, max_size=12).filter(lambda s: s not in (".", "..")))
def test_check_output_target_refuses_exactly_the_inputs(name):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        assert check_output_target(path) == path  # a fresh name in a writable folder
        with open(path, "w") as f:
            f.write("x")
        assert check_output_target(path) == path  # an earlier file that is not an input may be replaced
        with pytest.raises(OutputPathError, match="is the input file"):
            check_output_target(path, inputs=[os.path.join(d, "other.csv"), path])


def test_written_files_get_the_mode_of_a_new_file(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.txt", lambda tmp: pathlib.Path(tmp).write_text("ok"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "out.txt").st_mode) == 0o644


# --------------------------------------------------------------------------- units and scale
def table(model_size, n_tokens=2e9, n=4):
    h = np.array([[0.5, 0.5], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])[:n]
    return mj.from_arrays(h, 3.0 - h, model_size, n_tokens, domains=["a", "b"])


@SETTINGS
@given(st.floats(1.0, 9999.0), st.floats(1e4, 1e14))
def test_model_sizes_in_millions_are_refused_and_raw_counts_kept(small, raw):
    with pytest.raises(mj.DataError, match="looks like millions of parameters"):
        table(small)
    assert table(raw).model_size[0] == raw


@SETTINGS
@given(st.floats(0.5, 99999.0))
def test_token_counts_in_billions_are_refused(small):
    with pytest.raises(mj.DataError, match="looks like billions of tokens"):
        table(1e8, small)


def test_a_column_mixing_units_is_named():
    with pytest.raises(mj.DataError, match="mixes units"):
        table([1.22e8, 122.0, 1.22e8, 1.22e8])
    with pytest.raises(mj.DataError, match="above the plausible"):
        table(1e308)


def test_law_units_are_checked_and_raw_counts_give_the_same_optimum(small_fit):
    with pytest.raises(ScaleError, match="is 1300 here"):
        mj.optimize_mixture(small_fit, model_size=1.3e9, n_tokens=30.0, check_fixed=False)
    ignored = "law loglinear does not depend on the (model size|token count)"  # the units are checked all the same
    with pytest.warns(mj.DegenerateOptimumWarning, match=ignored):
        a = mj.optimize_mixture(small_fit, model_size=1300.0, n_tokens=30.0, check_fixed=False, starts=2)
    with pytest.warns(mj.DegenerateOptimumWarning, match=ignored):
        b = mj.optimize_mixture(small_fit, raw_model_size=1.3e9, raw_n_tokens=3e10, check_fixed=False, starts=2)
    np.testing.assert_allclose(a.mixture, b.mixture, atol=1e-12)


@SETTINGS
@given(st.floats(1e4, 1e14), st.floats(1e4, 1e14), st.floats(1e4, 1e14))
def test_extrapolation_factor(v, a, b):
    lo, hi = min(a, b), max(a, b)
    r = extrapolation(v, [lo, hi, np.nan], "model_size")
    expected = v / hi if v > hi else (lo / v if v < lo else 1.0)
    assert r["factor"] == pytest.approx(expected, rel=1e-12) and r["factor"] >= 1.0
    assert r["far"] == (expected > FAR_EXTRAPOLATION)
    assert (r["fitted_min"], r["fitted_max"]) == (lo, hi)


def test_check_scale_in_law_units_names_the_raw_equivalent():
    check_scale(1300.0, "model_size", units="law")
    with pytest.raises(ScaleError, match="is 30 here"):
        check_scale(3e10, "n_tokens", units="law")


def test_predict_refuses_implausible_scales_and_reports_extrapolation(small_fit, tmp_path):
    path = tmp_path / "f.mixfit"
    mj.save_fit(path, small_fit)
    mix = "arxiv=0.2,book=0.1,c4=0.2,github=0.1,commoncrawl=0.2,stackexchange=0.1,wikipedia=0.1"
    for n, words in (("1", "looks like millions"), ("1e30", "above the plausible")):
        rc, _, err = run("predict", path, "--mixture", mix, "-N", n, "-D", "30B")
        assert rc == 2 and words in err, err
    rc, out, err = run("predict", path, "--mixture", mix, "-N", "122M", "-D", "9.998B", "--json")
    rep = json.loads(out)["scale_extrapolation"]
    assert rc == 0 and rep["model_size"]["factor"] == 1.0 and not rep["n_tokens"]["far"]
    rc, out, err = run("predict", path, "--mixture", mix, "-N", "122M", "-D", "9.998T", "--json")
    rep = json.loads(out)["scale_extrapolation"]["n_tokens"]
    assert rc == 0 and rep["far"] and rep["factor"] == pytest.approx(1000.0) and "1e+03x above" in err


def test_fit_predict_warns_far_outside_the_fitted_scales(small_fit, slim):
    far = slim[1].subset(np.arange(3))
    far = mj.from_arrays(far.mixtures, far.losses, 122e6, 9.998e13, domains=far.domains, targets=far.targets)
    with pytest.warns(ScaleExtrapolationWarning, match="above the largest fitted"):
        small_fit.predict(far)


# --------------------------------------------------------------------------- names, not positions
def permuted(data, order, rename=None):
    df = data.to_dataframe()
    w = [c for c in df.columns if c.startswith("weight_")]
    loss = [c for c in df.columns if c.endswith("_loss")]
    df = df[[c for c in df.columns if c not in w + loss] + [w[i] for i in order] + loss[::-1]]
    return mj.from_dataframe(df.rename(columns=rename or {}), name="permuted")


@SETTINGS
@given(st.permutations(range(7)))
def test_domains_and_targets_are_matched_by_name(small_fit, slim, order):
    val = slim[1]
    ref_pred, ref = small_fit.predict(val), small_fit.evaluate(val)
    other = permuted(val, order)
    np.testing.assert_allclose(small_fit.predict(other), ref_pred, rtol=1e-12)
    assert small_fit.evaluate(other)["mre"] == pytest.approx(ref["mre"], rel=1e-12)


def test_other_domain_or_target_names_are_refused(small_fit, slim):
    with pytest.raises(mj.DataError, match=r"missing here: \['c4'\]"):
        small_fit.predict(permuted(slim[1], range(7), {"weight_c4": "weight_c5"}))
    with pytest.raises(mj.DataError, match="no loss column for target"):
        small_fit.evaluate(slim[1].select_targets(["c4", "book"]))


@SETTINGS
@given(st.floats(0.05, 20.0).filter(lambda s: abs(s - 1) > 1e-3), st.integers(0, 6))
def test_law_predict_checks_mixtures(small_fit, scale, j):
    law = small_fit.law
    h = np.full((2, 7), 1 / 7)
    one = np.asarray(law(np.asarray(h[0]), np.asarray(122.0), np.asarray(10.0)))  # the law called on one run
    np.testing.assert_allclose(np.asarray(law.predict(h, 122.0, 10.0)), np.stack([one, one]), rtol=1e-12)
    with pytest.raises(ValueError, match="sums to"):
        law.predict(h * scale, 122.0, 10.0)
    bad = h.copy()
    bad[1, j] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        law.predict(bad, 122.0, 10.0)
    with pytest.raises(ValueError, match="2-D"):
        law.predict(h[0], 122.0, 10.0)


# --------------------------------------------------------------------------- tables that cannot be fitted
def test_tables_without_information_are_refused():
    h = np.array([[0.5, 0.5], [0.2, 0.8], [0.7, 0.3]])
    y = 3.0 - h
    with pytest.raises(mj.DataError, match="all 60 rows are identical"):
        mj.from_arrays(np.tile(h[:1], (60, 1)), np.tile(y[:1], (60, 1)), 1e8, 2e9)
    with pytest.raises(mj.DataError, match="hold no measured value"):
        mj.from_arrays(h, np.column_stack([y[:, 0], np.full(3, np.nan)]), 1e8, 2e9)
    with pytest.raises(mj.DataError, match="outside the plausible range"):
        mj.from_arrays(h, y * 1e-310, 1e8, 2e9)


@SETTINGS
@given(st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_repeated_rows_are_counted(copies):
    base = table(1e8)
    idx = np.concatenate([np.arange(4), np.asarray(copies)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mj.from_arrays(base.mixtures[idx], base.losses[idx], 1e8, 2e9)
    msgs = [str(w.message) for w in caught if "repeat an earlier row" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith(f"data: {len(copies)} row(s)")


def test_a_ceiling_below_the_laws_min_weight_is_refused_before_fitting():
    rc, out, err = run("optimize", "slimpajama7", "--fit-model-size", "122M", "--fit-tokens", "9.998B", "--law", "capacity_noise",
                       "-N", "1.3B", "-D", "30B", "--ceiling", "commoncrawl=0")
    assert rc == 2 and "min_weight" in err and "commoncrawl" in err and "fitting" not in err, err
    assert mj.get_law("capacity_noise").min_weight == pytest.approx(1e-4)


# --------------------------------------------------------------------------- second pass: links, devices, same-named outputs
def test_links_are_written_through_and_device_links_refused(tmp_path):
    target = tmp_path / "user_file.txt"
    target.write_text("mine")
    link = tmp_path / "out.mixfit"
    os.symlink(target, link)
    atomic_write(link, lambda tmp: pathlib.Path(tmp).write_text("new"))
    assert os.path.islink(link) and target.read_text() == "new"  # the link stays a link
    for path in ("/dev/stdout", "/proc/self/fd/1"):
        with pytest.raises(OutputPathError, match="system device path"):
            check_output_target(path)
    pkg_file = os.path.join(os.path.dirname(mj.__file__), "datasets", "pile4_mixtures.csv")
    with pytest.raises(OutputPathError, match="inside the installed mixjax package"):
        check_output_target(pkg_file)
    ro = tmp_path / "ro.mixfit"
    ro.write_text("x")
    os.chmod(ro, 0o444)
    with pytest.raises(OutputPathError, match="read-only"):
        check_output_target(ro)
    with pytest.raises(OutputPathError, match="folder"):
        check_output_target(tmp_path / "missing" / ".." / "x.mixfit")
    with pytest.raises(OutputPathError, match="no name before its extension"):
        check_output_target(tmp_path / ".png", suffixes=(".png",))


def test_cli_outputs_empty_or_shared_names_and_pipe_inputs(train_csv, tmp_path):
    rc, _, err = run("fit", train_csv, *QUICK, "--output", "")
    assert rc == 2 and "is empty" in err
    rc, _, err = run("bootstrap", train_csv, *QUICK, "--resamples", "2", "--save", tmp_path / "b.png", "--plot", tmp_path / "b.png")
    assert rc == 2 and "name the same file" in err and not (tmp_path / "b.png").exists()
    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)
    rc, _, err = run("fit", fifo, *QUICK)  # would block reading a pipe
    assert rc == 2 and "not a regular file" in err


def test_cli_bootstrap_saves_its_resamples(train_csv, tmp_path):
    rc, out, err = run("bootstrap", train_csv, *QUICK, "--resamples", "3", "--save", tmp_path / "b.mixfit", "--json")
    assert rc == 0, err
    ens = mj.load_ensemble(tmp_path / "b.mixfit")
    assert json.loads(out)["n_resamples"] == 3 and np.shape(ens.t)[0] == 3


def test_dataframes_are_matched_by_column_name(small_fit, slim):
    val = slim[1]
    df = val.to_dataframe()[[f"weight_{d}" for d in reversed(val.domains)]]
    with pytest.raises(TypeError, match="read by position"):
        small_fit.law.predict(df, 122.0, 10.0)
    np.testing.assert_allclose(mj.mixture_frame(df, val.domains), val.mixtures, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a domain"):
        mj.mixture_frame(df.rename(columns={"weight_c4": "weight_c5"}), val.domains)
    # loglinear uses no scale (none given); the warning shows the measured mixtures were read, from either form
    with pytest.warns(mj.ExtrapolationWarning, match="extrapolates beyond the measured mixtures: .* of the 12 measured"):
        a = mj.optimize_mixture(small_fit, measured=df, within_measured=True, starts=2, check_fixed=False)
    with pytest.warns(mj.ExtrapolationWarning, match="extrapolates beyond the measured mixtures: .* of the 12 measured"):
        b = mj.optimize_mixture(small_fit, measured=val.mixtures, within_measured=True, starts=2, check_fixed=False)
    np.testing.assert_allclose(a.mixture, b.mixture, atol=1e-12)


def test_predict_data_scale_override_and_min_weight(tmp_path):
    pile = mj.load_dataset("pile4")
    path = tmp_path / "p4.csv"
    pile.to_dataframe().to_csv(path, index=False)
    fit = tmp_path / "p4.mixfit"
    rc, _, err = run("fit", path, *QUICK, "--output", fit)
    assert rc == 0, err
    rc, _, err = run("predict", fit, "--data", path, "-N", "200M")
    assert rc == 2 and "would replace the model_size column" in err
    rc, _, err = run("fit", "pile4", "--law", "capacity_noise", "--starts", "1", "--max-steps", "5", "--optimizer", "adam",
                     "--output", tmp_path / "cn.mixfit")
    assert rc == 0, err
    rc, out, err = run("predict", tmp_path / "cn.mixfit", "-m", "github=1e-6,gutenberg=0.3,stackexchange=0.3,wikipedia=0.399999",
                       "-N", "200M", "-D", "4B", "--json")
    res = json.loads(out)
    assert rc == 0 and res["predicted"]["github"] is None and res["predicted"]["wikipedia"] is not None and "min_weight" in err


def test_optimize_checks_its_settings_before_fitting():
    base = ["optimize", "slimpajama7", "-N", "1.3B", "-D", "30B", "--law", "loglinear"]
    for extra, words in ((["--level", "2"], "--level must lie"), (["--target", "nope"], "not one of the law's targets"),
                         (["--target-weights", "nope=2"], "not among the law's targets")):
        rc, _, err = run(*base, *extra)
        assert rc == 2 and words in err and "fitting" not in err, err


def test_scores_that_rise_with_scale_are_warned():
    pile = mj.load_dataset("pile4")
    with pytest.warns(UserWarning, match="rises with model size or tokens"):
        mj.from_arrays(pile.mixtures, 1.0 / pile.losses, pile.model_size, pile.n_tokens, domains=pile.domains, targets=pile.targets)


def test_optima_not_set_by_the_law_are_warned(small_fit):
    K = len(small_fit.info["domains"])
    with pytest.warns(mj.DegenerateOptimumWarning, match="single feasible mixture"):
        r = mj.optimize_mixture(small_fit, floors=1.0 / K, starts=1, check_fixed=False)
    np.testing.assert_allclose(r.mixture, np.full(K, 1.0 / K), atol=1e-9)
    with pytest.warns(mj.DegenerateOptimumWarning, match="does not depend on the model size"):
        mj.optimize_mixture(small_fit, model_size=1300.0, starts=1, check_fixed=False)
