"""Mixtures across training phases with repetition caps, KL terms and a trust region, against independent references:
the closed form of a linear objective with a KL penalty, scipy's SLSQP on small problems with the same constraints."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import mixjax as mj
from mixjax.laws.loglinear import LogLinearLaw
from mixjax.mixture import InfeasibleMixtureError

P, K = 2, 4
SHARES = np.array([0.7, 0.3])
BASE = ["a", "b", "c", "d"]
NAMES = [f"{d}@p{p}" for p in range(P) for d in BASE]  # phase-major, as swarm tables store them
PRIOR = np.array([0.4, 0.3, 0.2, 0.1])
# every search below has the same objective, sizes and batch (4 starts; 2 members x 2 starts) so that they share one
# compiled program (the trust-region stage is a second one)
STARTS = 4


def _log_loss(losses):  # log of the log-linear law: linear in the mixture
    return jnp.log(losses[0])


def test_kl_penalty_matches_the_closed_form_per_phase():
    # J(h) = log L(h) = c + <t, h> is linear; the minimizer of <t_p, w_p> + lambda KL(w_p || q) on each phase's
    # simplex is w_p proportional to q exp(-t_p / lambda)
    rng = np.random.default_rng(0)
    t = rng.normal(size=(1, P * K))
    law = LogLinearLaw.from_params(np.array([0.3]), t)
    lam = 0.4
    res = mj.optimize_mixture(law, objective=_log_loss, domains=NAMES, phase_shares=SHARES, prior=dict(zip(BASE, PRIOR)),
                              kl_penalty=lam, starts=STARTS)
    tp = t[0].reshape(P, K) * 1.0  # the coefficient of w_pk in J is s_p t_pk; the per-phase problem divides by s_p
    expect = PRIOR[None, :] * np.exp(-tp / lam)
    expect /= expect.sum(1, keepdims=True)
    np.testing.assert_allclose(res.phase_mixtures, expect, atol=1e-7)
    np.testing.assert_allclose(res.mixture, (SHARES[:, None] * expect).reshape(-1), atol=1e-7)
    kl = np.sum(SHARES[:, None] * expect * np.log(expect / PRIOR[None, :]))
    assert res.kl_to_prior == pytest.approx(kl, abs=1e-8)


@pytest.mark.slow
def test_kl_penalty_matches_the_closed_form_on_one_phase():
    t = np.random.default_rng(0).normal(size=(1, K))
    lam = 0.4
    one = mj.optimize_mixture(LogLinearLaw.from_params(np.array([0.3]), t), objective=_log_loss, domains=BASE,
                              prior=PRIOR, kl_penalty=lam, starts=STARTS)
    w1 = PRIOR * np.exp(-t[0, :K] / lam)
    np.testing.assert_allclose(one.mixture, w1 / w1.sum(), atol=1e-7)
    assert one.phase_mixtures.shape == (1, K)


def _slsqp(fun, cons, bounds, x0s):
    best = None
    for x0 in x0s:
        o = minimize(fun, x0, method="SLSQP", bounds=bounds, constraints=cons, options=dict(ftol=1e-13, maxiter=2000))
        if o.success and (best is None or o.fun < best.fun):
            best = o
    return best


def _linear_law(seed):
    rng = np.random.default_rng(seed)
    return LogLinearLaw.from_params(np.array([0.1]), rng.normal(size=(1, P * K)))


def test_caps_and_kl_bound_match_slsqp():
    law = _linear_law(1)
    t = np.asarray(law.t)[0]
    U = np.array([1.0, 1.0, 1.0, 1.0])  # unique tokens (billions); 4 B training tokens, at most 1.1 epochs each
    E, D, B, lam = 1.1, 4.0, 0.08, 0.02
    res = mj.optimize_mixture(law, objective=_log_loss, domains=NAMES, phase_shares=SHARES, unique_tokens=dict(zip(BASE, U)),
                              max_epochs=E, n_tokens=D, prior=PRIOR, max_kl=B, kl_penalty=lam, starts=STARTS)
    sq = (SHARES[:, None] * PRIOR).reshape(-1)

    def kl(z):
        return np.sum(z * np.log(np.maximum(z, 1e-300) / sq))

    cons = [{"type": "eq", "fun": lambda z, p=p: z.reshape(P, K)[p].sum() - SHARES[p]} for p in range(P)]
    cons.append({"type": "ineq", "fun": lambda z: E * U / D - z.reshape(P, K).sum(0)})
    cons.append({"type": "ineq", "fun": lambda z: B - kl(z)})
    ref = _slsqp(lambda z: 0.1 + t @ z + lam * kl(z), cons, [(1e-12, 1.0)] * (P * K), [sq, np.repeat(SHARES / K, K)])
    z = res.problem.blocks(res.mixture)
    assert res.penalized_value == pytest.approx(ref.fun, rel=1e-6, abs=1e-7)
    assert res.penalized_value <= ref.fun + 1e-7
    np.testing.assert_allclose(z, ref.x, atol=2e-4)
    # the constraints hold and bind: the caps couple the phases, the KL bound is active
    assert res.epochs.max() <= E * (1 + 1e-7) and res.kl_to_prior <= B + 1e-7
    assert res.active_constraints["repetition_cap"] and res.active_constraints["max_kl"]
    np.testing.assert_allclose(res.epochs, D * z.reshape(P, K).sum(0) / U, rtol=1e-12)
    np.testing.assert_allclose(res.phase_mixtures.sum(1), 1.0, atol=1e-12)


def _kkt_lsq(law, z, U, E, D, B, lam):
    """Independent KKT residual of the caps + KL bound + KL penalty problem at z (P*K,): the stationarity equations
    dF_pk + a_k / cap_k + b dKL_pk - nu_p = 0 on the coordinates off their bounds, solved for nu (free), a >= 0 on the
    binding caps and b >= 0 if the KL bound binds (scipy lsq_linear); returns the largest residual."""
    from scipy.optimize import lsq_linear

    t = np.asarray(law.t)[0]
    sq = (SHARES[:, None] * PRIOR).reshape(-1)
    caps = E * U / D
    dkl = np.log(z / sq) + 1.0
    grad = t + lam * dkl
    free = z > 1e-9
    cap_on = np.flatnonzero(z.reshape(P, K).sum(0) >= caps * (1 - 1e-6))
    kl_on = np.sum(z * np.log(z / sq)) >= B * (1 - 1e-6)
    cols, lb = [], []
    for p in range(P):  # nu_p
        cols.append(-np.repeat(np.arange(P) == p, K).astype(float)), lb.append(-np.inf)
    for k in cap_on:  # a_k
        cols.append(np.tile(np.arange(K) == k, P) / caps[k]), lb.append(0.0)
    if kl_on:
        cols.append(dkl), lb.append(0.0)
    A = np.stack(cols, 1)[free]
    o = lsq_linear(A, -grad[free], bounds=(lb, np.inf))
    return np.max(np.abs(A @ o.x + grad[free]))


def test_status_is_converged_only_with_a_kkt_certificate():
    # the status of a constrained search comes from a KKT certificate of the end point, not from the inner solver:
    # with 5 inner steps a round the end point is feasible but not stationary and says so (max_steps); the default
    # search is certified, and an independent least-squares KKT check agrees with both verdicts
    law = _linear_law(1)
    U = np.array([1.0, 1.0, 1.0, 1.0])
    E, D, B, lam = 1.1, 4.0, 0.08, 0.02
    kw = dict(objective=_log_loss, domains=NAMES, phase_shares=SHARES, unique_tokens=dict(zip(BASE, U)), max_epochs=E, n_tokens=D,
              prior=PRIOR, max_kl=B, kl_penalty=lam, starts=STARTS)
    good = mj.optimize_mixture(law, **kw)
    assert good.status == mj.Status.converged
    assert good.kkt_residual <= 1e-6 * max(1.0, abs(good.penalized_value)) and good.constraint_violation <= 1e-7
    assert _kkt_lsq(law, good.problem.blocks(good.mixture), U, E, D, B, lam) < 1e-5
    short = mj.optimize_mixture(law, steps=5, throw=False, **kw)
    assert short.status == mj.Status.max_steps and short.kkt_residual > 1e-6
    assert _kkt_lsq(law, short.problem.blocks(short.mixture), U, E, D, B, lam) > 1e-4


@pytest.mark.slow  # compiles the trust-region program (about 10 s)
def test_trust_region_matches_slsqp_over_the_balls():
    law = _linear_law(2)
    t = np.asarray(law.t)[0]
    rng = np.random.default_rng(3)
    H = np.stack([(SHARES[:, None] * rng.dirichlet(np.ones(K), size=P)).reshape(-1) for _ in range(3)])
    r = 0.12
    res = mj.optimize_mixture(law, objective=_log_loss, domains=NAMES, phase_shares=SHARES, measured=H, trust_radius=r,
                              floors=0.01, starts=STARTS)
    best = np.inf
    n = P * K
    for m in H:  # z - m = a - b with a, b >= 0, sum(a + b) <= 2 r: the L1 ball as smooth constraints
        cons = [{"type": "eq", "fun": lambda x, p=p, m=m: (m + x[:n] - x[n:]).reshape(P, K)[p].sum() - SHARES[p]} for p in range(P)]
        cons.append({"type": "ineq", "fun": lambda x: 2 * r - x.sum()})
        cons.append({"type": "ineq", "fun": lambda x, m=m: (m + x[:n] - x[n:]) - 0.01 * np.repeat(SHARES, K)})
        o = _slsqp(lambda x, m=m: 0.1 + t @ (m + x[:n] - x[n:]), cons, [(0.0, 1.0)] * (2 * n), [np.zeros(2 * n), np.full(2 * n, 1e-3)])
        if o is not None:
            best = min(best, o.fun)
    assert res.value == pytest.approx(best, rel=1e-6, abs=1e-7)
    assert res.nearest_measured_distance <= r + 1e-9 and res.active_constraints["trust_region"]
    assert res.phase_mixtures.min() >= 0.01 - 1e-12


def test_ensemble_members_match_their_closed_forms():
    rng = np.random.default_rng(5)
    t = rng.normal(size=(2, 1, P * K))
    laws = LogLinearLaw(jnp.full((2, 1), 0.1), jnp.asarray(t))
    lam = 0.5
    ens = mj.optimize_mixture_ensemble(laws, objective=_log_loss, domains=NAMES, phase_shares=SHARES, prior=PRIOR,
                                       kl_penalty=lam, starts=STARTS // 2)
    for i in range(2):
        expect = PRIOR[None, :] * np.exp(-t[i, 0].reshape(P, K) / lam)
        np.testing.assert_allclose(ens.phase_mixtures[i], expect / expect.sum(1, keepdims=True), atol=1e-7)
    assert ens.ok.all() and ens.kl_to_prior.shape == (2,)


def test_bad_constraints_name_what_is_wrong():
    law = _linear_law(1)
    kw = dict(domains=NAMES, phase_shares=SHARES)
    with pytest.raises(InfeasibleMixtureError, match="tightest domains: .*a"):
        mj.optimize_mixture(law, unique_tokens=dict(zip(BASE, [0.1, 0.1, 0.1, 0.1])), max_epochs=1, n_tokens=4.0, **kw)
    with pytest.raises(InfeasibleMixtureError, match=r"b@p0 \(floor 0.2 > ceiling .* from the repetition cap"):
        mj.optimize_mixture(law, unique_tokens=dict(zip(BASE, [9, 0.1, 9, 9])), max_epochs=1, n_tokens=4.0,
                            floors={"b": 0.2}, **kw)
    with pytest.raises(ValueError, match="prior misses 1 domain"):
        mj.optimize_mixture(law, prior={"a": 0.5, "b": 0.3, "c": 0.2}, kl_penalty=0.1, **kw)
    with pytest.raises(ValueError, match="sum to 0.9"):
        mj.optimize_mixture(law, prior=[0.3, 0.3, 0.2, 0.1], kl_penalty=0.1, **kw)
    with pytest.raises(ValueError, match="needs a prior"):
        mj.optimize_mixture(law, kl_penalty=0.1, **kw)
    with pytest.raises(ValueError, match="trust_radius needs the measured"):
        mj.optimize_mixture(law, trust_radius=0.1, **kw)
    with pytest.raises(ValueError, match="phase_shares sum to"):
        mj.optimize_mixture(law, domains=NAMES, phase_shares=[0.7, 0.4])


def _cli(args):
    import contextlib
    import io

    from mixjax.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, err.getvalue()


def test_cli_checks_phase_options_before_fitting(tmp_path):
    rc, err = _cli(["optimize", "marin2phase", "--law", "loglinear", "--phase-shares", "0.5,0.4"])
    assert rc == 2 and "sum to 0.9" in err and "fitting" not in err
    rc, err = _cli(["optimize", "pile4", "--law", "loglinear", "--phase-shares", "0.5,0.5"])
    assert rc == 2 and "several training phases" in err
    prior = tmp_path / "prior.csv"
    prior.write_text("domain,weight\ndolma3_arxiv,1.0\n")
    rc, err = _cli(["optimize", "marin2phase", "--law", "loglinear", "--prior", str(prior), "--kl-penalty", "0.1"])
    assert rc == 2 and "prior misses 38 domain(s)" in err and "fitting" not in err
