"""How faithful is the float32 objective? Capacity-noise law, SlimPajama 122M / 9.998B (48 training rows, 80/20 split,
seed 0): ``--starts`` starts fitted in float32 (default settings), then at every end point the projected objective J
and its gradient are evaluated in float32 and in float64 (the same parameters, cast). Prints the relative error of
J32 against J64 and the cosine between the two gradients (median, 10 % tail and worst over the end points).

The float32 path is only as good as these agree: a noisy J stops the solver where no step seems to lower it, and a
wrong gradient points the steps the wrong way. Run the script at an earlier commit to compare implementations.

    python benchmarks/float32_accuracy.py             # 48 starts
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.fitting import FitConfig, init_starts, prepare, solve, summarize  # noqa: E402
from mixjax.internal import optimised_spec  # noqa: E402
from mixjax.problem import Problem  # noqa: E402


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree)


def value_and_grad(arrays, law):
    """J and dJ/dy at ``law`` over the optimised parameters y (variable projection on, as the fit runs)."""
    problem = Problem.build(law, arrays)
    opt, rest = eqx.partition(law, optimised_spec(law, True))
    y, unravel = ravel_pytree(opt)
    w = jnp.ones(arrays.h.shape[0], arrays.h.dtype)
    return jax.value_and_grad(lambda z: problem.value(eqx.combine(unravel(z), rest), w))(y)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=48)
    args = p.parse_args(argv)
    train, _ = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9).split_rows(0.2, seed=0)
    a64, _ = prepare(mj.CapacityNoiseLaw, train, dtype="float64")
    a32, _ = prepare(mj.CapacityNoiseLaw, train, dtype="float32")
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), args.starts, summarize(a64, train), "float64")
    res = solve(cast(starts, "float32"), jnp.ones((args.starts, train.n_rows), jnp.float32), a32, FitConfig(dtype="float32"))
    rel, cos = [], []
    for i in range(args.starts):
        law = jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, res.law)
        v32, g32 = value_and_grad(a32, law)
        v64, g64 = value_and_grad(a64, cast(law, "float64"))
        g32, g64 = np.asarray(g32, np.float64), np.asarray(g64)
        rel.append(abs(float(v32) / float(v64) - 1))
        cos.append(float(g32 @ g64 / max(np.linalg.norm(g32) * np.linalg.norm(g64), 1e-300)))
    rel, cos = np.array(rel), np.array(cos)
    print(f"{args.starts} float32 end points: |J32 / J64 - 1| median {np.median(rel):.1e}, 90th percentile "
          f"{np.quantile(rel, 0.9):.1e}, max {rel.max():.1e}; gradient cosine median {np.median(cos):.4f}, 10th percentile "
          f"{np.quantile(cos, 0.1):.4f}, min {cos.min():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
