"""A user's own law, written as one small class (array fields and ``__call__`` only): it fits, bootstraps, finds
an optimal mixture and saves, with no other method."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import mixjax as mj


class PowerFloorLaw(mj.AbstractLaw):
    """L_i(h) = E_i + C_i (h_i + 0.05)^(-g_i), per domain (raw parameters)."""

    E: jax.Array
    C: jax.Array
    g: jax.Array

    name: ClassVar[str] = "test_power_floor"

    def __call__(self, mixture, model_size, n_tokens):
        return self.E + self.C * (mixture + 0.05) ** (-self.g)


TRUTH = PowerFloorLaw(E=jnp.array([1.5, 2.0, 1.2]), C=jnp.array([0.4, 0.3, 0.5]), g=jnp.array([0.5, 0.3, 0.7]))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    h = rng.dirichlet(np.ones(3), size=40)
    y = np.asarray(TRUTH.predict(h, 1.0, 1.0)) * (1 + 0.002 * rng.standard_normal((40, 3)))
    return mj.from_arrays(h, y, domains=["a", "b", "c"], name="user3")


@pytest.fixture(scope="module")
def fitted(data):
    guess = PowerFloorLaw(E=jnp.array([1.0, 1.0, 1.0]), C=jnp.array([1.0, 1.0, 1.0]), g=jnp.array([0.3, 0.3, 0.3]))
    return mj.fit(guess, data, starts=8, seed=0, max_steps=300)


def test_fits_from_an_instance_and_recovers_the_truth(fitted):
    assert fitted.status == mj.Status.converged
    np.testing.assert_allclose(np.asarray(fitted.law.g), np.asarray(TRUTH.g), rtol=0.1)
    assert set(fitted.params()) == {"E", "C", "g"}


def test_a_class_alone_is_refused_with_a_clear_message(data):
    with pytest.raises(NotImplementedError, match="pass an instance of it"):
        mj.fit(PowerFloorLaw, data)


def test_bootstrap_and_optimal_mixture(fitted, data):
    boot = mj.bootstrap(fitted.law, data, resamples=6, starts=1, seed=0, max_steps=100)
    assert boot.n_failed == 0
    # every resample refit (warm-started at the full-data fit) converges within its 100 steps
    assert (np.asarray(boot.status) == int(mj.Status.converged)).all(), boot.status
    iv = boot.param_intervals(level=0.9)["g"]
    # the 90 % percentile interval is numpy's 5th and 95th percentiles of the six refitted exponents
    lo, hi = np.percentile(np.asarray(boot.laws.g), [5, 95], axis=0)
    np.testing.assert_allclose(iv["lo"], lo, rtol=1e-13)
    np.testing.assert_allclose(iv["hi"], hi, rtol=1e-13)
    assert np.all(np.abs(iv["estimate"] - np.asarray(TRUTH.g)) < 0.1)
    best = mj.optimize_mixture(fitted.law, check_fixed=False)  # the law uses neither scale: none is given

    def mean_loss(x):
        return float(np.mean(np.asarray(fitted.law(jnp.asarray(x), 1.0, 1.0))))

    ref = scipy.optimize.minimize(mean_loss, np.full(3, 1 / 3), method="SLSQP", bounds=[(0, 1)] * 3,
                                  constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], options={"ftol": 1e-14})
    np.testing.assert_allclose(best.mixture, ref.x, atol=2e-3)


def test_saves_and_loads_bit_for_bit(fitted, tmp_path):
    mj.register(PowerFloorLaw)
    try:
        mj.save_fit(tmp_path / "user.mixjax", fitted)
        back = mj.load_fit(tmp_path / "user.mixjax")
    finally:
        mj.unregister(PowerFloorLaw.name)
    for name in ("E", "C", "g"):
        assert np.array_equal(np.asarray(getattr(back.law, name)), np.asarray(getattr(fitted.law, name)))


class NarrowPowerFloorLaw(PowerFloorLaw):
    """The same law with a documented sane range that the truth (g up to 0.7) leaves."""

    sane_ranges: ClassVar[dict] = {"g": (0.0, 0.6)}


def test_a_fit_outside_the_sane_range_says_so(fitted, data):
    assert bool(fitted.law.in_sane_range()) and not fitted.law.out_of_range()
    narrow = NarrowPowerFloorLaw(E=fitted.law.E, C=fitted.law.C, g=fitted.law.g)
    assert not bool(narrow.in_sane_range()) and narrow.out_of_range() == {"g": (0.0, 0.6)}
    with pytest.warns(mj.OutOfRangeWarning, match=r"g outside \[0, 0.6\]"):
        f = mj.fit(narrow, data, starts=2, seed=0, max_steps=60)
    assert f.status == mj.Status.out_of_range and float(np.max(np.asarray(f.law.g))) > 0.6


def test_a_fit_stopped_at_the_step_limit_outside_the_range_is_unfinished_first(fitted, data):
    """A start that stops at the step limit is max_steps wherever it is (out of range or not); the warning names
    the parameters out of range. Two steps from the fitted law moved off its minimum cannot converge."""
    narrow = NarrowPowerFloorLaw(E=fitted.law.E * 0.5, C=fitted.law.C, g=fitted.law.g)
    with pytest.warns(mj.MaxStepsWarning, match=r"running away \(g outside \[0, 0.6\]\)"):
        f = mj.fit(narrow, data, starts=1, seed=0, max_steps=2)
    assert f.status == mj.Status.max_steps and int(f.num_steps) == 2 and "g" in f.law.out_of_range()
