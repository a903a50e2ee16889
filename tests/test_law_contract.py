"""The contract every registered law keeps with the engine, checked law by law.

A law is fitted inside one compiled, vmapped loop, so each must: draw finite starts with a traceable ``init``
(vmapped over keys); give the same losses from its all-runs form (``evaluate_rows``) as from ``__call__`` run by run,
and from a vmap over a batch of laws as from each law alone; compile once for every parameter value of one shape
(no retrace); have gradients that agree with central finite differences; and, when it declares linear coefficients
for variable projection, predict exactly ``base + phi @ coef`` for any coefficients set by ``with_linear``.
Known-parameter recovery and the numpy formula of each law are in ``test_laws.py``.
"""

import equinox as eqx
import jax
import jax.flatten_util  # noqa: F401
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.laws import LAWS, DataSummary

K = 3


def _summary(cls) -> DataSummary:
    V = K if cls.per_domain else 2
    return DataSummary(n_domains=K, n_targets=V, loss_min=np.full(V, 2.0), loss_max=np.full(V, 3.5), loss_mean=np.full(V, 2.7),
                       model_size_ref=300.0, n_tokens_ref=10.0, model_size_range=(100.0, 1000.0), n_tokens_range=(2.0, 50.0))


def _inputs(n=6, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(K) * 2.0, size=n)
    return jnp.asarray(h), jnp.asarray(rng.uniform(100, 1000, n)), jnp.asarray(rng.uniform(2, 50, n))


def _member(batch, i):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, batch)


LAWS_WITH_INIT = sorted(name for name, cls in LAWS.items() if cls.has_init())
LINEAR = [name for name in LAWS_WITH_INIT if LAWS[name].linear_fields]


def test_every_registered_law_draws_its_own_starts():
    # a registered law is fitted by name, so it must draw its own starts
    assert LAWS_WITH_INIT == sorted(LAWS)
    assert LINEAR  # variable projection is exercised by some law


def _drawn(name):
    cls = LAWS[name]
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    summary = _summary(cls)
    return cls, jax.vmap(lambda k: cls.init(k, summary))(keys)  # init must trace under vmap (op by op: cheaper than compiling)


# variants sharing the capacity-noise allocation machinery (the costliest to compile) run with the slow tests
SLOW = ("capacity_only", "capacity_noise_run_tokens", "capacity_noise_h0")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in LAWS_WITH_INIT])
def test_law_keeps_the_engine_contract(name):
    cls, batch = _drawn(name)
    h, N, D = _inputs()

    @eqx.filter_jit
    def both_forms(batch):  # the all-runs form and __call__ run by run, each under a vmap over the batch of laws
        rows = eqx.filter_vmap(lambda law: law.evaluate_rows(h, N, D))(batch)
        calls = eqx.filter_vmap(lambda law: jax.vmap(lambda hr, Nr, Dr: law(hr, Nr, Dr))(h, N, D))(batch)
        return rows, calls

    rows, calls = (np.asarray(x) for x in both_forms(batch))
    assert rows.shape == (2, h.shape[0], _summary(cls).n_targets)
    assert np.all(np.isfinite(rows)), f"{name}: a drawn start predicts non-finite losses"
    assert not np.allclose(rows[0], rows[1])  # two different starts
    np.testing.assert_allclose(rows, calls, rtol=1e-10, atol=1e-12, err_msg=f"{name}: evaluate_rows != __call__ run by run")

    # gradient against a central finite difference along a random direction
    params, rest = eqx.partition(_member(batch, 0), eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    traces = []

    def objective(x):
        traces.append(1)
        y = eqx.combine(unravel(x), rest).evaluate_rows(h, N, D)
        return jnp.sum(jnp.log(jnp.abs(y) + 1.0))

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    g = np.asarray(value_and_grad(flat)[1])
    assert np.all(np.isfinite(g)), f"{name}: non-finite gradient at a drawn start"
    direction = np.random.default_rng(3).normal(size=flat.shape)
    eps = 1e-5
    fd = (float(value_and_grad(flat + eps * direction)[0]) - float(value_and_grad(flat - eps * direction)[0])) / (2 * eps)
    np.testing.assert_allclose(g @ direction, fd, rtol=1e-5, atol=1e-8, err_msg=f"{name}: gradient vs finite difference")
    assert len(traces) == 1, f"{name}: retraced for new parameter values of the same shape"


@pytest.mark.parametrize("name", LINEAR)
def test_linear_coefficients_enter_linearly(name):
    cls, batch = _drawn(name)
    law = _member(batch, 0)
    h, N, D = _inputs(seed=2)
    basis = eqx.filter_jit(lambda law: law.linear_basis_rows(h, N, D))
    base, phi = basis(law)
    coef = jnp.asarray(np.random.default_rng(4).uniform(0.1, 2.0, size=phi.shape[1:]))
    moved = law.with_linear(coef)
    want = np.asarray(base) + np.einsum("nvl,vl->nv", np.asarray(phi), np.asarray(coef))
    np.testing.assert_allclose(np.asarray(eqx.filter_jit(lambda law: law.evaluate_rows(h, N, D))(moved)), want, rtol=1e-10, atol=1e-12,
                               err_msg=f"{name}: prediction != base + phi @ coef")
    base2, phi2 = basis(moved)  # the basis does not read the linear fields
    np.testing.assert_allclose(np.asarray(base2), np.asarray(base), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(phi2), np.asarray(phi), rtol=1e-12, atol=1e-14)


CONVEX = [name for name in LAWS_WITH_INIT if LAWS[name].convex_in_mixture]


@pytest.mark.parametrize("name", CONVEX)
def test_a_law_declared_convex_in_the_mixture_is(name):
    """``convex_in_mixture`` lets a bootstrap member's mixture search use 2 starts, so the claim must hold for any
    parameters, not only drawn starts: the midpoint inequality L((a + b) / 2) <= (L(a) + L(b)) / 2 on random pairs of
    mixtures, with each parameter array scaled up 30x (far from its start)."""
    cls, laws = _drawn(name)
    law = jax.tree_util.tree_map(lambda x: 30.0 * x if eqx.is_inexact_array(x) else x, _member(laws, 0))
    rng = np.random.default_rng(3)
    a, b = rng.dirichlet(np.ones(K) * 0.5, size=(2, 200))
    N, D = jnp.full(200, 300.0), jnp.full(200, 10.0)
    at = lambda h: np.asarray(jax.vmap(law)(jnp.asarray(h), N, D))  # noqa: E731
    gap = (at(a) + at(b)) / 2 - at((a + b) / 2)
    assert (gap >= -1e-12 * np.abs(at(a))).all()
    assert gap.max() > 1e-3  # the pairs test curvature, not a flat law
