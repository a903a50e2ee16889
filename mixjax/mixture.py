"""Optimal mixtures on the box-constrained simplex, by autodiff through a fitted law.

Problem, at one scale (model size N in **millions of parameters**, tokens D in **billions of tokens**, the laws'
units)::

    h* = argmin_h  J(L(h, N, D))   s.t.  sum_i h_i = 1,  lo_i <= h_i <= hi_i

with ``J`` the mean loss over targets, a weighted mean ``sum_j w_j L_j / sum_j w_j``, one target, or any
differentiable function of the predicted losses. Ceilings combine user caps with data availability: a domain with
U_i unique tokens repeated at most ``max_epochs`` times gives ``h_i D <= max_epochs U_i``.

Solver: adaptive entropic mirror descent (exponentiated gradient; Dai & Zheng solve the outer problem with online
mirror descent). A step from a feasible h with gradient g and step eta is the exact Bregman (KL) projection

    h+ = argmin_{h' in C} <g, h'> + KL(h' || h) / eta,   i.e.  h+_i = clip(h_i exp(-eta g_i) / Z, lo_i, hi_i),

where the normalizer Z is found exactly (:func:`project_capped_simplex_kl`). The step rule is
:class:`SimplexDescent`, run by the same batched engine loop as every fit (:mod:`mixjax._engine`): each step tries
four step sizes together and keeps the best one meeting the descent lemma
``J(h+) <= J(h) + <g, h+ - h> + KL(h+ || h) / eta``; eta doubles after an accepted step and shrinks after a
rejected one, with no inner loop, so members of a batch never wait on each other. ``method="projected"`` uses the
Euclidean projection (:func:`project_capped_simplex`) and the squared distance instead. Convergence: the KKT
residual ``||h - P(h - g)||_inf`` (Euclidean projection P, zero exactly at a KKT point) below ``gtol`` times |J|,
or a relative objective decrease below ``ftol`` over ``patience`` steps with the residual below 100 ``gtol`` |J|
or no step size accepted any more (round-off level).

Many starts (the projected centre and Dirichlet(1) draws) run as one engine batch, and the best is kept;
:func:`optimize_mixture_ensemble` runs every member law of a batched law (a bootstrap ensemble) from every start
as one batch.

**Extrapolation report.** Given the measured mixtures (``measured=``: an (n, K) array or a dataset), the result
says where the optimum lies relative to them (:func:`measured_coverage`): per domain the measured range
[min, max] and how far the optimum lies outside it (0 inside); the total-variation distance
``TV(h, m) = 0.5 sum_i |h_i - m_i|`` (half the L1 distance, in [0, 1]) from the optimum to the nearest measured
mixture; and, as a yardstick, the median over the distinct measured mixtures of the TV distance to their nearest
other measured mixture (the typical spacing of the design). The optimum is called an **extrapolation** (and an
:class:`ExtrapolationWarning` is issued) when some domain lies more than :data:`EXTRAPOLATION_MARGIN` (0.02)
outside its measured range, or the nearest measured mixture is more than :data:`EXTRAPOLATION_SPACING_FACTOR`
(2) times the typical spacing away. ``within_measured=True`` intersects the floors and ceilings with the measured
per-domain ranges, so that no domain leaves its measured range.

**Optimum fixed by the law.** For some laws the optimum does not depend on the fitted parameters at all (for the
capacity-only law, the mean-loss optimum is the uniform mixture, the target weighting, by construction). The
check (``check_fixed=True``, the default) re-solves the problem, with the same starts, for laws whose every
parameter array is perturbed (``p + 0.1 z max(|p|, 1)``, z standard normal, fixed seeds): when the objective
changes but the optimum stays within :data:`FIXED_OPTIMUM_TOL` (1e-6 in float64, 1e-4 in float32) at every draw,
the result reports ``optimum_fixed_by_law = True`` (with a :class:`FixedOptimumWarning`): the optimum reflects the
objective and the law's form, not the data. The check is not applicable (``None``) when the optimum is a vertex
of the bounds (fewer than two domains strictly inside their floors and ceilings) or no perturbed law changes the
objective. Across an ensemble the same question is asked of the members' optima.

**Constrained searches: phases, repetition caps, KL, trust region.** A swarm table stores a P-phase mixture
flattened, ``h[k@p] = s_p w_pk`` with fixed phase shares s_p and per-phase mixtures w_p on the simplex. The feasible
set is then a product of per-phase capped simplices (floors and ceilings bound w_pk), intersected with

* repetition caps, ``D sum_p s_p w_pk <= E_k U_k`` (D the target tokens, U_k the unique tokens of domain k, E_k the
  most epochs): they couple the phases (one phase: they are ceilings);
* a KL bound ``sum_p s_p KL(w_p || q) <= B`` to a prior mixture q (by default the natural distribution, the unique
  tokens normalized); a KL penalty ``lambda sum_p s_p KL(w_p || q)`` is added to the objective instead or as well
  (a domain with q_k = 0 is then held at 0);
* a trust region, ``TV(h, m) = 0.5 ||h - m||_1 <= r`` for some measured mixture m (TV over the flattened mixture
  equals ``sum_p s_p TV(w_p, m_p)``).

The coupled constraints (caps, as ``epochs_k / E_k - 1 <= 0``; KL bound, ``KL - B <= 0``) are handled by an
augmented Lagrangian (Hestenes-Powell-Rockafellar):
``J + lambda KL + (1/2rho) sum_j (max(0, mu_j + rho g_j)^2 - mu_j^2)`` is minimized over the product of per-phase
simplices by :class:`SimplexDescent` (block KL projections), warm-started, then ``mu_j <- max(0, mu_j + rho g_j)``;
rho grows tenfold when the violation does not fall by 4, up to 1e6; it stops when every violation is below
``CONSTRAINT_TOL / 10`` and the penalized objective or the multipliers settle (at most 40 rounds of 500 steps). The
answer is verified: its largest violation is reported (``constraint_violation``), and a start whose violation exceeds
:data:`CONSTRAINT_TOL` (1e-7) is not feasible. The trust region, a union of balls, is nonconvex; the search first
solves without it, and if the optimum lies farther than r from every measured mixture, it solves within the ball of
each of the :data:`TRUST_CANDIDATES` (4) measured mixtures nearest that optimum and keeps the best. Inside one ball
the TV constraint is part of the projection (:func:`project_phase_ball`: a multiplier on the L1 distance, found by
bisection, around the exact per-phase projection), so every iterate lies in the ball. A better point in the ball of a
farther measured mixture can be missed; raise ``TRUST_CANDIDATES`` to search more balls. Every term is compiled in
whether used or not, so one program serves every combination of constraints of a given size.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _engine
from .intervals import DEFAULT_LEVEL, percentile_interval
from .laws import AbstractLaw
from .laws._base import mixture_frame
from .results import Status, status_counts
from .units import (TOKENS_UNIT, ScaleExtrapolationWarning, check_scale, extrapolation_message, model_size_from_law, model_size_to_law,
                    tokens_from_law, tokens_to_law)

__all__ = [
    "MixtureConfig",
    "MixtureResult",
    "MixtureEnsemble",
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
    "EXTRAPOLATION_MARGIN",
    "EXTRAPOLATION_SPACING_FACTOR",
    "FIXED_OPTIMUM_TOL",
]

METHODS = ("mirror", "projected")


#: An optimum more than this far (absolute weight) outside a domain's measured [min, max] is an extrapolation.
EXTRAPOLATION_MARGIN = 0.02
#: An optimum whose nearest measured mixture is farther than this many typical spacings is an extrapolation.
EXTRAPOLATION_SPACING_FACTOR = 2.0
#: Largest change of the optimum (max abs per domain) under perturbed parameters that still counts as "fixed",
#: by floating-point type of the law.
FIXED_OPTIMUM_TOL = {"float64": 1e-6, "float32": 1e-4}
_FIXED_DRAWS = 2
_FIXED_SCALE = 0.1


class InfeasibleMixtureError(ValueError):
    """The floors and ceilings admit no mixture (the message names the domains at fault)."""


class ExtrapolationWarning(UserWarning):
    """The optimal mixture lies outside the measured mixtures (see the module docstring for the threshold)."""


class FixedOptimumWarning(UserWarning):
    """The optimal mixture does not depend on the law's fitted parameters (fixed by the law's form)."""


# --------------------------------------------------------------------------- exact projections
def _crossing(l, u, total):
    """For h_i(t) = clip(f_i(t), lo_i, hi_i) nondecreasing in t, with breakpoints l_i <= u_i (where coordinate i
    leaves its floor / reaches its ceiling) and ``total(t) = sum_i h_i(t)``: the status of each coordinate on the
    interval where ``total`` crosses 1 (at floor, at ceiling, free)."""
    bp = jnp.concatenate([l, u])
    s = jax.vmap(total)(bp)
    t_b = jnp.min(jnp.where(s >= 1.0, bp, jnp.inf))
    t_a = jnp.max(jnp.where(s < 1.0, bp, -jnp.inf))
    lower = l >= t_b
    upper = (u <= t_a) & ~lower
    return lower, upper, ~lower & ~upper


def project_capped_simplex(v, lo, hi):
    """Euclidean projection of ``v`` onto ``{h : sum h = 1, lo <= h <= hi}``: ``h_i = clip(v_i + t, lo_i, hi_i)``
    with the shift t solved exactly (the sum is piecewise linear in t; the crossing piece is found among the 2K
    breakpoints and solved in closed form). Needs ``sum lo <= 1 <= sum hi``; O(K^2), differentiable almost
    everywhere, traceable under ``jit``/``vmap``."""
    v, lo, hi = jnp.asarray(v), jnp.asarray(lo), jnp.asarray(hi)
    lower, upper, free = _crossing(lo - v, hi - v, lambda t: jnp.sum(jnp.clip(v + t, lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    n_free = jnp.sum(free)
    t = (rest - jnp.sum(jnp.where(free, v, 0.0))) / jnp.maximum(n_free, 1)
    h = jnp.where(lower, lo, jnp.where(upper, hi, v + t))
    return jnp.clip(h, lo, hi)


def project_capped_simplex_kl(log_y, lo, hi):
    """KL (Bregman, negative entropy) projection of the positive vector ``y = exp(log_y)`` onto
    ``{h : sum h = 1, lo <= h <= hi}``: ``h_i = clip(c y_i, lo_i, hi_i)`` with the scale c > 0 solved exactly
    (free coordinates get ``R softmax(log_y)`` restricted to the free set, R = 1 - the clipped mass). Works in
    log space, so any finite ``log_y`` is safe. Needs ``sum lo <= 1 <= sum hi``."""
    log_y, lo, hi = jnp.asarray(log_y), jnp.asarray(lo), jnp.asarray(hi)
    l = jnp.log(lo) - log_y  # noqa: E741  (-inf where lo = 0)
    u = jnp.log(hi) - log_y  # -inf where hi = 0
    lower, upper, free = _crossing(l, u, lambda t: jnp.sum(jnp.clip(jnp.exp(t + log_y), lo, hi)))
    rest = 1.0 - jnp.sum(jnp.where(lower, lo, 0.0)) - jnp.sum(jnp.where(upper, hi, 0.0))
    z = jnp.where(free, log_y, -jnp.inf)
    p = jnp.exp(z - jnp.max(jnp.where(free, log_y, jnp.min(log_y))))
    p = p / jnp.maximum(jnp.sum(p), jnp.finfo(p.dtype).tiny)
    h = jnp.where(lower, lo, jnp.where(upper, hi, jnp.maximum(rest, 0.0) * p))
    return jnp.clip(h, lo, hi)


def project_phase_ball(u, lo, hi, shares, centre, radius, *, kl: bool, iters: int = 48):
    """Projection onto ``{z (P, K) : sum_k z_pk = s_p, s_p lo_pk <= z_pk <= s_p hi_pk, 0.5 ||z - m||_1 <= r}``: per
    phase blocks of a capped simplex, intersected with a total-variation ball of radius r around ``centre`` m (P, K).

    Euclidean (``kl=False``, ``u`` the point v) or KL (``kl=True``, ``u = log y``). With a multiplier tau >= 0 on the
    L1 term and a shift t_p per phase, each coordinate solves a scalar problem whose minimizer is
    ``clip(median(f(t_p - tau), m, f(t_p + tau)), s lo, s hi)`` with ``f(a) = v + a`` (Euclidean) or ``y e^a`` (KL):
    nondecreasing in t_p, linear (Euclidean) or of the form C + A e^t (KL) between its 4K breakpoints, so the t_p
    at which block p sums to s_p is found exactly by evaluating the sum at every breakpoint and interpolating on the
    crossing piece (O(K^2)). tau is 0 when the plain projection already lies in the ball, else found by bisection
    (``iters`` halvings) on the distance, which does not increase with tau, keeping the end inside the ball. Needs
    the set to be non-empty."""
    dt = u.dtype
    L, U = shares[:, None] * lo, shares[:, None] * hi
    big = jnp.finfo(dt).max
    if kl:
        span = jnp.max(jnp.abs(jnp.where(jnp.isfinite(u), u, 0.0))) + 760.0
    else:
        span = jnp.max(jnp.abs(u)) + jnp.max(jnp.abs(centre)) + 2.0

    if kl:  # y e^t = exp(u - top) exp(t + top): one exp per coordinate and per shift, not per pair
        top = jnp.max(jnp.where(jnp.isfinite(u), u, -big), axis=1, keepdims=True)
        ey = jnp.exp(u - top)

    def z_of(t, tau):  # t (P, n): one shift per phase and evaluation point -> (P, n, K)
        if kl:
            et = jnp.exp(t + top)[:, :, None]
            lo_ = jnp.nan_to_num(ey[:, None, :] * (et * jnp.exp(-tau)), nan=0.0)
            hi_ = jnp.nan_to_num(ey[:, None, :] * (et * jnp.exp(tau)), nan=0.0)
        else:
            a = u[:, None, :] + t[:, :, None]
            lo_, hi_ = a - tau, a + tau
        return jnp.clip(jnp.clip(centre[:, None, :], lo_, hi_), L[:, None, :], U[:, None, :])

    def solve_t(tau):
        if kl:
            lg = lambda x: jnp.log(jnp.clip(x, 0.0, big))  # noqa: E731  (-inf at 0)
            bp = [lg(L) - u - tau, lg(jnp.minimum(centre, U)) - u - tau, lg(jnp.maximum(centre, L)) - u + tau, lg(U) - u + tau]
        else:
            bp = [L - u - tau, jnp.minimum(centre, U) - u - tau, jnp.maximum(centre, L) - u + tau, U - u + tau]
        lim = span + tau
        bp = jnp.clip(jnp.nan_to_num(jnp.concatenate(bp, axis=1), nan=0.0, posinf=lim, neginf=-lim), -lim, lim)
        bp = jnp.concatenate([bp, jnp.full((bp.shape[0], 2), -lim, dt).at[:, 1].set(lim)], axis=1)
        S = jnp.sum(z_of(bp, tau), axis=-1)  # (P, 4K + 2)
        s = shares[:, None]
        ta = jnp.max(jnp.where(S <= s, bp, -jnp.inf), axis=1)
        tb = jnp.min(jnp.where(S >= s, bp, jnp.inf), axis=1)
        Sa = jnp.max(jnp.where(S <= s, S, -jnp.inf), axis=1)
        Sb = jnp.min(jnp.where(S >= s, S, jnp.inf), axis=1)
        frac = jnp.clip((shares - Sa) / jnp.where(Sb > Sa, Sb - Sa, 1.0), 0.0, 1.0)
        gap = jnp.maximum(tb - ta, 0.0)
        t = ta + (jnp.log1p(frac * jnp.expm1(gap)) if kl else frac * gap)
        t = jnp.where(ta >= tb, tb, t)
        z = z_of(t[:, None], tau)[:, 0, :]
        # round-off: put each block's sum on its share by moving the free coordinates
        free = (z > L) & (z < U)
        nfree = jnp.maximum(jnp.sum(free, axis=1), 1)
        return jnp.clip(z + jnp.where(free, ((shares - jnp.sum(z, axis=1)) / nfree)[:, None], 0.0), L, U)

    dist = lambda z: 0.5 * jnp.sum(jnp.abs(z - centre))  # noqa: E731
    z0 = solve_t(jnp.zeros((), dt))
    tau_max = jnp.asarray(60.0, dt) if kl else 2.0 * span

    def outer(_, c):
        a, b = c
        mid = 0.5 * (a + b)
        inside = dist(solve_t(mid)) <= radius
        return jnp.where(inside, a, mid), jnp.where(inside, mid, b)

    f0 = dist(z0) - radius
    _, tb = jax.lax.fori_loop(0, iters, outer, (jnp.zeros((), dt), tau_max))
    return jnp.where(f0 <= 0, z0, solve_t(tb))


# --------------------------------------------------------------------------- constraints
def _per_domain(value, K: int, domains: Sequence[str], label: str, default: float) -> np.ndarray:
    """A per-domain vector from None, a number, a length-K sequence, or a ``{domain: value}`` mapping."""
    if value is None:
        return np.full(K, default)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in domains]
        if unknown:
            raise ValueError(f"{label}: unknown domain(s) {unknown}; domains are {list(domains)}")
        out = np.full(K, default)
        for k, v in value.items():
            out[list(domains).index(k)] = float(v)
    else:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out = np.full(K, float(arr))
        elif arr.shape == (K,):
            out = arr.copy()
        else:
            raise ValueError(f"{label} has shape {arr.shape}; expected a number, {K} values or a {{domain: value}} mapping")
    bad = np.flatnonzero(~np.isfinite(out) & ~(out == np.inf))
    if bad.size:
        raise ValueError(f"{label} for domain {domains[bad[0]]!r} is {out[bad[0]]!r}; expected a finite number")
    return out


def mixture_bounds(
    n_domains: int,
    *,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    n_tokens: float | None = None,
    domains: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain bounds ``(lo, hi)`` of the feasible set, checked for feasibility.

    floors / ceilings: a number (every domain), K numbers, or ``{domain: value}``; weights in [0, 1].
    unique_tokens: U_i per domain (same form; in the units of ``n_tokens``), with ``max_epochs`` E (default 1):
    adds the ceiling ``h_i <= E U_i / n_tokens``. Raises :class:`InfeasibleMixtureError` naming the domains when
    a floor exceeds its ceiling, the floors sum above 1, or the ceilings sum below 1."""
    K = int(n_domains)
    names = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(names) != K:
        raise ValueError(f"{len(names)} domain names for {K} domains")
    lo = _per_domain(floors, K, names, "floors", 0.0)
    hi = _per_domain(ceilings, K, names, "ceilings", 1.0)
    for arr, label in ((lo, "floor"), (hi, "ceiling")):
        neg = np.flatnonzero(arr < 0)
        if neg.size:
            raise ValueError(f"{label} of domain {names[neg[0]]!r} is {arr[neg[0]]!r}; mixture weights are >= 0")
    big = np.flatnonzero(lo > 1)
    if big.size:
        raise InfeasibleMixtureError(f"floor of domain {names[big[0]]!r} is {lo[big[0]]!r} > 1")
    hi = np.minimum(hi, 1.0)
    avail = np.full(K, np.inf)
    if unique_tokens is not None:
        if n_tokens is None or not (math.isfinite(n_tokens) and n_tokens > 0):
            raise ValueError(f"unique_tokens needs the training token count n_tokens > 0, got {n_tokens!r}")
        U = _per_domain(unique_tokens, K, names, "unique_tokens", np.inf)
        if (U < 0).any():
            i = int(np.flatnonzero(U < 0)[0])
            raise ValueError(f"unique_tokens of domain {names[i]!r} is {U[i]!r}; expected >= 0")
        E = 1.0 if max_epochs is None else _per_domain(max_epochs, K, names, "max_epochs", 1.0)
        if np.any(np.asarray(E) <= 0):
            raise ValueError(f"max_epochs must be > 0, got {max_epochs!r}")
        avail = np.asarray(E) * U / float(n_tokens)
        hi = np.minimum(hi, avail)
    elif max_epochs is not None:
        raise ValueError("max_epochs needs unique_tokens (the unique tokens available per domain)")
    bad = np.flatnonzero(lo > hi * (1 + 1e-12) + 1e-15)
    if bad.size:
        desc = ", ".join(
            f"{names[i]} (floor {lo[i]:.6g} > ceiling {hi[i]:.6g}{' from data availability' if avail[i] <= hi[i] else ''})" for i in bad
        )
        raise InfeasibleMixtureError(f"floor above ceiling for domain(s): {desc}")
    hi = np.maximum(hi, lo)
    if lo.sum() > 1 + 1e-12:
        pos = [f"{names[i]}={lo[i]:.4g}" for i in np.flatnonzero(lo > 0)]
        raise InfeasibleMixtureError(f"floors sum to {lo.sum():.6g} > 1: {', '.join(pos)}")
    if hi.sum() < 1 - 1e-12:
        caps = [f"{names[i]}={hi[i]:.4g}{' (data availability)' if avail[i] <= hi[i] else ''}" for i in range(K)]
        raise InfeasibleMixtureError(f"ceilings sum to {hi.sum():.6g} < 1, no mixture fits: {', '.join(caps)}")
    return lo, hi


