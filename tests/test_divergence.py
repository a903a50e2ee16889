"""Laws that diverge at a zero domain weight (``min_weight > 0``): suggestions and optimal mixtures keep every weight
at or above it, pool candidates below it are dropped with a warning, candidates where a member's prediction is
absurd are dropped, and laws finite at zero weight are not floored."""

import warnings
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax.design import select_batch, suggest
from mixjax.laws import LAWS, BiMixLaw, CapacityNoiseLaw
from mixjax.mixture import InfeasibleMixtureError

SCALE = {"model_size": 122.0, "n_tokens": 9.998}  # the subset's scale (millions of parameters, billions of tokens)
#: Below this weight the capacity-noise and BiMix predictions are their h_floor's, not the law's.
FLOOR = 1e-4


def test_min_weight_is_declared_where_the_law_diverges():
    builtin = {n: c for n, c in LAWS.items() if c.__module__.startswith("mixjax.laws.")}
    assert len(builtin) >= 15
    # the laws whose prediction diverges at a zero weight (fits mask those cells) are exactly those with a floor
    assert {n for n, c in builtin.items() if c.min_weight > 0} == {n for n, c in builtin.items() if c.mask_zero_weight}
    assert {n for n, c in builtin.items() if c.min_weight > 0} == {"capacity_noise", "bimix"}
    assert CapacityNoiseLaw.min_weight == FLOOR == BiMixLaw.min_weight


# --------------------------------------------------------------------------- capacity-noise on SlimPajama 122M
@pytest.fixture(scope="module")
def ensemble(slim122):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixjax.bootstrap("capacity_noise", slim122, resamples=8, starts=1, point_starts=4, chunk_size=4, seed=0)


def observed_objective(data):
    """Mean loss over the domains of every fully measured run."""
    y, mask = data.domain_losses()
    return y[mask.all(axis=1)].mean(axis=1)


def member_objectives(ens, H):
    """(R, n) mean predicted loss of every usable member at the mixtures H."""
    out = []
    for r in np.flatnonzero(ens.ok):
        law = jax.tree_util.tree_map(lambda x, r=r: x[r] if eqx.is_array(x) else x, ens.laws)
        out.append(np.asarray(law.predict(H, SCALE["model_size"], SCALE["n_tokens"])).mean(axis=1))
    return np.array(out)


def test_sampled_suggestions_stay_where_the_law_is_meaningful(slim122, ensemble):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = suggest(slim122, None, 6, ensemble=ensemble, n_candidates=256, mixture_starts=2, mixture_steps=200, **SCALE)
    assert res.n == 6 and res.info["min_weight"] == FLOOR
    assert res.mixtures.min() >= FLOOR * (1 - 1e-9)
    J = observed_objective(slim122)
    T = 2 * J.max()  # twice the worst measured mean loss (the typical prediction at this scale lies below it)
    assert res.info["absurd_threshold"] == pytest.approx(T)
    assert np.isfinite(res.predicted).all() and np.isfinite(res.disagreement).all()
    assert (res.predicted > J.min() - 0.5).all() and (res.predicted < J.max() + 0.5).all()
    P = member_objectives(ensemble, res.mixtures)
    assert np.isfinite(P).all() and P.max() <= T


def test_pool_candidates_below_min_weight_are_dropped_with_a_warning(slim122, ensemble):
    H = slim122.mixtures[:12].copy()
    zero = H.copy()
    zero[:, 4] = 0.0  # no commoncrawl, where the noise term diverges
    zero /= zero.sum(axis=1, keepdims=True)
    pool = np.concatenate([H, zero])
    with pytest.warns(UserWarning, match=r"12 candidate\(s\) give some domain a weight below 0.0001"):
        res = suggest(slim122, None, 4, ensemble=ensemble, candidates=pool, min_distance=0.0, **SCALE)
    assert res.info["candidates_below_min_weight"] == 12 and res.n_candidates <= 12
    assert res.mixtures.min() >= FLOOR
    with pytest.raises(ValueError, match="below 0.0001, where the law diverges"):
        suggest(slim122, None, 2, ensemble=ensemble, candidates=zero, **SCALE)
    with pytest.raises(InfeasibleMixtureError, match="capacity_noise diverges.*commoncrawl"):
        suggest(slim122, None, 2, ensemble=ensemble, ceilings={"commoncrawl": 0.0}, **SCALE)


