"""Cold start of one fit: the exposure law on the Marin two-phase swarm (193 runs, 39 domains x 2 phases, 16
starts), each measurement in a fresh Python process.

Printed: the fit's seconds in a new process (tracing, compiling and running), in a new process that reads JAX's
persistent compilation cache filled by an earlier one (``jax_compilation_cache_dir``; mixjax never turns it on),
and the second fit of one process (compiled), and the ratios. Import and data loading are not counted.

    python benchmarks/cold_start.py
    python benchmarks/cold_start.py --law loglinear --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
cache = sys.argv[2]
if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import mixjax as mj
data = mj.load_dataset("marin2phase")
times = []
for _ in range(2):
    t = time.perf_counter()
    f = mj.fit(sys.argv[1], data, starts=16, seed=0)
    times.append(time.perf_counter() - t)
print(json.dumps({"first": times[0], "second": times[1], "status": f.status.name}))
"""


def child(law: str, cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, law, cache], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--law", default="exposure")
    p.add_argument("--repeats", type=int, default=2, help="processes per setting (the fastest is kept)")
    args = p.parse_args(argv)
    cold, cached, warm = [], [], []
    with tempfile.TemporaryDirectory() as cache_dir:
        child(args.law, cache_dir)  # fills the cache
        for _ in range(args.repeats):  # the settings take turns, so that a change of load hits both
            r = child(args.law, "")
            cold.append(r["first"])
            warm.append(r["second"])
            cached.append(child(args.law, cache_dir)["first"])
    c, k, w = min(cold), min(cached), min(warm)
    print(f"{args.law} on marin2phase, 16 starts (status {r['status']}); fastest of {args.repeats} processes each")
    print(f"cold (new process): {c:.1f} s; from the persistent cache: {k:.1f} s ({k / c:.2f}x); compiled: {w:.2f} s ({w / c:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
