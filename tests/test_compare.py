"""Law comparison: folds by mixture, held-out scale, scores against independent recomputation and scipy."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

import mixjax
import mixjax.cli
from mixjax.comparison import compare, cv_splits, holdout_scale_split, spearman

LAWS = ["loglinear", "chinchilla"]
SETTINGS = dict(starts=2, max_steps=150)


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


def test_ranks_match_scipy_rankdata():
    from scipy.stats import rankdata

    from mixjax.comparison import average_ranks

    rng = np.random.default_rng(3)
    cases = [rng.integers(0, 4, 30).astype(float), rng.normal(size=17), np.full(6, 2.5), np.array([1.0, 1.0, 0.5, 3.0, 0.5])]
    for x in cases:
        np.testing.assert_array_equal(average_ranks(x), rankdata(x, method="average"))


def test_spearman_matches_scipy_on_ties_and_is_undefined_for_a_constant():
    rng = np.random.default_rng(4)
    for _ in range(5):
        a = rng.integers(0, 3, 25).astype(float)
        b = rng.integers(0, 4, 25).astype(float)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.full(8, 3.0), rng.normal(size=8)))


def _groups_by_split_and_scale(data, splits):
    """Row counts of the held-out rows of every split at every (model size, token count), by pandas."""
    df = data.to_dataframe()
    return [n for s in splits for n in df[s.test].groupby(["model_size", "n_tokens"]).size().tolist()]


def _flat_reference(law, data):
    """Whether a fitted law's predictions vary by at most 1e-6 relative across mixtures at every scale."""
    pred = np.asarray(law.predict(data.mixtures, data.model_size_m, data.n_tokens_b))
    df = data.to_dataframe()
    spreads = [np.ptp(pred[idx], axis=0) / np.abs(pred[idx]).max(axis=0) for idx in df.groupby(["model_size", "n_tokens"]).indices.values()]
    return bool(np.max(spreads) <= 1e-6)


def test_mixture_blind_law_ties_every_mixture(synthetic, result):
    by = {s.law: s for s in result.scores}
    m = np.array(_groups_by_split_and_scale(synthetic, result.splits))
    assert by["chinchilla"].best_rank == pytest.approx(np.mean((m + 1) / 2))  # 4.5 here, not 1
    assert by["chinchilla"].spearman is None and set(by["chinchilla"].spearman_per_target.values()) == {None}
    for score in result.scores:
        flat = [_flat_reference(law, synthetic) for law in score.fits]
        assert score.constant_in_mixture == any(flat)
    assert by["chinchilla"].constant_in_mixture and not by["loglinear"].constant_in_mixture
    assert dict(zip([r["law"] for r in result.table()], [r["flat in mixture"] for r in result.table()])) == {"loglinear": "no", "chinchilla": "by form"}


def test_collapsed_mixture_law_is_flagged_with_a_warning(synthetic):
    import jax.numpy as jnp

    # the mixture enters linearly; the losses do not depend on it, so the fit drives its coefficient to 0
    def fn(p, h, N, D):
        return p["E"] + p["s"] * jnp.log(N) + p["w"] * h[0]

    law = mixjax.law_from_function(fn, {"E": np.full(3, 3.0), "s": np.zeros(3), "w": np.full(3, 0.5)}, name="flatmix", mixture=True)
    data = mixjax.from_arrays(synthetic.mixtures, np.where(synthetic.model_size[:, None] > 2e8, 2.5, 3.0) * np.ones((1, 3)),
                              synthetic.model_size, synthetic.n_tokens, domains=synthetic.domains,
                              mixture_id=synthetic.mixture_id, name="flat")
    with pytest.warns(UserWarning, match="flatmix .* constant in the mixture"):
        res = compare(data, [law], cv="mixtures:3", seed=1, **SETTINGS)
    score = res.best
    assert [_flat_reference(f, data) for f in score.fits] == [True] * len(score.fits)
    assert score.constant_in_mixture and res.table()[0]["flat in mixture"] == "YES (collapsed)"
    assert score.best_rank == pytest.approx(np.mean((np.array(_groups_by_split_and_scale(data, res.splits)) + 1) / 2))


def test_constant_threshold_is_relative():
    from mixjax.comparison import is_constant_in_mixture

    data = mixjax.from_arrays(np.eye(3)[[0, 1, 2, 0, 1, 2]], 1 + np.arange(18.0).reshape(6, 3) / 100, np.repeat([1e8, 4e8], 3), np.full(6, 1e10),
                              domains=["a", "b", "c"], name="tiny")
    base = np.full((6, 3), 1e3)
    assert is_constant_in_mixture(base + np.tile([0.0, 1e-4, 0.0], 2)[:, None], data)  # 1e-7 relative
    assert not is_constant_in_mixture(base + np.tile([0.0, 1e-2, 0.0], 2)[:, None], data)  # 1e-5 relative


