"""mixjax.suggest: the criterion against a synthetic ensemble whose disagreement is known in closed form, the
ensemble conditioning against the Kalman posterior covariance, and suggestions on the bounded simplex, reproducible,
seed-dependent and distinct, through the Python API and the command line (tiny settings, one compiled shape)."""

import contextlib
import io
import json
import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixjax
from mixjax.cli import main
from mixjax.design import condition_on, select_batch, suggest

K = 3
FLOOR, CEIL = 0.05, 0.8
TINY = dict(resamples=4, starts=1, point_starts=2, optimizer="adam", max_steps=30, floors=FLOOR, ceilings=CEIL)


def tiny_data(n=12, seed=0):
    """12 runs over 3 domains with 3 per-domain losses (a log-linear truth plus a little noise)."""
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(K), n)
    t = np.array([[-1.0, 0.3, 0.2], [0.2, -0.8, 0.4], [0.1, 0.5, -1.2]])
    y = np.exp(1.0 + h @ t.T) * (1 + 0.01 * rng.standard_normal((n, K)))
    return mixjax.from_arrays(h, y, 1e8, 2e9, domains=("a", "b", "c"), name="tiny")


@pytest.fixture(scope="module")
def data():
    return tiny_data()


# --------------------------------------------------------------------------- the maths
def test_conditioning_gives_the_kalman_posterior_covariance():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((9, 6)) * np.array([1.0, 2.0, 0.5, 1.5, 0.1, 3.0])
    A -= A.mean(axis=0)
    C = A.T @ A / 8
    for noise in (0.0, 0.7):
        j = 3
        post = condition_on(A, j, noise)
        expected = C - np.outer(C[:, j], C[:, j]) / (C[j, j] + noise)
        np.testing.assert_allclose(post.T @ post / 8, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(post.mean(axis=0), 0.0, atol=1e-12)  # the kriging believer keeps the mean


class BumpLaw(mixjax.AbstractLaw):
    """J_r(h) = 1 + z_r exp(-|h - centre|^2 / 0.02): members disagree only near ``centre``."""

    z: jax.Array
    name: ClassVar[str] = "bump_test"
    per_domain: ClassVar[bool] = False

    def __call__(self, mixture, model_size, n_tokens):
        centre = jnp.asarray([0.6, 0.3, 0.1])
        return (1.0 + self.z * jnp.exp(-jnp.sum((mixture - centre) ** 2) / 0.02))[None]


def simplex_grid(step=0.05):
    pts = [(i * step, j * step) for i in range(int(1 / step) + 1) for j in range(int(1 / step) + 1 - i)]
    return np.array([[a, b, 1 - a - b] for a, b in pts]).clip(0, 1)


def test_criterion_prefers_where_a_synthetic_ensemble_disagrees(data):
    z = np.asarray(bump_ensemble().z)
    H = simplex_grid()
    res = suggest(data, None, 3, ensemble=bump_ensemble(), candidates=H, noise=0.01**2, min_distance=0.0)
    # closed form: predictions capped 4 tau above the worst member's best, variance x near-optimal share
    phi = np.exp(-((H - [0.6, 0.3, 0.1]) ** 2).sum(1) / 0.02)
    P = 1.0 + z[:, None] * phi[None]
    best = P.min(axis=1, keepdims=True)
    Pc = np.minimum(P, best.max() + 4 * 0.01)
    score = Pc.var(axis=0, ddof=1) * np.exp(-(Pc - best) / 0.01).mean(axis=0)
    j = int(np.argmax(score))
    np.testing.assert_allclose(res.mixtures[0], H[j], atol=1e-12)
    np.testing.assert_allclose(res.criterion[0], score[j], rtol=1e-9)
    np.testing.assert_allclose(res.disagreement[0], P[:, j].std(ddof=1), rtol=1e-9)
    assert phi[j] > 0.5  # inside the region of disagreement; far from it every member agrees
    assert np.all(score[phi < 1e-3] < 1e-4 * score[j])


def test_select_batch_spreads_picks_when_no_disagreement_is_left():
    # two members, no noise: one pick removes all spread, the rest go far from it among near-optimal candidates
    H = simplex_grid(0.25)
    P = np.stack([np.linspace(1.0, 1.1, len(H)), np.linspace(1.05, 1.0, len(H))])
    out = select_batch(P, 3, noise=0.0, temperature=0.5, mixtures=H, min_distance=0.1)
    picked = H[out["index"]]
    d = 0.5 * np.abs(picked[:, None] - picked[None]).sum(-1)
    assert np.all(d[np.triu_indices(3, 1)] >= 0.1)
    assert out["criterion"][1] == pytest.approx(0.0, abs=1e-15)


# --------------------------------------------------------------------------- suggestions
def bump_ensemble():
    return BumpLaw(jnp.asarray([-0.3, -0.1, 0.0, 0.05, 0.2, 0.35, -0.2, 0.1]))


@pytest.fixture(scope="module")
def sampled(data):
    """Sampled candidates around a synthetic ensemble's optima, seeds 0, 0 and 1 (no fit: one small compile)."""
    kw = dict(ensemble=bump_ensemble(), noise=0.01**2, floors=FLOOR, ceilings=CEIL, n_candidates=256)
    return [suggest(data, None, 5, seed=s, **kw) for s in (0, 0, 1)]


def check_on_bounded_simplex_and_distinct(r, n):
    assert r.mixtures.shape == (n, K)
    np.testing.assert_allclose(r.mixtures.sum(axis=1), 1.0, atol=1e-9)
    assert (r.mixtures >= FLOOR - 1e-9).all() and (r.mixtures <= CEIL + 1e-9).all()
    tv = 0.5 * np.abs(r.mixtures[:, None] - r.mixtures[None]).sum(-1)
    assert np.all(tv[np.triu_indices(n, 1)] >= 0.01)  # distinct: the default least distance


def test_suggestions_on_the_bounded_simplex_distinct_and_reproducible(sampled):
    a, b, c = sampled
    for r in sampled:
        check_on_bounded_simplex_and_distinct(r, 5)
        assert r.candidates == "sampled"
    np.testing.assert_array_equal(a.mixtures, b.mixtures)
    np.testing.assert_array_equal(a.criterion, b.criterion)
    assert np.abs(a.mixtures - c.mixtures).max() > 1e-3


def test_a_mixture_spec_asks_the_same_question(data, sampled):
    """``spec=`` stands for the scale, objective and bounds of the keyword arguments: the same suggestions."""
    spec = mixjax.MixtureSpec(floors=FLOOR, ceilings=CEIL)
    got = suggest(data, None, 5, seed=0, ensemble=bump_ensemble(), noise=0.01**2, n_candidates=256, spec=spec)
    np.testing.assert_array_equal(got.mixtures, sampled[0].mixtures)
    np.testing.assert_array_equal(got.criterion, sampled[0].criterion)
    with pytest.raises(ValueError, match="ceilings given both"):
        suggest(data, None, 5, ensemble=bump_ensemble(), ceilings=CEIL, spec=spec)
    with pytest.raises(ValueError, match="does not take trust_radius"):
        suggest(data, None, 5, ensemble=bump_ensemble(), spec=spec.replace(trust_radius=0.1))


POOL_SEED = 5


@pytest.fixture(scope="module")
def pool():
    return np.random.default_rng(POOL_SEED).dirichlet(np.ones(K), 40)


@pytest.fixture(scope="module")
def pooled(data, pool):
    with pytest.warns(UserWarning, match="outside the floors and ceilings"), warnings.catch_warnings():
        # TINY's 30 steps on purpose: the full-data fit need not converge for the pool to be respected
        warnings.filterwarnings("ignore", "the full-data fit of loglinear stopped at the step limit", mixjax.MaxStepsWarning)
        return suggest(data, "loglinear", 4, candidates=pool, **TINY)


def test_pool_candidates_are_respected(data, pool, pooled):
    inside = np.all((pool >= FLOOR) & (pool <= CEIL), axis=1)
    check_on_bounded_simplex_and_distinct(pooled, 4)
    assert pooled.candidates == "pool" and pooled.n_candidates == inside.sum()
    assert all(np.any(np.all(pool[inside] == h, axis=1)) for h in pooled.mixtures)
    with pytest.raises(ValueError, match="row 0 sums to"):
        suggest(data, None, 2, ensemble=bump_ensemble(), candidates=np.full((3, K), 0.5))


def test_cli_json_shape(data, pool, pooled, tmp_path):
    path, cand = tmp_path / "tiny.csv", tmp_path / "pool.csv"
    data.to_dataframe().to_csv(path, index=False)
    import pandas as pd

    pd.DataFrame(pool, columns=["weight_a", "weight_b", "weight_c"]).to_csv(cand, index=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["suggest", str(path), "--law", "loglinear", "--n", "4", "--resamples", "4", "--starts", "1", "--point-starts", "2",
                   "--optimizer", "adam", "--max-steps", "30", "--candidates", str(cand), "--floor", str(FLOOR),
                   "--ceiling", str(CEIL), "--json"])
        bad = main(["suggest", str(path), "--law", "loglinear", "--n", "0"])
    assert rc == 0, err.getvalue()
    js = json.loads(out.getvalue())
    assert len(js["mixtures"]) == 4 and len(js["criterion_value"]) == 4
    assert all(list(m) == ["a", "b", "c"] for m in js["mixtures"])
    got = np.array([[m[d] for d in ("a", "b", "c")] for m in js["mixtures"]])
    np.testing.assert_allclose(got, pooled.mixtures, atol=1e-12)  # the same data, pool, settings and seed as the API
    np.testing.assert_allclose(js["criterion_value"], pooled.criterion, rtol=1e-9)
    assert bad == 2 and err.getvalue().strip().splitlines()[-1] == "mixjax suggest: error: --n must be at least 1, got 0"


@pytest.mark.slow  # a real bootstrap with sampled candidates around the members' optima (compiles the mixture optimizer)
@pytest.mark.filterwarnings("ignore:the full-data fit of loglinear stopped at the step limit:mixjax.MaxStepsWarning")  # TINY's 30 steps
def test_suggest_on_a_real_fit_with_sampled_candidates(data):
    runs = [suggest(data, "loglinear", 5, seed=s, n_candidates=256, **TINY) for s in (0, 0, 1)]
    for r in runs:
        check_on_bounded_simplex_and_distinct(r, 5)
    np.testing.assert_array_equal(runs[0].mixtures, runs[1].mixtures)
    assert np.abs(runs[0].mixtures - runs[2].mixtures).max() > 1e-3
