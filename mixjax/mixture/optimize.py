"""The entry points: :func:`optimize_mixture` (one law) and :func:`optimize_mixture_ensemble` (every member of a
batched law).

Problem, at one scale (model size N in **millions of parameters**, tokens D in **billions of tokens**)::

    h* = argmin_h  J(L(h, N, D))   s.t.  sum_i h_i = 1,  lo_i <= h_i <= hi_i

A search without phases, KL terms or a trust region runs :mod:`mixjax.mixture.solver` from many starts and reports
the best start, where it lies relative to the measured mixtures (:mod:`mixjax.mixture.coverage`) and whether the law
fixes it (:mod:`mixjax.mixture.fixed`). A constrained search (:mod:`mixjax.mixture.phases`) runs
:mod:`mixjax.mixture.constrained` and also reports the per-phase mixtures, epochs, KL to the prior, distance to the
nearest measured mixture and the active constraints.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..laws import AbstractLaw
from ..results import FitFailedError, Solution, Status
from ..units import Scale, scale_arguments
from .bounds import InfeasibleMixtureError
from . import constrained as constrained_search
from .constrained import solve_constrained, tile_law
from .coverage import ExtrapolationWarning, measured_of, tv_distances, measured_spacing, measured_coverage
from .fixed import FixedOptimumWarning, fixed_across_members, fixed_by_law_check
from .phases import PhaseProblem, phases_of
from .results import MixtureEnsemble, MixtureResult
from .objective import WeightedObjective
from .setup import MixtureProblem, first_member, mixture_problem, scale_report, unpack_law, warn_degenerate
from .spec import accepts_spec
from .solver import best_start, solve_ensemble, solve_starts, initial_mixtures

__all__ = ["optimize_mixture", "optimize_mixture_ensemble"]


@accepts_spec
def optimize_mixture(
    law,
    *,
    model_size: float | None = None,
    n_tokens: float | None = None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    starts: int = 16,
    seed: int = 0,
    steps: int = 3000,
    method: str = "mirror",
    step_size: float = 1.0,
    init=None,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    scale: Scale | None = None,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    throw: bool = True,
    measured=None,
    within_measured: bool = False,
    check_fixed: bool = True,
    phase_shares=None,
    prior=None,
    kl_penalty: float | None = None,
    max_kl: float | None = None,
    trust_radius: float | None = None,
) -> MixtureResult:
    """The mixture minimizing an objective of a law's predicted losses at one scale, under floors and ceilings.

    Args:
      law: a fitted law (:class:`AbstractLaw`) or a :class:`mixjax.Fit` (whose domain/target names are used).
      model_size: N in **millions** of parameters; n_tokens: D in **billions** of tokens (the laws' units). Or
        give raw counts as ``raw_model_size`` (parameters) / ``raw_n_tokens`` (tokens), or a :class:`mixjax.Scale`
        as ``scale`` (raw counts that know their units).
      objective: "mean" (mean predicted loss over targets), or a differentiable ``callable(losses (V,)) ->
        scalar``; ``target_weights`` (V numbers or ``{target: w}``) gives a weighted mean, ``target`` (name or
        index) one target's loss.
      floors, ceilings: per-domain bounds on the weights (a number, K numbers or ``{domain: value}``).
      unique_tokens, max_epochs: data availability, ``h_i D <= max_epochs U_i`` with U_i in the units of the
        token count given (billions with ``n_tokens``, raw tokens with ``raw_n_tokens``); max_epochs defaults to 1.
      starts, seed: start 0 is ``init`` or the centre of the feasible set, the rest Dirichlet(1) draws (``seed``);
        all run in one compiled, vmapped call and the best is kept.
      steps, method, step_size: see :class:`MixtureConfig`.
      throw: raise if every start failed (non-finite objective); otherwise return the failure with its status.
      measured: the measured mixtures, an (n, K) array or a :class:`mixjax.MixtureData` (the training data; by
        default taken from ``law`` when it carries them): the result then reports where the optimum lies relative
        to them (``coverage``, :mod:`mixjax.mixture.coverage`) and warns (:class:`ExtrapolationWarning`) on an extrapolation.
      within_measured: also keep every domain inside its measured [min, max] (intersected with the floors and
        ceilings; :class:`InfeasibleMixtureError` if nothing is left).
      check_fixed: test whether the optimum depends on the law's parameters at all (``optimum_fixed_by_law``; two
        more solves with the same compiled program); warns (:class:`FixedOptimumWarning`) when it does not.

    Phases, repetition caps, KL and trust region (:mod:`mixjax.mixture.phases`, :mod:`mixjax.mixture.constrained`): a law fitted on a
    phased table (or given ``phase_shares=`` with ``domain@phase`` names) is optimized with a simplex per phase,
    floors and ceilings then bounding each phase's weights w_p (a number, K numbers, (P, K) numbers,
    ``{domain: v}`` or ``{domain@phase: v}``), and ``unique_tokens`` / ``max_epochs`` cap the epochs of each
    domain over all phases, ``n_tokens * sum_p s_p w_pk <= max_epochs_k U_k`` (the table's own unique tokens are
    used when only ``max_epochs`` is given).
      prior: the prior mixture of the KL terms, ``{domain: weight}`` or K weights summing to 1, or "natural"
        (the default: the unique tokens normalized, when known).
      kl_penalty: lambda, adding ``lambda sum_p s_p KL(w_p || prior)`` to the objective; max_kl: a bound B on
        that sum (nats).
      trust_radius: r, keep the total-variation distance of the mixture to the nearest measured mixture at most
        r (needs ``measured``).
    These searches report ``phase_mixtures``, ``epochs``, ``kl_to_prior``, ``nearest_measured_distance`` and
    ``active_constraints``; the fixed-optimum check is not run for them.
    """
    model_size, n_tokens, raw_model_size, raw_n_tokens = scale_arguments(scale, model_size, n_tokens, raw_model_size, raw_n_tokens)
    if measured is None:
        measured = measured_of(law)
    constrained = _wants_constrained(law, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius)
    source = law
    law, domains, targets = unpack_law(law, domains, targets)
    s = mixture_problem(source, law, domains, targets, measured, constrained=constrained,
                 model_size=model_size, n_tokens=n_tokens, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens,
                 objective=objective, target_weights=target_weights, target=target, floors=floors, ceilings=ceilings,
                 unique_tokens=unique_tokens, max_epochs=max_epochs, method=method, steps=steps, step_size=step_size,
                 within_measured=within_measured, phase_shares=phase_shares, prior=prior, kl_penalty=kl_penalty, max_kl=max_kl,
                 trust_radius=trust_radius)
    if constrained:
        return _optimize_constrained(law, source, s, starts=starts, seed=seed, init=init, throw=throw)
    warn_degenerate(law, s.lo, s.hi, s.size_given, s.tokens_given)
    dt = s.dtype
    lo, hi = jnp.asarray(s.lo, dt), jnp.asarray(s.hi, dt)
    h0 = initial_mixtures(s.K, starts, seed, s.lo, s.hi, init, dt)
    args = (h0, lo, hi, jnp.asarray(s.N, dt), jnp.asarray(s.D, dt), jnp.asarray(s.w, dt), s.fn, s.cfg)
    out = jax.tree_util.tree_map(np.asarray, solve_starts(law, *args))
    sol = out.solution
    i = int(best_start(sol.value, sol.status))
    status = Status(int(sol.status[i]))
    if throw and status == Status.nonfinite:
        raise FitFailedError(f"every one of {starts} starts gave a non-finite objective at N={s.N:g}M, D={s.D:g}B; check the law's parameters")
    _check_on_simplex(sol.y, s.lo, s.hi, dt)
    res = MixtureResult(
        mixture=sol.y[i], losses=out.losses[i], value=float(sol.value[i]), status=status, num_steps=int(sol.num_steps[i]),
        kkt_residual=float(sol.rel_grad[i] * abs(sol.value[i])), starts=sol,
        lower=s.lo, upper=s.hi, domains=s.domains, targets=s.targets, model_size=s.N, n_tokens=s.D,
        objective=s.desc, config=s.cfg, scale_extrapolation=scale_report(source, law, s.N, s.D),
    )
    if status == Status.nonfinite:
        return res
    if s.H is not None:
        res.coverage = measured_coverage(res.mixture, s.H, domains=s.domains)
        if res.coverage.extrapolation:
            warnings.warn(res.notes()[0], ExtrapolationWarning, stacklevel=2)
    if check_fixed:

        def solve(law_p):
            o = jax.tree_util.tree_map(np.asarray, solve_starts(law_p, *args)).solution
            j = int(best_start(o.value, o.status))
            return o.y[j], float(o.value[j]), bool(o.status[j] != int(Status.nonfinite) and np.isfinite(o.value[j]))

        res.optimum_fixed_by_law, res.fixed_message = fixed_by_law_check(solve, law, res.mixture, res.value, s.lo, s.hi, seed, dt)
        if res.optimum_fixed_by_law:
            warnings.warn(res.fixed_message, FixedOptimumWarning, stacklevel=2)
    return res


@accepts_spec
def optimize_mixture_ensemble(
    laws,
    *,
    ok=None,
    point=None,
    model_size: float | None = None,
    n_tokens: float | None = None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    starts: int = 8,
    seed: int = 0,
    steps: int = 3000,
    method: str = "mirror",
    step_size: float = 1.0,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    scale: Scale | None = None,
    domains: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    measured=None,
    within_measured: bool = False,
    check_fixed: bool = True,
    phase_shares=None,
    prior=None,
    kl_penalty: float | None = None,
    max_kl: float | None = None,
    trust_radius: float | None = None,
    member_starts: int | None = None,
) -> MixtureEnsemble:
    """Optimal mixtures for every member of a batched law (leading axis R on every parameter array), in one
    compiled call vmapped over members and starts: the distribution of h* under, e.g., bootstrap refits.

    ``laws``: a batched law, or an object with ``.laws`` (batched) and ``.ok`` (R,) such as a
    :class:`mixjax.BootstrapResult` (whose full-data fit ``.point`` becomes the point estimate).
    ``ok``: (R,) mask of members to use (members with ``ok`` False, or whose every start fails, are excluded from
    intervals and medians). ``point``: optionally a single law (or Fit) whose own optimum is added as ``.point``.
    ``measured`` (default: the training mixtures of a bootstrap result), ``within_measured``: as in
    :func:`optimize_mixture`; every member's optimum is then checked for extrapolation (``member_extrapolation``)
    and the point estimate gets the full report. ``check_fixed``: ask whether the members' optima coincide while
    their objectives differ (``optimum_fixed_by_law``), and run the point estimate's own check.
    ``phase_shares``, ``prior``, ``kl_penalty``, ``max_kl``, ``trust_radius`` and a phased law: the constrained search
    of :func:`optimize_mixture`, for every member (each member's trust region around the measured mixtures nearest
    its own optimum); the ensemble then carries ``phase_mixtures``, ``epochs``, ``kl_to_prior`` and
    ``nearest_measured_distance`` per member. ``member_starts``: starts per member (the uniform mixture, then Dirichlet
    draws, as in :func:`optimize_mixture`), by default ``starts``; for a law convex in the mixture
    (``convex_in_mixture``: the log-linear law) under a weighted-mean objective, 1 (the uniform mixture), since any start reaches its
    one minimum (``benchmarks/member_starts.py``). Other arguments as in :func:`optimize_mixture`."""
    model_size, n_tokens, raw_model_size, raw_n_tokens = scale_arguments(scale, model_size, n_tokens, raw_model_size, raw_n_tokens)
    source = laws
    if measured is None:
        measured = measured_of(laws)
    constrained = _wants_constrained(laws, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius) or (
        point is not None and phases_of(point)[0] is not None)
    if hasattr(laws, "laws") and not isinstance(laws, AbstractLaw):
        if ok is None and hasattr(laws, "ok"):
            ok = laws.ok
        for src in (getattr(laws, "info", None), getattr(getattr(laws, "point", None), "info", None)):
            if isinstance(src, dict):
                domains = domains if domains is not None else src.get("domains")
                targets = targets if targets is not None else src.get("targets")
        if point is None and isinstance(getattr(getattr(laws, "point", None), "law", None), AbstractLaw):
            point = laws.point
        laws = laws.laws
    if not isinstance(laws, AbstractLaw):
        raise TypeError(f"laws must be a batched AbstractLaw (or carry one as .laws), got {type(laws).__name__}")
    leaves = jax.tree_util.tree_leaves(eqx.filter(laws, eqx.is_inexact_array))
    R = {int(np.shape(x)[0]) for x in leaves if np.ndim(x) >= 1}
    if len(R) != 1:
        raise ValueError(f"laws must be batched with one leading axis on every parameter; leading sizes {sorted(R)}")
    R = R.pop()
    ok = np.ones(R, bool) if ok is None else np.asarray(ok, bool).reshape(-1)
    if ok.shape != (R,):
        raise ValueError(f"ok has shape {ok.shape}, expected ({R},)")
    # failed members may carry non-finite parameters; replace them by the first usable member's so no NaN enters the batch
    good = np.flatnonzero(ok)
    if good.size and not ok.all():
        ref = int(good[0])
        laws = jax.tree_util.tree_map(lambda x: jnp.where(jnp.asarray(ok).reshape((R,) + (1,) * (x.ndim - 1)), x, x[ref]) if eqx.is_inexact_array(x) else x, laws)
    s = mixture_problem(source if point is None else point, first_member(laws), domains, targets, measured, constrained=constrained,
                 model_size=model_size, n_tokens=n_tokens, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens,
                 objective=objective, target_weights=target_weights, target=target, floors=floors, ceilings=ceilings,
                 unique_tokens=unique_tokens, max_epochs=max_epochs, method=method, steps=steps, step_size=step_size,
                 within_measured=within_measured, phase_shares=phase_shares, prior=prior, kl_penalty=kl_penalty, max_kl=max_kl,
                 trust_radius=trust_radius)
    if constrained:
        ens = _optimize_constrained_ensemble(laws, R, ok, s, starts=starts, seed=seed)
        if point is not None:
            prob = s.prob
            ens.point = optimize_mixture(
                point, model_size=model_size, n_tokens=n_tokens, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens,
                objective=objective, target_weights=target_weights, target=target, floors=floors, ceilings=ceilings,
                unique_tokens=prob.unique_tokens if prob.unique_tokens is not None else unique_tokens,
                max_epochs=prob.max_epochs if prob.unique_tokens is not None else max_epochs, starts=starts, seed=seed, steps=steps,
                method=method, step_size=step_size, domains=s.domains, targets=s.targets, measured=measured if s.H is None else s.H,
                phase_shares=prob.shares if prob.n_phases > 1 else None, prior=prob.prior if prob.prior is not None else prior,
                kl_penalty=kl_penalty, max_kl=max_kl, trust_radius=trust_radius, throw=False)
        return ens
    dt = s.dtype
    h0 = _member_starts(s, laws, starts, member_starts, seed)
    lo, hi = jnp.asarray(s.lo, dt), jnp.asarray(s.hi, dt)
    out = solve_ensemble(laws, h0, lo, hi, jnp.asarray(s.N, dt), jnp.asarray(s.D, dt), jnp.asarray(s.w, dt), s.fn, s.cfg)
    out = jax.tree_util.tree_map(np.asarray, out)
    idx = best_start(out.solution.value, out.solution.status)
    pick = lambda a: np.take_along_axis(a, idx.reshape((R, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]  # noqa: E731
    best = jax.tree_util.tree_map(pick, out)
    members, status, values = best.solution, best.solution.status, best.solution.value
    usable = ok & (status != int(Status.nonfinite)) & np.isfinite(values)
    pt = None
    if point is not None:
        pt = optimize_mixture(point, model_size=s.N if s.size_given else None, n_tokens=s.D if s.tokens_given else None,
                              objective=objective, target_weights=target_weights,
                              target=target, floors=s.lo, ceilings=s.hi, starts=starts, seed=seed, steps=steps,
                              method=method, step_size=step_size, domains=s.domains, targets=s.targets,
                              measured=s.H, check_fixed=check_fixed)
    mixtures = members.y
    _check_on_simplex(mixtures, s.lo, s.hi, dt, usable)
    ens = MixtureEnsemble(
        members=members, losses=best.losses, ok=usable, lower=s.lo, upper=s.hi,
        domains=s.domains, targets=s.targets, model_size=s.N, n_tokens=s.D, objective=s.desc, point=pt,
    )
    if s.H is not None:
        sp = measured_spacing(s.H)
        ens.member_extrapolation = np.array(
            [bool(u) and measured_coverage(m, s.H, typical_spacing=sp).extrapolation for m, u in zip(mixtures, usable)])
        if pt is None and ens.member_extrapolation[usable].any():
            warnings.warn(f"{int(ens.member_extrapolation[usable].sum())} of {int(usable.sum())} members' optimal mixtures "
                          "extrapolate beyond the measured mixtures", ExtrapolationWarning, stacklevel=2)
    if check_fixed:
        ens.optimum_fixed_by_law, ens.fixed_message = fixed_across_members(mixtures[usable], values[usable], dt)
        if ens.optimum_fixed_by_law and not (pt is not None and pt.optimum_fixed_by_law):
            warnings.warn(ens.fixed_message, FixedOptimumWarning, stacklevel=2)
    return ens


def _check_on_simplex(H, lo, hi, dtype, usable=None) -> None:
    """Every search keeps its iterates on the bounded simplex, so a finite mixture off it (beyond rounding: 1e-6 in
    float64, 1e-4 in float32) is a defect of the search; it is raised, never returned."""
    H = np.atleast_2d(np.asarray(H, np.float64))
    tol = 1e-4 if jnp.finfo(dtype).bits <= 32 else 1e-6
    keep = np.isfinite(H).all(axis=1) & (True if usable is None else np.asarray(usable, bool).reshape(-1))
    off = keep & ((np.abs(H.sum(axis=1) - 1.0) > tol) | (H < np.asarray(lo) - tol).any(axis=1) | (H > np.asarray(hi) + tol).any(axis=1))
    if off.any():
        j = int(np.flatnonzero(off)[0])
        raise RuntimeError(f"the mixture search returned {int(off.sum())} mixture(s) off the bounded simplex (one sums to "
                           f"{H[j].sum():.8g}, bounds [{np.min(lo):g}, {np.max(hi):g}]); this is a defect of mixjax, not of the "
                           "inputs: please report it with the call that produced it")


def _member_starts(s: MixtureProblem, law, starts: int, member_starts: int | None, seed: int) -> jax.Array:
    """Starting mixtures of every member (:func:`initial_mixtures`: the uniform mixture, then Dirichlet draws):
    ``member_starts`` of them, by default ``starts``, or 1 (the uniform mixture) for a law convex in the mixture
    under a weighted-mean objective, whose one minimum any start reaches."""
    if member_starts is None:
        member_starts = 1 if type(law).convex_in_mixture and isinstance(s.fn, WeightedObjective) else starts
    return initial_mixtures(s.K, int(member_starts), seed, s.lo, s.hi, None, s.dtype)


def _wants_constrained(law, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius) -> bool:
    if any(x is not None for x in (prior, kl_penalty, max_kl, trust_radius)):
        return True
    if phase_shares is not None and len(np.atleast_1d(phase_shares)) > 1:
        return True
    return phases_of(law, measured)[0] is not None


def _active(prob: PhaseProblem, epochs, kl, dist, lo_flat, hi_flat, h, domains) -> dict[str, Any]:
    """Which constraints hold with equality at the optimum: the flattened domains at their floors and ceilings (to
    1e-9), the domains at their repetition caps and whether the KL bound binds (to 1e-6 relative), whether the trust
    region binds (to 1e-4 of its radius)."""
    movable = hi_flat - lo_flat > 1e-12
    return {
        "floor": [domains[i] for i in np.flatnonzero((h <= lo_flat + 1e-9) & movable)],
        "ceiling": [domains[i] for i in np.flatnonzero((h >= hi_flat - 1e-9) & movable)],
        "repetition_cap": [] if epochs is None else [prob.base_domains[k] for k in np.flatnonzero(epochs >= prob.max_epochs * (1 - 1e-6))],
        "max_kl": bool(prob.max_kl is not None and kl is not None and kl >= prob.max_kl * (1 - 1e-6) - 1e-9),
        "trust_region": bool(prob.trust_radius is not None and dist is not None and dist >= prob.trust_radius * (1 - 1e-4)),
    }


def _relative(kkt, value):
    """A KKT residual relative to the objective (:attr:`mixjax.Solution.rel_grad`); NaN where the objective is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(kkt, np.float64) / np.abs(np.asarray(value, np.float64))


