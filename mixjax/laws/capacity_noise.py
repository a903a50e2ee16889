"""The capacity-competition + noise law of Dai & Zheng, "Explaining Data Mixing Scaling Laws" (ICML 2026)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._allocation import CapacityAllocationMixin
from ._base import AbstractLaw, DataSummary

__all__ = ["CapacityNoiseLaw"]


def scaled_logit(v, upper):
    """Inverse of ``upper * sigmoid(z)``."""
    v = jnp.asarray(v, dtype=jnp.result_type(float)) / upper
    return jnp.log(v) - jnp.log1p(-v)


class CapacityNoiseForm(CapacityAllocationMixin):
    r"""What the capacity-noise laws share (a mixin for :class:`AbstractLaw` subclasses with the fields ``logit_b``,
    ``log_c``, ``log_A``, ``logit_a``, ``log_E``, ``log_H``)::

        L_i(h, N, D) = c_i x_i*(h, N)^(-b_i) + A_i (D g_i(h))^(-a_i) + E_i

    with the capacity allocation x* and the effective data share ``g(h) = noise_share(h)`` of the law (the seed law:
    max(h_i, h_floor); the pseudo-count law: h_i + h0_i). Exponents are bounded logits, A and E enter linearly
    (variable projection)."""

    b_max: ClassVar[float] = 5.0
    a_max: ClassVar[float] = 3.0
    #: Exponents within 1 % of the bound of their parametrisation mean the fit ran along a flat direction.
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"b": (0.0, 0.99 * 5.0), "a": (0.0, 0.99 * 3.0)}
    linear_fields: ClassVar[tuple[str, ...]] = ("log_A", "log_E")

    @classmethod
    def random_fields(cls, keys, summary: DataSummary) -> dict:
        """Random starting values of the six shared fields, one key each: exponents uniform in (0.1, 0.8), c in
        (1, 8), A in (0.1, 2), E a fraction 0.2-0.8 of the smallest loss, H about a tenth of the smallest N per domain."""
        K = summary.n_domains
        kb, kc, kA, ka, kE, kH = keys
        u = lambda k, lo, hi, shape=(K,): jax.random.uniform(k, shape, minval=lo, maxval=hi)  # noqa: E731
        loss_min = jnp.asarray(summary.loss_min) if summary.n_targets == K else jnp.full(K, summary.loss_min.min())
        n_ref = summary.model_size_range[0] if math.isfinite(summary.model_size_range[0]) else 100.0
        return dict(
            logit_b=scaled_logit(u(kb, 0.1, 0.8), cls.b_max),
            log_c=jnp.log(u(kc, 1.0, 8.0)),
            log_A=jnp.log(u(kA, 0.1, 2.0)),
            logit_a=scaled_logit(u(ka, 0.1, 0.8), cls.a_max),
            log_E=jnp.log(loss_min * u(kE, 0.2, 0.8)),
            log_H=jnp.log(n_ref / (10.0 * K) * u(kH, 0.3, 1.5, ())),
        )

    @property
    def b(self):
        """Capacity exponents b_i in (0, b_max)."""
        return self.b_max * jax.nn.sigmoid(self.logit_b)

    @property
    def a(self):
        """Data-noise exponents a_i in (0, a_max)."""
        return self.a_max * jax.nn.sigmoid(self.logit_a)

    def noise_share(self, mixture):  # pragma: no cover - interface
        raise NotImplementedError

    def _basis_given(self, mixture, log_x, n_tokens):
        capacity = jnp.exp(self.log_c - self.b * log_x)
        noise = jnp.exp(-self.a * jnp.log(n_tokens * self.noise_share(mixture)))
        return capacity, jnp.stack([noise, jnp.ones_like(noise)], axis=-1)

    def _predict_given(self, mixture, log_x, model_size, n_tokens):
        base, phi = self._basis_given(mixture, log_x, n_tokens)
        return base + phi[..., 0] * jnp.exp(self.log_A) + jnp.exp(self.log_E)

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = c x*^-b`` and the columns ``[(D g(h))^-a, 1]`` of the coefficients A and E."""
        return self._basis_given(mixture, self.log_allocation(mixture, model_size), n_tokens)

    def linear_basis_rows(self, mixtures, model_sizes, n_tokens):
        return jax.vmap(self._basis_given)(mixtures, self.log_allocation_rows(mixtures, model_sizes), n_tokens)

    def with_linear(self, coef):
        tiny = jnp.finfo(coef.dtype).tiny
        log = lambda v: jnp.log(jnp.maximum(v, tiny))  # noqa: E731 (a coefficient at 0 is stored as the smallest positive)
        return eqx.tree_at(lambda law: (law.log_A, law.log_E), self, (log(coef[:, 0]), log(coef[:, 1])))


