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
  sweep's targets (Olmix: the mean of 110 task BPB metrics; RegMix: the mean of the loss columns, and on 1M also
  the Pile-CC and GitHub losses alone; SlimPajama: the final checkpoints of the 60 runs at 122M and at 310M
  parameters, the mean of the 8 loss columns; Marin's two-phase swarm: its one BPB target, the log-linear law over
  the 78 phase columns). The measurement
  at the pick is one run, so errors are averaged over splits and the run interval is the one scored.

    python benchmarks/calibrated_optimum.py                     # default run (writes benchmarks/results/)
    python benchmarks/calibrated_optimum.py --quick             # a few replications, to try it

Estimators (``estimates``): the fit's own prediction (raw); the bootstrap correction (``cv_folds=0``); the
cross-validated one that ``calibrate_optimum`` returns by default (cv; cv_conformal: its run interval from the
conformal quantiles of the pick residuals alone); and two combinations of both for comparison (max, sum). Columns:
mean error (measured or true objective minus the estimate; positive: the estimate was optimistic) with its standard
error over replications, and the RMSE; coverage of the intervals (Monte Carlo standard error sqrt(p (1 - p) / M))
and mean width of the run interval; regret: the true (or measured) objective at the pick minus the best one, and the
calibration's estimate of it. Cost: seconds of ``mixjax.bootstrap`` and of ``calibrate_optimum`` (the full report:
bootstrap pick, run interval, cross-validated folds; for the simplex, the members' searches too) in the same process,
first replication (compilation) left out, and their ratio (bootstrap + calibration) / bootstrap.
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
LEVEL = [0.9]  # set from --level
_t = np.random.default_rng(123).normal(0.0, 0.03, K)
TRUE_T, TRUE_C = _t, float(np.log(2.0))
REAL = {  # setting: (dataset, one target or None for the mean of the loss columns, model size in M or None)
    "olmix64": ("olmix64", None, None),
    "olmix22": ("olmix22", None, None),
    "pile17_regmix1m": ("pile17_regmix1m", None, None),
    "pile17_regmix1m_pile_cc": ("pile17_regmix1m", "pile_cc", None),
    "pile17_regmix1m_github": ("pile17_regmix1m", "github", None),
    "pile17_regmix1b": ("pile17_regmix1b", None, None),
    "slimpajama7_122m": ("slimpajama7", None, 122.0),
    "slimpajama7_310m": ("slimpajama7", None, 310.0),
    "marin2phase": ("marin2phase", None, None),
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


def record(c, truth_value, measured, best_value, seconds_boot, seconds_cal):
    """One replication: the raw prediction, the bootstrap correction, and the pieces of the cross-validated ones (in
    the calibration's g units: logs when ``log_scale``), so that every combination is scored from the same fits."""
    g = np.log if c.log_scale else (lambda x: x)
    d = g(c.point_at_members[c.ok]) - g(c.member_values[c.ok])
    e = np.asarray(c.cv_residuals if c.cv_residuals is not None else [], np.float64)
    e0 = np.asarray(c.cv_law_residuals if c.cv_law_residuals is not None else [], np.float64)
    return {
        "predicted": c.predicted, "log_scale": bool(c.log_scale), "method": c.method,
        "bootstrap": c.bootstrap_calibrated, "calibrated_mean": mean_corrected(c), "calibrated": c.calibrated,
        "bootstrap_interval": list(c.bootstrap_interval), "fixed_interval": list(c.fixed_interval),
        "bootstrap_run_interval": list(c.bootstrap_run_interval), "interval": list(c.interval), "run_interval": list(c.run_interval),
        "d_quantiles": [float(x) for x in np.quantile(d, [(1 - LEVEL[0]) / 2, 0.5, (1 + LEVEL[0]) / 2])],
        "cv_mean": float(e.mean()) if e.size else None, "cv_law_mean": float(e0.mean()) if e0.size else None,
        "cv_residuals": e.tolist(), "cv_rows": c.cv_rows,
        "cv_run_interval": None if c.cv_run_interval is None else list(c.cv_run_interval),
        "regret_estimate": c.regret, "truth": truth_value, "measured": measured, "true_regret": None if best_value is None
        else (truth_value if truth_value is not None else measured) - best_value,
        "seconds_bootstrap": seconds_boot, "seconds_calibration": seconds_cal,
    }


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def synthetic(mode: str, replications: int, resamples: int, level: float, progress) -> list[dict]:
    out = []
    best_simplex = float(truth(true_simplex_optimum()[None])[0])
    for rep in range(replications):
        rng = np.random.default_rng([rep, 7])
        H = rng.dirichlet(np.ones(K), N_RUNS)
        y = truth(H) * np.exp(SIGMA * rng.normal(size=N_RUNS))
        data = mixjax.from_arrays(H, y[:, None], domains=[f"d{i}" for i in range(K)], targets=["loss"], name=f"synthetic{rep}")
        boot, tb = timed(mixjax.bootstrap, "loglinear", data, resamples=resamples, seed=rep, point_starts=4, level=level)
        if mode == "pool":
            pool = rng.dirichlet(np.full(K, 0.5), POOL)
            c, tc = timed(mixjax.calibrate_optimum, boot, candidates=pool, seed=rep)
            best = float(truth(pool).min())
        else:
            c, tc = timed(mixjax.calibrate_optimum, boot, ceilings=CAP, seed=rep, check_fixed=False)
            best = best_simplex
        tv = float(truth(c.mixture[None])[0])
        out.append(record(c, tv, tv * float(np.exp(SIGMA * rng.normal())), best, tb, tc))
        progress(f"synthetic {mode} {rep + 1}/{replications}")
    return out


def real(name: str, splits: int, resamples: int, level: float, progress) -> list[dict]:
    dataset, target, size = REAL[name]
    data = mixjax.load_dataset(dataset)
    if target is not None:
        data = data.select_targets([target])
    if size is not None:  # the final checkpoint of each run at one model size: the law's one scale
        final = data.final_checkpoints()
        data = final.subset(np.isclose(final.model_size_m, size))
    out = []
    for s in range(splits):
        train, val = data.split_rows(val_fraction=0.25, seed=s)
        full = np.isfinite(val.losses).all(axis=1)
        pool, measured = val.mixtures[full], val.losses[full].mean(axis=1)
        boot, tb = timed(mixjax.bootstrap, "loglinear", train, resamples=resamples, seed=s, level=level)
        c, tc = timed(mixjax.calibrate_optimum, boot, candidates=pool, seed=s)
        out.append(record(c, None, float(measured[c.index]), float(measured.min()), tb, tc))
        progress(f"{name} {s + 1}/{splits}")
    return out


def estimates(r: dict, level: float) -> dict:
    """``(estimate, interval of the law's objective, run interval)`` of every estimator for one replication.

    raw: the fit's own prediction; bootstrap: ``g^-1(g(p) + median d)`` with its basic bootstrap interval and its
    out-of-bag run interval (``cv_folds=0``); cv: what ``calibrate_optimum`` returns by default, ``g^-1(g(p) +
    mean e)`` (e the cross-validated pick residuals) with its intervals (module docstring of ``mixjax.calibration``);
    cv_conformal: the same estimate with the split-conformal run interval of e alone; max: ``g^-1(g(p) + max(mean e,
    median d))``; sum: ``g^-1(g(p) + median d + mean(e - e0))`` (e0 the full-data fit minus the fold's fit at the
    picks: the part of e the law's form explains). max and sum move the cv intervals with their centre."""
    g, inv = (np.log, np.exp) if r["log_scale"] else ((lambda x: x), (lambda x: x))
    p = r["predicted"]
    out = {"raw": (p, None, None),
           "bootstrap": (r["bootstrap"], r["bootstrap_interval"], r["bootstrap_run_interval"])}
    if r["method"] != "cv":
        return out
    out["cv"] = (r["calibrated"], r["interval"], r["run_interval"])
    out["cv_conformal"] = (r["calibrated"], r["interval"], r["cv_run_interval"])
    dm = r["d_quantiles"][1]
    for name, c in {"max": max(r["cv_mean"], dm), "sum": dm + r["cv_mean"] - r["cv_law_mean"]}.items():
        move = lambda x, c=c: float(inv(g(x) + c - r["cv_mean"]))  # noqa: E731
        out[name] = (move(r["calibrated"]), [move(x) for x in r["interval"]], [move(x) for x in r["run_interval"]])
    return out


ESTIMATORS = ("raw", "bootstrap", "cv", "cv_conformal", "max", "sum")


def summarize(rows: list[dict], level: float) -> dict:
    def mean_se(x):
        x = np.asarray(x, np.float64)
        return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")

    ref = np.array([r["truth"] if r["truth"] is not None else r["measured"] for r in rows])
    meas = np.array([r["measured"] for r in rows])
    est = [estimates(r, level) for r in rows]
    out = {"n": len(rows), "estimators": {}}
    for name in ESTIMATORS:
        if any(name not in e for e in est):
            continue
        err = ref - np.array([e[name][0] for e in est])
        s = {"error": mean_se(err), "rmse": float(np.sqrt(np.mean(err ** 2)))}
        if name != "raw":
            s["run_interval_covers_measured"] = float(np.mean([e[name][2][0] <= x <= e[name][2][1] for e, x in zip(est, meas)]))
            s["run_interval_width"] = float(np.mean([e[name][2][1] - e[name][2][0] for e in est]))
            if rows[0]["truth"] is not None:
                s["interval_covers_truth"] = float(np.mean([e[name][1][0] <= x <= e[name][1][1] for e, x in zip(est, ref)]))
        out["estimators"][name] = s
    if rows[0]["truth"] is not None:
        out["fixed_interval_covers_truth"] = float(np.mean([r["fixed_interval"][0] <= x <= r["fixed_interval"][1] for r, x in zip(rows, ref)]))
    out["true_regret"] = mean_se([r["true_regret"] for r in rows])
    out["regret_estimate"] = mean_se([r["regret_estimate"] for r in rows])
    tb = np.array([r["seconds_bootstrap"] for r in rows])
    tc = np.array([r["seconds_calibration"] for r in rows])
    later = slice(1, None) if len(rows) > 1 else slice(None)  # the first replication compiles
    out["seconds_bootstrap"] = float(tb[later].sum())
    out["seconds_calibration"] = float(tc[later].sum())
    out["cost_ratio"] = float((tb[later].sum() + tc[later].sum()) / tb[later].sum())
    out["cost_ratio_median"] = float(np.median((tb[later] + tc[later]) / tb[later]))
    out["cost_ratio_with_compile"] = float((tb.sum() + tc.sum()) / tb.sum())
    return out


def table(summary: dict, level: float) -> str:
    pct = f"{100 * level:g}%"
    names = [n for n in ESTIMATORS if any(n in s["estimators"] for s in summary.values())]
    point = [n for n in names if n != "cv_conformal"]  # the same estimate as cv
    lines = ["Mean error (truth or measured run minus estimate; + = optimistic) ± standard error, and RMSE:\n",
             "| setting | M | " + " | ".join(point) + " |", "|---|---|" + "---|" * len(point)]
    for key, s in summary.items():
        cells = []
        for n in point:
            e = s["estimators"].get(n)
            cells.append("" if e is None else f"{e['error'][0]:+.4f} ± {e['error'][1]:.4f} ({e['rmse']:.4f})")
        lines.append(f"| {key} | {s['n']} | " + " | ".join(cells) + " |")
    lines += ["", f"Coverage of the {pct} run interval (one run at the pick) and its mean width; of the {pct} interval of the law's "
              "objective (synthetic only, after the slash; fixed-mixture interval in the last column):\n",
              "| setting | " + " | ".join(names[1:]) + " | fixed |", "|---|" + "---|" * len(names)]
    for key, s in summary.items():
        cells = []
        for n in names[1:]:
            e = s["estimators"].get(n)
            if e is None:
                cells.append("")
                continue
            t = f" / {e['interval_covers_truth']:.2f}" if "interval_covers_truth" in e else ""
            cells.append(f"{e['run_interval_covers_measured']:.2f}{t} (w {e['run_interval_width']:.3f})")
        fixed = f"{s['fixed_interval_covers_truth']:.2f}" if "fixed_interval_covers_truth" in s else ""
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {fixed} |")
    lines += ["", "Cost of the full calibrated report (bootstrap + calibrate_optimum) against the plain bootstrap of the same R, same "
              "process, first replication (compilation) left out; regret true / estimated:\n",
              "| setting | bootstrap s | calibration s | ratio (sum) | ratio (median) | with compile | regret |", "|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        lines.append(f"| {key} | {s['seconds_bootstrap']:.1f} | {s['seconds_calibration']:.1f} | {s['cost_ratio']:.2f} | "
                     f"{s['cost_ratio_median']:.2f} | {s['cost_ratio_with_compile']:.2f} | {s['true_regret'][0]:.4f} / {s['regret_estimate'][0]:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=40, help="synthetic replications per mode (default 40)")
    ap.add_argument("--splits", type=int, default=20, help="random 75/25 splits per real sweep (default 20)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--quick", action="store_true", help="3 replications and 2 splits, 60 resamples")
    ap.add_argument("--only", nargs="+", help="settings to run (synthetic_pool, synthetic_optimum, or dataset names)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "calibrated_optimum"))
    args = ap.parse_args(argv)
    LEVEL[0] = args.level
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
            summary[name] = summarize(raw[name], args.level)
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