# --------------------------------------------------------------------------- objectives
class _Weighted(eqx.Module):
    """J(L) = sum_j w_j L_j (w normalized to sum 1): mean, weighted mean or a single target."""

    def __call__(self, losses, w):
        return jnp.dot(w, losses)


@dataclasses.dataclass(frozen=True)
class _UserObjective:
    """A user's differentiable ``objective(losses) -> scalar`` (static under jit: one compile per function)."""

    fn: Callable

    def __call__(self, losses, w):
        return jnp.asarray(self.fn(losses)).reshape(())


def objective_spec(V: int, objective, target_weights, target, targets: Sequence[str] | None):
    """The scalar objective of a mixture search over V predicted losses, from the user's arguments (``objective``
    "mean" / "weighted" / a callable, ``target_weights``, ``target``; ``targets`` names them): returns
    ``(callable, normalized weights (V,), description)``. Shared by :func:`optimize_mixture` and
    :func:`mixjax.suggest`."""
    names = list(targets) if targets is not None else [f"target{j}" for j in range(V)]
    if target is not None and target_weights is not None:
        raise ValueError("give either target (one target) or target_weights, not both")
    if callable(objective):
        if target is not None or target_weights is not None:
            raise ValueError("a callable objective takes the predicted losses itself; drop target/target_weights")
        return _UserObjective(objective), np.full(V, 1.0 / V), f"user objective {getattr(objective, '__name__', repr(objective))}"
    if objective not in ("mean", "weighted", "target"):
        raise ValueError(f"objective must be 'mean', 'weighted', 'target' or a callable losses -> scalar, got {objective!r}")
    if target is not None:
        if isinstance(target, (int, np.integer)):
            j = int(target)
            if not 0 <= j < V:
                raise ValueError(f"target index {j} out of range for {V} targets")
        else:
            if target not in names:
                raise ValueError(f"unknown target {target!r}; targets are {names}")
            j = names.index(target)
        w = np.zeros(V)
        w[j] = 1.0
        return _Weighted(), w, f"loss of target {names[j]}"
    if target_weights is not None:
        w = _per_domain(target_weights, V, names, "target_weights", 0.0)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"target_weights must be finite, >= 0 and not all 0, got {w.tolist()}")
        return _Weighted(), w / w.sum(), "weighted mean loss (" + ", ".join(f"{n}={x:.3g}" for n, x in zip(names, w / w.sum())) + ")"
    if objective != "mean":
        raise ValueError(f"objective={objective!r} needs {'target' if objective == 'target' else 'target_weights'}")
    return _Weighted(), np.full(V, 1.0 / V), f"mean loss over {V} targets"


def mixture_objective(law: AbstractLaw, *, model_size=1.0, n_tokens=1.0, objective="mean", target_weights=None, target=None, targets=None):
    """The scalar function ``h -> J(law(h, N, D))`` that :func:`optimize_mixture` minimizes (differentiable with
    ``jax.grad``; N in millions of parameters, D in billions of tokens)."""
    law = getattr(law, "law", law)
    V = jax.eval_shape(law, jnp.zeros(_n_domains(law)), jnp.asarray(1.0), jnp.asarray(1.0)).shape[0]
    fn, w, _ = objective_spec(V, objective, target_weights, target, targets)
    w = jnp.asarray(w)
    N, D = jnp.asarray(float(model_size)), jnp.asarray(float(n_tokens))
    return lambda h: fn(law(h, N, D), w)


# --------------------------------------------------------------------------- the solver
@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """Solver settings (hashable: static under ``jax.jit``).

    method: "mirror" (entropic mirror descent, KL projection) or "projected" (Euclidean projected gradient).
    steps: most steps per start. step_size: first step eta. ftol/patience, gtol: see the module doc.
    """

    method: str = "mirror"
    steps: int = 3000
    step_size: float = 1.0
    ftol: float = 1e-14
    gtol: float = 1e-10
    patience: int = 20

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")


class _Solved(eqx.Module):
    mixture: jax.Array
    value: jax.Array
    losses: jax.Array
    status: jax.Array
    num_steps: jax.Array
    kkt: jax.Array


class _SimplexState(NamedTuple):
    f: jax.Array  # objective at h
    g: jax.Array  # stationarity residual h - P(h - grad f): zero exactly at a KKT point (what the engine tests)
    grad: jax.Array
    eta: jax.Array  # step size to try next
    fails: jax.Array  # consecutive rejected steps


