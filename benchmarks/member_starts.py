"""How many starts a bootstrap member's mixture search needs: ``optimize_mixture_ensemble`` gives each member 1 start
(the uniform mixture) for a law convex in the mixture under a weighted-mean objective (the
log-linear law), and ``starts`` for any other law.

For each case: a bootstrap (``--resamples``), then the members' searches three ways, each timed on its second call
(the first compiles): with ``--starts`` (8) starts per member, with the default, and a reference with 32. Printed: the
default's starts per member, seconds, the ratio default / 8 starts, and how many members end worse than the
reference by more than 1e-6 (relative) and by how much at most.

    python benchmarks/member_starts.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mixjax  # noqa: E402


def synthetic_sweep(rep: int = 0, K: int = 12, n: int = 40):
    """The calibration benchmark's synthetic sweep: 40 Dirichlet(1) mixtures of a known 12-domain log-linear law."""
    t = np.random.default_rng(123).normal(0.0, 0.03, K)
    rng = np.random.default_rng([rep, 7])
    H = rng.dirichlet(np.ones(K), n)
    y = np.exp(np.log(2.0) + H @ t) * np.exp(0.01 * rng.normal(size=n))
    return mixjax.from_arrays(H, y[:, None], domains=[f"d{i}" for i in range(K)], targets=["loss"], name="synthetic")


CASES = [  # name, data, law, search settings
    ("synthetic, loglinear, caps 0.25", synthetic_sweep, "loglinear", dict(ceilings=0.25)),
    ("olmix22, loglinear", lambda: mixjax.load_dataset("olmix22"), "loglinear", {}),
    ("slimpajama7, bimix", lambda: mixjax.load_dataset("slimpajama7"), "bimix", {}),
    ("pile4, shukor_joint", lambda: mixjax.load_dataset("pile4"), "shukor_joint", {}),
    ("pile4, exponential", lambda: mixjax.load_dataset("pile4"), "exponential", {}),
]


def timed(fn, **kw):
    fn(**kw)  # compile
    t0 = time.perf_counter()
    out = fn(**kw)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=64)
    ap.add_argument("--starts", type=int, default=8)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"| case | default starts/member | {args.starts} starts s | default s | ratio | default worse than reference | "
          f"{args.starts} starts worse than reference |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, load, law, kw in CASES:
        data = load()
        boot = mixjax.bootstrap(law, data, resamples=args.resamples, seed=0, starts=4, max_steps=1500)
        scale = {}
        cls = type(boot.point.law)
        if cls.uses_model_size:
            scale["model_size"] = 4 * float(np.max(data.model_size_m))
        if cls.uses_tokens:
            scale["n_tokens"] = 4 * float(np.max(data.n_tokens_b))
        common = dict(starts=args.starts, check_fixed=False, **scale, **kw)
        full, t_full = timed(mixjax.optimize_mixture_ensemble, laws=boot, member_starts=args.starts, **common)
        default, t_default = timed(mixjax.optimize_mixture_ensemble, laws=boot, **common)
        ref = mixjax.optimize_mixture_ensemble(boot, member_starts=32, **common)
        ok = np.asarray(ref.ok) & np.asarray(default.ok) & np.asarray(full.ok)
        n_default = 1 if cls.convex_in_mixture else max(args.starts, 1)

        def worse(e):
            rel = (np.asarray(e.values) - np.asarray(ref.values))[ok] / np.abs(np.asarray(ref.values)[ok])
            return f"{int((rel > 1e-6).sum())} of {int(ok.sum())} (max {max(float(rel.max()), 0.0):.1e})"

        print(f"| {name} | {n_default} | {t_full:.2f} | {t_default:.2f} | {t_default / t_full:.2f} | {worse(default)} | "
              f"{worse(full)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
