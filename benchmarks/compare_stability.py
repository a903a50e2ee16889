"""Does the law leaderboard depend on the step limit? ``mixjax.compare`` on the datasets and protocols of
``benchmarks/compare_laws.py``, once with every law's default step limit (``mixjax.fitting.default_max_steps``) and
once with ten times it, in one process (same starts, same splits). Printed per protocol: the top 3 laws of each run
and whether they agree (same laws, same order), every law's held-out MRE on the common cells at both limits and its
relative change (target: below 2 %), and the fraction of best starts (one per split) that end ``converged``.

    python benchmarks/compare_stability.py                      # every protocol of compare_laws.py, all laws
    python benchmarks/compare_stability.py --runs 0 3           # a subset of the protocols (indices below)
    python benchmarks/compare_stability.py --laws capacity_noise,bimix --factor 5
    python benchmarks/compare_stability.py --runs 1 --base 4    # first run at 4x the defaults, second at 40x

Protocols (index: title): see ``RUNS``.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
import mixjax.fitting as fitting  # noqa: E402

RUNS = [
    ("slimpajama7, final checkpoints, fit 122M-1.235B, score 2.718B", "slimpajama7", dict(holdout_scale="largest", checkpoints="final"), None),
    ("slimpajama7, final checkpoints, fit 122M-937M, score 1.235B", "slimpajama7", dict(holdout_scale="largest", checkpoints="final"), 1.235e9),
    ("pile17_regmix1b, 5-fold CV by mixture", "pile17_regmix1b", dict(cv="mixtures:5"), None),
    ("pile4, 5-fold CV by mixture", "pile4", dict(cv="mixtures:5"), None),
]


class step_factor:
    """Context manager: every default step limit (``default_max_steps``) multiplied by ``factor``."""

    def __init__(self, factor: float):
        self.factor = factor

    def __enter__(self):
        self.orig = fitting.default_max_steps
        fitting.default_max_steps = lambda n: int(round(self.factor * self.orig(n)))
        return self

    def __exit__(self, *exc):
        fitting.default_max_steps = self.orig
        return False


def load(name: str, max_model_size: float | None):
    data = mj.load_dataset(name)
    if max_model_size is not None:
        data = data.subset(data.model_size <= max_model_size * (1 + 1e-6))
    return data


def run_once(data, kwargs, laws, starts, factor):
    t0 = time.perf_counter()
    with step_factor(factor):
        res = mj.compare(data, laws, starts=starts, **kwargs)
    return res, time.perf_counter() - t0


def counts_label(score) -> str:
    """Statuses of the best starts over the splits, e.g. ``c3 m1 o1`` (converged, max_steps, out_of_range)."""
    return " ".join(f"{k[0]}{v}" for k, v in score.status_counts.items() if v)


def converged_fraction(score) -> float:
    counts = score.status_counts
    total = sum(counts.values())
    return counts.get("converged", 0) / total if total else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, nargs="+", default=list(range(len(RUNS))))
    p.add_argument("--laws", default="all", help="'all' or a comma-separated list")
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--factor", type=float, default=10.0)
    p.add_argument("--base", type=float, default=1.0, help="step limit of the first run, as a multiple of the defaults "
                   "(to try other defaults); the second run uses base x factor")
    args = p.parse_args(argv)
    laws = "all" if args.laws == "all" else args.laws.split(",")
    all_ok = True
    for i in args.runs:
        title, name, kwargs, cap = RUNS[i]
        data = load(name, cap)
        base, t_base = run_once(data, kwargs, laws, args.starts, args.base)
        long, t_long = run_once(data, kwargs, laws, args.starts, args.base * args.factor)
        top_b = [s.law for s in base.scores[:3]]
        top_l = [s.law for s in long.scores[:3]]
        same = top_b == top_l
        print(f"\n[{i}] {title}: {args.base:g}x default limit {t_base:.0f} s, {args.base * args.factor:g}x limit {t_long:.0f} s")
        print(f"  top 3 default: {top_b}\n  top 3 {args.factor:g}x:     {top_l}\n  top 3 agree: {same}")
        by_law = {s.law: s for s in long.scores}
        print(f"  {'law':24s} {'k':>5s} {'MRE % default':>13s} {'MRE % long':>11s} {'rel change':>10s} {'conv default':>12s} {'conv long':>9s}  best starts default / long")
        worst = 0.0
        for s in base.scores:
            o = by_law.get(s.law)
            a = s.val_mre_common
            b = None if o is None else o.val_mre_common
            rel = abs(a - b) / b if (a is not None and b) else float("nan")
            if np.isfinite(rel):
                worst = max(worst, rel)
            print(f"  {s.law:24s} {s.n_params:5d} {100 * a if a is not None else float('nan'):13.3f} "
                  f"{100 * b if b is not None else float('nan'):11.3f} {100 * rel:9.2f}% {converged_fraction(s):12.2f} "
                  f"{converged_fraction(o) if o is not None else float('nan'):9.2f}  {counts_label(s)} / {counts_label(o) if o is not None else ''}")
        conv = np.mean([converged_fraction(s) for s in base.scores])
        print(f"  largest relative MRE change {100 * worst:.2f} % (target < 2 %); best starts converged at the default "
              f"limit: {conv:.2f} (mean over laws)")
        all_ok &= same and worst < 0.02
    print(f"\nall protocols stable: {all_ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
