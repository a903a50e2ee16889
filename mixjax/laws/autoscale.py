"""AutoScale's data-composition law (Kang et al. 2024)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary

__all__ = ["AutoScaleLaw"]


class AutoScaleLaw(AbstractLaw):
    r"""AutoScale's loss model (Kang et al. 2024, "AutoScale: Scale-Aware Data Mixing for Pre-Training LLMs",
    Sec. 3), per target v:

        L_v(h, D) = L0_v + sum_i ( N0_vi + D h_i )^(-gamma_vi)

    In AutoScale N is the total amount of training data and p_i the weight of domain i, so N p_i is the amount of
    data from domain i and N0_i an "equivalent data" offset (what the other domains already teach about the
    target). Here N is the run's token count D, in **billions** of tokens, and p = h. The form has no coefficient
    per term, so the unit of D fixes the scale of N0 (a unit change is absorbed by N0 and a multiplicative factor
    that the form cannot represent; that is AutoScale's form, kept as is). Free parameters: L0_v, N0_vi > 0,
    gamma_vi > 0, all stored as logs: **V(2K + 1)**. Targets are any V loss columns (per_domain False). Finite at
    h_i = 0 (the term becomes N0_vi^(-gamma_vi)).
    """

    log_L0: jax.Array
    log_N0: jax.Array
    log_gamma: jax.Array

    name: ClassVar[str] = "autoscale"
    reference: ClassVar[str] = "Kang et al., AutoScale: Scale-Aware Data Mixing for Pre-Training LLMs, COLM 2025 (arXiv 2407.20177)"
    per_domain: ClassVar[bool] = False
    uses_tokens: ClassVar[bool] = True
    #: N0 in billions of tokens: beyond 1e6 (10^15 tokens) the offset is far beyond any data; gamma an exponent.
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"N0": (0.0, 1e6), "gamma": (0.0, 10.0)}

    def __check_init__(self):
        if self.log_N0.shape != self.log_gamma.shape or self.log_N0.shape[-2] != self.log_L0.shape[-1]:
            raise ValueError(f"AutoScaleLaw: L0 {self.log_L0.shape}, N0 {self.log_N0.shape}, gamma {self.log_gamma.shape} disagree")

    @classmethod
    def from_params(cls, L0, N0, gamma) -> AutoScaleLaw:
        """Build from L0 (V,), N0 (V, K) (billions of tokens) and gamma (V, K), all > 0."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(log(L0), log(N0), log(gamma))

    @classmethod
    def init(cls, key, summary: DataSummary) -> AutoScaleLaw:
        """L0 below the smallest loss; gamma so that each of the K terms starts near (mean - L0) / K."""
        V, K = summary.n_targets, summary.n_domains
        kL, kN, kg = jax.random.split(key, 3)
        L0 = jnp.asarray(summary.loss_min) * jax.random.uniform(kL, (V,), minval=0.4, maxval=0.8)
        share = jnp.maximum(jnp.asarray(summary.loss_mean) - L0, 1e-3)[:, None] / K
        N0 = jax.random.uniform(kN, (V, K), minval=0.5, maxval=5.0)
        d_ref = summary.n_tokens_ref if summary.n_tokens_ref == summary.n_tokens_ref else 1.0
        x = N0 + d_ref / K
        gamma = jnp.clip(-jnp.log(share) / jnp.log(x), 0.02, 3.0) * jax.random.uniform(kg, (V, K), minval=0.8, maxval=1.2)
        return cls(jnp.log(L0), jnp.log(N0), jnp.log(gamma))

    def params(self):
        return {"L0": jnp.exp(self.log_L0), "N0": jnp.exp(self.log_N0), "gamma": jnp.exp(self.log_gamma)}

    def __call__(self, mixture, model_size, n_tokens):
        x = jnp.exp(self.log_N0) + n_tokens * mixture[..., None, :]
        return jnp.exp(self.log_L0) + jnp.sum(jnp.exp(-jnp.exp(self.log_gamma) * jnp.log(x)), axis=-1)
