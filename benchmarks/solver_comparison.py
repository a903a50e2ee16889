"""Least-squares solvers (optimistix Levenberg-Marquardt, Dogleg, Gauss-Newton; the engine's own
Levenberg-Marquardt) against the engine's L-BFGS for the capacity-noise law, at equal fit quality.

Problems (mixjax.load_dataset("slimpajama7")):
  small: the 122M / 9.998e9-token subset split 80/20 by row (seed 0): 48 training rows (336 loss cells), held-out
         rows for MRE.
  big:   final checkpoints of 122M-937M (200 rows, 1400 cells); held out: the 1.235B final checkpoints (extrapolation
         in model size).

Every method starts from the SAME S starts, ``init_starts(CapacityNoiseLaw, PRNGKey(0), S, summarize(arrays,
train))``, and minimises the same objective, the masked MSE J = sum_cells m (pred - y)^2 / n_cells
(:func:`mixjax.fitting.objective_value`). The least-squares solvers see the residual vector

    r(theta) = where(mask, pred(theta) - y, 0) / sqrt(n_cells),   ||r||^2 = J,

inside one ``jax.jit`` of ``jax.vmap`` over starts of ``optx.least_squares(..., throw=False)``: over all 36
parameters (``levenberg_marquardt``, ``dogleg``, ``gauss_newton``), and over the 22 nonlinear ones with A and E
solved by variable projection inside the residual, with its full Jacobian (``lm_varpro``: the engine's own
residual, ``Problem.residuals`` with ``envelope_gradient=False``). The engine is ``mixjax.fit("capacity_noise", train,
starts=S, seed=0, max_steps=M)`` (variable projection; ``lbfgs``: L-BFGS with one trial point per step;
``engine_lm``: ``optimizer="lm"``, the engine's Levenberg-Marquardt with per-start damping). Each configuration (method, step budget) is compiled once; its first call
compiles and runs, two further calls only run: run = the faster of the two, compile = first - run. The machine
load (``uptime``) is recorded with every configuration: the CPU is shared, and load inflates every time.

    python benchmarks/solver_comparison.py            # full run (~15 min on a loaded 2-core CPU)
    python benchmarks/solver_comparison.py --quick    # small problem, one budget per method (~4 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax as _jax

_jax.config.update("jax_enable_x64", True)  # float64 fits

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optimistix as optx  # noqa: E402

import mixjax  # noqa: E402
from mixjax.fitting import FitConfig, init_starts, objective_value, prepare, summarize  # noqa: E402
from mixjax.internal import flat_residuals, optimised_spec  # noqa: E402
from mixjax.problem import Problem  # noqa: E402

LAW = mixjax.CapacityNoiseLaw
RTOL, ATOL = 1e-10, 1e-12  # optimistix Cauchy termination (step and objective change); the engine uses ftol 1e-10
SOLVERS = {
    "levenberg_marquardt": lambda: optx.LevenbergMarquardt(rtol=RTOL, atol=ATOL),
    "lm_varpro": lambda: optx.LevenbergMarquardt(rtol=RTOL, atol=ATOL),
    "dogleg": lambda: optx.Dogleg(rtol=RTOL, atol=ATOL),
    "gauss_newton": lambda: optx.GaussNewton(rtol=RTOL, atol=ATOL),
}
# (method, max_steps) per problem; "lbfgs" is the engine.
FULL = {
    "small": [("lbfgs", 100), ("lbfgs", 300), ("lbfgs", 500), ("lbfgs", 1000), ("engine_lm", 30), ("engine_lm", 100),
              ("lm_varpro", 30), ("lm_varpro", 100), ("levenberg_marquardt", 100), ("levenberg_marquardt", 300),
              ("dogleg", 100), ("gauss_newton", 100)],
    "big": [("lbfgs", 300), ("lbfgs", 500), ("lbfgs", 1000), ("engine_lm", 30), ("engine_lm", 100), ("lm_varpro", 30),
            ("lm_varpro", 100), ("levenberg_marquardt", 100)],
}
QUICK = {"small": [("lbfgs", 100), ("lbfgs", 500), ("engine_lm", 30), ("lm_varpro", 30), ("levenberg_marquardt", 30)]}
ENGINE = ("lbfgs", "engine_lm")
RESULT_NAMES = ("successful", "nonlinear_max_steps_reached", "nonlinear_divergence", "nonfinite", "nonfinite_input",
                "singular", "breakdown", "stagnation", "max_steps_reached", "conlim")  # optimistix / lineax outcomes
WITHIN = 0.01  # "near-best": objective within 1 % of the best any method reached on the problem


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def git_commit() -> str:
    try:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "mixjax"], capture_output=True, text=True).stdout.strip()
        return head + (" (mixjax/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def matched(rows):
    """For each least-squares configuration, the fastest engine configuration whose best J is at least as good."""
    out = []
    engine = [s for s in rows if s["method"] == "lbfgs" and s["best_objective"] is not None]
    for s in rows:
        if s["method"] == "lbfgs" or s["best_objective"] is None or s["best_objective"] > 1.0:
            continue
        ok = [e for e in engine if e["best_objective"] <= s["best_objective"]]
        e = min(ok, key=lambda e: e["run_s"]) if ok else None
        out.append({"method": s["method"], "max_steps": s["max_steps"], "run_s": s["run_s"], "best_objective": s["best_objective"],
                    "engine_max_steps": e and e["max_steps"], "engine_run_s": e and e["run_s"],
                    "engine_best_objective": e and e["best_objective"]})
    return out


def problems(names):
    sp = mixjax.load_dataset("slimpajama7")
    out = {}
    if "small" in names:
        train, val = sp.at_scale(122e6, 9.998e9).split_rows(0.2, seed=0)
        out["small"] = (train, val, "slimpajama7 122M / 9.998e9 tokens, 80/20 row split (seed 0); held out: the 20 % rows")
    if "big" in names:
        fc = sp.final_checkpoints()
        train = fc.subset(fc.model_size <= 937e6)
        val = fc.subset(np.isclose(fc.model_size, 1235e6))
        out["big"] = (train, val, "slimpajama7 final checkpoints 122M-937M; held out: the 1.235B final checkpoints")
    return out


def timed(fn):
    """(output, wall seconds); the process CPU seconds of the call are appended to CPU_SECONDS."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    CPU_SECONDS.append(time.process_time() - c0)
    return out, time.perf_counter() - t0


