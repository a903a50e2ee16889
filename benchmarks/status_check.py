"""Does a fit's reported status agree with a polish of its end point? Capacity-noise law, SlimPajama 122M / 9.998B
(48 training rows, 80/20 split, seed 0), ``--starts`` starts of one batch, ``--max-steps`` steps, in each
``--dtypes`` (the same starts; a float32 end point is scored by its float64 objective). Each end point is polished by scipy L-BFGS-B (float64, ftol 1e-15, full parametrisation); a start "passes" when the polish
lowers its objective by less than 1e-3 (relative). Prints, per status, how many starts pass and the largest gap;
then, for each start that fails, its objective against the best start's and where its capacity parameters stand.

    python benchmarks/status_check.py                 # 48 starts, 300 steps, float64 and float32
    python benchmarks/status_check.py --bootstrap 200 # also: the default bootstrap of all 60 rows (200 resamples)

With ``--bootstrap R``, the same check for ``mixjax.bootstrap("capacity_noise", data, resamples=R)`` with its
defaults (2 starts per resample, the default step limit) on all 60 rows at 122M / 9.998e9 tokens: each
resample's fit is polished by scipy on the resampled rows (a row drawn w times appears w times).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.fitting import FitConfig, init_starts, objective_value, prepare, solve, summarize  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from scipy_reference import scipy_fit  # noqa: E402 (tests/scipy_reference.py: the independent scipy reference)


def take(tree, k):
    """Member(s) k of a batched law (an index or a slice)."""
    return jax.tree_util.tree_map(lambda x: x[k] if eqx.is_array(x) else x, tree)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--starts", type=int, default=48)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    p.add_argument("--bootstrap", type=int, default=0, help="also check a default bootstrap of this many resamples")
    args = p.parse_args(argv)
    if args.bootstrap < 0:
        p.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.bootstrap:
        check_bootstrap(args.bootstrap)
    train, _ = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9).split_rows(0.2, seed=0)
    arrays64, _ = prepare(mj.CapacityNoiseLaw, train, dtype="float64")
    starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), args.starts, summarize(arrays64, train), "float64")
    cast = lambda tree, dt: jax.tree_util.tree_map(lambda x: x.astype(dt) if eqx.is_inexact_array(x) else x, tree)  # noqa: E731
    ones = jnp.ones(train.n_rows)
    for dtype in args.dtypes:
        arrays, _ = prepare(mj.CapacityNoiseLaw, train, dtype=dtype)
        res = solve(cast(starts, dtype), jnp.ones((args.starts, train.n_rows), dtype), arrays, FitConfig(max_steps=args.max_steps, dtype=dtype))
        ends = cast(res.law, "float64")
        own = np.asarray(jax.vmap(lambda law: objective_value(law, arrays64, ones, FitConfig()))(ends))
        _, _, polished = scipy_fit("capacity_noise", train, starts=args.starts, start_laws=ends)
        gap = own / np.asarray(polished["values"]) - 1
        status = np.asarray(res.status)
        print(f"{dtype}, {args.starts} starts, {args.max_steps} steps: status, starts, pass (polish gap < 1e-3), largest gap")
        for s in mj.Status:
            m = status == int(s)
            if m.any():
                print(f"  {s.name:13s} {m.sum():4d} {int((gap[m] <= 1e-3).sum()):4d}  {gap[m].max():.2e}")
        print(f"  all           {len(gap):4d} {int((gap <= 1e-3).sum()):4d}  {gap.max():.2e}")
        best = float(np.min(own))
        for k in np.flatnonzero(gap > 1e-3):  # where the starts that fail stand
            law = take(ends, int(k))
            log10_c = np.asarray(law.log_c) / np.log(10)
            print(f"    start {k:3d} {mj.Status(int(status[k])).name:13s} J / best J - 1 {own[k] / best - 1:.2e}  gap {gap[k]:.2e}  "
                  f"log10 c in [{log10_c.min():.1f}, {log10_c.max():.1f}]  max b {float(np.max(np.asarray(law.b))):.2f}")
    return 0


def check_bootstrap(resamples: int) -> None:
    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    b = mj.bootstrap("capacity_noise", data, resamples=resamples)
    status, weights = np.asarray(b.status), np.asarray(b.weights)
    own, polished = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        rows = data.subset(np.repeat(np.arange(data.n_rows), weights[r]))
        law = take(b.laws, slice(r, r + 1))
        arrays, _ = prepare(mj.CapacityNoiseLaw, rows, dtype="float64")
        own[r] = float(objective_value(take(law, 0), arrays, jnp.ones(rows.n_rows), FitConfig()))
        polished[r] = scipy_fit("capacity_noise", rows, starts=1, start_laws=law)[1]
    drift = np.max(np.abs(own / np.asarray(b.loss) - 1))  # the repeated rows give the resample's own objective
    gap = own / polished - 1
    print(f"bootstrap, {resamples} resamples (defaults; objective on repeated rows vs the fit's own: max rel. diff "
          f"{drift:.1e}): status, resamples, pass (polish gap < 1e-3), median gap, largest gap")
    for s in mj.Status:
        m = status == int(s)
        if m.any():
            print(f"  {s.name:13s} {m.sum():4d} {int((gap[m] <= 1e-3).sum()):4d}  {np.median(gap[m]):.1e}  {gap[m].max():.2e}")
    print(f"  all           {resamples:4d} {int((gap <= 1e-3).sum()):4d}  {np.median(gap):.1e}  {gap.max():.2e}")


if __name__ == "__main__":
    raise SystemExit(main())
