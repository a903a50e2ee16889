"""The capacity allocation of the capacity-competition law, with exact implicit gradients.

Inner problem (Dai & Zheng 2026): given mixture h, exponents b > 0, coefficients c > 0, head size H > 0 and
model size N (millions of parameters),

    x*(h) = argmin_x  sum_i h_i c_i x_i^(-b_i)   s.t.  sum_i x_i = N + (K-1) H,  x_i >= H.

KKT: ``x_i(lam) = max(H, (b_i c_i h_i / lam)^(1/(1+b_i)))`` and lam > 0 is the root of ``sum_i x_i(lam) = C`` with
``C = N + (K-1) H``. With ``t = log lam`` and ``log x_i(t) = max(log H, (log(b_i c_i h_i) - t) / (1+b_i))``,

    G(t) = log sum_i x_i(t) - log C

is convex (log-sum-exp of maxima of affine functions) and decreasing in t. Newton's method started left of the
root (where G >= 0) therefore never overshoots and converges monotonically, quadratically near the root; the
iterate is also kept inside a bracket. A fixed number of steps is taken (no data-dependent loop). Starting point: ``t0 = max_i [log(b_i c_i h_i) - (1+b_i) log C]`` over
domains with h_i > 0, where the largest x_i alone equals C (so G(t0) >= 0).

Gradients: the root is found with gradients stopped, then one Newton step ``t = t* - G(t*; theta) / G'(t*)``
(with G' held constant) is taken with gradients on. Its value is t* (G(t*) = 0) and its derivative is
``-dG/dtheta / G'``, exactly the implicit-function-theorem derivative; no autodiff through the iterations.

A domain with h_i = 0 sits at the floor x_i = H. If N <= H every domain sits at the floor (the budget cannot be
met); the law should keep H well below the model sizes it is used at.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["capacity_allocation", "log_capacity_allocation", "log_allocation_from_logs", "log_allocation_rows", "CapacityAllocationMixin"]


def _log_x(t, log_w, active, inv1pb, log_H):
    free = jnp.where(active, (log_w - t) * inv1pb, log_H)
    return jnp.maximum(free, log_H)


def _G_and_slope(t, log_w, active, inv1pb, log_H, log_C):
    """G(t) and dG/dt with one exponential per domain and one logarithm: the shares ``p_i = x_i / sum_j x_j`` reuse
    the exponentials of the sum. Domains lie on axis 0 (see :func:`_log_allocation_domain_major`).

    The exponentials are of ``log x_i - log C``, with no max shift (one reduction fewer per step): the iterates
    lie in [t0, t*]; at t0 every x_i <= C and x_i falls as t grows, so each term is at most 1, and left of the
    root the sum is at least 1, so it neither overflows nor underflows."""
    lx = _log_x(t, log_w, active, inv1pb, log_H)
    e = jnp.exp(lx - log_C)
    total = jnp.sum(e, axis=0, keepdims=True)
    is_free = active & ((log_w - t) * inv1pb > log_H)
    slope = -jnp.sum(jnp.where(is_free, e * inv1pb, 0.0), axis=0, keepdims=True) / total
    return jnp.log(total), slope


def _log_allocation_domain_major(h, b, log_c, log_H, model_size, n_iter):
    """log x* with the K domains on axis 0 of ``h`` and any number of runs behind it: ``h`` (K, *S), ``b`` and
    ``log_c`` broadcastable to it (K, 1, ...), ``model_size`` to S, ``log_H`` a scalar. Every reduction runs over
    axis 0, so with S = (n,) runs the elementwise work is vectorised over runs (a vmap over runs would put the
    K domains on the minor axis, where a reduction over 7 or 17 values vectorises poorly). ``n_iter`` None: the
    dtype's default (:func:`log_capacity_allocation`)."""
    dtype = jnp.result_type(h, b, log_c, log_H, model_size)
    h = jnp.asarray(h, dtype)
    if n_iter is None:
        n_iter = 7 if dtype == jnp.float64 else 5
    K = h.shape[0]
    active = h > 0
    h_safe = jnp.where(active, h, 1.0)
    log_w = jnp.log(b) + log_c + jnp.log(h_safe)
    inv1pb = 1.0 / (1.0 + b)
    # Per-run values (log C, the root t, G and its slope) are kept as (1, *S), the rank of (K, *S) (explicit
    # broadcasting over the domain axis).
    log_C = jnp.log(jnp.broadcast_to(model_size, h.shape[1:]) + (K - 1) * jnp.exp(log_H))[None]

    sg = jax.lax.stop_gradient
    args = (sg(log_w), active, sg(inv1pb), sg(log_H), sg(log_C))
    onep_b = 1.0 / args[2]
    t_lo = jnp.max(jnp.where(active, args[0] - onep_b * args[4], -jnp.inf), axis=0, keepdims=True)
    t_hi = jnp.max(jnp.where(active, args[0] - onep_b * args[3], -jnp.inf), axis=0, keepdims=True)
    t_lo = jnp.minimum(t_lo, t_hi)

    def body(_, t):
        g, s = _G_and_slope(t, *args)
        newton = jnp.where(s < 0, t - g / jnp.where(s < 0, s, -1.0), t_hi)
        return jnp.clip(newton, t, t_hi)  # monotone from the left, inside the bracket

    t_star = sg(jax.lax.fori_loop(0, n_iter, body, t_lo, unroll=True))  # unrolled: XLA fuses across steps

    # One differentiable Newton step: exact implicit-function-theorem gradients w.r.t. h, b, c, H and N (the
    # slope is held constant: its value at the root is all the implicit function theorem needs).
    g, slope = _G_and_slope(t_star, log_w, active, inv1pb, log_H, log_C)
    slope = sg(slope)
    safe = slope < 0
    t = jnp.where(safe, t_star - g / jnp.where(safe, slope, -1.0), t_star)
    return _log_x(t, log_w, active, inv1pb, log_H)


