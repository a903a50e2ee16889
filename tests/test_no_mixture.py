"""Tables without mixtures (model size, tokens, loss columns) and laws written as plain functions.

References: a synthetic Chinchilla truth (noiseless losses from known parameters, so a fit must recover them) and
the closed form E + A N^-alpha + B D^-beta. One compiled shape per fitting path keeps this module cheap."""

import contextlib
import dataclasses
import io
import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import mixjax
from mixjax.cli import main

TRUTH = {  # per loss column, for N and D in raw counts
    "a": {"E": 1.8, "A": 482.0, "alpha": 0.35, "B": 2085.0, "beta": 0.37},
    "b": {"E": 2.1, "A": 300.0, "alpha": 0.30, "B": 1500.0, "beta": 0.33},
}
NAMES = ("E", "A", "alpha", "B", "beta")


def closed_form(p, N, D):
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """24 runs, N log-uniform in [5e7, 5e9] parameters and D in [1e9, 1e11] tokens; two loss columns a, b."""
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(5e7), np.log(5e9), 24))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 24))
    df = pd.DataFrame({"model_size": N, "n_tokens": D, **{f"{t}_loss": closed_form(p, N, D) for t, p in TRUTH.items()}})
    path = tmp_path_factory.mktemp("nomix") / "runs.csv"
    df.to_csv(path, index=False, float_format="%.17g")
    return path, df


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def chinchilla_fn(p, N, D):
    """Chinchilla's form for N, D in raw counts, in Epoch's log-sum-exp parametrisation (a, b, e = log A, B, E)."""
    return jnp.exp(p["e"]) + jnp.exp(p["a"] - p["alpha"] * jnp.log(N)) + jnp.exp(p["b"] - p["beta"] * jnp.log(D))


def readable(p):
    return {"E": jnp.exp(p["e"]), "A": jnp.exp(p["a"]), "alpha": p["alpha"], "B": jnp.exp(p["b"]), "beta": p["beta"]}


def function_law(truth: dict, scale: float = 1.0, name: str = "test_fn_chinchilla"):
    """The function law started at ``scale`` times the truth; one value per loss column (params of shape (V,))."""
    col = lambda k: np.array([scale * truth[t][k] for t in truth])  # noqa: E731
    start = {"e": np.log(col("E")), "a": np.log(col("A")), "alpha": col("alpha"), "b": np.log(col("B")), "beta": col("beta")}
    return mixjax.law_from_function(chinchilla_fn, start, name=name, units="raw", readable=readable)


@pytest.fixture(scope="module")
def registered_law():
    """The function law registered under its name (so the command line and saved fits find it); unregistered after."""
    law = function_law(TRUTH, scale=1.1)
    mixjax.register(type(law))
    yield law
    mixjax.unregister(law.name)


def test_csv_without_mixture_fits_function_law_to_truth(table, registered_law, tmp_path):
    path, _ = table
    d = mixjax.load_csv(path)
    assert (d.n_domains, d.n_targets, d.targets, d.n_rows) == (0, 2, ("a", "b"), 24)
    f = mixjax.fit(registered_law, d, starts=4, max_steps=300)  # the same compiled program as the command line's
    for j, t in enumerate(TRUTH):
        for k in NAMES:
            np.testing.assert_allclose(float(f.params()[k][j]), TRUTH[t][k], rtol=2e-3, err_msg=f"{t}.{k}")
    unregistered = function_law(TRUTH, name="test_fn_unregistered").with_params(f.law.theta)
    with pytest.raises(mixjax.io.FitFileError, match="not registered"):
        mixjax.save_fit(tmp_path / "fn.mixfit", dataclasses.replace(f, law=unregistered))


def test_arrays_without_mixture_equal_the_csv(table):
    path, df = table
    d = mixjax.from_arrays(None, df[["a_loss", "b_loss"]].to_numpy(), df["model_size"], df["n_tokens"], targets=["a", "b"])
    c = mixjax.load_csv(path)
    assert d.mixtures.shape == (24, 0) and d.targets == c.targets
    np.testing.assert_array_equal(d.losses, c.losses)
    np.testing.assert_array_equal(d.model_size_m, c.model_size_m)


