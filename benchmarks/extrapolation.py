"""Extrapolation to unseen scales on the SlimPajama 7-domain sweep: fit on small runs, score larger ones.

Every law that depends on both model size and tokens is fitted and scored on the same rows and cells: the seven
domain losses (``openhermes`` is dropped), each row with its own N (millions of parameters) and D (billions of
tokens), objective "relative" (squared relative error, the quantity MRE measures), float64, L-BFGS.

Protocols
  * scale step 1: fit on 122M, 310M, 680M, 937M; score the final checkpoints of 1.235B (20 mixtures, 46.1B tokens).
  * scale step 2: fit on everything up to 1.235B; score the final checkpoints of 2.718B (4 mixtures, 103.7B tokens).
  * tokens: the same runs at more tokens. Fit on the checkpoints of every run up to 1.235B whose token count is
    between 20 % and 50 % of the run's final count (4 checkpoints per run, a 2.5x range); score the final checkpoint
    of the same runs (2x the tokens of the last fitted checkpoint, 5x those of the first; 220 runs). Reported over
    all 220 runs and at 1.235B alone, with the measured and predicted relative loss drop from the 50 % checkpoint to
    the final one.

Checkpoints as data (scale steps): "final" uses the final checkpoint of each run (one row per run); "late ckpts"
adds the run's checkpoints at >= 50 % of its final tokens (6 rows per run); "ckpts >= 20 %" every checkpoint but
the first (9 rows per run; with ``--early-checkpoints``). Each checkpoint is a row with its own D. The checkpoints
of one run share one learning-rate schedule, so an intermediate checkpoint is not the loss of a run trained to that
D (its schedule has not finished), and early checkpoints (the first, at 10 % of the run, where the loss still falls
10-20 % per doubling of tokens) bend the fitted D-curve. The first checkpoint is never used, and the duplicated final
checkpoint (1.9998e10 and 2.0e10 tokens with identical losses) is counted once.

Metrics on the scored cells: MRE (%), cells whose own domain weight is 0 counted separately (none on this sweep),
signed bias (mean relative error; negative = predicted too low), and over the measured mixtures ranked by mean loss
over the 7 domains: Spearman correlation of predicted vs measured, and the predicted rank of the measured-best
mixture (target: top 3). "pass" = MRE <= 1.5 % at step 1, step 2 (final-checkpoint fits) and tokens, and the
measured-best mixture ranked in the top 3 at both steps.

    python benchmarks/extrapolation.py            # full run: 7 laws, final and late-checkpoint fits, tokens
    python benchmarks/extrapolation.py --quick    # three laws, final checkpoints and tokens, fewer steps
    python benchmarks/extrapolation.py --early-checkpoints --laws chinchilla_mixture --out benchmarks/results/extrapolation_early_checkpoints
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax as _jax

_jax.config.update("jax_enable_x64", True)  # float64 fits

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import mixjax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "extrapolation")
SIZES = (122e6, 310e6, 680e6, 937e6, 1.235e9, 2.718e9)
STEPS = {"step 1": (SIZES[:4], SIZES[4]), "step 2": (SIZES[:5], SIZES[5])}
TOKEN_WINDOW = (0.2, 0.5)  # fraction of the run's final tokens fitted in the token protocol
FIRST_CHECKPOINT_FRACTION = 0.2  # checkpoints below this fraction of the run's final tokens are never used
LAWS = ("capacity_noise", "capacity_noise_h0", "chinchilla", "shukor_additive", "shukor_joint", "chinchilla_mixture",
        "chinchilla_mixture_per_target")
QUICK_LAWS = ("capacity_noise", "capacity_noise_h0", "chinchilla_mixture")
TARGET_MRE = 0.015
TOL = 0.02  # checkpoints sit at 0.0999, 0.1999, ..., 0.4999, ... of the run (the first at 2B of 20B tokens less 2M)


def sweep() -> tuple[mixjax.MixtureData, np.ndarray]:
    """The sweep's domain losses, duplicated final checkpoints dropped, and each row's fraction of its run's tokens."""
    data = mixjax.load_dataset("slimpajama7")
    data = data.select_targets(list(data.domains))
    keep = np.ones(data.n_rows, bool)
    fraction = np.zeros(data.n_rows)
    for mid, n in set(zip(data.mixture_id.tolist(), data.model_size.tolist())):
        idx = np.flatnonzero((data.mixture_id == mid) & (data.model_size == n))
        idx = idx[np.argsort(data.n_tokens[idx])]
        if idx.size >= 2 and np.allclose(data.losses[idx[-1]], data.losses[idx[-2]], equal_nan=True):
            keep[idx[-2]] = False
        fraction[idx] = data.n_tokens[idx] / data.n_tokens[idx[-1]]
    return data.subset(keep), fraction[keep]


