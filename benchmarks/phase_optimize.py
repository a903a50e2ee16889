"""Optimizing a phased mixture (a simplex per training phase) with repetition caps, a KL penalty or bound to the natural
mixture, and a trust region around the measured runs.

marin2phase (39 domains x 2 phases, shares 0.8 / 0.2), log-linear law fitted on all 193 runs: time of each optimize
call (first call: tracing and compiling included; second call: compiled), against the single-phase optimize of a
problem of the same size (the same law read as one simplex over the 78 columns) in the same run; the chosen
mixture's objective, its KL to the natural mixture (unique tokens normalized), its largest epoch count at the target
budget (1T tokens, the Olmix configuration's) and its distance to the nearest measured run. Then a synthetic
log-linear law over 400 domains x 2 phases: time and peak memory (resident set size of the process).

    python benchmarks/phase_optimize.py            # writes benchmarks/results/phase_optimize.json
    python benchmarks/phase_optimize.py --quick    # marin2phase only
    python benchmarks/phase_optimize.py --synthetic-only   # the 400 x 2 problem only (added to the same JSON)
"""

import argparse
import json
import os
import resource
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.laws.loglinear import LogLinearLaw  # noqa: E402

TOKENS = 1000.0  # billions: the target budget of the caps (1T, as in the Olmix configuration)
EPOCHS = 4.0  # the Olmix configuration's repetition factor


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_CPU = {}  # CPU seconds (this process, all threads) of the last timed call


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _CPU["last"] = time.process_time() - c
    return out, time.perf_counter() - t


def row(label, first, second, base, res):
    ep = None if res.epochs is None else float(res.epochs.max())
    return {
        "case": label, "first_s": round(first, 3), "second_s": round(second, 4), "second_vs_single_phase": round(second / base, 2),
        "objective": float(res.value), "kl_to_natural": None if res.kl_to_prior is None else float(res.kl_to_prior),
        "max_epochs": ep, "nearest_measured_tv": res.nearest_measured_distance, "status": res.status.name,
        "constraint_violation": res.constraint_violation,
    }


def marin(starts: int):
    data = mj.load_dataset("marin2phase")
    fit = mj.fit("loglinear", data, starts=4, seed=0)
    natural = np.asarray(data.unique_tokens) / np.sum(data.unique_tokens)
    rows = []
    # the baseline: the same law on one simplex over the 78 columns (the pre-existing single-phase optimizer)
    single = lambda: mj.optimize_mixture(fit.law, starts=starts, check_fixed=False)  # noqa: E731
    _, b1 = timed(single)
    _, base = timed(single)
    cbase = _CPU["last"]
    rows.append({"case": "single phase, same size (78 columns, baseline)", "first_s": round(b1, 3), "second_s": round(base, 4),
                 "second_cpu_s": round(cbase, 4), "second_vs_single_phase": 1.0})
    cases = [
        ("phased, no caps, no KL", dict()),
        ("phased, caps (4 epochs at 1T)", dict(max_epochs=EPOCHS, n_tokens=TOKENS)),
        ("phased, KL penalty 0.05", dict(kl_penalty=0.05)),
        ("phased, caps + KL penalty 0.05", dict(max_epochs=EPOCHS, n_tokens=TOKENS, kl_penalty=0.05)),
        ("phased, caps + KL bound 0.5", dict(max_epochs=EPOCHS, n_tokens=TOKENS, max_kl=0.5)),
        ("phased, caps + KL penalty 0.05 + trust radius 0.3", dict(max_epochs=EPOCHS, n_tokens=TOKENS, kl_penalty=0.05, trust_radius=0.3)),
    ]
    for label, kw in cases:
        call = lambda: mj.optimize_mixture(fit, measured=data, starts=starts, **kw)  # noqa: E731
        res, first = timed(call)
        c1 = _CPU["last"]
        res, second = timed(call)
        r = row(label, first, second, base, res)
        r.update(first_cpu_s=round(c1, 3), second_cpu_s=round(_CPU["last"], 4), second_cpu_vs_single_phase=round(_CPU["last"] / cbase, 2),
                 num_steps=res.num_steps)
        if r["kl_to_natural"] is None:  # report the KL to the natural mixture for every case
            z = res.phase_mixtures
            r["kl_to_natural"] = float(np.sum(res.problem.shares[:, None] * np.where(z > 0, z * np.log(np.maximum(z, 1e-300) / natural), 0.0)))
        if r["max_epochs"] is None:
            frac = res.phase_mixtures.T @ res.problem.shares
            r["max_epochs"] = float(np.max(TOKENS * 1e9 * frac / np.asarray(data.unique_tokens)))
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)
    return rows


