"""Failures that user input can cause are one clear message (a ValueError, or one line and exit status 2 on the
command line), found before anything large is allocated: batches beyond memory, seeds out of range, a closed
standard output, a one-resample bootstrap, a law whose shapes do not match the data; and a fit stopped by its step
limit says so."""

import contextlib
import io
import shutil
import subprocess
import sys
import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax as mj
from mixjax import fitting
from mixjax.cli import main
from mixjax.laws import DataSummary

SCALE = ["-N", "122M", "-D", "9.998B"]
FAST = ["--law", "loglinear", "--starts", "2"]


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def one_line_error(rc, err, *words):
    """The last stderr line is the only error line, and names every word; no traceback."""
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def budget(monkeypatch):
    """A fixed 4 GiB memory budget, so that the outcome does not depend on this machine's free memory."""
    monkeypatch.setattr(fitting, "_memory_budget", lambda: 4 * 2**30)


def test_batches_beyond_memory_are_refused_before_allocation(slim122, budget):
    rc, _, err = cli("fit", "slimpajama7", *SCALE, "--law", "capacity_noise", "--starts", "10000000")
    line = one_line_error(rc, err, "10000000 starts of capacity_noise", "GiB", "4 GiB available", "row weights (10000000, 60)",
                          "L-BFGS memory (2 x 20 x 36 per member)", "use fewer starts")
    assert float(line.split("need about ")[1].split(" GiB")[0]) > 4
    with pytest.raises(ValueError, match=r"100000000 starts of loglinear need about [\d.e+]+ GiB .* use fewer starts"):
        mj.fit("loglinear", slim122, starts=10**8)
    with pytest.raises(ValueError, match=r"1000000000 resamples x 2 starts\) need about .* GiB .* use fewer resamples or starts"):
        mj.bootstrap("loglinear", slim122, resamples=10**9)
    rc, _, err = cli("bootstrap", "slimpajama7", *SCALE, *FAST, "--resamples", "1000000000")
    one_line_error(rc, err, "1000000000 resamples x 2 starts", "GiB", "use fewer resamples or starts")


def test_seeds_outside_the_prng_range_are_refused(slim122):
    for seed in (2**70, 2**32, -1):
        rc, _, err = cli("fit", "slimpajama7", *SCALE, *FAST, "--seed", seed)
        one_line_error(rc, err, "--seed must be an integer from 0 to 4294967295", str(seed))
    rc, _, err = cli("bootstrap", "slimpajama7", *SCALE, *FAST, "--seed", 2**70)
    one_line_error(rc, err, "--seed", str(2**70))
    with pytest.raises(ValueError, match=f"seed must be an integer from 0 to 4294967295.*got {2**70}"):
        mj.fit("loglinear", slim122, starts=2, seed=2**70)
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4294967295.*got -1"):
        mj.bootstrap("loglinear", slim122, resamples=2, seed=-1)
    assert fitting.check_seed(2**32 - 1) == 2**32 - 1


def test_a_closed_standard_output_is_one_line_and_status_2(monkeypatch):
    script = shutil.which("mixjax")
    command = "mixjax laws >&-" if script else f"'{sys.executable}' -m mixjax laws >&-"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "mixjax laws: error: standard output is closed; redirect it to a file or to /dev/null instead"
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", None)
    with contextlib.redirect_stderr(err):
        rc = main(["datasets"])
    one_line_error(rc, err.getvalue(), "mixjax datasets: error: standard output is closed")


def test_a_bootstrap_needs_two_resamples(slim122):
    rc, _, err = cli("bootstrap", "slimpajama7", *SCALE, *FAST, "--resamples", "1")
    one_line_error(rc, err, "--resamples must be an integer of at least 2", "got 1")
    with pytest.raises(ValueError, match="resamples must be an integer of at least 2"):
        mj.bootstrap("loglinear", slim122, resamples=1)


class ThreeLossLaw(mj.AbstractLaw):
    """Predicts 3 losses whatever the data."""

    E: jax.Array

    name: ClassVar[str] = "test_three_losses"

    def __call__(self, mixture, model_size, n_tokens):
        return self.E * jnp.sum(mixture)


class FiveDomainLaw(mj.AbstractLaw):
    """Per-domain law whose starts are drawn for 5 domains."""

    E: jax.Array
    C: jax.Array

    name: ClassVar[str] = "test_five_domains"

    @classmethod
    def init(cls, key, summary):
        return cls(E=jnp.full(5, 2.0), C=jnp.full(5, 0.5) + 0.1 * jax.random.normal(key, (5,)))

    def __call__(self, mixture, model_size, n_tokens):
        return self.E + self.C * mixture


def test_a_law_whose_shapes_do_not_match_the_data_is_named(slim122):
    with pytest.raises(ValueError, match=r"law test_three_losses predicts shape \(3,\) .* expected shape \(7,\).*arxiv, book"):
        mj.fit(ThreeLossLaw(E=jnp.ones(3)), slim122, starts=2)
    with pytest.raises(ValueError, match=r"law test_five_domains cannot predict .* K=7 domains \(arxiv, .*\).* E \(5,\), C \(5,\)"):
        mj.fit(FiveDomainLaw, slim122, starts=2)
    five = DataSummary(n_domains=5, n_targets=5, loss_min=np.full(5, 2.0), loss_max=np.full(5, 4.0), loss_mean=np.full(5, 3.0),
                       model_size_ref=100.0, n_tokens_ref=10.0, model_size_range=(100.0, 1000.0), n_tokens_range=(1.0, 100.0))
    with pytest.raises(ValueError, match=r"capacity_noise: parameter \w+ of the given law has shape \(5,\), but the data \(7 domains"):
        mj.fit(mj.CapacityNoiseLaw.init(jax.random.PRNGKey(0), five), slim122, starts=2)
    mj.register(FiveDomainLaw)
    try:
        rc, _, err = cli("fit", "slimpajama7", *SCALE, "--law", "test_five_domains", "--starts", "2")
    finally:
        mj.unregister(FiveDomainLaw.name)
    one_line_error(rc, err, "test_five_domains", "K=7 domains", "E (5,), C (5,)")


def test_a_fit_stopped_by_the_step_limit_warns_once(slim122):
    with pytest.warns(mj.MaxStepsWarning, match="best of 2 starts of loglinear .* stopped at max_steps=3 before converging"):
        f = mj.fit("loglinear", slim122, starts=2, max_steps=3)
    assert f.status == mj.Status.max_steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", mj.MaxStepsWarning)
        assert mj.fit("loglinear", slim122, starts=2).status == mj.Status.converged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mj.bootstrap("loglinear", slim122, resamples=2, starts=1, point_starts=2, max_steps=3)
    said = [w for w in caught if issubclass(w.category, mj.MaxStepsWarning)]
    assert len(said) == 1 and "full-data fit" in str(said[0].message)  # the bootstrap's own note, not the fit's
    rc, _, err = cli("fit", "slimpajama7", *SCALE, *FAST, "--max-steps", "3", "--json")
    assert rc == 0 and "mixjax fit: warning: the best of 2 starts of loglinear" in err and "max_steps=3" in err, err