def selections(data, fraction, quick: bool, early: bool) -> dict[str, np.ndarray]:
    """Row masks of the checkpoint selections used for the scale steps."""
    final = fraction >= 1.0 - 1e-9
    out = {"final": final}
    if not quick:
        out["late ckpts"] = fraction >= 0.5 - TOL
    if early:
        out["ckpts >= 20 %"] = fraction >= FIRST_CHECKPOINT_FRACTION - TOL
    return out


def scores(fit: mixjax.Fit, test: mixjax.MixtureData) -> dict:
    """MRE, bias, zero-weight cells and mixture ranking of a fit on ``test`` (one row per run)."""
    pred = fit.predict(test)
    y, mask = test.domain_losses()
    rel = np.where(mask, (pred - np.where(mask, y, 1.0)) / np.where(mask, y, 1.0), np.nan)
    zero = mask & (test.mixtures == 0)
    out = {
        "n_cells": int(mask.sum()),
        "mre": float(np.nanmean(np.abs(rel))),
        "bias": float(np.nanmean(rel)),
        "n_zero_weight_cells": int(zero.sum()),
        "mre_zero_weight": float(np.abs(rel[zero]).mean()) if zero.any() else None,
        "mre_positive_weight": float(np.abs(rel[mask & ~zero]).mean()),
    }
    full = mask.all(axis=1)
    pm, mm = pred[full].mean(axis=1), y[full].mean(axis=1)
    ranks = np.ptp(pm) > 0  # a law that ignores the mixture predicts one loss for all: no ranking
    rank_pred = np.argsort(np.argsort(pm)) + 1
    out.update(
        n_mixtures=int(full.sum()),
        spearman=float(spearmanr(pm, mm).statistic) if ranks and full.sum() > 2 else None,
        pred_rank_of_measured_best=int(rank_pred[np.argmin(mm)]) if ranks else None,
    )
    return out


def token_drop(fit: mixjax.Fit, data, fraction, size: float) -> dict:
    """Measured and predicted relative loss drop (mean over domains and runs) from the 50 % checkpoint to the final
    one, at one model size."""
    at = np.isclose(data.model_size, size)
    half = data.subset(at & np.isclose(fraction, 0.5, atol=TOL))
    final = data.subset(at & (fraction >= 1.0 - 1e-9))
    runs = sorted(set(half.mixture_id.tolist()) & set(final.mixture_id.tolist()))
    hi = half.subset(np.array([half.mixture_id.tolist().index(r) for r in runs]))
    fi = final.subset(np.array([final.mixture_id.tolist().index(r) for r in runs]))
    y_half, m_half = hi.domain_losses()
    y_fin, m_fin = fi.domain_losses()
    ok = m_half & m_fin
    measured = 1.0 - y_fin / np.where(ok, y_half, 1.0)
    predicted = 1.0 - fit.predict(fi) / fit.predict(hi)
    return {"runs": len(runs), "measured": float(measured[ok].mean()), "predicted": float(predicted[ok].mean())}


def run_fit(law: str, train, starts: int, steps: int) -> tuple[mixjax.Fit, dict]:
    t0 = time.perf_counter()
    fit = mixjax.fit(law, train, starts=starts, max_steps=steps, objective="relative", seed=0)
    info = {"rows": train.n_rows, "starts": starts, "max_steps": steps, "fit_status": fit.status.name,
            "start_status": fit.info["start_status"], "train_mre": fit.evaluate(train)["mre"], "n_params": fit.n_params,
            "seconds": time.perf_counter() - t0}
    return fit, info


