"""The exponential data mixing law of Ye et al., "Data Mixing Laws" (ICLR 2025)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary

__all__ = ["ExponentialLaw"]


class ExponentialLaw(AbstractLaw):
    r"""Exponential mixing law at a fixed scale (Ye et al. 2025, Eq. 6), per target v:

        L_v(h) = c_v + k_v exp( sum_j t_vj h_j )

    c_v > 0 and k_v > 0 are stored as logs; t (V, K) is free. Free parameters: **V(K + 2)** (63 for V = K = 7, 323 for
    V = K = 17). The targets are any V loss columns (``per_domain = False``), so the validation domains may differ
    from the training domains (for example SlimPajama's ``openhermes`` column). N and D are not used.

    Identifiability: because sum_j h_j = 1, adding s to every t_vj and dividing k_v by e^s leaves the law unchanged,
    so only V(K + 1) combinations are determined by data (t_vj - t_v1 and log k_v + t_v1, and c_v).

    Variable projection: once k and t are fixed, c_v >= 0 enters linearly (``L_v = k_v exp(t_v . h) + c_v * 1``), so
    under the least-squares objectives c is solved exactly (``linear_fields``) and the solver moves k and t. k_v is
    linear too, but it is not projected: the solve returns k_v >= 0, and where exp(t_v . h) correlates negatively
    with the loss at the current t it returns k_v = 0, which makes the objective flat in t_v (the target is stuck
    at a constant). Kept as a free log, k_v > 0 lets the gradient turn t_v around instead.
    """

    log_c: jax.Array
    log_k: jax.Array
    t: jax.Array

    name: ClassVar[str] = "exponential"
    reference: ClassVar[str] = "Ye et al., Data Mixing Laws: Optimizing Data Mixtures by Predicting Language Modeling Performance, ICLR 2025"
    per_domain: ClassVar[bool] = False
    linear_fields: ClassVar[tuple[str, ...]] = ("log_c",)

    def __check_init__(self):
        V = self.log_c.shape[-1]
        if self.log_k.shape[-1] != V or self.t.shape[-2] != V:
            raise ValueError(f"ExponentialLaw: log_c {self.log_c.shape}, log_k {self.log_k.shape} and t {self.t.shape} disagree on V")

    @classmethod
    def from_params(cls, c, k, t) -> ExponentialLaw:
        """Build from c (V,) > 0, k (V,) > 0 and t (V, K)."""
        f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        return cls(jnp.log(f(c)), jnp.log(f(k)), f(t))

    @classmethod
    def init(cls, key, summary: DataSummary) -> ExponentialLaw:
        V, K = summary.n_targets, summary.n_domains
        kc, kk, kt = jax.random.split(key, 3)
        lo, mean = jnp.asarray(summary.loss_min), jnp.asarray(summary.loss_mean)
        c = lo * jax.random.uniform(kc, (V,), minval=0.3, maxval=0.9)
        k = (mean - c) * jax.random.uniform(kk, (V,), minval=0.5, maxval=1.5)
        return cls(jnp.log(c), jnp.log(k), 0.5 * jax.random.normal(kt, (V, K)))

    def params(self):
        return {"c": jnp.exp(self.log_c), "k": jnp.exp(self.log_k), "t": self.t}

    def __call__(self, mixture, model_size, n_tokens):
        return jnp.exp(self.log_c) + jnp.exp(self.log_k + self.t @ mixture)

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = k_v exp(t_v . h)`` and the column ``[1]`` of c."""
        base = jnp.exp(self.log_k + self.t @ mixture)
        return base, jnp.ones_like(base)[:, None]

    def with_linear(self, coef):
        tiny = jnp.finfo(coef.dtype).tiny
        return eqx.tree_at(lambda law: law.log_c, self, jnp.log(jnp.maximum(coef[:, 0], tiny)))  # c = 0 stored as the smallest positive
