"""The laws built for extrapolation across scales: chinchilla_mixture (shared and per-target exponents) and the
capacity-noise law with a pseudo-count (capacity_noise_h0), against independent numpy evaluations of their formulas,
at zero weight, in the seed law's limit, and in synthetic-truth fits."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import mixjax
from mixjax import CapacityNoiseLaw, CapacityNoisePseudoCountLaw, ChinchillaMixtureLaw, ChinchillaMixturePerTargetLaw
from mixjax.problem import prepare

K = 4


@eqx.filter_jit
def predict(law, h, N, D):
    """Losses (n, V) of a law for n runs, compiled once per law type and shape (eager evaluation is slower)."""
    return law.predict(h, N, D)


@eqx.filter_jit
def basis(law, h, N, D):
    """The law's variable-projection basis (base (n, V), phi (n, V, L)), compiled."""
    return jax.vmap(law.linear_basis)(h, N, D)


def random_mixtures(rng, n, zeros=True):
    h = rng.dirichlet(np.ones(K), size=n)
    if zeros:
        h[0, 1] = 0.0
        h[1, [0, 3]] = 0.0
        h /= h.sum(axis=1, keepdims=True)
    return h


def chinchilla_mixture_numpy(p, h, N, D):
    """E_v + (N^-alpha_v + B_v D^-beta_v) / sum_j C_vj h_j^gamma_vj, one run; 0^gamma = 0."""
    S = (p["C"] * np.where(h > 0, h, 0.0)[None, :] ** p["gamma"]).sum(axis=1)
    return p["E"] + (N ** -p["alpha"] + p["B"] * D ** -p["beta"]) / S


def allocation_numpy(h, b, c, H, N):
    """Capacity allocation from its KKT conditions: x_i = max(H, (b_i c_i h_i / lam)^(1/(1+b_i))), sum x = N + (K-1)H,
    lam found by bracketing on log lam (scipy brentq)."""
    total = N + (len(h) - 1) * H

    def x(t):
        free = np.exp((np.log(b * c * np.where(h > 0, h, 1.0)) - t) / (1 + b))
        return np.maximum(H, np.where(h > 0, free, 0.0))

    t = brentq(lambda t: x(t).sum() - total, -500.0, 500.0, xtol=1e-13, rtol=1e-15)
    return x(t)


def capacity_h0_numpy(p, h, N, D):
    x = allocation_numpy(h, p["b"], p["c"], p["H"], N)
    return p["c"] * x ** -p["b"] + p["A"] * (D * (h + p["h0"])) ** -p["a"] + p["E"]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("cls", [ChinchillaMixtureLaw, ChinchillaMixturePerTargetLaw])
