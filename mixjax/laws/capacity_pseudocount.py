r"""The capacity-noise law with a pseudo-count in its noise term, finite at zero domain weight."""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary
from .capacity_noise import CapacityNoiseForm, scaled_logit

__all__ = ["CapacityNoisePseudoCountLaw"]


class CapacityNoisePseudoCountLaw(CapacityNoiseForm, AbstractLaw):
    r"""Capacity competition plus data noise with a fitted pseudo-count h0_i > 0, per domain i:

        L_i(h, N, D) = c_i x_i*(h, N)^(-b_i) + A_i (D (h_i + h0_i))^(-a_i) + E_i

    with x*(h, N) the capacity allocation of :class:`mixjax.CapacityNoiseLaw` (total capacity N + (K-1) H, N in
    millions of parameters, D in billions of tokens, h0_i a fraction of the mixture).

    Reasoning: in the seed law (Dai & Zheng 2026, Eq. 3) the noise term A_i (D h_i)^(-a_i) is the loss of seeing
    D h_i tokens of domain i, which diverges at h_i = 0 although a model trained without domain i still has a
    finite loss there: it learns domain i through the other domains. The pseudo-count h0_i is that transfer, in
    units of mixture weight: the model behaves as if it had seen D (h_i + h0_i) tokens of domain i. The term is
    then finite at h_i = 0 (A_i (D h0_i)^(-a_i)), zero-weight cells are fitted like any other
    (``mask_zero_weight = False``), and for h_i >> h0_i it is the seed law's term; as h0 -> 0 the law tends to
    :class:`mixjax.CapacityNoiseLaw` wherever h_i > 0.

    Free parameters: the seed law's b, c, A, a, E per domain and H, plus h0 per domain: **6K + 1** (43 for
    K = 7, 103 for K = 17). b and a are bounded as in the seed law (b = 5 sigmoid, a = 3 sigmoid); c, A, E, H, h0 are
    stored as logs. A and E enter linearly once the others are fixed (``linear_fields``; variable projection is
    exact: the basis does not read them).
    """

    logit_b: jax.Array
    log_c: jax.Array
    log_A: jax.Array
    logit_a: jax.Array
    log_E: jax.Array
    log_H: jax.Array
    log_h0: jax.Array

    name: ClassVar[str] = "capacity_noise_h0"
    reference: ClassVar[str] = "Dai & Zheng, Explaining Data Mixing Scaling Laws, ICML 2026 (Eq. 3) with a fitted pseudo-count h0 in the noise term"
    per_domain: ClassVar[bool] = True
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    mask_zero_weight: ClassVar[bool] = False

    def __check_init__(self):
        K = self.logit_b.shape[-1:]
        for f in ("log_c", "log_A", "logit_a", "log_E", "log_h0"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"CapacityNoisePseudoCountLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, b, c, A, a, E, H, h0) -> CapacityNoisePseudoCountLaw:
        """Build from positive values: arrays of length K, a scalar H (millions of parameters), h0 (K,) > 0."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(scaled_logit(b, cls.b_max), log(c), log(A), scaled_logit(a, cls.a_max), log(E), log(H), log(h0))

    @classmethod
    def init(cls, key, summary: DataSummary) -> CapacityNoisePseudoCountLaw:
        keys = jax.random.split(key, 7)
        log_h0 = jax.random.uniform(keys[6], (summary.n_domains,), minval=math.log(1e-3), maxval=math.log(3e-2))
        return cls(**cls.random_fields(keys[:6], summary), log_h0=log_h0)

    def params(self):
        e = jnp.exp
        return {"b": self.b, "c": e(self.log_c), "A": e(self.log_A), "a": self.a, "E": e(self.log_E), "H": e(self.log_H),
                "h0": e(self.log_h0)}

    def noise_share(self, mixture):
        """h_i + h0_i: the data share of domain i, counting what the other domains teach about it."""
        return mixture + jnp.exp(self.log_h0)
