"""The solver of a mixture search: adaptive entropic mirror descent on the capped simplex, batched over starts.

Solver: adaptive entropic mirror descent (exponentiated gradient; Dai & Zheng solve the outer problem with online
mirror descent). A step from a feasible h with gradient g and step eta is the exact Bregman (KL) projection

    h+ = argmin_{h' in C} <g, h'> + KL(h' || h) / eta,   i.e.  h+_i = clip(h_i exp(-eta g_i) / Z, lo_i, hi_i),

where the normalizer Z is found exactly (:func:`~mixjax.mixture.simplex.project_capped_simplex_kl`). The step rule is
:class:`SimplexDescent`, run by the same batched engine loop as every fit (:mod:`mixjax._engine`): each step tries
four step sizes together and keeps the best one meeting the descent lemma
``J(h+) <= J(h) + <g, h+ - h> + KL(h+ || h) / eta``; eta doubles after an accepted step and shrinks after a
rejected one, with no inner loop, so members of a batch never wait on each other. ``method="projected"`` uses the
Euclidean projection (:func:`~mixjax.mixture.simplex.project_capped_simplex`) and the squared distance instead.
Convergence: the KKT residual ``||h - P(h - g)||_inf`` (Euclidean projection P, zero exactly at a KKT point) below
``gtol`` times |J|, or a relative objective decrease below ``ftol`` over ``patience`` steps with the residual below
100 ``gtol`` |J| or no step size accepted any more (round-off level).

Many starts (the projected centre and Dirichlet(1) draws) run as one engine batch, and the best is kept; an
ensemble runs every member law of a batched law (a bootstrap ensemble) from every start as one batch.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _engine
from ..results import Solution, Status
from .simplex import project_batch, project_kl_batch, project_capped_simplex, project_capped_simplex_kl, project_phase_ball

__all__ = ["MixtureConfig", "SimplexDescent"]


METHODS = ("mirror", "projected")


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
    """Every start's :class:`~mixjax.Solution` (``y``: the mixtures) and the predicted losses (..., V) there."""

    solution: Solution
    losses: jax.Array


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

    def projected_gradient(self, h, grad):
        """``h - P(h - grad)``, P the Euclidean projection onto this solver's feasible set: zero exactly at a
        stationary point (the KKT residual of the search)."""
        return h - self._project(h - grad)

    def init(self, fn, h):
        f, grad = jax.value_and_grad(fn)(h)
        return _SimplexState(f, self.projected_gradient(h, grad), grad, jnp.asarray(self.step_size, h.dtype), jnp.array(0, jnp.int32))

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
        new = _SimplexState(fn_, self.projected_gradient(hn, gn), gn, eta, fails)
        return hn, new, ok, fails >= self.max_fails


def _value_of_shared_law(h, _member, shared):
    law, N, D, w, objective = shared
    return objective(law(h, N, D), w)


def _value_of_member_law(h, law, shared):
    N, D, w, objective = shared
    return objective(law(h, N, D), w)


def _solved(laws_or_law, sol: Solution, N, D, per_member: bool) -> _Solved:
    h = sol.y
    if per_member:
        losses = jax.vmap(lambda law, x: law(x, N, D))(laws_or_law, h)
    else:
        losses = jax.vmap(lambda x: laws_or_law(x, N, D))(h)
    ok = jnp.isfinite(sol.value) & jnp.all(jnp.isfinite(losses), axis=-1)
    status = jnp.where(ok, sol.status, int(Status.nonfinite))
    return _Solved(Solution(h, sol.value, status, sol.num_steps, sol.rel_grad), losses)


def _solver(lo, hi, config: MixtureConfig) -> SimplexDescent:
    return SimplexDescent(lo, hi, mirror=config.method == "mirror", step_size=config.step_size)


@eqx.filter_jit
def solve_starts(law, h0, lo, hi, N, D, w, objective, config):
    sol = _engine.minimize(_solver(lo, hi, config), _value_of_shared_law, h0, jnp.zeros(h0.shape[0], h0.dtype),
                           (law, N, D, w, objective), max_steps=config.steps, ftol=config.ftol, gtol=config.gtol,
                           window=config.patience)
    return _solved(law, sol, N, D, per_member=False)


@eqx.filter_jit
def solve_ensemble(laws, h0, lo, hi, N, D, w, objective, config):
    """Every member law from every start, as one engine batch of R x S members; results shaped (R, S, ...)."""
    R = jax.tree_util.tree_leaves(eqx.filter(laws, eqx.is_array))[0].shape[0]
    S = h0.shape[0]
    members = jax.tree_util.tree_map(lambda x: jnp.repeat(x, S, axis=0) if eqx.is_array(x) else x, laws)
    starts = jnp.tile(h0, (R, 1))
    sol = _engine.minimize(_solver(lo, hi, config), _value_of_member_law, starts, members, (N, D, w, objective),
                           max_steps=config.steps, ftol=config.ftol, gtol=config.gtol, window=config.patience)
    out = _solved(members, sol, N, D, per_member=True)
    return jax.tree_util.tree_map(lambda x: x.reshape((R, S) + x.shape[1:]), out)


def initial_mixtures(K: int, n: int, seed: int, lo, hi, init, dtype) -> jax.Array:
    """Start 0: the given ``init`` (projected) or the KL projection of the uniform mixture; then Dirichlet(1)."""
    if n < 1:
        raise ValueError(f"starts must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.ones(K), size=n)
    draws[0] = 1.0 / K
    draws = 0.98 * draws + 0.02 / K  # strictly inside, so every coordinate can move multiplicatively
    h = project_kl_batch(jnp.log(jnp.asarray(draws, dtype)), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
    if init is not None:
        h0 = np.asarray(init, np.float64).reshape(-1)
        if h0.shape != (K,) or not np.isfinite(h0).all():
            raise ValueError(f"init must be {K} finite weights, got shape {h0.shape}")
        first = project_batch(jnp.asarray(h0[None], dtype), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
        h = h.at[0].set(first[0])
    return h


def best_start(values, status):
    v = np.where((status != int(Status.nonfinite)) & np.isfinite(values), values, np.inf)
    return np.argmin(v, axis=-1)