def log_capacity_allocation(mixture, b, c, H, model_size, *, n_iter: int | None = None):
    """log x*(h): ``(K,)``. See the module docstring for the maths. ``model_size`` in millions of parameters.

    ``n_iter`` Newton steps, a fixed count so that a batch of allocations costs the same for every member (no
    data-dependent loop): by default 7 in float64 and 5 in float32, a margin over the most steps measured to
    reach the working precision on random instances (``benchmarks/allocation_newton.py``)."""
    return log_allocation_from_logs(mixture, b, jnp.log(c), jnp.log(H), model_size, n_iter=n_iter)


def log_allocation_from_logs(mixture, b, log_c, log_H, model_size, *, n_iter: int | None = None):
    """:func:`log_capacity_allocation` with c and H given as logs (the laws store them so): no exp/log round trip.
    Per Newton step: one exponential per domain and one logarithm."""
    return _log_allocation_domain_major(mixture, b, log_c, log_H, model_size, n_iter)


def log_allocation_rows(mixtures, b, log_c, log_H, model_sizes, *, n_iter: int | None = None):
    """log x* of n runs at once: mixtures ``(n, K)``, model sizes ``(n,)`` (millions of parameters), one law's
    ``b``, ``log c`` ``(K,)`` and ``log H``; returns ``(n, K)``. Equal to ``vmap`` of
    :func:`log_allocation_from_logs` over runs (values and gradients), about twice as fast: the work is laid out
    domain-major, vectorised over runs."""
    h = jnp.asarray(mixtures).T
    return _log_allocation_domain_major(h, b[:, None], log_c[:, None], log_H, model_sizes, n_iter).T


def capacity_allocation(mixture, b, c, H, model_size, **kwargs):
    """x*(h) ``(K,)``: the capacity (in the units of ``model_size``, millions of parameters) given to each domain."""
    return jnp.exp(log_capacity_allocation(mixture, b, c, H, model_size, **kwargs))


class CapacityAllocationMixin:
    """What every capacity law gets from the allocation, as a mixin for :class:`mixjax.laws.AbstractLaw` subclasses
    with the exponents ``b`` (an attribute or property), the fields ``log_c`` and ``log_H``, and a method
    ``_predict_given(mixture, log_x, model_size, n_tokens)``: the losses of one run given its log allocation. One
    run's prediction (``__call__``) and all runs at once (``evaluate_rows``, every allocation in one domain-major
    pass) both go through ``_predict_given``."""

    def log_allocation(self, mixture, model_size):
        """log x*(h, N), computed from the stored logs (no exp/log round trip)."""
        return log_allocation_from_logs(mixture, self.b, self.log_c, self.log_H, model_size)

    def log_allocation_rows(self, mixtures, model_sizes):
        """log x* of n runs at once, ``(n, K)`` (:func:`log_allocation_rows`)."""
        return log_allocation_rows(mixtures, self.b, self.log_c, self.log_H, model_sizes)

    def allocation(self, mixture, model_size):
        """x*(h, N): capacity per domain, in millions of parameters."""
        return jnp.exp(self.log_allocation(mixture, model_size))

    def __call__(self, mixture, model_size, n_tokens):
        return self._predict_given(mixture, self.log_allocation(mixture, model_size), model_size, n_tokens)

    def evaluate_rows(self, mixtures, model_sizes, n_tokens):
        log_x = self.log_allocation_rows(mixtures, model_sizes)
        return jax.vmap(self._predict_given)(mixtures, log_x, model_sizes, n_tokens)
