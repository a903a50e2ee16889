"""Fits per second of an earlier mixjax engine and of the current one, side by side in one run.

The same problem as ``fit_speed.py`` (capacity-noise law, 48 training rows of SlimPajama 122M / 9.998e9 tokens,
80/20 row split, seed 0), fitted with ``mixjax.fit("capacity_noise", train, starts=B, max_steps=M, dtype=...)``
by two package versions: the package at ``--ref`` (default e484674, the last commit whose engine ran a
backtracking line search inside every step under ``vmap``, in lock step) and the working tree. Each version runs
in its own Python process (``git archive REF mixjax`` unpacked in a temporary folder, first on ``PYTHONPATH``),
one after the other, never at the same time. B = 1 is a loop of 16 single fits (seeds 0-15); a batch of B is
one call with ``starts=B``. Every configuration is called once to compile, then timed on a second call: fits/s
= B / (time of the second call). Raw fits/s, whatever each start's status: ``fit_speed.py`` checks convergence.

    python benchmarks/baseline_engine.py                     # B = 1 and 256, float64 and float32, 300 steps

Prints a table and writes ``benchmarks/results/baseline_engine.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import mixjax as mj
batches, dtypes, max_steps = json.loads(sys.argv[1])
data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
train, _ = data.split_rows(0.2, seed=0)
out = {"mixjax_file": mj.__file__, "rows": []}
for dtype in dtypes:
    for B in batches:
        if B == 1:
            call = lambda: [mj.fit("capacity_noise", train, starts=1, seed=s, max_steps=max_steps, dtype=dtype, throw=False) for s in range(16)]
            n = 16
        else:
            call = lambda: [mj.fit("capacity_noise", train, starts=B, seed=0, max_steps=max_steps, dtype=dtype, throw=False)]
            n = B
        t0 = time.perf_counter(); call(); first = time.perf_counter() - t0
        t0 = time.perf_counter(); fits = call(); run = time.perf_counter() - t0
        if B == 1:
            first -= run / 16
        best = min(float(f.loss) for f in fits)
        out["rows"].append({"dtype": dtype, "B": B, "first_call_s": first, "run_s": run, "fits_per_s": n / run, "best_J": best})
        print(json.dumps(out["rows"][-1]), file=sys.stderr, flush=True)
print(json.dumps(out))
"""


def run_version(path: str, batches, dtypes, max_steps) -> dict:
    env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([batches, dtypes, max_steps])], env=env, cwd=path,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the fit at {path} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not os.path.abspath(out["mixjax_file"]).startswith(os.path.abspath(path)):
        raise SystemExit(f"expected mixjax from {path}, imported {out['mixjax_file']}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", default="e484674", help="git commit of the earlier engine")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)

    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    t_start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = os.path.join(tmp, "old")
        os.makedirs(old)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.ref, "mixjax"], capture_output=True)
        if archive.returncode != 0:
            p.error(f"--ref {args.ref}: {archive.stderr.decode().strip()}")
        archive = archive.stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        for name, path in (("earlier", old), ("current", ROOT)):
            print(f"{name} engine ({args.ref if name == 'earlier' else head})", flush=True)
            results[name] = run_version(path, args.batches, args.dtypes, args.max_steps)["rows"]

    def row(name, dtype, B):
        return next(r for r in results[name] if r["dtype"] == dtype and r["B"] == B)

    Bs = sorted(b for b in args.batches if b > 1)
    lines = [
        "# Earlier engine against the current one (capacity-noise law, SlimPajama 122M, 48 rows)", "",
        f"Command: `python benchmarks/baseline_engine.py`; earlier engine: commit {args.ref}, current: {head}; "
        f"{args.max_steps} steps, {os.cpu_count()} CPUs, both in one run ({time.perf_counter() - t_start:.0f} s). "
        "Raw fits/s (second call; B = 1 is a loop of 16 single fits); `benchmarks/fit_speed.py` counts converged fits.", "",
        "| dtype | B | earlier fits/s | current fits/s | current / earlier | earlier best J | current best J |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype in args.dtypes:
        for B in args.batches:
            o, c = row("earlier", dtype, B), row("current", dtype, B)
            lines.append(f"| {dtype} | {B} | {o['fits_per_s']:.1f} | {c['fits_per_s']:.1f} | {c['fits_per_s'] / o['fits_per_s']:.1f} | "
                         f"{o['best_J']:.7g} | {c['best_J']:.7g} |")
    if 1 in args.batches:
        lines += ["", "Per-fit speed of a batch against one fit at a time (fits/s at B over fits/s at B = 1):", ""]
        for dtype in args.dtypes:
            for B in Bs:
                o = row("earlier", dtype, B)["fits_per_s"] / row("earlier", dtype, 1)["fits_per_s"]
                c = row("current", dtype, B)["fits_per_s"] / row("current", dtype, 1)["fits_per_s"]
                lines.append(f"- {dtype}, B = {B}: earlier {o:.2f}x, current {c:.2f}x")
    md = "\n".join(lines) + "\n"
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "baseline_engine.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(args.out, "baseline_engine.json"), "w") as fh:
        json.dump({"ref": args.ref, "head": head, "max_steps": args.max_steps, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
