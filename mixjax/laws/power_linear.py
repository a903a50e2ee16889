"""A linear law in power features of the mixture."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary

__all__ = ["PowerLinearLaw"]


class PowerLinearLaw(AbstractLaw):
    r"""Linear regression on power features of the mixture, per target v:

        L_v(h) = b_v + sum_j W_vj h_j^a

    with one shared exponent a > 0 (stored as a log; 0^a = 0), intercepts b (V,) and weights W (V, K) free (of either
    sign). Free parameters: **V(K + 1) + 1**. N and D are not used; targets are any V loss columns. At a = 1 the
    law is linear and, since sum_j h_j = 1, b_v and a common shift of W_v. trade off (not identifiable there); for
    a != 1 all parameters are determined by generic data. Once a is fixed the law is linear in (b, W).
    """

    b: jax.Array
    W: jax.Array
    log_a: jax.Array

    name: ClassVar[str] = "power_linear"
    reference: ClassVar[str] = "power-feature linear mixing law (linear regression on h_j^a, as in regression-based mixing baselines)"
    per_domain: ClassVar[bool] = False
    #: h^a with a above 10 (or below 0.01) makes the features indicators of the largest weight (of h > 0).
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"a": (0.01, 10.0)}

    def __check_init__(self):
        if self.W.shape[-2] != self.b.shape[-1]:
            raise ValueError(f"PowerLinearLaw: b {self.b.shape} and W {self.W.shape} disagree on V")

    @classmethod
    def from_params(cls, b, W, a) -> PowerLinearLaw:
        """Build from b (V,), W (V, K) and a scalar exponent a > 0."""
        f = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        return cls(f(b), f(W), jnp.log(f(a)))

    @classmethod
    def init(cls, key, summary: DataSummary) -> PowerLinearLaw:
        V, K = summary.n_targets, summary.n_domains
        kb, kW, ka = jax.random.split(key, 3)
        b = jnp.asarray(summary.loss_mean) * jax.random.uniform(kb, (V,), minval=0.9, maxval=1.1)
        spread = jnp.asarray(summary.loss_max - summary.loss_min)[:, None]
        return cls(b, -spread * jax.random.uniform(kW, (V, K), minval=-0.2, maxval=1.0),
                   jnp.log(jax.random.uniform(ka, (), minval=0.2, maxval=0.8)))

    def params(self):
        return {"b": self.b, "W": self.W, "a": jnp.exp(self.log_a)}

    def __call__(self, mixture, model_size, n_tokens):
        pos = mixture > 0
        feats = jnp.where(pos, jnp.exp(jnp.exp(self.log_a) * jnp.log(jnp.where(pos, mixture, 1.0))), 0.0)
        return self.b + self.W @ feats
