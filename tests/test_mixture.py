"""Optimal mixtures: exact projections, constraints, gradients, and optima against scipy SLSQP."""

import contextlib
import io
import itertools
import json
import warnings
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mixjax
from mixjax.laws import AbstractLaw
from mixjax.mixture import (
    ExtrapolationWarning,
    FixedOptimumWarning,
    InfeasibleMixtureError,
    measured_coverage,
    measured_mixtures,
    mixture_bounds,
    mixture_objective,
    optimize_mixture,
    optimize_mixture_ensemble,
    project_capped_simplex,
    project_capped_simplex_kl,
)

K = 5


# --------------------------------------------------------------------------- helpers
def random_bounds(rng, k=K):
    """Random feasible floors/ceilings: sum lo < 1 < sum hi, lo <= hi."""
    lo = rng.uniform(0, 1.0 / k, k) * rng.integers(0, 2, k)
    hi = np.minimum(1.0, lo + rng.uniform(0.05, 0.6, k))
    if hi.sum() < 1.05:
        hi = np.minimum(1.0, hi * 1.05 / hi.sum())
    return lo, hi


def brute_projection(v, lo, hi, kl=False):
    """Projection by enumerating every floor/ceiling/free assignment and keeping the consistent one."""
    k = v.size
    for assign in itertools.product((0, 1, 2), repeat=k):
        a = np.array(assign)
        L, U, F = a == 0, a == 1, a == 2
        if not F.any():
            continue
        rest = 1 - lo[L].sum() - hi[U].sum()
        if kl:
            c = rest / v[F].sum()
            free = c * v
        else:
            t = (rest - v[F].sum()) / F.sum()
            free = v + t
        ok = np.all(free[F] >= lo[F] - 1e-12) and np.all(free[F] <= hi[F] + 1e-12)
        ok &= np.all(free[L] <= lo[L] + 1e-12) and np.all(free[U] >= hi[U] - 1e-12)
        if ok:
            return np.where(L, lo, np.where(U, hi, free))
    raise AssertionError("no consistent active set")


def cn_law(rng, k=K):
    return mixjax.CapacityNoiseLaw.from_params(
        b=rng.uniform(0.2, 0.9, k), c=rng.uniform(1, 6, k), A=rng.uniform(0.2, 1.5, k), a=rng.uniform(0.1, 0.7, k),
        E=rng.uniform(0.5, 2.0, k), H=rng.uniform(1, 5),
    )


@jax.jit
@jax.value_and_grad
def weighted_loss(h, law, N, D, w):
    """Reference objective: sum_j w_j L_j(h, N, D) / sum_j w_j (compiled once for every law of one shape)."""
    return jnp.dot(w / jnp.sum(w), law(h, N, D))


