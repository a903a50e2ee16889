"""Bootstrap: intervals against a closed-form reference (weighted least squares with the same resample weights),
reproducibility, failed resamples, the resampling schemes, save/load, the command line and the plots."""

from __future__ import annotations

import json
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import mixjax
from mixjax.resampling import BootstrapResult, resample_weights
from mixjax.fitting import init_starts, prepare, summarize
from mixjax.laws import LAWS, AbstractLaw, registered

R, S, SEED, CHUNK = 200, 2, 3, 100  # every LinearMixLaw call reuses one compiled shape (CHUNK members)


def _linear(W, g, mixture, n_tokens):
    return W @ mixture + g * jnp.log(n_tokens)


class LinearMixLaw(AbstractLaw):
    """pred_j = sum_k W_jk h_k + g_j log D (D in billions of tokens): linear in its V(K+1) parameters, so each
    weighted MSE refit is a weighted least-squares problem with a closed-form solution."""

    W: jax.Array
    g: jax.Array
    name: ClassVar[str] = "test_linear_mix"
    per_domain: ClassVar[bool] = False
    uses_tokens: ClassVar[bool] = True

    @classmethod
    def init(cls, key, summary):
        k1, k2 = jax.random.split(key)
        return cls(jax.random.uniform(k1, (summary.n_targets, summary.n_domains), minval=1.0, maxval=4.0), 0.1 * jax.random.normal(k2, (summary.n_targets,)))

    def params(self):
        return {"W": self.W, "g": self.g}

    def __call__(self, mixture, model_size, n_tokens):
        return _linear(self.W, self.g, mixture, n_tokens)


class FlakyLinearLaw(AbstractLaw):
    """The same law, but about a third of its random starting points are NaN (a start that can only fail)."""

    W: jax.Array
    g: jax.Array
    name: ClassVar[str] = "test_flaky_linear"
    per_domain: ClassVar[bool] = False
    uses_tokens: ClassVar[bool] = True

    @classmethod
    def init(cls, key, summary):
        k1, k2, k3 = jax.random.split(key, 3)
        W = jax.random.uniform(k1, (summary.n_targets, summary.n_domains), minval=1.0, maxval=4.0)
        W = jnp.where(jax.random.uniform(k3) < 0.35, jnp.nan, W)
        return cls(W, 0.1 * jax.random.normal(k2, (summary.n_targets,)))

    def params(self):
        return {"W": self.W, "g": self.g}

    def __call__(self, mixture, model_size, n_tokens):
        return _linear(self.W, self.g, mixture, n_tokens)


@pytest.fixture(scope="module")
def data():
    """12 mixtures of 3 domains, each at 3 token counts (36 rows), 2 targets with Gaussian noise."""
    rng = np.random.default_rng(0)
    G = 12
    h = rng.dirichlet(np.ones(3), G)
    ids = np.repeat(np.arange(G), 3)
    H = h[ids]
    D = np.tile([1e9, 2e9, 4e9], G)
    W_true = np.array([[3.0, 2.0, 1.0], [1.0, 2.5, 3.0]])
    y = H @ W_true.T - 0.1 * np.log(D / 1e9)[:, None] + 0.05 * rng.normal(size=(H.shape[0], 2))
    return mixjax.from_arrays(H, y, 1e8, D, mixture_id=ids, targets=["t0", "t1"], name="synthetic")


def wls(data, weights):
    """Closed-form weighted least squares for every weight vector: W (R, V, K), g (R, V)."""
    X = np.concatenate([data.mixtures, np.log(data.n_tokens_b)[:, None]], axis=1)
    K = data.n_domains
    Ws, gs = [], []
    for w in np.atleast_2d(weights):
        sw = np.sqrt(np.asarray(w, float))[:, None]
        beta = np.linalg.lstsq(sw * X, sw * data.losses, rcond=None)[0]  # (K+1, V)
        Ws.append(beta[:K].T)
        gs.append(beta[K])
    return np.array(Ws), np.array(gs)


@pytest.fixture(scope="module")
def boot(data):
    return mixjax.bootstrap(LinearMixLaw, data, resamples=R, starts=S, seed=SEED, chunk_size=CHUNK)


