"""End to end, as a user runs it: wall seconds of ``mixjax fit ... --starts 256`` and ``mixjax bootstrap ...
--resamples 200`` (process start, data loading, compilation and fitting included), against a scipy L-BFGS-B loop of
16 starts on the same training rows in the same run (JAX gradients, float64, ftol 1e-15; its compile excluded).

Data: the capacity-noise law on SlimPajama at 122M parameters / 9.998B tokens, 20 % of the mixtures held out
(seed 0), as in the README's main command. Prints a table and writes ``benchmarks/results/cli_end_to_end.md``.

    python benchmarks/cli_end_to_end.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.metrics import mre  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from scipy_reference import scipy_fit  # noqa: E402 (tests/scipy_reference.py: the independent scipy reference)

COMMON = ["slimpajama7", "--law", "capacity_noise", "-N", "122M", "-D", "9.998B", "--json"]


def run(args):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mixjax.cli", *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout)


def main() -> int:
    data = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    train, val = data.split_rows(0.2, seed=0)
    law, best, info = scipy_fit("capacity_noise", train, starts=16, seed=0)
    pred = np.asarray(law.predict(val.mixtures, val.model_size_m, val.n_tokens_b))
    y, m = val.domain_losses()
    sp_mre = float(mre(pred, y, m))
    sp_rate = 16 / info["seconds"]

    t_fit, fit_out = run(["fit", *COMMON, "--val-fraction", "0.2", "--starts", "256"])
    t_boot, boot_out = run(["bootstrap", *COMMON, "--resamples", "200"])
    fit_rate = 256 / t_fit
    lines = [
        "# cli_end_to_end (cpu)", "",
        "| what | wall s | starts/s | x scipy | held-out MRE % | status |",
        "|---|---:|---:|---:|---:|---|",
        f"| scipy L-BFGS-B, 16 starts (loop) | {info['seconds']:.1f} | {sp_rate:.2f} | 1 | {100 * sp_mre:.3f} | |",
        f"| `mixjax fit --starts 256` | {t_fit:.1f} | {fit_rate:.1f} | {fit_rate / sp_rate:.0f} | {100 * fit_out['val_mre']:.3f} | "
        f"{fit_out['status']}, starts {fit_out['start_status']} |",
        f"| `mixjax bootstrap --resamples 200` (2 starts each, 16 for the full-data fit) | {t_boot:.1f} | | | | "
        f"{boot_out['n_failed']} failed; {boot_out.get('resample_status')} |",
    ]
    text = "\n".join(lines)
    print(text)
    path = os.path.join(os.path.dirname(__file__), "results", "cli_end_to_end.md")
    with open(path, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
