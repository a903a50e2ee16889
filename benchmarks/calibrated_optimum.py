"""The winner's curse, measured: is the objective a fit predicts at its own pick honest, and is the calibrated one?

Two settings (module docstring of ``mixjax.calibration`` for the maths):

* **Synthetic truth.** Runs are drawn from a known log-linear law (K = 12 domains, ``L(h) = exp(c + t.h)``, t_i
  drawn once from N(0, 0.03^2), c = log 2) with multiplicative noise ``exp(sigma z)``, sigma = 0.01, at n = 40
  Dirichlet(1) mixtures. Each replication draws a fresh design and noise, bootstraps the log-linear law and picks
  (a) the best of a pool of 300 Dirichlet(0.5) candidates, (b) the optimum over the simplex with every weight at most
  0.25. The truth at the pick is exact (numpy, from the true coefficients), and so is the true regret (the best pool
  candidate; for the simplex the four smallest t_i at 0.25 each). A fresh run at the pick (truth times its own
  noise) scores the run interval.
* **Real sweeps, held-out pool.** Each split fits the log-linear law on 75 % of a sweep's runs and picks the
  best-predicted of the other 25 % (runs with every target measured), whose objective was measured: the mean of the
  sweep's targets (Olmix: the mean of 110 task BPB metrics; RegMix: the mean of the loss columns). The measurement
  at the pick is one run, so errors are averaged over splits and the run interval is the one scored.

    python benchmarks/calibrated_optimum.py                     # default run (writes benchmarks/results/)
    python benchmarks/calibrated_optimum.py --quick             # a few replications, to try it

Columns: mean error (measured or true objective minus the estimate; positive: the estimate was optimistic) with its
standard error over replications, for the fit's own prediction, the calibrated estimate, and in brackets the same
correction with the mean of the members' d_b instead of their median; coverage of the intervals (Monte Carlo
standard error sqrt(p (1 - p) / M)); regret: the true (or measured) objective at the pick minus the best one, and
the calibration's estimate of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import jax as _jax

_jax.config.update("jax_enable_x64", True)  # float64 fits

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mixjax  # noqa: E402

K, N_RUNS, SIGMA, POOL, CAP = 12, 40, 0.01, 300, 0.25
_t = np.random.default_rng(123).normal(0.0, 0.03, K)
TRUE_T, TRUE_C = _t, float(np.log(2.0))
REAL = {  # dataset: targets (None: all loss columns)
    "olmix64": None,
    "olmix22": None,
    "pile17_regmix1m": None,
    "pile17_regmix1b": None,
}


def truth(H):
    return np.exp(TRUE_C + np.asarray(H) @ TRUE_T)


def true_simplex_optimum():
    h = np.zeros(K)
    h[np.argsort(TRUE_T)[: round(1 / CAP)]] = CAP
    return h


def mean_corrected(c):
    """The correction with the mean of the members' d_b instead of their median (for comparison)."""
    g, inv = (np.log, np.exp) if c.log_scale else ((lambda x: x), (lambda x: x))
    d = g(c.point_at_members[c.ok]) - g(c.member_values[c.ok])
    return float(inv(g(c.predicted) + d.mean()))


def record(c, truth_value, measured, best_value):
    return {
        "predicted": c.predicted, "calibrated": c.calibrated, "calibrated_mean": mean_corrected(c), "optimism": c.optimism,
        "interval": list(c.interval), "fixed_interval": list(c.fixed_interval), "run_interval": list(c.run_interval),
        "regret_estimate": c.regret, "truth": truth_value, "measured": measured, "true_regret": None if best_value is None
        else (truth_value if truth_value is not None else measured) - best_value,
    }


def synthetic(mode: str, replications: int, resamples: int, level: float, progress) -> list[dict]:
    out = []
    best_simplex = float(truth(true_simplex_optimum()[None])[0])
    for rep in range(replications):
        rng = np.random.default_rng([rep, 7])
        H = rng.dirichlet(np.ones(K), N_RUNS)
        y = truth(H) * np.exp(SIGMA * rng.normal(size=N_RUNS))
        data = mixjax.from_arrays(H, y[:, None], domains=[f"d{i}" for i in range(K)], targets=["loss"], name=f"synthetic{rep}")
        boot = mixjax.bootstrap("loglinear", data, resamples=resamples, seed=rep, point_starts=4, level=level)
        if mode == "pool":
            pool = rng.dirichlet(np.full(K, 0.5), POOL)
            c = mixjax.calibrate_optimum(boot, candidates=pool, seed=rep)
            best = float(truth(pool).min())
        else:
            c = mixjax.calibrate_optimum(boot, ceilings=CAP, seed=rep, check_fixed=False)
            best = best_simplex
        tv = float(truth(c.mixture[None])[0])
        out.append(record(c, tv, tv * float(np.exp(SIGMA * rng.normal())), best))
        progress(f"synthetic {mode} {rep + 1}/{replications}")
    return out


