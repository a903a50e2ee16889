"""Optimal mixtures: exact projections, constraints, gradients, and optima against scipy SLSQP."""

import itertools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mixjax
from mixjax.laws import AbstractLaw
from mixjax.mixture import (
    InfeasibleMixtureError,
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
@pytest.mark.parametrize("kl", [False, True])
def test_projection_matches_brute_force(kl):
    rng = np.random.default_rng(1 + kl)
    proj = jax.jit(project_capped_simplex_kl if kl else project_capped_simplex)
    for _ in range(60):
        lo, hi = random_bounds(rng)
        v = rng.uniform(0.01, 2.0, K) if kl else rng.normal(0, 0.6, K)
        h = np.asarray(proj(jnp.log(v) if kl else jnp.asarray(v), lo, hi))
        ref = brute_projection(v, lo, hi, kl=kl)
        np.testing.assert_allclose(h, ref, atol=1e-12)
        assert_feasible(h, lo, hi, 1e-12)


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
                             unique_tokens=[U, np.inf, np.inf, np.inf, np.inf], max_epochs=2, starts=8, seed=trial)
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

    r = optimize_mixture(law, model_size=500.0, n_tokens=20.0, objective=softmax_loss, floors=lo, ceilings=hi, starts=6)
    ref_v, _ = slsqp(jax.jit(jax.value_and_grad(lambda h: softmax_loss(law(h, 500.0, 20.0)))), lo, hi, r.start_mixtures[:3])
    np.testing.assert_allclose(r.value, ref_v, rtol=1e-9)
    # single target 2 is a weighted objective with a one-hot weight: same compiled program as the mean
    r2 = optimize_mixture(law, model_size=500.0, n_tokens=20.0, target=2, floors=lo, ceilings=hi, starts=6)
    ref2, _ = slsqp(weighted_loss, lo, hi, r2.start_mixtures[:3], law, 500.0, 20.0, jnp.eye(K)[2])
    np.testing.assert_allclose(r2.value, ref2, rtol=1e-9)
    np.testing.assert_allclose(r2.losses[2], r2.value, rtol=1e-12)


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
    for i in (0, 2, 4):
        ref_v, ref_h = slsqp(weighted_loss, np.full(K, 0.02), np.ones(K), [np.full(K, 1 / K)], members[i], 800.0, 25.0, w)
        np.testing.assert_allclose(ens.values[i], ref_v, rtol=1e-9)
        np.testing.assert_allclose(ens.mixtures[i], ref_h, atol=2e-4)
    lo, hi = ens.interval(0.9)
    np.testing.assert_allclose(lo, np.percentile(ens.mixtures[ok], 5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(ens.mixtures[ok], 95, axis=0))
    assert np.all(np.isfinite(ens.mixtures[ok]))
