"""Whether an optimal mixture depends on the law's fitted parameters at all.

For some laws the optimum does not (for the capacity-only law, the mean-loss optimum is the uniform mixture, the
target weighting, by construction). The check re-solves the problem, with the same starts, for laws whose every
parameter array is perturbed (``p + 0.1 z max(|p|, 1)``, z standard normal, fixed seeds): when the objective
changes but the optimum stays within :data:`FIXED_OPTIMUM_TOL` (1e-6 in float64, 1e-4 in float32, max per domain)
at every draw, the optimum is **fixed by the law** (a :class:`FixedOptimumWarning`): it reflects the objective and
the law's form, not the data. The check is not applicable (None) when the optimum is a vertex of the bounds (fewer
than two domains strictly inside their floors and ceilings) or no perturbed law changes the objective. Across an
ensemble the same question is asked of the members' optima.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FixedOptimumWarning", "FIXED_OPTIMUM_TOL"]


#: Largest change of the optimum (max abs per domain) under perturbed parameters that still counts as "fixed",
#: by floating-point type of the law.
FIXED_OPTIMUM_TOL = {"float64": 1e-6, "float32": 1e-4}
_FIXED_DRAWS = 2
_FIXED_SCALE = 0.1


class FixedOptimumWarning(UserWarning):
    """The optimal mixture does not depend on the law's fitted parameters (fixed by the law's form)."""


def _perturbed(law, draw: int, seed: int):
    """The law with every inexact parameter array moved to ``p + 0.1 z max(|p|, 1)`` (z ~ N(0, 1), fixed seed)."""
    rng = np.random.default_rng([int(seed), 7919, int(draw)])

    def move(x):
        if not eqx.is_inexact_array(x):
            return x
        a = np.asarray(x)
        z = rng.standard_normal(a.shape)
        return jnp.asarray(a + _FIXED_SCALE * z * np.maximum(np.abs(a), 1.0), dtype=a.dtype)

    return jax.tree_util.tree_map(move, law)


def fixed_by_law_check(solve, law, mixture, value, lo, hi, seed, dtype):
    """(fixed: bool | None, message) for one law: re-solve for perturbed laws (``solve(law) -> (mixture, value,
    ok)``) and compare the optima (module docstring)."""
    tol = FIXED_OPTIMUM_TOL["float32" if jnp.dtype(dtype) == jnp.float32 else "float64"]
    free = (mixture > lo + 1e-9) & (mixture < hi - 1e-9)
    if free.sum() < 2:
        return None, "not applicable: the optimum is a vertex of the floors and ceilings (fixed by the bounds)"
    shifts, changes = [], []
    for draw in range(_FIXED_DRAWS):
        h, v, ok = solve(_perturbed(law, draw, seed))
        if not ok:
            continue
        shift = float(np.max(np.abs(h - mixture)))
        if shift > tol:
            return False, f"the optimum moves by {shift:.3g} (max per domain) when the parameters are perturbed"
        change = abs(v - value)
        if change > 1e-9 * max(abs(value), 1e-300):
            shifts.append(shift)
            changes.append(change)
    if not shifts:
        return None, "inconclusive: no perturbed law changed the objective with a finite optimum"
    return True, (
        f"the optimum is fixed by the law's form, not by the data: with {len(shifts)} perturbed parameter draw(s) the "
        f"objective changes (by up to {max(changes):.3g}) but the optimum stays within {max(shifts):.2g} "
        "(max per domain); it reflects the objective's target weighting and the bounds")


def fixed_across_members(mixtures, values, dtype):
    """(fixed: bool | None, message) from an ensemble's usable members' optima."""
    if mixtures.shape[0] < 2:
        return None, "not applicable: fewer than two usable members"
    tol = FIXED_OPTIMUM_TOL["float32" if jnp.dtype(dtype) == jnp.float32 else "float64"]
    spread = float(np.max(np.ptp(mixtures, axis=0)))
    vspread = float(np.ptp(values))
    if spread > tol:
        return False, f"the members' optima differ by up to {spread:.3g} (max per domain)"
    if vspread <= 1e-9 * max(float(np.max(np.abs(values))), 1e-300):
        return None, "inconclusive: every member has the same objective value"
    return True, (f"the optimum is fixed by the law's form, not by the data: the {mixtures.shape[0]} members' objectives "
                  f"differ (by up to {vspread:.3g}) but their optima agree within {spread:.2g} (max per domain)")
