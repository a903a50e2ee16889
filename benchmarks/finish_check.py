"""Are the fits behind ``mixjax compare`` finished? Every law fitted as ``compare`` fits it (default step limits, the
same starts per split: group g draws from ``seed + g``) on every split of a protocol of ``benchmarks/compare_laws.py``;
its best start is then polished by scipy L-BFGS-B in float64 (ftol 1e-15, every parameter free) on that split's
training rows. A best start "is finished" when the polish lowers its objective by less than 1e-3 (relative), the
criterion of ``benchmarks/status_check.py``.

Printed per law: the statuses of its best starts (c converged, m max_steps, o out_of_range, n nonfinite), how many
are finished, the largest relative gain of the polish and the solver steps of every start of every split (the
cost); then the fraction of finished best starts over all laws, and among the ``converged``, the ``max_steps`` and
the ``out_of_range`` ones (an ``out_of_range`` fit that is
finished is a law whose best fit on these data puts a parameter outside its sane range, not an unfinished solve).

    python benchmarks/finish_check.py --runs 3          # Pile-4, 5-fold CV by mixture (indices: compare_stability.RUNS)
    python benchmarks/finish_check.py --runs 0 --laws shukor_joint,chinchilla_mixture
    python benchmarks/finish_check.py --runs 3 --slow-ftol 1e-6   # a stricter slow-objective test of the engine
    python benchmarks/finish_check.py --runs 3 --finish lm        # Levenberg-Marquardt from each best start's end
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.comparison import cv_splits, final_checkpoint_rows, holdout_scale_split  # noqa: E402
from mixjax.fitting import FitConfig, objective_value, prepare  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from compare_stability import RUNS, load  # noqa: E402
from scipy_reference import scipy_fit  # noqa: E402 (tests/scipy_reference.py: the independent scipy reference)

TOL = 1e-3


def splits_of(data, kwargs, seed: int):
    """(data, [training-row masks]) as ``compare`` builds them for the protocol ``kwargs``: final checkpoints where
    asked, then the held-out-scale split or the k folds (and, for k folds, the all-rows fit)."""
    if kwargs.get("checkpoints") == "final":
        data = data.subset(final_checkpoint_rows(data))
    if kwargs.get("holdout_scale") is not None:
        return data, [holdout_scale_split(data, kwargs["holdout_scale"]).train]
    folds = [s.train for s in cv_splits(data, kwargs.get("cv", "mixtures:5"), seed)]
    return data, folds + [np.ones(data.n_rows, bool)]


def polish_gain(law, data):
    """(J of ``law`` on ``data``, relative decrease of J by a scipy L-BFGS-B polish from it, the polished law)."""
    cls = type(law)
    arrays, _ = prepare(cls, data, dtype="float64")
    J = float(objective_value(law, arrays, jnp.ones(data.n_rows), FitConfig()))
    batched = jax.tree_util.tree_map(lambda x: x[None] if isinstance(x, jax.Array) else x, law)
    polished, _, info = scipy_fit(cls, data, starts=1, start_laws=batched)
    Jp = float(info["values"][0])
    return J, (J - Jp) / J if J > 0 else 0.0, polished


def _far(law) -> str:
    """The parameters of ``law`` outside their sane range, each with the span of its values, for people."""
    values = law.params()
    out = []
    for name, (lo, hi) in law.out_of_range().items():
        v = np.asarray(values[name], np.float64)
        out.append(f"{name} {v.min():.3g}..{v.max():.3g} (sane {lo:g}..{hi:g})")
    return "; ".join(out) or "none"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, nargs="+", default=[3])
    p.add_argument("--laws", default="all", help="'all' or a comma-separated list")
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slow-ftol", type=float, default=None,
                   help="replace the engine's slow-objective test of law fits (mixjax.fitting.FIT_SLOW_FTOL; 0: off)")
    p.add_argument("--xtol", type=float, default=None, help="replace the kink test's FIT_XTOL (mixjax.fitting)")
    p.add_argument("--where", action="store_true", help="print, for each unfinished best start, its parameters outside "
                   "their sane range before and after the polish")
    p.add_argument("--finish", choices=["lm", "lbfgs"], default=None,
                   help="continue each best start with this solver (one start, default step limit) before the polish")
    args = p.parse_args(argv)
    import mixjax.fitting as fitting

    if args.slow_ftol is not None:
        fitting.FIT_SLOW_FTOL = args.slow_ftol or None
    if args.xtol is not None:
        fitting.FIT_XTOL = args.xtol
    print(f"stopping tests: slow_ftol {fitting.FIT_SLOW_FTOL}, xtol {fitting.FIT_XTOL}")
    names = list(mj.LAWS) if args.laws == "all" else args.laws.split(",")
    for i in args.runs:
        title, name, kwargs, cap = RUNS[i]
        data, masks = splits_of(load(name, cap), kwargs, args.seed)
        print(f"\n[{i}] {title}: {data.n_rows} rows, {len(masks)} fits per law; scipy polish of every best start (pass: gain < {TOL:g})")
        print(f"  {'law':30s} {'k':>5s}  {'statuses':12s} {'finished':>9s}  {'largest gain':>12s}  {'fit s':>6s}  {'polish s':>8s}  {'steps':>7s}")
        tally = {"all": [0, 0], "converged": [0, 0], "max_steps": [0, 0], "out_of_range": [0, 0]}
        for law_name in names:
            ok, worst, statuses, t_fit, t_pol, k, steps = 0, 0.0, [], 0.0, 0.0, 0, 0
            try:
                for g, mask in enumerate(masks):
                    train = data.subset(np.flatnonzero(mask))
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fit = mj.fit(law_name, train, starts=args.starts, seed=args.seed + g)
                        steps += int(np.sum(np.asarray(fit.starts.num_steps)))
                        if args.finish:
                            fit = mj.fit(fit.law, train, starts=1, optimizer=args.finish)
                            steps += int(fit.num_steps)
                    t_fit += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    _, gain, polished = polish_gain(fit.law, train)
                    t_pol += time.perf_counter() - t0
                    if args.where and gain >= TOL:
                        print(f"    split {g}: {fit.status.name}, polish gain {gain:.2e}; out of range before: {_far(fit.law)}; "
                              f"after: {_far(polished)}", flush=True)
                    passed = gain < TOL
                    ok += passed
                    worst = max(worst, gain)
                    statuses.append(fit.status.name)
                    k = fit.n_params
                    for key in ("all", fit.status.name):
                        if key in tally:
                            tally[key][0] += passed
                            tally[key][1] += 1
            except (ValueError, mj.DataError) as e:  # a law that does not apply to this table, as compare skips it
                print(f"  {law_name:30s} skipped: {str(e).splitlines()[0][:90]}")
                continue
            label = " ".join(f"{s[0]}{statuses.count(s)}" for s in ("converged", "max_steps", "out_of_range", "nonfinite") if s in statuses)
            print(f"  {law_name:30s} {k:5d}  {label:12s} {ok:4d} / {len(statuses):<3d}  {worst:12.2e}  {t_fit:6.1f}  {t_pol:8.1f}  {steps:7d}", flush=True)
        for key, (a, n) in tally.items():
            if n:
                print(f"  finished among {key:12s}: {a} / {n} = {a / n:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
