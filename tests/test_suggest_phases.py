"""mixjax.suggest on a table with training phases: a synthetic two-phase table (4 domains x 2 phases, 40 runs from a
known log-linear law with noise) and a tiny bootstrap. Suggestions are checked against references computed here in
numpy: each phase on its bounded simplex, the share-weighted total-variation distance between picks and to the
measured runs, and the first pick of a pool as the maximizer of the criterion v(h) p(h) over the members' predictions."""

import contextlib
import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import mixjax
from mixjax.cli import main
from mixjax.design import sample_candidates, suggest

SHARES = np.array([0.7, 0.3])
BASE = ("a", "b", "c", "d")
P, K = 2, 4
FLOOR, CEIL = 0.02, 0.9
NOISE = 1e-4
FIT = dict(resamples=4, starts=1, point_starts=2, optimizer="adam", max_steps=40, seed=0)


def phase_frame(n=40, seed=0) -> pd.DataFrame:
    """n runs of the phase-table layout (``phase_<p>_<domain>`` columns, each phase summing to 1) and a loss from
    ``exp(1 + sum_pk t_pk s_p w_pk)`` with 0.5 % noise."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(K), size=(n, P))
    t = np.array([[-0.3, 0.1, 0.2, 0.05], [0.1, -0.2, 0.15, 0.0]])
    loss = np.exp(1.0 + np.einsum("p,npk,pk->n", SHARES, W, t)) * (1 + 0.005 * rng.standard_normal(n))
    df = pd.DataFrame({f"phase_{p}_{d}": W[:, p, k] for p in range(P) for k, d in enumerate(BASE)})
    df["loss"] = loss
    df["model_size"], df["n_tokens"] = 1e8, 2e9
    return df


def flatten(W, domains) -> np.ndarray:
    """Flattened mixtures over the table's ``domain@phase`` columns from per-phase weights (m, P, K), by name."""
    W = np.asarray(W)
    cols = []
    for name in domains:
        d, ph = name.rsplit("@", 1)
        p = int(ph.split("_")[1])
        cols.append(SHARES[p] * W[:, p, BASE.index(d)])
    return np.stack(cols, axis=1)


def per_phase(H, domains) -> np.ndarray:
    """Per-phase weights (m, P, K) from flattened mixtures over ``domain@phase`` columns, by name."""
    H = np.asarray(H)
    W = np.empty((H.shape[0], P, K))
    for j, name in enumerate(domains):
        d, ph = name.rsplit("@", 1)
        p = int(ph.split("_")[1])
        W[:, p, BASE.index(d)] = H[:, j] / SHARES[p]
    return W


def phase_tv(A, B) -> np.ndarray:
    """(a, b) distances sum_p s_p * 0.5 * sum_k |w_pk - w'_pk| between per-phase weights (a, P, K) and (b, P, K)."""
    A, B = np.asarray(A)[:, None], np.asarray(B)[None, :]
    return np.einsum("p,abp->ab", SHARES, 0.5 * np.abs(A - B).sum(-1))


@pytest.fixture(scope="module")
def data():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixjax.load_phase_table(phase_frame(), targets=["loss"], phase_shares=SHARES, name="phased")


