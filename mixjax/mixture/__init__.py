"""Optimal mixtures on the box-constrained simplex, by autodiff through a fitted law.

Problem, at one scale (model size N in **millions of parameters**, tokens D in **billions of tokens**, the laws'
units)::

    h* = argmin_h  J(L(h, N, D))   s.t.  sum_i h_i = 1,  lo_i <= h_i <= hi_i

with ``J`` the mean loss over targets, a weighted mean ``sum_j w_j L_j / sum_j w_j``, one target, or any
differentiable function of the predicted losses. Ceilings combine user caps with data availability: a domain with
U_i unique tokens repeated at most ``max_epochs`` times gives ``h_i D <= max_epochs U_i``.

The package, one idea per module (each module's docstring has its maths):

* :mod:`~mixjax.mixture.simplex`: exact Euclidean and KL projections onto the capped simplex, per phase and inside
  a total-variation ball;
* :mod:`~mixjax.mixture.bounds`: per-domain floors and ceilings, checked for feasibility;
* :mod:`~mixjax.mixture.objective`: the scalar objective ``J`` of the predicted losses;
* :mod:`~mixjax.mixture.solver`: adaptive entropic mirror descent (:class:`SimplexDescent`), batched over starts
  and member laws;
* :mod:`~mixjax.mixture.coverage`: where the optimum lies relative to the measured mixtures (extrapolation);
* :mod:`~mixjax.mixture.fixed`: whether the optimum depends on the law's fitted parameters at all;
* :mod:`~mixjax.mixture.phases`: the feasible set of a constrained search (a simplex per training phase, repetition
  caps, KL to a prior, trust region);
* :mod:`~mixjax.mixture.constrained`: its solver (augmented Lagrangian, trust-region balls);
* :mod:`~mixjax.mixture.results`: :class:`MixtureResult` and :class:`MixtureEnsemble`;
* :mod:`~mixjax.mixture.setup`: the checked problem of a search (names, scale, objective, bounds, measured
  mixtures) from the entry points' arguments, built once per call;
* :mod:`~mixjax.mixture.spec`: :class:`MixtureSpec`, the question of a search (scale, objective, bounds,
  constraints) as one object that every entry point takes as ``spec=``;
* :mod:`~mixjax.mixture.optimize`: the entry points :func:`optimize_mixture` and :func:`optimize_mixture_ensemble`.
"""

from __future__ import annotations

from .bounds import InfeasibleMixtureError, mixture_bounds
from .constrained import CONSTRAINT_TOL, TRUST_CANDIDATES
from .coverage import EXTRAPOLATION_MARGIN, EXTRAPOLATION_SPACING_FACTOR, ExtrapolationWarning, MeasuredCoverage, measured_coverage, measured_mixtures
from .fixed import FIXED_OPTIMUM_TOL, FixedOptimumWarning
from .objective import mixture_objective, objective_spec
from .optimize import optimize_mixture, optimize_mixture_ensemble
from .phases import PhasedMixtureError, PhaseProblem, check_single_phase, phase_problem
from .results import MixtureEnsemble, MixtureResult
from .spec import MixtureSpec
from .setup import DegenerateOptimumWarning
from .simplex import project_capped_simplex, project_capped_simplex_kl, project_phase_ball
from .solver import MixtureConfig, SimplexDescent

__all__ = [
    "MixtureConfig",
    "MixtureResult",
    "MixtureEnsemble",
    "MixtureSpec",
    "optimize_mixture",
    "optimize_mixture_ensemble",
    "mixture_objective",
    "objective_spec",
    "mixture_bounds",
    "project_capped_simplex",
    "project_capped_simplex_kl",
    "InfeasibleMixtureError",
    "PhaseProblem",
    "phase_problem",
    "project_phase_ball",
    "CONSTRAINT_TOL",
    "TRUST_CANDIDATES",
    "MeasuredCoverage",
    "measured_coverage",
    "measured_mixtures",
    "ExtrapolationWarning",
    "FixedOptimumWarning",
    "DegenerateOptimumWarning",
    "PhasedMixtureError",
    "check_single_phase",
    "SimplexDescent",
    "EXTRAPOLATION_MARGIN",
    "EXTRAPOLATION_SPACING_FACTOR",
    "FIXED_OPTIMUM_TOL",
]
