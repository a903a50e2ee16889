"""Fits per second of the batched engine versus a scipy L-BFGS-B loop, measured side by side in one run.

Problem: the capacity-competition + noise law (7 domains, 36 parameters) on the 60-mixture SlimPajama subset at
122M parameters / 9.998e9 tokens. A "fit" is one optimization from one random start (``mixjax.fit.init_starts``);
B simultaneous fits are B starts in ONE compiled, vmapped call (the shape of a multi-start fit or of a bootstrap
with B resamples). For each B the table reports:

* compile seconds (first call minus a second, warm call) and run seconds of the warm call;
* fits per second = B / run seconds;
* quality: the fraction of the B fits whose objective is within 1 % of the best objective reached by any method
  in this run, and the held-out MRE of the best fit (20 % of the mixtures held out, seed 0);
* peak memory: device peak bytes where the backend reports them (GPU), else the process's peak RSS;
* the scipy baseline: ``scipy.optimize.minimize(method="L-BFGS-B")`` with jit-compiled JAX gradients of the same
  objective, one start after another (as published fitting code does), on min(B, --scipy-fits) of the same starts;
  its rate is per fit, so it does not depend on B. Ratio = engine fits/s over scipy fits/s.

Usage: ``python benchmarks/fit_speed.py`` (full: B = 1, 64, 1024) or ``--quick``; ``--dtype float32`` for the
accelerator fast path. Results go to ``benchmarks/results/fit_speed_<backend>_<dtype>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import mixjax as mj
from mixjax.fit import FitConfig, init_starts, prepare, solve, summarize
from mixjax.reference import scipy_fit


def peak_memory_bytes() -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024], help="simultaneous fits per call")
    p.add_argument("--max-steps", type=int, default=400, help="L-BFGS iterations per fit (engine)")
    p.add_argument("--scipy-fits", type=int, default=16, help="how many of the starts scipy fits (sequentially)")
    p.add_argument("--scipy-maxiter", type=int, default=15000, help="scipy L-BFGS-B maxiter")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--quick", action="store_true", help="B = 1, 16; 4 scipy fits")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.scipy_fits = [1, 16], 4

    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    train, val = data.split_rows(0.2, seed=0)
    arrays, _ = prepare(mj.CapacityNoiseLaw, train, dtype=args.dtype)
    summary = summarize(arrays, train)
    cfg = FitConfig(max_steps=args.max_steps, dtype=args.dtype, ftol=1e-10 if args.dtype == "float64" else 1e-6)
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    print(f"backend {backend} ({device}), {jax.device_count()} device(s), dtype {args.dtype}, jax {jax.__version__}", file=sys.stderr)

    def wrap(law):
        return mj.fit(law, train, starts=1, max_steps=1)

    Bmax = max(args.batches)
    all_starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), Bmax, summary, args.dtype)

    # scipy baseline on the first scipy_fits starts (float64)
    n_sp = min(args.scipy_fits, Bmax)
    sp_starts = init_starts(mj.CapacityNoiseLaw, jax.random.PRNGKey(0), Bmax, summary, "float64")
    sp_starts = jax.tree_util.tree_map(lambda x: x[:n_sp], sp_starts)
    sp_law, sp_best, sp_info = scipy_fit("capacity_noise", train, starts=n_sp, start_laws=sp_starts, maxiter=args.scipy_maxiter)
    sp_rate = n_sp / sp_info["seconds"]
    sp_val = wrap(sp_law).evaluate(val)["mre"]
    print(f"scipy: {n_sp} fits in {sp_info['seconds']:.1f} s ({sp_rate:.3f} fits/s), best objective {sp_best:.6g}, held-out MRE {sp_val:.4%}", file=sys.stderr)

    rows = []
    for B in args.batches:
        starts = jax.tree_util.tree_map(lambda x: x[:B], all_starts)
        W = jnp.ones((B, train.n_rows), jnp.dtype(args.dtype))
        t0 = time.perf_counter()
        jax.block_until_ready(solve(starts, W, arrays, cfg).loss)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve(starts, W, arrays, cfg)
        jax.block_until_ready(res.loss)
        run = time.perf_counter() - t0
        loss = np.asarray(res.loss, np.float64)
        ok = np.asarray(res.status) != int(mj.Status.nonfinite)
        best_i = int(np.argmin(np.where(ok, loss, np.inf)))
        best_law = jax.tree_util.tree_map(lambda x: x[best_i], res.law)
        mem, mem_kind = peak_memory_bytes()
        rows.append(
            {
                "B": B,
                "compile_s": max(first - run, 0.0),
                "run_s": run,
                "fits_per_s": B / run,
                "best_objective": float(loss[best_i]),
                "median_objective": float(np.median(loss[ok])),
                "loss": loss,
                "held_out_mre": wrap(jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), best_law)).evaluate(val)["mre"],
                "n_failed": int((~ok).sum()),
                "steps_mean": float(np.mean(np.asarray(res.num_steps))),
                "peak_memory_bytes": mem,
                "memory_kind": mem_kind,
            }
        )
        print(f"B={B}: compile {rows[-1]['compile_s']:.1f} s, run {run:.2f} s, {B / run:.1f} fits/s", file=sys.stderr)

    best_any = min([sp_best] + [r["best_objective"] for r in rows])
    sp_within = float(np.mean(np.asarray(sp_info["values"]) <= best_any * 1.01))
    lines = [
        f"Capacity-noise law, SlimPajama 122M / 9.998e9 tokens (48 train rows, 12 held out), {args.dtype}, "
        f"backend {backend} ({device}), engine L-BFGS {args.max_steps} steps; scipy L-BFGS-B maxiter {args.scipy_maxiter} "
        f"on {n_sp} of the same starts.",
        "",
        "| B fits | compile s | run s | fits/s | scipy fits/s | ratio | within 1% of best | best objective | held-out MRE (best) | failed | peak memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        within = float(np.mean(r.pop("loss") <= best_any * 1.01))
        r["within_1pct"] = within
        lines.append(
            f"| {r['B']} | {r['compile_s']:.1f} | {r['run_s']:.2f} | {r['fits_per_s']:.1f} | {sp_rate:.3f} | "
            f"{r['fits_per_s'] / sp_rate:.0f}x | {within:.0%} | {r['best_objective']:.6g} | {r['held_out_mre']:.3%} | "
            f"{r['n_failed']} | {r['peak_memory_bytes'] / 2**20:.0f} MiB ({r['memory_kind']}) |"
        )
    lines.append(
        f"| scipy | {sp_info['compile_seconds']:.1f} | {sp_info['seconds']:.1f} | {sp_rate:.3f} | - | 1x | {sp_within:.0%} | "
        f"{sp_best:.6g} | {sp_val:.3%} | - | - |"
    )
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"fit_speed_{backend}_{args.dtype}{'_quick' if args.quick else ''}")
    with open(stem + ".md", "w") as fh:
        fh.write(f"Command: `python benchmarks/fit_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
        fh.write(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}\n\n")
        fh.write(table + "\n")
    with open(stem + ".json", "w") as fh:
        json.dump({"rows": rows, "scipy": {"fits": n_sp, "seconds": sp_info["seconds"], "fits_per_s": sp_rate, "best_objective": sp_best,
                                            "held_out_mre": sp_val, "iterations": sp_info["iterations"], "within_1pct": sp_within},
                   "backend": backend, "device": device, "dtype": args.dtype, "max_steps": args.max_steps,
                   "load": os.getloadavg()[0]}, fh, indent=2)
    print(f"wrote {stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
