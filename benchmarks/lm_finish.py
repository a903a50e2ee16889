"""Can a Levenberg-Marquardt finish end the many-parameter fits that L-BFGS leaves at the step limit?

Fits ``--law`` (default chinchilla_mixture, 614 parameters on Pile-17) to every row of ``--data`` (default
pile17_regmix1b) with the default L-BFGS and step limit (4 starts), then continues its best start three ways: LM for
50 and for 200 steps (``optimizer="lm"``, ``init=`` the L-BFGS end), and L-BFGS for 36000 more steps. Printed per
stage: seconds (the LM stages include compiling their Jacobian program), the objective J, the status and the steps.

    python benchmarks/lm_finish.py [--law chinchilla_mixture] [--data pile17_regmix1b]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mixjax  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--law", default="chinchilla_mixture")
    ap.add_argument("--data", default="pile17_regmix1b")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # the step-limit and out-of-range warnings: the statuses are printed
    data = mixjax.load_dataset(args.data)
    batch = lambda law: jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, law)  # noqa: E731

    def stage(name, **kw):
        t0 = time.perf_counter()
        f = mixjax.fit(args.law, data, seed=0, throw=False, **kw)
        print(f"| {name} | {time.perf_counter() - t0:.1f} | {f.loss:.8e} | {f.status.name} | {f.num_steps} |", flush=True)
        return f

    print("| stage | s | J | status | steps |\n|---|---:|---:|---|---:|")
    first = stage("L-BFGS, default limit, 4 starts", starts=4)
    for steps in (50, 200):
        stage(f"LM finish, {steps} steps", starts=1, optimizer="lm", init=batch(first.law), max_steps=steps)
    stage("L-BFGS finish, 36000 steps", starts=1, init=batch(first.law), max_steps=36000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