def test_cli_fits_saves_and_predicts_a_registered_function_law(table, registered_law, tmp_path):
    path, _ = table
    fit_file = tmp_path / "runs.mixfit"
    rc, out, err = cli("fit", path, "--law", registered_law.name, "--starts", "4", "--max-steps", "300", "--json", "-o", fit_file)
    assert rc == 0, err
    res = json.loads(out)
    assert res["domains"] == [] and res["targets"] == ["a", "b"] and res["n_cells_used"]["train"] == 48
    assert res["train_mre"] < 1e-4, res  # noiseless data: the law is exact
    rc, out, err = cli("predict", fit_file, "-N", "2B", "-D", "40B", "--json")  # reloads the saved function law
    assert rc == 0, err
    pred = json.loads(out)["predicted"]
    for t, p in TRUTH.items():
        np.testing.assert_allclose(pred[t], closed_form(p, 2e9, 4e10), rtol=2e-4)


def test_cli_refuses_mixture_laws_and_misplaced_options_without_mixture(table):
    path, _ = table
    rc, _, err = cli("fit", path, "--law", "loglinear")
    assert rc == 2 and "function of the training mixture" in err and "no weight_<domain> columns" in err
    rc, _, err = cli("fit", path, "--law", "chinchilla", "--huber-delta", "0.01")
    assert rc == 2 and "--huber-delta applies to --objective huber_log only" in err
    rc, _, err = cli("fit", path, "--law", "loglinear", "--grid")
    assert rc == 2 and "--grid" in err


def test_function_law_matches_chinchilla_law_at_equal_parameters(table):
    _, df = table
    law = function_law(TRUTH)
    v = {k: [TRUTH[t][k] for t in TRUTH] for k in NAMES}
    ref = mixjax.ChinchillaLaw.from_raw_counts(v["E"], v["A"], v["alpha"], v["B"], v["beta"])
    N, D = df["model_size"].to_numpy(), df["n_tokens"].to_numpy()
    h = np.zeros((len(N), 0))
    got = np.asarray(law.predict(h, N / 1e6, D / 1e9))  # predict takes the laws' units; the law converts to raw
    np.testing.assert_allclose(got, np.asarray(ref.predict(h, N / 1e6, D / 1e9)), rtol=1e-12)
    np.testing.assert_allclose(got, np.stack([closed_form(TRUTH[t], N, D) for t in TRUTH], axis=1), rtol=1e-12)


def test_function_law_output_must_match_the_loss_columns(table):
    path, _ = table
    d = mixjax.load_csv(path, targets=["a"])  # one loss column; the function predicts two
    with pytest.raises(ValueError, match="predicts 2 loss.*1 loss column"):
        mixjax.fit(function_law(TRUTH), d, starts=2)
    with pytest.raises(ValueError, match="not a number"):
        mixjax.law_from_function(chinchilla_fn, {"e": "x"}, name="bad")


@pytest.mark.slow
def test_cli_bootstrap_without_mixture_covers_truth(table):
    path, _ = table
    rc, out, err = cli("bootstrap", path, "--law", "chinchilla", "--resamples", "20", "--max-steps", "300", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["n_failed"] == 0
    for j, t in enumerate(TRUTH):
        for k in ("A", "B"):
            iv = res["params_raw_counts"][k][j]
            np.testing.assert_allclose(iv["estimate"], TRUTH[t][k], rtol=2e-3)
            assert iv["lo"] <= iv["estimate"] <= iv["hi"]


def test_python_fit_refuses_mixture_laws_without_mixture(table):
    path, _ = table
    data = mixjax.load_csv(path)
    assert data.n_domains == 0
    with pytest.raises(mixjax.DataError, match="loglinear predicts losses from the mixture"):
        mixjax.fit("loglinear", data, starts=1, max_steps=1)