def run_law(law: str, data, fraction, quick: bool, early: bool, starts: int, steps: int, log) -> dict:
    out = {"law": law, "scale": {}, "tokens": None}
    final_rows = fraction >= 1.0 - 1e-9
    for sel, rows in selections(data, fraction, quick, early).items():
        n_starts = starts if sel == "final" else max(2, starts // 2)
        for step, (train_sizes, test_size) in STEPS.items():
            train = data.subset(rows & np.isin(data.model_size, train_sizes))
            fit, info = run_fit(law, train, n_starts, steps)
            info.update(scores(fit, data.subset(final_rows & np.isclose(data.model_size, test_size))))
            out["scale"].setdefault(sel, {})[step] = info
            log(f"{law:30s} {sel:14s} {step}: {train.n_rows:5d} rows  MRE {100 * info['mre']:.2f} %  bias {100 * info['bias']:+.2f} %  "
                f"rank of best {rank(info)}  ({info['seconds']:.0f} s)")
    lo, hi = TOKEN_WINDOW
    sizes = np.isin(data.model_size, SIZES[:5])
    train = data.subset(sizes & (fraction >= lo - TOL) & (fraction <= hi + TOL))
    fit, info = run_fit(law, train, max(2, starts // 2), steps)
    test = data.subset(sizes & final_rows)
    info.update(scores(fit, test))
    info["at_1.235B"] = scores(fit, test.subset(np.isclose(test.model_size, SIZES[4])))
    info["drop_1.235B"] = token_drop(fit, data, fraction, SIZES[4])
    out["tokens"] = info
    log(f"{law:30s} tokens        : {train.n_rows:5d} rows  MRE {100 * info['mre']:.2f} % (1.235B {100 * info['at_1.235B']['mre']:.2f} %)  "
        f"drop 1.235B measured {100 * info['drop_1.235B']['measured']:.1f} % predicted {100 * info['drop_1.235B']['predicted']:.1f} %  ({info['seconds']:.0f} s)")
    s1, s2, tk = out["scale"]["final"]["step 1"], out["scale"]["final"]["step 2"], out["tokens"]
    top3 = all(s["pred_rank_of_measured_best"] is not None and s["pred_rank_of_measured_best"] <= 3 for s in (s1, s2))
    out["passes"] = bool(max(s1["mre"], s2["mre"], tk["mre"]) <= TARGET_MRE and top3)
    return out


def pct(x, signed=False):
    return "n/a" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def rank(s):
    """'predicted rank of the measured best / number of mixtures', or n/a for a law that ignores the mixture."""
    return "n/a" if s["pred_rank_of_measured_best"] is None else f"{s['pred_rank_of_measured_best']}/{s['n_mixtures']}"


def tables(rows: list[dict]) -> list[str]:
    lines = ["## Summary (final-checkpoint fits for the scale steps)", "",
             "| law | k | step 1 MRE % | step 2 MRE % | tokens MRE % | tokens 1.235B MRE % | rank of measured best (step 1 ; step 2) | pass |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s1, s2, tk = r["scale"]["final"]["step 1"], r["scale"]["final"]["step 2"], r["tokens"]
        lines.append(f"| {r['law']} | {s1['n_params']} | {pct(s1['mre'])} | {pct(s2['mre'])} | {pct(tk['mre'])} | "
                     f"{pct(tk['at_1.235B']['mre'])} | {rank(s1)} ; {rank(s2)} | {'yes' if r['passes'] else 'no'} |")
    lines += ["", "## Scale steps by checkpoint selection", "",
              "| law | fitted rows | step 1: rows | MRE % | bias % | Spearman | rank of best | step 2: rows | MRE % | bias % | rank of best | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for sel, st in r["scale"].items():
            a, b = st["step 1"], st["step 2"]
            sp = "n/a" if a["spearman"] is None else f"{a['spearman']:.2f}"
            lines.append(f"| {r['law']} | {sel} | {a['rows']} | {pct(a['mre'])} | {pct(a['bias'], True)} | {sp} | "
                         f"{rank(a)} | {b['rows']} | {pct(b['mre'])} | {pct(b['bias'], True)} | {rank(b)} | {a['seconds'] + b['seconds']:.0f} |")
    lines += ["", "## Token direction (fit on 20-50 % of each run up to 1.235B, score the final checkpoints)", "",
              "| law | rows | MRE % (220 runs) | bias % | MRE % at 1.235B | bias % at 1.235B | Spearman 1.235B | rank of best 1.235B | "
              "loss drop 50 % -> final, 1.235B: measured % | predicted % | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["tokens"]
        a = t["at_1.235B"]
        sp = "n/a" if a["spearman"] is None else f"{a['spearman']:.2f}"
        lines.append(f"| {r['law']} | {t['rows']} | {pct(t['mre'])} | {pct(t['bias'], True)} | {pct(a['mre'])} | {pct(a['bias'], True)} | "
                     f"{sp} | {rank(a)} | {pct(t['drop_1.235B']['measured'])} | "
                     f"{pct(t['drop_1.235B']['predicted'])} | {t['seconds']:.0f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"laws {', '.join(QUICK_LAWS)}; final checkpoints and tokens; 4 starts x 200 steps")
    ap.add_argument("--laws", nargs="+", help="laws to run (default: the laws of the full table)")
    ap.add_argument("--early-checkpoints", action="store_true", help="also fit the scale steps on every checkpoint from 20 %% of the run")
    ap.add_argument("--starts", type=int, default=4, help="starts of final-checkpoint fits (half, at least 2, for checkpoint fits)")
    ap.add_argument("--steps", type=int, default=300, help="L-BFGS steps per start")
    ap.add_argument("--out", default=DEFAULT_OUT, help="results path without extension")
    args = ap.parse_args(argv)
    if args.quick:
        args.starts, args.steps = 4, 200
    laws = args.laws or list(QUICK_LAWS if args.quick else LAWS)
    for law in laws:
        cls = mixjax.get_law(law)
        if not (cls.uses_model_size and cls.uses_tokens):
            raise SystemExit(f"extrapolation.py: law {law!r} does not use both model size and tokens")

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    data, fraction = sweep()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = [run_law(law, data, fraction, args.quick, args.early_checkpoints, args.starts, args.steps, log) for law in laws]
    t_wall, t_cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    command = ("python benchmarks/extrapolation.py" + (" --quick" if args.quick else "") + (" --early-checkpoints" if args.early_checkpoints else "")
               + (f" --laws {' '.join(args.laws)}" if args.laws else "") + (f" --out {args.out}" if args.out != DEFAULT_OUT else ""))
    md = ["# Extrapolation across scales, SlimPajama 7 domains", "",
          f"Command: `{command}` ({t_wall / 60:.1f} min wall, {t_cpu / 60:.1f} min CPU, backend {_jax.default_backend()}). "
          f"Objective relative, float64, L-BFGS <= {args.steps} steps, {args.starts} starts for final-checkpoint fits "
          f"({max(2, args.starts // 2)} for checkpoint and token fits), seed 0. Protocols and metrics: the docstring of "
          "benchmarks/extrapolation.py. Scored cells: the 7 domain losses of the final checkpoints (no zero-weight cell on this "
          "sweep). k = free parameters. pass: MRE <= 1.5 % at both steps and tokens, measured-best mixture in the "
          "predicted top 3 at both steps.", ""]
    md += tables(rows)
    text = "\n".join(md) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    suffix = "_quick" if args.quick else ""
    with open(args.out + suffix + ".md", "w") as f:
        f.write(text)
    with open(args.out + suffix + ".json", "w") as f:
        json.dump({"command": command, "quick": args.quick, "starts": args.starts, "max_steps": args.steps,
                   "token_window": TOKEN_WINDOW, "target_mre": TARGET_MRE, "backend": _jax.default_backend(),
                   "wall_seconds": t_wall, "cpu_seconds": t_cpu, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