def real(name: str, splits: int, resamples: int, level: float, progress) -> list[dict]:
    data = mixjax.load_dataset(name)
    out = []
    for s in range(splits):
        train, val = data.split_rows(val_fraction=0.25, seed=s)
        full = np.isfinite(val.losses).all(axis=1)
        pool, measured = val.mixtures[full], val.losses[full].mean(axis=1)
        boot = mixjax.bootstrap("loglinear", train, resamples=resamples, seed=s, level=level)
        c = mixjax.calibrate_optimum(boot, candidates=pool, seed=s)
        out.append(record(c, None, float(measured[c.index]), float(measured.min())))
        progress(f"{name} {s + 1}/{splits}")
    return out


def summarize(rows: list[dict]) -> dict:
    def mean_se(x):
        x = np.asarray(x, np.float64)
        return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")

    ref = np.array([r["truth"] if r["truth"] is not None else r["measured"] for r in rows])
    meas = np.array([r["measured"] for r in rows])
    inside = lambda key, v: float(np.mean([r[key][0] <= x <= r[key][1] for r, x in zip(rows, v)]))  # noqa: E731
    out = {
        "n": len(rows),
        "error_predicted": mean_se(ref - np.array([r["predicted"] for r in rows])),
        "error_calibrated": mean_se(ref - np.array([r["calibrated"] for r in rows])),
        "error_calibrated_mean": mean_se(ref - np.array([r["calibrated_mean"] for r in rows])),
        "run_interval_covers_measured": inside("run_interval", meas),
        "true_regret": mean_se([r["true_regret"] for r in rows]),
        "regret_estimate": mean_se([r["regret_estimate"] for r in rows]),
    }
    if rows[0]["truth"] is not None:
        out["interval_covers_truth"] = inside("interval", ref)
        out["fixed_interval_covers_truth"] = inside("fixed_interval", ref)
    return out


def table(summary: dict, level: float) -> str:
    pct = f"{100 * level:g}%"
    head = (f"| setting | M | error of the fit's own prediction | error of the calibrated estimate (with the mean of d) | {pct} interval "
            f"covers the truth (fixed-mixture interval) | {pct} run interval covers a run | regret: true / estimated |\n"
            "|---|---|---|---|---|---|---|")
    lines = [head]
    for name, s in summary.items():
        f = lambda ms: f"{ms[0]:+.4f} ± {ms[1]:.4f}"  # noqa: E731
        cover = f"{s['interval_covers_truth']:.2f} ({s['fixed_interval_covers_truth']:.2f})" if "interval_covers_truth" in s else "(no truth)"
        lines.append(f"| {name} | {s['n']} | {f(s['error_predicted'])} | {f(s['error_calibrated'])} ({s['error_calibrated_mean'][0]:+.4f}) | {cover} | "
                     f"{s['run_interval_covers_measured']:.2f} | {s['true_regret'][0]:.4f} / {s['regret_estimate'][0]:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=40, help="synthetic replications per mode (default 40)")
    ap.add_argument("--splits", type=int, default=10, help="random 75/25 splits per real sweep (default 10)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--quick", action="store_true", help="3 replications and 2 splits, 60 resamples")
    ap.add_argument("--only", nargs="+", help="settings to run (synthetic_pool, synthetic_optimum, or dataset names)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "calibrated_optimum"))
    args = ap.parse_args(argv)
    if args.quick:
        args.replications, args.splits, args.resamples = 3, 2, 60
        args.out += "_quick"
    t0 = time.perf_counter()
    progress = lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    jobs = {"synthetic_pool": lambda: synthetic("pool", args.replications, args.resamples, args.level, progress),
            "synthetic_optimum": lambda: synthetic("optimum", args.replications, args.resamples, args.level, progress)}
    jobs.update({name: (lambda name=name: real(name, args.splits, args.resamples, args.level, progress)) for name in REAL})
    raw, summary = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max-steps notes of the resample fits; the statuses are in the raw records
        for name, job in jobs.items():
            if args.only and name not in args.only:
                continue
            raw[name] = job()
            summary[name] = summarize(raw[name])
    text = table(summary, args.level)
    print(text)
    settings = {k: getattr(args, k) for k in ("replications", "splits", "resamples", "level")}
    with open(args.out + ".json", "w") as f:
        json.dump({"settings": settings, "seconds": time.perf_counter() - t0, "summary": summary, "raw": raw}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(f"`python benchmarks/calibrated_optimum.py` ({settings}; {time.perf_counter() - t0:.0f} s)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