def test_out_of_range_params_are_the_fits_out_of_range_names(result):
    named = []
    for score in result.scores:
        ranges = mixjax.get_law(score.law).sane_ranges
        by_hand, by_law = set(), set()
        for law in score.fits:
            values = law.params()
            by_hand |= {k for k, (lo, hi) in ranges.items() if k in values and ((np.asarray(values[k]) < lo) | (np.asarray(values[k]) > hi)).any()}
            by_law |= set(law.out_of_range())
        assert set(score.out_of_range_params) == by_hand == by_law and len(score.out_of_range_params) == len(by_hand)
        named += score.out_of_range_params
    assert named  # chinchilla's alpha runs away on this data (one token count): the check is not vacuous
    for row, score in zip(result.table(), result.scores):
        assert row["out of range"] == (",".join(score.out_of_range_params) or "-")


@pytest.fixture(scope="module")
def checkpointed():
    """8 mixtures at two model sizes, each run with 2 or 3 checkpoints (some runs stop early)."""
    rng = np.random.default_rng(11)
    h = rng.dirichlet(np.ones(3), 8)
    rows = [(m, N, D) for m in range(8) for N in (1e8, 4e8) for D in (2e9, 5e9, 1e10) if not (D == 1e10 and (m + int(N == 4e8)) % 3 == 0)]
    m, N, D = (np.array(c) for c in zip(*rows))
    losses = np.exp(np.log([2.5, 3.0, 2.2]) + h[m] @ rng.normal(0, 0.3, (3, 3)).T) + (40 / (N / 1e6) ** 0.3 + 30 / (D / 1e9) ** 0.3)[:, None]
    return mixjax.from_arrays(h[m], losses, N, D, domains=["a", "b", "c"], mixture_id=m, name="ckpt")


def _final_rows_by_pandas(data):
    df = data.to_dataframe()
    last = df.groupby(["mixture_id", "model_size"])["n_tokens"].transform("max")
    return np.flatnonzero((df["n_tokens"] == last).to_numpy())


