"""A fitting problem: the arrays a law is fitted to and the objective, built once and reused by every fit,
bootstrap resample, jackknife and cross-validation fold (a resample is a vector of row weights over the same
problem).

Objective over measured cells (mask m, row weights w)::

    J(theta) = sum_{r,j} w_r m_rj rho(pred_rj(theta), y_rj) / sum_{r,j} w_r m_rj

with ``rho`` given by the objective (:mod:`mixjax.objectives`: ``mse`` (pred - y)^2, ``relative``
((pred - y) / y)^2, ``huber_log`` Huber_delta(log pred - log y), or a user's :class:`AbstractObjective`). J is
written as a sum of squared residuals ``J = sum_k r_k^2``, so least-squares solvers apply to every objective.

Variable projection (Golub & Pereyra 1973): a law that declares ``linear_fields`` predicts
``pred_rj = base_rj(theta) + sum_l phi_rjl(theta) beta_jl`` with coefficients beta >= 0 that enter linearly once
the other parameters theta are fixed. For the least-squares objectives (``mse``, ``relative``) beta is then solved
exactly inside the objective, per target, as a small non-negative least-squares problem (every active set of the
L coefficients is tried, and the best feasible one kept: exact for the L <= 4 of the bundled laws), and the
optimizer only sees theta. Gradients are exact: the closed form is differentiated for the chosen active set.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import DataError, MixtureData
from .laws import AbstractLaw, DataSummary, get_law
from .laws._base import predict_rows
from .objectives import OBJECTIVES as _OBJECTIVE_CLASSES
from .objectives import AbstractObjective, objective_from

__all__ = ["FitArrays", "Problem", "prepare", "summarize", "law_class", "OBJECTIVES"]

#: Names of the bundled objectives (:mod:`mixjax.objectives`).
OBJECTIVES = tuple(_OBJECTIVE_CLASSES)


class FitArrays(NamedTuple):
    """Device arrays a law is fitted to: mixtures (n, K), model size (n,) in M params, tokens (n,) in B tokens,
    losses (n, V) with missing cells filled by 1, and the (n, V) mask of cells that count."""

    h: jax.Array
    N: jax.Array
    D: jax.Array
    y: jax.Array
    mask: jax.Array


def law_class(law) -> type[AbstractLaw]:
    """The law class of a name, a class or an instance."""
    if isinstance(law, str):
        return get_law(law)
    if isinstance(law, type) and issubclass(law, AbstractLaw):
        return law
    if isinstance(law, AbstractLaw):
        return type(law)
    raise TypeError(f"law must be a law name, an AbstractLaw subclass or instance, got {law!r}")


def prepare(law, data: MixtureData, *, mask_zero_weight: bool | None = None, dtype: str = "float64") -> tuple[FitArrays, np.ndarray]:
    """The arrays a law is fitted to, and the (n, V) observed losses (NaN where not counted).

    Per-domain laws use the loss columns that match the training domains (in domain order); other laws use every
    loss column. Cells whose own domain weight is 0 are excluded when ``mask_zero_weight`` (default: the law's
    preference). Rows with unknown model size or tokens are refused for laws that use them."""
    cls = law_class(law)
    if not isinstance(data, MixtureData):
        raise TypeError(f"data must be a MixtureData (see mixjax.load_csv / from_arrays), got {type(data).__name__}")
    if data.n_domains == 0 and cls.uses_mixture:
        raise DataError(
            f"law {cls.name} predicts losses from the mixture, but {data.name!r} has no weight_<domain> columns (a "
            "table without mixtures); choose a law that does not use the mixture (chinchilla, a function law)"
        )
    if cls.per_domain:
        y, mask = data.domain_losses()
        if not mask.any():
            raise DataError(
                f"{cls.name} predicts one loss per training domain, but no loss column of {data.name!r} matches a "
                f"domain (domains {list(data.domains)}, loss columns {list(data.targets)})"
            )
    else:
        y, mask = np.array(data.losses), data.mask
    if mask_zero_weight is None:
        mask_zero_weight = cls.mask_zero_weight
    if mask_zero_weight and cls.per_domain:
        mask = mask & (data.mixtures > 0)
    for flag, values, label in ((cls.uses_model_size, data.model_size, "model_size"), (cls.uses_tokens, data.n_tokens, "n_tokens")):
        bad = np.flatnonzero(~np.isfinite(values))
        if flag and bad.size:
            raise DataError(f"law {cls.name} needs {label}, which is missing in {bad.size} row(s) of {data.name!r} (first: row {bad[0]})")
    dt = jnp.dtype(dtype)
    fill = lambda v: np.where(np.isfinite(v), v, 1.0)  # noqa: E731 (unused cells; never counted)
    arrays = FitArrays(
        h=jnp.asarray(data.mixtures, dt),
        N=jnp.asarray(fill(data.model_size_m), dt),
        D=jnp.asarray(fill(data.n_tokens_b), dt),
        y=jnp.asarray(np.where(mask, y, 1.0), dt),
        mask=jnp.asarray(mask),
    )
    return arrays, np.where(mask, y, np.nan)


def summarize(arrays: FitArrays, data: MixtureData | None = None) -> DataSummary:
    """The :class:`DataSummary` of prepared arrays (used to draw starting points)."""
    h = np.asarray(arrays.h)
    mask = np.asarray(arrays.mask)
    N = np.asarray(arrays.N) if data is None else data.model_size_m
    D = np.asarray(arrays.D) if data is None else data.n_tokens_b
    return DataSummary.from_arrays(h, np.asarray(arrays.y), mask, N, D)


def nnls_small(X, t):
    """argmin_{beta >= 0} |X beta - t|^2 for one target: X (n, L) weighted basis columns, t (n,) weighted targets,
    small L.

    Every non-empty active set S is solved by modified Gram-Schmidt on the columns of S (scaled to unit norm): the
    QR factors give the least-squares coefficients, and t's component orthogonal to the columns (updated column by
    column) gives the objective left, |X beta - t|^2. Active sets are compared by that residual, not by the
    objective's drop below beta = 0: the drop is about |t|^2, far larger than what is left, and its rounding
    (eps |t|^2) would decide between nearly equivalent sets in float32. Unlike the normal equations, whose
    condition number is the square of X's, this keeps float32 coefficients accurate when the columns are nearly
    collinear (a noise term ``(D h)^-a`` with small ``a`` beside the constant column of E). The best feasible solution is kept; the
    empty set (beta = 0) is always feasible, so the result is the exact optimum. A column that is a linear
    combination of earlier ones of its set up to rounding is left out of that set."""
    L = X.shape[1]
    dt = X.dtype
    eps = jnp.finfo(dt).eps
    nrm2 = jnp.sum(X * X, axis=0)
    sc = jnp.where(nrm2 > 0, jax.lax.rsqrt(jnp.where(nrm2 > 0, nrm2, 1.0)), 0.0)
    Xs = X * sc[None, :]
    masks = np.array(list(itertools.product([False, True], repeat=L)), bool)[1:]  # non-empty active sets

    def solve(mask):
        qs, cs, R = [], [], [[None] * L for _ in range(L)]
        res = t
        for k in range(L):
            v = jnp.where(mask[k], Xs[:, k], 0.0)
            for j in range(k):
                R[j][k] = jnp.dot(qs[j], v)
                v = v - R[j][k] * qs[j]
            v2 = jnp.dot(v, v)
            keep = mask[k] & (v2 > (100.0 * eps) ** 2)
            r_kk = jnp.sqrt(jnp.where(keep, v2, 1.0))
            q = jnp.where(keep, v / r_kk, 0.0)
            c = jnp.dot(q, res)
            res = res - c * q
            qs.append(q)
            cs.append(c)
            R[k][k] = r_kk
        z = [None] * L
        for k in reversed(range(L)):
            acc = cs[k]
            for j in range(k + 1, L):
                acc = acc - R[k][j] * z[j]
            z[k] = acc / R[k][k]
        z = jnp.where(mask, jnp.stack(z), 0.0)
        left = jnp.dot(res, res)
        feasible = jnp.all(z >= 0.0)
        return z, jnp.where(feasible & jnp.isfinite(left) & jnp.all(jnp.isfinite(z)), left, jnp.inf)

    zs, left = jax.vmap(solve)(jnp.asarray(masks))
    best = jnp.argmin(left)
    z = jnp.where(left[best] < jnp.dot(t, t), zs[best], jnp.zeros_like(zs[best]))
    return z * sc


class Problem(eqx.Module):
    """Arrays, objective and variable-projection setting of one fit (see the module docstring).

    Methods take a law (possibly missing its linear coefficients when ``varpro``) and ``(n,)`` row weights."""

    arrays: FitArrays
    objective: AbstractObjective = eqx.field(static=True)
    varpro: bool = eqx.field(static=True)
    #: Under variable projection, differentiate J with the solved coefficients held constant. By the envelope
    #: theorem this is the exact gradient of the projected objective J(theta) = min_{c >= 0} J(theta, c) (the
    #: coefficients' own derivative is zero at their optimum, or they sit on the bound c = 0), at a fraction of the
    #: cost of differentiating through the active-set solves. Jacobian-based solvers (Levenberg-Marquardt) need the
    #: coupled residual Jacobian and set it False.
    envelope_gradient: bool = eqx.field(static=True, default=True)

    @classmethod
    def build(cls, law, arrays: FitArrays, objective: str | AbstractObjective = "mse", huber_delta: float = 1e-3,
              varpro: bool = True) -> Problem:
        """A problem for ``law`` (name, class or instance) under ``objective`` (a name, with ``huber_delta`` for
        ``huber_log``, or an :class:`AbstractObjective`); ``varpro`` is used only where the law declares linear
        coefficients and the objective is a least-squares one."""
        obj = objective_from(objective, huber_delta)
        use = bool(varpro) and bool(law_class(law).linear_fields) and obj.least_squares
        return cls(arrays, obj, use)

    def predict(self, law: AbstractLaw) -> jax.Array:
        a = self.arrays
        return predict_rows(law, a.h, a.N, a.D)

    def cell_weights(self, row_w: jax.Array) -> jax.Array:
        """(n, V) weight of each cell in J: ``w_r m_rj s(y_rj) / sum(w m)`` (the objective's cell scale s)."""
        a = self.arrays
        w = row_w[:, None] * a.mask.astype(row_w.dtype)
        w = w / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)
        return w * self.objective.cell_scale(a.y)

    def _basis(self, law: AbstractLaw):
        a = self.arrays
        return law.linear_basis_rows(a.h, a.N, a.D)  # (n, V), (n, V, L)

    def _coefficients(self, base, phi, W):
        """(V, L) non-negative coefficients of the weighted least-squares fit of y - base on phi, per target."""
        use = W > 0
        sw = jnp.sqrt(jnp.where(use, W, 0.0))
        X = jnp.where(use[..., None], phi, 0.0) * sw[..., None]  # (n, V, L)
        t = jnp.where(use, self.arrays.y - base, 0.0) * sw  # (n, V)
        return jax.vmap(nnls_small, in_axes=(1, 1))(X, t)

    def linear_coefficients(self, law: AbstractLaw, row_w: jax.Array) -> jax.Array:
        """(V, L) non-negative coefficients minimising J with the law's other parameters fixed."""
        base, phi = self._basis(law)
        return self._coefficients(base, phi, self.cell_weights(row_w))

    def complete(self, law: AbstractLaw, row_w: jax.Array) -> AbstractLaw:
        """The law with its linear coefficients solved (the identity without variable projection)."""
        return law.with_linear(self.linear_coefficients(law, row_w)) if self.varpro else law

    def residuals(self, law: AbstractLaw, row_w: jax.Array) -> jax.Array:
        """Residual vector r (n V,) with ``J = sum r^2``; cells that do not count give exactly 0."""
        a = self.arrays
        W = self.cell_weights(row_w)
        if self.varpro:
            base, phi = self._basis(law)
            coef = self._coefficients(base, phi, W)
            if self.envelope_gradient:
                coef = jax.lax.stop_gradient(coef)
            pred = base + jnp.sum(phi * coef[None], axis=-1)
        else:
            pred = self.predict(law)
        use = W > 0
        pred = jnp.where(use, pred, a.y)  # a cell that does not count never contributes, even if its prediction is NaN
        return (jnp.sqrt(W) * self.objective.error(pred, a.y)).reshape(-1)

    def value(self, law: AbstractLaw, row_w: jax.Array) -> jax.Array:
        """The objective J (a scalar)."""
        r = self.residuals(law, row_w)
        return jnp.sum(r * r)
