"""The capped exponents of the Shukor and Chinchilla-mixture laws: the closed form below and above the cap, a
gradient that fades past the cap but never vanishes, user values inverted exactly and refused at the cap, and a
Pile-4 fit that used to run beta away and now ends at a minimum."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy_reference import scipy_fit

import mixjax as mj
from mixjax.fitting import FitConfig, objective_value, prepare
from mixjax.laws import ChinchillaMixturePerTargetLaw, ShukorJointLaw
from mixjax.laws.shukor import CAP_SHARPNESS, EXPONENT_CAPS

RNG = np.random.default_rng(3)
V, K = 2, 3
H = RNG.dirichlet(np.ones(K), 5)
N = np.array([90.0, 300.0, 90.0, 1000.0, 300.0])  # millions
D = np.array([0.5, 3.0, 10.0, 1.5, 0.8])  # billions


def soft_cap(x, cap, k=CAP_SHARPNESS):
    """log e = log c - softplus(k (log c - log x)) / k, written out: e = x (1 + (x/c)^k)^(-1/k) (numpy)."""
    x = np.asarray(x, np.float64)
    return cap * (1.0 + (x / cap) ** k) ** (-1.0 / k) * (x / cap)


def _chinchilla_mixture_numpy(E, alpha, B, beta, C, gamma, h, n, d):
    """L_v = E_v + (n^-alpha_v + B_v d^-beta_v) / sum_j C_vj h_j^gamma_vj, with every exponent softly capped."""
    a, b, g = soft_cap(alpha, 3.0), soft_cap(beta, 3.0), soft_cap(gamma, 10.0)
    S = (C * h[None, :] ** g).sum(axis=1)
    return E + (n ** -a + B * d ** -b) / S


def _shukor_joint_numpy(E, C, gamma, A, alpha, B, beta, h, n, d):
    a, b, g = soft_cap(alpha, 3.0), soft_cap(beta, 3.0), soft_cap(gamma, 10.0)
    return E + 1.0 / (C * h[None, :] ** g).sum(axis=1) + (A @ h) * n ** -a + (B @ h) * d ** -b


def _raw(cls, **logs):
    """A law built from log values directly (no cap check), as a fit's parameters are."""
    return cls(**{k: jnp.asarray(v, jnp.float64) for k, v in logs.items()})


@pytest.mark.parametrize("beta", [[0.3, 2.5], [0.3, 40.0], [5.0, 250.0]])
def test_chinchilla_mixture_prediction_uses_the_capped_exponent(beta):
    E, alpha, B = np.array([1.0, 2.0]), np.array([0.4, 3.5]), np.array([0.7, 1.3])
    C, gamma = RNG.uniform(0.5, 2.0, (V, K)), np.array([[0.5, 12.0, 1.0], [0.2, 0.9, 30.0]])
    law = _raw(ChinchillaMixturePerTargetLaw, log_E=np.log(E), log_alpha=np.log(alpha), log_B=np.log(B),
               log_beta=np.log(beta), log_C=np.log(C), log_gamma=np.log(gamma))
    for i in range(H.shape[0]):
        want = _chinchilla_mixture_numpy(E, alpha, B, np.asarray(beta), C, gamma, H[i], N[i], D[i])
        np.testing.assert_allclose(np.asarray(law(jnp.asarray(H[i]), N[i], D[i])), want, rtol=1e-12)
    got = {k: np.asarray(v) for k, v in law.params().items()}
    np.testing.assert_allclose(got["beta"], soft_cap(beta, 3.0), rtol=1e-12)
    np.testing.assert_allclose(got["gamma"], soft_cap(gamma, 10.0), rtol=1e-12)
    assert (got["beta"] <= 3.0).all() and (got["gamma"] <= 10.0).all()  # = the cap only in rounding, far past it
    small = np.asarray(beta) <= 1.5  # below half the cap the capped exponent is the stored one within 5e-4
    np.testing.assert_allclose(got["beta"][small], np.asarray(beta)[small], rtol=5e-4)


def test_shukor_joint_prediction_uses_the_capped_exponent_and_a_fading_gradient_beyond_it():
    E, alpha, beta = np.array([1.0, 2.0]), np.array([0.4, 4.0]), np.array([7.0, 0.2])
    C, gamma = RNG.uniform(0.5, 2.0, (V, K)), np.array([[0.5, 15.0, 1.0], [0.2, 0.9, 3.0]])
    A, B = RNG.uniform(1.0, 5.0, (V, K)), RNG.uniform(0.1, 1.0, (V, K))
    logs = dict(log_E=np.log(E), log_C=np.log(C), log_gamma=np.log(gamma), log_A=np.log(A), log_alpha=np.log(alpha),
                log_B=np.log(B), log_beta=np.log(beta))
    law = _raw(ShukorJointLaw, **logs)
    for i in range(H.shape[0]):
        want = _shukor_joint_numpy(E, C, gamma, A, alpha, B, beta, H[i], N[i], D[i])
        np.testing.assert_allclose(np.asarray(law(jnp.asarray(H[i]), N[i], D[i])), want, rtol=1e-12)

    def loss(log_beta):
        l2 = _raw(ShukorJointLaw, **{**logs, "log_beta": log_beta})
        return sum(jnp.sum(l2(jnp.asarray(H[i]), N[i], D[i])) for i in range(H.shape[0]))

    g = np.asarray(jax.grad(loss)(jnp.asarray(np.log(beta))))
    eps = 1e-6
    fd = [(float(loss(jnp.asarray(np.log(beta) + eps * e))) - float(loss(jnp.asarray(np.log(beta) - eps * e)))) / (2 * eps)
          for e in np.eye(V)]
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    # beta_0 = 7 is past the cap 3: its gradient is not 0 (a step past the cap can come back), and it is the gradient
    # with respect to log e times d log e / d log x = 1 / (1 + (x/c)^k) (finite differences in log e at e(7))
    e0 = soft_cap(7.0, 3.0)

    def loss_in_log_e(log_e0):
        log_x0 = np.log(3.0) - np.log(np.expm1(CAP_SHARPNESS * (np.log(3.0) - log_e0))) / CAP_SHARPNESS
        return float(loss(jnp.asarray([log_x0, np.log(beta[1])])))

    d_log_e = (loss_in_log_e(np.log(e0) + 1e-7) - loss_in_log_e(np.log(e0) - 1e-7)) / 2e-7
    factor = 1.0 / (1.0 + (7.0 / 3.0) ** CAP_SHARPNESS)
    assert g[0] != 0.0 and factor < 2e-3
    assert g[0] == pytest.approx(factor * d_log_e, rel=1e-4)
    assert abs(g[1]) > 1e-3  # beta_1 = 0.2, far below the cap: the gradient is the uncapped one


