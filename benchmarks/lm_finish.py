"""Can a Levenberg-Marquardt finish end the many-parameter fits that L-BFGS leaves at the step limit?

Fits ``--law`` (default chinchilla_mixture, 614 parameters on Pile-17) to every row of ``--data`` (default
pile17_regmix1b) with the default L-BFGS and step limit (4 starts), then continues its best start four ways: LM for
50 and for 200 steps (``optimizer="lm"``, ``init=`` the L-BFGS end), L-BFGS for 36000 more steps, and L-BFGS for
36000 more steps after snapping the capped exponents to where they drift (stored values past the cap set 3 above
it in log space, where the capped exponent is the cap to 1e-11; those below 1e-4 set to 1e-12). Printed per stage:
seconds (the LM stages include compiling their Jacobian program), the objective J, the status and the steps.

    python benchmarks/lm_finish.py [--law chinchilla_mixture] [--data pile17_regmix1b]
    python benchmarks/lm_finish.py --max-steps 4000     # the first stage at the step limit before it was raised
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mixjax  # noqa: E402


def snapped(law):
    """``law`` with each capped exponent (stored as ``log_x``, :func:`mixjax.laws.shukor.capped_exponent`) that has
    passed its cap moved 3 further in log space, and each one below 1e-4 moved to 1e-12; printed: how many."""
    from mixjax.laws.shukor import EXPONENT_CAPS

    for name, cap in EXPONENT_CAPS.items():
        field = "log_" + name
        if not hasattr(law, field):
            continue
        v = getattr(law, field)
        high, low = v > math.log(cap), v < math.log(1e-4)
        print(f"  snapped {field}: {int(high.sum())} past the cap, {int(low.sum())} below 1e-4, of {v.size}")
        new = jnp.where(high, math.log(cap) + 3.0, jnp.where(low, math.log(1e-12), v))
        law = eqx.tree_at(lambda l, field=field: getattr(l, field), law, new)
    return law


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--law", default="chinchilla_mixture")
    ap.add_argument("--data", default="pile17_regmix1b")
    ap.add_argument("--max-steps", type=int, default=None, help="the first stage's step limit (default: the law's default)")
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
    first = stage(f"L-BFGS, {'default limit' if args.max_steps is None else f'{args.max_steps} steps'}, 4 starts", starts=4,
                  max_steps=args.max_steps)
    for steps in (50, 200):
        stage(f"LM finish, {steps} steps", starts=1, optimizer="lm", init=batch(first.law), max_steps=steps)
    stage("L-BFGS finish, 36000 steps", starts=1, init=batch(first.law), max_steps=36000)
    stage("snapped exponents, then L-BFGS, 36000 steps", starts=1, init=batch(snapped(first.law)), max_steps=36000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