def slsqp(fg, lo, hi, starts, *args):
    """Best SLSQP optimum over several starts (value, mixture); ``fg(h, *args) -> (value, grad)``."""

    def fun(h):
        v, g = fg(jnp.asarray(h), *args)
        return float(v), np.asarray(g, float)

    best = None
    for h0 in starts:
        r = minimize(
            fun, h0, jac=True, method="SLSQP", bounds=list(zip(lo, hi)),
            constraints=[{"type": "eq", "fun": lambda h: h.sum() - 1, "jac": lambda h: np.ones_like(h)}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        if best is None or r.fun < best[0]:
            best = (r.fun, r.x)
    return best


def assert_feasible(h, lo, hi, tol=1e-6):
    assert abs(h.sum() - 1) <= tol
    assert np.all(h >= lo - tol) and np.all(h <= hi + tol)


class QuadLaw(AbstractLaw):
    """A convex test law: L_j(h) = (W h - t)_j^2 + e_j (V targets)."""

    W: jax.Array
    t: jax.Array
    e: jax.Array
    name: ClassVar[str] = "quad_test"

    def __call__(self, mixture, model_size, n_tokens):
        return (self.W @ mixture - self.t) ** 2 + self.e

    @classmethod
    def init(cls, key, summary):
        raise NotImplementedError

    def params(self):
        return {"W": self.W, "t": self.t, "e": self.e}


# --------------------------------------------------------------------------- projections
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kl", [False, True])
def test_projection_matches_brute_force(kl, dtype):
    """Against a float64 brute force, in float64 and in float32 (the default without 64-bit JAX, whose exponential
    overflows past 88.7 nats: the KL projection's scaled evaluation must stay below that)."""
    rng = np.random.default_rng(1 + kl)
    proj = jax.jit(project_capped_simplex_kl if kl else project_capped_simplex)
    tol = 1e-12 if dtype == "float64" else 2e-6
    for _ in range(60):
        lo, hi = random_bounds(rng)
        v = rng.uniform(0.01, 2.0, K) if kl else rng.normal(0, 0.6, K)
        x = np.log(v) if kl else v
        h = np.asarray(proj(jnp.asarray(x, dtype), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)), np.float64)
        ref = brute_projection(v, lo, hi, kl=kl)
        np.testing.assert_allclose(h, ref, atol=tol)
        assert_feasible(h, lo, hi, tol)


def test_float32_search_reaches_the_closed_form_optimum():
    """A float32 log-linear law (the default without 64-bit JAX) under ceilings: the optimum puts the ceiling on the
    domains with the smallest slopes, and its objective is exp(c + t.h) there (closed form)."""
    from mixjax.laws.loglinear import LogLinearLaw

    t = np.array([0.3, -0.2, 0.1, -0.5, 0.0, 0.4, -0.1])
    law = LogLinearLaw(jnp.asarray([0.7], jnp.float32), jnp.asarray(t[None], jnp.float32))
    h = np.zeros(7)
    h[np.argsort(t)[:3]] = 0.3
    h[np.argsort(t)[3]] = 0.1
    r = mixjax.optimize_mixture(law, ceilings=0.3, starts=4, check_fixed=False)
    np.testing.assert_allclose(r.mixture, h, atol=2e-3)
    np.testing.assert_allclose(r.value, np.exp(0.7 + t @ h), rtol=1e-5)
    # every start is a member of the engine's solution type: its mixture, its objective there (closed form), its
    # steps, and its KKT residual ||h - P(h - grad)||_inf relative to the objective (numpy bisection for P)
    starts = r.starts
    assert isinstance(starts, mixjax.Solution) and starts.y.shape == (4, 7) and starts.y.dtype == np.float32
    np.testing.assert_allclose(starts.value, np.exp(0.7 + starts.y.astype(np.float64) @ t), rtol=1e-5)
    assert np.all((starts.num_steps >= 1) & (starts.num_steps <= r.config.steps))
    assert r.start_values is starts.value and r.start_mixtures is starts.y  # the names a search's starts are read by

    def project(x, cap=0.3):  # Euclidean projection onto {0 <= h <= cap, sum h = 1}
        lo_t, hi_t = x.min() - cap, x.max()
        for _ in range(200):
            tau = 0.5 * (lo_t + hi_t)
            lo_t, hi_t = (tau, hi_t) if np.clip(x - tau, 0.0, cap).sum() > 1.0 else (lo_t, tau)
        return np.clip(x - 0.5 * (lo_t + hi_t), 0.0, cap)

    for i in range(4):
        x = starts.y[i].astype(np.float64)
        grad = np.exp(0.7 + t @ x) * t
        residual = np.max(np.abs(x - project(x - grad)))
        assert abs(starts.rel_grad[i] * starts.value[i] - residual) <= 1e-5 + 1e-3 * residual
    best = int(np.argmin(starts.value))
    assert r.kkt_residual == pytest.approx(float(starts.rel_grad[best] * starts.value[best]), rel=1e-6)


def test_a_mixture_off_the_simplex_is_raised_not_returned(monkeypatch):
    """The searches keep their iterates on the bounded simplex; should one return a mixture off it, the entry point
    raises instead of reporting it (here a search made to return every mixture doubled)."""
    import mixjax.mixture.optimize as opt
    from mixjax.laws.loglinear import LogLinearLaw

    solve = opt.solve_starts

    def doubled(*args):
        out = solve(*args)
        return eqx.tree_at(lambda o: o.solution.y, out, 2.0 * out.solution.y)

    monkeypatch.setattr(opt, "solve_starts", doubled)
    law = LogLinearLaw.from_params([0.7], [[0.3, -0.2, 0.1]])
    with pytest.raises(RuntimeError, match="off the bounded simplex"):
        mixjax.optimize_mixture(law, starts=2, check_fixed=False)


# The O(K^2) projections the bisection replaced (mixjax 0.x, ``mixjax/mixture/simplex.py``), kept verbatim as an
# independent reference: they evaluate the block sum at every breakpoint.
def _ref_crossing(l, u, total):
    bp = jnp.concatenate([l, u])
    s = jax.vmap(total)(bp)
    t_b = jnp.min(jnp.where(s >= 1.0, bp, jnp.inf))
    t_a = jnp.max(jnp.where(s < 1.0, bp, -jnp.inf))
    lower = l >= t_b
    upper = (u <= t_a) & ~lower
    return lower, upper, ~lower & ~upper


def _ref_project(v, lo, hi):
    lower, upper, free = _ref_crossing(lo - v, hi - v, lambda t: jnp.sum(jnp.clip(v + t, lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    t = (rest - jnp.sum(jnp.where(free, v, 0.0))) / jnp.maximum(jnp.sum(free).astype(v.dtype), 1)
    return jnp.clip(jnp.where(lower, lo, jnp.where(upper, hi, v + t)), lo, hi)


def _ref_project_kl(log_y, lo, hi):
    l, u = jnp.log(lo) - log_y, jnp.log(hi) - log_y  # noqa: E741
    lower, upper, free = _ref_crossing(l, u, lambda t: jnp.sum(jnp.clip(jnp.exp(t + log_y), lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    p = jnp.exp(jnp.where(free, log_y, -jnp.inf) - jnp.max(jnp.where(free, log_y, jnp.min(log_y))))
    p = p / jnp.maximum(jnp.sum(p), jnp.finfo(p.dtype).tiny)
    return jnp.clip(jnp.where(lower, lo, jnp.where(upper, hi, jnp.maximum(rest, 0.0) * p)), lo, hi)


_ref_batch = jax.jit(jax.vmap(_ref_project))
_ref_kl_batch = jax.jit(jax.vmap(_ref_project_kl))


def _hard_cases(rng, k, n):
    """n random problems of size k: floors 0 or not, ceilings 1 or binding, degenerate boxes (lo = hi), tied inputs,
    and inputs from 0.1 to 100 in scale (logs spanning up to ~3000 nats)."""
    V, Y, LO, HI = [], [], [], []
    for i in range(n):
        lo = np.zeros(k) if i % 3 == 0 else rng.uniform(0, 1.0 / k, k) * rng.integers(0, 2, k)
        hi = np.ones(k) if i % 4 == 0 else np.minimum(1.0, lo + rng.uniform(0.0, 3.0 / k, k))
        if i % 5 == 1:
            fix = rng.random(k) < 0.3
            hi[fix] = lo[fix]  # degenerate boxes
        if hi.sum() < 1.0:
            hi = np.minimum(1.0, hi * (1.02 / hi.sum()) + 1e-3)
            if hi.sum() < 1.0:
                hi = np.ones(k)
        scale = (0.1, 1.0, 100.0)[i % 3]
        v = rng.normal(0, scale, k)
        y = rng.normal(0, 10 * scale, k)
        if i % 2 == 0:  # ties
            v = np.round(v, 1)
            y = np.round(y)
        V.append(v), Y.append(y), LO.append(lo), HI.append(hi)
    return (np.array(x) for x in (V, Y, LO, HI))


@pytest.mark.parametrize("k", [pytest.param(3, marks=pytest.mark.slow), pytest.param(39, marks=pytest.mark.slow), 400])
def test_projections_match_the_quadratic_reference(k):
    from mixjax.mixture.simplex import project_batch, project_kl_batch

    rng = np.random.default_rng(k)
    V, Y, LO, HI = _hard_cases(rng, k, 20)
    for new, ref, x in [(jax.jit(jax.vmap(project_capped_simplex)), _ref_batch, V),
                        (jax.jit(jax.vmap(project_capped_simplex_kl)), _ref_kl_batch, Y)]:
        h, r = np.asarray(new(x, LO, HI)), np.asarray(ref(x, LO, HI))
        np.testing.assert_allclose(h, r, atol=1e-12, rtol=0)
        np.testing.assert_allclose(h.sum(1), 1.0, atol=1e-12)
        assert np.all(h >= LO) and np.all(h <= HI)
    # the batched forms (one box for the batch) agree, and do not recompile for new values of the same shapes
    for b, ref, x in [(project_batch, _ref_batch, V), (project_kl_batch, _ref_kl_batch, Y)]:
        out = np.asarray(b(jnp.asarray(x), LO[1], HI[1]))
        n0 = b._cache_size()
        out2 = np.asarray(b(jnp.asarray(x[::-1].copy()), LO[1], HI[1]))
        assert b._cache_size() == n0
        np.testing.assert_allclose(out2[::-1], out, atol=0)
        np.testing.assert_allclose(out, np.asarray(ref(x, np.broadcast_to(LO[1], LO.shape), np.broadcast_to(HI[1], HI.shape))), atol=1e-12)


def test_projections_match_slsqp_and_a_numpy_bisection():
    # Euclidean: scipy SLSQP on min ||h - v||^2 over the capped simplex; KL: a numpy bisection on the scale c of
    # clip(c y, lo, hi) (200 halvings in log c, then the same sum evaluated at the answer)
    rng = np.random.default_rng(7)
    k = 30
    for i in range(4):
        lo = rng.uniform(0, 0.5 / k, k) * (i % 2)
        hi = np.minimum(1.0, lo + rng.uniform(0.5 / k, 3.0 / k, k))
        v = rng.normal(0, 0.2, k)
        h = np.asarray(jax.jit(project_capped_simplex)(v, lo, hi))
        o = minimize(lambda x: 0.5 * np.sum((x - v) ** 2), np.clip(np.full(k, 1.0 / k), lo, hi), jac=lambda x: x - v,
                     method="SLSQP", bounds=list(zip(lo, hi)), constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                     options={"ftol": 1e-15, "maxiter": 500})
        np.testing.assert_allclose(h, o.x, atol=1e-7)
        assert 0.5 * np.sum((h - v) ** 2) <= o.fun + 1e-12
        ly = rng.normal(0, 300.0, k)  # logs spanning ~2000 nats: the scaled evaluation's window is exercised
        a, b = -2e4, 2e4
        for _ in range(200):
            m = 0.5 * (a + b)
            tot = np.sum(np.clip(np.exp(np.minimum(ly + m, 700.0)), lo, hi))
            a, b = (a, m) if tot >= 1 else (m, b)
        ref = np.clip(np.exp(np.minimum(ly + b, 700.0)), lo, hi)
        hk = np.asarray(jax.jit(project_capped_simplex_kl)(ly, lo, hi))
        np.testing.assert_allclose(hk, ref, atol=1e-12)
        assert abs(hk.sum() - 1) <= 1e-12


@pytest.mark.slow  # compiles the nested loops of both projections (about 10 s each)
@pytest.mark.parametrize("kl", [False, True])
def test_phase_ball_matches_the_quadratic_reference(kl, monkeypatch):
    """Above 64 domains the shift of each phase is bracketed by bisection; the reference is the O(K^2) bracket by the
    sum at all 4K breakpoints, which the projection keeps for small K (here forced at K = 80)."""
    from mixjax.mixture import simplex
    from mixjax.mixture.simplex import project_phase_ball

    rng = np.random.default_rng(11 + kl)
    P, k = 2, 80  # above 64 domains: the bisection path
    assert simplex._BALL_BREAKPOINTS_UP_TO < k
    shares = np.array([0.7, 0.3])
    new = jax.jit(jax.vmap(lambda *a: project_phase_ball(*a, kl=kl), in_axes=(0, None, None, None, 0, 0)))
    ref = jax.jit(jax.vmap(lambda *a: project_phase_ball(*a, kl=kl), in_axes=(0, None, None, None, 0, 0)))
    lo = np.zeros((P, k))
    hi = np.minimum(1.0, rng.uniform(1.5 / k, 5.0 / k, (P, k)))
    hi[:, : k // 8] = 1.0
    n = 6
    C = np.stack([np.stack([shares[p] * np.asarray(project_capped_simplex(rng.dirichlet(np.ones(k)), lo[p], hi[p])) for p in range(P)])
                  for _ in range(n)])
    X = rng.normal(0, 3.0 if kl else 0.05, (n, P, k))
    R = np.array([0.02, 0.1, 0.3, 2.0, 0.05, 0.2])
    z = np.asarray(new(X, lo, hi, shares, C, R))
    monkeypatch.setattr(simplex, "_BALL_BREAKPOINTS_UP_TO", k)  # read when ``ref`` is traced: the breakpoint bracket
    r = np.asarray(ref(X, lo, hi, shares, C, R))
    np.testing.assert_allclose(z, r, atol=1e-12)
    np.testing.assert_allclose(z.sum(-1), np.broadcast_to(shares, (n, P)), atol=1e-12)
    assert np.all(0.5 * np.abs(z - C).sum((1, 2)) <= R + 1e-12)
    assert np.all(z >= -1e-15) and np.all(z <= shares[:, None] * hi + 1e-15)


def test_float32_kl_phase_ball_matches_float64():
    """The KL projection onto per-phase capped simplices within a total-variation ball, in float32 with log y spread
    over up to ~190 nats (past float32's exponent range, where y e^t is evaluated per pair in log space), against the
    float64 projection (whose per-coordinate evaluation the trust-region search checks against SLSQP in
    test_phase_optimize.py) on the same 40 problems, with the ball binding or not."""
    from mixjax.mixture.simplex import project_phase_ball

    rng = np.random.default_rng(0)
    P, k = 2, 7
    shares = np.array([0.7, 0.3])
    proj = {dt: jax.jit(jax.vmap(lambda *a: project_phase_ball(*a, kl=True), in_axes=(0, None, 0, None, 0, 0)))
            for dt in (jnp.float32, jnp.float64)}
    U = np.log(rng.dirichlet(np.ones(k), (40, P))) * rng.uniform(0.5, 30.0, (40, 1, 1))
    HI = np.broadcast_to(rng.uniform(0.2, 1.0, (40, 1, 1)), (40, P, k))
    M = rng.dirichlet(np.ones(k), (40, P)) * shares[None, :, None]
    R = rng.uniform(0.05, 0.5, 40)
    z = {dt: np.asarray(f(*(jnp.asarray(x, dt) for x in (U, np.zeros((P, k)), HI, shares, M, R))), np.float64) for dt, f in proj.items()}
    np.testing.assert_allclose(z[jnp.float32], z[jnp.float64], atol=2e-5)
    np.testing.assert_allclose(z[jnp.float32].sum(-1), np.broadcast_to(shares, (40, P)), atol=2e-6)


def test_euclidean_projection_is_the_nearest_point():
    """Closed-form case: with no active bounds the projection onto the simplex plane is v - (sum v - 1)/K."""
    v = np.array([0.3, 0.25, 0.2, 0.15, 0.2])
    np.testing.assert_allclose(jax.jit(project_capped_simplex)(v, np.zeros(K), np.ones(K)), v - (v.sum() - 1) / K, atol=1e-15)
    # KL projection of any positive vector with no active bounds is normalization
    np.testing.assert_allclose(jax.jit(project_capped_simplex_kl)(jnp.log(v), np.zeros(K), np.ones(K)), v / v.sum(), atol=1e-15)


# --------------------------------------------------------------------------- constraints
def test_infeasible_constraints_raise_and_name_domains():
    names = ["web", "code", "books"]
    with pytest.raises(InfeasibleMixtureError, match="floors sum to 1.2.*web=0.5.*code=0.7"):
        mixture_bounds(3, floors={"web": 0.5, "code": 0.7}, domains=names)
    with pytest.raises(InfeasibleMixtureError, match="ceilings sum to 0.9"):
        mixture_bounds(3, ceilings=0.3, domains=names)
    with pytest.raises(InfeasibleMixtureError, match="books"):
        mixture_bounds(3, floors={"books": 0.4}, ceilings={"books": 0.2}, domains=names)
    # data availability: 10B unique code tokens, 2 epochs, 100B tokens -> code <= 0.2 < its floor 0.3
    with pytest.raises(InfeasibleMixtureError, match="code.*data availability"):
        mixture_bounds(3, floors={"code": 0.3}, unique_tokens={"code": 10.0}, max_epochs=2, n_tokens=100.0, domains=names)
    lo, hi = mixture_bounds(3, unique_tokens={"code": 10.0}, max_epochs=2, n_tokens=100.0, domains=names)
    np.testing.assert_allclose(hi, [1.0, 0.2, 1.0])
    with pytest.raises(ValueError, match="unknown domain"):
        mixture_bounds(3, floors={"math": 0.1}, domains=names)


# --------------------------------------------------------------------------- gradients
def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    law = cn_law(rng)
    w = rng.uniform(0.1, 1.0, K)
    f = jax.jit(mixture_objective(law, model_size=300.0, n_tokens=12.0, target_weights=w))
    g = jax.jit(jax.grad(f))
    for _ in range(3):
        h = rng.dirichlet(np.ones(K)) * 0.9 + 0.1 / K
        eps = 1e-6
        fd = np.array([(f(h + eps * e) - f(h - eps * e)) / (2 * eps) for e in np.eye(K)])
        np.testing.assert_allclose(np.asarray(g(h)), fd, rtol=1e-6, atol=1e-8)
        # the objective is the weighted mean of the law's losses
        np.testing.assert_allclose(float(f(h)), float(weighted_loss(jnp.asarray(h), law, 300.0, 12.0, w)[0]), rtol=1e-13)


# --------------------------------------------------------------------------- optima vs SLSQP
def test_capacity_noise_optimum_matches_slsqp():
    rng = np.random.default_rng(0)
    for trial in range(4):
        law = cn_law(rng)
        lo, hi = random_bounds(rng)
        w = rng.uniform(0.1, 1.0, K)
        N, D = float(rng.uniform(100, 2000)), float(rng.uniform(5, 60))
        # data availability: domain 0 has U unique tokens, repeatable 2 times
        U = 0.5 * D * max(lo[0], 0.05) + 0.3 * D * rng.uniform() * hi[0]
        r = optimize_mixture(law, model_size=N, n_tokens=D, target_weights=w, floors=lo, ceilings=hi,
                             unique_tokens=[U, np.inf, np.inf, np.inf, np.inf], max_epochs=2, starts=8, seed=trial, check_fixed=False)
        hi_eff = hi.copy()
        hi_eff[0] = min(hi[0], 2 * U / D)
        assert r.status == mixjax.Status.converged
        assert_feasible(r.mixture, lo, hi_eff, 1e-9)
        np.testing.assert_allclose(r.upper, hi_eff, rtol=1e-12)
        ref_v, ref_h = slsqp(weighted_loss, lo, hi_eff, r.start_mixtures[:4], law, N, D, w)
        assert r.value <= ref_v + 1e-9 * abs(ref_v)
        np.testing.assert_allclose(r.value, ref_v, rtol=1e-9)
        np.testing.assert_allclose(r.mixture, ref_h, atol=2e-4)


@pytest.mark.parametrize("method", ["mirror", "projected"])
def test_convex_quadratic_optimum_matches_slsqp(method):
    rng = np.random.default_rng(3)
    for trial in range(3):
        V = 4
        law = QuadLaw(jnp.asarray(rng.normal(size=(V, K))), jnp.asarray(rng.normal(size=V)), jnp.asarray(rng.uniform(0, 1, V)))
        lo, hi = random_bounds(rng)
        r = optimize_mixture(law, floors=lo, ceilings=hi, starts=4, method=method, domains=list("abcde"))
        assert_feasible(r.mixture, lo, hi, 1e-9)
        ref_v, ref_h = slsqp(weighted_loss, lo, hi, r.start_mixtures, law, 1.0, 1.0, jnp.ones(V))
        np.testing.assert_allclose(r.value, ref_v, rtol=1e-8, atol=1e-12)
        # convex: every start reaches the same value
        np.testing.assert_allclose(r.start_values, ref_v, rtol=1e-6, atol=1e-9)
        assert r.kkt_residual < 1e-6


def test_user_objective_and_single_target():
    rng = np.random.default_rng(11)
    law = cn_law(rng)
    lo, hi = np.full(K, 0.05), np.full(K, 0.5)

    def softmax_loss(losses):
        return jax.nn.logsumexp(4.0 * losses) / 4.0

    r = optimize_mixture(law, model_size=500.0, n_tokens=20.0, objective=softmax_loss, floors=lo, ceilings=hi, starts=6, check_fixed=False)
    ref_v, _ = slsqp(jax.jit(jax.value_and_grad(lambda h: softmax_loss(law(h, 500.0, 20.0)))), lo, hi, r.start_mixtures[:3])
    np.testing.assert_allclose(r.value, ref_v, rtol=1e-9)
    # single target 2 is a weighted objective with a one-hot weight: same compiled program as the mean
    r2 = optimize_mixture(law, model_size=500.0, n_tokens=20.0, target=2, floors=lo, ceilings=hi, starts=6, check_fixed=False)
    ref2, _ = slsqp(weighted_loss, lo, hi, r2.start_mixtures[:3], law, 500.0, 20.0, jnp.eye(K)[2])
    np.testing.assert_allclose(r2.value, ref2, rtol=1e-9)
    np.testing.assert_allclose(r2.losses[2], r2.value, rtol=1e-12)
    # the same search at a Scale given in raw counts (and with suffixes): the scale the law sees is 500M / 20B
    scale = mixjax.Scale("500M", 2e10)
    assert (scale.law_model_size, scale.law_n_tokens) == (500.0, 20.0)
    r3 = optimize_mixture(law, scale=scale, target=2, floors=lo, ceilings=hi, starts=6, check_fixed=False)
    np.testing.assert_allclose(r3.value, ref2, rtol=1e-9)
    assert mixjax.Scale.from_law_units(500.0, 20.0) == scale
    with pytest.raises(ValueError, match="not both"):
        optimize_mixture(law, scale=scale, model_size=500.0, target=2, starts=6)
    with pytest.raises(mixjax.ScaleError, match="looks like millions of parameters"):
        mixjax.Scale(500.0, 2e10)  # 500 parameters: a unit slip for 500M


def test_ensemble_matches_members_and_excludes_failures():
    rng = np.random.default_rng(5)
    R = 5
    members = [cn_law(rng) for _ in range(R)]
    laws = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *members)
    # member 3 "failed": non-finite parameters and ok = False
    laws = jax.tree_util.tree_map(lambda x: x.at[3].set(jnp.nan), laws)
    ok = np.array([True, True, True, False, True])
    w = rng.uniform(0.1, 1, K)

    class Boot:  # the shape of a bootstrap result: batched .laws and an .ok mask
        pass

    boot = Boot()
    boot.laws, boot.ok = laws, ok
    ens = optimize_mixture_ensemble(boot, model_size=800.0, n_tokens=25.0, target_weights=w, floors=0.02, starts=6)
    assert ens.n_ok == 4 and not ens.ok[3]
    assert isinstance(ens.members, mixjax.Solution) and ens.members.y.shape == (R, K) and ens.mixtures is ens.members.y
    assert np.all(ens.members.num_steps[ok] >= 1) and np.all(np.isfinite(ens.members.rel_grad[ok]))
    for i in (0, 2, 4):
        ref_v, ref_h = slsqp(weighted_loss, np.full(K, 0.02), np.ones(K), [np.full(K, 1 / K)], members[i], 800.0, 25.0, w)
        np.testing.assert_allclose(ens.values[i], ref_v, rtol=1e-9)
        np.testing.assert_allclose(ens.mixtures[i], ref_h, atol=2e-4)
    lo, hi = ens.interval(0.9)
    np.testing.assert_allclose(lo, np.percentile(ens.mixtures[ok], 5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(ens.mixtures[ok], 95, axis=0))
    assert np.all(np.isfinite(ens.mixtures[ok]))
    assert ens.optimum_fixed_by_law is False and "differ" in ens.fixed_message


# --------------------------------------------------------------------------- extrapolation report
def test_measured_coverage_closed_form():
    """Ranges, distances outside them, total-variation distances and the design's spacing, worked by hand."""
    H = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5], [0.5, 0.3, 0.2]])  # last row repeats the first
    assert measured_mixtures(H).shape == (3, 3)
    c = measured_coverage([0.7, 0.2, 0.1], H, domains=["a", "b", "c"])
    np.testing.assert_allclose(c.low, [0.2, 0.2, 0.2])
    np.testing.assert_allclose(c.high, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(c.outside, [0.2, 0.0, 0.1], atol=1e-15)
    # TV distances to the three distinct mixtures: 0.2, 0.5, 0.4; pairwise among them all 0.3 (duplicates ignored)
    assert c.nearest_distance == pytest.approx(0.2, abs=1e-15) and c.typical_spacing == pytest.approx(0.3, abs=1e-15)
    assert c.n_measured == 3 and c.extrapolation and "a = 0.7" in c.reasons[0] and len(c.reasons) == 1
    d = c.as_dict(["a", "b", "c"])
    assert d["outside_range"] == pytest.approx({"a": 0.2, "b": 0.0, "c": 0.1}) and d["extrapolation"] is True
    inside = measured_coverage([0.35, 0.35, 0.3], H)
    assert not inside.extrapolation and inside.nearest_distance == pytest.approx(0.15, abs=1e-15)
    assert inside.outside.max() == 0.0
    # the spacing rule alone: nearest 0.15 > 0.4 x 0.3
    far = measured_coverage([0.35, 0.35, 0.3], H, spacing_factor=0.4)
    assert far.extrapolation and "spacing" in far.reasons[0]
    # within the margin (0.02) outside the range is not an extrapolation
    assert not measured_coverage([0.51, 0.29, 0.2], H).extrapolation


def quad_target(p):
    """A QuadLaw whose unique optimum on the simplex is p (losses (h_j - p_j)^2 + e_j for the first 4 domains)."""
    return QuadLaw(jnp.eye(4, K), jnp.asarray(p[:4]), jnp.asarray([0.1, 0.2, 0.3, 0.4]))


def test_extrapolation_report_and_within_measured():
    rng = np.random.default_rng(21)
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.1])
    law = quad_target(p)
    h0 = rng.uniform(0.05, 0.3, 24)
    design = np.column_stack([h0, (1 - h0)[:, None] * rng.dirichlet(np.full(4, 3.0), 24)])
    measured = np.concatenate([design, design])  # the same mixtures at two scales
    with pytest.warns(ExtrapolationWarning, match="domain0"):
        r = optimize_mixture(law, starts=4, measured=measured)
    np.testing.assert_allclose(r.mixture, p, atol=1e-6)
    lo, hi = design.min(0), design.max(0)
    np.testing.assert_allclose(r.coverage.outside, np.maximum(np.maximum(lo - r.mixture, r.mixture - hi), 0), atol=1e-15)
    assert r.coverage.outside[0] > 0.19
    tv = 0.5 * np.abs(design - r.mixture).sum(1)
    pair = 0.5 * np.abs(design[:, None] - design[None]).sum(-1) + np.diag(np.full(24, np.inf))
    d = r.as_dict()
    assert d["nearest_measured_distance"] == pytest.approx(tv.min(), abs=1e-14)
    assert d["typical_measured_spacing"] == pytest.approx(np.median(pair.min(1)), abs=1e-14)
    assert d["extrapolation"] is True and d["optimum_fixed_by_law"] is False
    assert set(d["outside_range"]) == set(r.domains)
    # constrained to the measured ranges: the optimum of the intersected box, as SLSQP finds it
    r2 = optimize_mixture(law, starts=4, measured=measured, within_measured=True, floors=0.01)
    np.testing.assert_allclose(r2.lower, np.maximum(lo, 0.01), rtol=1e-15)
    np.testing.assert_allclose(r2.upper, hi, rtol=1e-15)
    ref_v, ref_h = slsqp(weighted_loss, r2.lower, r2.upper, r2.start_mixtures, law, 1.0, 1.0, jnp.ones(4))
    np.testing.assert_allclose(r2.value, ref_v, rtol=1e-9)
    np.testing.assert_allclose(r2.mixture, ref_h, atol=1e-5)
    assert r2.coverage.outside.max() <= 1e-12 and r2.mixture[0] == pytest.approx(hi[0], abs=1e-9)
    with pytest.raises(InfeasibleMixtureError, match="within_measured.*domain0"):
        optimize_mixture(law, starts=4, measured=measured, within_measured=True, floors={"domain0": 0.35})
    with pytest.raises(ValueError, match="measured"):
        optimize_mixture(law, starts=4, within_measured=True)
    # without measured mixtures the report's keys are present and empty
    r3 = optimize_mixture(law, starts=4, check_fixed=False)
    assert r3.as_dict()["extrapolation"] is None and r3.optimum_fixed_by_law is None


def test_optimum_fixed_by_law_capacity_only_vs_capacity_noise():
    """capacity_only: J(h) = sum_i w_i c_i x_i*(h)^-b_i + const >= min_x sum_i w_i c_i x_i^-b_i = J(w), so the optimum is
    the target weighting w whatever the parameters; the capacity-noise law's optimum depends on them."""
    rng = np.random.default_rng(13)
    w = rng.uniform(0.1, 1.0, K)
    only = mixjax.CapacityOnlyLaw.from_params(b=rng.uniform(0.2, 0.9, K), c=rng.uniform(1, 6, K), E=rng.uniform(0.5, 2, K), H=2.0)
    with pytest.warns(FixedOptimumWarning, match="fixed by the law"):
        r = optimize_mixture(only, model_size=300.0, target_weights=w, starts=8)
    np.testing.assert_allclose(r.mixture, w / w.sum(), atol=1e-6)
    assert r.optimum_fixed_by_law is True and r.as_dict()["optimum_fixed_by_law"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error", FixedOptimumWarning)
        r = optimize_mixture(cn_law(rng), model_size=300.0, n_tokens=12.0, target_weights=w, starts=8)
    assert r.optimum_fixed_by_law is False and "moves" in r.fixed_message
    # a vertex of the bounds: the check does not apply
    r = optimize_mixture(only, model_size=300.0, target_weights=w, floors=[0.0, 0.0, 0.0, 0.3, 0.3], ceilings=[1.0, 0.1, 0.1, 0.3, 0.3], starts=8)
    assert r.optimum_fixed_by_law is None and "vertex" in r.fixed_message


def test_ensemble_fixed_optimum_across_members():
    """Members differing only in the loss floors E (an additive constant per target) share one optimum: fixed by the
    law's form as far as this ensemble can tell. Same shapes as the ensemble test above (one compiled program)."""
    rng = np.random.default_rng(5)
    base = cn_law(rng)
    w = rng.uniform(0.1, 1, K)
    members = [eqx.tree_at(lambda m: m.log_E, base, base.log_E + s) for s in (0.0, 0.1, -0.2, 0.3, 0.05)]
    laws = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *members)
    ens = optimize_mixture_ensemble(laws, model_size=800.0, n_tokens=25.0, target_weights=w, floors=0.02, starts=6, check_fixed=False)
    assert ens.optimum_fixed_by_law is None and ens.member_extrapolation is None
    h = ens.mixtures[0]
    measured = np.array([h + 0.03 * (np.eye(K)[0] - np.eye(K)[1]), h - 0.03 * (np.eye(K)[0] - np.eye(K)[1])])
    with pytest.warns(FixedOptimumWarning, match="5 members"):
        ens = optimize_mixture_ensemble(laws, model_size=800.0, n_tokens=25.0, target_weights=w, floors=0.02, starts=6, measured=measured)
    np.testing.assert_allclose(ens.mixtures, np.tile(h, (5, 1)), atol=1e-6)
    assert np.ptp(ens.values) > 0.1 and ens.optimum_fixed_by_law is True and ens.as_dict()["optimum_fixed_by_law"] is True
    # 0.03 from both measured mixtures (TV), at most 0.01 outside their range: not an extrapolation
    assert not ens.member_extrapolation.any() and ens.as_dict()["members_extrapolating"] == 0


def test_cli_reports_extrapolation_and_stays_within_measured(tmp_path):
    """`mixjax optimize` on noiseless log-linear data whose optimum (0.3, 0.6, 0.1) lies outside the design."""
    from mixjax.cli import main

    grid = [(a, b, round(1 - a - b, 10)) for a in np.arange(0.2, 0.46, 0.05) for b in np.arange(0.2, 0.46, 0.05)]
    H = np.array([g for g in grid if 0.2 - 1e-9 <= g[2] <= 0.45 + 1e-9])
    c, t = np.array([0.5, 0.8, 0.3]), -np.eye(3)
    L = np.exp(c + H @ t.T)
    rows = ["weight_a,weight_b,weight_c,model_size,n_tokens,a_loss,b_loss,c_loss"]
    rows += [",".join(f"{v:.12g}" for v in (*h, 1e8, 1e9, *y)) for h, y in zip(H, L)]
    path = tmp_path / "design.csv"
    path.write_text("\n".join(rows) + "\n")

    def run(*extra):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["optimize", str(path), "--law", "loglinear", "--starts", "2", "--optimizer", "adam", "--max-steps", "300",
                       "--mixture-starts", "4", "--json", *extra])
        assert rc == 0, err.getvalue()
        return json.loads(out.getvalue()), err.getvalue()

    out, err = run()
    h = np.array(list(out["mixture"].values()))
    np.testing.assert_allclose(h, [0.3, 0.6, 0.1], atol=2e-3)  # the true law's optimum (exact fit of noiseless data)
    lo, hi = H.min(0), H.max(0)
    np.testing.assert_allclose(list(out["outside_range"].values()), np.maximum(np.maximum(lo - h, h - hi), 0), atol=1e-12)
    assert out["nearest_measured_distance"] == pytest.approx((0.5 * np.abs(H - h).sum(1)).min(), abs=1e-12)
    pair = 0.5 * np.abs(H[:, None] - H[None]).sum(-1) + np.diag(np.full(len(H), np.inf))
    assert out["typical_measured_spacing"] == pytest.approx(np.median(pair.min(1)), abs=1e-12)
    assert out["extrapolation"] is True and out["optimum_fixed_by_law"] is False
    assert "warning: the optimal mixture extrapolates" in err and "b = 0.6" in err

    out, err = run("--within-measured")
    h = np.array(list(out["mixture"].values()))
    assert np.all(h >= lo - 1e-9) and np.all(h <= hi + 1e-9) and max(out["outside_range"].values()) <= 1e-9
    assert list(out["upper"].values()) == pytest.approx(hi.tolist()) and "outside the measured range" not in err
