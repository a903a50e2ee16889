"""Converged fits per second of the batched engine at several batch sizes, against a scipy L-BFGS-B loop, side by
side in one run.

Problem: the capacity-competition + noise law (7 domains, 36 parameters; 22 optimised under variable projection)
on the 48 training rows (80 %, seed 0) of the 60-mixture SlimPajama subset at 122M parameters / 9.998e9 tokens.
A fit is one optimisation from one random start; B fits are B starts in ONE compiled, vmapped call (the shape of a
multi-start fit or a bootstrap of B resamples). Starts are the first B of one fixed draw, so every row shares them.

A start counts as converged only if its float64 objective is within 1e-3 (relative) of the same fit polished by
scipy L-BFGS-B in float64 (ftol 1e-15, full parameterisation, JAX gradients, started from the engine's end point) -
checked on ``--check`` starts spread over the batch; "converged fits/s" is fits/s times that fraction. The column
"<= scipy" is the share of checked starts whose objective is at most that of scipy L-BFGS-B run from the same
starting point (a multimodal objective: the two may end in different basins). The scipy runs from the starting
points give the baseline: scipy's fits/s, one start after another, and the held-out MRE of its best start. B = 1 is
a loop over the checked starts, one compiled call each. Compile seconds (first call
minus a warm call) are reported apart. Peak memory: device peak bytes where the backend reports them (GPU), else the
process peak RSS.

    python benchmarks/fit_speed.py                      # B = 1, 64, 256, 1024; float64 and float32
    python benchmarks/fit_speed.py --batches 1 16 --check 4 --dtypes float64   # quick
    python benchmarks/fit_speed.py --batches 1 1024 16384 65536                # accelerator

Writes ``benchmarks/results/fit_speed_<backend>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.fitting import FitConfig, init_starts, objective_value, prepare, solve, summarize  # noqa: E402
from mixjax.metrics import mre  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from scipy_reference import scipy_fit  # noqa: E402 (tests/scipy_reference.py: the independent scipy reference)



def peak_memory() -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"


def take(tree, idx):
    return jax.tree_util.tree_map(lambda x: x[idx] if eqx.is_array(x) else x, tree)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    p.add_argument("--optimizers", nargs="+", default=["lbfgs"], choices=["lbfgs", "lm", "adam"])
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--check", type=int, default=64, help="starts checked against their scipy polish")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args(argv)
    if args.check < 1:
        p.error(f"--check must be at least 1, got {args.check}: the scipy baseline and the B = 1 loop run on the checked starts")

    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    train, val = data.split_rows(0.2, seed=0)
    a64, _ = prepare(mj.CapacityNoiseLaw, train, dtype="float64")
    summary = summarize(a64, train)
    Bmax = max(args.batches)
    starts64 = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), Bmax, summary, "float64")
    backend, device = jax.default_backend(), jax.devices()[0].device_kind
    print(f"backend {backend} ({device}), jax {jax.__version__}, {train.n_rows} rows, max_steps {args.max_steps}", flush=True)

    # scipy polish of the checked starts (the reference for convergence, and the baseline loop)
    check_idx = {B: np.unique(np.linspace(0, B - 1, min(args.check, B)).round().astype(int)) for B in args.batches}
    all_idx = np.unique(np.concatenate(list(check_idx.values())))
    _, _, sp = scipy_fit("capacity_noise", train, starts=len(all_idx), start_laws=take(starts64, jnp.asarray(all_idx)))
    sp_value = dict(zip(all_idx.tolist(), sp["values"]))
    sp_rate = len(all_idx) / sp["seconds"]
    w1 = jnp.ones(train.n_rows)

    def val_mre(law):
        pred = np.asarray(law.predict(val.mixtures, val.model_size_m, val.n_tokens_b))
        y, m = val.domain_losses()
        return float(mre(pred, y, m))

    sp_best_law = scipy_fit("capacity_noise", train, starts=1, start_laws=take(starts64, jnp.asarray(all_idx[[int(np.argmin(sp["values"]))]])))[0]
    sp_mre = val_mre(sp_best_law)
    print(f"scipy L-BFGS-B: {len(all_idx)} starts in {sp['seconds']:.1f} s = {sp_rate:.2f} fits/s; best J {min(sp['values']):.7g}, held-out MRE {100 * sp_mre:.3f} %", flush=True)

    rows = []
    for opt in args.optimizers:
        for dtype in args.dtypes:
            arrays, _ = prepare(mj.CapacityNoiseLaw, train, dtype=dtype)
            cfg = FitConfig(max_steps=args.max_steps, dtype=dtype, optimizer=opt)
            for B in args.batches:
                laws = jax.tree_util.tree_map(lambda x: x[:B].astype(dtype) if eqx.is_inexact_array(x) else x, starts64)
                idx = check_idx[B]
                t0 = time.perf_counter()
                if B == 1:  # a loop of single fits over the checked starts
                    laws = jax.tree_util.tree_map(lambda x: x[:Bmax].astype(dtype) if eqx.is_inexact_array(x) else x, starts64)
                    idx = check_idx[max(args.batches)]
                    one = lambda i: solve(take(laws, jnp.asarray([int(i)])), jnp.ones((1, train.n_rows), dtype), arrays, cfg)  # noqa: E731
                    jax.block_until_ready(one(idx[0]).loss)
                    first = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    parts = [one(i) for i in idx]
                    jax.block_until_ready(parts[-1].loss)
                    run = (time.perf_counter() - t0) / len(idx)
                    first -= run
                    res = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x) if eqx.is_array(x[0]) else x[0], *parts)
                    pick = np.arange(len(idx))
                else:
                    W = jnp.ones((B, train.n_rows), dtype)
                    jax.block_until_ready(solve(laws, W, arrays, cfg).loss)
                    first = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    res = solve(laws, W, arrays, cfg)
                    jax.block_until_ready(res.loss)
                    run = time.perf_counter() - t0
                    first -= run
                    pick = idx
                ends = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, take(res.law, jnp.asarray(pick)))
                J = np.array([float(objective_value(take(ends, k), a64, w1, FitConfig())) for k in range(len(idx))])
                _, _, pol = scipy_fit("capacity_noise", train, starts=len(idx), start_laws=ends)
                ok = J <= np.asarray(pol["values"]) * (1 + 1e-3)
                basin = J <= np.array([sp_value[int(i)] for i in idx]) * (1 + 1e-3)
                frac = float(np.mean(ok))
                loss = np.where(np.isfinite(np.asarray(res.loss)), np.asarray(res.loss), np.inf)
                best = take(res.law, int(np.argmin(loss)))
                best64 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, best)
                mem, mem_kind = peak_memory()
                row = {
                    "optimizer": opt, "dtype": dtype, "B": B, "compile_s": first, "run_s": run, "fits_per_s": B / run,
                    "converged_frac": frac, "at_or_below_scipy_frac": float(np.mean(basin)), "converged_fits_per_s": B / run * frac, "checked": len(idx),
                    "status": mj.results.status_counts(res.status), "mean_steps": float(np.mean(np.asarray(res.num_steps))),
                    "best_J": float(loss.min()), "best_val_mre": val_mre(best64), "peak_bytes": mem, "peak_kind": mem_kind,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

    lines = [
        f"# fit_speed ({backend}: {device})", "",
        f"capacity_noise, SlimPajama 122M / 9.998B, {train.n_rows} training rows, max_steps {args.max_steps}, variable projection; "
        f"converged = within 1e-3 of its own fit polished by scipy L-BFGS-B in float64 (checked on up to {args.check} starts per row); "
        "<= scipy = at or below (1e-3) scipy L-BFGS-B run from the same starting point; B = 1 is a loop of single fits; run s is per call.", "",
        f"scipy L-BFGS-B loop: {sp_rate:.2f} fits/s ({len(all_idx)} starts, {sp['seconds']:.1f} s), best J {min(sp['values']):.7g}, "
        f"held-out MRE of that start {100 * sp_mre:.3f} %", "",
        "| solver | dtype | B | compile s | run s | fits/s | converged | <= scipy | converged fits/s | x scipy | mean steps | best J | best held-out MRE % | peak memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['optimizer']} | {r['dtype']} | {r['B']} | {r['compile_s']:.1f} | {r['run_s']:.2f} | {r['fits_per_s']:.1f} | "
            f"{100 * r['converged_frac']:.0f} % of {r['checked']} | {100 * r['at_or_below_scipy_frac']:.0f} % | {r['converged_fits_per_s']:.1f} | {r['converged_fits_per_s'] / sp_rate:.0f} | "
            f"{r['mean_steps']:.0f} | {r['best_J']:.7g} | {100 * r['best_val_mre']:.3f} | {r['peak_bytes'] / 2**20:.0f} MiB ({r['peak_kind']}) |"
        )
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"fit_speed_{backend}")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"scipy_fits_per_s": sp_rate, "scipy_best_J": min(sp["values"]), "scipy_best_val_mre": sp_mre, "rows": rows}, f, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
