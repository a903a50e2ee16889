"""The Chinchilla law (Hoffmann et al. 2022, approach 3) and its grid-of-starts fit (Besiroglu et al. 2024)."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._base import AbstractLaw, DataSummary

__all__ = ["ChinchillaLaw", "chinchilla_grid"]

from ..units import MODEL_SIZE_UNIT, TOKENS_UNIT


class ChinchillaLaw(AbstractLaw):
    r"""Chinchilla's parametric loss (Hoffmann et al. 2022, Eq. 2), per loss column (target) i, independently:

        L_i(N, D) = E_i + A_i / N^alpha_i + B_i / D^beta_i

    N in millions of parameters, D in billions of tokens; the mixture is not used, so tables without mixtures fit
    too. All five parameters are > 0 and stored as logs: **5V** free parameters for V loss columns (5 for the
    ``chinchilla`` dataset).
    Converting from raw counts: A = A_raw 1e6^(-alpha), B = B_raw 1e9^(-beta)
    (:meth:`from_raw_counts`). Fitted the Chinchilla way by :func:`mixjax.fit_chinchilla`.
    """

    log_E: jax.Array
    log_A: jax.Array
    log_alpha: jax.Array
    log_B: jax.Array
    log_beta: jax.Array

    name: ClassVar[str] = "chinchilla"
    reference: ClassVar[str] = "Hoffmann et al., Training Compute-Optimal Large Language Models, 2022 (Eq. 2); Besiroglu et al. 2024 (fit)"
    per_domain: ClassVar[bool] = False
    uses_model_size: ClassVar[bool] = True
    uses_tokens: ClassVar[bool] = True
    sane_ranges: ClassVar[dict[str, tuple[float, float]]] = {"alpha": (0.0, 3.0), "beta": (0.0, 3.0)}
    #: The mixture is not read: tables without mixtures (no weight_<domain> columns) fit too.
    uses_mixture: ClassVar[bool] = False

    def __check_init__(self):
        K = self.log_E.shape[-1:]
        for f in ("log_A", "log_alpha", "log_B", "log_beta"):
            if getattr(self, f).shape[-1:] != K:
                raise ValueError(f"ChinchillaLaw.{f} has shape {getattr(self, f).shape}, expected (..., {K[0]})")

    @classmethod
    def from_params(cls, E, A, alpha, B, beta) -> ChinchillaLaw:
        """Build from positive values in the laws' units (arrays of length K, or scalars for K = 1)."""
        f = lambda v: jnp.log(jnp.atleast_1d(jnp.asarray(v, dtype=jnp.result_type(float))))  # noqa: E731
        return cls(f(E), f(A), f(alpha), f(B), f(beta))

    @classmethod
    def from_raw_counts(cls, E, A, alpha, B, beta) -> ChinchillaLaw:
        """Build from estimates quoted for N and D in raw counts (as in Hoffmann et al. and Besiroglu et al.)."""
        A = np.asarray(A, float) * MODEL_SIZE_UNIT ** (-np.asarray(alpha, float))
        B = np.asarray(B, float) * TOKENS_UNIT ** (-np.asarray(beta, float))
        return cls.from_params(E, A, alpha, B, beta)

    def raw_count_params(self) -> dict[str, jax.Array]:
        """Parameters for N and D in raw counts (A_raw = A 1e6^alpha, B_raw = B 1e9^beta)."""
        p = self.params()
        return {**p, "A": p["A"] * MODEL_SIZE_UNIT ** p["alpha"], "B": p["B"] * TOKENS_UNIT ** p["beta"]}

    @classmethod
    def init(cls, key, summary: DataSummary) -> ChinchillaLaw:
        K = summary.n_targets
        ks = jax.random.split(key, 5)
        u = lambda k, lo, hi: jax.random.uniform(k, (K,), minval=lo, maxval=hi)  # noqa: E731
        lo = jnp.asarray(summary.loss_min)
        return cls(jnp.log(lo * u(ks[0], 0.3, 0.9)), jnp.log(u(ks[1], 0.5, 10.0)), jnp.log(u(ks[2], 0.1, 0.7)),
                   jnp.log(u(ks[3], 0.5, 5.0)), jnp.log(u(ks[4], 0.1, 0.7)))

    def params(self):
        e = jnp.exp
        return {"E": e(self.log_E), "A": e(self.log_A), "alpha": e(self.log_alpha), "B": e(self.log_B), "beta": e(self.log_beta)}

    def __call__(self, mixture, model_size, n_tokens):
        size = jnp.exp(self.log_A - jnp.exp(self.log_alpha) * jnp.log(model_size))
        data = jnp.exp(self.log_B - jnp.exp(self.log_beta) * jnp.log(n_tokens))
        return jnp.exp(self.log_E) + size + data


def chinchilla_grid(
    n_domains: int = 1,
    *,
    alphas=(0.1, 0.5, 1.0, 1.5, 2.0),
    betas=(0.1, 0.5, 1.0, 1.5, 2.0),
    log_E=(-1.0, -0.5, 0.0, 0.5, 1.0),
    log_A_raw=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    log_B_raw=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    dtype="float64",
) -> ChinchillaLaw:
    """The grid of starting points of Hoffmann et al. / Besiroglu et al. as one batched :class:`ChinchillaLaw`.

    The grid is given, as in those papers, for N and D in raw counts: log A_raw, log B_raw, log E, alpha, beta
    (every combination; 4500 with the defaults; Besiroglu et al. start alpha and beta at 0, which a log-stored
    exponent cannot represent, so the smallest default is 0.1). It is converted to the laws' units and the same
    start is used for every one of ``n_domains`` domains. Leading axis: grid point."""
    rows = np.array(list(itertools.product(log_E, log_A_raw, alphas, log_B_raw, betas)), dtype=np.float64)
    if rows.size == 0 or (rows[:, 2] <= 0).any() or (rows[:, 4] <= 0).any():
        raise ValueError("chinchilla_grid: every axis needs at least one value, and alphas, betas must be > 0")
    e, a, al, b, be = rows.T
    a = a - al * math.log(MODEL_SIZE_UNIT)
    b = b - be * math.log(TOKENS_UNIT)
    col = lambda v: jnp.asarray(np.repeat(v[:, None], n_domains, axis=1), jnp.dtype(dtype))  # noqa: E731
    return ChinchillaLaw(col(e), col(a), col(np.log(al)), col(b), col(np.log(be)))
