"""Laws on real mixture swarms: held-out RMSE, Spearman and regret@1 of the swarm laws against references.

Tables and protocol (5-fold cross-validation by run, folds from ``mixjax.comparison.cv_splits(data, "mixtures:5",
seed=0)``, the folds ``mixjax.compare`` uses):

* ``marin2phase``: 193 runs, 39 domains x 2 phases, objective ``eval/uncheatable_eval/bpb`` (unique tokens attached);
* ``olmix64``: 512 runs x 64 domains, objective the mean of 110 task BPBs.

Rows: every swarm law (``exposure``, ``exposure_joint``) and ``loglinear`` through ``mixjax.compare`` (one batched
call per law, ``--starts`` starts per fold); a ridge regression on the square roots of the stored weights (every
phase's columns, intercept unpenalized, fixed penalty ``RIDGE_L2`` on centred features, numpy closed form); a
LightGBM regressor on the stored weights when ``lightgbm`` is installed (its native ``lightgbm.train``, fixed settings below; otherwise a line says
it was skipped). The references are scored with the same functions as ``compare``: RMSE pooled over held-out runs,
Spearman per fold averaged over folds, regret@1 per fold averaged over folds.

Then the time of one fit of the exposure law to all 193 runs of ``marin2phase`` with 16 starts, cold (compiling) and
warm (compiled), beside a ``loglinear`` fit of the same table timed the same way in the same run.

Writes ``benchmarks/results/swarm_laws.md`` and ``.json``.

    python benchmarks/swarm_laws.py [--starts 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.comparison import cv_splits, regret_at_1, spearman  # noqa: E402
from mixjax.laws.exposure import ExposureLaw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = [("marin2phase", "eval/uncheatable_eval/bpb"), ("olmix64", "mean of 110 task BPBs")]
SWARM_LAWS = ["exposure", "exposure_joint", "loglinear"]
RIDGE_L2 = 0.03
LGBM_ROUNDS = 300
LGBM = dict(objective="regression", learning_rate=0.03, num_leaves=15, min_data_in_leaf=10, bagging_fraction=0.8,
            bagging_freq=1, feature_fraction=0.8, seed=0, num_threads=2, verbose=-1)


def score_predictions(data, splits, fit_predict) -> dict:
    """RMSE, Spearman and regret@1 of an external regressor on the held-out runs of every split."""
    y = data.losses[:, 0]
    pred = np.full(y.shape, np.nan)
    rho, regret = [], []
    for s in splits:
        p = fit_predict(s.train, s.test)
        pred[s.test] = p
        rho.append(spearman(p, y[s.test]))
        regret.append(regret_at_1(p, y[s.test]))
    return {"val_rmse": float(np.sqrt(np.mean((pred - y) ** 2))), "spearman": float(np.nanmean(rho)),
            "regret_at_1": float(np.mean(regret)), "val_mre": float(np.mean(np.abs(pred - y) / y))}


def ridge_sqrt(data):
    X, y = np.sqrt(data.mixtures), data.losses[:, 0]

    def fit_predict(train, test):
        mu, ym = X[train].mean(0), y[train].mean()
        Xc = X[train] - mu
        coef = np.linalg.solve(Xc.T @ Xc + RIDGE_L2 * np.eye(X.shape[1]), Xc.T @ (y[train] - ym))
        return ym + (X[test] - mu) @ coef

    return fit_predict


def lightgbm_model(data):
    import lightgbm

    X, y = data.mixtures, data.losses[:, 0]

    def fit_predict(train, test):
        booster = lightgbm.train(LGBM, lightgbm.Dataset(X[train], y[train]), num_boost_round=LGBM_ROUNDS)
        return booster.predict(X[test])

    return fit_predict


def bench_table(name: str, starts: int) -> list[dict]:
    data = mj.load_dataset(name)
    splits = cv_splits(data, "mixtures:5", seed=0)
    rows = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = mj.compare(data, SWARM_LAWS, cv="mixtures:5", seed=0, starts=starts)
    seconds = time.perf_counter() - t0
    for s in comp.scores:
        rows.append({"model": s.law, "k": s.n_params, "val_rmse": s.val_rmse, "spearman": s.spearman,
                     "regret_at_1": s.regret_at_1, "val_mre": s.val_mre, "status": s.status})
    rows.append({"model": f"ridge on sqrt weights (L2 {RIDGE_L2})", "k": data.n_domains + 1, **score_predictions(data, splits, ridge_sqrt(data))})
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        print(f"{name}: lightgbm is not installed; LightGBM reference skipped")
    else:
        rows.append({"model": "LightGBM", "k": None, **score_predictions(data, splits, lightgbm_model(data))})
    print(f"{name}: compare of {len(SWARM_LAWS)} laws took {seconds:.0f} s")
    return rows


def time_fits(starts: int = 16) -> dict:
    data = mj.load_dataset("marin2phase")
    out = {}
    for label, law in (("exposure", ExposureLaw.for_data(data)), ("loglinear", "loglinear")):
        times = []
        for seed in (0, 1, 2):  # the first call compiles
            t0 = time.perf_counter()
            f = mj.fit(law, data, starts=starts, seed=seed)
            times.append(time.perf_counter() - t0)
        out[label] = {"cold_s": times[0], "warm_s": min(times[1:]), "status": f.status.name, "num_steps": f.num_steps}
    out["ratio_cold"] = out["exposure"]["cold_s"] / out["loglinear"]["cold_s"]
    out["ratio_warm"] = out["exposure"]["warm_s"] / out["loglinear"]["warm_s"]
    return out


def fmt(v, spec=".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=8, help="starts per fold of each law (default 8)")
    ap.add_argument("--quick", action="store_true", help="marin2phase only, 4 starts")
    args = ap.parse_args()
    tables = TABLES[:1] if args.quick else TABLES
    starts = 4 if args.quick else args.starts
    results = {"platform": platform.platform(), "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
               "starts": starts, "ridge_l2": RIDGE_L2, "lightgbm": {**LGBM, "num_boost_round": LGBM_ROUNDS}, "tables": {}}
    lines = ["| table (objective) | model | k | held-out RMSE | Spearman | regret@1 | held-out MRE % |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, objective in tables:
        rows = bench_table(name, starts)
        results["tables"][name] = {"objective": objective, "spread_std": float(np.std(mj.load_dataset(name).losses[:, 0])), "rows": rows}
        for r in rows:
            lines.append(f"| {name} ({objective}) | {r['model']} | {fmt(r['k'], 'd') if r['k'] is not None else '-'} | {fmt(r['val_rmse'])} | "
                         f"{fmt(r['spearman'], '.3f')} | {fmt(r['regret_at_1'])} | {fmt(None if r['val_mre'] is None else 100 * r['val_mre'], '.2f')} |")
    timing = time_fits(16)
    results["fit_time_marin2phase_16_starts"] = timing
    lines += ["", f"One fit to the 193 runs of marin2phase, 16 starts: exposure {timing['exposure']['cold_s']:.1f} s cold "
              f"(compiling), {timing['exposure']['warm_s']:.2f} s warm; loglinear {timing['loglinear']['cold_s']:.1f} s cold, "
              f"{timing['loglinear']['warm_s']:.2f} s warm; ratio exposure / loglinear {timing['ratio_cold']:.2f} cold, "
              f"{timing['ratio_warm']:.2f} warm."]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "swarm_laws.md"), "w") as f:
        f.write("# Swarm laws (benchmarks/swarm_laws.py)\n\n" + text + "\n")
    with open(os.path.join(HERE, "results", "swarm_laws.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
