"""The batched fitting engine: objectives, statuses, failure isolation, weights, chunking, compile-once, dtypes."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax as mj
from mixjax import internal
from mixjax.fitting import FitConfig, best_of, init_starts, objective_value, prepare, solve, summarize
from mixjax.metrics import metric_table

engine = sys.modules["mixjax.fitting"]


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


class _LogSquared(mj.AbstractObjective):
    """A user's objective: the squared log error, without Huber's cut."""

    def error(self, pred, y):
        return jnp.log(pred) - jnp.log(y)


def test_objective_and_solver_objects(truth, data, tmp_path):
    arrays, _ = prepare(truth, data)
    pred = np.asarray(truth.predict(data.mixtures, data.model_size_m, data.n_tokens_b))
    y = data.losses
    w = jnp.ones(len(data))
    got = float(objective_value(truth, arrays, w, FitConfig(objective=_LogSquared())))
    np.testing.assert_allclose(got, np.mean((np.log(pred) - np.log(y)) ** 2), rtol=1e-12)
    # a bundled object is stored by its name and settings, and gives the objective of those settings
    cfg = FitConfig(objective=mj.HuberLog(2e-2), optimizer=mj.LBFGS(memory=7))
    assert (cfg.objective, cfg.huber_delta, cfg.optimizer, cfg.lbfgs_memory) == ("huber_log", 2e-2, "lbfgs", 7)
    r = np.abs(np.log(pred) - np.log(y))
    hub = np.where(r <= 2e-2, 0.5 * r**2, 2e-2 * (r - 1e-2))
    np.testing.assert_allclose(float(objective_value(truth, arrays, w, cfg)), hub.mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="delta"):
        mj.HuberLog(-1.0)
    # a solver with other settings stays an object: it fits, and a fit file (which records names) refuses it
    f = mj.fit("capacity_noise", data, starts=4, seed=0, optimizer=mj.LBFGS(c1=1e-3), objective=_LogSquared())
    assert isinstance(f.config.optimizer, mj.LBFGS) and f.config.optimizer.c1 == 1e-3
    assert f.evaluate(data)["mre"] < 0.004
    with pytest.raises(ValueError, match="user's objective _LogSquared and optimizer LBFGS"):
        mj.save_fit(tmp_path / "custom.mixfit", f)
    assert not (tmp_path / "custom.mixfit").exists()


def test_metrics_match_numpy():
    rng = np.random.default_rng(2)
    p, o = rng.uniform(1, 3, (10, 4)), rng.uniform(1, 3, (10, 4))
    m = rng.uniform(size=(10, 4)) > 0.3
    t = metric_table(p, o, m, list("abcd"))
    np.testing.assert_allclose(t["mre"], np.mean(np.abs(p - o)[m] / o[m]), rtol=1e-14)
    np.testing.assert_allclose(t["rmse"], np.sqrt(np.mean((p - o)[m] ** 2)), rtol=1e-14)
    np.testing.assert_allclose(t["per_target"]["c"]["mae"], np.mean(np.abs(p - o)[:, 2][m[:, 2]]), rtol=1e-14)


def test_fit_recovers_synthetic_losses_and_reports_status(truth, data):
    f = mj.fit("capacity_noise", data, starts=4, seed=0)  # batches of 4, 6 and 1 recur below: one compile each
    assert f.status == mj.Status.converged, f.status
    assert f.info["start_status"]["nonfinite"] == 0
    # noise is 0.3 % per cell: the fit reaches the noise level
    assert f.evaluate(data)["mre"] < 0.004
    assert f.n_params == 16 and f.info["units"]["model_size"] == "millions of parameters"
    # no max_steps given: the default for 16 parameters, recorded in the fit's config
    assert f.config.max_steps == 2000 and f.num_steps <= 2000


def test_default_steps_grow_with_the_parameter_count():
    from mixjax.fitting import FitConfig, default_max_steps

    assert [default_max_steps(k) for k in (1, 50, 51, 200, 201, 700, 1001)] == [2000, 2000, 8000, 8000, 20000, 20000, 40000]
    assert FitConfig().max_steps is None and FitConfig().resolved(650).max_steps == 20000
    assert FitConfig(max_steps=50).resolved(650).max_steps == 50  # an explicit value always wins


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
    w[:12] = 2.0
    w[12:20] = 1.0
    dup = data.subset(np.r_[np.arange(12), np.arange(12), np.arange(12, 20)])  # as many rows as data: same program
    assert len(dup) == len(data)
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
    n = 6
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), n, summarize(arrays, data))
    cfg = FitConfig(max_steps=40, ftol=1e-9)
    W = jnp.ones((n, len(data)))
    whole = solve(starts, W, arrays, cfg)
    before = internal.compilations()
    parts = solve(starts, W, arrays, cfg, chunk_size=5)  # 2 chunks of 5 (last padded): one new compilation
    assert internal.compilations() == before + 1
    # new data values of the same shapes: no new compilation
    arrays2 = arrays._replace(y=arrays.y * 1.01)
    solve(starts, W, arrays2, cfg, chunk_size=5)
    assert internal.compilations() == before + 1
    np.testing.assert_allclose(np.asarray(parts.loss), np.asarray(whole.loss), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(parts.status), np.asarray(whole.status))


def test_out_of_memory_batch_splits_automatically(truth, data):
    arrays, _ = prepare(truth, data)
    n = 6
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), n, summarize(arrays, data))
    cfg = FitConfig(max_steps=40, ftol=1e-9)
    W = jnp.ones((n, len(data)))
    whole = solve(starts, W, arrays, cfg)
    original = engine._solve_batch
    sizes = []

    def limited(laws, weights, problem, config, *rest):  # a device that holds at most 2 members at once
        sizes.append(weights.shape[0])
        if weights.shape[0] > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return original(laws, weights, problem, config, *rest)

    engine._solve_batch = limited
    try:
        with pytest.warns(UserWarning, match="ran out of device memory"):
            split = solve(starts, W, arrays, cfg)
    finally:
        engine._solve_batch = original
    assert sizes == [6, 3] + [1] * 6  # halved until a chunk fits: 6 -> 3 -> 1
    # batches of 1 and of 6 compile to differently fused programs: equal up to rounding after 40 steps
    np.testing.assert_allclose(np.asarray(split.loss), np.asarray(whole.loss), rtol=1e-6)


def test_batch_beyond_the_memory_budget_is_chunked_before_it_runs(truth, data, monkeypatch):
    arrays, _ = prepare(truth, data)
    n = 6
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), n, summarize(arrays, data))
    cfg = FitConfig(max_steps=40, ftol=1e-9)
    W = jnp.ones((n, len(data)))
    whole = solve(starts, W, arrays, cfg)  # the real budget holds 6 members: one batch
    sizes = []
    original = engine._solve_batch
    monkeypatch.setattr(engine, "_solve_batch", lambda laws, w, p, c, *rest: sizes.append(w.shape[0]) or original(laws, w, p, c, *rest))
    monkeypatch.setattr(engine, "_memory_budget", lambda: 1)  # a device with (almost) no free memory
    with pytest.warns(UserWarning, match=r"a batch of 6 fits needs about .* running it in chunks of 1"):
        split = solve(starts, W, arrays, cfg)
    assert sizes == [1] * 6  # chunked before running: no out-of-memory failure first
    np.testing.assert_allclose(np.asarray(split.loss), np.asarray(whole.loss), rtol=1e-6)


def test_progress_is_reported_while_the_solver_runs(truth, data):
    arrays, _ = prepare(truth, data)
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), 6, summarize(arrays, data))
    calls = []
    res = solve(starts, jnp.ones((6, len(data))), arrays, FitConfig(max_steps=40, ftol=1e-9), progress=lambda d, t: calls.append((d, t)))
    steps = int(np.max(np.asarray(res.num_steps)))
    assert calls[-1] == (6, 6) and all(t == 6 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # never goes back
    assert len(calls) >= steps // 10  # one report per chunk of 10 steps, before the batch has finished


def test_progress_bar_draws_the_members_fitted(truth, data, capsys):
    arrays, _ = prepare(truth, data)
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(3), 6, summarize(arrays, data))
    solve(starts, jnp.ones((6, len(data))), arrays, FitConfig(max_steps=40, ftol=1e-9), progress=mj.ProgressBar("fit", always=True))
    err = capsys.readouterr().err
    assert "fit" in err and "6/6" in err


@pytest.mark.slow  # float32 compilation is checked by default in test_float32_program_holds_no_float64_operation
def test_float32_fast_path_close_to_float64(truth, data):
    f64 = mj.fit("capacity_noise", data, starts=4, seed=1, max_steps=300)
    f32 = mj.fit("capacity_noise", data, starts=4, seed=1, max_steps=300, dtype="float32")
    assert f32.law.log_c.dtype == jnp.float32
    assert f32.status.ok
    assert abs(f32.evaluate(data)["mre"] - f64.evaluate(data)["mre"]) < 5e-4


@pytest.mark.filterwarnings("ignore:the best of 4 starts of capacity_noise on 'synthetic3' stopped at max_steps=50:mixjax.MaxStepsWarning")
def test_same_seed_same_fit_bit_for_bit(data):  # 50 steps: the fits need not converge to be compared bit for bit
    a = mj.fit("capacity_noise", data, starts=4, seed=7, max_steps=50)
    b = mj.fit("capacity_noise", data, starts=4, seed=7, max_steps=50)
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


def test_float32_program_holds_no_float64_operation(truth, data):
    from jax.flatten_util import ravel_pytree

    from mixjax.internal import flat_residuals, minimize, optimised_spec
    from mixjax.problem import Problem

    arrays, _ = prepare(truth, data, dtype="float32")
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), 2, summarize(arrays, data), "float32")
    problem = Problem.build(truth, arrays)
    spec = optimised_spec(starts, True)
    y0 = jax.vmap(lambda t: ravel_pytree(t)[0])(eqx.filter(starts, spec))
    template = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, starts)
    shared = (problem, template, optimised_spec(template, True))
    steps, ftol, gtol = jnp.asarray(10, jnp.int32), jnp.asarray(1e-6, jnp.float32), jnp.asarray(1e-3, jnp.float32)
    program = jax.jit(lambda y, w: minimize(mj.LBFGS(), flat_residuals, y, w, shared, max_steps=steps, ftol=ftol, gtol=gtol))
    hlo = program.lower(y0, jnp.ones((2, len(data)), jnp.float32)).compile().as_text()  # the optimised program XLA runs
    assert "f32" in hlo and "f64" not in hlo


def test_variable_projection_nnls_and_gradient(truth, data):
    import scipy.optimize

    from mixjax.problem import Problem

    arrays, _ = prepare(truth, data)
    problem = Problem.build(truth, arrays)
    w = jnp.asarray(np.random.default_rng(2).uniform(0.5, 2.0, len(data)))
    coef = np.asarray(problem.linear_coefficients(truth, w))
    base, phi = jax.vmap(truth.linear_basis)(arrays.h, arrays.N, arrays.D)
    W = np.asarray(problem.cell_weights(w))
    for j in range(coef.shape[0]):  # each target against scipy's active-set NNLS
        sw = np.sqrt(W[:, j])
        ref, _ = scipy.optimize.nnls(np.asarray(phi[:, j]) * sw[:, None], (np.asarray(arrays.y[:, j]) - np.asarray(base[:, j])) * sw)
        np.testing.assert_allclose(coef[j], ref, rtol=1e-7, atol=1e-10)
    # the projected objective's gradient against central finite differences
    f = jax.jit(lambda law: problem.value(law, w))
    g = jax.jit(jax.grad(lambda law: problem.value(law, w)))(truth)
    for name in ("logit_b", "log_c", "logit_a"):
        for i in range(3):
            e = lambda d: eqx.tree_at(lambda l: getattr(l, name), truth, getattr(truth, name).at[i].add(d))  # noqa: E731
            fd = (f(e(1e-6)) - f(e(-1e-6))) / 2e-6
            np.testing.assert_allclose(float(getattr(g, name)[i]), float(fd), rtol=1e-5, atol=1e-12)
    # projecting can only lower the objective of any law
    full = Problem.build(truth, arrays, varpro=False)
    assert float(problem.value(problem.complete(truth, w), w)) <= float(full.value(truth, w)) * (1 + 1e-12)


def test_nnls_float32_nearly_collinear_columns():
    """The projected coefficients stay accurate in float32 when the basis columns are nearly collinear (a noise
    column (10 h)^-a with a = 0.002 beside the constant column: condition number ~1800, so the normal equations
    lose everything in float32). Reference: scipy's active-set NNLS in float64."""
    import scipy.optimize

    from mixjax.internal import nnls_small

    rng = np.random.default_rng(0)
    h = rng.uniform(0.05, 0.6, 48)
    X = np.stack([(10.0 * h) ** -0.002, np.ones(48)], 1) * rng.uniform(0.5, 1.5, 48)[:, None]
    assert np.linalg.cond(X) ** 2 * np.finfo(np.float32).eps > 0.3
    for beta in ([0.8, 2.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 2.5]):
        t = X @ np.array(beta) + 1e-4 * rng.standard_normal(48)
        ref, _ = scipy.optimize.nnls(X, t)
        z = np.asarray(nnls_small(jnp.asarray(X, jnp.float32), jnp.asarray(t, jnp.float32)))
        assert z.dtype == np.float32 and np.all(z >= 0)
        np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)