class SimplexDescent(_engine.AbstractSolver):
    """Adaptive mirror (entropic, KL projection) or projected-gradient descent on the capped simplex
    ``{h : sum h = 1, lo <= h <= hi}``, a step rule for the engine's batched loop (:func:`mixjax._engine.minimize`).

    ``fn(h)`` returns the scalar objective F. A step tries the step sizes ``eta * t`` for every t in ``trials``
    together, candidates ``P(h, eta t, grad F)`` (KL or Euclidean projection), and keeps the lowest F among those
    meeting the sufficient-decrease bound ``F(h') <= F(h) + grad.(h' - h) + D(h', h) / (eta t)`` (D the Bregman
    divergence of the mirror map: KL, or half the squared distance); the next eta is twice the accepted one. If no
    trial passes, the step is rejected and eta shrinks by the smallest trial; after ``max_fails`` rejections in a
    row the member is stuck (at round-off level: converged if F is also flat). Fixed work per step for every
    member: ``len(trials)`` objective and gradient evaluations, no inner loop. The engine's stationarity test reads
    ``g = h - P(h - grad F)``, zero exactly at a constrained optimum."""

    lo: jax.Array
    hi: jax.Array
    mirror: bool = eqx.field(static=True, default=True)
    step_size: float = eqx.field(static=True, default=1.0)
    trials: tuple[float, ...] = eqx.field(static=True, default=(2.0, 1.0, 0.25, 1.0 / 16))
    max_fails: int = eqx.field(static=True, default=8)
    #: None: one simplex (``lo``, ``hi`` of shape (K,)). (P,) phase shares s: ``h`` is P blocks of K (phase-major),
    #: block p sums to s_p, and ``lo``, ``hi`` are (P, K) bounds on the per-phase weights w_p = h_p / s_p.
    shares: jax.Array | None = None
    #: A trust region: the point is ``[h, m]`` (twice the length), ``m`` a fixed centre carried along, and the
    #: projections also keep ``0.5 ||h - m||_1 <= radius`` (:func:`project_phase_ball`).
    radius: jax.Array | None = None

    def _split(self, v):
        n = v.shape[0] // 2
        return v[:n], v[n:]

    def _project_ball(self, head, m, kl: bool):
        """The trust-region projection of ``head`` (Euclidean, or KL from its logs) around the centre ``m``, with ``m``
        carried along unchanged in the state's second half."""
        P = 1 if self.shares is None else self.shares.shape[0]
        s = jnp.ones(1, head.dtype) if self.shares is None else self.shares
        z = project_phase_ball(head.reshape(P, -1), self.lo.reshape(P, -1), self.hi.reshape(P, -1), s, m.reshape(P, -1),
                               self.radius, kl=kl)
        return jnp.concatenate([z.reshape(-1), m])

    def _project(self, v):
        if self.radius is not None:
            head, m = self._split(v)
            return self._project_ball(head, m, kl=False)
        if self.shares is None:
            return project_capped_simplex(v, self.lo, self.hi)
        s = self.shares[:, None]
        w = jax.vmap(project_capped_simplex)(v.reshape(self.lo.shape) / s, self.lo, self.hi)
        return (w * s).reshape(-1)

    def _project_kl(self, log_y, h=None):
        if self.radius is not None:
            return self._project_ball(self._split(log_y)[0], self._split(h)[1], kl=True)
        if self.shares is None:
            return project_capped_simplex_kl(log_y, self.lo, self.hi)
        w = jax.vmap(project_capped_simplex_kl)(log_y.reshape(self.lo.shape), self.lo, self.hi)
        return (w * self.shares[:, None]).reshape(-1)

    def _kkt(self, h, grad):
        return h - self._project(h - grad)

    def init(self, fn, h):
        f, grad = jax.value_and_grad(fn)(h)
        return _SimplexState(f, self._kkt(h, grad), grad, jnp.asarray(self.step_size, h.dtype), jnp.array(0, jnp.int32))

    def _candidate(self, h, grad, eta):
        tiny = jnp.finfo(h.dtype).tiny
        if self.mirror:
            gs = grad - jnp.min(jnp.where(jnp.isfinite(grad), grad, 0.0))
            return self._project_kl(jnp.log(jnp.maximum(h, tiny)) - eta * gs, h)
        return self._project(h - eta * grad)

    def _divergence(self, hn, h):
        tiny = jnp.finfo(h.dtype).tiny
        if self.mirror:
            return jnp.sum(jnp.where(hn > 0, hn * (jnp.log(jnp.maximum(hn, tiny)) - jnp.log(jnp.maximum(h, tiny))), 0.0) - hn + h)
        return 0.5 * jnp.sum((hn - h) ** 2)

    def step(self, fn, h, s: _SimplexState):
        dt = h.dtype
        etas = s.eta * jnp.asarray(self.trials, dt)
        cands = jax.vmap(lambda e: self._candidate(h, s.grad, e))(etas)
        fs, grads = jax.vmap(jax.value_and_grad(fn))(cands)
        bound = s.f + cands @ s.grad - jnp.dot(h, s.grad) + jax.vmap(lambda c: self._divergence(c, h))(cands) / etas
        good = jnp.isfinite(fs) & jnp.all(jnp.isfinite(grads), axis=1) & (fs <= bound + 4 * jnp.finfo(dt).eps * jnp.abs(s.f))
        k = jnp.argmin(jnp.where(good, fs, jnp.inf))
        ok = jnp.any(good)
        eta = jnp.where(ok, 2.0 * etas[k], s.eta * min(self.trials))
        fails = jnp.where(ok, 0, s.fails + 1)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        hn, fn_, gn = keep(cands[k], h), keep(fs[k], s.f), keep(grads[k], s.grad)
        new = _SimplexState(fn_, self._kkt(hn, gn), gn, eta, fails)
        return hn, new, ok, fails >= self.max_fails


def _value_of_shared_law(h, _member, shared):
    law, N, D, w, objective = shared
    return objective(law(h, N, D), w)


def _value_of_member_law(h, law, shared):
    N, D, w, objective = shared
    return objective(law(h, N, D), w)


def _solved(laws_or_law, sol: _engine.Solution, N, D, per_member: bool) -> _Solved:
    h = sol.y
    if per_member:
        losses = jax.vmap(lambda law, x: law(x, N, D))(laws_or_law, h)
    else:
        losses = jax.vmap(lambda x: laws_or_law(x, N, D))(h)
    ok = jnp.isfinite(sol.value) & jnp.all(jnp.isfinite(losses), axis=-1)
    status = jnp.where(ok, sol.status, int(Status.nonfinite))
    return _Solved(h, sol.value, losses, status, sol.num_steps, sol.rel_grad * jnp.abs(sol.value))


def _solver(lo, hi, config: MixtureConfig) -> SimplexDescent:
    return SimplexDescent(lo, hi, mirror=config.method == "mirror", step_size=config.step_size)


@eqx.filter_jit
def _solve_starts(law, h0, lo, hi, N, D, w, objective, config):
    sol = _engine.minimize(_solver(lo, hi, config), _value_of_shared_law, h0, jnp.zeros(h0.shape[0], h0.dtype),
                           (law, N, D, w, objective), max_steps=config.steps, ftol=config.ftol, gtol=config.gtol,
                           window=config.patience)
    return _solved(law, sol, N, D, per_member=False)


@eqx.filter_jit
def _solve_ensemble(laws, h0, lo, hi, N, D, w, objective, config):
    """Every member law from every start, as one engine batch of R x S members; results shaped (R, S, ...)."""
    R = jax.tree_util.tree_leaves(eqx.filter(laws, eqx.is_array))[0].shape[0]
    S = h0.shape[0]
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, S, axis=0) if eqx.is_array(x) else x, laws)
    starts = jnp.tile(h0, (R, 1))
    sol = _engine.minimize(_solver(lo, hi, config), _value_of_member_law, starts, members, (N, D, w, objective),
                           max_steps=config.steps, ftol=config.ftol, gtol=config.gtol, window=config.patience)
    out = _solved(members, sol, N, D, per_member=True)
    return jax.tree_util.tree_map(lambda x: x.reshape((R, S) + x.shape[1:]), out)


_project_kl_batch = jax.jit(jax.vmap(project_capped_simplex_kl, in_axes=(0, None, None)))
_project_batch = jax.jit(jax.vmap(project_capped_simplex, in_axes=(0, None, None)))


def _starts(K: int, n: int, seed: int, lo, hi, init, dtype) -> jax.Array:
    """Start 0: the given ``init`` (projected) or the KL projection of the uniform mixture; then Dirichlet(1)."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.ones(K), size=n)
    draws[0] = 1.0 / K
    draws = 0.98 * draws + 0.02 / K  # strictly inside, so every coordinate can move multiplicatively
    h = _project_kl_batch(jnp.log(jnp.asarray(draws, dtype)), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
    if init is not None:
        h0 = np.asarray(init, np.float64).reshape(-1)
        if h0.shape != (K,) or not np.isfinite(h0).all():
            raise ValueError(f"init must be {K} finite weights, got shape {h0.shape}")
        first = _project_batch(jnp.asarray(h0[None], dtype), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
        h = h.at[0].set(first[0])
    return h


# --------------------------------------------------------------------------- measured mixtures
def measured_mixtures(measured, n_domains: int | None = None) -> np.ndarray:
    """The distinct measured mixtures (m, K) from an (n, K) array, a :class:`mixjax.MixtureData` (its
    ``mixtures``), or an object carrying one as ``.data``. Rows that agree to 1e-9 count once (the same mixture
    at several scales or checkpoints is one design point)."""
    if hasattr(measured, "mixtures"):
        src = measured.mixtures
    elif hasattr(getattr(measured, "data", None), "mixtures"):
        src = measured.data.mixtures
    else:
        src = measured
    H = np.asarray(src, dtype=np.float64)
    if H.ndim == 1 and n_domains is not None and H.size == n_domains:
        H = H[None]
    if H.ndim != 2 or H.shape[0] < 1:
        raise ValueError(f"measured mixtures must be an (n, K) array with n >= 1, got shape {H.shape}")
    if n_domains is not None and H.shape[1] != n_domains:
        raise ValueError(f"measured mixtures have {H.shape[1]} domains; the law has {n_domains}")
    if not np.isfinite(H).all():
        raise ValueError("measured mixtures must be finite")
    _, first = np.unique(np.round(H, 9), axis=0, return_index=True)
    return H[np.sort(first)]


def _tv_to_set(points: np.ndarray, H: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(p, m) total-variation distances 0.5 * sum |a - b|, computed in chunks of ``points``."""
    out = np.empty((points.shape[0], H.shape[0]))
    for i in range(0, points.shape[0], chunk):
        out[i : i + chunk] = 0.5 * np.abs(points[i : i + chunk, None, :] - H[None]).sum(-1)
    return out


def _typical_spacing(H: np.ndarray) -> float:
    """Median over the distinct measured mixtures of the TV distance to the nearest other one (NaN if m < 2)."""
    if H.shape[0] < 2:
        return math.nan
    d = _tv_to_set(H, H)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


@dataclasses.dataclass(frozen=True)
class MeasuredCoverage:
    """Where a mixture lies relative to the measured mixtures (distances are total variation, half the L1).

    ``low`` / ``high`` (K,): each domain's measured range; ``outside`` (K,): how far the mixture lies outside it
    (0 inside); ``nearest_distance``: TV distance to the nearest measured mixture ``nearest``; ``typical_spacing``:
    median nearest-neighbour TV distance among the ``n_measured`` distinct measured mixtures (NaN with one);
    ``extrapolation``: the module docstring's rule, with the reasons that fired in ``reasons``."""

    low: np.ndarray
    high: np.ndarray
    outside: np.ndarray
    nearest_distance: float
    nearest: np.ndarray
    typical_spacing: float
    n_measured: int
    extrapolation: bool
    reasons: tuple[str, ...]

    def as_dict(self, domains: Sequence[str]) -> dict[str, Any]:
        return {
            "measured_range": {d: [float(a), float(b)] for d, a, b in zip(domains, self.low, self.high)},
            "outside_range": {d: float(x) for d, x in zip(domains, self.outside)},
            "nearest_measured_distance": float(self.nearest_distance),
            "typical_measured_spacing": None if math.isnan(self.typical_spacing) else float(self.typical_spacing),
            "n_measured_mixtures": int(self.n_measured),
            "distance": "total variation (half the L1 distance)",
            "extrapolation": bool(self.extrapolation),
            "extrapolation_reasons": list(self.reasons),
        }


def measured_coverage(mixture, measured, *, domains: Sequence[str] | None = None, margin: float = EXTRAPOLATION_MARGIN,
                      spacing_factor: float = EXTRAPOLATION_SPACING_FACTOR, typical_spacing: float | None = None) -> MeasuredCoverage:
    """Where ``mixture`` (K,) lies relative to the ``measured`` mixtures (see :func:`measured_mixtures` for the
    forms accepted): measured ranges, distance outside them, nearest measured mixture (TV distance), the design's
    typical spacing, and whether this is an extrapolation (some domain more than ``margin`` outside its range, or
    the nearest measured mixture farther than ``spacing_factor`` typical spacings). ``typical_spacing``: a
    precomputed spacing of the same measured mixtures (to skip the O(n^2) computation in loops)."""
    h = np.asarray(mixture, np.float64).reshape(-1)
    K = h.size
    names = list(domains) if domains is not None else [f"domain{i}" for i in range(K)]
    H = measured_mixtures(measured, K)
    low, high = H.min(axis=0), H.max(axis=0)
    outside = np.maximum(np.maximum(low - h, h - high), 0.0)
    d = _tv_to_set(h[None], H)[0]
    j = int(np.argmin(d))
    spacing = _typical_spacing(H) if typical_spacing is None else float(typical_spacing)
    reasons = []
    far = np.flatnonzero(outside > margin)
    if far.size:
        reasons.append("outside the measured range by more than {:g}: ".format(margin) + ", ".join(
            f"{names[i]} = {h[i]:.4g} (measured {low[i]:.4g} to {high[i]:.4g})" for i in far))
    if np.isfinite(spacing) and d[j] > spacing_factor * spacing:
        reasons.append(f"nearest measured mixture at TV distance {d[j]:.3g}, more than {spacing_factor:g} x the typical "
                       f"spacing {spacing:.3g} of the {H.shape[0]} measured mixtures")
    return MeasuredCoverage(low=low, high=high, outside=outside, nearest_distance=float(d[j]), nearest=H[j],
                            typical_spacing=spacing, n_measured=int(H.shape[0]), extrapolation=bool(reasons),
                            reasons=tuple(reasons))


