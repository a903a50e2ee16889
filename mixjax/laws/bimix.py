"""BiMix, the bivariate data mixing law of Ge et al. (2024), with the data quantity measured in tokens."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractLaw, DataSummary

__all__ = ["BiMixLaw"]


class BiMixLaw(AbstractLaw):
    r"""BiMix (Ge et al. 2024, "BiMix: A Bivariate Data Mixing Law for Language Model Pretraining", Eq. 3), per
    domain i:

        L_i(h_i, D) = A_i / max(h_i, h_floor)^alpha_i * ( B_i / D^beta_i + C_i )

    a power law in the domain's own proportion h_i times a power law (plus constant) in the data quantity. The
    original measures the quantity in training steps s; here it is the run's tokens D in billions (steps times a
    fixed batch size, so the form is unchanged and only B_i absorbs the unit). Free parameters: A, alpha, B, beta,
    C per domain, all > 0 and stored as logs: **5K**.

    Identifiability: only the products A_i B_i and A_i C_i enter, so 4K combinations are determined; at a single
    token count the bracket is a constant and only 2K (A_i (B_i D^-beta_i + C_i) and alpha_i) are (the count the
    seed paper quotes for BiMix). The law diverges at h_i = 0: predictions use ``max(h_i, h_floor)``
    (``h_floor = 1e-4``) and fits exclude those cells by default (``mask_zero_weight``).

    Variable projection: with A, alpha, beta fixed, B_i and C_i >= 0 enter linearly,

        L_i = B_i * A_i h_i^-alpha_i D^-beta_i + C_i * A_i h_i^-alpha_i,

    so under the least-squares objectives they are solved exactly (``linear_fields``) and the solver moves alpha,
    beta and A (whose scale B and C absorb: the projected objective is flat in A).
    """

    log_A: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array
    log_C: jax.Array
    h_floor: float = eqx.field(static=True, default=1e-4)

    name: ClassVar[str] = "bimix"
    reference: ClassVar[str] = "Ge et al., BiMix: A Bivariate Data Mixing Law for Language Model Pretraining, arXiv 2405.14908"
    per_domain: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    mask_zero_weight: ClassVar[bool] = True
    #: A_i / h_i^alpha_i diverges as h_i -> 0; below h_floor = 1e-4 the prediction is the floor's, not the law's.
    min_weight: ClassVar[float] = 1e-4
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"alpha": (0.0, 5.0), "beta": (0.0, 5.0)}
    linear_fields: ClassVar[tuple[str, ...]] = ("log_B", "log_C")

    def __check_init__(self):
        K = self.log_A.shape[-1:]
        for f in ("log_alpha", "log_B", "log_beta", "log_C"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"BiMixLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, A, alpha, B, beta, C, h_floor: float = 1e-4) -> BiMixLaw:
        """Build from positive arrays of length K."""
        log = lambda v: jnp.log(jnp.asarray(v, dtype=jnp.result_type(float)))  # noqa: E731
        return cls(log(A), log(alpha), log(B), log(beta), log(C), h_floor)

    @classmethod
    def init(cls, key, summary: DataSummary) -> BiMixLaw:
        K = summary.n_domains
        ks = jax.random.split(key, 5)
        u = lambda k, lo, hi: jax.random.uniform(k, (K,), minval=lo, maxval=hi)  # noqa: E731
        mean = jnp.asarray(summary.loss_mean) if summary.n_targets == K else jnp.full(K, summary.loss_mean.mean())
        return cls(
            log_A=jnp.log(mean * u(ks[0], 0.3, 0.9)),
            log_alpha=jnp.log(u(ks[1], 0.01, 0.2)),
            log_B=jnp.log(u(ks[2], 0.05, 1.0)),
            log_beta=jnp.log(u(ks[3], 0.1, 0.8)),
            log_C=jnp.log(u(ks[4], 0.5, 1.5)),
        )

    def params(self):
        e = jnp.exp
        return {"A": e(self.log_A), "alpha": e(self.log_alpha), "B": e(self.log_B), "beta": e(self.log_beta), "C": e(self.log_C)}

    def __call__(self, mixture, model_size, n_tokens):
        log_h = jnp.log(jnp.maximum(mixture, self.h_floor))
        bracket = jnp.exp(self.log_B - jnp.exp(self.log_beta) * jnp.log(n_tokens)) + jnp.exp(self.log_C)
        return jnp.exp(self.log_A - jnp.exp(self.log_alpha) * log_h) * bracket

    def linear_basis(self, mixture, model_size, n_tokens):
        """``base = 0`` and the columns ``[A_i h_i^-alpha_i D^-beta_i, A_i h_i^-alpha_i]`` of B and C."""
        share = jnp.exp(self.log_A - jnp.exp(self.log_alpha) * jnp.log(jnp.maximum(mixture, self.h_floor)))
        data = jnp.exp(-jnp.exp(self.log_beta) * jnp.log(n_tokens))
        return jnp.zeros_like(share), jnp.stack([share * data, share], axis=-1)

    def with_linear(self, coef):
        tiny = jnp.finfo(coef.dtype).tiny
        log = lambda v: jnp.log(jnp.maximum(v, tiny))  # noqa: E731 (a coefficient at 0 is stored as the smallest positive)
        return eqx.tree_at(lambda law: (law.log_B, law.log_C), self, (log(coef[:, 0]), log(coef[:, 1])))
