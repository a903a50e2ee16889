"""The one batched optimizer loop of mixjax, and the solvers it runs.

Every fit in mixjax (multi-start, bootstrap resamples, jackknife, cross-validation folds) is a batch of B
independent least-squares problems over flat parameter vectors ``y`` (B, P)::

    f_b(y) = sum_k r_k(y; args_b)^2

:func:`minimize` runs them in ONE compiled call, ``jax.vmap`` over the batch. The loop is built so that members
never wait on each other:

* every step costs the same, small, fixed amount of work for every member (no data-dependent loop inside a
  step: a Levenberg-Marquardt step is one Jacobian and one trial; an L-BFGS step is one objective-and-gradient
  evaluation at one trial point, accepted or rejected with ``jnp.where``, its step length carried to the
  member's next step);
* a member that has finished is frozen (its updates are discarded), it decides nothing for the others;
* the outer loop runs chunks of ``chunk`` steps (``lax.scan``) and tests "is any member still active?" once per
  chunk (on an accelerator each data-dependent loop test is a device-to-host synchronisation).

Lane refill (``lanes=L`` with ``L < B``): the compiled loop holds only L members at a time (the lanes). After each
chunk, every lane whose member has finished writes its result into the ``(B, ...)`` output at the member's index
(a scatter) and loads the next pending member (its ``y0`` and ``args``, started with ``solver.init``); free lanes
are matched to pending members in order by a cumulative sum over the free mask, and lanes with nothing left to
load idle. The loop ends when no lane holds an unfinished member. A batch then costs about
``sum(steps) / L`` lane-steps instead of ``B max(steps)``: members that finish early no longer wait, frozen, for
the slowest one. Every member's trajectory depends only on its own state, so each member takes the same steps as
without refill (a lane also starts its members at chunk boundaries, as the whole batch does), up to rounding: XLA
may round a batch of L members differently from one of B in the last bit, as for any change of batch size (the
``chunk_size`` of :func:`mixjax.fitting.solve`), and a fit that has not settled can amplify that difference.

Status of a member (:class:`mixjax.Status`): ``converged`` only when a stationarity test passes, never right
after a failed step. Either (1) the relative gradient ``max_k |df/dy_k| / f`` is below ``gtol``; or (2) the objective
fell by less than ``ftol`` (relative) over the last ``window`` steps and either the relative gradient is below
``100 gtol``, or no step lowers f any more even at the smallest trial (damping at its ceiling, no acceptable L-BFGS
trial along the scaled gradient), or the parameters moved by less than ``xtol`` in all over those steps (law fits:
1e-3 in the stored logs and logits): a local
minimum at a kink of a piecewise-smooth objective (the capacity floor of the capacity laws and the non-negativity
of projected coefficients make such kinks), where the gradient of one side does not vanish; or (3) the step just
taken was accepted and the objective fell by less than ``slow_ftol`` = 1e-5 (relative) over the last
``slow_windows x window`` = 50 steps: at that rate a thousand more steps lower it by less than 2e-4, the flat
valleys of the many-parameter laws, where parameters still drift along directions the data do not determine; or
(4), with the kink test on, the step just taken and at least half of the last ``window`` were accepted, and they
moved the parameters by less than ``eps^(2/3)`` in all (4e-11 in float64, 2e-5 in float32): steps at the rounding level.
This is the test a fit that reaches a zero residual (noise-free data drawn from the law) passes; there f keeps
falling by factors to the rounding floor, so the relative tests (1)-(3) never hold.
Otherwise ``max_steps``, or ``nonfinite`` (the starting point's objective is not finite).
``benchmarks/status_check.py`` checks these statuses against a scipy polish of each end point.

Solvers are small ``equinox`` modules with ``init(fn, y) -> state`` and ``step(fn, y, state) -> (y, state,
accepted, stuck)``, where the state exposes ``f`` (objective) and ``g`` (gradient) at ``y``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple

import itertools
import threading

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .results import Solution, Status

# Where the loop reports its progress. A caller passes its progress callback explicitly (``fit(progress=...)``);
# around the call, :class:`reporting` registers it under a fresh integer id, which the compiled loop receives as a
# traced argument (a new callback never recompiles anything) and hands back to :func:`_report` once per chunk of
# steps. Calls on several threads at once (``compare`` fits laws on threads) each reach their own callback.
_SINKS: dict[int, Callable[[int, int, int], Any]] = {}
_IDS = itertools.count(1)
_LOCK = threading.Lock()


_EVERY_LOOP = -1  # the id of an instrument that hears every loop (benchmarks count loop iterations with it)


def _report(sink_id, steps, n_active, n_done) -> None:
    for key in (int(sink_id), _EVERY_LOOP):
        sink = _SINKS.get(key)
        if sink is not None:
            sink(int(steps), int(n_active), int(n_done))


class reporting:
    """Context manager: while it is open, every chunk of engine steps of a loop given ``report_id=self.id`` calls
    ``sink(steps_done, n_active, n_done)`` on the host (loop steps run so far, members not finished, members
    finished). Without a sink, ``id`` is 0, which reports nowhere. ``every_loop=True`` (instrumentation, one at a
    time) hears every loop of the process instead, whatever its ``report_id``."""

    def __init__(self, sink: Callable[[int, int, int], Any] | None, every_loop: bool = False):
        self.sink = sink
        self.every_loop = every_loop
        self.id = 0

    def __enter__(self):
        if self.sink is not None:
            with _LOCK:
                if self.every_loop:
                    if _EVERY_LOOP in _SINKS:
                        raise RuntimeError("another every_loop reporting context is open")
                    _SINKS[_EVERY_LOOP] = self.sink
                else:
                    self.id = next(_IDS)
                    _SINKS[self.id] = self.sink
        return self

    def __exit__(self, *exc):
        if self.sink is not None:
            with _LOCK:
                _SINKS.pop(_EVERY_LOOP if self.every_loop else self.id, None)
        return False

__all__ = ["LevenbergMarquardt", "LBFGS", "Adam", "Solution", "minimize", "AbstractSolver"]


def _sumsq(r):
    return jnp.sum(r * r)


def _finite(x):
    return jnp.all(jnp.isfinite(x))


class AbstractSolver(eqx.Module):
    """A batched-friendly solver: fixed work per step, accept/reject decided with ``jnp.where``. ``uses_jacobian``:
    the solver reads the Jacobian of the residuals (not only the gradient of their sum of squares)."""

    uses_jacobian: ClassVar[bool] = False

    def init(self, fn: Callable, y: jax.Array) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, fn: Callable, y: jax.Array, state: Any):  # pragma: no cover - interface
        raise NotImplementedError


# --------------------------------------------------------------------------- Levenberg-Marquardt
class _LMState(NamedTuple):
    r: jax.Array  # residuals at y (M,)
    J: jax.Array  # Jacobian at y (M, P)
    f: jax.Array  # sum r^2
    g: jax.Array  # gradient of f: 2 J^T r
    lam: jax.Array  # damping
    nu: jax.Array  # damping growth factor on rejection (Nielsen)


def _residuals_and_jacobian(fn, y):
    """r(y) and its Jacobian dr/dy in one forward-mode pass (P tangents, vectorised)."""
    J, r = jax.jacfwd(lambda z: (fn(z), fn(z)), has_aux=True)(y)
    return r, J


class LevenbergMarquardt(AbstractSolver):
    """Levenberg-Marquardt with per-member damping (Marquardt 1963; damping update of Nielsen 1999).

    Step: ``(J^T J + lam diag(J^T J)) delta = -J^T r``; the trial ``y + delta`` is accepted when it lowers f, with
    gain ratio ``rho = (f - f_trial) / (f - ||r + J delta||^2)``; on acceptance ``lam *= max(1/3, 1 - (2 rho - 1)^3)``,
    on rejection ``lam *= nu, nu *= 2``. Steps are shortened to ``max_step`` in the largest coordinate (parameters
    are logs and logits, so one step changes no parameter by more than a factor e): this keeps fits out of the
    degenerate regions that one long Gauss-Newton step can reach along a flat direction. One Jacobian (forward mode, P tangents) and one trial per step, for every
    member: no inner loop. Suited to laws with up to a few hundred free parameters (the normal matrix is P x P).
    """

    uses_jacobian: ClassVar[bool] = True
    lam0: float = 1e-3
    lam_max: float = 1e12
    max_step: float = 1.0

    def init(self, fn, y):
        r, J = _residuals_and_jacobian(fn, y)
        f = _sumsq(r)
        dt = y.dtype
        return _LMState(r, J, f, 2.0 * J.T @ r, jnp.asarray(self.lam0, dt), jnp.asarray(2.0, dt))

    def step(self, fn, y, s: _LMState):
        dt = y.dtype
        A = s.J.T @ s.J
        d = jnp.diagonal(A)
        d = jnp.maximum(d, jnp.finfo(dt).eps * jnp.maximum(jnp.max(d), jnp.finfo(dt).tiny))
        # scale the system to unit diagonal before solving (better conditioned in float32)
        sc = jax.lax.rsqrt(d)
        As = A * sc[:, None] * sc[None, :] + s.lam * jnp.eye(y.shape[0], dtype=dt)
        rhs = -(s.J.T @ s.r) * sc
        delta = jax.scipy.linalg.solve(As, rhs, assume_a="pos") * sc
        delta = delta * jnp.minimum(1.0, self.max_step / jnp.maximum(jnp.max(jnp.abs(delta)), jnp.finfo(dt).tiny))
        y_t = y + delta
        r_t, J_t = _residuals_and_jacobian(fn, y_t)
        f_t = _sumsq(r_t)
        model = _sumsq(s.r + s.J @ delta)
        pred = s.f - model
        rho = (s.f - f_t) / jnp.where(pred > 0, pred, 1.0)
        ok = jnp.isfinite(f_t) & _finite(J_t) & (f_t < s.f) & (pred > 0) & _finite(delta)
        lam_ok = s.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        lam = jnp.where(ok, lam_ok, s.lam * s.nu)
        lam = jnp.clip(lam, jnp.finfo(dt).eps, self.lam_max)
        nu = jnp.where(ok, 2.0, jnp.minimum(s.nu * 2.0, 1e6)).astype(dt)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        new = _LMState(keep(r_t, s.r), keep(J_t, s.J), keep(f_t, s.f), keep(2.0 * J_t.T @ r_t, s.g), lam, nu)
        stuck = (~ok) & (s.lam >= self.lam_max)
        return keep(y_t, y), new, ok, stuck


# --------------------------------------------------------------------------- L-BFGS, one trial per step
class _LBFGSState(NamedTuple):
    f: jax.Array
    g: jax.Array
    S: jax.Array  # (m, P) step differences, newest first
    Y: jax.Array  # (m, P) gradient differences
    valid: jax.Array  # (m,) bool
    scale: jax.Array  # length of the last accepted step (scales steepest-descent directions)
    tau: jax.Array  # step multiplier of the next trial, in (0, 1]
    fails: jax.Array  # consecutive rejected trials


class LBFGS(AbstractSolver):
    """L-BFGS (Nocedal 1980) with one trial point per step and the step length carried across steps.

    Each step computes the two-loop direction d (shortened to ``max_step`` in its largest coordinate) and ONE
    value-and-gradient at ``y + tau d``. The trial is accepted when it meets the Armijo condition
    ``f(y + tau d) <= f + c1 tau g.d``, or the approximate Wolfe condition of Hager & Zhang (2005): f rose by at
    most the rounding noise (``noise`` relative to f) and the directional derivative at the trial is at most
    ``wolfe_hi |g.d|``, so the trial is not past the minimum along d by more than the derivative can tell. Near a
    minimum, differences of f are rounding (in float32 they are at 1e-7 to 1e-6 of f) while the gradient still
    points the way; an Armijo-only search stalls there. On acceptance the trial's gradient is the new gradient (no
    second evaluation), the curvature pair is stored unless ``s.y <= eps |s| |y|``, and tau grows back towards the
    full step (``tau <- min(1, 4 tau)``). A rejected trial keeps y and the memory and shrinks tau by safeguarded
    quadratic interpolation of f along d (factor in [0.1, 0.5]; by the secant of the directional derivative when f
    is within the noise); after ``reset_after`` rejections in a row the memory is cleared and the next direction is
    the steepest-descent one, scaled to the last accepted step. A step thus costs one objective-and-gradient
    evaluation for every member, whatever happens to the others: the backtracking that a line search does inside a
    step is spread over the following steps of that member alone. Suited to laws with many parameters.

    ``diagonal`` (default): the initial inverse Hessian of the two-loop recursion is ``gamma diag(d)`` instead of
    ``gamma I``, with per-coordinate factors d from the stored pairs (:meth:`_diagonal_scaling`; Gilbert &
    Lemarechal 1989 scale L-BFGS by a diagonal too). The laws' parameters differ in curvature by orders of
    magnitude (an exponent and a log-coefficient of one domain, domains seen at weights from 1e-4 to 0.9); with one
    scalar the memory spends its pairs on that spread. On the capacity-noise law at 50 to 100 domains it halves
    the steps to convergence (``benchmarks/k_scaling.py --baseline``). Costs O(m P) per step. Used only from
    ``diagonal_from`` = 64 parameters moved by the solver: on the 7-domain capacity law (22 of them) at 300 steps
    it left fewer starts ``converged`` than the scalar (``benchmarks/status_check.py``: 6 against 16 of 48).
    """

    memory: int = 20
    c1: float = 1e-4
    max_step: float = 1.0
    reset_after: int = 10
    noise: float | None = None
    wolfe_hi: float = 0.8
    diagonal: bool = True
    diagonal_min: float = 1e-3
    diagonal_max: float = 1e2
    diagonal_from: int = 64

    def _noise(self, dtype) -> float:
        """Relative objective change below which two values are not told apart: by default 1e-6 in float32 (about
        ten roundings of a sum of squares) and 1e-10 in float64."""
        if self.noise is not None:
            return float(self.noise)
        return 1e-6 if jnp.finfo(dtype).bits <= 32 else 1e-10

    def init(self, fn, y):
        f, g = jax.value_and_grad(lambda z: _sumsq(fn(z)))(y)
        dt = y.dtype
        m, P = self.memory, y.shape[0]
        return _LBFGSState(
            f, g, jnp.zeros((m, P), dt), jnp.zeros((m, P), dt), jnp.zeros((m,), bool),
            jnp.asarray(1.0, dt) / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(dt).tiny),
            jnp.asarray(1.0, dt), jnp.asarray(0, jnp.int32),
        )

    def _diagonal_scaling(self, s: _LBFGSState):
        """Per-coordinate factors of the initial inverse Hessian ``gamma I`` (``diagonal``): for coordinate k,
        ``d_k = sum_j s_jk^2 / sum_j |s_jk y_jk|`` over the stored pairs (the inverse curvature of a separable
        quadratic, exactly), divided by their geometric mean over the coordinates so that the overall step length
        stays gamma's, and clipped to ``[diagonal_min, diagonal_max]`` = [1e-3, 1e2]. Coordinates that no stored
        step has moved keep the factor 1. The ceiling is the lower one: a direction along which the gradient
        hardly changes (a flat direction of the law, such as an exponent of a term the data barely see) gets a
        large factor, and with 1e3 BiMix fits at 50 domains ran such exponents out of their sane range at the same
        objective; 1e2 keeps them in range at about the same number of steps."""
        dt = s.g.dtype
        v = s.valid[:, None]
        num = jnp.sum(jnp.where(v, s.S * s.S, 0.0), axis=0)
        den = jnp.sum(jnp.where(v, jnp.abs(s.S * s.Y), 0.0), axis=0)
        tiny = jnp.finfo(dt).tiny
        known = (num > tiny) & (den > tiny)
        logd = jnp.where(known, jnp.log(jnp.where(known, num, 1.0)) - jnp.log(jnp.where(known, den, 1.0)), 0.0)
        n_known = jnp.sum(known).astype(dt)
        centre = jnp.sum(jnp.where(known, logd, 0.0)) / jnp.maximum(n_known, 1)
        lo, hi = jnp.log(jnp.asarray(self.diagonal_min, dt)), jnp.log(jnp.asarray(self.diagonal_max, dt))
        return jnp.where(known, jnp.exp(jnp.clip(logd - centre, lo, hi)), 1.0)

    def _direction(self, s: _LBFGSState):
        """Two-loop recursion over the stored pairs (newest first, static indices)."""
        dt = s.g.dtype
        sy = jnp.sum(s.S * s.Y, -1)
        rho = jnp.where(s.valid, 1.0 / jnp.where(s.valid, sy, 1.0), 0.0)

        def first(q, pair):
            S_j, Y_j, rho_j = pair
            a = rho_j * jnp.dot(S_j, q)
            return q - a * Y_j, a

        q, alphas = jax.lax.scan(first, s.g, (s.S, s.Y, rho))
        yy = jnp.dot(s.Y[0], s.Y[0])
        gamma = jnp.where(s.valid[0], sy[0] / jnp.where(yy > 0, yy, 1.0), 0.0)
        sd_scale = s.scale / jnp.maximum(jnp.linalg.norm(s.g), jnp.finfo(dt).tiny)
        h0 = jnp.where(s.valid[0], gamma, sd_scale)
        if self.diagonal and s.g.shape[0] >= self.diagonal_from:
            h0 = h0 * self._diagonal_scaling(s)
        r = q * h0

        def second(r, pair):
            S_j, Y_j, rho_j, a = pair
            return r + S_j * (a - rho_j * jnp.dot(Y_j, r)), None

        r, _ = jax.lax.scan(second, r, (s.S, s.Y, rho, alphas), reverse=True)
        return -r

    def step(self, fn, y, s: _LBFGSState):
        dt = y.dtype
        tiny = jnp.finfo(dt).tiny
        d = self._direction(s)
        slope = jnp.dot(s.g, d)
        d = jnp.where(slope < 0, d, -s.g * s.scale / jnp.maximum(jnp.linalg.norm(s.g), tiny))
        d = d * jnp.minimum(1.0, self.max_step / jnp.maximum(jnp.max(jnp.abs(d)), tiny))
        slope = jnp.dot(s.g, d)
        y_t = y + s.tau * d
        f_t, g_t = jax.value_and_grad(lambda z: _sumsq(fn(z)))(y_t)
        finite = jnp.isfinite(f_t) & _finite(g_t)
        armijo = (f_t <= s.f + self.c1 * s.tau * slope) & (f_t < s.f)
        dslope = jnp.dot(g_t, d)
        within_noise = f_t <= s.f + self._noise(dt) * jnp.abs(s.f)
        approx = within_noise & (dslope <= -self.wolfe_hi * slope)
        ok = finite & (armijo | approx)
        # accepted: store the pair, grow tau; rejected: shrink tau (minimum of the quadratic through f, slope, f_t)
        sv, yv = y_t - y, g_t - s.g
        sy = jnp.dot(sv, yv)
        good_pair = ok & (sy > jnp.finfo(dt).eps * jnp.linalg.norm(sv) * jnp.linalg.norm(yv))
        push = lambda mem, new: jnp.where(good_pair, jnp.concatenate([new[None], mem[:-1]]), mem)  # noqa: E731
        S, Y, valid = push(s.S, sv), push(s.Y, yv), push(s.valid, jnp.array(True))
        curv = f_t - s.f - s.tau * slope
        quad = -slope * s.tau / (2.0 * jnp.where(curv > 0, curv, 1.0))
        shrink = jnp.where(jnp.isfinite(f_t) & (curv > 0), jnp.clip(quad, 0.1, 0.5), 0.1)
        # past the minimum along d by a trial within the noise: the secant of the directional derivative is the
        # better guess (f's differences there are rounding)
        secant = slope / jnp.where(dslope > slope, slope - dslope, -1.0)
        shrink = jnp.where(jnp.isfinite(dslope) & (dslope > 0) & within_noise, jnp.clip(secant, 0.1, 0.5), shrink)
        fails = jnp.where(ok, 0, s.fails + 1).astype(jnp.int32)
        reset = (~ok) & (fails >= self.reset_after)
        valid = jnp.where(reset, jnp.zeros_like(valid), valid)
        tau = jnp.where(ok, jnp.minimum(1.0, 4.0 * s.tau), jnp.where(reset, 1.0, s.tau * shrink))
        scale = jnp.where(ok, jnp.linalg.norm(sv), jnp.where(reset, s.scale * 1e-2, s.scale))
        fails = jnp.where(reset, 0, fails).astype(jnp.int32)
        stuck = (~ok) & ~jnp.any(s.valid) & (s.tau * s.scale < jnp.finfo(dt).eps * jnp.maximum(jnp.linalg.norm(y), 1.0))
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        state = _LBFGSState(keep(f_t, s.f), keep(g_t, s.g), S, Y, valid, scale.astype(dt), tau.astype(dt), fails)
        return keep(y_t, y), state, ok, stuck


# --------------------------------------------------------------------------- Adam (first order, for comparison)
class _AdamState(NamedTuple):
    f: jax.Array
    g: jax.Array
    opt: Any


class Adam(AbstractSolver):
    """Adam (Kingma & Ba 2015, optax) with a constant learning rate; every step is accepted. A baseline only: it
    rarely reaches the stationarity test on ill-conditioned laws."""

    learning_rate: float = 0.02

    def init(self, fn, y):
        f, g = jax.value_and_grad(lambda z: _sumsq(fn(z)))(y)
        return _AdamState(f, g, optax.adam(self.learning_rate).init(y))

    def step(self, fn, y, s: _AdamState):
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes its int32 step count with floats
            upd, opt = optax.adam(self.learning_rate).update(s.g, s.opt, y)
        y_new = y + upd
        f_new, g_new = jax.value_and_grad(lambda z: _sumsq(fn(z)))(y_new)
        ok = jnp.isfinite(f_new) & _finite(g_new)
        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        opt = jax.tree_util.tree_map(keep, opt, s.opt)
        return keep(y_new, y), _AdamState(keep(f_new, s.f), keep(g_new, s.g), opt), ok, jnp.array(False)


# --------------------------------------------------------------------------- the loop
def relative_gradient(g, f):
    """``max_k |g_k| / f``: the relative change of f per unit change of any one parameter (parameters are stored as
    logs and logits, so a unit is a factor e)."""
    f = jnp.maximum(jnp.abs(f), jnp.finfo(g.dtype).tiny)
    return jnp.max(jnp.abs(g), initial=0.0) / f


class _Member(NamedTuple):
    y: jax.Array
    state: Any
    hist: jax.Array  # (slow_windows * window,) objective after each of the last steps, newest last
    moved: jax.Array  # (window,) largest parameter change of each of the last `window` steps (0 if rejected)
    steps: jax.Array
    accepted: jax.Array
    status: jax.Array  # -1 while active


class _Out(NamedTuple):
    """Results of every member, ``(B, ...)``, filled in as lanes finish (lane refill)."""

    y: jax.Array
    value: jax.Array
    status: jax.Array
    steps: jax.Array
    rel_grad: jax.Array
    accepted: jax.Array


def _select(mask, new, old):
    """Per member (leading axis): ``new`` where ``mask``, else ``old``, for every leaf."""
    return jax.vmap(lambda t, n, o: jax.tree_util.tree_map(lambda a, b: jnp.where(t, a, b), n, o))(mask, new, old)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations (eqx.debug.get_num_traces), never limits them
def _minimize(solver, fn, y0, args, shared, max_steps, chunk, ftol, gtol, window, xtol=None, slow_ftol=None, slow_windows=5,
              lanes=None, report_id=None):
    dt = y0.dtype
    B = y0.shape[0]
    tight = float(jnp.finfo(dt).eps) ** (2.0 / 3.0)

    def member_fn(a):
        return lambda z: fn(z, a, shared)

    def init_one(y, a):
        st = solver.init(member_fn(a), y)
        bad = ~(jnp.isfinite(st.f) & _finite(st.g))
        status = jnp.where(bad, int(Status.nonfinite), -1)
        hist = jnp.full((slow_windows * window,), jnp.inf, dt)
        moved = jnp.full((window,), jnp.inf, dt)
        return _Member(y, st, hist, moved, jnp.array(0, jnp.int32), jnp.array(0, jnp.int32), jnp.asarray(status, jnp.int32))

    def step_one(m: _Member, a):
        active = m.status < 0
        y, st, ok, stuck = solver.step(member_fn(a), m.y, m.state)
        f = st.f
        hist = jnp.roll(m.hist, -1).at[-1].set(f)
        moved = jnp.roll(m.moved, -1).at[-1].set(jnp.max(jnp.abs(y - m.y), initial=0.0))
        rg = relative_gradient(st.g, f)
        flat = (hist[-window] - f) <= ftol * jnp.abs(f)
        still = jnp.sum(moved) <= xtol if xtol is not None else False
        slow = ok & ((hist[0] - f) <= slow_ftol * jnp.abs(f)) if slow_ftol is not None else False
        # (4) settled parameters: the step just taken and at least half of the last window's were accepted, and
        # they moved the parameters by less than eps^(2/3) in all (4e-11 in float64), where rounding decides the
        # steps (not after a run of rejections, which leaves one short accepted step). The only
        # test that a fit reaching a zero residual passes: f then keeps falling by factors, the relative tests
        # (1)-(3) never hold, and ``|g| / f`` grows as f -> 0.
        settled = ok & (jnp.sum(moved) <= tight) & (2 * jnp.sum(moved > 0) >= window) if xtol is not None else False
        converged = (rg <= gtol) | (flat & ((rg <= 100.0 * gtol) | stuck | still)) | slow | settled
        steps = m.steps + 1
        status = jnp.where(converged, int(Status.converged), jnp.where(steps >= max_steps, int(Status.max_steps), -1))
        new = _Member(y, st, hist, moved, steps, m.accepted + ok.astype(jnp.int32), jnp.asarray(status, jnp.int32))
        return jax.tree_util.tree_map(lambda n, o: jnp.where(active, n, o), new, m)

    step_all = jax.vmap(step_one)

    def run_chunk(ms, a):
        ms, _ = jax.lax.scan(lambda c, _: (step_all(c, a), None), ms, None, length=chunk)
        return ms

    if lanes is None or lanes >= B:
        members = jax.vmap(init_one)(y0, args)

        def chunk_body(carry):
            k, ms = carry
            ms = run_chunk(ms, args)
            n_active = jnp.sum(ms.status < 0)
            if report_id is not None:  # without a callback the program has no host call (and can be cached on disk)
                jax.debug.callback(_report, report_id, k + chunk, n_active, B - n_active)
            return k + chunk, ms

        def cond(carry):
            k, ms = carry
            return (k < max_steps) & jnp.any(ms.status < 0)

        _, members = jax.lax.while_loop(cond, chunk_body, (jnp.array(0, jnp.int32), members))
        status = jnp.where(members.status < 0, int(Status.max_steps), members.status)
        f = members.state.f
        rg = jax.vmap(relative_gradient)(members.state.g, f)
        return Solution(members.y, f, status, members.steps, rg, members.accepted)

    # lane refill: L lanes; item[l] is the member lane l holds (B: none)
    L = int(lanes)
    take_rows = lambda tree, idx: jax.tree_util.tree_map(lambda x: x[idx], tree)  # noqa: E731
    lane_args = take_rows(args, jnp.arange(L))
    members = jax.vmap(init_one)(y0[:L], lane_args)
    item = jnp.arange(L, dtype=jnp.int32)
    out = _Out(y0, jnp.full((B,), jnp.nan, dt), jnp.full((B,), int(Status.max_steps), jnp.int32),
               jnp.zeros((B,), jnp.int32), jnp.full((B,), jnp.nan, dt), jnp.zeros((B,), jnp.int32))

    def write(out: _Out, ms: _Member, item, mask):
        """Scatter the lanes selected by ``mask`` into the outputs at their members' indices."""
        idx = jnp.where(mask, item, B)  # out of range: dropped
        put = lambda o, v: o.at[idx].set(v, mode="drop")  # noqa: E731
        status = jnp.where(ms.status < 0, int(Status.max_steps), ms.status)
        rg = jax.vmap(relative_gradient)(ms.state.g, ms.state.f)
        return _Out(put(out.y, ms.y), put(out.value, ms.state.f), put(out.status, status), put(out.steps, ms.steps),
                    put(out.rel_grad, rg), put(out.accepted, ms.accepted))

    def load(operand):
        """Start the next pending members in the free lanes, in lane order."""
        ms, la, take, src = operand
        fresh_args = take_rows(args, src)
        fresh = jax.vmap(init_one)(y0[src], fresh_args)
        return _select(take, fresh, ms), _select(take, fresh_args, la)

    def body(carry):
        it, ms, la, item, nxt, out, n_done = carry
        ms = run_chunk(ms, la)
        fin = (item < B) & (ms.status >= 0)
        out = write(out, ms, item, fin)
        n_done = n_done + jnp.sum(fin, dtype=jnp.int32)
        free = fin | (item >= B)
        new = nxt + jnp.cumsum(free, dtype=jnp.int32) - 1
        take = free & (new < B)
        src = jnp.where(take, new, 0)
        ms, la = jax.lax.cond(jnp.any(take), load, lambda o: (o[0], o[1]), (ms, la, take, src))
        item = jnp.where(take, new, jnp.where(fin, B, item))
        nxt = nxt + jnp.sum(take, dtype=jnp.int32)
        if report_id is not None:
            jax.debug.callback(_report, report_id, (it + 1) * chunk, B - n_done, n_done)
        return it + 1, ms, la, item, nxt, out, n_done

    # a member finishes within ceil(max_steps / chunk) chunks (one chunk if it fails at its start), and while members
    # are pending every lane holds one: this many iterations always suffice
    per_member = (jnp.maximum(max_steps, 1) + chunk - 1) // chunk + 1
    bound = jnp.minimum((-(-B // L) + 1.0) * per_member.astype(jnp.float32) + 1.0, 2.0**30).astype(jnp.int32)

    def cond(carry):
        it, _, _, item, nxt, _, _ = carry
        return (it < bound) & (jnp.any(item < B) | (nxt < B))

    zero = jnp.array(0, jnp.int32)
    _, members, _, item, _, out, _ = jax.lax.while_loop(cond, body, (zero, members, lane_args, item, jnp.array(L, jnp.int32), out, zero))
    out = write(out, members, item, item < B)  # members still held at the bound (none in practice)
    return Solution(out.y, out.value, out.status, out.steps, out.rel_grad, out.accepted)


def minimize(
    solver: AbstractSolver,
    fn: Callable,
    y0: jax.Array,
    args: Any,
    shared: Any,
    *,
    max_steps: int,
    ftol: float,
    gtol: float,
    window: int = 10,
    chunk: int = 10,
    xtol: float | None = None,
    slow_ftol: float | None = None,
    lanes: int | None = None,
    report_id: int | jax.Array = 0,
) -> Solution:
    """Minimise ``sum(fn(y, args_b, shared)^2)`` for every member b of the batch, from ``y0`` (B, P).

    ``args``: a pytree whose leaves have leading axis B (per-member data, e.g. row weights); ``shared``: a pytree
    used by every member (the data). One compiled program per (solver, fn, shapes, window, chunk, lanes):
    ``max_steps``, ``ftol`` and ``gtol`` are traced values, so changing them does not recompile. ``xtol`` and
    ``slow_ftol`` switch on the kink and slow-objective tests of the module docstring (None: off; the law fits use
    1e-3 and 1e-5). ``lanes``: run the batch through this many lanes with refill (module docstring); None, or a
    value >= B, steps every member at once. ``report_id``: the id of a :class:`reporting` context whose callback
    receives the loop's progress (0 or None: none, and the program then holds no host callback, so JAX's persistent
    compilation cache can keep it; any other id is traced: one more program, shared by all ids). ``fn`` must be a
    stable callable
    (a module-level function or an ``equinox.Module``) so that repeated calls reuse the program.
    """
    lanes = check_lanes(lanes)
    if lanes is not None and lanes >= y0.shape[0]:
        lanes = None
    dt = y0.dtype
    return _minimize(solver, fn, y0, args, shared, jnp.asarray(max_steps, jnp.int32), int(chunk), jnp.asarray(ftol, dt),
                     jnp.asarray(gtol, dt), int(window), xtol, slow_ftol, lanes=lanes, report_id=_report_arg(report_id))


def _report_arg(report_id):
    """None (a program without the progress callback) for the id 0 of "no callback" while no ``every_loop``
    instrument listens, else the id as a traced int32: any other id reuses the program with the callback."""
    none = report_id is None or (isinstance(report_id, (int, np.integer)) and int(report_id) == 0)
    if none and _EVERY_LOOP not in _SINKS:
        return None
    return jnp.asarray(0 if report_id is None else report_id, jnp.int32)


def check_lanes(lanes) -> int | None:
    """``lanes`` as an int (or None), or a ValueError unless it is None or a positive integer."""
    if lanes is None:
        return None
    try:
        ok = not isinstance(lanes, bool) and int(lanes) == lanes and int(lanes) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"lanes must be None or a positive integer, got {lanes!r}")
    return int(lanes)