def _measured_of(obj):
    """Measured mixtures carried by a law container (a dataset as ``.data``, or a bootstrap's training arrays), or
    None."""
    data = getattr(obj, "data", None)
    if data is not None and hasattr(data, "mixtures"):
        return data.mixtures
    arrays = getattr(obj, "_arrays", None)
    h = getattr(arrays, "h", None)
    return None if h is None else np.asarray(h)


def _within_measured(lo, hi, H, domains):
    """Floors/ceilings intersected with the measured per-domain ranges; InfeasibleMixtureError if empty."""
    mlo, mhi = H.min(axis=0), H.max(axis=0)
    lo2, hi2 = np.maximum(lo, mlo), np.minimum(hi, mhi)
    try:
        return mixture_bounds(len(domains), floors=lo2, ceilings=hi2, domains=domains)
    except InfeasibleMixtureError as e:
        ranges = ", ".join(f"{d} [{a:.4g}, {b:.4g}]" for d, a, b in zip(domains, mlo, mhi))
        raise InfeasibleMixtureError(
            f"within_measured: the floors and ceilings leave no mixture inside the measured ranges ({ranges}): {e}") from None


# --------------------------------------------------------------------------- optimum fixed by the law
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


def _fixed_check(solve, law, mixture, value, lo, hi, seed, dtype):
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


def _fixed_across_members(mixtures, values, dtype):
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


# --------------------------------------------------------------------------- results
@dataclasses.dataclass
class MixtureResult:
    """The optimal mixture at one scale.

    Attributes: ``mixture`` (K,), predicted ``losses`` (V,) there, the objective ``value``, ``status``
    (:class:`Status` of the best start), ``num_steps``, ``kkt_residual`` (||h - P(h - grad)||_inf, 0 at an exact
    KKT point), per-start ``start_values`` / ``start_mixtures`` / ``start_status``, the bounds ``lower`` /
    ``upper`` that were enforced, names ``domains`` / ``targets``, the scale (``model_size`` in millions of
    parameters, ``n_tokens`` in billions of tokens) and ``objective`` (a description).

    ``scale_extrapolation``: where the scale lies against the fit's scales, per scale the law uses (``{kind: {"value",
    "fitted_min", "fitted_max", "factor", "far"}}``, raw counts; None when optimizing a bare law, which records none).
    ``coverage``: a :class:`MeasuredCoverage` of the optimum when the measured mixtures were given (else None);
    ``extrapolation``: its verdict (None without measured mixtures). ``optimum_fixed_by_law``: True when the
    optimum does not depend on the fitted parameters, False when it does, None when not checked or not
    applicable; ``fixed_message`` says why (module docstring)."""

    mixture: np.ndarray
    losses: np.ndarray
    value: float
    status: Status
    num_steps: int
    kkt_residual: float
    start_values: np.ndarray
    start_mixtures: np.ndarray
    start_status: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    config: MixtureConfig
    coverage: MeasuredCoverage | None = None
    optimum_fixed_by_law: bool | None = None
    fixed_message: str | None = None
    scale_extrapolation: dict | None = None
    #: Constrained searches (phases, repetition caps, KL, trust region; see :func:`optimize_mixture`): the
    #: :class:`PhaseProblem`, per-phase weights ``phase_mixtures`` (P, K), ``epochs`` (K,) at the target tokens,
    #: ``kl_to_prior`` (sum_p s_p KL(w_p || prior), nats), ``nearest_measured_distance`` (TV),
    #: ``penalized_value`` (J + lambda KL), ``active`` constraints and the largest ``constraint_violation``.
    problem: PhaseProblem | None = None
    phase_mixtures: np.ndarray | None = None
    epochs: np.ndarray | None = None
    kl_to_prior: float | None = None
    nearest_measured_distance: float | None = None
    penalized_value: float | None = None
    active_constraints: dict | None = None
    constraint_violation: float | None = None

    @property
    def extrapolation(self) -> bool | None:
        return None if self.coverage is None else self.coverage.extrapolation

    def notes(self) -> list[str]:
        """One line per caveat of this optimum (extrapolation, optimum fixed by the law), for people."""
        out = []
        if self.coverage is not None and self.coverage.extrapolation:
            out.append("the optimal mixture extrapolates beyond the measured mixtures: " + "; ".join(self.coverage.reasons))
        if self.optimum_fixed_by_law:
            out.append(self.fixed_message)
        return out

    @property
    def at_floor(self) -> np.ndarray:
        return self.mixture <= self.lower + 1e-9

    @property
    def at_ceiling(self) -> np.ndarray:
        return self.mixture >= self.upper - 1e-9

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "mixture": {d: float(x) for d, x in zip(self.domains, self.mixture)},
            "predicted_loss": {t: float(x) for t, x in zip(self.targets, self.losses)},
            "objective": self.objective,
            "objective_value": float(self.value),
            "status": self.status.name,
            "num_steps": int(self.num_steps),
            "kkt_residual": float(self.kkt_residual),
            "model_size_m": self.model_size,
            "n_tokens_b": self.n_tokens,
            "lower": {d: float(x) for d, x in zip(self.domains, self.lower)},
            "upper": {d: float(x) for d, x in zip(self.domains, self.upper)},
            "active": {d: ("floor" if f else "ceiling" if c else "free") for d, f, c in zip(self.domains, self.at_floor, self.at_ceiling)},
            "start_values": [float(v) for v in self.start_values],
            "start_status": status_counts(self.start_status),
            "method": self.config.method,
            **self._coverage_dict(),
            "optimum_fixed_by_law": self.optimum_fixed_by_law,
            "optimum_fixed_message": self.fixed_message,
            "scale_extrapolation": self.scale_extrapolation,
            **self._problem_dict(),
        }

    def _problem_dict(self) -> dict[str, Any]:
        pb = self.problem
        if pb is None:
            return {}
        base = pb.base_domains
        return {
            "phases": list(pb.phases) if pb.n_phases > 1 else None,
            "phase_shares": [float(x) for x in pb.shares] if pb.n_phases > 1 else None,
            "phase_mixtures": {p: {d: float(x) for d, x in zip(base, row)} for p, row in zip(pb.phases, self.phase_mixtures)},
            "epochs": None if self.epochs is None else {d: float(x) for d, x in zip(base, self.epochs)},
            "max_epochs": None if pb.max_epochs is None else {d: float(x) for d, x in zip(base, pb.max_epochs)},
            "prior": None if pb.prior is None else {d: float(x) for d, x in zip(base, pb.prior)},
            "kl_to_prior": self.kl_to_prior,
            "kl_penalty": pb.kl_penalty,
            "max_kl": pb.max_kl,
            "trust_radius": pb.trust_radius,
            "nearest_measured_distance_tv": self.nearest_measured_distance,
            "penalized_objective_value": self.penalized_value,
            "active_constraints": self.active_constraints,
            "constraint_violation": self.constraint_violation,
        }

    def _coverage_dict(self) -> dict[str, Any]:
        if self.coverage is None:
            keys = ("measured_range", "outside_range", "nearest_measured_distance", "typical_measured_spacing",
                    "n_measured_mixtures", "distance", "extrapolation", "extrapolation_reasons")
            return dict.fromkeys(keys)
        return self.coverage.as_dict(self.domains)

    def __repr__(self) -> str:
        mix = ", ".join(f"{d}={x:.4f}" for d, x in zip(self.domains, self.mixture))
        return (
            f"MixtureResult({mix}; {self.objective} = {self.value:.6g} at N={self.model_size:g}M, D={self.n_tokens:g}B; "
            f"status={self.status.name}, kkt={self.kkt_residual:.2g}, starts={status_counts(self.start_status)}"
            + ("" if self.extrapolation is None else f", extrapolation={self.extrapolation}")
            + ("" if self.optimum_fixed_by_law is None else f", optimum_fixed_by_law={self.optimum_fixed_by_law}")
            + ")"
        )


