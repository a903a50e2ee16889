"""Many domains: capacity-noise fits at K = 30 converge (status ``converged``, not the step limit), recover the law
the data were drawn from, and agree with a scipy polish; the L-BFGS diagonal scaling against its closed form."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax as mj
from mixjax import _engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the K-domain sweep of k_scaling.py
from k_scaling import synthetic, true_law  # noqa: E402
from scipy_reference import scipy_fit  # noqa: E402

K = 30
ROWS = 120  # both fits share one compiled program (same shapes)


@pytest.fixture(scope="module")
def truth():
    return true_law("capacity_noise", K)


@pytest.mark.slow  # 6 s; the noisy fit below covers the same solver by default
def test_noise_free_fit_converges_and_recovers_the_truth(truth):
    """Noise-free data: the best fit has a zero residual, where the relative tests never pass; the fit must still end
    ``converged`` (steps at the rounding level) well before the step limit, at the true parameters."""
    data = synthetic(truth, K, ROWS, noise=0.0)
    f = mj.fit("capacity_noise", data, starts=3, seed=0)
    assert f.status == mj.Status.converged
    assert f.num_steps < f.config.max_steps
    got, want = f.params(), {k: np.asarray(v) for k, v in truth.params().items()}
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)


def test_noisy_fit_converges_and_matches_scipy_polish(truth):
    """Noisy data (0.2 %): most starts end ``converged``, the best one within 1e-6 (relative) of what scipy's
    L-BFGS-B reaches from it, and the fitted exponents near the truth (the noise limits the recovery)."""
    data = synthetic(truth, K, ROWS, noise=2e-3)
    f = mj.fit("capacity_noise", data, starts=3, seed=0)
    status = np.asarray(f.starts.status)
    assert f.status == mj.Status.converged
    assert np.mean(status == int(mj.Status.converged)) >= 0.6
    one = jax.tree_util.tree_map(lambda x: x[None] if isinstance(x, jax.Array) else x, f.law)
    _, polished, _ = scipy_fit("capacity_noise", data, starts=1, start_laws=one)
    assert f.loss <= polished * (1 + 1e-6)
    got, want = f.params(), {k: np.asarray(v) for k, v in truth.params().items()}
    for k in ("b", "a", "H"):
        assert np.median(np.abs(got[k] / want[k] - 1)) < 0.05, k


def test_diagonal_scaling_is_the_inverse_curvature_of_a_separable_quadratic():
    """On f = sum_k h_k y_k^2 / 2 every stored pair has y = h s coordinatewise, so the factors are 1 / h_k divided
    by their geometric mean (clipped to [1e-3, 1e2])."""
    rng = np.random.default_rng(0)
    P, m = 6, 4
    h = np.array([1e-2, 0.3, 1.0, 4.0, 50.0, 1e4])
    S = rng.standard_normal((m, P))
    state = _engine._LBFGSState(
        jnp.asarray(0.0), jnp.zeros(P), jnp.asarray(S), jnp.asarray(S * h), jnp.array([True, True, True, False]),
        jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0, jnp.int32))
    d = np.asarray(_engine.LBFGS(diagonal_min=1e-3, diagonal_max=1e2)._diagonal_scaling(state))
    want = (1 / h) / np.exp(np.mean(np.log(1 / h)))
    np.testing.assert_allclose(d, np.clip(want, 1e-3, 1e2), rtol=1e-12)
