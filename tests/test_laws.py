"""The law library: every law against a hand-written numpy formula, and recovery from data it synthesized.

Recovery fits start from the true parameters perturbed by about 2-4 % (start 0) plus one random start, so each law
compiles once and converges in a few hundred L-BFGS steps; predictions must match to 1e-4 relative, and the
identifiable parameters to a few 1e-3 (laws with non-identifiable directions are checked on predictions or on
identifiable combinations only, as noted per law).
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import mixjax
from mixjax.laws import DataSummary, n_params
from mixjax import fit_chinchilla
from mixjax.laws.chinchilla import ChinchillaLaw, chinchilla_grid

K, V = 3, 3


def _summary(K=K, V=V):
    return DataSummary(n_domains=K, n_targets=V, loss_min=np.full(V, 2.0), loss_max=np.full(V, 3.5), loss_mean=np.full(V, 2.7),
                       model_size_ref=300.0, n_tokens_ref=10.0, model_size_range=(100.0, 1000.0), n_tokens_range=(2.0, 50.0))


def _alloc_ref(h, b, c, H, N):
    """x*(h) by brentq on lambda (independent of mixjax's Newton solver)."""
    C = N + (len(h) - 1) * H
    x = lambda lam: np.where(h > 0, np.maximum(H, (np.maximum(h, 1e-300) * b * c / lam) ** (1 / (1 + b))), H)  # noqa: E731
    lam = np.exp(brentq(lambda t: x(np.exp(t)).sum() - C, -200, 200, xtol=1e-14))
    return x(lam)


def _pow0(h, g):
    return np.where(h > 0, np.maximum(h, 1e-300) ** g, 0.0)


# numpy reference formulas, from the readable params(); h (K,), N (M params), D (B tokens)
REF = {
    "capacity_only": lambda p, h, N, D: p["c"] * _alloc_ref(h, p["b"], p["c"], p["H"], N) ** -p["b"] + p["E"],
    "capacity_noise_run_tokens": lambda p, h, N, D: p["c"] * _alloc_ref(h, p["b"], p["c"], p["H"], N) ** -p["b"] + p["A"] * D ** -p["a"] + p["E"],
    "exponential": lambda p, h, N, D: p["c"] + p["k"] * np.exp(p["t"] @ h),
    "bimix": lambda p, h, N, D: p["A"] / np.maximum(h, 1e-4) ** p["alpha"] * (p["B"] / D ** p["beta"] + p["C"]),
    "shukor_mixture": lambda p, h, N, D: p["E"] + 1 / (p["C"] * _pow0(h, p["gamma"])).sum(1),
    "shukor_additive": lambda p, h, N, D: p["E"] + 1 / (p["C"] * _pow0(h, p["gamma"])).sum(1) + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"],
    "shukor_joint": lambda p, h, N, D: p["E"] + 1 / (p["C"] * _pow0(h, p["gamma"])).sum(1) + (p["A"] @ h) / N ** p["alpha"] + (p["B"] @ h) / D ** p["beta"],
    "chinchilla": lambda p, h, N, D: p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"],
    "loglinear": lambda p, h, N, D: np.exp(p["c"] + p["t"] @ h),
    "autoscale": lambda p, h, N, D: p["L0"] + ((p["N0"] + D * h) ** -p["gamma"]).sum(1),
    "power_linear": lambda p, h, N, D: p["b"] + p["W"] @ _pow0(h, p["a"]),
}

PARAM_COUNT = {  # formula in K (domains) and V (targets)
    "capacity_only": lambda K, V: 3 * K + 1, "capacity_noise_run_tokens": lambda K, V: 5 * K + 1,
    "exponential": lambda K, V: V * (K + 2), "bimix": lambda K, V: 5 * K, "shukor_mixture": lambda K, V: V * (2 * K + 1),
    "shukor_additive": lambda K, V: V * (2 * K + 5), "shukor_joint": lambda K, V: V * (4 * K + 3),
    "chinchilla": lambda K, V: 5 * K, "loglinear": lambda K, V: V * (K + 1), "autoscale": lambda K, V: V * (2 * K + 1),
    "power_linear": lambda K, V: V * (K + 1) + 1,
}
LAW_NAMES = sorted(REF)


def _rng(name: str) -> np.random.Generator:
    """Each test's own random state, fixed by its name (selecting or reordering tests changes no test's data)."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def _inputs(rng, n, K=K, zeros=True):
    h = rng.dirichlet(np.ones(K), size=n)
    if zeros:
        h[: n // 4, 0] = 0.0
        h = h / h.sum(1, keepdims=True)
    return h, rng.uniform(100, 1000, n), rng.uniform(2, 50, n)


def test_every_law_registered():
    assert set(LAW_NAMES) <= set(mixjax.LAWS)


@pytest.mark.parametrize("name", LAW_NAMES)
def test_prediction_matches_numpy_formula(name):
    cls = mixjax.get_law(name)
    law = cls.init(jax.random.PRNGKey(1), _summary())
    assert n_params(law) == PARAM_COUNT[name](K, V)
    p = {k: np.asarray(v) for k, v in law.params().items()}
    h, N, D = _inputs(_rng(f"formula-{name}"), 6)
    got = np.asarray(law.predict(h, N, D))
    want = np.stack([REF[name](p, h[i], N[i], D[i]) for i in range(6)])
    assert got.shape == (6, V) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # init is traceable under vmap and draws different starts
    batch = jax.vmap(lambda k: cls.init(k, _summary()))(jax.random.split(jax.random.PRNGKey(2), 3))
    leaf = jax.tree_util.tree_leaves(batch)[0]
    assert leaf.shape[0] == 3 and not np.allclose(leaf[0], leaf[1])


# true parameters for recovery (K = 3 domains, V = 3 targets)
TRUE = {
    "capacity_only": lambda: mixjax.CapacityOnlyLaw.from_params([0.3, 0.5, 0.4], [4.0, 6.0, 3.0], [1.5, 2.0, 1.0], 20.0),
    "capacity_noise_run_tokens": lambda: mixjax.CapacityRunTokensLaw.from_params([0.3, 0.5, 0.4], [4.0, 6.0, 3.0], [0.8, 0.5, 1.2], [0.4, 0.3, 0.6], [1.5, 2.0, 1.0], 20.0),
    "exponential": lambda: mixjax.ExponentialLaw.from_params([1.5, 2.0, 1.8], [1.0, 0.7, 1.2], [[-1.0, 0.3, 0.2], [0.4, -1.5, 0.1], [0.2, 0.5, -0.8]]),
    "bimix": lambda: mixjax.BiMixLaw.from_params([2.0, 2.5, 1.8], [0.05, 0.1, 0.08], [0.5, 1.0, 0.8], [0.4, 0.3, 0.5], [1.0, 1.0, 1.0]),
    "shukor_mixture": lambda: mixjax.ShukorMixtureLaw.from_params([1.8, 2.0, 1.5], [[3.0, 0.5, 0.4], [0.6, 2.0, 0.3], [0.2, 0.5, 4.0]], [[0.4, 0.3, 0.5], [0.2, 0.6, 0.3], [0.5, 0.3, 0.4]]),
    "shukor_additive": lambda: mixjax.ShukorAdditiveLaw.from_params([1.8, 2.0, 1.5], [[3.0, 0.5, 0.4], [0.6, 2.0, 0.3], [0.2, 0.5, 4.0]], [[0.4, 0.3, 0.5], [0.2, 0.6, 0.3], [0.5, 0.3, 0.4]], [3.0, 2.0, 4.0], [0.4, 0.3, 0.5], [0.8, 0.5, 1.0], [0.3, 0.5, 0.4]),
    "shukor_joint": lambda: mixjax.ShukorJointLaw.from_params([1.8, 2.0, 1.5], [[3.0, 0.5, 0.4], [0.6, 2.0, 0.3], [0.2, 0.5, 4.0]], [[0.4, 0.3, 0.5], [0.2, 0.6, 0.3], [0.5, 0.3, 0.4]], [[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 4.0, 1.0]], [0.4, 0.3, 0.5], [[0.8, 0.2, 0.5], [0.5, 1.0, 0.2], [0.3, 0.6, 1.2]], [0.3, 0.5, 0.4]),
    "chinchilla": lambda: ChinchillaLaw.from_params([1.8, 2.0, 1.5], [4.0, 3.0, 5.0], [0.35, 0.3, 0.4], [1.0, 1.5, 0.8], [0.4, 0.35, 0.3]),
    "loglinear": lambda: mixjax.LogLinearLaw.from_params([1.0, 0.8, 0.9], [[-0.5, 0.2, 0.1], [0.3, -0.6, 0.2], [0.1, 0.3, -0.4]]),
    "autoscale": lambda: mixjax.AutoScaleLaw.from_params([1.5, 1.8, 1.2], [[2.0, 5.0, 3.0], [4.0, 1.0, 2.0], [3.0, 2.0, 0.5]], [[0.5, 0.3, 0.4], [0.3, 0.6, 0.2], [0.2, 0.4, 0.7]]),
    "power_linear": lambda: mixjax.PowerLinearLaw.from_params([3.0, 2.5, 3.2], [[-1.0, 0.2, 0.1], [0.3, -0.8, 0.2], [0.1, 0.4, -1.2]], 0.5),
}
# parameters that data determine (others only through combinations; predictions are checked for every law)
IDENTIFIABLE = {
    "capacity_only": ["b", "c", "E", "H"], "capacity_noise_run_tokens": ["b", "c", "A", "a", "E", "H"], "exponential": ["c"],
    "bimix": ["alpha", "beta"], "shukor_mixture": ["E", "C", "gamma"], "shukor_additive": ["E", "C", "gamma", "A", "alpha", "B", "beta"],
    "shukor_joint": ["gamma", "alpha", "beta"], "chinchilla": ["E", "A", "alpha", "B", "beta"], "loglinear": [],
    "autoscale": ["L0", "N0", "gamma"], "power_linear": ["b", "W", "a"],
}


# the Shukor scale laws are ill-conditioned (E, A N^-alpha and B D^-beta trade off across 3 N and 3 D levels):
# within 1500 steps they reach the truth's predictions to ~4e-4 only, and their parameters are not checked
PRED_RTOL = {"shukor_additive": 2e-3, "shukor_joint": 2e-3}
IDENTIFIABLE["shukor_additive"] = IDENTIFIABLE["shukor_joint"] = []


def _perturb(law, key, scale=0.05):
    params, static = jax.tree_util.tree_flatten(law)
    keys = jax.random.split(key, len(params))
    return jax.tree_util.tree_unflatten(static, [p + scale * jax.random.normal(k, jnp.shape(p)) * (1 + jnp.abs(p)) for p, k in zip(params, keys)])


# The capacity variants share the capacity-noise machinery recovered by default, and AutoScale's form is checked
# against its formula by default: their own recoveries (the longest) run with the slow tests
SLOW_RECOVERY = ("capacity_noise_run_tokens", "capacity_only", "autoscale")
RECOVERY = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_RECOVERY else n for n in LAW_NAMES]


@pytest.mark.parametrize("name", RECOVERY)
# the joint law (flat directions of A_vj, B_vj) and autoscale (-m slow) reach the prediction tolerance but not ftol
# within their 1500 steps
@pytest.mark.filterwarnings("ignore:the best of 2 starts of (shukor_joint|autoscale) on 'synthetic-(shukor_joint|autoscale)' stopped:mixjax.MaxStepsWarning")
def test_recovery_from_synthetic_data(name):
    truth = TRUE[name]()
    n = 60
    rng = _rng(f"recovery-{name}")
    h, N, D = _inputs(rng, n, zeros=False)
    N = rng.choice([100.0, 300.0, 1000.0], n)
    D = rng.choice([2.0, 8.0, 30.0], n)
    y = np.asarray(truth.predict(h, N, D))
    data = mixjax.from_arrays(h, y, N * 1e6, D * 1e9, name=f"synthetic-{name}")
    start = _perturb(truth, jax.random.PRNGKey(3), 0.02)
    f = mixjax.fit(start, data, starts=2, seed=0, max_steps=1500, ftol=1e-14)
    h2, N2, D2 = _inputs(rng, 20, zeros=False)
    N2, D2 = rng.choice([100.0, 300.0, 1000.0], 20), rng.choice([2.0, 8.0, 30.0], 20)  # new mixtures, fitted scales
    np.testing.assert_allclose(np.asarray(f.law.predict(h2, N2, D2)), np.asarray(truth.predict(h2, N2, D2)), rtol=PRED_RTOL.get(name, 1e-4))
    want, got = truth.params(), f.law.params()
    for k in IDENTIFIABLE[name]:
        # autoscale's offsets N0 enter as (N0 + D h)^-gamma with D h >> N0 on most rows: determined to ~1 % only
        rtol = 2e-2 if name == "autoscale" else 5e-3
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=rtol, atol=1e-4, err_msg=f"{name}.{k}")
    if name == "exponential":  # identifiable combinations: t_vj - t_v1 and log k_v + t_v1
        t, tt = np.asarray(got["t"]), np.asarray(want["t"])
        np.testing.assert_allclose(t - t[:, :1], tt - tt[:, :1], atol=1e-3)
        np.testing.assert_allclose(np.log(got["k"]) + t[:, 0], np.log(want["k"]) + tt[:, 0], atol=1e-3)
    if name == "loglinear":  # identifiable: c_v + t_vj (log loss at each vertex)
        np.testing.assert_allclose(np.asarray(got["c"])[:, None] + got["t"], np.asarray(want["c"])[:, None] + want["t"], atol=1e-4)
    if name == "bimix":  # identifiable: A B and A C
        for combo in (lambda p: p["A"] * p["B"], lambda p: p["A"] * p["C"]):
            np.testing.assert_allclose(np.asarray(combo(got)), np.asarray(combo(want)), rtol=5e-3)


def test_chinchilla_matches_besiroglu_estimates():
    """Besiroglu et al. 2024 (Table 1): E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658 for raw counts,
    fitted on their 245 reconstructed runs minus the 5 with the highest loss, Huber(1e-3) on log loss, L-BFGS
    from a grid. A small grid suffices here; the optimum found is at least as good as theirs (objective below the
    objective at their rounded estimates), E, alpha, beta agree to < 0.5 % and A, B (very sensitive to the
    rounding of alpha, beta at N ~ 1e9) to < 4 %."""
    d = mixjax.load_dataset("chinchilla")
    y = d.losses[:, 0]
    d = d.subset(y < np.sort(y)[-5])
    assert d.n_rows == 240
    grid = chinchilla_grid(alphas=(0.5,), betas=(0.5, 1.0), log_E=(0.5,), log_A_raw=(5.0, 10.0), log_B_raw=(5.0,))
    f = fit_chinchilla(d, grid=grid)
    assert f.info["starts"] == 4 and f.status == mixjax.Status.converged
    p = {k: float(v[0]) for k, v in f.law.raw_count_params().items()}
    ref = ChinchillaLaw.from_raw_counts(1.8172, 482.01, 0.3478, 2085.43, 0.3658)
    from mixjax.fitting import objective_value, prepare
    arrays, _ = prepare(ChinchillaLaw, d)
    assert f.loss <= float(objective_value(ref, arrays, jnp.ones(d.n_rows), f.config)) * (1 + 1e-9)
    np.testing.assert_allclose([p["E"], p["alpha"], p["beta"]], [1.8172, 0.3478, 0.3658], rtol=5e-3)
    np.testing.assert_allclose([p["A"], p["B"]], [482.01, 2085.43], rtol=4e-2)
    # unit conversion round trip: raw-count A = A_law * 1e6^alpha
    np.testing.assert_allclose(float(ref.raw_count_params()["A"][0]), 482.01, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:the best of 2 starts of loglinear on 'slimpajama7' stopped at max_steps=50:mixjax.MaxStepsWarning")
def test_per_target_laws_fit_a_non_domain_target():  # 50 steps are enough for the MRE checked here
    """Laws with per_domain False fit V != K targets (the openhermes column of SlimPajama)."""
    d = mixjax.load_dataset("slimpajama7").at_scale(122e6, 9.998e9).select_targets(["openhermes", "c4"])
    f = mixjax.fit("loglinear", d, starts=2, max_steps=50)
    assert f.n_params == 2 * (7 + 1) and f.info["targets"] == ["openhermes", "c4"]
    assert f.evaluate(d)["mre"] < 0.05
