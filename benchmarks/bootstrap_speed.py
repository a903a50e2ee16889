"""Speed of the batched bootstrap: R resamples x S starts of the capacity-noise law (36 parameters) on the
SlimPajama subset at 122M parameters / 9.998e9 tokens (60 mixtures, 7 domains), all refitted in one compiled call.

The bootstrap is run twice with the same shapes and different seeds: the first call compiles (the full-data fit's
program and the resample program) and runs, the second only runs, so compile time = first - second.

    python benchmarks/bootstrap_speed.py                                   # 1000 resamples x 8 starts
    python benchmarks/bootstrap_speed.py --resamples 16 --starts 2 --max-steps 100 --out benchmarks/results/bootstrap_speed_quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax as _jax

_jax.config.update("jax_enable_x64", True)  # float64 fits

import jax  # noqa: E402

import mixjax  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--chunk-size", type=int, default=None, help="members per compiled call (default: all in one call)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--scheme", default="rows", choices=["rows", "mixtures", "stratified"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bootstrap_speed"))
    args = p.parse_args(argv)

    data = mixjax.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    kw = dict(
        resamples=args.resamples, starts=args.starts, max_steps=args.max_steps, chunk_size=args.chunk_size, dtype=args.dtype,
        scheme=args.scheme, progress=lambda done, total: print(f"  {done}/{total} fits", flush=True),
    )
    B = args.resamples * args.starts
    print(f"capacity_noise on {data.n_rows} rows: {args.resamples} resamples x {args.starts} starts = {B} fits, max_steps {args.max_steps}, {args.dtype}, backend {jax.default_backend()}", flush=True)
    calls = []
    for i, seed in enumerate((args.seed, args.seed + 1)):
        t0 = time.perf_counter()
        res = mixjax.bootstrap("capacity_noise", data, seed=seed, **kw)
        total = time.perf_counter() - t0
        calls.append({
            "seed": seed,
            "total_s": total,
            "point_fit_s": res.info["seconds_point_fit"],
            "resamples_s": res.info["seconds_resamples"],
            "n_failed": res.n_failed,
            "start_status": res.info["start_status"],
            "resample_status": res.info["resample_status"],
        })
        print(f"call {i + 1} ({'compile + run' if i == 0 else 'run only'}): total {total:.1f} s, full-data fit {res.info['seconds_point_fit']:.1f} s, "
              f"resamples {res.info['seconds_resamples']:.1f} s, {res.n_failed} failed, starts {res.info['start_status']}", flush=True)
    first, second = calls
    run_s = second["resamples_s"]
    out = {
        "settings": vars(args) | {"rows": data.n_rows, "law": "capacity_noise", "n_params": 36},
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min": list(os.getloadavg()),  # other work on the machine inflates every time above
        "calls": calls,
        "compile_s": {
            "resample_program": first["resamples_s"] - second["resamples_s"],
            "full_data_fit_program": first["point_fit_s"] - second["point_fit_s"],
        },
        "run_s": {"resamples": run_s, "full_data_fit": second["point_fit_s"]},
        "fits_per_s": B / run_s,
        "member_steps_per_s_upper_bound": B * args.max_steps / run_s,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(out, fh, indent=2)
    print(json.dumps({k: out[k] for k in ("compile_s", "run_s", "fits_per_s")}, indent=2))
    print(f"wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
