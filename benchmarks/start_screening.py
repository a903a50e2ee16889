"""Could a fit stop its hopeless starts early? Start screening on the many-parameter laws of Pile-17.

Screening: run every start for ``--screen`` steps, then continue only the ``keep`` starts with the lowest objective.
It pays only if the start that ends best is already among the best few at the screening step. This script fits
each law of ``--laws`` on the training rows of every split of ``mixjax compare``'s protocol (``--cv``, default
``mixtures:5``, plus the all-rows fit), ``--starts`` starts per split (seed = the split's index), once to ``--screen``
steps and once to the law's default limit (the same starts: a start's first ``--screen`` steps are the same in
both). Printed per law and split: the rank at the screening step (0 = lowest objective) of the start that ends best,
how much worse the best start that screening with keep = 1, 2 and 3 would have kept ends (relative objective), and
the member-steps screening with keep = 2 would have saved (from the steps each start took).

    python benchmarks/start_screening.py                                   # the five 595-663-parameter laws
    python benchmarks/start_screening.py --laws chinchilla_mixture --screen 4000
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
from pile17_steps import LAWS, split_rows  # noqa: E402  (the five laws with 595-663 parameters on Pile-17)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", default=LAWS)
    ap.add_argument("--data", default="pile17_regmix1b")
    ap.add_argument("--cv", default="mixtures:5")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--screen", type=int, default=2000, help="steps before the screening")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # step-limit and out-of-range warnings: the statuses are not the question here
    data = mixjax.load_dataset(args.data)
    groups = split_rows(data, args.cv)
    print("| law | split | final-best start's rank at screening | ends worse by, keep 1 / 2 / 3 | member-steps saved, keep 2 | s |")
    print("|---|---:|---:|---|---:|---:|")
    worse_all = {1: [], 2: [], 3: []}
    saved_all = []
    for law in args.laws.split(","):
        for g, (_, w) in enumerate(groups):
            t0 = time.perf_counter()
            early = mixjax.fit(law, data, weights=w, seed=g, starts=args.starts, max_steps=args.screen, throw=False)
            final = mixjax.fit(law, data, weights=w, seed=g, starts=args.starts, throw=False)
            seconds = time.perf_counter() - t0
            v1 = np.asarray(early.starts.value, np.float64)
            v2 = np.asarray(final.starts.value, np.float64)
            steps = np.asarray(final.starts.num_steps)
            v1 = np.where(np.isfinite(v1), v1, np.inf)
            v2 = np.where(np.isfinite(v2), v2, np.inf)
            order = np.argsort(v1, kind="stable")
            best = int(np.argmin(v2))
            rank = int(np.flatnonzero(order == best)[0])
            worse = {m: float(v2[order[:m]].min() / v2[best] - 1) for m in (1, 2, 3)}
            for m in worse:
                worse_all[m].append(worse[m])
            stopped = np.ones(len(steps), bool)
            stopped[order[:2]] = False  # the two kept starts run on; a start that finished before the screening saves nothing
            saved = float(np.sum(np.clip(steps[stopped] - args.screen, 0, None)) / steps.sum())
            saved_all.append(saved)
            print(f"| {law} | {g} | {rank} | {worse[1]:.2%} / {worse[2]:.2%} / {worse[3]:.2%} | {saved:.0%} | {seconds:.0f} |", flush=True)
    print()
    print("splits where screening would change the answer (final objective more than 0.1 % worse): "
          + ", ".join(f"keep {m}: {sum(x > 1e-3 for x in v)} of {len(v)}" for m, v in worse_all.items()))
    print(f"member-steps saved with keep 2: median {np.median(saved_all):.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
