"""Variable projection of the exponential, Shukor and BiMix laws: the linear basis reproduces each law, and fits
that solve the linear coefficients in closed form recover a noise-free synthetic truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax.laws import DataSummary

#: the laws with linear coefficients in this family, and the fields variable projection solves
PROJECTED = {
    "exponential": ("log_c",),
    "shukor_mixture": ("log_E",),
    "shukor_additive": ("log_E", "log_A", "log_B"),
    "shukor_joint": ("log_E",),
    "bimix": ("log_B", "log_C"),
}
K = V = 3


def _summary():
    return DataSummary(n_domains=K, n_targets=V, loss_min=np.array([2.0, 2.3, 1.9]), loss_max=np.array([3.2, 3.5, 3.0]),
                       loss_mean=np.array([2.6, 2.8, 2.4]), model_size_ref=300.0, n_tokens_ref=8.0)


def _inputs(rng, n, zeros):
    h = rng.dirichlet(np.ones(K), n)
    if zeros:
        h[: n // 3, 0] = 0.0
        h /= h.sum(1, keepdims=True)
    return jnp.asarray(h), jnp.asarray(rng.choice([100.0, 300.0, 1000.0], n)), jnp.asarray(rng.choice([2.0, 8.0, 30.0], n))


@pytest.mark.parametrize("name", list(PROJECTED))
def test_linear_basis_reproduces_the_law(name):
    """For random parameters and random coefficients c >= 0: ``with_linear(c)`` then ``linear_basis`` gives
    ``base + phi c = law(h, N, D)`` on every run; the basis does not read the coefficients."""
    cls = mixjax.get_law(name)
    assert cls.linear_fields == PROJECTED[name]
    rng = np.random.default_rng(len(name))
    h, N, D = _inputs(rng, 30, zeros=name != "bimix")
    for seed in range(3):
        law = cls.init(jax.random.PRNGKey(seed), _summary())
        coef = jnp.asarray(rng.uniform(0.0, 3.0, (V, len(cls.linear_fields))))
        coef = coef.at[0, 0].set(0.0)  # a coefficient on its bound
        moved = law.with_linear(coef)
        for f in cls.linear_fields:
            assert np.all(np.isfinite(np.asarray(getattr(moved, f))))
        base, phi = moved.linear_basis_rows(h, N, D)
        assert base.shape == (30, V) and phi.shape == (30, V, len(cls.linear_fields))
        np.testing.assert_allclose(base + jnp.sum(phi * coef[None], axis=-1), moved.evaluate_rows(h, N, D), rtol=1e-13, atol=0)
        for got, ref in zip((base, phi), law.linear_basis_rows(h, N, D)):
            np.testing.assert_array_equal(got, ref)
        # the coefficients the law holds give its own prediction back
        own = jnp.stack([jnp.exp(getattr(law, f)) for f in cls.linear_fields], axis=-1)
        b0, p0 = law.linear_basis_rows(h, N, D)
        np.testing.assert_allclose(b0 + jnp.sum(p0 * own[None], axis=-1), law.evaluate_rows(h, N, D), rtol=1e-13, atol=0)


TRUTH = {
    "exponential": lambda: mixjax.ExponentialLaw.from_params([1.5, 2.0, 1.8], [1.0, 0.7, 1.2], [[-1.0, 0.3, 0.2], [0.4, -1.5, 0.1], [0.2, 0.5, -0.8]]),
    "shukor_mixture": lambda: mixjax.ShukorMixtureLaw.from_params([1.8, 2.0, 1.5], [[3.0, 0.5, 0.4], [0.6, 2.0, 0.3], [0.2, 0.5, 4.0]], [[0.4, 0.3, 0.5], [0.2, 0.6, 0.3], [0.5, 0.3, 0.4]]),
    # the scale laws with one target: each target is fitted on its own, and one converges in fewer steps
    "shukor_additive": lambda: mixjax.ShukorAdditiveLaw.from_params([1.8], [[3.0, 0.5, 0.4]], [[0.4, 0.3, 0.5]], [3.0], [0.4], [0.8], [0.3]),
    "shukor_joint": lambda: mixjax.ShukorJointLaw.from_params([1.8], [[3.0, 0.5, 0.4]], [[0.4, 0.3, 0.5]], [[3.0, 1.0, 2.0]], [0.4], [[0.8, 0.2, 0.5]], [0.3]),
    "bimix": lambda: mixjax.BiMixLaw.from_params([2.0, 2.5, 1.8], [0.05, 0.1, 0.08], [0.5, 1.0, 0.8], [0.4, 0.3, 0.5], [1.0, 1.0, 1.0]),
}


def _perturb(law, key, scale):
    leaves, treedef = jax.tree_util.tree_flatten(law)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) * (1 + jnp.abs(x)) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", list(PROJECTED))
def test_varpro_fit_recovers_a_synthetic_truth(name):
    """Noise-free data from the law (K = 3 domains, 40 runs at 3 model sizes and 3 token counts); a fit with variable
    projection from a perturbed truth ends converged and predicts new mixtures as the truth does."""
    truth = TRUTH[name]()
    rng = np.random.default_rng(7)
    h, N, D = _inputs(rng, 40, zeros=False)
    y = np.asarray(truth.predict(h, N, D))
    data = mixjax.from_arrays(np.asarray(h), y, np.asarray(N) * 1e6, np.asarray(D) * 1e9, name=f"synthetic-{name}")
    f = mixjax.fit(_perturb(truth, jax.random.PRNGKey(1), 0.1), data, starts=1, max_steps=3000)
    assert f.config.varpro and f.status == mixjax.Status.converged, (f.status, f.num_steps)
    h2, N2, D2 = _inputs(rng, 20, zeros=False)
    np.testing.assert_allclose(np.asarray(f.law.predict(h2, N2, D2)), np.asarray(truth.predict(h2, N2, D2)), rtol=1e-8)