CPU_SECONDS: list[float] = []


def make_lsq(solver, max_steps, static, n_cells):
    """One jit-compiled, start-vmapped least-squares solve: (params batch, arrays) -> (params, J, steps, status)."""

    def residuals(p, arrays):
        law = eqx.combine(p, static)
        pred = jax.vmap(law)(arrays.h, arrays.N, arrays.D)
        return jnp.where(arrays.mask, pred - arrays.y, 0.0) / jnp.sqrt(n_cells)

    @jax.jit
    def run(p0, arrays):
        def one(p):
            sol = optx.least_squares(residuals, solver, p, args=arrays, max_steps=max_steps, throw=False)
            J = objective_value(eqx.combine(sol.value, static), arrays, jnp.ones(arrays.h.shape[0], arrays.y.dtype), FitConfig())
            code = jnp.argmax(jnp.stack([sol.result == getattr(optx.RESULTS, n) for n in RESULT_NAMES]))
            return sol.value, J, sol.stats["num_steps"], code

        return jax.vmap(one)(p0)

    return run


def make_lsq_varpro(solver, max_steps, starts, arrays):
    """As :func:`make_lsq`, over the nonlinear parameters only: the residual is the engine's variable-projection
    residual (A and E solved per domain inside it, differentiated through the solve). Returns (run, y0, complete)
    where complete(y) is the batch of full laws."""
    problem = dataclasses.replace(Problem.build(LAW, arrays), envelope_gradient=False)
    spec = optimised_spec(starts, True)
    y0 = jax.vmap(lambda t: jax.flatten_util.ravel_pytree(t)[0])(eqx.filter(starts, spec))
    template = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, starts)
    shared = (problem, template, optimised_spec(template, True))
    w = jnp.ones(arrays.h.shape[0], arrays.y.dtype)
    opt, rest = eqx.partition(template, shared[2])
    unravel = jax.flatten_util.ravel_pytree(opt)[1]

    def complete(y):
        return problem.complete(eqx.combine(unravel(y), rest), w)

    @jax.jit
    def run(y0, arrays_unused):
        def one(y):
            sol = optx.least_squares(lambda y, _: flat_residuals(y, w, shared), solver, y, max_steps=max_steps, throw=False)
            J = objective_value(complete(sol.value), arrays, w, FitConfig())
            code = jnp.argmax(jnp.stack([sol.result == getattr(optx.RESULTS, n) for n in RESULT_NAMES]))
            return sol.value, J, sol.stats["num_steps"], code

        return jax.vmap(one)(y0)

    return run, y0, jax.vmap(complete)


