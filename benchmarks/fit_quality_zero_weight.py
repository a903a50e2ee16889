"""Fit quality with zero-weight cells counted: the seed capacity-noise law against its pseudo-count variant.

On sweeps where a domain can have weight 0, capacity_noise's noise term A_i (D h_i)^-a_i diverges at h_i = 0: its
fits leave those cells out (``mask_zero_weight``) and its predictions there explode. capacity_noise_h0 replaces
h_i by h_i + h0_i (a fitted pseudo-count) and fits every measured cell; capacity_only (no noise term) is finite at
zero weight too and is shown for reference.

Protocol (as benchmarks/fit_quality.py, the scored cells aside): S random 80/20 row splits (numpy
``default_rng(s)``), each fitted from ``--starts`` random starts (``law.init``, ``PRNGKey(s)``) by L-BFGS, MSE
objective, float64, all splits and starts in one batched ``mixjax.fitting.solve`` call; best start per split. Each law
is fitted on its default cells. Held-out MRE (%) is reported over every measured cell, over the cells whose own
domain weight is > 0 and over the zero-weight cells, as mean ± std over splits (the median for zero-weight cells of
capacity_noise, whose mean is dominated by a few exploding predictions), and the largest held-out prediction of a
zero-weight cell next to the largest measured loss.

Datasets with zero weights among the bundled ones: pile17_regmix1b (RegMix 1B runs at 25B tokens; 351 zero-weight
cells of 1054) and pile17_regmix1m (RegMix 1M proxy runs: 768 rows, 13 loss columns for 17 domains, 3992 zero-weight
cells of 9984). pile17_regmix1m has no token count; every row is given 1B tokens (at a single token count D only
rescales the fitted A_i: predictions do not depend on the value). slimpajama7 and pile4 have no zero weight.

    python benchmarks/fit_quality_zero_weight.py            # 5 splits, 8 starts, 300 steps
    python benchmarks/fit_quality_zero_weight.py --quick    # 2 splits, 4 starts, 100 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_enable_x64", True)  # float64 fits

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mixjax  # noqa: E402
from mixjax.fitting import FitConfig, best_of, init_starts, prepare, solve, summarize  # noqa: E402
from mixjax.laws import n_params  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from fit_quality import split_masks  # noqa: E402  (the same 80/20 splits as the main fit-quality table)

RESULTS = pathlib.Path(__file__).parent / "results"
LAWS = ("capacity_noise", "capacity_noise_h0", "capacity_only")
NOMINAL_TOKENS = 1e9  # pile17_regmix1m: token count unknown at the source; irrelevant at one token count


def datasets():
    regmix1m = mixjax.load_dataset("pile17_regmix1m")
    regmix1m = dataclasses.replace(regmix1m, n_tokens=np.full(regmix1m.n_rows, NOMINAL_TOKENS))
    return [("pile17 RegMix 1B/25B", mixjax.load_dataset("pile17_regmix1b")),
            ("pile17 RegMix 1M (tokens set to 1B)", regmix1m)]


def abs_rel(pred, y, cells):
    return np.abs(pred[cells] - y[cells]) / y[cells]


def run_law(name, data, train, cfg, starts):
    cls = mixjax.get_law(name)
    arrays, _ = prepare(cls, data)
    S = train.shape[0]
    batches = []
    for s in range(S):
        sub = data.subset(train[s])
        batches.append(init_starts(cls, jax.random.PRNGKey(s), starts, summarize(prepare(cls, sub)[0], sub)))
    laws = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *batches)
    W = jnp.asarray(np.repeat(train, starts, axis=0), jnp.float64)
    t0 = time.perf_counter()
    res = solve(laws, W, arrays, cfg)
    jax.block_until_ready(res.loss)
    seconds = time.perf_counter() - t0
    grouped = jax.tree_util.tree_map(lambda x: x.reshape((S, starts) + x.shape[1:]) if hasattr(x, "ndim") and x.ndim >= 1 else x, res)
    best, _ = best_of(grouped)
    pred = np.asarray(jax.vmap(lambda law: jax.vmap(law)(arrays.h, arrays.N, arrays.D))(best.law))  # (S, n, V)
    y, measured = data.domain_losses()
    zero = measured & (data.mixtures == 0)
    out = {"law": name, "n_params": n_params(jax.tree_util.tree_map(lambda x: x[0], laws)), "seconds": seconds,
           "fit_cells": "own weight > 0" if cls.mask_zero_weight else "all measured",
           "status": {st.name: int((np.asarray(best.status) == st).sum()) for st in mixjax.Status}}
    for label, cells in (("all", measured), ("positive", measured & ~zero), ("zero", zero)):
        held = [abs_rel(pred[s], y, cells & ~train[s][:, None]) for s in range(S)]
        fitted = [abs_rel(pred[s], y, cells & train[s][:, None]) for s in range(S)]
        out[f"val_mre_{label}"] = [float(np.mean(e)) * 100 for e in held]
        out[f"val_median_{label}"] = [float(np.median(e)) * 100 for e in held]
        out[f"train_mre_{label}"] = [float(np.mean(e)) * 100 for e in fitted]
        out[f"val_cells_{label}"] = int(sum(e.size for e in held))
    out["max_zero_weight_prediction"] = float(max(pred[s][zero & ~train[s][:, None]].max() for s in range(S)))
    out["max_measured_loss"] = float(np.nanmax(y))
    return out


def ms(v):
    return f"{np.mean(v):.3g} ± {np.std(v):.2g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 splits, 4 starts, 100 steps")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--laws", nargs="+", default=list(LAWS))
    ap.add_argument("--out", default=str(RESULTS / "fit_quality_zero_weight"), help="results path without extension")
    args = ap.parse_args(argv)
    if args.quick:
        args.splits, args.starts, args.steps = 2, 4, 100
    cfg = FitConfig(objective="mse", optimizer="lbfgs", max_steps=args.steps)
    t0 = time.perf_counter()
    rows = []
    for label, data in datasets():
        train = split_masks(data.n_rows, args.splits, 0.2)
        for name in args.laws:
            r = run_law(name, data, train, cfg, args.starts)
            r.update(dataset=label, n_rows=data.n_rows, n_domains=data.n_domains)
            rows.append(r)
            print(f"{label:36s} {name:20s} held-out MRE all {ms(r['val_mre_all'])}  weight>0 {ms(r['val_mre_positive'])}  "
                  f"zero-weight {ms(r['val_mre_zero'])} (median {ms(r['val_median_zero'])})  ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    command = "python benchmarks/fit_quality_zero_weight.py" + (" --quick" if args.quick else "")
    lines = ["# Fit quality with zero-weight cells counted (held-out MRE %)", "",
             f"Command: `{command}` ({total / 60:.1f} min, {jax.default_backend()}). {args.splits} random 80/20 row splits "
             f"(seeds 0..{args.splits - 1}), {args.starts} random starts x <= {args.steps} L-BFGS steps (MSE) per split, best start "
             "kept; mean ± std over splits. Each law is fitted on its default cells (capacity_noise: own weight > 0; the others: "
             "every measured cell) and scored on every held-out measured cell, split by the cell's own domain weight. "
             "Protocol: the docstring of benchmarks/fit_quality_zero_weight.py.", ""]
    for label in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == label]
        lines += [f"## {label} ({sub[0]['n_rows']} rows, K = {sub[0]['n_domains']}; held-out cells per split: "
                  f"{sub[0]['val_cells_all'] // args.splits} of which {sub[0]['val_cells_zero'] // args.splits} at zero weight)", "",
                  "| law | k | fitted cells | train MRE, all cells | held-out MRE, all cells | weight > 0 | zero weight | zero weight (median) | largest zero-weight prediction (largest loss) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sub:
            lines.append(f"| {r['law']} | {r['n_params']} | {r['fit_cells']} | {ms(r['train_mre_all'])} | {ms(r['val_mre_all'])} | "
                         f"{ms(r['val_mre_positive'])} | {ms(r['val_mre_zero'])} | {ms(r['val_median_zero'])} | "
                         f"{r['max_zero_weight_prediction']:.4g} ({r['max_measured_loss']:.3g}) |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "splits": args.splits, "starts": args.starts,
                                                    "max_steps": args.steps, "seconds": total, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
