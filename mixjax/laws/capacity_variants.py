"""Variants of the capacity-competition law of Dai & Zheng, "Explaining Data Mixing Scaling Laws" (ICML 2026).

Both reuse the capacity allocation of :func:`mixjax.laws.capacity_allocation`:

    x*(h, N) = argmin_x sum_i h_i c_i x_i^(-b_i)  s.t.  sum_i x_i = N + (K-1) H,  x_i >= H,

with N in millions of parameters (the total capacity is fixed by the model size; H, the shared head, is one fitted
scalar in the units of N, as in the seed paper's 7-domain code).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from ._allocation import CapacityAllocationMixin
from ._base import AbstractLaw, DataSummary

__all__ = ["CapacityOnlyLaw", "CapacityRunTokensLaw"]


def _uniform(key, lo, hi, shape):
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def _capacity_init(key, summary: DataSummary):
    K = summary.n_domains
    kb, kc, kE, kH = jax.random.split(key, 4)
    loss_min = jnp.asarray(summary.loss_min) if summary.n_targets == K else jnp.full(K, summary.loss_min.min())
    n_ref = summary.model_size_range[0] if math.isfinite(summary.model_size_range[0]) else 100.0
    return dict(
        log_b=jnp.log(_uniform(kb, 0.1, 0.8, (K,))),
        log_c=jnp.log(_uniform(kc, 1.0, 8.0, (K,))),
        log_E=jnp.log(loss_min * _uniform(kE, 0.2, 0.8, (K,))),
        log_H=jnp.log(n_ref / (10.0 * K) * _uniform(kH, 0.3, 1.5, ())),
    )


class _CapacityTerm(CapacityAllocationMixin):
    """What both variants share (a mixin for laws with the fields ``log_b``, ``log_c``, ``log_H`` and a method
    ``_predict_given(mixture, log_x, model_size, n_tokens)``, the prediction given the log allocation): the
    exponents b, the capacity term ``c_i x_i*^-b_i``, and through :class:`CapacityAllocationMixin` the allocation
    and the prediction of one run or of many runs at once."""

    @property
    def b(self):
        """Capacity exponents b_i > 0."""
        return jnp.exp(self.log_b)

    def capacity_term(self, mixture, model_size):
        """``c_i x_i*(h, N)^(-b_i)`` per domain."""
        return self._capacity_given(self.log_allocation(mixture, model_size))

    def _capacity_given(self, log_x):
        return jnp.exp(self.log_c - self.b * log_x)


class CapacityOnlyLaw(_CapacityTerm, AbstractLaw):
    r"""Capacity competition alone (Dai & Zheng 2026, Eq. 1, the extended quantization model), per domain i:

        L_i(h, N) = c_i x_i*(h, N)^(-b_i) + E_i

    with x*(h, N) the capacity allocation of the module docstring (total capacity N + (K-1) H, N in millions of
    parameters). Free parameters: b, c, E per domain (> 0, stored as logs) and one shared head H > 0:
    **3K + 1** (22 for K = 7, 52 for K = 17). The seed paper's count 3K fixes H (its 17-domain code uses a fixed
    floor 0.3 and capacity 200); here H is fitted, which also makes the law usable across model sizes.

    Zero weights are harmless: a domain with h_i = 0 sits at the floor x_i = H, so the prediction stays finite and
    fits keep those cells by default (``mask_zero_weight = False``).
    """

    log_b: jax.Array
    log_c: jax.Array
    log_E: jax.Array
    log_H: jax.Array

    name: ClassVar[str] = "capacity_only"
    reference: ClassVar[str] = "Dai & Zheng, Explaining Data Mixing Scaling Laws, ICML 2026 (Eq. 1, capacity term only)"
    per_domain: ClassVar[bool] = True
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = False
    mask_zero_weight: ClassVar[bool] = False

    def __check_init__(self):
        K = self.log_b.shape[-1:]
        for f in ("log_c", "log_E"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"CapacityOnlyLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, b, c, E, H) -> CapacityOnlyLaw:
        """Build from positive values (arrays of length K; H a scalar in millions of parameters)."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(log(b), log(c), log(E), log(H))

    @classmethod
    def init(cls, key, summary: DataSummary) -> CapacityOnlyLaw:
        return cls(**_capacity_init(key, summary))

    def params(self):
        e = jnp.exp
        return {"b": e(self.log_b), "c": e(self.log_c), "E": e(self.log_E), "H": e(self.log_H)}

    def _predict_given(self, mixture, log_x, model_size, n_tokens):
        return self._capacity_given(log_x) + jnp.exp(self.log_E)


class CapacityRunTokensLaw(_CapacityTerm, AbstractLaw):
    r"""Capacity competition plus a noise term in the run's token count, per domain i:

        L_i(h, N, D) = c_i x_i*(h, N)^(-b_i) + A_i D^(-a_i) + E_i

    D is the run's total number of training tokens (billions), the same for every domain of a run, instead of the
    domain's own token count D h_i of Eq. 3 (:class:`mixjax.CapacityNoiseLaw`). This is the reading of "the noise
    term uses the per-run token count" taken here: the seed code passes one token count per run (``N_data`` /
    ``D``) to the noise term; this variant keeps it there and drops the mixture from the noise term, which isolates
    what the h_i-dependence of the noise term ("noise reduction") adds. It also never diverges at h_i = 0.

    Free parameters: b, c, A, a, E per domain (> 0, stored as logs) and a shared head H: **5K + 1**. At a single
    token count A_i D^(-a_i) is a constant that merges with E_i, so only 3K + 1 combinations are identifiable there
    (fit it across token counts to separate them).
    """

    log_b: jax.Array
    log_c: jax.Array
    log_A: jax.Array
    log_a: jax.Array
    log_E: jax.Array
    log_H: jax.Array

    name: ClassVar[str] = "capacity_noise_run_tokens"
    reference: ClassVar[str] = "Dai & Zheng, Explaining Data Mixing Scaling Laws, ICML 2026 (Eq. 3 with the run's token count D in the noise term)"
    per_domain: ClassVar[bool] = True
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    mask_zero_weight: ClassVar[bool] = False

    def __check_init__(self):
        K = self.log_b.shape[-1:]
        for f in ("log_c", "log_A", "log_a", "log_E"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"CapacityRunTokensLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, b, c, A, a, E, H) -> CapacityRunTokensLaw:
        """Build from positive values (arrays of length K; H a scalar in millions of parameters)."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(log(b), log(c), log(A), log(a), log(E), log(H))

    @classmethod
    def init(cls, key, summary: DataSummary) -> CapacityRunTokensLaw:
        k0, kA, ka = jax.random.split(key, 3)
        K = summary.n_domains
        p = _capacity_init(k0, summary)
        return cls(p["log_b"], p["log_c"], jnp.log(_uniform(kA, 0.1, 2.0, (K,))), jnp.log(_uniform(ka, 0.1, 0.8, (K,))), p["log_E"], p["log_H"])

    def params(self):
        e = jnp.exp
        return {"b": e(self.log_b), "c": e(self.log_c), "A": e(self.log_A), "a": e(self.log_a), "E": e(self.log_E), "H": e(self.log_H)}

    def _predict_given(self, mixture, log_x, model_size, n_tokens):
        A, a, E = (jnp.exp(v) for v in (self.log_A, self.log_a, self.log_E))
        return self._capacity_given(log_x) + A * jnp.exp(-a * jnp.log(n_tokens)) + E
