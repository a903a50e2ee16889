"""Lane refill (``lanes``): each member gets the result it gets from the whole-batch loop, every member runs once."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax as mj
from mixjax.internal import minimize, reporting
from mixjax.fitting import FitConfig, init_starts, prepare, solve, summarize

B = 12


@pytest.fixture(scope="module")
def loglinear_batch(slim122):
    data = slim122.split_rows(0.5, seed=0)[0]
    arrays, _ = prepare(mj.LogLinearLaw, data)
    starts = init_starts(mj.LogLinearLaw, jax.random.PRNGKey(0), B, summarize(arrays, data))
    W = jnp.ones((B, data.n_rows)).at[5, :4].set(0.0)  # one member with other row weights: args follow their member
    config = FitConfig(max_steps=200)
    return starts, W, arrays, config, solve(starts, W, arrays, config)


def _assert_same(a, b):
    for name in ("loss", "status", "num_steps", "grad_norm"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    for x, y in zip(jax.tree_util.tree_leaves(a.law), jax.tree_util.tree_leaves(b.law)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("lanes", [4, 5])
def test_refill_equals_whole_batch(loglinear_batch, lanes):
    starts, W, arrays, config, whole = loglinear_batch
    steps = np.asarray(whole.num_steps)
    assert len(set(steps.tolist())) > 3  # members finish at different times: lanes are refilled mid-run
    calls = []
    refill = solve(starts, W, arrays, dataclasses.replace(config, lanes=lanes), progress=lambda d, t: calls.append((d, t)))
    _assert_same(whole, refill)  # this problem's arithmetic does not depend on the batch size: bit-identical
    assert (np.asarray(refill.num_steps) > 0).all()  # every member was loaded and stepped
    assert calls[-1] == (B, B) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_lanes_at_least_batch_is_the_whole_batch_loop(loglinear_batch):
    starts, W, arrays, config, whole = loglinear_batch
    for lanes in (B, B + 5):
        _assert_same(whole, solve(starts, W, arrays, dataclasses.replace(config, lanes=lanes)))


def _rosenbrock(y, a, shared):
    return jnp.stack([a * (y[1] - y[0] ** 2), 1.0 - y[0], shared * (y[2] - y[1])])


def test_engine_refill_runs_each_member_once():
    y0 = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (B, 3))
    y0 = y0.at[7, 0].set(jnp.nan)  # fails at its start: written without a step, its lane refilled
    a = jnp.linspace(1.0, 30.0, B)
    kw = {"max_steps": 60, "ftol": 1e-12, "gtol": 1e-9}
    whole = minimize(mj.LevenbergMarquardt(), _rosenbrock, y0, a, jnp.asarray(3.0), **kw)
    seen = []
    other = []
    with reporting(lambda steps, n_active, n_done: seen.append((n_active, n_done))) as rep:
        with reporting(lambda *r: other.append(r)):  # another caller's context hears nothing of this loop
            refill = minimize(mj.LevenbergMarquardt(), _rosenbrock, y0, a, jnp.asarray(3.0), lanes=3,
                                      report_id=rep.id, **kw)
    for name in ("y", "value", "status", "num_steps", "rel_grad", "num_accepted"):
        np.testing.assert_array_equal(np.asarray(getattr(whole, name)), np.asarray(getattr(refill, name)), err_msg=name)
    status, steps = np.asarray(refill.status), np.asarray(refill.num_steps)
    assert status[7] == int(mj.Status.nonfinite) and steps[7] == 0
    assert (np.delete(steps, 7) > 0).all() and (np.delete(status, 7) == int(mj.Status.converged)).all()
    assert len(set(steps.tolist())) > 3
    assert seen[-1] == (0, B) and all(n + d == B for n, d in seen) and not other


def test_concurrent_loops_report_to_their_own_callback():
    """Two loops on two threads (as compare runs laws): each context hears only the loop given its id."""
    import threading

    seen = {5: [], 3: []}

    def run(B):
        y0 = jnp.full((B, 3), 2.0)
        with reporting(lambda steps, n_active, n_done: seen[B].append(n_active + n_done)) as rep:
            minimize(mj.LBFGS(), _rosenbrock, y0, jnp.linspace(1.0, 30.0, B), jnp.asarray(3.0),
                             max_steps=200, ftol=1e-14, gtol=1e-12, report_id=rep.id)

    threads = [threading.Thread(target=run, args=(B,)) for B in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[5] and set(seen[5]) == {5}
    assert seen[3] and set(seen[3]) == {3}


@pytest.mark.parametrize("lanes", [0, -2, 2.5, True, "4"])
def test_invalid_lanes_is_a_clear_error(lanes):
    with pytest.raises(ValueError, match="lanes must be None or a positive integer"):
        FitConfig(lanes=lanes)
    with pytest.raises(ValueError, match="lanes must be None or a positive integer"):
        minimize(mj.LBFGS(), _rosenbrock, jnp.zeros((2, 3)), jnp.ones(2), 1.0, max_steps=5, ftol=0.0, gtol=0.0,
                         lanes=lanes)