# --------------------------------------------------------------------------- a law finite at zero weight
def test_a_law_finite_at_zero_weight_keeps_zero_weights(slim122):
    rng = np.random.default_rng(1)
    pool = rng.dirichlet(np.ones(7), 30)
    pool[np.arange(30), rng.integers(0, 7, 30)] = 0.0  # every candidate drops one domain
    pool /= pool.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = suggest(slim122, "loglinear", 3, candidates=pool, resamples=4, starts=1, point_starts=2, max_steps=50)
    assert mixjax.get_law("loglinear").min_weight == 0.0
    assert res.info.get("candidates_below_min_weight", 0) == 0 and res.n_candidates == 30
    assert np.all(res.mixtures.min(axis=1) == 0.0)


# --------------------------------------------------------------------------- absurd predictions, the batch floor
class CliffLaw(mixjax.AbstractLaw):
    """J_r(h) = 1 + s_r h_0 + z_r / h_0^2 for 3 targets: a member with z_r > 0 blows up as h_0 -> 0."""

    s: jax.Array
    z: jax.Array
    name: ClassVar[str] = "cliff_test"
    per_domain: ClassVar[bool] = False

    def __call__(self, mixture, model_size, n_tokens):
        h0 = jnp.maximum(mixture[0], 1e-6)
        return jnp.full(3, 1.0 + self.s * mixture[0] + self.z / h0**2)


def test_candidates_with_an_absurd_member_prediction_are_dropped():
    rng = np.random.default_rng(0)
    h = rng.dirichlet(np.ones(3), 10)
    y = 1.0 + 0.05 * rng.random((10, 3))  # measured objective near 1.05: absurd above about 2.1
    data = mixjax.from_arrays(h, y, 1e8, 2e9, domains=("a", "b", "c"), name="cliff")
    ens = CliffLaw(jnp.asarray([0.1, -0.1, 0.2, 0.0]), jnp.asarray([0.0, 0.0, 0.0, 1e-4]))
    grid = np.array([[a, b, 1 - a - b] for a in np.linspace(0, 1, 21) for b in np.linspace(0, 1, 21) if a + b <= 1 + 1e-12]).clip(0, 1)
    at_cliff = 1e-4 / np.maximum(grid[:, 0], 1e-6) ** 2 > 1.2  # where member 3 predicts above 2.2
    with pytest.warns(UserWarning, match=rf"{int(at_cliff.sum())} of {grid.shape[0]} candidates get a predicted objective above"):
        res = suggest(data, None, 4, ensemble=ens, candidates=grid, noise=0.01**2)
    assert res.info["candidates_absurd"] == int(at_cliff.sum()) and res.n_candidates == int((~at_cliff).sum())
    assert res.mixtures[:, 0].min() > 0.009 and np.isfinite(res.predicted).all() and res.predicted.max() < 2.2


def test_select_batch_never_picks_below_the_floor():
    H = np.array([[0.0, 0.5, 0.5], [0.2, 0.4, 0.4], [0.3, 0.3, 0.4]])
    P = np.array([[1.0, 1.00, 1.0], [1.5, 1.01, 1.0], [0.5, 0.99, 1.0]])  # most disagreement at the zero-weight candidate
    assert select_batch(P, 1, noise=0.01, mixtures=H)["index"][0] == 0
    assert select_batch(P, 1, noise=0.01, mixtures=H, lower=1e-4)["index"][0] == 1
    assert select_batch(P, 3, noise=0.01, mixtures=H, lower=1e-4)["index"].tolist() == [1, 2]


# --------------------------------------------------------------------------- optimal mixtures
@pytest.mark.parametrize("law", [
    # domain 0 gains nothing from data (A_0, c_0 tiny): its unconstrained optimal weight is 0
    CapacityNoiseLaw.from_params(b=[0.3, 0.3, 0.3], c=[1e-9, 2.0, 3.0], A=[1e-12, 1.0, 1.0], a=[0.3, 0.3, 0.3],
                                 E=[1.0, 1.0, 1.0], H=1.0),
    # domain 0's loss hardly depends on its weight (alpha_0 = 1e-7): its optimal weight is below 1e-6
    BiMixLaw.from_params(A=[1.0, 1.0, 1.0], alpha=[1e-7, 0.3, 0.3], B=[1.0, 1.0, 1.0], beta=[0.3, 0.3, 0.3], C=[1.0, 1.0, 1.0]),
], ids=["capacity_noise", "bimix"])
@pytest.mark.filterwarnings("ignore:law bimix does not depend on the model size:mixjax.DegenerateOptimumWarning")  # SCALE serves both laws
def test_optimal_mixture_respects_min_weight(law):
    res = mixjax.optimize_mixture(law, starts=2, check_fixed=False, **SCALE)
    assert res.lower[0] == FLOOR
    assert res.mixture.min() >= FLOOR * (1 - 1e-9)
    assert res.mixture[0] == pytest.approx(FLOOR, rel=1e-6)  # the floor is active: the law wants less
    assert np.isfinite(res.value)
