"""The data-mixture scaling laws of Shukor et al., "Scaling Laws for Optimal Data Mixtures" (arXiv 2507.09404).

Per target v (any V loss columns; ``per_domain = False``), with N in millions of parameters and D in billions of
tokens, the mixture enters through

    M_v(h) = 1 / sum_j C_vj h_j^gamma_vj        (C_vj > 0, gamma_vj > 0; a weight h_j = 0 contributes 0)

* :class:`ShukorMixtureLaw`  L_v = E_v + M_v(h)                                        (fixed N, D; 2K + 1 per target)
* :class:`ShukorAdditiveLaw` L_v = E_v + M_v(h) + A_v N^-alpha_v + B_v D^-beta_v       (the additive law; 2K + 5)
* :class:`ShukorJointLaw`    L_v = E_v + M_v(h) + A_v(h) N^-alpha_v + B_v(h) D^-beta_v,
  A_v(h) = sum_j A_vj h_j, B_v(h) = sum_j B_vj h_j                                     (joint form; 4K + 3)

Every positive parameter is stored as its log. The exponents are softly capped at the top of their documented
range (gamma < 10, alpha, beta < 3; ``EXPONENT_CAPS``, :func:`capped_exponent`): a fit that presses an exponent against its
cap ends there, at a minimum of the capped law, with the status ``out_of_range``.

Variable projection (``linear_fields``): with the exponents and C fixed, the coefficients below enter linearly and
are >= 0, so under the least-squares objectives they are solved exactly and the solver moves only the rest:

* mixture law:  E_v               (columns [1])
* additive law: E_v, A_v, B_v     (columns [1, N^-alpha_v, D^-beta_v])
* joint law:    E_v               (column [1]; A_vj and B_vj are linear too, but 2K + 1 coefficients per target are
  beyond the exhaustive active-set solve, which tries all 2^L - 1 sets)
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._base import AbstractLaw, DataSummary

__all__ = ["ShukorMixtureLaw", "ShukorAdditiveLaw", "ShukorJointLaw"]


#: The values each exponent stays below. Beyond them the data of a mixture sweep cannot tell values apart: D^-beta
#: with beta in the hundreds is a free offset of the rows with the fewest tokens, and C h^gamma with gamma above 10
#: switches a domain off. Without a cap such a fit runs away (beta -> infinity, B -> 1e150) and is still descending
#: when the solver stops it; with the cap it ends at a minimum with the exponent pressed against its cap.
EXPONENT_CAPS = {"gamma": 10.0, "alpha": 3.0, "beta": 3.0}
#: An exponent above 95 % of its cap is out of range (the fit pressed against the cap).
EXPONENT_SANE_RANGES = {name: (0.0, 0.95 * cap) for name, cap in EXPONENT_CAPS.items()}
#: What revision 1 of these laws changed (fit files of revision 0 are refused).
CAP_REVISION_NOTE = "revision 1 caps the exponents: gamma below 10, alpha and beta below 3"
#: Sharpness k of the soft cap (see :func:`capped_exponent`).
CAP_SHARPNESS = 8.0


def capped_exponent(log_x, name: str):
    """The exponent ``name`` stored as ``log_x``, softly capped at c = ``EXPONENT_CAPS[name]``:

        log e = log c - softplus(k (log c - log_x)) / k,        k = CAP_SHARPNESS

    a smooth minimum of x = exp(log_x) and c in log space: e < c always; e = x (1 - O((x/c)^k / k)), so below half
    the cap e and x differ by less than 5e-4 relative; past the cap e -> c and the gradient fades smoothly (it is
    never exactly 0, so a step that overshoots the cap can come back)."""
    log_cap = math.log(EXPONENT_CAPS[name])
    return jnp.exp(log_cap - jax.nn.softplus(CAP_SHARPNESS * (log_cap - log_x)) / CAP_SHARPNESS)


def log_exponent(value, name: str):
    """The stored ``log_x`` of an exponent ``name`` given by a user (the inverse of :func:`capped_exponent`), refused at or
    above its cap, which the capped exponent never reaches."""
    v = np.asarray(value, dtype=float)
    cap = EXPONENT_CAPS[name]
    if not (v < cap).all():
        raise ValueError(f"{name} = {v.max():g} is not below its cap {cap:g}: the law's {name} is a smooth minimum of its "
                         f"stored value and {cap:g}, always below {cap:g}; give a value below the cap")
    k, log_cap = CAP_SHARPNESS, math.log(cap)
    z = k * (log_cap - np.log(v))  # softplus(y) = z  <=>  y = log(expm1(z))
    return jnp.asarray(log_cap - np.log(np.expm1(z)) / k, dtype=jnp.result_type(float))


def _pow0(h, g):
    """h^g with h >= 0, g > 0, and 0^g = 0 with finite gradients."""
    pos = h > 0
    return jnp.where(pos, jnp.exp(g * jnp.log(jnp.where(pos, h, 1.0))), 0.0)


def mixture_effectiveness(log_C, log_gamma, mixture):
    """S_v(h) = sum_j C_vj h_j^gamma_vj, shape (V,) (gamma capped)."""
    return jnp.sum(jnp.exp(log_C) * _pow0(mixture[..., None, :], capped_exponent(log_gamma, "gamma")), axis=-1)


def _mixture_term(log_C, log_gamma, mixture):
    """M_v(h) = 1 / S_v(h)."""
    return 1.0 / mixture_effectiveness(log_C, log_gamma, mixture)


class CappedExponents:
    """What the laws with capped exponents share (a mixin before :class:`AbstractLaw`): the sane ranges below the
    caps, and the formula revision that introduced the caps."""

    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = EXPONENT_SANE_RANGES
    revision: ClassVar[int] = 1
    revision_note: ClassVar[str] = CAP_REVISION_NOTE


def _with_log_fields(law, names, coef):
    """``law`` with the log-stored fields ``names`` set from the columns of ``coef`` (V, L), each >= 0."""
    tiny = jnp.finfo(coef.dtype).tiny
    values = tuple(jnp.log(jnp.maximum(coef[:, i], tiny)) for i in range(len(names)))  # 0 is stored as the smallest positive
    return eqx.tree_at(lambda l: tuple(getattr(l, f) for f in names), law, values)


def _u(key, lo, hi, shape):
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def _mixture_init(key, summary: DataSummary, share: float):
    """E_v below the smallest loss; C so that the mixture term is about ``share`` of the mean loss above E."""
    V, K = summary.n_targets, summary.n_domains
    kE, kC, kg = jax.random.split(key, 3)
    E = jnp.asarray(summary.loss_min) * _u(kE, 0.3, 0.8, (V,))
    gap = jnp.maximum(jnp.asarray(summary.loss_mean) - E, 1e-3)
    C = _u(kC, 0.5, 1.5, (V, K)) / (share * gap[:, None])
    return jnp.log(E), jnp.log(C), jnp.log(_u(kg, 0.1, 0.8, (V, K)))


def _log(v):
    return jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))


class ShukorMixtureLaw(CappedExponents, AbstractLaw):
    r"""The mixture part of Shukor et al.'s additive law at one fixed scale, per target v:

        L_v(h) = E_v + 1 / sum_j C_vj h_j^gamma_vj

    (their additive law, Eq. 2, with N and D fixed, so the scale terms merge into E_v). This is the "Additive"
    baseline of the seed paper's Table 2, K(2K + 1) parameters for V = K. Free parameters: E_v, C_vj, gamma_vj:
    **V(2K + 1)** (105 for V = K = 7, 595 for V = K = 17). N and D are not used.
    """

    log_E: jax.Array
    log_C: jax.Array
    log_gamma: jax.Array

    name: ClassVar[str] = "shukor_mixture"
    reference: ClassVar[str] = "Shukor et al., Scaling Laws for Optimal Data Mixtures, arXiv 2507.09404 (additive law at fixed N, D)"
    per_domain: ClassVar[bool] = False
    linear_fields: ClassVar[tuple[str, ...]] = ("log_E",)

    def __check_init__(self):
        if self.log_C.shape != self.log_gamma.shape or self.log_C.shape[-2] != self.log_E.shape[-1]:
            raise ValueError(f"ShukorMixtureLaw: shapes E {self.log_E.shape}, C {self.log_C.shape}, gamma {self.log_gamma.shape} disagree")

    @classmethod
    def from_params(cls, E, C, gamma) -> ShukorMixtureLaw:
        """Build from E (V,), C (V, K), gamma (V, K), all > 0."""
        return cls(_log(E), _log(C), log_exponent(gamma, "gamma"))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ShukorMixtureLaw:
        return cls(*_mixture_init(key, summary, 1.0))

    def params(self):
        return {"E": jnp.exp(self.log_E), "C": jnp.exp(self.log_C), "gamma": capped_exponent(self.log_gamma, "gamma")}

    def __call__(self, mixture, model_size, n_tokens):
        return jnp.exp(self.log_E) + _mixture_term(self.log_C, self.log_gamma, mixture)

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = M_v(h)`` and the column ``[1]`` of E."""
        base = _mixture_term(self.log_C, self.log_gamma, mixture)
        return base, jnp.ones_like(base)[:, None]

    def with_linear(self, coef):
        return _with_log_fields(self, self.linear_fields, coef)