class CapacityNoiseLaw(CapacityNoiseForm, AbstractLaw):
    r"""Capacity competition plus data noise, per domain i (Dai & Zheng 2026, Eq. 3, with a fitted head H):

        L_i(h, N, D) = c_i x_i*(h, N)^(-b_i) + A_i (D max(h_i, h_floor))^(-a_i) + E_i

    where x*(h, N) is the capacity allocation (:func:`mixjax.laws.capacity_allocation`)

        x* = argmin_x sum_i h_i c_i x_i^(-b_i)  s.t.  sum_i x_i = N + (K-1) H,  x_i >= H.

    Units: N in millions of parameters, D in billions of tokens (the seed paper's code); H is in the units of N.
    Free parameters: b, c, A, a, E per domain and one shared H: **5K + 1** (36 for K = 7, 86 for K = 17).
    c, A, E, H > 0 are stored as logs; the exponents are stored as logits, ``b = b_max sigmoid(logit_b)`` with
    b_max = 5 and ``a = a_max sigmoid(logit_a)`` with a_max = 3. Bounding the exponents (the seed code bounds them
    too) removes a flat direction at a single scale (b -> infinity switches the capacity term off), along which
    unbounded fits drift for thousands of steps; fitted exponents on the bundled data stay well inside.

    Zero weights: a domain with h_i = 0 gets the floor capacity H in the first term; its noise term diverges in
    the law, so the prediction uses ``max(h_i, h_floor)`` (``h_floor = 1e-4``, as in the seed code's mixture
    search) and fits by default exclude loss cells whose own domain weight is 0 (``mask_zero_weight``).
    """

    logit_b: jax.Array
    log_c: jax.Array
    log_A: jax.Array
    logit_a: jax.Array
    log_E: jax.Array
    log_H: jax.Array
    h_floor: float = eqx.field(static=True, default=1e-4)

    name: ClassVar[str] = "capacity_noise"
    reference: ClassVar[str] = "Dai & Zheng, Explaining Data Mixing Scaling Laws, ICML 2026 (Eq. 3)"
    per_domain: ClassVar[bool] = True
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    mask_zero_weight: ClassVar[bool] = True
    #: The noise term A_i (D h_i)^-a_i diverges as h_i -> 0; below h_floor = 1e-4 the prediction is the floor's,
    #: not the law's (the seed code's mixture search keeps every weight >= 1e-4 too).
    min_weight: ClassVar[float] = 1e-4

    def __check_init__(self):
        K = self.logit_b.shape[-1:]
        for f in ("log_c", "log_A", "logit_a", "log_E"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"CapacityNoiseLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, b, c, A, a, E, H, h_floor: float = 1e-4) -> CapacityNoiseLaw:
        """Build from positive parameter values (arrays of length K, and a scalar H in millions of parameters)."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(scaled_logit(b, cls.b_max), log(c), log(A), scaled_logit(a, cls.a_max), log(E), log(H), h_floor)

    @classmethod
    def init(cls, key, summary: DataSummary) -> CapacityNoiseLaw:
        return cls(**cls.random_fields(jax.random.split(key, 6), summary))

    def params(self):
        e = jnp.exp
        return {"b": self.b, "c": e(self.log_c), "A": e(self.log_A), "a": self.a, "E": e(self.log_E), "H": e(self.log_H)}

    def noise_share(self, mixture):
        """max(h_i, h_floor): the law diverges at h_i = 0, floored there (cells at 0 are masked in fits)."""
        return jnp.maximum(mixture, self.h_floor)