@pytest.mark.filterwarnings("ignore::mixjax.MaxStepsWarning")  # few steps on purpose: this checks the rows used
def test_holdout_scale_defaults_to_final_checkpoints(checkpointed):
    import warnings

    from mixjax.comparison import CheckpointWarning

    expected = _final_rows_by_pandas(checkpointed)
    assert 0 < expected.size < checkpointed.n_rows
    with pytest.warns(CheckpointWarning, match=f"{expected.size} of {checkpointed.n_rows} rows"):
        res = compare(checkpointed, ["chinchilla"], holdout_scale="largest", **SETTINGS)
    np.testing.assert_array_equal(res.rows, expected)
    final = checkpointed.final_checkpoints()
    np.testing.assert_array_equal(checkpointed.n_tokens[res.rows], final.n_tokens)
    np.testing.assert_array_equal(checkpointed.mixture_id[res.rows], final.mixture_id)
    split = res.splits[0]
    assert split.test.sum() == (checkpointed.model_size[expected] == 4e8).sum() and split.train.sum() + split.test.sum() == expected.size
    assert (res.checkpoints, res.as_dict()["n_rows"], res.as_dict()["n_rows_input"]) == ("final", expected.size, checkpointed.n_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        every = compare(checkpointed, ["chinchilla"], holdout_scale="largest", checkpoints="all", **SETTINGS)
        cv = compare(checkpointed, ["chinchilla"], cv="mixtures:2", **SETTINGS)
    assert every.splits[0].test.sum() == (checkpointed.model_size == 4e8).sum()
    assert every.rows.size == cv.rows.size == checkpointed.n_rows and cv.checkpoints == "all"


def test_cli_says_which_checkpoints_it_used(checkpointed, tmp_path, capsys):
    path = tmp_path / "ckpt.csv"
    checkpointed.to_dataframe().to_csv(path, index=False)
    n, k = checkpointed.n_rows, _final_rows_by_pandas(checkpointed).size
    base = ["compare", str(path), "--laws", "chinchilla", "--starts", "2", "--max-steps", "150"]
    runs = {
        "default": (["--holdout-scale", "largest"], k, f"using the final checkpoint of each run: {k} of {n} rows; --all-checkpoints keeps every row"),
        "final": (["--holdout-scale", "largest", "--final-checkpoints"], k, f"using the final checkpoint of each run: {k} of {n} rows"),
        "all": (["--holdout-scale", "largest", "--all-checkpoints"], n, "using every checkpoint row"),
        "cv": (["--cv", "mixtures:2"], n, "several checkpoints per run"),
    }
    for extra, rows, said in runs.values():
        assert mixjax.cli.main(base + extra + ["--json"]) == 0
        cap = capsys.readouterr()
        out = json.loads(cap.out)
        assert out["n_rows"] == rows and out["n_rows_input"] == n and said in cap.err
        law = out["laws"][0]
        assert law["constant_in_mixture"] is True and isinstance(law["out_of_range_params"], list)
    assert mixjax.cli.main(base + ["--holdout-scale", "largest"]) == 0
    text = capsys.readouterr().out
    for head in ("val MRE % common", "val MRE % all", "flat in mixture", "out of range"):
        assert head in text
    assert mixjax.cli.main(base + ["--final-checkpoints", "--all-checkpoints"]) == 2


class _DeadLogLinear(mixjax.LogLinearLaw):
    """The log-linear law with every starting point NaN: no fit can succeed."""

    name = "test_dead_loglinear"

    @classmethod
    def init(cls, key, summary):
        law = mixjax.LogLinearLaw.init(key, summary)
        return cls(c=law.c * np.nan, t=law.t)


def test_throw_policy_when_every_law_failed(synthetic):
    with pytest.raises(mixjax.FitFailedError, match="every compared law failed"):
        compare(synthetic, [_DeadLogLinear], cv="mixtures:3", seed=1, **SETTINGS)
    out = compare(synthetic, [_DeadLogLinear], cv="mixtures:3", seed=1, throw=False, **SETTINGS)
    assert out.scores[0].status == "nonfinite" and out.scores[0].status_counts["nonfinite"] == 4


def _outside_by_loops(data, split):
    """(held-out rows outside the training range of some weight, [(gap, row, domain)]) by plain Python loops."""
    train = [i for i in range(data.n_rows) if split.train[i]]
    out, gaps = [], []
    for i in range(data.n_rows):
        if not split.test[i]:
            continue
        row_out = False
        for j, d in enumerate(data.domains):
            col = [float(data.mixtures[r][j]) for r in train]
            w = float(data.mixtures[i][j])
            gap = max(min(col) - w, w - max(col))
            if gap > 1e-9:
                row_out = True
                gaps.append((gap, i, d))
        out.append(row_out)
    return sum(out), gaps


def test_held_out_rows_outside_the_training_weights_are_counted(synthetic, result):
    from mixjax.comparison import Split, weight_extrapolation

    # the comparison's own splits: the count and the furthest row agree with a loop over rows and domains
    n, gaps = 0, []
    for s in result.splits:
        k, g = _outside_by_loops(synthetic, s)
        n += k
        gaps += [(gap, row, d, s.name) for gap, row, d in g]
    ex = result.extrapolation
    assert ex["n_rows"] == n and ex["n_test_rows"] == sum(int(s.test.sum()) for s in result.splits)
    gap, row, dom, name = max(gaps)
    tied_rows = {r for g, r, d, s in gaps if g == gap and d == dom and s == name}  # one mixture at two model sizes
    assert ex["worst"]["row"] in tied_rows and (ex["worst"]["domain"], ex["worst"]["split"]) == (dom, name)
    lo, hi = ex["worst"]["range"]
    assert max(lo - ex["worst"]["weight"], ex["worst"]["weight"] - hi) == pytest.approx(gap, rel=1e-12)
    # a split that holds out every mixture with more of domain a than any training mixture: every held-out row is
    # outside; holding out a random half of the mixtures inside the hull of the rest: none is
    a = np.asarray(synthetic.mixtures)[:, 0]
    high = a > np.quantile(a, 0.75)
    ex = weight_extrapolation(synthetic, [Split("high a", ~high, high)])
    assert ex["n_rows"] == int(high.sum()) and ex["worst"]["domain"] == "a"
    inner = np.zeros(synthetic.n_rows, bool)
    inner[np.argsort(np.abs(a - np.median(a)))[:2]] = True  # two rows near the median of a; still maybe outside in b, c
    k, _ = _outside_by_loops(synthetic, Split("inner", ~inner, inner))
    assert weight_extrapolation(synthetic, [Split("inner", ~inner, inner)])["n_rows"] == k


def test_a_law_stopped_at_the_step_limit_is_named_in_a_warning(synthetic):
    """Scores of unfinished fits are flagged: a warning names every law whose best start stopped at the step limit in
    some split, and only those (its status counts say max_steps)."""
    with pytest.warns(mixjax.MaxStepsWarning, match="stopped at the step limit") as rec:
        res = compare(synthetic, LAWS, cv="mixtures:3", seed=1, starts=2, max_steps=3)
    unfinished = [s.law for s in res.scores if s.status_counts["max_steps"] > 0]
    assert unfinished, "three steps cannot finish these fits"
    message = " ".join(str(w.message) for w in rec if issubclass(w.category, mixjax.MaxStepsWarning))
    for s in res.scores:
        assert (s.law in message) == (s.law in unfinished)
