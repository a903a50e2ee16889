r"""A Chinchilla backbone scaled by the mixture: the reducible loss of a target is a Chinchilla-style term in model
size and tokens divided by a mixture "effectiveness" S_v(h).

Per target v (any V loss columns; ``per_domain = False``), with N in millions of parameters and D in billions of
tokens::

    L_v(h, N, D) = E_v + (N^-alpha + B_v D^-beta) / S_v(h),      S_v(h) = sum_j C_vj h_j^gamma_vj

* :class:`ChinchillaMixtureLaw`           alpha, beta shared by every target: **2V(K + 1) + 2** parameters
* :class:`ChinchillaMixturePerTargetLaw`  alpha_v, beta_v per target:         **2V(K + 2)** parameters

Why this form. The Shukor et al. additive law adds a mixture term that does not change with scale; the
capacity-noise law ties the token dependence to D h_i, which on sweeps whose token count grows with model size
leaves tokens almost without effect. Here the mixture multiplies the whole reducible loss: a mixture that serves
target v well (large S_v) lowers its loss by the same factor at every scale, so the absolute gap between mixtures
shrinks as N and D grow, and the N and D exponents are those of one Chinchilla curve per target (shared across
targets in the main law, which removes most of the variance of extrapolating in N and D from a few sizes).
Every domain j contributes to every target through C_vj (transfer), so the law stays finite when the target's own
domain has weight 0 (S_v > 0 as long as some weighted domain has C_vj > 0).

Units: E_v and the loss in nats; N^-alpha is taken with N in millions (the coefficient of the N term is fixed to
1: its scale is absorbed by C), B_v is dimensionless relative to it with D in billions; C_vj is in 1/nats.
Every parameter is > 0 and stored as its log; the exponents are softly capped (alpha, beta < 3, gamma < 10, as in
:mod:`mixjax.laws.shukor`). B_v and E_v enter linearly once the others are fixed
(``linear_fields``: variable projection solves them in closed form).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary
from .shukor import CappedExponents, capped_exponent, mixture_effectiveness, log_exponent

__all__ = ["ChinchillaMixtureLaw", "ChinchillaMixturePerTargetLaw"]


def _log(v):
    return jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))


def _u(key, lo, hi, shape):
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def _basis(law, mixture, model_size, n_tokens):
    """``base = N^-alpha / S`` and columns ``[D^-beta / S, 1]`` of the coefficients B and E."""
    S = mixture_effectiveness(law.log_C, law.log_gamma, mixture)
    size = jnp.exp(-capped_exponent(law.log_alpha, "alpha") * jnp.log(model_size))
    data = jnp.exp(-capped_exponent(law.log_beta, "beta") * jnp.log(n_tokens))
    base = jnp.broadcast_to(size, S.shape) / S
    return base, jnp.stack([jnp.broadcast_to(data, S.shape) / S, jnp.ones_like(S)], axis=-1)


def _init_fields(key, summary: DataSummary, exponent_shape):
    """E below the smallest loss, exponents in (0.1, 0.5), and C such that the reducible term is about half of the
    mean loss above E at the median model size (the sum of h_j^gamma over a uniform mixture taken as K^(1-gamma))."""
    V, K = summary.n_targets, summary.n_domains
    kE, ka, kB, kb, kC, kg = jax.random.split(key, 6)
    E = jnp.asarray(summary.loss_min) * _u(kE, 0.3, 0.8, (V,))
    alpha = _u(ka, 0.1, 0.5, exponent_shape)
    gamma = _u(kg, 0.1, 0.8, (V, K))
    n_ref = summary.model_size_ref if math.isfinite(summary.model_size_ref) and summary.model_size_ref > 0 else 100.0
    gap = jnp.maximum(jnp.asarray(summary.loss_mean) - E, 1e-3)
    S_target = n_ref ** (-alpha) / (0.5 * gap)
    C = _u(kC, 0.5, 1.5, (V, K)) * (S_target / K)[..., None] * K**gamma
    return dict(
        log_E=jnp.log(E), log_alpha=jnp.log(alpha), log_B=jnp.log(_u(kB, 0.5, 3.0, (V,))),
        log_beta=jnp.log(_u(kb, 0.1, 0.5, exponent_shape)), log_C=jnp.log(C), log_gamma=jnp.log(gamma),
    )


def _check_shapes(law, exponent_shape: str):
    V = law.log_E.shape[-1:]
    if law.log_B.shape[-1:] != V:
        raise ValueError(f"{type(law).__name__}.log_B has shape {law.log_B.shape}, expected (..., {V[0]})")
    if law.log_C.shape != law.log_gamma.shape or law.log_C.shape[-2:-1] != V:
        raise ValueError(f"{type(law).__name__}: C {law.log_C.shape} and gamma {law.log_gamma.shape} must be (V={V[0]}, K)")
    want = law.log_E.shape[:-1] + (() if exponent_shape == "shared" else V)
    for f in ("log_alpha", "log_beta"):
        if getattr(law, f).shape != want:
            raise ValueError(f"{type(law).__name__}.{f} has shape {getattr(law, f).shape}, expected {want}")


def _with_linear(law, coef):
    tiny = jnp.finfo(coef.dtype).tiny
    log = lambda v: jnp.log(jnp.maximum(v, tiny))  # noqa: E731 (a coefficient at 0 is stored as the smallest positive)
    return eqx.tree_at(lambda l: (l.log_B, l.log_E), law, (log(coef[:, 0]), log(coef[:, 1])))


def _predict(law, mixture, model_size, n_tokens):
    base, phi = _basis(law, mixture, model_size, n_tokens)
    return base + phi[:, 0] * jnp.exp(law.log_B) + jnp.exp(law.log_E)


def _params(law):
    e = jnp.exp
    return {"E": e(law.log_E), "alpha": capped_exponent(law.log_alpha, "alpha"), "B": e(law.log_B), "beta": capped_exponent(law.log_beta, "beta"),
            "C": e(law.log_C), "gamma": capped_exponent(law.log_gamma, "gamma")}


class _ChinchillaMixtureForm(CappedExponents):
    """What the two Chinchilla-mixture laws share: flags, readable parameters, the linear basis of B and E, and the
    prediction (the module's functions); they differ in the shape of alpha and beta."""

    per_domain: ClassVar[bool] = False
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    linear_fields: ClassVar[tuple[str, ...]] = ("log_B", "log_E")

    def params(self):
        return _params(self)

    def linear_basis(self, mixture, model_size, n_tokens):
        return _basis(self, mixture, model_size, n_tokens)

    def with_linear(self, coef):
        return _with_linear(self, coef)

    def __call__(self, mixture, model_size, n_tokens):
        return _predict(self, mixture, model_size, n_tokens)


class ChinchillaMixtureLaw(_ChinchillaMixtureForm, AbstractLaw):
    r"""Chinchilla backbone scaled by the mixture, exponents shared by every target (see the module docstring):

        L_v(h, N, D) = E_v + (N^-alpha + B_v D^-beta) / sum_j C_vj h_j^gamma_vj

    N in millions of parameters, D in billions of tokens. Free parameters: E_v, B_v per target, C_vj, gamma_vj per
    (target, domain) and one alpha, one beta: **2V(K + 1) + 2** (114 for V = K = 7).
    """

    log_E: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array
    log_C: jax.Array
    log_gamma: jax.Array

    name: ClassVar[str] = "chinchilla_mixture"
    reference: ClassVar[str] = "Chinchilla backbone (Hoffmann et al. 2022) divided by a Shukor-style mixture sum; shared exponents"

    def __check_init__(self):
        _check_shapes(self, "shared")

    @classmethod
    def from_params(cls, E, alpha, B, beta, C, gamma) -> ChinchillaMixtureLaw:
        """Build from E, B (V,), scalars alpha, beta and C, gamma (V, K), all > 0."""
        return cls(_log(E), log_exponent(alpha, "alpha"), _log(B), log_exponent(beta, "beta"), _log(C),
                   log_exponent(gamma, "gamma"))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ChinchillaMixtureLaw:
        return cls(**_init_fields(key, summary, ()))



class ChinchillaMixturePerTargetLaw(_ChinchillaMixtureForm, AbstractLaw):
    r"""Chinchilla backbone scaled by the mixture, exponents per target (see the module docstring):

        L_v(h, N, D) = E_v + (N^-alpha_v + B_v D^-beta_v) / sum_j C_vj h_j^gamma_vj

    N in millions of parameters, D in billions of tokens. Free parameters: E_v, alpha_v, B_v, beta_v per target and
    C_vj, gamma_vj: **2V(K + 2)** (126 for V = K = 7).
    """

    log_E: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array
    log_C: jax.Array
    log_gamma: jax.Array

    name: ClassVar[str] = "chinchilla_mixture_per_target"
    reference: ClassVar[str] = "Chinchilla backbone (Hoffmann et al. 2022) divided by a Shukor-style mixture sum; exponents per target"

    def __check_init__(self):
        _check_shapes(self, "per_target")

    @classmethod
    def from_params(cls, E, alpha, B, beta, C, gamma) -> ChinchillaMixturePerTargetLaw:
        """Build from E, alpha, B, beta (V,) and C, gamma (V, K), all > 0."""
        return cls(_log(E), log_exponent(alpha, "alpha"), _log(B), log_exponent(beta, "beta"), _log(C),
                   log_exponent(gamma, "gamma"))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ChinchillaMixturePerTargetLaw:
        return cls(**_init_fields(key, summary, (summary.n_targets,)))

