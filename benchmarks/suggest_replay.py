"""Replay of a real sweep as a pool: do runs chosen by ``mixjax.suggest`` find the best mixture with fewer runs than
runs chosen at random?

Each pool is a sweep whose every run was measured. A design starts from the same ``n0`` random runs, then adds
``batch`` runs per round until ``n_final``, either suggested (``mixjax.suggest`` with ``candidates`` = the pool's
mixtures not measured yet) or drawn at random from them. After each round the law is refitted (the full-data fit of
the bootstrap for the suggested design, the same fit for the random one) and we record

* regret: measured objective of the pool mixture the fit predicts best (over the whole pool) minus the best measured
  objective of the pool (0 = the fit picks the pool's best run);
* best-measured regret: best measured objective among the runs trained so far minus the pool's best;
* held-out MRE of the fit's predictions (RegMix: the source's 256 test runs; SlimPajama: the pool runs not measured).

Pools and laws (objective J = the mean predicted loss over the targets named):

* ``pile17_regmix1m``: the 512 runs of the source's train split (17 domains, 1M parameters), J = Pile-CC validation
  loss (RegMix's own target); law ``power_linear`` (19 parameters; 1.1 % held-out MRE on the test split when fitted
  on all 512 runs, the best of the cheap single-target laws tried). n0 = 24, 8 runs per round, up to 96.
* ``slimpajama7`` at 122M parameters, final checkpoints: 60 runs (7 domains), J = mean loss over the 7 domains; law
  ``power_linear`` (57 parameters). n0 = 12, 4 runs per round, up to 44.

Every round reuses one compiled program: the pool is the fitted table, with the losses of runs not yet measured
missing (masked). Bootstrap resampling then draws as many rows as the pool holds, so a measured run's multiplicity is
Binomial(pool, 1/pool), close to Poisson(1) (the Poisson bootstrap) instead of Binomial(n, 1/n).

Target: the suggested design reaches the random design's final mean regret with at least 30 % fewer runs.

    python benchmarks/suggest_replay.py            # both pools, 4 seeds (about 10 min on 2 busy CPU cores)
    python benchmarks/suggest_replay.py --quick    # 2 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax as _jax

_jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
FIT = dict(point_starts=8, max_steps=300)
BOOT = dict(resamples=16, starts=1)
SAVING_TARGET = 0.30


def regmix_pool():
    d = mixjax.load_dataset("pile17_regmix1m").select_targets(["pile_cc"])
    return dict(name="pile17_regmix1m (Pile-CC loss)", pool=d.by_split("train"), heldout=d.by_split("test"), law="power_linear",
                n0=24, batch=8, n_final=96)


def slim_pool():
    d = mixjax.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    d = d.select_targets(list(d.domains))
    return dict(name="slimpajama7 122M (mean loss, 7 domains)", pool=d, heldout=None, law="power_linear", n0=12, batch=4, n_final=44)


def masked(pool: mixjax.MixtureData, measured: np.ndarray) -> mixjax.MixtureData:
    """The pool with the losses of runs not in ``measured`` missing."""
    y = np.where(np.isin(np.arange(pool.n_rows), measured)[:, None], pool.losses, np.nan)
    return mixjax.from_arrays(pool.mixtures, y, pool.model_size, pool.n_tokens, domains=pool.domains, targets=pool.targets,
                              name=pool.name)


def score(fit_law, cfg, measured, J_pool):
    """(regret, best-measured regret, held-out MRE) of a fit."""
    pool, heldout = cfg["pool"], cfg["heldout"]
    N, D = float(pool.model_size_m[0]), float(np.nan_to_num(pool.n_tokens_b[0], nan=1.0))
    pred = np.asarray(fit_law.predict(pool.mixtures, N, D))
    chosen = int(np.argmin(pred.mean(axis=1)))
    regret = float(J_pool[chosen] - J_pool.min())
    best_measured = float(J_pool[measured].min() - J_pool.min())
    if heldout is None:
        rest = np.setdiff1d(np.arange(pool.n_rows), measured)
        p, y = pred[rest], pool.losses[rest]
    else:
        p, y = np.asarray(fit_law.predict(heldout.mixtures, N, D)), heldout.losses
    return regret, best_measured, float(np.mean(np.abs(p - y) / y))


def replay(cfg, design: str, seed: int, log) -> dict:
    pool = cfg["pool"]
    J_pool = pool.losses.mean(axis=1)
    rng = np.random.default_rng([seed, 11])
    measured = rng.permutation(pool.n_rows)[: cfg["n0"]]
    out = {"runs": [], "regret": [], "best_measured_regret": [], "heldout_mre": [], "seconds": []}
    while True:
        t0 = time.perf_counter()
        data = masked(pool, measured)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if design == "suggested":
                boot = mixjax.bootstrap(cfg["law"], data, seed=seed, chunk_size=FIT["point_starts"], **BOOT, **FIT)
                fit_law = boot.point.law
            else:
                fit_law = mixjax.fit(cfg["law"], data, starts=FIT["point_starts"], seed=seed, max_steps=FIT["max_steps"]).law
        r, b, m = score(fit_law, cfg, measured, J_pool)
        n = measured.size
        for key, val in (("runs", n), ("regret", r), ("best_measured_regret", b), ("heldout_mre", m)):
            out[key].append(val)
        if n >= cfg["n_final"]:
            out["seconds"].append(time.perf_counter() - t0)
            break
        rest = np.setdiff1d(np.arange(pool.n_rows), measured)
        k = min(cfg["batch"], cfg["n_final"] - n)
        if design == "suggested":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = mixjax.suggest(data, None, k, ensemble=boot, candidates=pool.mixtures[rest], seed=seed, min_distance=0.0)
            picked = [int(rest[np.flatnonzero(np.all(pool.mixtures[rest] == h, axis=1))[0]]) for h in s.mixtures]
        else:
            picked = rng.choice(rest, size=k, replace=False).tolist()
        measured = np.concatenate([measured, np.asarray(picked, np.int64)])
        out["seconds"].append(time.perf_counter() - t0)
    log(f"  {design:9s} seed {seed}: regret " + " ".join(f"{x:.4f}" for x in out["regret"]))
    return out


def reach(res: dict, key: str) -> dict:
    """Runs after which each design's mean curve stays at or below the random design's final value; the saving of
    the suggested design against the random design's final run count. Uninformative when the random design's
    curve starts at or below its own final value (nothing to reach)."""
    target = res["random"][key][-1]
    runs = res["random"]["runs"]

    def first_staying(curve):
        ok = np.asarray(curve) <= target + 1e-12
        return next((runs[i] for i in range(len(ok)) if ok[i:].all()), None)

    n_sug, n_rand = first_staying(res["suggested"][key]), first_staying(res["random"][key])
    informative = bool(res["random"][key][0] > target + 1e-12)
    saving = None if n_sug is None else 1.0 - n_sug / runs[-1]
    return {"random_final": target, "runs_suggested": n_sug, "runs_random": n_rand, "n_final": runs[-1], "saving": saving,
            "informative": informative, "target_met": bool(informative and saving is not None and saving >= SAVING_TARGET)}


def summarize(cfg, runs: dict) -> dict:
    """Mean curves over seeds and the runs the suggested design needs to reach the random design's final regret."""
    res = {}
    for design, per_seed in runs.items():
        R = np.array([r["regret"] for r in per_seed])
        res[design] = {
            "runs": per_seed[0]["runs"],
            "regret_mean": R.mean(0).tolist(),
            "regret_se": (R.std(0, ddof=1) / np.sqrt(R.shape[0])).tolist() if R.shape[0] > 1 else [0.0] * R.shape[1],
            "best_measured_regret_mean": np.mean([r["best_measured_regret"] for r in per_seed], 0).tolist(),
            "heldout_mre_mean": np.mean([r["heldout_mre"] for r in per_seed], 0).tolist(),
            "seconds_per_round": float(np.mean([np.mean(r["seconds"]) for r in per_seed])),
        }
    for metric in ("regret", "best_measured_regret"):
        res[metric] = reach(res, f"{metric}_mean")
    res["target_met"] = all(res[m]["target_met"] for m in ("regret",))
    return res


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8))
    for ax, (name, res) in zip(np.atleast_1d(axes), results.items()):
        for design, color in (("random", "tab:gray"), ("suggested", "tab:blue")):
            s = res["summary"][design]
            m, se = np.array(s["regret_mean"]), np.array(s["regret_se"])
            ax.plot(s["runs"], m, "o-", color=color, label=f"{design} (regret of predicted best)")
            ax.fill_between(s["runs"], m - se, m + se, color=color, alpha=0.2)
            ax.plot(s["runs"], s["best_measured_regret_mean"], ":", color=color, label=f"{design} (best measured so far)")
        ax.axhline(res["summary"]["regret"]["random_final"], color="k", lw=0.7, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("runs trained")
        ax.set_ylabel("regret (loss)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="2 seeds")
    ap.add_argument("--out", default=os.path.join(RESULTS, "suggest_replay"))
    args = ap.parse_args()
    seeds = range(2 if args.quick else args.seeds)
    t_all = time.perf_counter()
    results = {}
    for make in (regmix_pool, slim_pool):
        cfg = make()
        print(f"{cfg['name']}: pool {cfg['pool'].n_rows} runs, law {cfg['law']}, n0 {cfg['n0']}, +{cfg['batch']} per round to {cfg['n_final']}", flush=True)
        runs = {d: [replay(cfg, d, s, lambda m: print(m, flush=True)) for s in seeds] for d in ("random", "suggested")}
        results[cfg["name"]] = {"law": cfg["law"], "pool_runs": cfg["pool"].n_rows, "n0": cfg["n0"], "batch": cfg["batch"],
                                "n_final": cfg["n_final"], "seeds": list(seeds), "per_seed": runs, "summary": summarize(cfg, runs)}
    elapsed = time.perf_counter() - t_all
    meta = {"command": "python benchmarks/suggest_replay.py" + (" --quick" if args.quick else ""), "seconds": elapsed,
            "bootstrap": BOOT, "fit": FIT, "backend": _jax.default_backend()}
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "pools": results}, f, indent=1)
    plot(results, args.out + ".png")
    lines = ["# Sequential design replay: suggested vs random runs", "",
             f"Command: `{meta['command']}` ({elapsed / 60:.1f} min, {meta['backend']}). Bootstrap of {BOOT['resamples']} resamples "
             f"x {BOOT['starts']} start per round, full-data fit of {FIT['point_starts']} starts x <= {FIT['max_steps']} L-BFGS steps "
             f"for both designs; {len(list(seeds))} seeds (the same initial runs for both designs). Regret: measured objective of "
             "the pool mixture the fit predicts best minus the pool's best measured objective (mean over seeds). "
             "Protocol in the script's docstring; figure: suggest_replay.png.", ""]
    for name, res in results.items():
        s = res["summary"]
        lines += ["", f"## {name}: {res['pool_runs']} runs, law {res['law']}", "",
                  "| runs | regret random | regret suggested | best-measured regret random | best-measured regret suggested | held-out MRE % random | held-out MRE % suggested |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for i, n in enumerate(s["random"]["runs"]):
            lines.append(f"| {n} | {s['random']['regret_mean'][i]:.4f} | {s['suggested']['regret_mean'][i]:.4f} | "
                         f"{s['random']['best_measured_regret_mean'][i]:.4f} | {s['suggested']['best_measured_regret_mean'][i]:.4f} | "
                         f"{100 * s['random']['heldout_mre_mean'][i]:.2f} | {100 * s['suggested']['heldout_mre_mean'][i]:.2f} |")
        for metric, label in (("regret", "regret of the predicted-best mixture"), ("best_measured_regret", "best-measured regret")):
            r = s[metric]
            verdict = ("never stays there" if r["runs_suggested"] is None else
                       f"stays there from {r['runs_suggested']} runs, {100 * r['saving']:.0f} % fewer than {r['n_final']}")
            lines.append(f"* {label}: random design's final mean {r['random_final']:.4f} (random stays there from "
                         f"{r['runs_random']} runs); suggested design {verdict}; "
                         + ("30 % target " + ("met" if r["target_met"] else "NOT met") if r["informative"] else
                            "uninformative: the random design starts at or below its own final value"))
        lines += [f"* seconds per round: random {s['random']['seconds_per_round']:.1f}, suggested "
                  f"{s['suggested']['seconds_per_round']:.1f}", ""]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