@pytest.fixture(scope="module")
def boot_mix(data):
    return mixjax.bootstrap(LinearMixLaw, data, resamples=R, starts=S, seed=SEED, chunk_size=CHUNK, scheme="mixtures")


def test_refits_match_closed_form(boot, data):
    W_ref, g_ref = wls(data, boot.weights)
    assert boot.n_failed == 0 and boot.weights.shape == (R, data.n_rows)
    np.testing.assert_allclose(np.asarray(boot.laws.W), W_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(boot.laws.g), g_ref, rtol=0, atol=1e-6)
    W0, g0 = wls(data, np.ones(data.n_rows))
    np.testing.assert_allclose(np.asarray(boot.point.law.W), W0[0], atol=1e-7)


def test_percentile_intervals_match_reference(boot, data):
    W_ref, g_ref = wls(data, boot.weights)
    iv = boot.param_intervals(level=0.9)
    for name, ref in (("W", W_ref), ("g", g_ref)):
        lo, hi = np.quantile(ref, [0.05, 0.95], axis=0)
        np.testing.assert_allclose(iv[name]["lo"], lo, atol=1e-6)
        np.testing.assert_allclose(iv[name]["hi"], hi, atol=1e-6)
        assert (iv[name]["lo"] < iv[name]["estimate"]).all() and (iv[name]["estimate"] < iv[name]["hi"]).all()
    # a derived quantity, and predicted losses at an unseen mixture and scale (raw units)
    h_new = np.array([0.2, 0.5, 0.3])
    pred_ref = np.einsum("rvk,k->rv", W_ref, h_new) + g_ref * np.log(8.0)
    pi = boot.predict_intervals(h_new, 1e8, 8e9, level=0.8)
    np.testing.assert_allclose(pi["lo"][0], np.quantile(pred_ref, 0.1, axis=0), atol=1e-6)
    np.testing.assert_allclose(pi["hi"][0], np.quantile(pred_ref, 0.9, axis=0), atol=1e-6)
    diff = boot.interval(lambda law: law.W[0, 0] - law.W[0, 2])
    np.testing.assert_allclose(diff["hi"], np.quantile(W_ref[:, 0, 0] - W_ref[:, 0, 2], 0.95), atol=1e-6)
    assert boot.apply(lambda law: law.g).shape == (R, 2)


def test_rows_weights_are_multinomial(boot, data):
    """Resampled multiplicities: integers summing to n; their mean and variance match Multinomial(n, 1/n)."""
    n = data.n_rows
    w = boot.weights
    assert w.dtype == np.int64 and (w.sum(1) == n).all()
    assert abs(w.mean() - 1.0) < 1e-12
    assert abs(w.var() - (1 - 1 / n)) < 0.08  # Var of a multinomial count, sampling error ~0.02


def test_bca_matches_reference(boot, data):
    """BCa with jackknife acceleration, against an independent numpy/scipy implementation on the closed form."""
    W_ref, _ = wls(data, boot.weights)
    theta = W_ref[:, 1, 2]
    W0, _ = wls(data, np.ones(data.n_rows))
    est = W0[0, 1, 2]
    loo = np.ones((data.n_rows, data.n_rows)) - np.eye(data.n_rows)
    jack = wls(data, loo)[0][:, 1, 2]
    z0 = scipy.stats.norm.ppf((np.sum(theta < est) + 0.5 * np.sum(theta == est)) / theta.size)
    d = jack.mean() - jack
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    z = scipy.stats.norm.ppf([0.05, 0.95])
    q = scipy.stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(theta, q)
    iv = boot.interval(lambda law: law.W[1, 2], level=0.9, method="bca")
    np.testing.assert_allclose([iv["lo"], iv["hi"]], [lo, hi], atol=1e-6)
    np.testing.assert_allclose(np.asarray(boot.jackknife_laws.W)[:, 1, 2], jack, atol=1e-6)
    assert not np.isclose(q[0], 0.05, atol=1e-4)  # the correction is not a no-op here


