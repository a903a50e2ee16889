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

    def _kkt(self, h, grad):
        return h - project_capped_simplex(h - grad, self.lo, self.hi)

    def init(self, fn, h):
        f, grad = jax.value_and_grad(fn)(h)
        return _SimplexState(f, self._kkt(h, grad), grad, jnp.asarray(self.step_size, h.dtype), jnp.array(0, jnp.int32))

    def _candidate(self, h, grad, eta):
        tiny = jnp.finfo(h.dtype).tiny
        if self.mirror:
            gs = grad - jnp.min(jnp.where(jnp.isfinite(grad), grad, 0.0))
            return project_capped_simplex_kl(jnp.log(jnp.maximum(h, tiny)) - eta * gs, self.lo, self.hi)
        return project_capped_simplex(h - eta * grad, self.lo, self.hi)

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
    """An optimum asked of a law fitted to several training phases: its mixture is a distribution over (phase, domain)
    pairs whose per-phase sums are fixed, which the optimizers here do not keep."""


def check_single_phase(*sources) -> None:
    """Raise :class:`PhasedMixtureError` when a fit, a bootstrap result or a table among ``sources`` has more than one
    training phase (recorded as ``info["phases"]`` or ``.phases``)."""
    for src in sources:
        infos = (getattr(src, "info", None), getattr(getattr(src, "point", None), "info", None))
        phases = [i.get("phases") for i in infos if isinstance(i, dict)] + [getattr(src, "phases", None)]
        for ph in phases:
            if ph is not None and len(ph) > 1:
                raise PhasedMixtureError(
                    f"the mixtures here span {len(ph)} training phases ({', '.join(map(str, ph))}); optimizing or "
                    "suggesting such a mixture needs a simplex per phase, which mixjax does not provide yet (it would "
                    "move tokens between phases). Fit and compare work; choose the next mixtures outside mixjax for now"
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
    """
    check_single_phase(law, measured)
    if measured is None:
        measured = _measured_of(law)
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
    Other arguments as in :func:`optimize_mixture`."""
    check_single_phase(laws, point, measured)
    if measured is None:
        measured = _measured_of(laws)
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
