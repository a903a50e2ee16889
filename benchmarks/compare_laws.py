"""Which law to trust, per dataset: ``mixjax compare`` end to end (process start and compilation included).

Runs, each as a separate ``mixjax`` process, timed by wall clock:

* ``mixjax compare slimpajama7 --final-checkpoints --holdout-scale largest``: fit every law on the final checkpoint
  of each run of 122M-1.235B, score the 2.718B runs (the question asked before a large run);
* ``mixjax compare slimpajama7 --final-checkpoints --holdout-scale 1.235B``: fit on 122M-937M, score 1.235B;
* ``mixjax compare pile17_regmix1b --cv mixtures:5``: 5-fold cross-validation by mixture on the 17-domain RegMix
  1B runs;
* ``mixjax compare pile4 --cv mixtures:5``.

Writes ``benchmarks/results/compare_laws.md`` and ``.json`` (the JSON of every run and its seconds).

    python benchmarks/compare_laws.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from mixjax import fitting  # noqa: E402  (the default step limits, for the header)

RUNS = [
    ("slimpajama7, final checkpoints, fit 122M-1.235B, score 2.718B", ["slimpajama7", "--final-checkpoints", "--holdout-scale", "largest"]),
    ("slimpajama7, final checkpoints, fit 122M-937M, score 1.235B", ["slimpajama7", "--final-checkpoints", "--max-model-size", "1.235B", "--holdout-scale", "largest"]),
    ("pile17_regmix1b, 5-fold CV by mixture", ["pile17_regmix1b", "--cv", "mixtures:5"]),
    ("pile4, 5-fold CV by mixture", ["pile4", "--cv", "mixtures:5"]),
]


def run(args: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mixjax", "compare", *args, "--json"], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"mixjax compare {' '.join(args)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout), dt


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def table(out: dict) -> list[str]:
    lines = ["| law | k | train MRE % | held-out MRE % (counted) | on common cells % | cells used / excluded | Spearman | rank of measured best | AIC | status |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in out["laws"]:
        rho = "n/a" if d["spearman"] is None else f"{d['spearman']:.2f}"
        rank = "n/a" if d["best_rank"] is None else f"{d['best_rank']:.1f}"
        aic = "n/a" if d["aic"] is None else f"{d['aic']:.0f}"
        lines.append(f"| {d['law']} | {d['n_params']} | {pct(d['train_mre'])} | {pct(d['val_mre'])} | {pct(d['val_mre_common'])} | "
                     f"{d['n_cells_used']} / {d['n_cells_excluded']} | {rho} | {rank} | {aic} | {d['status']} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two laws, 2 starts, 100 steps")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "compare_laws"))
    a = ap.parse_args()
    extra = ["--laws", "shukor_additive,capacity_noise", "--starts", "2", "--max-steps", "100"] if a.quick else []
    results = []
    md = ["# Which law: `mixjax compare`", "",
          f"Command: `python benchmarks/compare_laws.py{' --quick' if a.quick else ''}`. Each run is one `mixjax compare ... --json` "
          "process (default settings: 8 starts per law and split, each law's default step limit: "
          f"{fitting.DEFAULT_STEPS} L-BFGS steps, {fitting.MID_PARAMS_STEPS} above {fitting.MID_PARAMS} parameters, "
          f"{fitting.MANY_PARAMS_STEPS} above {fitting.MANY_PARAMS}; float64); seconds are wall clock "
          "including process start and compilation, on this machine's CPU. Ranked by held-out MRE on the cells every law counts.", ""]
    for title, args in RUNS:
        out, dt = run(args + extra)
        results.append({"title": title, "args": args + extra, "seconds": dt, "result": out})
        md += [f"## {title}", "", f"`mixjax compare {' '.join(args + extra)}` — {dt:.0f} s, {out['protocol']}", ""]
        md += table(out)
        if out["skipped"]:
            md += ["", "Skipped: " + "; ".join(f"{s['law']} ({s['reason']})" for s in out["skipped"])]
        md.append("")
        print(f"{title}: {dt:.0f} s; best {out['laws'][0]['law']}", flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    with open(a.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {a.out}.md")


if __name__ == "__main__":
    main()