@pytest.fixture(scope="module")
def boot(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixjax.bootstrap("loglinear", data, chunk_size=2, **FIT)


@pytest.fixture(scope="module")
def pool():
    return np.random.default_rng(5).dirichlet(np.ones(K), size=(120, P))


def member_predictions(boot, H) -> np.ndarray:
    """(R, m) the usable members' predicted loss at flattened mixtures H: exp(c_r + t_r . h), the log-linear law."""
    c = np.asarray(boot.laws.c)[:, 0][boot.ok]
    t = np.asarray(boot.laws.t)[:, 0][boot.ok]
    return np.exp(c[:, None] + t @ H.T)


# --------------------------------------------------------------------------- the layout
def test_the_table_is_phased(data):
    assert data.phases == ("phase_0", "phase_1") and data.base_domains == BASE
    np.testing.assert_allclose(data.phase_weights().sum(-1), 1.0, atol=1e-12)


def test_sampled_candidates_lie_on_each_phase_bounded_simplex():
    lo = np.array([[0.05, 0.0, 0.1, 0.0], [0.0, 0.2, 0.0, 0.0]])
    hi = np.array([[0.6, 1.0, 1.0, 0.3], [1.0, 1.0, 0.5, 0.5]])
    centers = np.array([[[0.6, 0.1, 0.2, 0.1], [0.1, 0.2, 0.5, 0.2]]])
    W = sample_candidates(200, lo, hi, centers=centers, seed=3)
    assert W.shape == (201, P, K)
    np.testing.assert_allclose(W.sum(-1), 1.0, atol=1e-9)
    assert (W >= lo - 1e-9).all() and (W <= hi + 1e-9).all()
    np.testing.assert_allclose(W[0], centers[0], atol=1e-12)  # the centers come first, as they are (inside the bounds)
    one = sample_candidates(50, lo[0], hi[0], seed=3)  # one phase: (m, K) as before
    assert one.shape == (50, K)


# --------------------------------------------------------------------------- sampled candidates
@pytest.fixture(scope="module")
def sampled(data, boot):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return suggest(data, n=4, ensemble=boot, floors=FLOOR, ceilings=CEIL, n_candidates=256, mixture_starts=2,
                       mixture_steps=60, min_distance=0.03, noise=NOISE, seed=0)


def test_sampled_suggestions_are_valid_per_phase(data, sampled):
    res = sampled
    assert res.n == 4 and res.candidates == "sampled" and res.phases == data.phases and res.base_domains == BASE
    W = per_phase(res.mixtures, data.domains)
    np.testing.assert_allclose(W.sum(-1), 1.0, atol=1e-9)  # every phase on its simplex
    assert (W >= FLOOR - 1e-9).all() and (W <= CEIL + 1e-9).all()  # bounds on each phase's weights
    np.testing.assert_allclose(res.phase_mixtures, W, atol=1e-12)
    np.testing.assert_allclose(flatten(res.phase_mixtures, data.domains), res.mixtures, atol=1e-12)
    d = phase_tv(W, W)
    assert (d[~np.eye(res.n, dtype=bool)] >= 0.03 - 1e-12).all()
    assert (phase_tv(W, data.phase_weights()) >= 0.03 - 1e-12).all()


def test_as_dict_reports_each_mixture_per_phase(data, sampled):
    out = json.loads(json.dumps(sampled.as_dict()))
    assert out["phases"] == {"phase_0": pytest.approx(0.7), "phase_1": pytest.approx(0.3)}
    assert len(out["phase_mixtures"]) == 4 and len(out["mixtures"]) == 4
    for pm, flat in zip(out["phase_mixtures"], out["mixtures"]):
        assert set(pm) == {"phase_0", "phase_1"} and all(set(pm[p]) == set(BASE) for p in pm)
        for p, s in zip(("phase_0", "phase_1"), SHARES):
            assert sum(pm[p].values()) == pytest.approx(1.0, abs=1e-9)
            for d in BASE:
                assert flat[f"{d}@{p}"] == pytest.approx(s * pm[p][d], abs=1e-12)
    assert "phase_0" in repr(sampled)


# --------------------------------------------------------------------------- a pool
def test_first_pick_of_a_pool_maximizes_the_criterion(data, boot, pool):
    min_distance = 0.05
    res = suggest(data, n=3, ensemble=boot, candidates=pool, noise=NOISE, min_distance=min_distance)
    H = flatten(pool, data.domains)
    J = member_predictions(boot, H)
    tau, R = np.sqrt(NOISE), J.shape[0]
    U = J.min(axis=1).max() + 4 * tau  # the cap of the criterion (gap_cap = 4)
    Jc = np.minimum(J, U)
    v = ((Jc - Jc.mean(axis=0)) ** 2).sum(axis=0) / (R - 1)
    p = np.exp(-(Jc - Jc.min(axis=1, keepdims=True)) / tau).mean(axis=0)
    far = phase_tv(pool, data.phase_weights()).min(axis=1) >= min_distance
    a = np.where(far, v * p, -np.inf)
    j = int(np.argmax(a))
    np.testing.assert_allclose(res.phase_mixtures[0], pool[j], atol=1e-12)
    np.testing.assert_allclose(res.mixtures[0], H[j], atol=1e-12)
    np.testing.assert_allclose(res.criterion[0], a[j], rtol=1e-6)
    np.testing.assert_allclose(res.disagreement[0], J[:, j].std(ddof=1), rtol=1e-6)
    # every pick is a pool row, at least min_distance from the others and from the measured runs
    rows = [int(np.argmin(np.abs(pool - w).sum(axis=(1, 2)))) for w in res.phase_mixtures]
    np.testing.assert_allclose(res.phase_mixtures, pool[rows], atol=1e-12)
    d = phase_tv(pool[rows], pool[rows])
    assert (d[~np.eye(res.n, dtype=bool)] >= min_distance).all()
    assert far[rows].all()


def test_a_flattened_pool_gives_the_same_picks(data, boot, pool):
    a = suggest(data, n=3, ensemble=boot, candidates=pool, noise=NOISE)
    b = suggest(data, n=3, ensemble=boot, candidates=flatten(pool, data.domains), noise=NOISE)
    np.testing.assert_allclose(a.mixtures, b.mixtures, atol=1e-12)


def test_pool_rows_outside_a_phase_bound_are_left_out(data, boot, pool):
    with pytest.warns(UserWarning, match="outside the floors and ceilings"):
        res = suggest(data, n=2, ensemble=boot, candidates=pool, noise=NOISE, floors={"a@phase_1": 0.2})
    assert (res.phase_mixtures[:, 1, 0] >= 0.2).all()
    assert res.n_candidates == int((pool[:, 1, 0] >= 0.2).sum())


def test_pending_runs_are_kept_at_a_distance(data, boot, pool):
    first = suggest(data, n=1, ensemble=boot, candidates=pool, noise=NOISE, min_distance=0.05)
    nxt = suggest(data, n=2, ensemble=boot, candidates=pool, noise=NOISE, min_distance=0.05, pending=first.phase_mixtures)
    assert (phase_tv(nxt.phase_mixtures, first.phase_mixtures) >= 0.05).all()


def test_a_pool_phase_not_summing_to_one_is_a_clear_error(data, boot, pool):
    bad = pool.copy()
    bad[3, 1] *= 0.9
    with pytest.raises(ValueError, match=r"candidate row 3: the weights of phase 'phase_1' sum to 0\.9"):
        suggest(data, "loglinear", n=2, candidates=bad, **FIT)  # checked before any fitting
    flat = flatten(bad, data.domains)
    with pytest.raises(ValueError, match=r"candidate row 3: the weights of phase 'phase_1' sum to 0\.9.*share being 0\.3"):
        suggest(data, n=2, ensemble=boot, candidates=flat)
    neg = pool.copy()
    neg[7, 0, 2] = -0.1
    with pytest.raises(ValueError, match=r"candidate row 7: weight of 'c' in phase 'phase_0'"):
        suggest(data, n=2, ensemble=boot, candidates=neg)
    with pytest.raises(ValueError, match=r"\(m, 2, 4\) weights per phase"):
        suggest(data, n=2, ensemble=boot, candidates=pool[:, 0])
    with pytest.raises(ValueError, match=r"pending run row 0: the weights of phase 'phase_1'"):
        suggest(data, n=2, ensemble=boot, candidates=pool, pending=bad[3])


# --------------------------------------------------------------------------- repetition caps couple the phases
UNIQUE = {"a": 1e9, "b": 5e9, "c": 5e9, "d": 5e9}  # tokens; the next runs train on 2e9 tokens


def epochs(W) -> np.ndarray:
    """(m, K) epochs of each domain at 2e9 tokens: 2e9 * sum_p s_p w_pk / U_k."""
    return 2e9 * np.einsum("p,mpk->mk", SHARES, W) / np.array([UNIQUE[d] for d in BASE])


def test_a_pool_keeps_the_repetition_caps(data, boot, pool):
    capped = mixjax.with_unique_tokens(data, UNIQUE)
    over = epochs(pool).max(axis=1) > 1 + 1e-6
    assert over.any() and not over.all()
    with pytest.warns(UserWarning, match="repetition caps"):
        res = suggest(capped, n=3, ensemble=boot, candidates=pool, raw_n_tokens=2e9, max_epochs=1.0, noise=NOISE)
    assert res.n_candidates == int((~over).sum())
    assert (epochs(res.phase_mixtures) <= 1 + 1e-6).all()


@pytest.mark.slow  # compiles the capped per-phase search (augmented Lagrangian) for the members' optima
def test_sampled_candidates_keep_the_repetition_caps(data, boot):
    capped = mixjax.with_unique_tokens(data, UNIQUE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = suggest(capped, n=4, ensemble=boot, raw_n_tokens=2e9, max_epochs=1.0, n_candidates=256, mixture_starts=2,
                      mixture_steps=60, noise=NOISE)
    np.testing.assert_allclose(res.phase_mixtures.sum(-1), 1.0, atol=1e-9)
    assert (epochs(res.phase_mixtures) <= 1 + 1e-6).all()


# --------------------------------------------------------------------------- the command line
def test_cli_prints_per_phase_mixtures(data, pool, tmp_path):
    table = tmp_path / "phased.csv"
    phase_frame().to_csv(table, index=False)
    cands = tmp_path / "pool.csv"
    pd.DataFrame({f"phase_{p}_{d}": pool[:, p, k] for p in range(P) for k, d in enumerate(BASE)}).to_csv(cands, index=False)
    args = ["suggest", str(table), "--law", "loglinear", "--n", "2", "--resamples", "2", "--starts", "1", "--point-starts", "2",
            "--max-steps", "40", "--optimizer", "adam", "--phase-shares", "0.7,0.3", "--targets", "loss", "--candidates", str(cands), "--json"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    assert rc == 0, err.getvalue()
    res = json.loads(out.getvalue())
    assert res["phases"] == {"phase_0": pytest.approx(0.7), "phase_1": pytest.approx(0.3)}
    assert len(res["phase_mixtures"]) == 2
    for pm in res["phase_mixtures"]:
        w = np.array([[pm[p][d] for d in BASE] for p in ("phase_0", "phase_1")])
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
        assert np.abs(pool - w).sum(axis=(1, 2)).min() < 1e-9  # a pool row
    bad = pool.copy()
    bad[3, 1] *= 0.9
    pd.DataFrame({f"phase_{p}_{d}": bad[:, p, k] for p in range(P) for k, d in enumerate(BASE)}).to_csv(cands, index=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    assert rc == 2 and "row 3" in err.getvalue() and "phase_1" in err.getvalue()
