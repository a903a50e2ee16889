"""Solvers of the batched fitting loop, as objects a user may pass: ``mixjax.fit(..., optimizer=LBFGS(memory=10))``.

Each solver takes one fixed amount of work per step for every member of a batch (the accept-or-reject decision is a
``jnp.where``, never a branch), so a batch of starts, resamples and folds runs as one compiled loop
(:mod:`mixjax._engine`, which also holds the stopping tests shared by every solver).

* :class:`LBFGS`: the default; one trial point per step, a diagonal initial inverse Hessian for many parameters.
* :class:`LevenbergMarquardt`: fewer, dearer steps (one Jacobian each); for laws with up to a few hundred parameters.
* :class:`Adam`: a first-order baseline.

A new solver subclasses :class:`AbstractSolver` with ``init(fn, y)`` and ``step(fn, y, state) -> (y, state,
accepted, stuck)`` over the residual function ``fn``; it can be fitted with, but not saved to a fit file (fit files
record solvers by name).
"""

from ._engine import Adam, AbstractSolver, LBFGS, LevenbergMarquardt

__all__ = ["AbstractSolver", "LBFGS", "LevenbergMarquardt", "Adam"]
