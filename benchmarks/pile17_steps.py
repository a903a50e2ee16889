"""How many solver steps do the many-parameter laws need to finish on Pile-17?

Fits each law of ``--laws`` (default: the five with 595-663 parameters on the 17-domain Pile table) to every row of
``--data`` (default pile17_regmix1b) from ``--starts`` starts (seed 0), once with ``--max-steps`` (default: the
law's default limit, :func:`mixjax.fitting.default_max_steps`) and once with ``--ceiling`` steps (default 40000).
Printed per law and limit: seconds (the first call of a law includes compiling it; the limit is a traced value, so
the second call reuses the program), the best start's objective J, status and steps, and the steps of every start,
sorted.

    python benchmarks/pile17_steps.py
    python benchmarks/pile17_steps.py --max-steps 4000          # the limit before it was raised
    python benchmarks/pile17_steps.py --laws autoscale --max-steps 20000 --ceiling 20000 --lanes 2
                                     # lane refill (FitConfig.lanes): compare the second call's seconds with a run without
    python benchmarks/pile17_steps.py --laws capacity_noise,capacity_noise_h0 --max-steps 2000 --ceiling 20000 --splits
    python benchmarks/pile17_steps.py --data pile4 --laws shukor_joint --max-steps 2000 --ceiling 20000 --splits
                                     # the 50-200-parameter laws, on the training rows of every split of compare's
                                     # 5-fold cross-validation and on all rows (seed = the split's index)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mixjax  # noqa: E402
from mixjax.comparison import cv_splits  # noqa: E402

LAWS = "chinchilla_mixture,chinchilla_mixture_per_target,shukor_mixture,shukor_additive,autoscale"


def split_rows(data, cv: str = "mixtures:5") -> list[tuple[str, np.ndarray]]:
    """``(name, row weights)`` of the training rows of every split of ``mixjax compare``'s cross-validation ``cv``
    (seed 0), then of all rows: the fits a comparison makes (this script and ``start_screening.py`` seed fit g
    with g)."""
    groups = [(s.name, s.train.astype(float)) for s in cv_splits(data, cv, 0)]
    return groups + [("all rows", np.ones(data.n_rows))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", default=LAWS)
    ap.add_argument("--data", default="pile17_regmix1b")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=None, help="the first limit (default: the law's default)")
    ap.add_argument("--ceiling", type=int, default=40000, help="the second limit")
    ap.add_argument("--lanes", type=int, default=None, help="run each batch through this many lanes with refill")
    ap.add_argument("--splits", action="store_true", help="fit the training rows of every split of compare's "
                    "--cv mixtures:5 (seed: the split's index), then all rows, instead of all rows only")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # step-limit and out-of-range warnings: the statuses are printed
    data = mixjax.load_dataset(args.data)
    groups = [(label, w, seed) for seed, (label, w) in enumerate(split_rows(data))] if args.splits else [("all rows", None, 0)]
    print("| law | rows | parameters | limit | s | J | best start | its steps | steps of every start |")
    print("|---|---|---:|---:|---:|---:|---|---:|---|")
    for law in args.laws.split(","):
        for label, weights, seed in groups:
            for limit in (args.max_steps, args.ceiling):
                t0 = time.perf_counter()
                f = mixjax.fit(law, data, seed=seed, starts=args.starts, throw=False, max_steps=limit, lanes=args.lanes, weights=weights)
                seconds = time.perf_counter() - t0
                steps = sorted(int(s) for s in np.asarray(f.starts.num_steps))
                print(f"| {law} | {label} | {f.n_params} | {f.config.max_steps} | {seconds:.1f} | {f.loss:.6e} | {f.status.name} | "
                      f"{f.num_steps} | {', '.join(map(str, steps))} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