@dataclasses.dataclass
class MixtureEnsemble:
    """Optimal mixtures of every member of a law ensemble (e.g. bootstrap refits), at one scale.

    ``mixtures`` (R, K), ``values`` (R,), ``losses`` (R, V), ``status`` (R,) of each member's best start,
    ``ok`` (R,): members used in summaries (the ensemble's own mask and a finite optimum); ``point``: the optimum
    of a point-estimate law when one was given. Intervals are percentile intervals over the ``ok`` members
    (:func:`mixjax.intervals.percentile_interval`, default level :data:`mixjax.intervals.DEFAULT_LEVEL` = 0.9).
    ``member_extrapolation`` (R,): whether each member's optimum extrapolates beyond the measured mixtures (None
    without them); ``optimum_fixed_by_law`` / ``fixed_message``: whether the usable members' optima coincide while
    their objectives differ (module docstring)."""

    mixtures: np.ndarray
    values: np.ndarray
    losses: np.ndarray
    status: np.ndarray
    ok: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    point: MixtureResult | None = None
    member_extrapolation: np.ndarray | None = None
    optimum_fixed_by_law: bool | None = None
    fixed_message: str | None = None
    #: Constrained searches: the :class:`PhaseProblem`, per-member ``phase_mixtures`` (R, P, K), ``epochs`` (R, K),
    #: ``kl_to_prior`` (R,) and ``nearest_measured_distance`` (R,) (None where not applicable).
    problem: PhaseProblem | None = None
    phase_mixtures: np.ndarray | None = None
    epochs: np.ndarray | None = None
    kl_to_prior: np.ndarray | None = None
    nearest_measured_distance: np.ndarray | None = None

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def _need(self):
        if not self.ok.any():
            raise RuntimeError("no ensemble member has a usable optimum (every member failed or was excluded)")

    def median(self) -> np.ndarray:
        self._need()
        return np.median(self.mixtures[self.ok], axis=0)

    def interval(self, level: float = DEFAULT_LEVEL, what: str = "mixture") -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of ``"mixture"`` (K,), ``"losses"`` (V,) or ``"value"`` over the usable members."""
        self._need()
        arr = {"mixture": self.mixtures, "losses": self.losses, "value": self.values}.get(what)
        if arr is None:
            raise ValueError(f"what must be 'mixture', 'losses' or 'value', got {what!r}")
        return percentile_interval(arr[self.ok], level)

    def as_dict(self, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
        self._need()
        lo, hi = self.interval(level)
        llo, lhi = self.interval(level, "losses")
        vlo, vhi = self.interval(level, "value")
        return {
            "level": level,
            "members": int(self.ok.size),
            "members_used": self.n_ok,
            "member_status": status_counts(self.status),
            "mixture_median": {d: float(x) for d, x in zip(self.domains, self.median())},
            "mixture_interval": {d: [float(a), float(b)] for d, a, b in zip(self.domains, lo, hi)},
            "predicted_loss_interval": {t: [float(a), float(b)] for t, a, b in zip(self.targets, llo, lhi)},
            "objective_value_interval": [float(vlo), float(vhi)],
            "members_extrapolating": None if self.member_extrapolation is None else int(self.member_extrapolation[self.ok].sum()),
            **({} if self.problem is None else {
                "phase_mixture_median": {p: {d: float(x) for d, x in zip(self.problem.base_domains, row)}
                                         for p, row in zip(self.problem.phases, np.median(self.phase_mixtures[self.ok], axis=0))},
                "max_epochs_interval": None if self.epochs is None else [float(x) for x in percentile_interval(self.epochs[self.ok].max(-1), level)],
                "kl_to_prior_interval": None if self.kl_to_prior is None else [float(x) for x in percentile_interval(self.kl_to_prior[self.ok], level)],
            }),
            "optimum_fixed_by_law": self.optimum_fixed_by_law,
            "optimum_fixed_message": self.fixed_message,
        }


# --------------------------------------------------------------------------- entry points
def _n_domains(law) -> int:
    """K for a law: its ``n_domains`` if it has one, else the trailing parameter size that the law accepts as a
    mixture length (tried by shape evaluation, most common size first)."""
    n = getattr(law, "n_domains", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    sizes = [int(np.shape(x)[-1]) for x in jax.tree_util.tree_leaves(eqx.filter(law, eqx.is_array)) if np.ndim(x) >= 1]
    for k in sorted(set(sizes) - {1}, key=lambda k: -sizes.count(k)):
        try:
            jax.eval_shape(law, jnp.zeros(k), jnp.asarray(1.0), jnp.asarray(1.0))
            return k
        except Exception:  # noqa: BLE001  (a shape error: not the mixture length)
            continue
    raise ValueError(f"cannot tell the number of domains of {type(law).__name__}; pass domains=[...]")


def _unpack(law, domains, targets):
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
    if raw_model_size is not None:
        if model_size is not None:
            raise ValueError("give model_size (millions of parameters) or raw_model_size (parameters), not both")
        model_size = float(model_size_to_law(raw_model_size))
    if raw_n_tokens is not None:
        if n_tokens is not None:
            raise ValueError("give n_tokens (billions of tokens) or raw_n_tokens (tokens), not both")
        n_tokens = float(tokens_to_law(raw_n_tokens))
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


class PhasedMixtureError(ValueError):
    """Suggested runs asked of a table or law with several training phases: its mixture is a distribution over
    (phase, domain) pairs whose per-phase sums are fixed, which the candidate draws of :func:`mixjax.suggest` do not
    keep (:func:`optimize_mixture` does)."""


def check_single_phase(*sources) -> None:
    """Raise :class:`PhasedMixtureError` when a fit, a bootstrap result or a table among ``sources`` has more than one
    training phase (recorded as ``info["phases"]`` or ``.phases``)."""
    for src in sources:
        infos = (getattr(src, "info", None), getattr(getattr(src, "point", None), "info", None))
        phases = [i.get("phases") for i in infos if isinstance(i, dict)] + [getattr(src, "phases", None)]
        for ph in phases:
            if ph is not None and len(ph) > 1:
                raise PhasedMixtureError(
                    f"the mixtures here span {len(ph)} training phases ({', '.join(map(str, ph))}); suggesting the next "
                    "runs for such a table needs candidates drawn per phase, which mixjax does not provide yet. Fit, "
                    "compare and optimize_mixture (a simplex per phase) work; choose the next mixtures outside mixjax for now"
                )


def _scale_report(source, law, N: float, D: float) -> dict | None:
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


def _setup(law, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights, target,
           floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched, measured=None, within_measured=False):
    law1 = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, law) if batched else law
    K = len(domains) if domains is not None else _n_domains(law1)
    domains = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(domains) != K:
        raise ValueError(f"{len(domains)} domain names for a law of {K} domains")
    N, D = _scale(law1, model_size, n_tokens, raw_model_size, raw_n_tokens)
    dtype = jnp.result_type(*[x for x in jax.tree_util.tree_leaves(eqx.filter(law1, eqx.is_inexact_array))] or [float])
    V = jax.eval_shape(law1, jnp.zeros(K, dtype), jnp.asarray(N, dtype), jnp.asarray(D, dtype)).shape[0]
    targets = tuple(targets) if targets is not None else (domains if V == K else tuple(f"target{j}" for j in range(V)))
    if len(targets) != V:
        raise ValueError(f"{len(targets)} target names for a law with {V} targets")
    fn, w, desc = objective_spec(V, objective, target_weights, target, targets)
    unit = TOKENS_UNIT if raw_n_tokens is not None else 1.0
    lo, hi = mixture_bounds(K, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs,
                            n_tokens=D * unit, domains=domains)
    if type(law1).min_weight > 0:  # the law diverges below its min_weight: an implicit floor on every domain
        try:
            lo, hi = mixture_bounds(K, floors=np.maximum(lo, type(law1).min_weight), ceilings=hi, domains=domains)
        except InfeasibleMixtureError as e:
            raise InfeasibleMixtureError(f"law {type(law1).name} is only meaningful with every weight at least {type(law1).min_weight:g} "
                                         f"(its min_weight; it diverges at 0): {e}") from None
    if measured is not None and callable(getattr(measured, "align", None)) and domains is not None and getattr(measured, "n_domains", 0):
        measured = measured.align(domains, to="the law")  # a table's mixtures, matched to the law's domains by name
    if measured is not None and hasattr(measured, "columns") and hasattr(measured, "iloc"):  # a DataFrame: by name
        measured = mixture_frame(measured, domains)
    H = None if measured is None else measured_mixtures(measured, K)
    if within_measured:
        if H is None:
            raise ValueError("within_measured=True needs the measured mixtures: pass measured= (an (n, K) array or the training data)")
        lo, hi = _within_measured(lo, hi, H, domains)
    cfg = MixtureConfig(method=method, steps=steps, step_size=step_size)
    return dict(K=K, domains=domains, targets=targets, N=N, D=D, dtype=dtype, fn=fn, w=w, desc=desc, lo=lo, hi=hi, cfg=cfg, H=H)


class DegenerateOptimumWarning(UserWarning):
    """The answer does not come from the law: the bounds leave one mixture, or the law ignores the scale asked for."""


def _warn_degenerate(law, lo, hi, size_given: bool, tokens_given: bool) -> None:
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


def _best(values, status):
    v = np.where((status != int(Status.nonfinite)) & np.isfinite(values), values, np.inf)
    return np.argmin(v, axis=-1)


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
        give raw counts as ``raw_model_size`` (parameters) / ``raw_n_tokens`` (tokens).
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
        to them (``coverage``, module docstring) and warns (:class:`ExtrapolationWarning`) on an extrapolation.
      within_measured: also keep every domain inside its measured [min, max] (intersected with the floors and
        ceilings; :class:`InfeasibleMixtureError` if nothing is left).
      check_fixed: test whether the optimum depends on the law's parameters at all (``optimum_fixed_by_law``; two
        more solves with the same compiled program); warns (:class:`FixedOptimumWarning`) when it does not.

    Phases, repetition caps, KL and trust region (module docstring, "Constrained searches"): a law fitted on a
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
    if measured is None:
        measured = _measured_of(law)
    if _wants_constrained(law, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius):
        law_, domains_, targets_ = _unpack(law, domains, targets)
        return _optimize_constrained(
            law_, law, measured, model_size=model_size, n_tokens=n_tokens, objective=objective, target_weights=target_weights,
            target=target, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs, starts=starts,
            seed=seed, steps=steps, method=method, step_size=step_size, init=init, raw_model_size=raw_model_size,
            raw_n_tokens=raw_n_tokens, domains=domains_, targets=targets_, throw=throw, phase_shares=phase_shares, prior=prior,
            kl_penalty=kl_penalty, max_kl=max_kl, trust_radius=trust_radius)
    source = law
    law, domains, targets = _unpack(law, domains, targets)
    s = _setup(law, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights,
               target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched=False,
               measured=measured, within_measured=within_measured)
    _warn_degenerate(law, s["lo"], s["hi"], model_size is not None or raw_model_size is not None,
                     n_tokens is not None or raw_n_tokens is not None)
    dt = s["dtype"]
    lo, hi = jnp.asarray(s["lo"], dt), jnp.asarray(s["hi"], dt)
    h0 = _starts(s["K"], starts, seed, s["lo"], s["hi"], init, dt)
    args = (h0, lo, hi, jnp.asarray(s["N"], dt), jnp.asarray(s["D"], dt), jnp.asarray(s["w"], dt), s["fn"], s["cfg"])
    out = jax.tree_util.tree_map(np.asarray, _solve_starts(law, *args))
    i = int(_best(out.value, out.status))
    status = Status(int(out.status[i]))
    if throw and status == Status.nonfinite:
        raise RuntimeError(f"every one of {starts} starts gave a non-finite objective at N={s['N']:g}M, D={s['D']:g}B; check the law's parameters")
    res = MixtureResult(
        mixture=out.mixture[i], losses=out.losses[i], value=float(out.value[i]), status=status, num_steps=int(out.num_steps[i]),
        kkt_residual=float(out.kkt[i]), start_values=out.value, start_mixtures=out.mixture, start_status=out.status,
        lower=s["lo"], upper=s["hi"], domains=s["domains"], targets=s["targets"], model_size=s["N"], n_tokens=s["D"],
        objective=s["desc"], config=s["cfg"], scale_extrapolation=_scale_report(source, law, s["N"], s["D"]),
    )
    if status == Status.nonfinite:
        return res
    if s["H"] is not None:
        res.coverage = measured_coverage(res.mixture, s["H"], domains=s["domains"])
        if res.coverage.extrapolation:
            warnings.warn(res.notes()[0], ExtrapolationWarning, stacklevel=2)
    if check_fixed:

        def solve(law_p):
            o = jax.tree_util.tree_map(np.asarray, _solve_starts(law_p, *args))
            j = int(_best(o.value, o.status))
            return o.mixture[j], float(o.value[j]), bool(o.status[j] != int(Status.nonfinite) and np.isfinite(o.value[j]))

        res.optimum_fixed_by_law, res.fixed_message = _fixed_check(solve, law, res.mixture, res.value, s["lo"], s["hi"], seed, dt)
        if res.optimum_fixed_by_law:
            warnings.warn(res.fixed_message, FixedOptimumWarning, stacklevel=2)
    return res


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
    ``nearest_measured_distance`` per member. Other arguments as in :func:`optimize_mixture`."""
    source = laws
    if measured is None:
        measured = _measured_of(laws)
    constrained = _wants_constrained(laws, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius) or (
        point is not None and _phases_of(point)[0] is not None)
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
    if constrained:
        good = np.flatnonzero(ok)
        if good.size and not ok.all():
            ref = int(good[0])
            laws = jax.tree_util.tree_map(lambda x: jnp.where(jnp.asarray(ok).reshape((R,) + (1,) * (x.ndim - 1)), x, x[ref]) if eqx.is_inexact_array(x) else x, laws)
        return _optimize_constrained_ensemble(
            laws, R, ok, point, measured, model_size=model_size, n_tokens=n_tokens, objective=objective, target_weights=target_weights,
            target=target, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs, starts=starts,
            seed=seed, steps=steps, method=method, step_size=step_size, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens,
            domains=domains, targets=targets, phase_shares=phase_shares, prior=prior, kl_penalty=kl_penalty, max_kl=max_kl,
            trust_radius=trust_radius, source=source if point is None else point, check_fixed=check_fixed)
    s = _setup(laws, domains, targets, model_size, n_tokens, raw_model_size, raw_n_tokens, objective, target_weights,
               target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched=True,
               measured=measured, within_measured=within_measured)
    dt = s["dtype"]
    # failed members may carry non-finite parameters; replace them by member 0's so no NaN enters the batch
    good = np.flatnonzero(ok)
    if good.size and not ok.all():
        ref = int(good[0])
        laws = jax.tree_util.tree_map(lambda x: jnp.where(jnp.asarray(ok).reshape((R,) + (1,) * (x.ndim - 1)), x, x[ref]) if eqx.is_inexact_array(x) else x, laws)
    h0 = _starts(s["K"], starts, seed, s["lo"], s["hi"], None, dt)
    lo, hi = jnp.asarray(s["lo"], dt), jnp.asarray(s["hi"], dt)
    out = _solve_ensemble(laws, h0, lo, hi, jnp.asarray(s["N"], dt), jnp.asarray(s["D"], dt), jnp.asarray(s["w"], dt), s["fn"], s["cfg"])
    out = jax.tree_util.tree_map(np.asarray, out)
    idx = _best(out.value, out.status)
    pick = lambda a: np.take_along_axis(a, idx.reshape((R, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]  # noqa: E731
    status = pick(out.status)
    values = pick(out.value)
    usable = ok & (status != int(Status.nonfinite)) & np.isfinite(values)
    pt = None
    if point is not None:
        pt = optimize_mixture(point, model_size=s["N"], n_tokens=s["D"], objective=objective, target_weights=target_weights,
                              target=target, floors=s["lo"], ceilings=s["hi"], starts=starts, seed=seed, steps=steps,
                              method=method, step_size=step_size, domains=s["domains"], targets=s["targets"],
                              measured=s["H"], check_fixed=check_fixed)
    mixtures = pick(out.mixture)
    ens = MixtureEnsemble(
        mixtures=mixtures, values=values, losses=pick(out.losses), status=status, ok=usable, lower=s["lo"], upper=s["hi"],
        domains=s["domains"], targets=s["targets"], model_size=s["N"], n_tokens=s["D"], objective=s["desc"], point=pt,
    )
    if s["H"] is not None:
        sp = _typical_spacing(s["H"])
        ens.member_extrapolation = np.array(
            [bool(u) and measured_coverage(m, s["H"], typical_spacing=sp).extrapolation for m, u in zip(mixtures, usable)])
        if pt is None and ens.member_extrapolation[usable].any():
            warnings.warn(f"{int(ens.member_extrapolation[usable].sum())} of {int(usable.sum())} members' optimal mixtures "
                          "extrapolate beyond the measured mixtures", ExtrapolationWarning, stacklevel=2)
    if check_fixed:
        ens.optimum_fixed_by_law, ens.fixed_message = _fixed_across_members(mixtures[usable], values[usable], dt)
        if ens.optimum_fixed_by_law and not (pt is not None and pt.optimum_fixed_by_law):
            warnings.warn(ens.fixed_message, FixedOptimumWarning, stacklevel=2)
    return ens


# --------------------------------------------------------------------------- phases, repetition caps, KL, trust region
#: A constraint violated by at most this much counts as satisfied (repetition caps: epochs / max_epochs - 1; KL
#: bound: nats; trust region: total variation); the solver drives violations far below it.
CONSTRAINT_TOL = 1e-7
_RHO0 = 10.0
# Every term is always compiled in (an unused cap or KL bound is this large, an unused penalty 0), so that one program
# serves every combination of constraints at a given size.
_UNUSED = 1e30
_RHO_MAX = 1e6
_OUTER_STEPS = 40
_INNER_STEPS = 500  # per augmented-Lagrangian iteration (warm-started)


@dataclasses.dataclass(frozen=True)
class PhaseProblem:
    """The feasible set and penalties of a constrained mixture search, with the mixture in blocks by phase.

    ``phases`` (P), ``shares`` s (P,), ``base_domains`` (K), ``index`` (P, K): the column of the law's flattened
    mixture holding (phase p, domain k). ``lower`` / ``upper`` (P, K): bounds on the per-phase weights w_p.
    ``caps`` (K,) or None: repetition caps on the token fraction of each domain, ``sum_p s_p w_pk <= caps_k`` with
    ``caps_k = max_epochs_k U_k / tokens`` (folded into ``upper`` when P = 1). ``prior`` (K,) or None, ``kl_penalty``
    lambda >= 0, ``max_kl`` B or None, ``trust_radius`` r or None: see :func:`optimize_mixture`."""

    phases: tuple[str, ...]
    shares: np.ndarray
    base_domains: tuple[str, ...]
    index: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    caps: np.ndarray | None
    unique_tokens: np.ndarray | None
    max_epochs: np.ndarray | None
    tokens: float | None
    prior: np.ndarray | None
    kl_penalty: float
    max_kl: float | None
    trust_radius: float | None

    @property
    def n_phases(self) -> int:
        return len(self.phases)

    @property
    def coupled(self) -> bool:
        """Whether constraints beyond the per-phase simplices remain (solved with an augmented Lagrangian)."""
        return self.caps is not None or self.max_kl is not None or self.trust_radius is not None

    def flat(self, z) -> np.ndarray:
        """The law's flattened mixture h from the phase-major blocks z (P * K,) (or (..., P * K))."""
        z = np.asarray(z)
        out = np.empty_like(z)
        out[..., self.index.reshape(-1)] = z
        return out

    def blocks(self, h) -> np.ndarray:
        """Phase-major blocks z (..., P * K) from the law's flattened mixture h."""
        return np.asarray(h)[..., self.index.reshape(-1)]

    def epochs(self, z) -> np.ndarray | None:
        """Epochs over each domain's unique tokens at the target tokens: tokens * sum_p s_p w_pk / U_k."""
        if self.unique_tokens is None:
            return None
        frac = np.asarray(z).reshape(np.shape(z)[:-1] + self.lower.shape).sum(-2)
        return self.tokens * frac / self.unique_tokens

    def kl(self, z) -> np.ndarray | None:
        """sum_p s_p KL(w_p || prior) (nats), or None without a prior."""
        if self.prior is None:
            return None
        z = np.asarray(z, np.float64)
        sq = (self.shares[:, None] * self.prior[None, :]).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(z > 0, z * np.log(np.where(z > 0, z, 1.0) / np.where(sq > 0, sq, 1.0)), 0.0)
        return t.sum(-1)


def _phase_layout(domains: Sequence[str], phases, phase_shares):
    """(phases, shares, base domains, (P, K) index) of a flattened mixture over ``domain@phase`` names."""
    names = list(domains)
    if phases is None and phase_shares is not None and len(np.atleast_1d(phase_shares)) > 1:
        seen = []
        for d in names:
            if "@" not in d:
                raise ValueError(f"phase_shares given but domain {d!r} has no '@phase' suffix; phased mixtures name their "
                                 "columns domain@phase")
            ph = d.rsplit("@", 1)[1]
            if ph not in seen:
                seen.append(ph)
        phases = seen
    if phases is None or len(phases) <= 1:
        return ("all",), np.ones(1), tuple(names), np.arange(len(names))[None, :]
    phases = tuple(str(p) for p in phases)
    if phase_shares is None:
        raise ValueError(f"the mixture spans {len(phases)} training phases ({', '.join(phases)}) but no phase shares are "
                         "known: pass phase_shares= (each phase's share of the training tokens)")
    s = np.asarray(phase_shares, np.float64).reshape(-1)
    if s.shape != (len(phases),) or not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"phase_shares must be {len(phases)} finite numbers > 0 (one per phase), got {s.tolist()}")
    if abs(s.sum() - 1) > 1e-6:
        raise ValueError(f"phase_shares sum to {s.sum():.8g}; expected 1 (each phase's share of the training tokens)")
    suffix = "@" + phases[0]
    base = [d[: -len(suffix)] for d in names if d.endswith(suffix)]
    col = {d: j for j, d in enumerate(names)}
    try:
        idx = np.array([[col[f"{d}@{p}"] for d in base] for p in phases], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"no mixture column {e.args[0]!r}: every domain needs one column per phase (domain@phase)") from None
    if idx.size != len(names):
        raise ValueError(f"{len(names)} mixture columns do not split into {len(phases)} phases of {len(base)} domains")
    return phases, s, tuple(base), idx


def _per_phase(value, phases, base, label: str, default: float) -> np.ndarray:
    """(P, K) per-phase values from None, a number, K or (P, K) numbers, or ``{domain or domain@phase: value}``."""
    P, K = len(phases), len(base)
    out = np.full((P, K), float(default))
    if value is None:
        return out
    if isinstance(value, Mapping):
        for key, v in value.items():
            if key in base:
                out[:, base.index(key)] = float(v)
            elif "@" in str(key) and str(key).rsplit("@", 1)[0] in base and str(key).rsplit("@", 1)[1] in phases:
                d, p = str(key).rsplit("@", 1)
                out[phases.index(p), base.index(d)] = float(v)
            else:
                raise ValueError(f"{label}: unknown domain {key!r}; domains are {list(base)}" + ("" if P == 1 else f" (or domain@phase, phases {list(phases)})"))
        return out
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        out[:] = float(arr)
    elif arr.shape == (K,):
        out[:] = arr[None, :]
    elif arr.shape == (P, K):
        out = arr.copy()
    else:
        raise ValueError(f"{label} has shape {arr.shape}; expected a number, {K} values" + ("" if P == 1 else f", ({P}, {K}) values")
                         + " or a {domain: value} mapping")
    if np.isnan(out).any():
        raise ValueError(f"{label} contains NaN")
    return out


def _prior(prior, base, natural) -> np.ndarray:
    """The prior mixture (K,) over the base domains, checked: every domain present, >= 0, summing to 1."""
    K = len(base)
    if isinstance(prior, str):
        if prior != "natural":
            raise ValueError(f"prior must be 'natural', a {{domain: weight}} mapping or {K} weights, got {prior!r}")
        prior = None
    if prior is None:
        if natural is None:
            raise ValueError("a KL penalty or bound needs a prior mixture: pass prior={domain: weight} (the natural "
                             "distribution is used by default when the unique tokens per domain are known)")
        q = np.asarray(natural, np.float64) / np.sum(natural)
        return q
    if isinstance(prior, Mapping):
        unknown = [k for k in prior if k not in base]
        if unknown:
            raise ValueError(f"prior: unknown domain(s) {unknown}; domains are {list(base)}")
        missing = [d for d in base if d not in prior]
        if missing:
            raise ValueError(f"prior misses {len(missing)} domain(s): {missing}; give a weight (possibly 0) for every domain")
        q = np.array([float(prior[d]) for d in base])
    else:
        q = np.asarray(prior, np.float64).reshape(-1)
        if q.shape != (K,):
            raise ValueError(f"prior has {q.size} weights; expected {K} (one per domain) or a {{domain: weight}} mapping")
    if not np.isfinite(q).all() or (q < 0).any():
        i = int(np.flatnonzero(~np.isfinite(q) | (q < 0))[0])
        raise ValueError(f"prior weight of domain {base[i]!r} is {q[i]!r}; expected a finite number >= 0")
    if abs(q.sum() - 1) > 1e-6:
        raise ValueError(f"prior weights sum to {q.sum():.8g}; expected 1 (within 1e-6)")
    return q


def phase_problem(
    domains: Sequence[str],
    *,
    phases=None,
    phase_shares=None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    n_tokens: float | None = None,
    prior=None,
    kl_penalty: float | None = None,
    max_kl: float | None = None,
    trust_radius: float | None = None,
    min_weight: float = 0.0,
    natural=None,
) -> PhaseProblem:
    """The checked feasible set of a constrained mixture search (:class:`PhaseProblem`), without a law.

    ``domains``: the law's flattened mixture columns (``domain@phase`` when phased); ``phases`` / ``phase_shares``
    describe the phases (one phase when both are None). Floors and ceilings bound the per-phase weights w_p (a
    number, K numbers, (P, K) numbers, or ``{domain: v}`` / ``{domain@phase: v}``). ``unique_tokens`` U (K numbers
    or ``{domain: U}``, in the units of ``n_tokens``) with ``max_epochs`` E (default 1): repetition caps
    ``n_tokens * sum_p s_p w_pk <= E_k U_k``. ``natural``: the natural distribution (K,) used when a KL term asks
    for a prior and none is given. ``min_weight``: the law's implicit floor on every flattened weight. Raises
    :class:`InfeasibleMixtureError` naming the domains when the bounds or caps admit no mixture."""
    phases, s, base, idx = _phase_layout(domains, phases, phase_shares)
    P, K = idx.shape
    lo = _per_phase(floors, phases, base, "floors", 0.0)
    hi = np.minimum(_per_phase(ceilings, phases, base, "ceilings", 1.0), 1.0)
    for arr, label in ((lo, "floor"), (hi, "ceiling")):
        if (arr < 0).any():
            p, k = np.argwhere(arr < 0)[0]
            raise ValueError(f"{label} of domain {base[k]!r}{'' if P == 1 else ' in ' + phases[p]} is {arr[p, k]!r}; weights are >= 0")
    if min_weight > 0:
        lo = np.maximum(lo, min_weight / s[:, None])
    caps = U = E = tokens = None
    if unique_tokens is not None:
        if n_tokens is None or not (math.isfinite(n_tokens) and n_tokens > 0):
            raise ValueError(f"unique_tokens needs the target token count n_tokens > 0, got {n_tokens!r}")
        U = _per_domain(unique_tokens, K, base, "unique_tokens", np.inf)
        if (U <= 0).any():
            i = int(np.flatnonzero(U <= 0)[0])
            raise ValueError(f"unique_tokens of domain {base[i]!r} is {U[i]!r}; expected > 0")
        E = _per_domain(max_epochs, K, base, "max_epochs", 1.0)
        if (E <= 0).any():
            raise ValueError(f"max_epochs must be > 0, got {max_epochs!r}")
        tokens = float(n_tokens)
        caps = np.minimum(E * U / tokens, 1.0)
        hi = np.minimum(hi, caps[None, :] / s[:, None])  # implied by the cap: s_p w_pk <= caps_k
    elif max_epochs is not None:
        raise ValueError("max_epochs needs unique_tokens (the unique tokens available per domain)")
    q = None
    lam = 0.0 if kl_penalty is None else float(kl_penalty)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"kl_penalty must be a finite number >= 0, got {kl_penalty!r}")
    if max_kl is not None and not (math.isfinite(float(max_kl)) and float(max_kl) > 0):
        raise ValueError(f"max_kl must be a finite number > 0 (nats), got {max_kl!r}")
    if trust_radius is not None and not (math.isfinite(float(trust_radius)) and 0 < float(trust_radius) <= 1):
        raise ValueError(f"trust_radius must lie in (0, 1] (a total-variation distance), got {trust_radius!r}")
    if lam > 0 or max_kl is not None or (prior is not None and not isinstance(prior, str)):
        if natural is None and U is not None and np.isfinite(U).all():
            natural = U
        q = _prior(prior, base, natural)
        hi = np.where(q[None, :] > 0, hi, 0.0)  # KL(w || q) is finite only with w = 0 where q = 0
    names = [[base[k] if P == 1 else f"{base[k]}@{phases[p]}" for k in range(K)] for p in range(P)]
    bad = np.argwhere(lo > hi * (1 + 1e-12) + 1e-15)
    if bad.size:
        why = lambda p, k: (" from the repetition cap" if caps is not None and hi[p, k] >= caps[k] / s[p] - 1e-15 else  # noqa: E731
                            " (prior weight 0)" if q is not None and q[k] == 0 else "")
        raise InfeasibleMixtureError("floor above ceiling for domain(s): " + ", ".join(
            f"{names[p][k]} (floor {lo[p, k]:.6g} > ceiling {hi[p, k]:.6g}{why(p, k)})" for p, k in bad))
    if caps is not None and P > 1:  # before the per-phase sums: the caps also lower the ceilings
        need = (s[:, None] * lo).sum(0)
        over = np.flatnonzero(need > caps * (1 + 1e-12) + 1e-15)
        if over.size:
            raise InfeasibleMixtureError("repetition caps below the floors for domain(s): " + ", ".join(
                f"{base[k]} (floors take {need[k] * tokens / U[k]:.4g} epochs > max_epochs {E[k]:g})" for k in over))
        room = np.minimum(caps, (s[:, None] * hi).sum(0))
        if room.sum() < 1 - 1e-12:
            order = np.argsort(room)[: min(K, 8)]
            raise InfeasibleMixtureError(
                f"the repetition caps admit at most {room.sum():.4g} of the tokens (need 1): max_epochs x unique tokens is "
                f"too small at {tokens:.4g} tokens; tightest domains: " + ", ".join(
                    f"{base[k]} (at most {room[k]:.3g} of the tokens)" for k in order))
    hi = np.maximum(hi, lo)
    for p in range(P):
        where = "" if P == 1 else f" in {phases[p]}"
        if lo[p].sum() > 1 + 1e-12:
            raise InfeasibleMixtureError(f"floors{where} sum to {lo[p].sum():.6g} > 1: " + ", ".join(
                f"{base[k]}={lo[p, k]:.4g}" for k in np.flatnonzero(lo[p] > 0)))
        if hi[p].sum() < 1 - 1e-12:
            raise InfeasibleMixtureError(f"ceilings{where} sum to {hi[p].sum():.6g} < 1, no mixture fits: " + ", ".join(
                f"{base[k]}={hi[p, k]:.4g}" for k in range(K)))
    if P == 1:
        caps = None  # folded into the ceilings
    return PhaseProblem(phases=tuple(phases), shares=s, base_domains=tuple(base), index=idx, lower=lo, upper=hi, caps=caps,
                        unique_tokens=U, max_epochs=E, tokens=tokens, prior=q, kl_penalty=lam,
                        max_kl=None if max_kl is None else float(max_kl),
                        trust_radius=None if trust_radius is None else float(trust_radius))


