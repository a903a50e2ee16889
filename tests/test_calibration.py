"""calibrate_optimum: the winner's curse of a fit's own optimum, and its bootstrap correction.

References independent of the engine: the log-linear law evaluated in numpy from each member's coefficients, and a
known true law whose value at the pick and whose best mixture are exact."""

import json
import warnings

import numpy as np
import pytest
import scipy.stats

import mixjax
from mixjax.calibration import FEW_MEMBERS, RESIDUAL_DRAWS

K = 12
TRUE_T = np.random.default_rng(123).normal(0.0, 0.03, K)
TRUE_C = float(np.log(2.0))
SIGMA = 0.01


def truth(H):
    return np.exp(TRUE_C + np.asarray(H) @ TRUE_T)


def draw(rep, n=40):
    rng = np.random.default_rng([rep, 7])
    H = rng.dirichlet(np.ones(K), n)
    y = truth(H) * np.exp(SIGMA * rng.normal(size=n))
    return mixjax.from_arrays(H, y[:, None], domains=[f"d{i}" for i in range(K)], targets=["loss"], name=f"syn{rep}"), rng


def quiet_bootstrap(data, resamples, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # resample fits that stop at the step limit
        return mixjax.bootstrap("loglinear", data, resamples=resamples, seed=seed, point_starts=4)


@pytest.fixture(scope="module")
def small():
    """A 5-domain log-linear table, 24 resamples, and a pool of 50 candidates."""
    rng = np.random.default_rng(5)
    H = rng.dirichlet(np.ones(5), 30)
    t = np.array([0.05, -0.02, 0.01, -0.04, 0.03])
    y = np.exp(0.7 + H @ t + 0.01 * rng.normal(size=30))
    data = mixjax.from_arrays(H, y[:, None], domains=list("abcde"), targets=["loss"])
    return data, quiet_bootstrap(data, 24, 3), rng.dirichlet(np.ones(5), 50)


@pytest.mark.parametrize("log_scale", [None, False])
def test_pool_pick_and_correction_match_numpy(small, log_scale):
    """Picks, correction, intervals, regret and run interval against the log-linear law evaluated in numpy; by default
    (a positive objective) values are compared as ratios, with ``log_scale=False`` as differences."""
    data, boot, pool = small
    with pytest.warns(UserWarning, match=f"use {FEW_MEMBERS} or more"):
        c = mixjax.calibrate_optimum(boot, candidates=pool, level=0.8, seed=11, log_scale=log_scale, reference=np.full(5, 0.2))
    g, inv = (np.log, np.exp) if log_scale is None else ((lambda x: x), (lambda x: x))
    assert c.log_scale is (log_scale is None)
    pl = boot.point.law.params()
    p = np.exp(float(pl["c"][0]) + pool @ np.asarray(pl["t"][0]))  # the full-data fit at every candidate
    members = boot.apply(lambda law: law.params())
    cb, tb = np.asarray(members["c"])[:, 0], np.asarray(members["t"])[:, 0]  # (R,), (R, K)
    P = np.exp(cb[:, None] + tb @ pool.T)  # (R, m)
    j, picks = int(np.argmin(p)), np.argmin(P, axis=1)
    d = g(p[picks]) - g(P[np.arange(P.shape[0]), picks])
    assert c.source == "pool" and c.index == j and np.array_equal(c.mixture, pool[j])
    assert c.members_used == 24
    assert c.predicted == pytest.approx(p[j], rel=1e-12)
    assert c.calibrated == pytest.approx(inv(g(p[j]) + np.median(d)), rel=1e-9)
    assert c.optimism == pytest.approx(c.calibrated - p[j], rel=1e-9)
    assert np.allclose(c.interval, inv(g(p[j]) + np.quantile(d, [0.1, 0.9])), rtol=1e-12)
    assert np.allclose(c.fixed_interval, np.quantile(P[:, j], [0.1, 0.9]), rtol=1e-12)
    assert c.regret == pytest.approx(np.mean(p[picks] - p[j]), rel=1e-9) and c.regret >= 0
    # the run interval: each member's d_b plus RESIDUAL_DRAWS of its out-of-bag residuals (same seeded draws)
    R_obs = g(data.losses[:, 0])[None, :] - g(np.exp(cb[:, None] + tb @ data.mixtures.T))
    rng = np.random.default_rng([11, 2])
    sums, res = [], []
    for b in range(24):
        r = rng.choice(R_obs[b, boot.weights[b] == 0], size=RESIDUAL_DRAWS, replace=True)
        sums.append(d[b] + r)
        res.append(r)
    assert np.allclose(c.run_interval, inv(g(p[j]) + np.quantile(np.concatenate(sums), [0.1, 0.9])), rtol=1e-9)
    assert c.run_noise == pytest.approx(np.sqrt(np.mean(np.concatenate(res) ** 2)), rel=1e-9)
    assert c.residual_rows == int((boot.weights == 0).any(axis=0).sum())
    out = json.loads(json.dumps(c.as_dict()))
    assert out["calibrated"] == pytest.approx(c.calibrated) and out["index"] == j and len(out["mixture"]) == 5
    # beating the uniform reference: each member's pick judged by the full-data fit, with two runs' noise
    p_ref = float(np.exp(float(pl["c"][0]) + np.full(5, 0.2) @ np.asarray(pl["t"][0])))
    assert c.reference_predicted == pytest.approx(p_ref, rel=1e-12)
    gap = g(p_ref) - g(p[picks])
    assert c.p_beats_reference == pytest.approx(np.mean(scipy.stats.norm.cdf(gap / (np.sqrt(2) * c.run_noise))), rel=1e-9)
    assert c.nearest_measured_distance == pytest.approx(0.5 * np.abs(data.mixtures - pool[j]).sum(axis=1).min(), rel=1e-12)


def test_loaded_bootstrap_needs_the_rows(small, tmp_path):
    data, boot, pool = small
    boot.save(tmp_path / "boot.mixfit")
    loaded = mixjax.BootstrapResult.load(tmp_path / "boot.mixfit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match="pass data="):
            mixjax.calibrate_optimum(loaded, candidates=pool)
        a = mixjax.calibrate_optimum(loaded, candidates=pool, data=data)
        b = mixjax.calibrate_optimum(boot, candidates=pool)
        no_noise = mixjax.calibrate_optimum(loaded, candidates=pool, run_noise=False)
    assert a.run_interval == pytest.approx(b.run_interval, rel=1e-12) and a.calibrated == pytest.approx(b.calibrated, rel=1e-12)
    assert no_noise.run_interval is None and no_noise.run_noise is None


def test_bad_arguments(small):
    _, boot, pool = small
    with pytest.raises(TypeError, match="BootstrapResult"):
        mixjax.calibrate_optimum(boot.point, candidates=pool)
    with pytest.raises(ValueError, match="candidates must be an"):
        mixjax.calibrate_optimum(boot, candidates=pool[:, :3])
    with pytest.raises(ValueError, match="level"):
        mixjax.calibrate_optimum(boot, candidates=pool, level=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ens = mixjax.optimize_mixture_ensemble(boot, ceilings=0.5, starts=2)
        with pytest.raises(ValueError, match="another scale, objective or bounds"):
            mixjax.calibrate_optimum(boot, ensemble=ens, ceilings=0.6, starts=2)


def test_corrects_the_curse_against_a_known_truth():
    """Twelve synthetic sweeps (K = 12, 40 runs): the fit's prediction at its own pick, from a pool and from the capped
    simplex, is optimistic against the exact truth there, and the calibrated estimate is closer. These twelve (the
    first of benchmarks/calibrated_optimum.py) happen to be corrected almost exactly; over all 40 replications of the
    benchmark the correction overshoots (pool +0.021 -> -0.013, simplex +0.025 -> -0.009), so the bounds here allow
    that much."""
    best_simplex = float(truth(np.where(np.isin(np.arange(K), np.argsort(TRUE_T)[:4]), 0.25, 0.0)[None])[0])
    err = {"pool": ([], []), "optimum": ([], [])}
    covered, regrets = 0, []
    for rep in range(12):
        data, rng = draw(rep)
        boot = quiet_bootstrap(data, 60, rep)
        pool = rng.dirichlet(np.full(K, 0.5), 300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            picks = {"pool": mixjax.calibrate_optimum(boot, candidates=pool, run_noise=False),
                     "optimum": mixjax.calibrate_optimum(boot, ceilings=0.25, starts=4, run_noise=False, check_fixed=False)}
        for mode, c in picks.items():
            tv = float(truth(c.mixture[None])[0])
            err[mode][0].append(tv - c.predicted)
            err[mode][1].append(tv - c.calibrated)
            covered += c.interval[0] <= tv <= c.interval[1]
        regrets.append((float(truth(picks["optimum"].mixture[None])[0]) - best_simplex, picks["optimum"].regret))
    for mode, (naive, cal) in err.items():
        naive, cal = np.mean(naive), np.mean(cal)
        assert naive > 0.015, (mode, naive)  # the curse: the truth is worse than the fit says at its own pick
        assert abs(cal) < 0.7 * naive, (mode, naive, cal)  # measured: pool +0.024 -> -0.001, simplex +0.031 -> +0.005
    assert covered >= 17  # of 24 nominal-90% intervals (19 measured)
    true_regret, est_regret = np.mean(regrets, axis=0)
    assert 0.5 * true_regret < est_regret < 2 * true_regret  # 0.0123 and 0.0123 measured


def test_optimize_command_reports_the_calibrated_optimum(tmp_path):
    """`mixjax optimize --bootstrap R --json` carries the calibration of its own optimum, as the Python API gives it."""
    import contextlib
    import io

    import pandas as pd

    from mixjax.cli import main

    data, _ = draw(0)
    frame = pd.DataFrame({f"weight_d{i}": data.mixtures[:, i] for i in range(K)})
    frame["loss_loss"] = data.losses[:, 0]
    frame.to_csv(tmp_path / "sweep.csv", index=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main(["optimize", str(tmp_path / "sweep.csv"), "--law", "loglinear", "--bootstrap", "20", "--starts", "2",
                   "--mixture-starts", "4", "--ceiling", "0.25", "--level", "0.8", "--json"])
    assert rc == 0, err.getvalue()
    cal = json.loads(out.getvalue())["calibrated"]
    assert cal["predicted"] == pytest.approx(json.loads(out.getvalue())["objective_value"], rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        boot = mixjax.bootstrap("loglinear", mixjax.load_csv(tmp_path / "sweep.csv"), resamples=20, starts=2, seed=0)
        ref = mixjax.calibrate_optimum(boot, ceilings=0.25, starts=4, level=0.8)
    assert cal["calibrated"] == pytest.approx(ref.calibrated, rel=1e-9) and cal["level"] == 0.8
    assert cal["run_interval"] == pytest.approx(list(ref.run_interval), rel=1e-9)
    assert cal["source"] == "optimum" and cal["members_used"] == 20 and cal["log_scale"] is True

    # a pool of candidates (with a loss column, ignored): the pick is the full-data fit's best candidate
    pool = np.random.default_rng(9).dirichlet(np.ones(K), 30)
    frame = pd.DataFrame({f"weight_d{i}": pool[:, i] for i in range(K)})
    frame["loss_loss"] = 1.0
    frame.to_csv(tmp_path / "pool.csv", index=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rc = main(["optimize", str(tmp_path / "sweep.csv"), "--law", "loglinear", "--bootstrap", "20", "--starts", "2",
                   "--mixture-starts", "4", "--candidates", str(tmp_path / "pool.csv"), "--level", "0.8", "--json"])
    assert rc == 0, err.getvalue()
    got = json.loads(out.getvalue())
    pl = boot.point.law.params()
    j = int(np.argmin(pool @ np.asarray(pl["t"][0])))
    assert got["candidate_index"] == j and np.allclose([got["mixture"][f"d{i}"] for i in range(K)], pool[j], rtol=0, atol=1e-15)
    assert got["predicted"] == pytest.approx(float(np.exp(float(pl["c"][0]) + pool[j] @ np.asarray(pl["t"][0]))), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = mixjax.calibrate_optimum(boot, candidates=pool, reference=np.full(K, 1 / K), level=0.8)
    assert got["predicted_corrected"] == pytest.approx(want.calibrated, rel=1e-9)
    assert got["interval"] == pytest.approx(list(want.run_interval), rel=1e-9)
    assert got["p_beats_reference"] == pytest.approx(want.p_beats_reference, rel=1e-9) and got["reference"]["chosen"] == "uniform"
    assert got["expected_regret"] == pytest.approx(want.regret, rel=1e-9)
    assert got["nearest_measured_distance"] == pytest.approx(want.nearest_measured_distance, rel=1e-12)
