"""Cost of one engine step against one objective-and-gradient evaluation, for the capacity-noise law (SlimPajama
122M / 9.998B, 48 training rows, B = 256 starts), with every run's capacity allocation computed at once
(domain-major, the law's ``evaluate_rows`` / ``linear_basis_rows``) and, as the baseline in the same run, with
the law vmapped run by run (``AbstractLaw``'s default). Milliseconds per call for the whole batch, the faster of
five timed rounds (the machine is shared: the fastest round is the least disturbed).

    python benchmarks/step_cost.py [--batch 256] [--dtypes float32 float64]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.fitting import init_starts, prepare, summarize  # noqa: E402
from mixjax.internal import flat_residuals, minimize, optimised_spec  # noqa: E402
from mixjax.laws import AbstractLaw  # noqa: E402
from mixjax.problem import Problem  # noqa: E402


class RunByRun(mj.CapacityNoiseLaw):
    """The capacity-noise law evaluated run by run (a vmap of ``__call__``), as before the all-runs allocation."""

    evaluate_rows = AbstractLaw.evaluate_rows
    linear_basis_rows = AbstractLaw.linear_basis_rows


def best_ms(fn, *args, rounds=5, calls=10):
    jax.block_until_ready(fn(*args))
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            r = fn(*args)
        jax.block_until_ready(r)
        out.append((time.perf_counter() - t0) / calls * 1e3)
    return min(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = p.parse_args(argv)
    B = args.batch
    train, _ = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9).split_rows(0.2, seed=0)
    print("| dtype | layout | objective+gradient ms | engine step ms | step / evaluation |")
    print("|---|---|---:|---:|---:|")
    for dtype in args.dtypes:
        arrays, _ = prepare(mj.CapacityNoiseLaw, train, dtype=dtype)
        for layout, cls in (("all runs at once", mj.CapacityNoiseLaw), ("run by run", RunByRun)):
            laws = init_starts(cls, jax.random.PRNGKey(0), B, summarize(arrays, train), dtype)  # the same draw for both
            problem = Problem.build(laws, arrays)
            spec = optimised_spec(laws, True)
            y0 = jax.vmap(lambda t: ravel_pytree(t)[0])(eqx.filter(laws, spec))
            template = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)
            shared = (problem, template, optimised_spec(template, True))
            W = jnp.ones((B, train.n_rows), dtype)
            vg = jax.jit(jax.vmap(jax.value_and_grad(lambda y, w: jnp.sum(flat_residuals(y, w, shared) ** 2))))
            zero = jnp.asarray(0.0, dtype)
            steps = 100
            run = jax.jit(lambda y, w: minimize(mj.LBFGS(), flat_residuals, y, w, shared, max_steps=steps, ftol=zero, gtol=zero).value)
            t_eval = best_ms(vg, y0, W)
            t_step = best_ms(run, y0, W, calls=1) / steps
            print(f"| {dtype} | {layout} | {t_eval:.2f} | {t_step:.2f} | {t_step / t_eval:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
