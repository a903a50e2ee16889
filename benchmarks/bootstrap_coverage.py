"""Calibration of bootstrap intervals: do 90% intervals cover the truth 90% of the time?

Data are drawn from a known capacity-noise law (K = 3 domains, 16 parameters) with Gaussian noise of known sigma
on every loss: G random mixtures (Dirichlet(1)) at every (N, D) of a small grid. Each replication draws fresh
noise, fits the law, bootstraps it (one batched call of R resamples x S starts) and records whether each
interval covers the true value: every parameter, and predicted losses at three points (an in-range scale, and an
extrapolation to a 4x larger model and 4x more tokens). The compiled programs are reused across replications
(same shapes), so only the first replication compiles.

    python benchmarks/bootstrap_coverage.py                      # default run (writes benchmarks/results/)
    python benchmarks/bootstrap_coverage.py --replications 4 --resamples 40 --starts 2 --max-steps 150   # quick

With Monte Carlo error: a coverage estimated from M replications has standard error sqrt(p (1 - p) / M).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax as _jax

_jax.config.update("jax_enable_x64", True)  # float64 fits

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import mixjax  # noqa: E402

TRUTH = dict(
    b=[0.30, 0.45, 0.25],
    c=[3.0, 4.0, 2.5],
    A=[0.50, 0.30, 0.80],
    a=[0.30, 0.40, 0.25],
    E=[1.50, 2.00, 1.20],
    H=2.0,
)  # N in millions of parameters, D in billions of tokens; H in millions of parameters
MODEL_SIZES = [50e6, 100e6, 200e6]
TOKENS = [1e9, 2e9, 4e9]
PREDICT = {
    "equal mix, 200M / 4B (in range)": ([1 / 3, 1 / 3, 1 / 3], 200e6, 4e9),
    "skewed mix (0.7, 0.2, 0.1), 200M / 4B": ([0.7, 0.2, 0.1], 200e6, 4e9),
    "equal mix, 800M / 16B (extrapolation)": ([1 / 3, 1 / 3, 1 / 3], 800e6, 16e9),
}


def make_design(n_mixtures: int, seed: int):
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(3), n_mixtures)
    rows = [(g, N, D) for g in range(n_mixtures) for N in MODEL_SIZES for D in TOKENS]
    ids = np.array([r[0] for r in rows])
    return h[ids], np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), ids


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replications", type=int, default=30)
    p.add_argument("--resamples", type=int, default=100)
    p.add_argument("--starts", type=int, default=1, help="starts per resample; start 0 is the full-data fit (warm start)")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--mixtures", type=int, default=12, help="mixtures per replication (each at 9 (N, D) scales)")
    p.add_argument("--sigma", type=float, default=0.01, help="Gaussian noise sd on each loss")
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--scheme", default="rows", choices=["rows", "mixtures", "stratified"])
    p.add_argument("--bca", action="store_true", help="also BCa intervals (adds one jackknife refit per row per replication)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bootstrap_coverage"))
    args = p.parse_args(argv)

    truth = mixjax.CapacityNoiseLaw.from_params(**TRUTH)
    H, N, D, ids = make_design(args.mixtures, args.seed)
    clean = np.asarray(truth.predict(jnp.asarray(H), N / 1e6, D / 1e9))
    true_params = {k: np.asarray(v) for k, v in truth.params().items()}
    true_pred = {k: np.asarray(truth.predict(jnp.asarray([h]), n / 1e6, d / 1e9))[0] for k, (h, n, d) in PREDICT.items()}
    methods = ["percentile"] + (["bca"] if args.bca else [])
    hits = {m: {"params": {k: [] for k in true_params}, "pred": {k: [] for k in PREDICT}} for m in methods}
    widths = {m: {"params": {k: [] for k in true_params}, "pred": {k: [] for k in PREDICT}} for m in methods}
    inside = {m: {k: [] for k in true_params} for m in methods}  # is the full-data estimate inside its own interval?
    point_err = {k: [] for k in true_params}
    failed, seconds = [], []
    rng = np.random.default_rng(args.seed + 1)
    def report(M):
        se = float(np.sqrt(args.level * (1 - args.level) / M))
        out = {
            "settings": vars(args) | {"truth": TRUTH, "rows": int(H.shape[0]), "model_sizes": MODEL_SIZES, "tokens": TOKENS, "backend": jax.default_backend()},
            "nominal": args.level,
            "monte_carlo_se": se,
            "failed_resamples_per_replication": failed,
            "seconds_per_replication": seconds,
            "point_estimate_bias": {k: np.mean(v, axis=0).tolist() for k, v in point_err.items()},
            "point_estimate_sd": {k: np.std(v, axis=0).tolist() for k, v in point_err.items()},
        }
        for m in methods:
            out[m] = {
                "param_coverage": {k: np.mean(np.array(v), axis=0).tolist() for k, v in hits[m]["params"].items()},
                "param_mean_width": {k: np.mean(np.array(v), axis=0).tolist() for k, v in widths[m]["params"].items()},
                "estimate_inside_interval": {k: np.mean(np.array(v), axis=0).tolist() for k, v in inside[m].items()},
                "prediction_coverage": {k: np.mean(np.array(v), axis=0).tolist() for k, v in hits[m]["pred"].items()},
                "prediction_mean_width": {k: np.mean(np.array(v), axis=0).tolist() for k, v in widths[m]["pred"].items()},
            }
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out + ".json", "w") as fh:
            json.dump(out, fh, indent=2)

        lines = [
            f"# Bootstrap coverage ({M} replications, nominal {args.level:g}, Monte Carlo s.e. {se:.3f})",
            "",
            f"Capacity-noise law, K = 3, {H.shape[0]} rows ({args.mixtures} mixtures x {len(MODEL_SIZES)} sizes x {len(TOKENS)} token counts), "
            f"Gaussian noise sd {args.sigma}; {args.resamples} resamples ({args.scheme}) x {args.starts} starts, max_steps {args.max_steps}. "
            f"Failed resamples per replication: mean {np.mean(failed):.2f}. Time per replication {np.median(seconds):.1f} s (median).",
            "",
        ]
        for m in methods:
            lines += [f"## {m}", "", "| quantity | coverage per domain (d0, d1, d2) | mean width | truth |", "|---|---|---|---|"]
            for k in true_params:
                c = np.atleast_1d(out[m]["param_coverage"][k])
                w = np.atleast_1d(out[m]["param_mean_width"][k])
                lines.append(f"| {k} | {', '.join(f'{x:.2f}' for x in c)} | {', '.join(f'{x:.3g}' for x in w)} | {np.round(np.atleast_1d(true_params[k]), 4).tolist()} |")
            for k in PREDICT:
                c = np.atleast_1d(out[m]["prediction_coverage"][k])
                w = np.atleast_1d(out[m]["prediction_mean_width"][k])
                lines.append(f"| loss: {k} | {', '.join(f'{x:.2f}' for x in c)} | {', '.join(f'{x:.3g}' for x in w)} | {np.round(true_pred[k], 4).tolist()} |")
            lines.append("")
            lines.append("Fraction of replications whose full-data estimate lies inside its own interval: " + ", ".join(
                f"{k} {np.round(np.atleast_1d(out[m]['estimate_inside_interval'][k]), 2).tolist()}" for k in true_params))
            lines.append("")
        lines += ["Point-estimate bias / sd per parameter (over replications):", ""]
        for k in true_params:
            lines.append(f"- {k}: bias {np.round(out['point_estimate_bias'][k], 4)}, sd {np.round(out['point_estimate_sd'][k], 4)}")
        with open(args.out + ".md", "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return lines

    print(f"{args.replications} replications x {args.resamples} resamples x {args.starts} starts; {H.shape[0]} rows, sigma {args.sigma}", flush=True)
    for rep in range(args.replications):
        y = clean + args.sigma * rng.normal(size=clean.shape)
        data = mixjax.from_arrays(H, y, N, D, mixture_id=ids, domains=["d0", "d1", "d2"], name=f"synthetic{rep}")
        t0 = time.perf_counter()
        res = mixjax.bootstrap(
            "capacity_noise", data, resamples=args.resamples, starts=args.starts, seed=args.seed + rep, scheme=args.scheme,
            max_steps=args.max_steps, level=args.level,
        )
        failed.append(res.n_failed)
        for k, v in res.point.params().items():
            point_err[k].append(v - true_params[k])
        for m in methods:
            iv = res.param_intervals(method=m)
            for k, t in true_params.items():
                hits[m]["params"][k].append((iv[k]["lo"] <= t) & (t <= iv[k]["hi"]))
                inside[m][k].append((iv[k]["lo"] <= iv[k]["estimate"]) & (iv[k]["estimate"] <= iv[k]["hi"]))
                widths[m]["params"][k].append(iv[k]["hi"] - iv[k]["lo"])
            for k, (h, n, d) in PREDICT.items():
                pi = res.predict_intervals(np.asarray(h), n, d, method=m)
                t = true_pred[k]
                hits[m]["pred"][k].append((pi["lo"][0] <= t) & (t <= pi["hi"][0]))
                widths[m]["pred"][k].append(pi["hi"][0] - pi["lo"][0])
        seconds.append(time.perf_counter() - t0)
        cov = np.mean([np.mean(np.concatenate([np.atleast_1d(x) for x in hits[methods[0]]["params"][k]])) for k in true_params])
        print(f"  replication {rep + 1}/{args.replications}: {seconds[-1]:.1f} s, {res.n_failed} failed, running mean parameter coverage {cov:.3f}", flush=True)

        lines = report(rep + 1)  # results so far, rewritten after every replication

    print("\n".join(lines))
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