def test_float64_polish_of_a_float32_fit(data):
    """polish=True continues the best float32 start in float64: the answer is float64, no worse than the float32
    best, and scipy L-BFGS-B started from it finds no lower objective."""
    import scipy.optimize
    from jax.flatten_util import ravel_pytree

    f = mj.fit("loglinear", data, starts=4, dtype="float32", polish=True, max_steps=200)
    assert f.config.dtype == "float64"
    assert {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(eqx.filter(f.law, eqx.is_inexact_array))} == {np.dtype("float64")}
    arrays, _ = prepare(mj.LogLinearLaw, data, dtype="float64")
    w = jnp.ones(len(data))
    best32 = jax.tree_util.tree_map(lambda x: x[int(f.info["best_start"])].astype(jnp.float64) if eqx.is_inexact_array(x) else x, f.starts.law)
    assert f.loss <= float(objective_value(best32, arrays, w, FitConfig())) * (1 + 1e-12)
    assert f.info["polish"]["loss_float32"] > 0 and f.info["polish"]["num_steps"] >= 1
    flat, unravel = ravel_pytree(eqx.filter(f.law, eqx.is_inexact_array))
    rest = eqx.filter(f.law, eqx.is_inexact_array, inverse=True)
    vg = jax.jit(jax.value_and_grad(lambda z: objective_value(eqx.combine(unravel(z), rest), arrays, w, FitConfig())))
    res = scipy.optimize.minimize(lambda z: tuple(np.asarray(v, np.float64) for v in vg(jnp.asarray(z))), np.asarray(flat), jac=True,
                                  method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    assert f.loss <= res.fun * (1 + 1e-6)
    with pytest.raises(ValueError, match="polish refines a float32 fit"):
        mj.fit("loglinear", data, starts=2, dtype="float64", polish=True)


def _offset_quadratic(y, a, shared):
    """Residuals [100, 1e-3 (y - 1)]: f = 1e4 + 1e-6 (y - 1)^2, whose changes are below float32 rounding of f."""
    return jnp.stack([jnp.asarray(100.0, y.dtype), 1e-3 * (y[0] - 1.0)])


def test_lbfgs_moves_on_the_gradient_where_the_objective_is_rounding_noise():
    """In float32, f(0) and f(1) of f = 1e4 + 1e-6 (y - 1)^2 round to the same value, so no trial passes a strict
    decrease test (an Armijo-only search never leaves the start); the derivative along the step is exact. The
    approximate Wolfe test (f within the noise, directional derivative near 0) takes the solver to the closed-form
    minimiser y = 1, in float32 and float64."""
    from mixjax.internal import minimize

    for dt in (jnp.float32, jnp.float64):
        y0 = jnp.zeros((1, 1), dt)
        sol = minimize(mj.LBFGS(), _offset_quadratic, y0, jnp.zeros((1,), dt), None, max_steps=100, ftol=0.0, gtol=0.0)
        assert abs(float(sol.y[0, 0]) - 1.0) < 1e-3 and int(sol.num_accepted[0]) >= 1