def run_config(method, max_steps, train, arrays, starts, S):
    """Compile + two runs of one configuration; returns the per-start objectives, laws, steps and timings."""
    load_before = uptime()
    CPU_SECONDS.clear()
    if method in ENGINE:
        optimizer = "lm" if method == "engine_lm" else "lbfgs"
        call = lambda: mixjax.fit("capacity_noise", train, starts=S, seed=0, max_steps=max_steps, optimizer=optimizer, throw=False)  # noqa: E731
        ts = []
        for _ in range(3):
            f, t = timed(call)
            ts.append((t, f.info["seconds"]))  # whole call, and the solve alone
        laws = f.starts.law
        obj = np.asarray(f.starts.loss)
        steps = np.asarray(f.starts.num_steps)
        status = [mixjax.results.Status(int(s)).name for s in np.asarray(f.starts.status)]
        # the solve alone (the engine's own timer) is what the least-squares calls are compared with
        first, runs = ts[0][1], [ts[1][1], ts[2][1]]
    else:
        if method == "lm_varpro":
            fn, p0, complete = make_lsq_varpro(SOLVERS[method](), max_steps, starts, arrays)
        else:
            p0, static = eqx.partition(starts, eqx.is_inexact_array)
            n_cells = int(np.asarray(arrays.mask).sum())
            fn = make_lsq(SOLVERS[method](), max_steps, static, n_cells)
            complete = lambda p: eqx.combine(p, static)  # noqa: E731
        times = []
        for _ in range(3):
            out, t = timed(lambda: fn(p0, arrays))
            times.append(t)
        p, J, st, res = out
        laws = complete(p)
        obj = np.asarray(J)
        steps = np.asarray(st)
        status = [RESULT_NAMES[int(r)] for r in np.asarray(res)]
        first, runs = times[0], times[1:]
    run_s = min(runs)
    cpu = CPU_SECONDS[1:]  # calls 2 and 3 (for the engine: the whole fit call)
    return {
        "cpu_s_runs": cpu,
        "method": method,
        "max_steps": max_steps,
        "compile_s": first - run_s,
        "run_s": run_s,
        "run_s_both": runs,
        "first_call_s": first,
        "objective": obj,
        "steps": steps,
        "status": status,
        "laws": laws,
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "fit": f if method in ENGINE else None,
    }


def summarize_config(r, best_any, wrapper, val):
    obj = np.where(np.isfinite(r["objective"]), r["objective"], np.inf)
    i = int(np.argmin(obj))
    best_law = jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, r["laws"])
    # evaluate the best start exactly as it is (a Fit wrapper whose law is replaced; no extra optimizer step)
    mre = dataclasses.replace(wrapper, law=best_law).evaluate(val)["mre"] if np.isfinite(obj[i]) else None
    uniq, counts = np.unique(r["status"], return_counts=True)
    return {
        "method": r["method"],
        "max_steps": r["max_steps"],
        "compile_s": r["compile_s"],
        "run_s": r["run_s"],
        "run_s_both": r["run_s_both"],
        "process_cpu_s_runs": r["cpu_s_runs"],
        "best_objective": float(obj[i]) if np.isfinite(obj[i]) else None,
        "median_objective": float(np.median(obj)) if np.isfinite(np.median(obj)) else None,
        "frac_within_1pct": float(np.mean(obj <= (1 + WITHIN) * best_any)),
        "heldout_mre_best": mre,
        "steps_median": float(np.median(r["steps"])),
        "steps_max": int(np.max(r["steps"])),
        "n_finite": int(np.isfinite(obj).sum()),
        "status": {str(k): int(c) for k, c in zip(uniq, counts)},
        "uptime_before": r["uptime_before"],
        "uptime_after": r["uptime_after"],
    }


def fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def table(rows):
    head = ("| method | max steps | compile s | run s | best J | median J | starts within 1 % | held-out MRE (best) | "
            "steps (median / max) | status |")
    lines = [head, "|" + "---|" * 10]
    for s in rows:
        lines.append(
            f"| {s['method']} | {s['max_steps']} | {fmt(s['compile_s'], '.1f')} | {fmt(s['run_s'], '.2f')} | "
            f"{fmt(s['best_objective'], '.6g')} | {fmt(s['median_objective'], '.4g')} | {s['frac_within_1pct']:.2f} | "
            f"{fmt(None if s['heldout_mre_best'] is None else 100 * s['heldout_mre_best'], '.4g')} % | {s['steps_median']:.0f} / {s['steps_max']} | "
            + ", ".join(f"{k} {v}" for k, v in s["status"].items()) + " |"
        )
    return "\n".join(lines)


