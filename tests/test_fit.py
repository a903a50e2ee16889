"""The batched fitting engine: objectives, statuses, failure isolation, weights, chunking, compile-once, dtypes."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax as mj
from mixjax.fit import FitConfig, best_of, init_starts, objective_value, prepare, solve, summarize
from mixjax.metrics import metric_table

engine = sys.modules["mixjax.fit"]


@pytest.fixture(scope="module")
def truth():
    return mj.CapacityNoiseLaw.from_params(b=[0.5, 0.9, 0.3], c=[3.0, 4.0, 2.5], A=[0.6, 0.9, 0.4], a=[0.3, 0.4, 0.5], E=[1.2, 0.9, 1.5], H=3.0)


@pytest.fixture(scope="module")
def data(truth):
    rng = np.random.default_rng(0)
    h = rng.dirichlet(np.ones(3), size=16)
    rows = [(x, N, D) for x in h for N, D in ((100.0, 2.0), (400.0, 8.0))]
    H, N, D = (np.array([r[i] for r in rows]) for i in range(3))
    y = np.asarray(truth.predict(H, N, D)) * (1 + 0.003 * rng.standard_normal((len(rows), 3)))
    return mj.from_arrays(H, y, N * 1e6, D * 1e9, domains=["p", "q", "r"], name="synthetic3")


def test_objectives_match_numpy(truth, data):
    arrays, obs = prepare(truth, data)
    pred = np.asarray(truth.predict(data.mixtures, data.model_size_m, data.n_tokens_b))
    y = data.losses
    w = np.random.default_rng(1).integers(0, 3, size=len(data)).astype(float)
    W = w[:, None] * np.ones_like(y)
    ref = {
        "mse": np.sum(W * (pred - y) ** 2) / W.sum(),
        "relative": np.sum(W * ((pred - y) / y) ** 2) / W.sum(),
    }
    r = np.log(pred) - np.log(y)
    delta = 1e-3
    hub = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    ref["huber_log"] = np.sum(W * hub) / W.sum()
    for name, want in ref.items():
        got = float(objective_value(truth, arrays, jnp.asarray(w), FitConfig(objective=name)))
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


def test_metrics_match_numpy():
    rng = np.random.default_rng(2)
    p, o = rng.uniform(1, 3, (10, 4)), rng.uniform(1, 3, (10, 4))
    m = rng.uniform(size=(10, 4)) > 0.3
    t = metric_table(p, o, m, list("abcd"))
    np.testing.assert_allclose(t["mre"], np.mean(np.abs(p - o)[m] / o[m]), rtol=1e-14)
    np.testing.assert_allclose(t["rmse"], np.sqrt(np.mean((p - o)[m] ** 2)), rtol=1e-14)
    np.testing.assert_allclose(t["per_target"]["c"]["mae"], np.mean(np.abs(p - o)[:, 2][m[:, 2]]), rtol=1e-14)


def test_fit_recovers_synthetic_losses_and_reports_status(truth, data):
    f = mj.fit("capacity_noise", data, starts=6, seed=0, max_steps=600)
    assert f.status in (mj.Status.converged, mj.Status.max_steps)
    assert f.info["start_status"]["nonfinite"] == 0
    # noise is 0.3 % per cell: the fit reaches the noise level
    assert f.evaluate(data)["mre"] < 0.004
    assert f.n_params == 16 and f.info["units"]["model_size"] == "millions of parameters"


def test_failed_member_never_poisons_the_batch(truth, data):
    arrays, _ = prepare(truth, data)
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), 4, summarize(arrays, data))
    cfg = FitConfig(max_steps=60)
    W = jnp.ones((4, len(data)))
    clean = solve(starts, W, arrays, cfg)
    poisoned_starts = eqx.tree_at(lambda l: l.log_c, starts, starts.log_c.at[2, 0].set(jnp.nan))
    poisoned = solve(poisoned_starts, W, arrays, cfg)
    status = np.asarray(poisoned.status)
    assert status[2] == mj.Status.nonfinite
    keep = [0, 1, 3]
    np.testing.assert_array_equal(np.asarray(poisoned.loss)[keep], np.asarray(clean.loss)[keep])
    best, idx = best_of(poisoned)
    assert int(idx) != 2 and np.isfinite(float(best.loss))
    # all members failed: best_of reports nonfinite rather than a number
    all_bad = eqx.tree_at(lambda l: l.log_c, starts, jnp.full_like(starts.log_c, jnp.nan))
    res = solve(all_bad, W, arrays, cfg)
    b, _ = best_of(res)
    assert int(b.status) == mj.Status.nonfinite


def test_row_weights_equal_duplicated_rows(truth, data):
    w = np.zeros(len(data))
    w[:10] = 2.0
    w[10:20] = 1.0
    dup = data.subset(np.r_[np.arange(10), np.arange(10), np.arange(10, 20)])
    a_w, _ = prepare(truth, data)
    a_d, _ = prepare(truth, dup)
    cfg = FitConfig()
    v_w = objective_value(truth, a_w, jnp.asarray(w), cfg)
    v_d = objective_value(truth, a_d, jnp.ones(len(dup)), cfg)
    np.testing.assert_allclose(float(v_w), float(v_d), rtol=1e-13)
    # the same start fitted both ways ends at the same point
    start = jax.tree_util.tree_map(lambda x: x[None], eqx.tree_at(lambda l: l.log_c, truth, truth.log_c + 0.3))
    cfg = FitConfig(max_steps=30)
    r_w = solve(start, jnp.asarray(w)[None], a_w, cfg)
    r_d = solve(start, jnp.ones((1, len(dup))), a_d, cfg)
    np.testing.assert_allclose(np.asarray(r_w.loss), np.asarray(r_d.loss), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(r_w.law.log_c), np.asarray(r_d.law.log_c), rtol=1e-6)


def test_chunked_solve_equals_one_batch_and_compiles_once(truth, data):
    arrays, _ = prepare(truth, data)
    n = 5
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), n, summarize(arrays, data))
    cfg = FitConfig(max_steps=40, ftol=1e-9)
    W = jnp.ones((n, len(data)))
    whole = solve(starts, W, arrays, cfg)
    traces = []
    original = engine._solve_one

    def counting(*args):
        traces.append(1)
        return original(*args)

    engine._solve_one = counting
    try:
        parts = solve(starts, W, arrays, cfg, chunk_size=2)  # 3 chunks of 2 (last padded): one trace
        assert len(traces) == 1
        # new data values of the same shapes: no new trace
        arrays2 = arrays._replace(y=arrays.y * 1.01)
        solve(starts, W, arrays2, cfg, chunk_size=2)
        assert len(traces) == 1
    finally:
        engine._solve_one = original
    np.testing.assert_allclose(np.asarray(parts.loss), np.asarray(whole.loss), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(parts.status), np.asarray(whole.status))


def test_out_of_memory_batch_splits_automatically(truth, data):
    arrays, _ = prepare(truth, data)
    n = 6
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), n, summarize(arrays, data))
    cfg = FitConfig(max_steps=40, ftol=1e-9)
    W = jnp.ones((n, len(data)))
    whole = solve(starts, W, arrays, cfg)
    original = engine._solve_jit
    sizes = []

    def limited(laws, weights, arrays, config):  # a device that holds at most 2 members at once
        sizes.append(weights.shape[0])
        if weights.shape[0] > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return original(laws, weights, arrays, config)

    engine._solve_jit = limited
    try:
        with pytest.warns(UserWarning, match="ran out of device memory"):
            split = solve(starts, W, arrays, cfg)
    finally:
        engine._solve_jit = original
    assert sizes == [6, 3] + [1] * 6  # halved until a chunk fits: 6 -> 3 -> 1
    # batches of 1 and of 6 compile to differently fused programs: equal up to rounding after 40 steps
    np.testing.assert_allclose(np.asarray(split.loss), np.asarray(whole.loss), rtol=1e-7)


def test_float32_fast_path_close_to_float64(truth, data):
    f64 = mj.fit("capacity_noise", data, starts=4, seed=1, max_steps=300)
    f32 = mj.fit("capacity_noise", data, starts=4, seed=1, max_steps=300, dtype="float32", ftol=1e-6)
    assert f32.law.log_c.dtype == jnp.float32
    assert f32.status.ok
    assert abs(f32.evaluate(data)["mre"] - f64.evaluate(data)["mre"]) < 5e-4


def test_same_seed_same_fit_bit_for_bit(data):
    a = mj.fit("capacity_noise", data, starts=3, seed=7, max_steps=50)
    b = mj.fit("capacity_noise", data, starts=3, seed=7, max_steps=50)
    for x, y in zip(jax.tree_util.tree_leaves(a.law), jax.tree_util.tree_leaves(b.law)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="objective must be one of"):
        mj.fit("capacity_noise", data, objective="l1")
    with pytest.raises(ValueError, match="unknown law 'nope'"):
        mj.fit("nope", data)
    with pytest.raises(ValueError, match="weights has shape"):
        mj.fit("capacity_noise", data, weights=np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        mj.fit("capacity_noise", data, weights=-np.ones(len(data)))
