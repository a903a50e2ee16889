"""Variable projection on the laws whose coefficients enter linearly: does it make fits converge, and converge sooner?

For each law (exponential: c; shukor_mixture: E; shukor_additive: E, A, B; shukor_joint: E; bimix: B, C), on

* slimpajama7 at 122M parameters / 9.998B tokens (60 mixtures, 7 domains, 8 targets),
* pile4 (86 runs, 4 domains, 3 model sizes, 3B-8B tokens),
* pile17_regmix1b (62 runs, 17 domains, 1B / 25B),

fit the 80 % training rows of a fixed row split (``split_rows(0.2, seed=0)``) from 8 starts (seed 0, float64,
L-BFGS, mse) at the law's default step limit and at 3 times it, with ``varpro=False`` (every parameter moved by the
solver) and ``varpro=True`` (the linear coefficients solved in closed form). Reported per fit: starts that ended
``converged`` (and the other statuses), the best objective J, train and held-out MRE of the best start, the starts
whose convergence test passed before the step limit (their status may still be ``out_of_range``), the median solver
steps, the compile seconds (a 1-step fit of the same shapes, which compiles the program every step limit reuses) and
the run seconds (the fit itself, compiled). Writes ``benchmarks/results/varpro_laws.md``.

    python benchmarks/varpro_laws.py [--laws exponential,bimix] [--datasets pile4]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.fitting import default_max_steps, init_starts, prepare, summarize  # noqa: E402
from mixjax.laws import n_params  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LAWS = ["exponential", "shukor_mixture", "shukor_additive", "shukor_joint", "bimix"]
DATASETS = {
    "slimpajama7 122M/9.998B": lambda: mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9),
    "pile4": lambda: mj.load_dataset("pile4"),
    "pile17_regmix1b": lambda: mj.load_dataset("pile17_regmix1b"),
}
STARTS = 8
STATUS_SHORT = {"converged": "conv", "max_steps": "max", "out_of_range": "oor", "nonfinite": "nan"}


def law_size(name: str, train) -> tuple[int, int]:
    """(free parameters, parameters the solver moves under variable projection) on ``train``."""
    cls = mj.get_law(name)
    arrays, _ = prepare(cls, train)
    law = jax.tree_util.tree_map(lambda x: x[0], init_starts(cls, jax.random.PRNGKey(0), 1, summarize(arrays, train)))
    k = n_params(law)
    return k, k - sum(int(np.size(getattr(law, f))) for f in cls.linear_fields)


def one_fit(name: str, train, val, steps: int, varpro: bool) -> dict:
    t0 = time.perf_counter()
    f = mj.fit(name, train, starts=STARTS, seed=0, max_steps=steps, varpro=varpro)
    run_s = time.perf_counter() - t0
    counts = {k: v for k, v in f.info["start_status"].items() if v}
    return {
        "converged": int(counts.get("converged", 0)),
        "statuses": counts,
        "best_status": f.status.name,
        "J": float(f.loss),
        "train_mre": float(f.evaluate(train)["mre"]),
        "val_mre": float(f.evaluate(val)["mre"]),
        "median_steps": float(np.median(np.asarray(f.starts.num_steps))),
        "stopped": int(np.sum(np.asarray(f.starts.num_steps) < steps)),
        "run_s": run_s,
    }


def compile_seconds(name: str, train, varpro: bool) -> float:
    """Wall seconds of a 1-step fit of the same shapes: it compiles the program that every step limit then reuses."""
    t0 = time.perf_counter()
    mj.fit(name, train, starts=STARTS, seed=0, max_steps=1, varpro=varpro)
    return time.perf_counter() - t0


def status_text(counts: dict) -> str:
    return " ".join(f"{v} {STATUS_SHORT.get(k, k)}" for k, v in counts.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", default=",".join(LAWS))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "varpro_laws.md"))
    a = ap.parse_args()
    laws = [s for s in a.laws.split(",") if s]
    datasets = [s for s in a.datasets.split(",") if s]
    warnings.simplefilter("ignore")  # max_steps / out_of_range warnings: the statuses are in the table
    header = ("| law | data | k / moved | max_steps | varpro | starts: status | best J | train MRE % | held-out MRE % | "
              "solver stopped | median steps | compile s | run s |")
    rows = [header, "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    skipped = []
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    print(header, flush=True)
    for ds in datasets:
        data = DATASETS[ds]()
        train, val = data.split_rows(0.2, seed=0)
        for name in laws:
            try:
                k, moved = law_size(name, train)
                if int(np.asarray(prepare(name, train)[0].mask).sum()) < k:
                    raise mj.DataError(f"{k} parameters for fewer measured cells")
            except (mj.DataError, ValueError) as e:
                skipped.append(f"{name} on {ds}: {' '.join(str(e).split())[:160]}")
                print(f"skip {name} on {ds}: {e}", flush=True)
                continue
            base = default_max_steps(k)
            comp = {vp: compile_seconds(name, train, vp) for vp in (False, True)}
            for steps in (base, 3 * base):
                for vp in (False, True):
                    r = one_fit(name, train, val, steps, vp)
                    line = (f"| {name} | {ds} | {k} / {moved if vp else k} | {steps} | {'on' if vp else 'off'} | "
                            f"{status_text(r['statuses'])} | {r['J']:.6g} | {100 * r['train_mre']:.3f} | {100 * r['val_mre']:.3f} | "
                            f"{r['stopped']}/{STARTS} | {r['median_steps']:.0f} | {comp[vp]:.1f} | {r['run_s']:.1f} |")
                    rows.append(line)
                    print(line, flush=True)
            jax.clear_caches()
    note = (
        f"Command: `python benchmarks/varpro_laws.py`. {STARTS} starts (seed 0), float64, L-BFGS, mse objective, fitted "
        "on the 80 % training rows of `split_rows(0.2, seed=0)`; held-out MRE on the other 20 %. `varpro off`: the "
        "solver moves every parameter (`fit(..., varpro=False)`, the earlier behaviour); `on`: the linear coefficients "
        "(exponential: c; shukor_mixture and shukor_joint: E; shukor_additive: E, A, B; bimix: B, C) are solved in "
        "closed form and the solver moves the rest (`k / moved`). max_steps: the law's default and 3 times it. Status "
        "counts over starts: conv converged, max max_steps, oor out_of_range (a parameter outside the law's sane "
        "range, e.g. gamma > 10 or beta > 3). Solver stopped: starts whose convergence test passed before max_steps "
        "(an out_of_range start among them converged, then failed the range check). Best J, MREs: the best start. "
        "Compile s: a 1-step fit of the same shapes (compiles the program every step limit reuses); run s: the fit, "
        f"compiled. CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs "
        f"(1-minute load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: seconds are indicative "
        f"only, steps are not affected); jax {jax.__version__}; {time.perf_counter() - t_start:.0f} s in all."
    )
    md = [
        "# Variable projection on the linear coefficients of the exponential, Shukor and BiMix laws", "",
        note, "",
        *rows,
    ]
    if skipped:
        md += ["", "Not fitted: " + "; ".join(skipped)]
    md.append("")
    if os.path.dirname(a.out):
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write("\n".join(md))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
