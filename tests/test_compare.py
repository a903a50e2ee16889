"""Law comparison: folds by mixture, held-out scale, scores against independent recomputation and scipy."""

import json

import jax
import numpy as np
import pytest
from scipy.stats import spearmanr

import mixjax
import mixjax.cli
from mixjax.comparison import compare, cv_splits, holdout_scale_split, spearman

LAWS = ["loglinear", "chinchilla"]
SETTINGS = dict(starts=2, max_steps=150)


@pytest.fixture(scope="module")
def synthetic():
    """Noise-free losses of a known log-linear law: 24 mixtures of 3 domains, each at two model sizes."""
    rng = np.random.default_rng(7)
    h = rng.dirichlet(np.ones(3), 24)
    c = np.log([2.5, 3.0, 2.2])
    t = rng.normal(0.0, 0.4, (3, 3))
    H = np.concatenate([h, h])
    losses = np.exp(c + H @ t.T)
    return mixjax.from_arrays(
        H, losses, np.repeat([1e8, 4e8], 24), np.full(48, 1e10), domains=["a", "b", "c"],
        mixture_id=np.tile(np.arange(24), 2), name="synthetic",
    )


@pytest.fixture(scope="module")
def result(synthetic):
    return compare(synthetic, LAWS, cv="mixtures:3", seed=1, **SETTINGS)


def test_folds_keep_each_mixture_on_one_side(synthetic):
    splits = cv_splits(synthetic, "mixtures:3", seed=1)
    test = np.stack([s.test for s in splits])
    assert (test.sum(0) == 1).all()  # every row held out exactly once
    for s in splits:
        assert not (s.train & s.test).any()
        held = set(synthetic.mixture_id[s.test].tolist())
        assert held.isdisjoint(synthetic.mixture_id[s.train].tolist())
    again = cv_splits(synthetic, "mixtures:3", seed=1)
    other = cv_splits(synthetic, "mixtures:3", seed=2)
    assert all((a.test == b.test).all() for a, b in zip(splits, again))
    assert any((a.test != b.test).any() for a, b in zip(splits, other))


def test_holdout_scale_fits_below_the_largest_size(synthetic):
    s = holdout_scale_split(synthetic, "largest")
    assert (synthetic.model_size[s.test] == 4e8).all() and (synthetic.model_size[s.train] == 1e8).all()
    with pytest.raises(mixjax.DataError, match="no row"):
        holdout_scale_split(synthetic, 2e8)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_true_law_wins_with_near_zero_held_out_error(result):
    assert [s.law for s in result.scores] == ["loglinear", "chinchilla"]
    best, other = result.scores
    assert best.val_mre < 1e-3 and other.val_mre > 1e-2
    assert best.spearman > 0.99
    assert best.best_rank == 1.0
    assert best.n_cells_used == 48 * 3 and best.n_cells_excluded == 0


def test_scores_match_an_independent_recomputation(synthetic, result):
    """Pooled held-out MRE from the per-fold fits, and AIC of the all-rows fit, recomputed by hand."""
    splits = result.splits
    for score in result.scores:
        errs = []
        for g, s in enumerate(splits):
            law = score.fits[g]
            pred = np.asarray(law.predict(synthetic.mixtures[s.test], synthetic.model_size_m[s.test], synthetic.n_tokens_b[s.test]))
            obs = synthetic.losses[s.test]
            errs.append(np.abs(pred - obs) / obs)
        assert score.val_mre == pytest.approx(np.concatenate(errs).mean(), rel=1e-9)
        full = score.fits[-1]
        pred = np.asarray(full.predict(synthetic.mixtures, synthetic.model_size_m, synthetic.n_tokens_b))
        sse, n = float(((pred - synthetic.losses) ** 2).sum()), synthetic.losses.size
        assert score.aic == pytest.approx(n * np.log(sse / n) + 2 * score.n_params, rel=1e-9)


def test_cli_json_is_the_python_leaderboard(synthetic, result, tmp_path, capsys):
    path = tmp_path / "s.csv"
    synthetic.to_dataframe().to_csv(path, index=False)
    rc = mixjax.cli.main(["compare", str(path), "--laws", ",".join(LAWS), "--cv", "mixtures:3", "--seed", "1",
                          "--starts", "2", "--max-steps", "150", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["law"] for d in out["laws"]] == [s.law for s in result.scores]
    for d, s in zip(out["laws"], result.scores):
        assert d["val_mre"] == pytest.approx(s.val_mre, rel=1e-9)
        assert {"n_params", "train_mre", "spearman", "status"} <= set(d)
    rc = mixjax.cli.main(["compare", str(path), "--laws", "loglinear", "--cv", "rows:1"])
    assert rc == 2