def synthetic(K: int, starts: int):
    rng = np.random.default_rng(0)
    P = 2
    names = [f"d{k}@p{p}" for p in range(P) for k in range(K)]
    law = LogLinearLaw.from_params(np.array([0.0]), rng.normal(scale=0.5, size=(1, P * K)))
    U = rng.lognormal(mean=np.log(20.0), sigma=1.0, size=K)  # billions of unique tokens
    natural = U / U.sum()
    out = []
    single = lambda: mj.optimize_mixture(law, starts=starts, check_fixed=False)  # noqa: E731
    r0 = rss_mb()
    _, b1 = timed(single)
    c1 = _CPU["last"]
    _, base = timed(single)
    cbase = _CPU["last"]
    out.append({"case": f"single phase, {P * K} columns (baseline)", "first_s": round(b1, 3), "second_s": round(base, 4),
                "first_cpu_s": round(c1, 3), "second_cpu_s": round(cbase, 4), "peak_rss_mb": round(rss_mb(), 1)})
    tokens = 0.5 * EPOCHS * U.sum()  # the caps bind: at most 2x the tokens the caps allow in all
    for label, kw in [("phased, KL penalty 0.05", dict(kl_penalty=0.05, prior=natural)),
                      ("phased, caps + KL penalty 0.05", dict(kl_penalty=0.05, prior=natural, unique_tokens=U, max_epochs=EPOCHS,
                                                              n_tokens=float(tokens)))]:
        call = lambda: mj.optimize_mixture(law, domains=names, phase_shares=[0.8, 0.2], starts=starts, **kw)  # noqa: E731
        res, first = timed(call)
        c1 = _CPU["last"]
        res, second = timed(call)
        c2 = _CPU["last"]
        out.append({"case": f"{label}, {K} x {P}", "first_s": round(first, 3), "second_s": round(second, 4),
                    "second_vs_single_phase": round(second / base, 2), "first_cpu_s": round(c1, 3), "second_cpu_s": round(c2, 4),
                    "second_cpu_vs_single_phase": round(c2 / cbase, 2), "objective": float(res.value),
                    "penalized_objective": res.penalized_value, "num_steps": res.num_steps, "peak_rss_mb": round(rss_mb(), 1),
                    "max_epochs": None if res.epochs is None else float(res.epochs.max()), "kl_to_prior": res.kl_to_prior,
                    "constraint_violation": res.constraint_violation, "status": res.status.name})
        print(json.dumps(out[-1]), file=sys.stderr)
    out.append({"case": "process peak RSS before the synthetic runs", "peak_rss_mb": round(r0, 1)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="marin2phase only")
    ap.add_argument("--synthetic-only", action="store_true", help="the 400 x 2 synthetic problem only")
    ap.add_argument("--starts", type=int, default=8, help="start mixtures on marin2phase (default 8)")
    ap.add_argument("--synthetic-starts", type=int, default=2, help="start mixtures on the synthetic problem (default 2)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    out = {"machine": f"{os.cpu_count()} CPU cores, {jax.default_backend()}", "starts": args.starts}
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", "phase_optimize" + ("_quick" if args.quick else "") + ".json")
    if os.path.exists(path):
        with open(path) as f:
            out = {**json.load(f), **out}
    if not args.synthetic_only:
        out["marin2phase"] = marin(args.starts)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    if not args.quick:
        out["synthetic_starts"] = args.synthetic_starts
        out["synthetic_400x2"] = synthetic(400, args.synthetic_starts)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("| case | first call s | second call s | second / single phase | objective | KL to natural | max epochs | nearest measured TV |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out.get("marin2phase", []):
        f = lambda k, fmt="{:.4g}": "" if r.get(k) is None else fmt.format(r[k])  # noqa: E731
        print(f"| {r['case']} | {f('first_s', '{:.1f}')} | {f('second_s', '{:.3f}')} | {f('second_vs_single_phase', '{:.2f}')} | "
              f"{f('objective', '{:.5f}')} | {f('kl_to_natural', '{:.3f}')} | {f('max_epochs', '{:.2f}')} | {f('nearest_measured_tv', '{:.3f}')} |")
    for r in out.get("synthetic_400x2", []):
        print(json.dumps(r))
    print(f"written {path}")


if __name__ == "__main__":
    main()
