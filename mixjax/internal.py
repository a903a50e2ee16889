"""The pieces below the public API that benchmarks and tests reach for, under stable names (no compatibility
promise across releases: the public API is ``mixjax`` itself).

* :func:`minimize`, :class:`reporting`: the batched solver loop (:mod:`mixjax._engine`), which returns a
  :class:`mixjax.Solution` over flat parameter vectors.
* :func:`optimised_spec`: which leaves of a law the solver moves (all inexact arrays, less the linear
  coefficients under variable projection).
* :func:`flat_residuals`: the engine's objective, ``r(y, row_w, (problem, template, spec))`` of the law whose moved
  leaves are the flat vector ``y`` (``J = sum r^2``).
* :func:`nnls_small`: the exact non-negative least squares of variable projection (every active set of a few
  coefficients).
* :func:`compilations`: how many times the solver loop has been traced (compiled) in this process.
"""

import equinox as eqx

from . import _engine
from ._engine import minimize, reporting
from .fitting import flat_residuals, optimised_spec
from .problem import nnls_small

__all__ = ["minimize", "reporting", "optimised_spec", "flat_residuals", "nnls_small", "compilations"]


def compilations() -> int:
    """How many times the engine's loop has been traced (each trace is a compilation) in this process: a batch of
    a new shape, dtype or solver adds one; new data values of the same shapes add none."""
    return eqx.debug.get_num_traces(_engine._minimize)