def _start_solution(res, prob) -> Solution:
    """Every start of the first constrained member, as a :class:`~mixjax.Solution` (``value``: the penalized objective,
    NaN for a start that ended infeasible)."""
    return Solution(prob.flat(res["start_z"][0]), res["start_values"][0], res["start_status"][0], res["start_steps"][0],
                    _relative(res["start_kkt"][0], res["start_values"][0]))


def _optimize_constrained(law, source, s: MixtureProblem, *, starts, seed, init, throw) -> MixtureResult:
    """:func:`optimize_mixture` with phases, repetition caps, KL terms or a trust region (``s.prob``)."""
    prob, dt = s.prob, s.dtype
    warn_degenerate(law, s.lo, s.hi, s.size_given, s.tokens_given and prob.unique_tokens is None)
    Hb = None if s.H is None else prob.blocks(s.H)
    res, ok, used_trust = solve_constrained(tile_law(law, 1), 1, prob, Hb, s.N, s.D, s.w, s.fn, s.cfg, starts, seed, dt, init)
    one = {k: v[0] for k, v in res.items()}
    status = Status(int(one["status"]))
    if not ok[0]:
        if status == Status.nonfinite and throw:
            raise FitFailedError(f"every one of {starts} starts gave a non-finite objective at N={s.N:g}M, D={s.D:g}B; check the law's parameters")
        parts = []
        if prob.caps is not None:
            parts.append("the repetition caps")
        if prob.max_kl is not None:
            parts.append(f"the KL bound {prob.max_kl:g}")
        if used_trust[0]:
            parts.append(f"the trust region of radius {prob.trust_radius:g} around the {min(constrained_search.TRUST_CANDIDATES, Hb.shape[0])} nearest measured mixtures")
        msg = (f"no start reached a mixture satisfying {', '.join(parts) or 'the constraints'} together with the floors and ceilings "
               f"(smallest violation {float(np.min(one['viol'])):.3g}); loosen them")
        if throw:
            raise InfeasibleMixtureError(msg)
        warnings.warn(msg, stacklevel=3)
    z = one["z"]
    h = prob.flat(z)
    _check_on_simplex(h, s.lo, s.hi, dt)
    epochs = prob.epochs(z)
    kl = prob.kl(z)
    dist = None if s.H is None else float(tv_distances(h[None], s.H)[0].min())
    result = MixtureResult(
        mixture=h, losses=one["losses"], value=float(one["J"]), status=status,
        num_steps=int(one["num_steps"]), kkt_residual=float(one["kkt"]), starts=_start_solution(res, prob), lower=s.lo, upper=s.hi, domains=s.domains, targets=s.targets,
        model_size=s.N, n_tokens=s.D, objective=s.desc, config=s.cfg,
        scale_extrapolation=scale_report(source, law, s.N, s.D), problem=prob,
        phase_mixtures=z.reshape(prob.lower.shape) / prob.shares[:, None], epochs=epochs,
        kl_to_prior=None if kl is None else float(kl), nearest_measured_distance=dist,
        penalized_value=float(one["J"] + prob.kl_penalty * (kl or 0.0)),
        active_constraints=None, constraint_violation=float(one["viol"]),
    )
    result.active_constraints = _active(prob, epochs, kl, dist, s.lo, s.hi, h, s.domains)
    result.fixed_message = "not checked: the check applies to searches without phases, KL terms or a trust region"
    if s.H is not None:
        result.coverage = measured_coverage(h, s.H, domains=s.domains)
        if result.coverage.extrapolation and prob.trust_radius is None:
            warnings.warn(result.notes()[0], ExtrapolationWarning, stacklevel=3)
    return result


