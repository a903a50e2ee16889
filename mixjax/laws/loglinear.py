"""The log-linear data mixing law (the static mixing law used by Aioli and Olmix)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary

__all__ = ["LogLinearLaw"]


class LogLinearLaw(AbstractLaw):
    r"""Log-linear mixing law at a fixed scale, per target v:

        log L_v(h) = c_v + sum_j t_vj h_j,   i.e.   L_v(h) = exp(c_v + sum_j t_vj h_j)

    (the log-linear static mixing law of Chen et al. 2024, "Aioli: A Unified Optimization Framework for Language
    Model Data Mixing", Sec. 3, written without the additive constant; also Olmix's regression form). c (V,) and
    t (V, K) are free. Free parameters: **V(K + 1)**; N and D are not used; targets are any V loss columns.

    Identifiability: since sum_j h_j = 1, (c_v + s, t_vj - s) gives the same law, so V K combinations are
    determined (for example t_vj + c_v, the log loss at the vertex h = e_j).
    """

    c: jax.Array
    t: jax.Array

    name: ClassVar[str] = "loglinear"
    reference: ClassVar[str] = "Chen et al., Aioli: A Unified Optimization Framework for Language Model Data Mixing, 2024 (log-linear static mixing law)"
    per_domain: ClassVar[bool] = False
    convex_in_mixture: ClassVar[bool] = True

    def __check_init__(self):
        if self.t.shape[-2] != self.c.shape[-1]:
            raise ValueError(f"LogLinearLaw: c {self.c.shape} and t {self.t.shape} disagree on V")

    @classmethod
    def from_params(cls, c, t) -> LogLinearLaw:
        """Build from c (V,) and t (V, K)."""
        f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        return cls(f(c), f(t))

    @classmethod
    def init(cls, key, summary: DataSummary) -> LogLinearLaw:
        V, K = summary.n_targets, summary.n_domains
        kc, kt = jax.random.split(key)
        c = jnp.log(jnp.asarray(summary.loss_mean)) + 0.05 * jax.random.normal(kc, (V,))
        return cls(c, 0.2 * jax.random.normal(kt, (V, K)))

    def params(self):
        return {"c": self.c, "t": self.t}

    def __call__(self, mixture, model_size, n_tokens):
        return jnp.exp(self.c + self.t @ mixture)