class _Shared(eqx.Module):
    """Data every member of a constrained search shares (arrays) and which terms are on (static)."""

    N: jax.Array
    D: jax.Array
    w: jax.Array
    inv: jax.Array  # law's h = z[inv]
    log_sq: jax.Array  # log(s_p q_k) per block entry (0 where unused)
    lam: jax.Array
    caps: jax.Array
    max_kl: jax.Array
    radius: jax.Array
    objective: Any = eqx.field(static=True)
    P: int = eqx.field(static=True)
    use_kl: bool = eqx.field(static=True)
    use_caps: bool = eqx.field(static=True)
    use_max_kl: bool = eqx.field(static=True)
    use_trust: bool = eqx.field(static=True)


def _kl_blocks(z, log_sq):
    """sum z log(z / (s q)) over the blocks (= sum_p s_p KL(w_p || q)), 0 log 0 = 0, finite gradient at 0."""
    pos = z > 0
    zz = jnp.where(pos, z, 1.0)
    return jnp.sum(jnp.where(pos, zz * (jnp.log(zz) - log_sq), 0.0))


def _parts(z, law, center, sh: _Shared):
    """(objective J, losses, KL, constraint values g) of the block mixture z."""
    losses = law(z[sh.inv], sh.N, sh.D)
    J = sh.objective(losses, sh.w)
    kl = _kl_blocks(z, sh.log_sq) if (sh.use_kl or sh.use_max_kl) else jnp.zeros((), z.dtype)
    g = []
    if sh.use_caps:  # relative: epochs / max_epochs - 1
        g.append(z.reshape(sh.P, -1).sum(0) / sh.caps - 1.0)
    if sh.use_max_kl:
        g.append((kl - sh.max_kl)[None])
    g = jnp.concatenate(g) if g else jnp.zeros((0,), z.dtype)
    return J, losses, kl, g