def _optimize_constrained_ensemble(laws, R, ok, s: MixtureProblem, *, starts, seed) -> MixtureEnsemble:
    """:func:`optimize_mixture_ensemble` with phases, repetition caps, KL terms or a trust region (``s.prob``), without
    the point estimate."""
    prob, dt = s.prob, s.dtype
    Hb = None if s.H is None else prob.blocks(s.H)
    res, feasible, _ = solve_constrained(laws, R, prob, Hb, s.N, s.D, s.w, s.fn, s.cfg, starts, seed, dt)
    usable = ok & feasible & (res["status"] != int(Status.nonfinite))
    Z = res["z"]
    mixtures = prob.flat(Z)
    _check_on_simplex(mixtures, s.lo, s.hi, dt, usable)
    ens = MixtureEnsemble(
        members=Solution(mixtures, res["J"], res["status"], res["num_steps"], _relative(res["kkt"], res["J"])), losses=res["losses"], ok=usable, lower=s.lo, upper=s.hi,
        domains=s.domains, targets=s.targets, model_size=s.N, n_tokens=s.D, objective=s.desc, problem=prob,
        phase_mixtures=Z.reshape((R,) + prob.lower.shape) / prob.shares[None, :, None], epochs=prob.epochs(Z), kl_to_prior=prob.kl(Z),
        nearest_measured_distance=None if s.H is None else tv_distances(mixtures, s.H).min(axis=1),
    )
    if s.H is not None:
        sp = measured_spacing(s.H)
        ens.member_extrapolation = np.array(
            [bool(u) and measured_coverage(m, s.H, typical_spacing=sp).extrapolation for m, u in zip(mixtures, usable)])
    ens.fixed_message = "not checked: the check applies to searches without phases, KL terms or a trust region"
    return ens