def test_from_params_inverts_the_cap_and_refuses_the_cap_itself():
    E, alpha, B, C, gamma = np.ones(V), np.full(V, 0.3), np.ones(V), np.ones((V, K)), np.full((V, K), 0.5)
    with pytest.raises(ValueError, match="beta = 4 is not below its cap 3"):
        ChinchillaMixturePerTargetLaw.from_params(E, alpha, B, np.array([0.2, 4.0]), C, gamma)
    with pytest.raises(ValueError, match="beta = 3 is not below its cap 3"):
        ChinchillaMixturePerTargetLaw.from_params(E, alpha, B, np.full(V, EXPONENT_CAPS["beta"]), C, gamma)
    with pytest.raises(ValueError, match="gamma = 11 is not below its cap 10"):
        ShukorJointLaw.from_params(E, np.ones((V, K)), np.full((V, K), 11.0), np.ones((V, K)), alpha, np.ones((V, K)), alpha)
    beta = np.array([0.25, 2.97])  # given values come back exactly, even next to the cap
    law = ChinchillaMixturePerTargetLaw.from_params(E, alpha, B, beta, C, gamma)
    np.testing.assert_allclose(np.asarray(law.params()["beta"]), beta, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(law.params()["alpha"]), alpha, rtol=1e-12)


@pytest.fixture(scope="module")
def pile4_fit():
    data = mj.load_dataset("pile4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the out_of_range warning, asserted through the status below
        return data, mj.fit("chinchilla_mixture_per_target", data, starts=4, seed=5)


@pytest.mark.slow  # a 48-parameter fit of Pile-4 and its scipy polish (13 s); the cap's maths is checked above by default
def test_a_fit_that_ran_beta_away_on_pile4_ends_at_the_cap_at_a_minimum(pile4_fit):
    """On every Pile-4 row the per-target law used to drive beta of two targets to 100-300 (B to 1e150) and stop
    still descending (a scipy polish lowered J by up to 5.6 %); now beta stops at its cap and the polish finds a
    minimum (gain below 1e-3, the criterion of benchmarks/finish_check.py)."""
    data, fit = pile4_fit
    beta = np.asarray(fit.law.params()["beta"])
    assert fit.status == mj.Status.out_of_range and "beta" in fit.law.out_of_range()
    assert 0.95 * 3.0 < beta.max() <= 3.0  # pressed against the cap (equal to it in rounding)
    arrays, _ = prepare(type(fit.law), data, dtype="float64")
    J = float(objective_value(fit.law, arrays, jnp.ones(data.n_rows), FitConfig()))
    assert J == pytest.approx(fit.loss, rel=1e-9)
    batched = jax.tree_util.tree_map(lambda x: x[None] if isinstance(x, jax.Array) else x, fit.law)
    _, _, info = scipy_fit(type(fit.law), data, starts=1, start_laws=batched)
    assert (J - float(info["values"][0])) / J < 1e-3


def test_a_fit_file_of_another_revision_of_the_formula_is_refused(tmp_path, monkeypatch):
    """Fits saved before the caps (revision 0, no ``law_revision`` in the header) would predict differently under the
    capped formula: they are refused with a message, as is any other revision; the current one loads unchanged."""
    data = mj.load_dataset("pile4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 30 steps: any fit of the law is a file of its revision
        fit = mj.fit("chinchilla_mixture_per_target", data, starts=1, max_steps=30, seed=5)
    cls = type(fit.law)
    assert cls.revision == 1
    mj.save_fit(tmp_path / "now.mixfit", fit)
    back = mj.load_fit(tmp_path / "now.mixfit")
    assert mj.io.read_header(tmp_path / "now.mixfit")["law_revision"] == 1
    np.testing.assert_array_equal(np.asarray(back.predict(data)), np.asarray(fit.predict(data)))
    with monkeypatch.context() as m:
        m.setattr(cls, "revision", 0)  # a file written before the caps
        mj.save_fit(tmp_path / "before.mixfit", fit)
    assert "law_revision" not in mj.io.read_header(tmp_path / "before.mixfit")
    with pytest.raises(mj.io.FitFileError, match="saved under revision 0 of its formula; .* evaluates revision 1 .*caps the exponents"):
        mj.load_fit(tmp_path / "before.mixfit")