def verdict(rows, best_any):
    """For each method, the fastest configuration whose best start is within 1 % of the best any method reached."""
    out = {}
    for m in dict.fromkeys(s["method"] for s in rows):
        ok = [s for s in rows if s["method"] == m and s["best_objective"] is not None and s["best_objective"] <= (1 + WITHIN) * best_any]
        if ok:
            s = min(ok, key=lambda s: s["run_s"])
            out[m] = {"max_steps": s["max_steps"], "run_s": s["run_s"], "compile_s": s["compile_s"],
                      "best_objective": s["best_objective"], "frac_within_1pct": s["frac_within_1pct"]}
        else:
            out[m] = None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small problem only, one short budget per method")
    p.add_argument("--starts", type=int, default=16)
    p.add_argument("--out", default=None, help="output path without extension (default benchmarks/results/solver_comparison[_quick])")
    p.add_argument("--report-only", action="store_true", help="rewrite the Markdown from the JSON of an earlier run")
    args = p.parse_args(argv)
    if args.report_only:
        path = args.out or os.path.join(os.path.dirname(__file__), "results", "solver_comparison" + ("_quick" if args.quick else ""))
        with open(path + ".json") as fh:
            res = json.load(fh)
        with open(path + ".md", "w") as fh:
            fh.write(report_md(res))
        print(report_md(res))
        return 0
    plan = QUICK if args.quick else FULL
    out_path = args.out or os.path.join(os.path.dirname(__file__), "results", "solver_comparison" + ("_quick" if args.quick else ""))
    S = args.starts
    t_start = time.perf_counter()
    result = {
        "settings": {"starts": S, "quick": args.quick, "optimistix_rtol": RTOL, "optimistix_atol": ATOL, "near_best": WITHIN,
                     "law": LAW.name, "dtype": "float64"},
        "versions": {"jax": jax.__version__, "optimistix": optx.__version__, "mixjax": getattr(mixjax, "__version__", "?")},
        "git_commit": git_commit(),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "uptime_start": uptime(),
        "problems": {},
    }
    print(f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, {result['uptime_start']}", flush=True)
    for name, (train, val, desc) in problems(plan).items():
        arrays, _ = prepare(LAW, train)
        starts = init_starts(LAW, jax.random.PRNGKey(0), S, summarize(arrays, train))
        n_cells = int(np.asarray(arrays.mask).sum())
        print(f"\n## {name}: {desc}; {train.n_rows} rows, {n_cells} cells, {val.n_rows} held-out rows, {S} starts", flush=True)
        raw = []
        for method, M in plan[name]:
            r = run_config(method, M, train, arrays, starts, S)
            fin = r["objective"][np.isfinite(r["objective"])]
            print(f"  {method:>20} M={M:<5} compile {r['compile_s']:6.1f} s  run {r['run_s']:7.2f} s  "
                  f"best J {fin.min() if fin.size else float('nan'):.6g}  [{r['uptime_before']}]", flush=True)
            raw.append(r)
        best_any = min(float(np.nanmin(np.where(np.isfinite(r["objective"]), r["objective"], np.nan))) for r in raw
                       if np.isfinite(r["objective"]).any())
        wrapper = next(r["fit"] for r in raw if r["fit"] is not None)  # an engine Fit on this data, to evaluate laws with
        rows = [summarize_config(r, best_any, wrapper, val) for r in raw]
        md = table(rows)
        print(md, flush=True)
        result["problems"][name] = {
            "description": desc, "train_rows": train.n_rows, "cells": n_cells, "heldout_rows": val.n_rows,
            "best_objective_any": best_any, "configs": rows, "fastest_near_best": verdict(rows, best_any),
            "matched_quality": matched(rows),
        }
    result["uptime_end"] = uptime()
    result["total_s"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path + ".json", "w") as fh:
        json.dump(result, fh, indent=1, allow_nan=False, default=lambda x: None)
    with open(out_path + ".md", "w") as fh:
        fh.write(report_md(result))
    print(f"\nwrote {out_path}.json and .md in {result['total_s']:.0f} s; {result['uptime_end']}")
    return 0


def report_md(res) -> str:
    lines = [
        "# Least-squares solvers vs the L-BFGS engine (capacity-noise law: 36 parameters, 22 under variable projection)",
        "",
        f"Command: `python benchmarks/solver_comparison.py{' --quick' if res['settings']['quick'] else ''}`. Backend "
        f"{res['backend']} ({res['device']}, {res['cpu_count']} CPUs, shared with other work), float64, "
        f"{res['settings']['starts']} starts (identical for every method), jax {res['versions']['jax']}, optimistix "
        f"{res['versions']['optimistix']}. Total {res['total_s']:.0f} s.",
        "",
        f"Machine load: start `{res['uptime_start']}`, end `{res['uptime_end']}` (every configuration's load is in the "
        "JSON). Times are wall seconds: run = the faster of two calls of the compiled program, compile = first call - "
        "run. J is the masked MSE; 'within 1 %' counts starts whose J is within 1 % of the best J any method reached "
        "on that problem. Engine times are its solve alone (`Fit.info['seconds']`).",
        "",
        f"optimistix solvers use rtol {res['settings']['optimistix_rtol']}, atol {res['settings']['optimistix_atol']} "
        "(Cauchy termination), `throw=False`, default linear solvers; statuses are optimistix RESULTS names "
        "(`nonlinear_max_steps_reached`: the budget ran out). Engine statuses are mixjax Status names.",
    ]
    for name, pr in res["problems"].items():
        lines += ["", f"## {name}: {pr['description']}", "",
                  f"{pr['train_rows']} training rows, {pr['cells']} loss cells, {pr['heldout_rows']} held-out rows; best J any "
                  f"method reached: {pr['best_objective_any']:.6g}.", "", table(pr["configs"]), "",
                  "Fastest configuration per method whose best start is within 1 % of the best J:", ""]
        for m, v in pr["fastest_near_best"].items():
            lines.append(f"- {m}: " + ("never, at the budgets tried" if v is None else
                         f"max_steps {v['max_steps']}: run {v['run_s']:.2f} s, compile {v['compile_s']:.1f} s, "
                         f"best J {v['best_objective']:.6g}, {v['frac_within_1pct']:.0%} of starts within 1 %"))
        lines += ["", "Matched quality (the fastest engine budget whose best J is at least as good as the solver's best J):", ""]
        for m in pr["matched_quality"]:
            lines.append(f"- {m['method']} {m['max_steps']} steps (J {m['best_objective']:.6g}, run {m['run_s']:.2f} s): " + (
                "no engine budget tried reaches it" if m["engine_run_s"] is None else
                f"engine {m['engine_max_steps']} steps (J {m['engine_best_objective']:.6g}) runs in {m['engine_run_s']:.2f} s, "
                + (f"{m['run_s'] / m['engine_run_s']:.1f}x faster than the solver" if m["engine_run_s"] <= m["run_s"] else
                 f"the solver is {m['engine_run_s'] / m['run_s']:.1f}x faster but its J is {m['best_objective'] / m['engine_best_objective']:.2f}x the engine's")))
    lines += ["", "## Verdict", "", verdict_text(res), "", NOTES, ""]
    return "\n".join(lines)


NOTES = """Compile times: the engine's step limit is an argument of its compiled program, not part of it, so one program
serves every engine budget on a problem and only the first engine configuration shows its compile time.

Contention: the CPU is shared with other guests; least-squares programs (a Jacobian and a QR per step) have
shown far larger swings under load than the engine's. The loads of every configuration are in the JSON; compare
times only within one run.

GPU (not measured here): every method is a vmapped loop whose per-step work is small (16 starts x at most 1400
cells x 36 parameters), so on a GPU each step is bound by kernel-launch latency rather than arithmetic. That
favours the methods with fewer, dearer steps (Levenberg-Marquardt's Jacobian columns and batched QR parallelise);
measure there before switching."""


def verdict_text(res) -> str:
    """Computed from the tables: per problem, the methods that reach the 1 % band, fastest first."""
    parts, engine_first = [], []
    for name, pr in res["problems"].items():
        f = {m: v for m, v in pr["fastest_near_best"].items() if v is not None}
        never = [m for m, v in pr["fastest_near_best"].items() if v is None]
        order = sorted(f, key=lambda m: f[m]["run_s"])
        engine_first.append(bool(order) and order[0] == "lbfgs")
        if order:
            best = f[order[0]]
            text = (f"**{name}**: fastest within 1 % of the best J: {order[0]} ({best['max_steps']} steps, run "
                    f"{best['run_s']:.2f} s)" + "".join(
                        f"; {m} {f[m]['run_s'] / best['run_s']:.1f}x slower ({f[m]['max_steps']} steps)" for m in order[1:]))
        else:
            text = f"**{name}**: no method reached the 1 % band"
        text += (f"; never within 1 % at the budgets tried: {', '.join(never)}." if never else ".")
        parts.append(text)
    head = ("**The engine's L-BFGS is the fastest method within 1 % of the best J on every problem** (CPU, float64)."
            if all(engine_first) else
            "**The engine's L-BFGS is not the fastest method within 1 % of the best J on every problem** (see below).")
    return "\n\n".join([head] + parts)


if __name__ == "__main__":
    raise SystemExit(main())
