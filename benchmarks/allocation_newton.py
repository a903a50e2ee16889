"""How many Newton steps the capacity allocation needs: the largest error of log x* after n steps, over random
instances (K = 7 and 17; exponents, coefficients, mixtures with zeros, model sizes over four decades), against a
60-step float64 reference. Prints one row per step count, float64 and float32.

    python benchmarks/allocation_newton.py
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mixjax.laws import log_capacity_allocation  # noqa: E402


def instances(K, n, seed):
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.full(K, 0.5), size=n)
    h[rng.random((n, K)) < 0.2] = 0.0
    h[:, 0] += 1e-3
    h /= h.sum(1, keepdims=True)
    b = rng.uniform(0.05, 3.0, (n, K))
    c = np.exp(rng.uniform(-1, 3, (n, K)))
    H = np.exp(rng.uniform(np.log(0.5), np.log(20.0), n))
    N = np.exp(rng.uniform(np.log(50.0), np.log(5e4), n))
    return h, b, c, H, N


def main():
    print("| K | dtype | steps | max abs error of log x* |")
    print("|---|---|---|---|")
    for K in (7, 17):
        args64 = [jnp.asarray(a) for a in instances(K, 4000, K)]
        ref = jax.vmap(lambda *a: log_capacity_allocation(*a, n_iter=60))(*args64)
        for dtype in ("float64", "float32"):
            args = [a.astype(dtype) for a in args64]
            for n in range(2, 11):
                got = jax.vmap(lambda *a: log_capacity_allocation(*a, n_iter=n))(*args)
                err = float(jnp.max(jnp.abs(got.astype(jnp.float64) - ref)))
                print(f"| {K} | {dtype} | {n} | {err:.2e} |")


if __name__ == "__main__":
    main()