def test_chinchilla_mixture_matches_numpy_formula(cls, rng):
    V = 3
    exp_shape = () if cls is ChinchillaMixtureLaw else (V,)
    p = {"E": rng.uniform(1, 3, V), "alpha": rng.uniform(0.1, 0.6, exp_shape), "B": rng.uniform(0.2, 3, V),
         "beta": rng.uniform(0.1, 0.6, exp_shape), "C": rng.uniform(0.05, 1, (V, K)), "gamma": rng.uniform(0.1, 1.2, (V, K))}
    law = cls.from_params(**p)
    h = random_mixtures(rng, 6)
    N, D = rng.uniform(50, 3000, 6), rng.uniform(1, 200, 6)
    got = np.asarray(predict(law, h, N, D))
    want = np.stack([chinchilla_mixture_numpy(p, h[r], N[r], D[r]) for r in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(np.isfinite(got[:2]))  # rows with zero weights
    # the declared linear coefficients (B, E) reproduce the prediction exactly
    base, phi = basis(law, jnp.asarray(h), jnp.asarray(N), jnp.asarray(D))
    coef = np.stack([p["B"], p["E"]], axis=1)
    np.testing.assert_allclose(np.asarray(base) + np.einsum("nvl,vl->nv", np.asarray(phi), coef), want, rtol=1e-12)
    moved = law.with_linear(jnp.asarray(coef * 2.0))
    np.testing.assert_allclose(np.asarray(moved.params()["B"]), 2 * p["B"], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(moved.params()["E"]), 2 * p["E"], rtol=1e-12)


@pytest.fixture(scope="module")
def capacity_params(rng):
    return {"b": rng.uniform(0.2, 1.0, K), "c": rng.uniform(1, 6, K), "A": rng.uniform(0.1, 1.5, K),
            "a": rng.uniform(0.1, 0.6, K), "E": rng.uniform(1, 2.5, K), "H": 3.0, "h0": rng.uniform(0.002, 0.05, K)}


def test_capacity_h0_matches_numpy_formula(capacity_params, rng):
    p = capacity_params
    law = CapacityNoisePseudoCountLaw.from_params(**p)
    h = random_mixtures(rng, 5)
    N, D = rng.uniform(100, 2000, 5), rng.uniform(2, 100, 5)
    got = np.asarray(predict(law, h, N, D))
    want = np.stack([capacity_h0_numpy(p, h[r], N[r], D[r]) for r in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    base, phi = basis(law, jnp.asarray(h), jnp.asarray(N), jnp.asarray(D))
    np.testing.assert_allclose(np.asarray(base) + np.asarray(phi[..., 0]) * p["A"] + p["E"], want, rtol=1e-9)


def test_capacity_h0_finite_at_zero_weight_and_seed_law_as_h0_vanishes(capacity_params, rng):
    p = capacity_params
    h = random_mixtures(rng, 5)
    N, D = np.full(5, 500.0), np.full(5, 20.0)
    with_h0 = np.asarray(predict(CapacityNoisePseudoCountLaw.from_params(**p), h, N, D))
    zero = h == 0
    assert zero.sum() == 3 and np.all(np.isfinite(with_h0))
    # at h_i = 0 the noise term is A_i (D h0_i)^-a_i, the capacity term sits at the floor H
    noise0 = p["A"] * (D[:, None] * p["h0"][None, :]) ** -p["a"]
    floor = p["c"] * p["H"] ** -p["b"]
    np.testing.assert_allclose(with_h0[zero], (floor[None, :] + noise0 + p["E"][None, :])[zero], rtol=1e-9)
    seed = CapacityNoiseLaw.from_params(p["b"], p["c"], p["A"], p["a"], p["E"], p["H"])
    tiny = CapacityNoisePseudoCountLaw.from_params(**{**p, "h0": np.full(K, 1e-13)})
    np.testing.assert_allclose(np.asarray(predict(tiny, h, N, D))[~zero], np.asarray(predict(seed, h, N, D))[~zero], rtol=1e-10)


def test_capacity_h0_fits_zero_weight_cells():
    d = mixjax.load_dataset("pile17_regmix1b")
    seed_mask = np.asarray(prepare(CapacityNoiseLaw, d)[0].mask)
    h0_mask = np.asarray(prepare(CapacityNoisePseudoCountLaw, d)[0].mask)
    zero = (d.mixtures > 0) == False  # noqa: E712
    _, measured = d.domain_losses()
    assert (measured & zero).sum() > 0
    assert not (seed_mask & zero).any() and np.array_equal(h0_mask, measured)


@pytest.mark.slow  # the formula tests above run by default; this full fit is about 10 s of compilation
def test_chinchilla_mixture_recovers_synthetic_truth(rng):
    """Noiseless data from known parameters (2 domains, 2 targets) at 3 sizes x 3 token counts x 6 mixtures: a fit
    from random starts recovers the parameters and predicts a 4x larger model at 5x more tokens (not in the data)."""
    p = {"E": np.array([1.5, 2.0]), "alpha": 0.35, "B": np.array([1.0, 0.5]), "beta": 0.3,
         "C": np.array([[0.6, 0.15], [0.1, 0.4]]), "gamma": np.array([[0.5, 0.3], [0.4, 0.6]])}
    truth = ChinchillaMixtureLaw.from_params(**p)
    h = rng.dirichlet(np.ones(2), size=6)
    grid = [(hh, n, t) for n in (100.0, 300.0, 900.0) for t in (2.0, 8.0, 30.0) for hh in h]
    H = np.stack([g[0] for g in grid])
    N, D = np.array([g[1] for g in grid]), np.array([g[2] for g in grid])
    y = np.asarray(predict(truth, H, N, D))
    train = mixjax.from_arrays(H, y, N * 1e6, D * 1e9, domains=["d0", "d1"], name="synthetic")
    fit = mixjax.fit(ChinchillaMixtureLaw, train, starts=2, max_steps=300, objective="relative")
    for name, value in fit.params().items():
        np.testing.assert_allclose(value, p[name], rtol=1e-6, err_msg=name)
    far = rng.dirichlet(np.ones(2), size=4)
    np.testing.assert_allclose(np.asarray(fit.law.predict(far, 3600.0, 150.0)), np.asarray(predict(truth, far, 3600.0, 150.0)), rtol=1e-8)


@pytest.mark.slow
def test_capacity_h0_recovers_synthetic_truth_with_zero_weights(capacity_params, rng):
    """Noiseless data with zero weights from known parameters; a fit from random starts predicts every cell,
    zero-weight ones included, to 1e-3 relative."""
    truth = CapacityNoisePseudoCountLaw.from_params(**capacity_params)
    h = random_mixtures(rng, 40)
    h[2:12, 2] = 0.0
    h /= h.sum(axis=1, keepdims=True)
    N = np.repeat([150.0, 600.0], 20)
    D = np.tile([5.0, 20.0], 20)
    y = np.asarray(predict(truth, h, N, D))
    data = mixjax.from_arrays(h, y, N * 1e6, D * 1e9, domains=[f"d{i}" for i in range(K)], name="synthetic")
    fit = mixjax.fit(CapacityNoisePseudoCountLaw, data, starts=16, max_steps=2000, objective="relative")
    pred = fit.predict(data)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred, y, rtol=1e-3)
