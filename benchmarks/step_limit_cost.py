"""What the default step limit costs a bootstrap: the capacity-noise law on the SlimPajama runs at 122M parameters
/ 9.998B tokens (60 mixtures), R resamples x 2 starts, at the earlier default limit (500 steps) and at today's
(``mixjax.fitting.default_max_steps``: 2000 for this law), in one process.

Each setting runs twice with the same shapes (the first call compiles); the second call's seconds are printed, their
ratio, and how the members ended (start statuses and the statuses of each resample's best start).

    python benchmarks/step_limit_cost.py                 # 200 resamples
    python benchmarks/step_limit_cost.py --resamples 50
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import mixjax as mj  # noqa: E402
from mixjax.fitting import default_max_steps  # noqa: E402

EARLIER_DEFAULT = 500


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resamples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    today = default_max_steps(mj.n_params(mj.fit("capacity_noise", data, starts=1, max_steps=1).law))
    seconds = {}
    print(f"capacity_noise on {data.n_rows} rows, {args.resamples} resamples x 2 starts; backend {jax.default_backend()}")
    print("| max_steps | seconds (compiled) | start statuses | resample statuses |")
    print("|---:|---:|---|---|")
    for steps in (EARLIER_DEFAULT, today):
        for _ in range(2):  # the first call compiles
            t0 = time.perf_counter()
            b = mj.bootstrap("capacity_noise", data, resamples=args.resamples, seed=args.seed, max_steps=steps)
            seconds[steps] = time.perf_counter() - t0
        print(f"| {steps} | {seconds[steps]:.1f} | {b.info['start_status']} | {b.info['resample_status']} |", flush=True)
    print(f"ratio {today} / {EARLIER_DEFAULT} steps: {seconds[today] / seconds[EARLIER_DEFAULT]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
