"""How far the continuous optimum of a log-linear fit of Olmix 22 lies from anything measured, in float32 and in
float64: the fit, the optimum under ceilings of 0.25, and the calibrated optimum with its warnings.

Olmix 22 has 64 runs of 22 domains, several of which no run gives more than a few percent: the law's coefficients of
those domains are barely determined by the data, so the optimum under ceilings lands where no run was measured, at a
predicted loss that the two float types (two fits that differ only in rounding and tolerances) put far apart.

    python benchmarks/optimum_identification.py --dtype float64
    python benchmarks/optimum_identification.py --dtype float32
"""

from __future__ import annotations

import argparse
import warnings

import jax
import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--resamples", type=int, default=16)
    args = p.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import mixjax as mj

    d = mj.load_dataset("olmix22")
    print(f"olmix22: {d.n_rows} runs, measured objective {np.nanmin(d.losses):.4f} to {np.nanmax(d.losses):.4f}; {args.dtype}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mj.fit("loglinear", d, starts=2, seed=0, dtype=args.dtype)
        print(f"fit: {fit.status.name} after {fit.num_steps} steps, in-sample MRE {fit.evaluate(d)['mre']:.4f}")
        boot = mj.bootstrap("loglinear", d, resamples=args.resamples, starts=2, seed=0, dtype=args.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ens = mj.optimize_mixture_ensemble(boot, ceilings=0.25)
        cal = mj.calibrate_optimum(boot, ensemble=ens, ceilings=0.25)
    print(f"optimum under ceilings 0.25: predicted {cal.predicted:.4f}, calibrated ({cal.method}) {cal.calibrated:.4f}, "
          f"90 % run interval {cal.run_interval[0]:.4f} to {cal.run_interval[1]:.4f}; TV distance to the nearest run "
          f"{cal.nearest_measured_distance:.3f}")
    for w in caught:
        print(f"  {type(w.message).__name__}: {str(w.message)[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
