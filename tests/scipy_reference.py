"""Independent reference implementations (scipy), used by the tests and benchmarks to validate and time the compiled
engine (kept out of the package: mixjax does not depend on scipy).

:func:`scipy_fit` minimizes the same objective as :func:`mixjax.fit` with ``scipy.optimize.minimize`` (L-BFGS-B),
one start after another in a Python loop, the way published fitting code does. Gradients come from
``jax.value_and_grad`` compiled once (a stronger baseline than finite differences). Needs scipy.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from mixjax.fitting import FitConfig, init_starts, objective_value, prepare, summarize
from mixjax.laws import AbstractLaw

__all__ = ["scipy_fit", "scipy_allocation"]


def scipy_fit(law, data, *, starts: int = 16, seed: int = 0, objective: str = "mse", maxiter: int = 15000,
              ftol: float = 1e-15, gtol: float = 1e-12, start_laws: AbstractLaw | None = None):
    """Fit with scipy L-BFGS-B from the same random starts as ``mixjax.fit(law, data, starts=..., seed=...)``.

    Returns ``(best_law, best_value, info)`` where info has per-start values, iterations, and seconds (excluding
    the one-off jit compile of the objective, which is reported separately as ``compile_seconds``). Runs on the
    host CPU whatever JAX's default device (one small evaluation per scipy iteration: on an accelerator each
    would wait on a kernel launch and a transfer); the returned law lives there too."""
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX started without its CPU backend (JAX_PLATFORMS): stay on the default device
        return _scipy_fit(law, data, starts, seed, objective, maxiter, ftol, gtol, start_laws)
    if start_laws is not None:
        start_laws = jax.tree_util.tree_map(lambda x: jax.device_put(x, cpu) if eqx.is_array(x) else x, start_laws)
    with jax.default_device(cpu):
        return _scipy_fit(law, data, starts, seed, objective, maxiter, ftol, gtol, start_laws)


def _scipy_fit(law, data, starts, seed, objective, maxiter, ftol, gtol, start_laws):
    from scipy.optimize import minimize

    cfg = FitConfig(objective=objective)
    arrays, _ = prepare(law, data)
    if start_laws is None:
        start_laws = init_starts(law, jax.random.PRNGKey(seed), starts, summarize(arrays, data))
    params_b, static = eqx.partition(start_laws, eqx.is_inexact_array)
    flat0, unravel = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], params_b))
    weights = jnp.ones(arrays.h.shape[0])

    @jax.jit
    def vg(flat):
        return jax.value_and_grad(lambda f: objective_value(eqx.combine(unravel(f), static), arrays, weights, cfg))(flat)

    t0 = time.perf_counter()
    jax.block_until_ready(vg(flat0))
    compile_s = time.perf_counter() - t0

    def fun(x):
        v, g = vg(jnp.asarray(x))
        v = float(v)
        return (v, np.asarray(g, np.float64)) if np.isfinite(v) else (1e10, np.zeros_like(x))

    values, iters, xs = [], [], []
    t0 = time.perf_counter()
    for s in range(starts):
        x0 = np.asarray(jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda x: x[s], params_b))[0])
        r = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxfun": 4 * maxiter})
        values.append(float(r.fun))
        iters.append(int(r.nit))
        xs.append(r.x)
    seconds = time.perf_counter() - t0
    best = int(np.argmin(values))
    law_best = eqx.combine(unravel(jnp.asarray(xs[best])), static)
    return law_best, values[best], {"values": values, "iterations": iters, "seconds": seconds, "compile_seconds": compile_s, "best_start": best}


def scipy_allocation(mixture, b, c, H, model_size):
    """x*(h) by scipy SLSQP on the original constrained problem (no KKT algebra): the test reference for
    :func:`mixjax.laws.capacity_allocation`."""
    from scipy.optimize import minimize

    h, b, c = (np.asarray(v, np.float64) for v in (mixture, b, c))
    K = h.size
    C = model_size + (K - 1) * H
    # optimize in u = log(x - H + eps)-free form: x = H + (C - K H) * softmax-like; use plain x with bounds
    x0 = np.full(K, C / K)
    scale = np.sum(h * c * x0 ** (-b))

    def f(x):
        return np.sum(h * c * x ** (-b)) / scale

    def g(x):
        return -b * h * c * x ** (-b - 1) / scale

    cons = [{"type": "eq", "fun": lambda x: np.sum(x) - C, "jac": lambda x: np.ones(K)}]
    r = minimize(f, x0, jac=g, method="SLSQP", bounds=[(H, C)] * K, constraints=cons, options={"ftol": 1e-16, "maxiter": 2000})
    return r.x
