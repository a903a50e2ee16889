"""Exact projections onto the capped simplex ``C = {h : sum_i h_i = 1, lo_i <= h_i <= hi_i}``.

* Euclidean, :func:`project_capped_simplex`: ``P(v)_i = clip(v_i + t, lo_i, hi_i)``;
* KL (Bregman projection of the negative entropy), :func:`project_capped_simplex_kl`: ``P(y)_i = clip(c y_i, lo_i,
  hi_i)``, worked in log space; the step of entropic mirror descent;
* per phase inside a total-variation ball, :func:`project_phase_ball`: P blocks z_p with ``sum_k z_pk = s_p``,
  ``s_p lo_pk <= z_pk <= s_p hi_pk`` and ``0.5 ||z - m||_1 <= r`` (a multiplier on the L1 term, found by bisection).

The block sum is monotone and piecewise linear (Euclidean) or piecewise ``C + A e^t`` (KL) in the shift t, so the
piece where it crosses its target is found among the breakpoints and solved in closed form: exact, O(K^2), traceable
under ``jit`` / ``vmap``. Each needs a non-empty set (``sum lo <= 1 <= sum hi``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["project_capped_simplex", "project_capped_simplex_kl", "project_phase_ball"]


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


_project_kl_batch = jax.jit(jax.vmap(project_capped_simplex_kl, in_axes=(0, None, None)))
_project_batch = jax.jit(jax.vmap(project_capped_simplex, in_axes=(0, None, None)))