def test_same_seed_is_bit_identical(boot, data, capsys):
    calls = []
    again = mixjax.bootstrap(LinearMixLaw, data, resamples=R, starts=S, seed=SEED, chunk_size=CHUNK, progress=lambda d, t: calls.append((d, t)))
    ends = [(min((i + 1) * CHUNK, R * S), R * S) for i in range(-(-R * S // CHUNK))]
    assert set(ends) <= set(calls) and calls[-1] == (R * S, R * S)  # a call at the end of every chunk...
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # ...and along the way, never going back
    assert capsys.readouterr().err == ""  # library code never prints
    for a, b in zip(jax.tree_util.tree_leaves(boot.laws), jax.tree_util.tree_leaves(again.laws)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(boot.weights, again.weights) and np.array_equal(boot.status, again.status)
    other = resample_weights(data, R, "rows", SEED + 1)
    assert not np.array_equal(other, boot.weights)


def test_mixtures_scheme_keeps_groups_together(boot_mix, data):
    w = boot_mix.weights
    ids = data.mixture_id
    G = np.unique(ids).size
    for g in range(G):
        rows = ids == g
        assert (w[:, rows] == w[:, rows][:, :1]).all()  # every checkpoint of a mixture moves together
    per_group = np.stack([w[:, ids == g][:, 0] for g in range(G)], axis=1)
    assert (per_group.sum(1) == G).all()
    W_ref, _ = wls(data, w)
    iv = boot_mix.param_intervals()
    np.testing.assert_allclose(iv["W"]["lo"], np.quantile(W_ref, 0.05, axis=0), atol=1e-6)
    assert boot_mix.units.max() + 1 == G


def test_stratified_scheme_keeps_scale_counts(data):
    w = resample_weights(data, 50, "stratified", seed=1)
    for D in (1e9, 2e9, 4e9):
        rows = data.n_tokens == D
        assert (w[:, rows].sum(1) == rows.sum()).all()
    assert w.sum(1).tolist() == [data.n_rows] * 50


def test_failed_resamples_are_excluded(data):
    """A resample fails when both of its starts are NaN; it is counted and left out of every interval."""
    Rf, seed = 80, 4  # chunks of 2 members: the same compiled shape as the 2-start full-data fit
    res = mixjax.bootstrap(FlakyLinearLaw, data, resamples=Rf, starts=2, seed=seed, warm_start=False, chunk_size=2)
    arrays, _ = prepare(FlakyLinearLaw, data)
    starts = init_starts(FlakyLinearLaw, jax.random.fold_in(jax.random.PRNGKey(seed), 1), 2 * Rf, summarize(arrays, data))
    doomed = np.isnan(np.asarray(starts.W)).any(axis=(1, 2)).reshape(Rf, 2).all(axis=1)
    assert 3 < doomed.sum() < 30
    assert res.n_failed == doomed.sum()
    np.testing.assert_array_equal(~res.ok, doomed)
    assert (res.status[~res.ok] == int(mixjax.Status.nonfinite)).all()
    W_ref, g_ref = wls(data, res.weights[res.ok])
    iv = res.param_intervals()
    np.testing.assert_allclose(iv["g"]["lo"], np.quantile(g_ref, 0.05, axis=0), atol=1e-6)
    np.testing.assert_allclose(iv["W"]["hi"], np.quantile(W_ref, 0.95, axis=0), atol=1e-6)


def test_given_full_data_fit_is_used_and_checked(boot, data, tmp_path):
    """A full-data fit made before (and saved) gives the bootstrap of one run; one of other data or settings is refused."""
    import dataclasses

    pt = mixjax.fit(LinearMixLaw, data, starts=16, seed=SEED)  # what the bootstrap fits itself (16 point starts)
    with registered(LinearMixLaw):
        mixjax.save_fit(tmp_path / "point.mixfit", pt)
        loaded = mixjax.load_fit(tmp_path / "point.mixfit")
    again = mixjax.bootstrap(LinearMixLaw, data, resamples=R, starts=S, seed=SEED, chunk_size=CHUNK, point=loaded)
    np.testing.assert_array_equal(np.asarray(again.laws.W), np.asarray(boot.laws.W))
    assert again.info["point_fit"] == "given" and boot.info["point_fit"] == "fitted, 16 starts"
    kw = dict(resamples=R, starts=S, seed=SEED, chunk_size=CHUNK)
    with pytest.raises(ValueError, match="another table"):
        mixjax.bootstrap(LinearMixLaw, data.subset(np.arange(data.n_rows) < 30), point=pt, **kw)
    with pytest.raises(ValueError, match="max_steps 2000 vs 50"):
        mixjax.bootstrap(LinearMixLaw, data, point=pt, max_steps=50, **kw)
    with pytest.raises(ValueError, match="no fingerprint"):
        mixjax.bootstrap(LinearMixLaw, data, point=dataclasses.replace(pt, record=pt.record.replace(data_sha256=None)), **kw)
    with pytest.raises(ValueError, match="is a fit of test_linear_mix"):
        mixjax.bootstrap(FlakyLinearLaw, data, point=pt, **kw)


@pytest.mark.slow  # bootstrap(point=) is checked by default; its command line with -m slow
def test_cli_slices_share_a_saved_full_data_fit(data, tmp_path):
    """mixjax bootstrap --fit FIT --slice i/n: the slices reuse one saved fit; merged, they are the one-run file."""
    from mixjax.cli import main

    csv = tmp_path / "runs.csv"
    data.to_dataframe().to_csv(csv, index=False)
    common = ["--law", "loglinear", "--max-steps", "200", "--seed", "3"]
    boot = ["bootstrap", str(csv), *common, "--resamples", "4", "--chunk-size", "2"]
    assert main(["fit", str(csv), *common, "--output", str(tmp_path / "full.mixfit")]) == 0
    for i in (0, 1):
        assert main([*boot, "--fit", str(tmp_path / "full.mixfit"), "--slice", f"{i}/2", "--save", str(tmp_path / f"p{i}.mixfit")]) == 0
    assert main(["merge", str(tmp_path / "p0.mixfit"), str(tmp_path / "p1.mixfit"), "--save", str(tmp_path / "merged.mixfit")]) == 0
    assert main([*boot, "--save", str(tmp_path / "one.mixfit")]) == 0
    one, merged = mixjax.BootstrapResult.load(tmp_path / "one.mixfit"), mixjax.BootstrapResult.load(tmp_path / "merged.mixfit")
    np.testing.assert_array_equal(merged.weights, one.weights)
    np.testing.assert_allclose(merged.loss, one.loss, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(merged.laws.t), np.asarray(one.laws.t), rtol=1e-9, atol=1e-12)
    # a fit of other settings is refused before any resample is fitted
    assert main([*boot, "--max-steps", "100", "--fit", str(tmp_path / "full.mixfit"), "--save", str(tmp_path / "bad.mixfit")]) == 2
    assert not (tmp_path / "bad.mixfit").exists()


class DeadLinearLaw(FlakyLinearLaw):
    """The same law, every starting point NaN: no start can succeed."""

    name: ClassVar[str] = "test_dead_linear"

    @classmethod
    def init(cls, key, summary):
        law = FlakyLinearLaw.init(key, summary)
        return cls(jnp.full_like(law.W, jnp.nan), law.g)


def test_throw_policy_when_nothing_is_usable(data):
    """throw=True raises FitFailedError when no member answers; throw=False returns the failure with its status."""
    with pytest.raises(mixjax.FitFailedError, match="every one of 2 starts"):
        mixjax.fit(DeadLinearLaw, data, starts=2)
    f = mixjax.fit(DeadLinearLaw, data, starts=2, throw=False)
    assert f.status == mixjax.Status.nonfinite and f.record.start_status["nonfinite"] == 2
    with pytest.raises(mixjax.FitFailedError):
        mixjax.bootstrap(DeadLinearLaw, data, resamples=4, starts=2, point_starts=2, chunk_size=2)
    res = mixjax.bootstrap(DeadLinearLaw, data, resamples=4, starts=2, point_starts=2, chunk_size=2, throw=False)
    assert res.n_failed == 4 and (res.status == int(mixjax.Status.nonfinite)).all()


def test_save_load_bit_for_bit(boot, tmp_path):
    boot.jackknife()
    path = tmp_path / "boot.npz"
    boot.save(path)
    boot.save(tmp_path / "again.npz")
    assert path.read_bytes() == (tmp_path / "again.npz").read_bytes()  # no clock time in the bytes
    with pytest.raises(ValueError, match="not registered"):
        BootstrapResult.load(path)
    back = BootstrapResult.load(path, law=LinearMixLaw)
    for tree in ("laws", "jackknife_laws"):
        for a, b in zip(jax.tree_util.tree_leaves(getattr(boot, tree)), jax.tree_util.tree_leaves(getattr(back, tree))):
            assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree_util.tree_leaves(boot.point.starts), jax.tree_util.tree_leaves(back.point.starts)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(back.weights, boot.weights) and back.point.loss == boot.point.loss
    assert back.point.config == boot.point.config and (back.seed, back.scheme) == (boot.seed, boot.scheme)
    np.testing.assert_array_equal(back.jackknife_status, boot.jackknife_status)
    # one file format: the bootstrap file is a fit file whose ensemble is the resample laws
    with registered(LinearMixLaw):
        as_fit, ens = mixjax.load_fit(path), mixjax.load_ensemble(path)
    assert as_fit.loss == boot.point.loss and as_fit.status == boot.point.status
    for a, b in zip(jax.tree_util.tree_leaves(boot.laws), jax.tree_util.tree_leaves(ens)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(mixjax.io.FitFileError, match="without a bootstrap"):
        with registered(LinearMixLaw):
            mixjax.save_fit(tmp_path / "plain.mixfit", boot.point)
            BootstrapResult.load(tmp_path / "plain.mixfit")
    for method in ("percentile", "bca"):
        x, y = boot.param_intervals(method=method), back.param_intervals(method=method)
        for k in x:
            for part in ("estimate", "lo", "hi"):
                assert np.array_equal(x[k][part], y[k][part])


def test_cli_json(boot, data, tmp_path, capsys):
    from mixjax.cli import main

    csv = tmp_path / "train.csv"
    data.to_dataframe().to_csv(csv, index=False, float_format="%.17g")
    with registered(LinearMixLaw):
        rc = main(["bootstrap", str(csv), "--law", LinearMixLaw.name, "--resamples", str(R), "--starts", str(S), "--seed", str(SEED), "--chunk-size", str(CHUNK), "--json"])
    assert LinearMixLaw.name not in LAWS
    out = capsys.readouterr()
    assert rc == 0 and "resamples" in out.err
    js = json.loads(out.out)
    assert js["n_resamples"] == R and js["n_failed"] == 0
    iv = boot.param_intervals()
    got = np.array([[v["estimate"], v["lo"], v["hi"]] for v in js["params"]["W"]])
    want = np.stack([iv["W"][p].reshape(-1) for p in ("estimate", "lo", "hi")], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_plots_show_the_intervals(boot, data):
    from mixjax.plots.intervals import plot_param_intervals, plot_predicted_vs_observed

    iv = boot.param_intervals()
    fig = plot_param_intervals(boot)
    line = fig.axes[0].lines[0]  # the estimates of W
    np.testing.assert_allclose(np.sort(line.get_xdata()), np.sort(iv["W"]["estimate"].reshape(-1)))
    seg = np.array(fig.axes[0].collections[0].get_segments())  # one [lo, hi] segment per element of W
    np.testing.assert_allclose(np.sort(seg[:, :, 0], axis=0), np.sort(np.stack([iv["W"]["lo"].reshape(-1), iv["W"]["hi"].reshape(-1)], 1), axis=0))
    fig2 = plot_predicted_vs_observed(boot, data)
    xs = np.concatenate([ln.get_xdata() for ln in fig2.axes[0].lines if len(ln.get_xdata()) == data.n_rows])
    np.testing.assert_allclose(np.sort(xs), np.sort(data.losses.T.reshape(-1)))


def test_bad_input_is_named(boot, data):
    with pytest.raises(ValueError, match="scheme"):
        mixjax.bootstrap(LinearMixLaw, data, resamples=10, scheme="blocks")
    with pytest.raises(ValueError, match="resamples"):
        mixjax.bootstrap(LinearMixLaw, data, resamples=0)
    with pytest.raises(ValueError, match="level"):
        boot.interval(lambda law: law.g, level=1.5)
    with pytest.raises(ValueError, match="mixtures has shape"):
        boot.predict_intervals(np.ones(4) / 4, 1e8, 1e9)
