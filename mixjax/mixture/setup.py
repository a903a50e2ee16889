"""What a mixture search needs besides the law's parameter values, built once per call from the entry points' arguments.

:class:`MixtureProblem` (one function builds it, :func:`mixture_problem`, for both entry points and both kinds of search):
the domain and target names (K and V, also read from a ``Fit`` or an ensemble), the scale (N in millions of
parameters, D in billions of tokens, or raw counts), the objective (:mod:`mixjax.mixture.objective`), the bounds
(:mod:`mixjax.mixture.bounds`, or the per-phase set of :mod:`mixjax.mixture.phases` with ``lo_k = s_p lo_pk``
flattened), the measured mixtures (:mod:`mixjax.mixture.coverage`) and the solver settings. Also the warnings on a
degenerate problem (the bounds leave one mixture, or the law ignores the scale asked for) and on a scale far from
the fit's.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..laws import AbstractLaw
from ..laws._base import mixture_frame
from ..units import (TOKENS_UNIT, law_scale, ScaleExtrapolationWarning, check_scale, extrapolation_message, model_size_from_law, tokens_from_law)
from .bounds import InfeasibleMixtureError, mixture_bounds
from .coverage import within_measured_bounds, measured_mixtures
from .objective import n_domains_of, objective_spec
from .phases import PhaseProblem, phases_of, unique_tokens_of, phase_problem
from .solver import MixtureConfig

__all__ = ["MixtureProblem", "DegenerateOptimumWarning"]


def unpack_law(law, domains, targets):
    """(law, domains, targets) from a law, a ``Fit`` or an ensemble object carrying names."""
    info = getattr(law, "info", None)
    if isinstance(info, dict):
        domains = domains if domains is not None else info.get("domains")
        targets = targets if targets is not None else info.get("targets")
    if hasattr(law, "law") and isinstance(law.law, AbstractLaw):
        law = law.law
    if not isinstance(law, AbstractLaw):
        raise TypeError(f"law must be an AbstractLaw instance or a Fit, got {type(law).__name__}")
    return law, domains, targets


def _scale(law, model_size, n_tokens, raw_model_size, raw_n_tokens):
    model_size, n_tokens = law_scale(model_size, n_tokens, raw_model_size, raw_n_tokens)
    cls = type(law)
    for flag, v, label in ((cls.uses_model_size, model_size, "model_size (millions of parameters)"), (cls.uses_tokens, n_tokens, "n_tokens (billions of tokens)")):
        if v is None:
            if flag:
                raise ValueError(f"law {cls.name} depends on {label}; pass it")
        elif not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{label.split()[0]} must be a positive finite number, got {v!r}")
        else:
            check_scale(float(v), label.split()[0], units="law")
    return (1.0 if model_size is None else float(model_size)), (1.0 if n_tokens is None else float(n_tokens))


def scale_report(source, law, N: float, D: float) -> dict | None:
    """Where the scale (N millions, D billions) lies against the scales ``source`` (a :class:`mixjax.Fit`) was fitted
    on, for the scales the law uses; warns on a far extrapolation. None when ``source`` records no fitted scales."""
    report_of = getattr(source, "scale_extrapolation", None)
    if not callable(report_of):
        return None
    cls = type(law)
    report = report_of(model_size=float(model_size_from_law(N)) if cls.uses_model_size else None,
                       n_tokens=float(tokens_from_law(D)) if cls.uses_tokens else None)
    for kind, r in report.items():
        msg = extrapolation_message(r, kind)
        if msg:
            warnings.warn(msg, ScaleExtrapolationWarning, stacklevel=3)
    return report


@dataclasses.dataclass(frozen=True)
class MixtureProblem:
    """A mixture search apart from the law's parameter values, checked, built once per call by :func:`mixture_problem`.

    ``K`` domains named ``domains``, V targets named ``targets``; the scale ``N`` (millions of parameters) and ``D``
    (billions of tokens), with ``size_given`` / ``tokens_given`` saying whether the caller gave each; the law's
    floating-point ``dtype``; the objective ``fn(losses, w)`` with normalized target weights ``w`` (V,) and its
    description ``desc``; bounds ``lo`` / ``hi`` (K,) on the law's (flattened) mixture; the distinct measured
    mixtures ``H`` (m, K) or None; solver settings ``cfg``; and, for a search with phases, repetition caps, KL terms
    or a trust region, its feasible set ``prob`` (None otherwise)."""

    K: int
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    N: float
    D: float
    dtype: Any
    fn: Callable
    w: np.ndarray
    desc: str
    lo: np.ndarray
    hi: np.ndarray
    H: np.ndarray | None
    cfg: MixtureConfig
    size_given: bool
    tokens_given: bool
    prob: PhaseProblem | None = None


def first_member(laws):
    """Member 0 of a batched law (leading axis on every array)."""
    return jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)


def mixture_problem(source, law1, domains, targets, measured, *, constrained: bool, model_size, n_tokens, raw_model_size, raw_n_tokens,
             objective, target_weights, target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size,
             within_measured=False, phase_shares=None, prior=None, kl_penalty=None, max_kl=None, trust_radius=None) -> MixtureProblem:
    """The :class:`MixtureProblem` of a search with the law ``law1`` (one member of an ensemble) from the entry points'
    arguments. ``constrained``: the per-phase feasible set (:func:`phase_problem`; phases and unique tokens also read
    from ``source`` and ``measured``) instead of per-domain bounds (:func:`mixture_bounds`, ``within_measured``)."""
    K = len(domains) if domains is not None else n_domains_of(law1)
    domains = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(domains) != K:
        raise ValueError(f"{len(domains)} domain names for a law of {K} domains")
    if constrained:
        phases, shares = phases_of(source, measured)
        if phase_shares is not None:
            shares = phase_shares
    N, D = _scale(law1, model_size, n_tokens, raw_model_size, raw_n_tokens)
    dtype = jnp.result_type(*[x for x in jax.tree_util.tree_leaves(eqx.filter(law1, eqx.is_inexact_array))] or [float])
    V = jax.eval_shape(law1, jnp.zeros(K, dtype), jnp.asarray(N, dtype), jnp.asarray(D, dtype)).shape[0]
    targets = tuple(targets) if targets is not None else (domains if V == K else tuple(f"target{j}" for j in range(V)))
    if len(targets) != V:
        raise ValueError(f"{len(targets)} target names for a law with {V} targets")
    fn, w, desc = objective_spec(V, objective, target_weights, target, targets)
    unit = TOKENS_UNIT if raw_n_tokens is not None else 1.0
    tokens_given = n_tokens is not None or raw_n_tokens is not None
    prob = None
    if constrained:
        data_U = unique_tokens_of(measured, source)
        natural = None if data_U is None else data_U
        if unique_tokens is None and max_epochs is not None and data_U is not None:
            unique_tokens = data_U * unit / TOKENS_UNIT  # the table's raw counts, in the units of the token count given
        prob = phase_problem(domains, phases=phases, phase_shares=shares, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens,
                             max_epochs=max_epochs, n_tokens=D * unit if tokens_given else None, prior=prior, kl_penalty=kl_penalty,
                             max_kl=max_kl, trust_radius=trust_radius, min_weight=type(law1).min_weight, natural=natural)
    else:
        lo, hi = mixture_bounds(K, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs,
                                n_tokens=D * unit, domains=domains)
        if type(law1).min_weight > 0:  # the law diverges below its min_weight: an implicit floor on every domain
            try:
                lo, hi = mixture_bounds(K, floors=np.maximum(lo, type(law1).min_weight), ceilings=hi, domains=domains)
            except InfeasibleMixtureError as e:
                raise InfeasibleMixtureError(f"law {type(law1).name} is only meaningful with every weight at least {type(law1).min_weight:g} "
                                             f"(its min_weight; it diverges at 0): {e}") from None
    if measured is not None and callable(getattr(measured, "align", None)) and getattr(measured, "n_domains", 0):
        measured = measured.align(domains, to="the law")  # a table's mixtures, matched to the law's domains by name
    if measured is not None and hasattr(measured, "columns") and hasattr(measured, "iloc"):  # a DataFrame: by name
        measured = mixture_frame(measured, domains)
    H = None if measured is None else measured_mixtures(measured, K)
    if constrained:
        if trust_radius is not None and H is None:
            raise ValueError("trust_radius needs the measured mixtures: pass measured= (an (n, K) array or the training data)")
    elif within_measured:
        if H is None:
            raise ValueError("within_measured=True needs the measured mixtures: pass measured= (an (n, K) array or the training data)")
        lo, hi = within_measured_bounds(lo, hi, H, domains)
    cfg = MixtureConfig(method=method, steps=steps, step_size=step_size)
    if constrained:
        lo = prob.flat((prob.lower * prob.shares[:, None]).reshape(-1))
        hi = prob.flat((prob.upper * prob.shares[:, None]).reshape(-1))
    return MixtureProblem(K=K, domains=domains, targets=targets, N=N, D=D, dtype=dtype, fn=fn, w=w, desc=desc, lo=lo, hi=hi, H=H,
                          cfg=cfg, size_given=model_size is not None or raw_model_size is not None, tokens_given=tokens_given,
                          prob=prob)


def problem_fields(law, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights, target,
           floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched, measured=None, within_measured=False):
    """The :class:`MixtureProblem` of a search without phases, as a dict by field name (``law`` batched or not)."""
    p = mixture_problem(None, first_member(law) if batched else law, domains, targets, measured, constrained=False, model_size=model_size,
                 n_tokens=n_tokens, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens, objective=objective,
                 target_weights=target_weights, target=target, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens,
                 max_epochs=max_epochs, method=method, steps=steps, step_size=step_size, within_measured=within_measured)
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


class DegenerateOptimumWarning(UserWarning):
    """The answer does not come from the law: the bounds leave one mixture, or the law ignores the scale asked for."""


def warn_degenerate(law, lo, hi, size_given: bool, tokens_given: bool) -> None:
    """Warn when the floors and ceilings alone fix the mixture, or when a scale is given to a law that ignores it."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    free = int(np.sum(hi - lo > 1e-12))
    if free <= 1 or lo.sum() >= 1 - 1e-9 or hi.sum() <= 1 + 1e-9:
        warnings.warn("the floors and ceilings leave a single feasible mixture: the optimum is set by the bounds, not by "
                      "the law", DegenerateOptimumWarning, stacklevel=3)
    cls = type(law)
    for given, uses, what in ((size_given, cls.uses_model_size, "model size"), (tokens_given, cls.uses_tokens, "token count")):
        if given and not uses:
            warnings.warn(f"law {cls.name} does not depend on the {what}: its optimum is the same at every {what}",
                          DegenerateOptimumWarning, stacklevel=3)