def _alm_value(z, member, sh: _Shared):
    """Augmented Lagrangian of the constrained search: J + lambda KL + (1 / 2 rho) sum_j (max(0, mu_j + rho g_j)^2 - mu_j^2)."""
    law, center, mu, rho = member
    if sh.use_trust:  # the point carries the trust region's centre (SimplexDescent.radius)
        z = z[: z.shape[0] // 2]
    J, _, kl, g = _parts(z, law, center, sh)
    val = J + (sh.lam * kl if sh.use_kl else 0.0)
    if g.shape[0]:
        val = val + jnp.sum(jnp.maximum(0.0, mu + rho * g) ** 2 - mu**2) / (2.0 * rho)
    return val


class _PhaseSolved(eqx.Module):
    z: jax.Array
    J: jax.Array
    kl: jax.Array
    g: jax.Array
    losses: jax.Array
    status: jax.Array
    num_steps: jax.Array
    kkt: jax.Array


@eqx.filter_jit
def _solve_phase(z0, members, sh: _Shared, lo, hi, shares, config: MixtureConfig, steps):
    law, center, _, _ = members
    solver = SimplexDescent(lo, hi, mirror=config.method == "mirror", step_size=config.step_size, shares=shares,
                            radius=sh.radius if sh.use_trust else None)
    y0 = jnp.concatenate([z0, center], axis=1) if sh.use_trust else z0
    sol = _engine.minimize(solver, _alm_value, y0, members, sh, max_steps=steps, ftol=config.ftol, gtol=config.gtol,
                           window=config.patience)
    z = sol.y[:, : z0.shape[1]]
    J, losses, kl, g = jax.vmap(lambda z, lw, c: _parts(z, lw, c, sh))(z, law, center)
    ok = jnp.isfinite(sol.value) & jnp.isfinite(J) & jnp.all(jnp.isfinite(losses), axis=-1)
    status = jnp.where(ok, sol.status, int(Status.nonfinite))
    return _PhaseSolved(z, J, kl, g, losses, status, sol.num_steps, sol.rel_grad * jnp.abs(sol.value))


def _run_constrained(laws, z0, centers, sh: _Shared, prob: PhaseProblem, config: MixtureConfig, dtype):
    """Augmented Lagrangian over the coupled constraints (caps, KL bound, trust region), the inner problems on the
    product of per-phase capped simplices by :class:`SimplexDescent`, warm-started; every member (law, start,
    trust-region centre) of the batch carries its own multipliers. Returns numpy arrays and the multipliers."""
    B = z0.shape[0]
    G = (prob.index.shape[1] if sh.use_caps else 0) + int(sh.use_max_kl)
    lo, hi = jnp.asarray(prob.lower, dtype), jnp.asarray(prob.upper, dtype)
    shares = jnp.asarray(prob.shares, dtype) if prob.n_phases > 1 else None
    if shares is None:
        lo, hi = lo[0], hi[0]
    mu = np.zeros((B, G))
    rho = np.full(B, _RHO0)
    z = z0
    prev = np.full(B, np.inf)
    prev_val = np.full(B, np.inf)
    coupled = prob.coupled and not (prob.caps is None and prob.max_kl is None)  # the trust region is in the projection
    outer = _OUTER_STEPS if coupled else 1
    steps = min(config.steps, _INNER_STEPS) if coupled else config.steps
    for _ in range(outer):
        res = _solve_phase(z, (laws, centers, jnp.asarray(mu, dtype), jnp.asarray(rho, dtype)), sh, lo, hi, shares, config,
                           jnp.asarray(steps, jnp.int32))
        out = {f.name: np.asarray(getattr(res, f.name)) for f in dataclasses.fields(res)}
        out["viol"] = np.max(np.maximum(out["g"], 0.0), axis=1, initial=0.0)
        z = res.z
        if not coupled:
            break
        g = out["g"].astype(np.float64)
        viol = np.max(np.maximum(g, 0.0), axis=1)
        new_mu = np.maximum(0.0, mu + rho[:, None] * g)
        dual = np.max(np.abs(new_mu - mu), axis=1) / np.maximum(1.0, np.max(new_mu, axis=1))
        mu = new_mu
        bad = out["status"] == int(Status.nonfinite)
        val = out["J"] + prob.kl_penalty * out["kl"]
        flat = np.abs(val - prev_val) <= 1e-9 * np.maximum(1.0, np.abs(val))
        prev_val = val
        done = bad | ((viol <= 0.1 * CONSTRAINT_TOL) & ((dual <= 1e-6) | flat))
        rho = np.where((viol > 0.25 * prev) & (viol > 0.1 * CONSTRAINT_TOL), np.minimum(rho * 10.0, _RHO_MAX), rho)
        prev = viol
        if done.all():
            break
    return out, mu


def _centre_starts(prob: PhaseProblem, n: int, seed: int, dtype, init=None) -> np.ndarray:
    """Start mixtures in blocks: the KL projection of the uniform mixture per phase, then Dirichlet(1) draws."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    P, K = prob.lower.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n, P * K))
    for p in range(P):
        draws = rng.dirichlet(np.ones(K), size=n)
        draws[0] = 1.0 / K
        draws = 0.98 * draws + 0.02 / K
        w = _project_kl_batch(jnp.log(jnp.asarray(draws, dtype)), jnp.asarray(prob.lower[p], dtype), jnp.asarray(prob.upper[p], dtype))
        out[:, p * K : (p + 1) * K] = np.asarray(w) * prob.shares[p]
    if init is not None:
        z = prob.blocks(np.asarray(init, np.float64).reshape(-1))
        for p in range(P):
            w = _project_batch(jnp.asarray(z[None, p * K : (p + 1) * K] / prob.shares[p], dtype), jnp.asarray(prob.lower[p], dtype),
                               jnp.asarray(prob.upper[p], dtype))
            out[0, p * K : (p + 1) * K] = np.asarray(w[0]) * prob.shares[p]
    return out


def _toward(prob: PhaseProblem, centre: np.ndarray, target: np.ndarray, r: float, dtype) -> np.ndarray:
    """A start inside the trust region of ``centre``: the point 0.9 r from it towards ``target`` (in total variation),
    projected onto the per-phase bounds."""
    d = 0.5 * np.abs(target - centre).sum()
    t = 1.0 if d <= 0.9 * r else 0.9 * r / d
    z = centre + t * (target - centre)
    P, K = prob.lower.shape
    out = np.empty_like(z)
    for p in range(P):
        blk = slice(p * K, (p + 1) * K)
        w = _project_batch(jnp.asarray(z[None, blk] / prob.shares[p], dtype), jnp.asarray(prob.lower[p], dtype), jnp.asarray(prob.upper[p], dtype))
        out[blk] = np.asarray(w[0]) * prob.shares[p]
    return out


def _shared(prob: PhaseProblem, N, D, w, fn, dtype, trust: bool) -> _Shared:
    P, K = prob.lower.shape
    if prob.prior is not None:
        with np.errstate(divide="ignore"):
            lsq = np.log(prob.shares[:, None] * prob.prior[None, :]).reshape(-1)
        lsq = np.where(np.isfinite(lsq), lsq, 0.0)
    else:
        lsq = np.zeros(P * K)
    a = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return _Shared(N=a(N), D=a(D), w=a(w), inv=jnp.asarray(np.argsort(prob.index.reshape(-1))), log_sq=a(lsq),
                   lam=a(prob.kl_penalty), caps=a(prob.caps if prob.caps is not None else np.full(K, _UNUSED)),
                   max_kl=a(_UNUSED if prob.max_kl is None else prob.max_kl), radius=a(prob.trust_radius or 0.0), objective=fn,
                   P=P, use_kl=True, use_caps=True, use_max_kl=True, use_trust=trust)


def _feasible(out, tol: float = CONSTRAINT_TOL) -> np.ndarray:
    return (out["status"] != int(Status.nonfinite)) & (out["viol"] <= tol) & np.isfinite(out["J"])


def _penalized(out, prob: PhaseProblem) -> np.ndarray:
    return out["J"] + (prob.kl_penalty * out["kl"] if prob.kl_penalty > 0 else 0.0)


def _tile_law(law, n: int):
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape) if eqx.is_array(x) else x, law)


def _pick(out, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], out)


def _solve_problem(laws, R: int, prob: PhaseProblem, H_blocks, N, D, w, fn, cfg, starts, seed, dtype, init=None):
    """Best feasible optimum of each of R member laws (batched, leading axis R): stage 1 from ``starts`` start
    mixtures without the trust region; stage 2, for members whose optimum lies farther than the radius from every
    measured mixture, within the ball of each of the ``trust_candidates`` measured mixtures nearest that optimum.
    Returns (out (R, ...), feasible (R,), trust stage used (R,))."""
    S = starts
    z0 = _centre_starts(prob, S, seed, dtype, init)
    B = R * S
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, S, axis=0) if eqx.is_array(x) else x, laws)
    zeros = jnp.zeros((B, z0.shape[1]), dtype)
    sh = _shared(prob, N, D, w, fn, dtype, trust=False)
    out, _ = _run_constrained(members, jnp.asarray(np.tile(z0, (R, 1)), dtype), zeros, sh, prob, cfg, dtype)
    out = {k: v.reshape((R, S) + v.shape[1:]) for k, v in out.items() if k != "g"}
    feas = _feasible(out)
    val = np.where(feas, _penalized(out, prob), np.inf)
    best = np.argmin(val, axis=1)
    take = lambda o, i: {k: np.take_along_axis(a, i.reshape((R, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0] for k, a in o.items()}  # noqa: E731
    res = take(out, best)
    res["start_values"] = np.where(feas, _penalized(out, prob), np.nan)
    res["start_status"] = out["status"]
    res["start_z"] = out["z"]
    ok = np.isfinite(val[np.arange(R), best])
    used_trust = np.zeros(R, bool)
    r = prob.trust_radius
    if r is None:
        return res, ok, used_trust
    dist = 0.5 * np.abs(res["z"][:, None, :] - H_blocks[None]).sum(-1)  # (R, m)
    need = dist.min(axis=1) > r
    if not need.any():
        return res, ok, used_trust
    nb = min(TRUST_CANDIDATES, H_blocks.shape[0])
    near = np.argsort(dist, axis=1)[:, :nb]  # (R, nb)
    centres = H_blocks[near]  # (R, nb, n)
    z0 = np.stack([[_toward(prob, centres[i, j], res["z"][i], r, dtype) for j in range(nb)] for i in range(R)])
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, nb, axis=0) if eqx.is_array(x) else x, laws)
    sh = _shared(prob, N, D, w, fn, dtype, trust=True)
    out2, _ = _run_constrained(members, jnp.asarray(z0.reshape(R * nb, -1), dtype), jnp.asarray(centres.reshape(R * nb, -1), dtype),
                               sh, prob, cfg, dtype)
    out2 = {k: v.reshape((R, nb) + v.shape[1:]) for k, v in out2.items() if k != "g"}
    # feasibility checked on the exact distance to the centre
    out2["viol"] = np.maximum(out2["viol"], 0.5 * np.abs(out2["z"] - centres).sum(-1) - r)
    feas2 = _feasible(out2)
    val2 = np.where(feas2, _penalized(out2, prob), np.inf)
    best2 = np.argmin(val2, axis=1)
    res2 = take(out2, best2)
    res2["start_values"] = val2
    ok2 = np.isfinite(val2[np.arange(R), best2])
    for k in res:
        if k.startswith("start_"):
            continue
        res[k] = np.where(need.reshape((R,) + (1,) * (res[k].ndim - 1)), res2[k], res[k])
    res["trust_values"] = val2
    res["trust_centres"] = near
    ok = np.where(need, ok2, ok)
    return res, ok, need


#: With a trust radius, the optimum is searched within the ball of each of this many measured mixtures nearest the
#: optimum found without it, and the best is kept.
TRUST_CANDIDATES = 4


def _phases_of(*sources):
    """(phases, shares) recorded by a fit, a bootstrap result or a table among ``sources``, or (None, None)."""
    for src in sources:
        if src is None:
            continue
        infos = (getattr(src, "info", None), getattr(getattr(src, "point", None), "info", None), getattr(getattr(src, "data", None), "__dict__", None))
        for i in infos:
            if isinstance(i, dict) and i.get("phases") is not None and len(i["phases"]) > 1:
                return tuple(i["phases"]), i.get("phase_shares")
        ph = getattr(src, "phases", None)
        if ph is not None and len(ph) > 1:
            return tuple(ph), getattr(src, "phase_shares", None)
    return None, None


def _unique_tokens_of(*sources):
    """Raw unique-token counts (K,) carried by a table among ``sources`` (or its ``.data``), or None."""
    for src in sources:
        for obj in (src, getattr(src, "data", None)):
            U = getattr(obj, "unique_tokens", None)
            if U is not None and hasattr(obj, "mixtures"):
                return np.asarray(U, np.float64)
    return None


def _wants_constrained(law, measured, phase_shares, prior, kl_penalty, max_kl, trust_radius) -> bool:
    if any(x is not None for x in (prior, kl_penalty, max_kl, trust_radius)):
        return True
    if phase_shares is not None and len(np.atleast_1d(phase_shares)) > 1:
        return True
    return _phases_of(law, measured)[0] is not None


def _constrained_setup(source, law1, domains, targets, measured, phase_shares, model_size, n_tokens, raw_model_size, raw_n_tokens,
                       objective, target_weights, target, floors, ceilings, unique_tokens, max_epochs, prior, kl_penalty, max_kl,
                       trust_radius, method, steps, step_size):
    K = len(domains) if domains is not None else _n_domains(law1)
    domains = tuple(domains) if domains is not None else tuple(f"domain{i}" for i in range(K))
    if len(domains) != K:
        raise ValueError(f"{len(domains)} domain names for a law of {K} domains")
    phases, shares = _phases_of(source, measured)
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
    data_U = _unique_tokens_of(measured, source)
    natural = None if data_U is None else data_U
    if unique_tokens is None and max_epochs is not None and data_U is not None:
        unique_tokens = data_U * unit / TOKENS_UNIT  # the table's raw counts, in the units of the token count given
    tokens_given = n_tokens is not None or raw_n_tokens is not None
    prob = phase_problem(domains, phases=phases, phase_shares=shares, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens,
                         max_epochs=max_epochs, n_tokens=D * unit if tokens_given else None, prior=prior, kl_penalty=kl_penalty,
                         max_kl=max_kl, trust_radius=trust_radius, min_weight=type(law1).min_weight, natural=natural)
    if measured is not None and callable(getattr(measured, "align", None)) and getattr(measured, "n_domains", 0):
        measured = measured.align(domains, to="the law")
    if measured is not None and hasattr(measured, "columns") and hasattr(measured, "iloc"):
        measured = mixture_frame(measured, domains)
    H = None if measured is None else measured_mixtures(measured, K)
    if trust_radius is not None and H is None:
        raise ValueError("trust_radius needs the measured mixtures: pass measured= (an (n, K) array or the training data)")
    cfg = MixtureConfig(method=method, steps=steps, step_size=step_size)
    lo_flat = prob.flat((prob.lower * prob.shares[:, None]).reshape(-1))
    hi_flat = prob.flat((prob.upper * prob.shares[:, None]).reshape(-1))
    return dict(K=K, domains=domains, targets=targets, N=N, D=D, dtype=dtype, fn=fn, w=w, desc=desc, prob=prob, H=H, cfg=cfg,
                lo=lo_flat, hi=hi_flat, tokens_given=tokens_given)


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


def _optimize_constrained(law, source, measured, *, model_size, n_tokens, objective, target_weights, target, floors, ceilings,
                          unique_tokens, max_epochs, starts, seed, steps, method, step_size, init, raw_model_size, raw_n_tokens,
                          domains, targets, throw, phase_shares, prior, kl_penalty, max_kl, trust_radius) -> MixtureResult:
    s = _constrained_setup(source, law, domains, targets, measured, phase_shares, model_size, n_tokens, raw_model_size, raw_n_tokens,
                           objective, target_weights, target, floors, ceilings, unique_tokens, max_epochs, prior, kl_penalty, max_kl,
                           trust_radius, method, steps, step_size)
    prob, dt = s["prob"], s["dtype"]
    _warn_degenerate(law, s["lo"], s["hi"], model_size is not None or raw_model_size is not None,
                     s["tokens_given"] and prob.unique_tokens is None)
    Hb = None if s["H"] is None else prob.blocks(s["H"])
    res, ok, used_trust = _solve_problem(_tile_law(law, 1), 1, prob, Hb, s["N"], s["D"], s["w"], s["fn"], s["cfg"], starts, seed, dt, init)
    one = {k: v[0] for k, v in res.items()}
    status = Status(int(one["status"]))
    if not ok[0]:
        if status == Status.nonfinite and throw:
            raise RuntimeError(f"every one of {starts} starts gave a non-finite objective at N={s['N']:g}M, D={s['D']:g}B; check the law's parameters")
        parts = []
        if prob.caps is not None:
            parts.append("the repetition caps")
        if prob.max_kl is not None:
            parts.append(f"the KL bound {prob.max_kl:g}")
        if used_trust[0]:
            parts.append(f"the trust region of radius {prob.trust_radius:g} around the {min(TRUST_CANDIDATES, Hb.shape[0])} nearest measured mixtures")
        msg = (f"no start reached a mixture satisfying {', '.join(parts) or 'the constraints'} together with the floors and ceilings "
               f"(smallest violation {float(np.min(one['viol'])):.3g}); loosen them")
        if throw:
            raise InfeasibleMixtureError(msg)
        warnings.warn(msg, stacklevel=3)
    z = one["z"]
    h = prob.flat(z)
    epochs = prob.epochs(z)
    kl = prob.kl(z)
    dist = None if s["H"] is None else float(_tv_to_set(h[None], s["H"])[0].min())
    result = MixtureResult(
        mixture=h, losses=one["losses"], value=float(one["J"]), status=status,
        num_steps=int(one["num_steps"]), kkt_residual=float(one["kkt"]), start_values=res["start_values"][0],
        start_mixtures=prob.flat(res["start_z"][0]), start_status=res["start_status"][0], lower=s["lo"], upper=s["hi"], domains=s["domains"], targets=s["targets"],
        model_size=s["N"], n_tokens=s["D"], objective=s["desc"], config=s["cfg"],
        scale_extrapolation=_scale_report(source, law, s["N"], s["D"]), problem=prob,
        phase_mixtures=z.reshape(prob.lower.shape) / prob.shares[:, None], epochs=epochs,
        kl_to_prior=None if kl is None else float(kl), nearest_measured_distance=dist,
        penalized_value=float(one["J"] + prob.kl_penalty * (kl or 0.0)),
        active_constraints=None, constraint_violation=float(one["viol"]),
    )
    result.active_constraints = _active(prob, epochs, kl, dist, s["lo"], s["hi"], h, s["domains"])
    result.fixed_message = "not checked: the check applies to searches without phases, KL terms or a trust region"
    if s["H"] is not None:
        result.coverage = measured_coverage(h, s["H"], domains=s["domains"])
        if result.coverage.extrapolation and prob.trust_radius is None:
            warnings.warn(result.notes()[0], ExtrapolationWarning, stacklevel=3)
    return result


def _optimize_constrained_ensemble(laws, R, ok, point, measured, *, model_size, n_tokens, objective, target_weights, target,
                                   floors, ceilings, unique_tokens, max_epochs, starts, seed, steps, method, step_size, raw_model_size,
                                   raw_n_tokens, domains, targets, phase_shares, prior, kl_penalty, max_kl, trust_radius, source,
                                   check_fixed) -> MixtureEnsemble:
    law1 = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)
    s = _constrained_setup(source, law1, domains, targets, measured, phase_shares, model_size, n_tokens, raw_model_size, raw_n_tokens,
                           objective, target_weights, target, floors, ceilings, unique_tokens, max_epochs, prior, kl_penalty, max_kl,
                           trust_radius, method, steps, step_size)
    prob, dt = s["prob"], s["dtype"]
    Hb = None if s["H"] is None else prob.blocks(s["H"])
    res, feasible, _ = _solve_problem(laws, R, prob, Hb, s["N"], s["D"], s["w"], s["fn"], s["cfg"], starts, seed, dt)
    usable = ok & feasible & (res["status"] != int(Status.nonfinite))
    pt = None
    if point is not None:
        pt = optimize_mixture(point, model_size=model_size, n_tokens=n_tokens, raw_model_size=raw_model_size, raw_n_tokens=raw_n_tokens,
                              objective=objective, target_weights=target_weights, target=target, floors=floors, ceilings=ceilings,
                              unique_tokens=prob.unique_tokens if prob.unique_tokens is not None else unique_tokens,
                              max_epochs=prob.max_epochs if prob.unique_tokens is not None else max_epochs, starts=starts, seed=seed, steps=steps, method=method,
                              step_size=step_size, domains=s["domains"], targets=s["targets"], measured=measured if s["H"] is None else s["H"],
                              phase_shares=prob.shares if prob.n_phases > 1 else None, prior=prob.prior if prob.prior is not None else prior,
                              kl_penalty=kl_penalty, max_kl=max_kl, trust_radius=trust_radius, throw=False)
    Z = res["z"]
    mixtures = prob.flat(Z)
    ens = MixtureEnsemble(
        mixtures=mixtures, values=res["J"], losses=res["losses"], status=res["status"], ok=usable, lower=s["lo"], upper=s["hi"],
        domains=s["domains"], targets=s["targets"], model_size=s["N"], n_tokens=s["D"], objective=s["desc"], point=pt, problem=prob,
        phase_mixtures=Z.reshape((R,) + prob.lower.shape) / prob.shares[None, :, None], epochs=prob.epochs(Z), kl_to_prior=prob.kl(Z),
        nearest_measured_distance=None if s["H"] is None else _tv_to_set(mixtures, s["H"]).min(axis=1),
    )
    if s["H"] is not None:
        sp = _typical_spacing(s["H"])
        ens.member_extrapolation = np.array(
            [bool(u) and measured_coverage(m, s["H"], typical_spacing=sp).extrapolation for m, u in zip(mixtures, usable)])
    ens.fixed_message = "not checked: the check applies to searches without phases, KL terms or a trust region"
    return ens
