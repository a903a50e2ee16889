"""Cost of distributing a bootstrap: R resamples x 2 starts of the log-linear law (64 parameters) on the SlimPajama
subset at 122M parameters / 9.998e9 tokens (60 mixtures, 7 domains, 8 targets), run on 1, 2 and 8 virtual CPU
devices of one process and on 2 processes (``jax.distributed`` on localhost, one device each), each in a fresh
Python process started by this script. Each configuration runs the bootstrap twice (seeds 0 and 1): the first call
compiles and runs, the second only runs; the table gives both, and their ratio to the 1-device run of the same
invocation. It also checks that every configuration gives the 1-device answer (objectives of seed 1, relative).

On a machine with C cores, D virtual devices share those C cores: beyond C devices nothing more can run at once,
so what 8 devices cost beside 2 (on 2 cores) is the overhead of sharding, and what 2 processes cost beside 2
devices is that of the per-process share and the final gather; neither is a speed-up. (One CPU device runs the
batch on about one core, which is why 2 devices or 2 processes can beat it on 2 cores.) Real speed-ups need real
devices (accelerators, or hosts).

    python benchmarks/distributed.py            # 1000 resamples
    python benchmarks/distributed.py --quick    # 100 resamples
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

WORKER = """
import json, sys, time
sys.path.insert(0, {root!r})
import jax
if {processes} > 1:
    jax.distributed.initialize("localhost:{port}", num_processes={processes}, process_id=int(sys.argv[1]))
jax.config.update("jax_enable_x64", True)
import numpy as np
import mixjax
from mixjax import distributed
data = mixjax.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
calls = []
for seed in (0, 1):
    t0 = time.perf_counter()
    res = mixjax.bootstrap("loglinear", data, resamples={resamples}, starts=2, seed=seed, max_steps={max_steps})
    calls.append({{"total_s": time.perf_counter() - t0, "resamples_s": res.info["seconds_resamples"],
                   "point_fit_s": res.info["seconds_point_fit"]}})
if distributed.is_main():
    print(json.dumps({{"calls": calls, "loss": np.asarray(res.loss).tolist(), "status": res.info["resample_status"],
                      "devices": jax.local_device_count(), "processes": jax.process_count()}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_config(devices: int, processes: int, resamples: int, max_steps: int) -> dict:
    """Run one configuration in fresh processes; the report of process 0."""
    script = WORKER.format(root=ROOT, processes=processes, port=_free_port(), resamples=resamples, max_steps=max_steps)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"{devices} device(s) x {processes} process(es) failed:\n{err[-3000:]}")
    report = json.loads([line for line in outs[0][0].splitlines() if line.startswith("{")][-1])
    report["wall_s"] = wall
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 resamples instead of 1000")
    p.add_argument("--resamples", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--out", default=None, help="JSON file of the results (default benchmarks/results/distributed[_quick].json)")
    args = p.parse_args(argv)
    R = args.resamples or (100 if args.quick else 1000)
    out = args.out or os.path.join(HERE, "results", "distributed_quick.json" if args.quick else "distributed.json")
    configs = [("1 device", 1, 1), ("2 devices", 2, 1), ("8 devices", 8, 1), ("2 processes", 1, 2)]
    print(f"bootstrap of loglinear on slimpajama7 at 122M / 9.998B: {R} resamples x 2 starts, max_steps {args.max_steps}; "
          f"{os.cpu_count()} CPU cores", flush=True)
    results = {}
    for label, devices, processes in configs:
        results[label] = run_config(devices, processes, R, args.max_steps)
        c = results[label]["calls"]
        print(f"  {label}: first call {c[0]['total_s']:.1f} s, second {c[1]['total_s']:.1f} s", flush=True)
    import numpy as np

    base = results["1 device"]
    ref = np.asarray(base["loss"])
    rows = []
    for label, r in results.items():
        first, second = r["calls"]
        diff = float(np.max(np.abs(np.asarray(r["loss"]) - ref) / np.abs(ref)))
        rows.append({
            "config": label, "first_call_s": first["total_s"], "second_call_s": second["total_s"],
            "resamples_s": second["resamples_s"],
            "first_ratio": first["total_s"] / base["calls"][0]["total_s"],
            "second_ratio": second["total_s"] / base["calls"][1]["total_s"],
            "resamples_ratio": second["resamples_s"] / base["calls"][1]["resamples_s"],
            "max_rel_loss_diff_vs_1_device": diff, "status": r["status"],
        })
    print()
    print(f"{'config':<12} {'1st call s':>10} {'2nd call s':>10} {'resamples s':>11} {'1st/1dev':>8} {'2nd/1dev':>8} "
          f"{'res/1dev':>8} {'max rel diff':>12}")
    for r in rows:
        print(f"{r['config']:<12} {r['first_call_s']:>10.2f} {r['second_call_s']:>10.2f} {r['resamples_s']:>11.2f} "
              f"{r['first_ratio']:>8.2f} {r['second_ratio']:>8.2f} {r['resamples_ratio']:>8.2f} {r['max_rel_loss_diff_vs_1_device']:>12.2e}")
    cores = os.cpu_count() or 1
    print(f"\nratios are to the 1-device run of this invocation. With {cores} cores, 8 virtual devices share {cores} "
          f"cores: they cannot be faster than {cores} devices; the difference is the overhead of distribution, not a "
          "speed-up (one CPU device uses about one core).")
    worst = max(r["max_rel_loss_diff_vs_1_device"] for r in rows)
    ok = worst <= 1e-6
    print(f"every configuration gives the 1-device objectives to {worst:.1e} (relative): {'OK' if ok else 'MISMATCH'}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"resamples": R, "starts": 2, "max_steps": args.max_steps, "cpu_count": cores, "rows": rows}, f, indent=1)
    print(f"results written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