class ShukorAdditiveLaw(CappedExponents, AbstractLaw):
    r"""The additive law of Shukor et al. (2025, Eq. 2), per target v:

        L_v(h, N, D) = E_v + 1 / sum_j C_vj h_j^gamma_vj + A_v / N^alpha_v + B_v / D^beta_v

    N in millions of parameters, D in billions of tokens (the units only rescale A_v and B_v). Free parameters:
    E, A, alpha, B, beta per target and C_vj, gamma_vj: **V(2K + 5)**. At one fixed (N, D) the two scale terms
    merge with E_v (use :class:`ShukorMixtureLaw` there).
    """

    log_E: jax.Array
    log_C: jax.Array
    log_gamma: jax.Array
    log_A: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array

    name: ClassVar[str] = "shukor_additive"
    reference: ClassVar[str] = "Shukor et al., Scaling Laws for Optimal Data Mixtures, arXiv 2507.09404 (additive law, Eq. 2)"
    per_domain: ClassVar[bool] = False
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    linear_fields: ClassVar[tuple[str, ...]] = ("log_E", "log_A", "log_B")

    def __check_init__(self):
        V = self.log_E.shape[-1:]
        for f in ("log_A", "log_alpha", "log_B", "log_beta"):
            if getattr(self, f).shape[-1:] != V:
                raise ValueError(f"ShukorAdditiveLaw.{f} has shape {getattr(self, f).shape}, expected (..., {V[0]})")
        if self.log_C.shape != self.log_gamma.shape or self.log_C.shape[-2] != V[0]:
            raise ValueError(f"ShukorAdditiveLaw: C {self.log_C.shape} and gamma {self.log_gamma.shape} must be (V={V[0]}, K)")

    @classmethod
    def from_params(cls, E, C, gamma, A, alpha, B, beta) -> ShukorAdditiveLaw:
        """Build from E, A, alpha, B, beta (V,) and C, gamma (V, K), all > 0."""
        return cls(_log(E), _log(C), log_exponent(gamma, "gamma"), _log(A), log_exponent(alpha, "alpha"), _log(B),
                   log_exponent(beta, "beta"))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ShukorAdditiveLaw:
        V = summary.n_targets
        k0, kA, ka, kB, kb = jax.random.split(key, 5)
        log_E, log_C, log_gamma = _mixture_init(k0, summary, 0.5)
        return cls(log_E, log_C, log_gamma, jnp.log(_u(kA, 0.5, 3.0, (V,))), jnp.log(_u(ka, 0.1, 0.6, (V,))),
                   jnp.log(_u(kB, 0.1, 1.0, (V,))), jnp.log(_u(kb, 0.1, 0.6, (V,))))

    def params(self):
        e = jnp.exp
        return {"E": e(self.log_E), "C": e(self.log_C), "gamma": capped_exponent(self.log_gamma, "gamma"), "A": e(self.log_A),
                "alpha": capped_exponent(self.log_alpha, "alpha"), "B": e(self.log_B), "beta": capped_exponent(self.log_beta, "beta")}

    def __call__(self, mixture, model_size, n_tokens):
        size = jnp.exp(self.log_A - capped_exponent(self.log_alpha, "alpha") * jnp.log(model_size))
        data = jnp.exp(self.log_B - capped_exponent(self.log_beta, "beta") * jnp.log(n_tokens))
        return jnp.exp(self.log_E) + _mixture_term(self.log_C, self.log_gamma, mixture) + size + data

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = M_v(h)`` and the columns ``[1, N^-alpha_v, D^-beta_v]`` of E, A and B."""
        base = _mixture_term(self.log_C, self.log_gamma, mixture)
        size = jnp.exp(-capped_exponent(self.log_alpha, "alpha") * jnp.log(model_size))
        data = jnp.exp(-capped_exponent(self.log_beta, "beta") * jnp.log(n_tokens))
        return base, jnp.stack([jnp.ones_like(base), size, data], axis=-1)

    def with_linear(self, coef):
        return _with_log_fields(self, self.linear_fields, coef)


class ShukorJointLaw(CappedExponents, AbstractLaw):
    r"""A joint law in the sense of Shukor et al. (2025): the model-size and data terms also depend on the mixture,
    per target v:

        L_v(h, N, D) = E_v + 1 / sum_j C_vj h_j^gamma_vj + (sum_j A_vj h_j) / N^alpha_v + (sum_j B_vj h_j) / D^beta_v

    The size and data coefficients are the mixture average of per-domain coefficients (each training domain
    contributes its own size and data sensitivity); the exponents are shared per target. This is the form
    implemented here; check it against the joint law of the paper (its Sec. 3) before quoting results as theirs.
    Free parameters: E, alpha, beta per target and C, gamma, A, B per (target, domain): **V(4K + 3)**.
    """

    log_E: jax.Array
    log_C: jax.Array
    log_gamma: jax.Array
    log_A: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array

    name: ClassVar[str] = "shukor_joint"
    reference: ClassVar[str] = "Shukor et al., Scaling Laws for Optimal Data Mixtures, arXiv 2507.09404 (joint law; mixture-weighted size/data coefficients)"
    per_domain: ClassVar[bool] = False
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    linear_fields: ClassVar[tuple[str, ...]] = ("log_E",)

    def __check_init__(self):
        V = self.log_E.shape[-1:]
        for f in ("log_alpha", "log_beta"):
            if getattr(self, f).shape[-1:] != V:
                raise ValueError(f"ShukorJointLaw.{f} has shape {getattr(self, f).shape}, expected (..., {V[0]})")
        for f in ("log_gamma", "log_A", "log_B"):
            if getattr(self, f).shape != self.log_C.shape:
                raise ValueError(f"ShukorJointLaw.{f} has shape {getattr(self, f).shape}, expected {self.log_C.shape}")

    @classmethod
    def from_params(cls, E, C, gamma, A, alpha, B, beta) -> ShukorJointLaw:
        """Build from E, alpha, beta (V,) and C, gamma, A, B (V, K), all > 0."""
        return cls(_log(E), _log(C), log_exponent(gamma, "gamma"), _log(A), log_exponent(alpha, "alpha"), _log(B),
                   log_exponent(beta, "beta"))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ShukorJointLaw:
        V, K = summary.n_targets, summary.n_domains
        k0, kA, ka, kB, kb = jax.random.split(key, 5)
        log_E, log_C, log_gamma = _mixture_init(k0, summary, 0.5)
        return cls(log_E, log_C, log_gamma, jnp.log(_u(kA, 0.5, 3.0, (V, K))), jnp.log(_u(ka, 0.1, 0.6, (V,))),
                   jnp.log(_u(kB, 0.1, 1.0, (V, K))), jnp.log(_u(kb, 0.1, 0.6, (V,))))

    def params(self):
        e = jnp.exp
        return {"E": e(self.log_E), "C": e(self.log_C), "gamma": capped_exponent(self.log_gamma, "gamma"), "A": e(self.log_A),
                "alpha": capped_exponent(self.log_alpha, "alpha"), "B": e(self.log_B), "beta": capped_exponent(self.log_beta, "beta")}

    def __call__(self, mixture, model_size, n_tokens):
        A_h = jnp.exp(self.log_A) @ mixture
        B_h = jnp.exp(self.log_B) @ mixture
        size = A_h * jnp.exp(-capped_exponent(self.log_alpha, "alpha") * jnp.log(model_size))
        data = B_h * jnp.exp(-capped_exponent(self.log_beta, "beta") * jnp.log(n_tokens))
        return jnp.exp(self.log_E) + _mixture_term(self.log_C, self.log_gamma, mixture) + size + data

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = M_v(h) + A_v(h) N^-alpha_v + B_v(h) D^-beta_v`` and the column ``[1]`` of E."""
        A_h = jnp.exp(self.log_A) @ mixture
        B_h = jnp.exp(self.log_B) @ mixture
        size = A_h * jnp.exp(-capped_exponent(self.log_alpha, "alpha") * jnp.log(model_size))
        data = B_h * jnp.exp(-capped_exponent(self.log_beta, "beta") * jnp.log(n_tokens))
        base = _mixture_term(self.log_C, self.log_gamma, mixture) + size + data
        return base, jnp.ones_like(base)[:, None]

    def with_linear(self, coef):
        return _with_log_fields(self, self.linear_fields, coef)
