"""Fitting objectives: what a fit minimises over the measured loss cells.

Every objective is a mean of squared errors over the cells that count (mask m, row weights w)::

    J(theta) = sum_{r,j} w_r m_rj s(y_rj) e(pred_rj, y_rj)^2 / sum_{r,j} w_r m_rj

with a cell scale ``s`` and an error ``e`` per objective:

==================  ===============  ============================================  =====================
objective           s(y)             e(pred, y)                                    name on the command line
==================  ===============  ============================================  =====================
:class:`MSE`        1                pred - y                                      ``mse``
:class:`Relative`   1 / y^2          pred - y                                      ``relative``
:class:`HuberLog`   1                sign(u) sqrt(Huber_delta(u)), u = log(pred/y)  ``huber_log``
==================  ===============  ============================================  =====================

J is a sum of squared residuals ``sqrt(w m s) e``, so least-squares solvers apply to every objective. The
linear coefficients of a law are solved exactly (variable projection, :mod:`mixjax.problem`) only under an
objective whose error is linear in the prediction (``least_squares``).

An objective is a small frozen module: pass one as ``mixjax.fit(..., objective=HuberLog(delta=1e-2))``, or its name.
A new objective subclasses :class:`AbstractObjective` and defines ``error`` (and ``cell_scale`` when cells are
reweighted); it can be fitted with, but not saved to a fit file, which records objectives by name.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["AbstractObjective", "MSE", "Relative", "HuberLog", "OBJECTIVES", "objective_from"]


class AbstractObjective(eqx.Module):
    """An objective: ``J = sum w m cell_scale(y) error(pred, y)^2 / sum w m`` over the cells that count."""

    #: The name used on the command line and in fit files (None for a user's objective).
    name: ClassVar[str | None] = None
    #: True when ``error`` is ``pred - y`` (times nothing that depends on pred): linear coefficients can then be
    #: solved in closed form.
    least_squares: ClassVar[bool] = False
    #: "log" when the errors are on log losses, "raw" otherwise (recorded with a fit).
    loss_scale: ClassVar[str] = "raw"

    def cell_scale(self, y: jax.Array) -> jax.Array:
        """Weight factor of a cell with observed loss ``y`` (1 unless the objective reweights cells)."""
        return jnp.ones_like(y)

    def error(self, pred: jax.Array, y: jax.Array) -> jax.Array:  # pragma: no cover - interface
        """The signed error whose square a cell contributes."""
        raise NotImplementedError


class MSE(AbstractObjective):
    """Mean squared error ``(pred - y)^2``, in the loss's own units."""

    name: ClassVar[str] = "mse"
    least_squares: ClassVar[bool] = True

    def error(self, pred, y):
        return pred - y


class Relative(AbstractObjective):
    """Mean squared relative error ``((pred - y) / y)^2``: every target counts in proportion to its level."""

    name: ClassVar[str] = "relative"
    least_squares: ClassVar[bool] = True

    def cell_scale(self, y):
        return 1.0 / (y * y)

    def error(self, pred, y):
        return pred - y


def _huber_root(u, delta):
    """sign(u) sqrt(Huber_delta(u)): u / sqrt(2) inside [-delta, delta], sign(u) sqrt(delta (|u| - delta / 2)) outside."""
    a = jnp.abs(u)
    inside = a <= delta
    outer = jnp.sqrt(jnp.where(inside, delta, delta * (a - 0.5 * delta)))
    return jnp.where(inside, u / jnp.sqrt(2.0), jnp.sign(u) * outer)


class HuberLog(AbstractObjective):
    """Huber loss of log losses, ``Huber_delta(log pred - log y)`` (the Chinchilla recipe of Hoffmann et al. 2022,
    delta = 1e-3): quadratic for relative errors below delta, linear beyond, so a few outlying runs weigh less."""

    name: ClassVar[str] = "huber_log"
    loss_scale: ClassVar[str] = "log"
    delta: float = 1e-3

    def __check_init__(self):
        if not (isinstance(self.delta, (int, float)) and 0 < float(self.delta) < float("inf")):
            raise ValueError(f"HuberLog's delta must be a finite number > 0, got {self.delta!r}")

    def error(self, pred, y):
        tiny = jnp.finfo(pred.dtype).tiny
        return _huber_root(jnp.log(jnp.maximum(pred, tiny)) - jnp.log(y), self.delta)


#: The objectives by name (the command line's choices).
OBJECTIVES = {cls.name: cls for cls in (MSE, Relative, HuberLog)}


def objective_from(objective, huber_delta: float = 1e-3) -> AbstractObjective:
    """An objective object from a name (``huber_delta`` for ``huber_log``) or an :class:`AbstractObjective`."""
    if isinstance(objective, AbstractObjective):
        return objective
    if isinstance(objective, type) and issubclass(objective, AbstractObjective):
        return objective()
    if objective == "huber_log":
        return HuberLog(float(huber_delta))
    if isinstance(objective, str) and objective in OBJECTIVES:
        return OBJECTIVES[objective]()
    raise ValueError(f"objective must be one of {tuple(OBJECTIVES)} or an AbstractObjective, got {objective!r}")
