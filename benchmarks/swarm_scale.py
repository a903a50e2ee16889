"""Swarm tables at scale: time and peak memory of fitting, comparing and optimizing on synthetic two-phase swarms
of K = 39, 64, 100, 400 domains and 200, 1000, 5000 runs, with the recovery of a known truth.

Data. A true exposure law over K domains x 2 phases (shares 0.8 / 0.2; 60M parameters, D = 1.2B tokens):

    x_k = d(e_k) (s_0 w_0k + beta s_1 w_1k),   L = E + exp(b - sum_k c_k x_k^alpha),

with alpha = 0.4, beta = 3, R* = 5, E = 2, c_k = (0.6 + 0.8 z_k) (K / 1.4)^(1 - alpha) / K (z_k standard normal,
so sum_k c_k x_k^alpha stays of order 1 at every K), b = 1. Each run draws w_0 and w_1 from Dirichlet(0.5); domain
k has U_k = (D / K) exp(0.5 + u_k) unique tokens (u_k standard normal), so that e_k = D (s_0 w_0k + s_1 w_1k) / U_k
exceeds 1 (the discount applies) in a part of the cells (reported). Losses are the truth plus Gaussian noise of
standard deviation ``NOISE`` (BPB-like units). The table is written as ``phase_<p>_<domain>`` columns and read with
``mixjax.load_phase_table`` (unique tokens attached), as a swarm's CSV is.

Tasks, each in its own fresh process (peak memory = that process's maximum resident set size, from ``os.wait4``;
the ``table`` task, which only imports mixjax and builds and loads the table, is the floor the others start from):

* ``fit_exposure``, ``fit_loglinear``: ``mixjax.fit(law, data, starts=16)``. Held-out recovery on 2000 fresh runs
  of the same design: RMSE of the prediction against the noise-free truth (``rmse_truth``; a right fit is well
  below ``NOISE``) and against noisy losses (``rmse_noisy``; the truth itself scores about ``NOISE``).
* ``step_cost``: the work of one solver step in isolation: value and gradient of the mean squared error over all
  rows for 16 parameter sets at once (``jax.jit(jax.vmap(jax.value_and_grad(...)))``, the shape of the fits'
  batched objective), exposure and log-linear laws; the fastest of 7 compiled calls (ms), which a shared machine
  perturbs least.
* ``optimize_steps``: where the phase optimum's time goes: the truth's law optimized as in ``optimize``, with the
  engine's loop steps counted (its ``every_loop`` reporting instrument): ``full``, 16 start mixtures and the
  default step limits (K <= 100); ``short``, 4 start mixtures and 10 steps per augmented-Lagrangian round, for the
  cost of one step at every K.
* ``compare``: ``mixjax.compare(data, ["exposure", "loglinear"], cv="mixtures:5", starts=8, workers=1)`` (the
  default starts of ``compare``; one law at a time, so that compiling and running do not overlap); its held-out
  RMSE per law.
* ``optimize``: the exposure law fitted by ``fit_exposure`` (same process) optimized per phase as ``mixjax
  optimize`` does on a phase table: a simplex per phase, repetition caps of 2 epochs at the training budget
  (the table's unique tokens), a KL penalty 0.05 to the natural mixture (unique tokens normalized), 16 start
  mixtures. Its time excludes the fit. Reported: caps active, largest epochs, and for K <= 100 the truth's
  penalized objective (loss + 0.05 KL) at the chosen mixture minus that at the truth's own optimum under the same
  constraints (``true_regret``; 0 for a perfect fit).

Times: ``compile_s`` is the tracing, lowering and XLA compilation inside the call (summed over JAX's compile
events); ``run_s`` is the wall time of the call minus ``compile_s``; ``wall_s`` the whole call; ``cpu_s_call`` the
CPU time of the process during the call (all threads: on a shared machine wall time also measures the other jobs,
CPU time less so). With ``--repeat`` a second call of the same shapes is timed as well (``second_s``: compiled).
The growth exponents are least-squares slopes of log time (or of memory above the ``table`` floor) against log K
(at each row count) and against log rows (at each K). ``--compare-starts`` sets the starts per fold of ``compare``.

    nice -n 10 python benchmarks/swarm_scale.py --quick                 # K = 39, 100 x rows 200, 1000
    nice -n 10 python benchmarks/swarm_scale.py                         # the full grid
    nice -n 10 python benchmarks/swarm_scale.py --ks 400 --rows 5000 --tasks fit_exposure
    python benchmarks/swarm_scale.py --report                           # tables and slopes of the stored results

Results accumulate (keyed by K, rows, task) in ``benchmarks/results/swarm_scale.json``; ``swarm_scale.md`` is
rewritten from all of them after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)
RESULTS = os.path.join(HERE, "results")
JSON_PATH = os.path.join(RESULTS, "swarm_scale.json")
MD_PATH = os.path.join(RESULTS, "swarm_scale.md")

KS = (39, 64, 100, 400)
ROWS = (200, 1000, 5000)
TASKS = ("table", "step_cost", "fit_exposure", "fit_loglinear", "compare", "optimize", "optimize_steps")
SHARES = (0.8, 0.2)
N_PARAMS = 60e6
D_TOKENS = 1.2e9
NOISE = 0.005
ALPHA, BETA, R_STAR, E_TRUE, B_TRUE = 0.4, 3.0, 5.0, 2.0, 1.0
DIRICHLET = 0.5
FIT_STARTS, COMPARE_STARTS, OPT_STARTS = 16, 8, 16
MAX_EPOCHS, KL_PENALTY = 2.0, 0.05
N_TEST = 2000
TRUTH_OPT_MAX_K = 100  # above this the truth's own optimum (for true_regret) is not searched: it costs as much again


# --------------------------------------------------------------------------- data
def design(K: int, rows: int, seed: int):
    """``(w (rows, 2, K), U (K,) raw unique tokens, c (K,))`` of the synthetic swarm (module docstring)."""
    r = np.random.default_rng([K, seed])
    c = (0.6 + 0.8 * r.standard_normal(K)) * (K / 1.4) ** (1 - ALPHA) / K
    U = D_TOKENS / K * np.exp(0.5 + r.standard_normal(K))
    rr = np.random.default_rng([K, rows, seed, 1])
    w = rr.dirichlet(np.full(K, DIRICHLET), size=(rows, 2))
    return w, U, c


def truth_law(K: int, U, c):
    """The true exposure law, bound to a K x 2 phase layout with unique tokens ``U``."""
    from mixjax.laws.exposure import ExposureLaw, bind_to_data

    cls = bind_to_data(ExposureLaw, [list(range(K)), list(range(K, 2 * K))], [u / 1e9 for u in U],
                       [f"d{k}" for k in range(K)], phases=("phase_0", "phase_1"), phase_shares=SHARES)
    return cls.from_params(E=[E_TRUE], b=[B_TRUE], c=c[None, :], alpha=ALPHA, beta=[BETA], r_star=R_STAR)


def flat(w):
    """``(n, 2K)`` stored mixtures ``h[p K + k] = s_p w_pk``."""
    return np.concatenate([SHARES[0] * w[:, 0], SHARES[1] * w[:, 1]], axis=1)


def true_losses(truth, w):
    h = flat(w)
    return np.asarray(truth.predict(h, N_PARAMS / 1e6, D_TOKENS / 1e9))[:, 0]


def make_table(K: int, rows: int, seed: int = 0):
    """(data loaded with ``load_phase_table``, truth, test mixtures (N_TEST, 2K), noise-free test losses, info)."""
    import pandas as pd

    import mixjax as mj

    w, U, c = design(K, rows, seed)
    truth = truth_law(K, U, c)
    y0 = true_losses(truth, w)
    y = y0 + NOISE * np.random.default_rng([K, rows, seed, 2]).standard_normal(rows)
    cols = {f"phase_{p}_d{k}": w[:, p, k] for p in range(2) for k in range(K)}
    df = pd.DataFrame({"run": [f"r{i}" for i in range(rows)], **cols, "loss": y})
    data = mj.load_phase_table(df, targets="loss", phase_shares=SHARES, unique_tokens={f"d{k}": U[k] for k in range(K)},
                               model_size=N_PARAMS, n_tokens=D_TOKENS, name=f"swarm K={K} rows={rows}")
    wt = np.random.default_rng([K, seed, 3]).dirichlet(np.full(K, DIRICHLET), size=(N_TEST, 2))
    yt = true_losses(truth, wt)
    epochs = D_TOKENS * (SHARES[0] * w[:, 0] + SHARES[1] * w[:, 1]) / U
    info = {"signal_std": float(np.std(y0)), "repeated_cells": float(np.mean(epochs > 1)), "max_epochs_in_table": float(epochs.max())}
    return data, truth, flat(wt), yt, info


# --------------------------------------------------------------------------- timing
class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling, summed from its monitoring events."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        from jax._src import monitoring

        self.total = {e: 0.0 for e in self.EVENTS}
        monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **_):
        if event in self.total:
            self.total[event] += duration

    def snapshot(self):
        return dict(self.total)


def timed(clock, fn):
    before = clock.snapshot()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    after = clock.snapshot()
    parts = {e.split("/")[-1].replace("_duration", ""): after[e] - before[e] for e in clock.EVENTS}
    comp = sum(parts.values())
    return out, {"wall_s": wall, "cpu_s_call": cpu, "compile_s": comp, "run_s": max(wall - comp, 0.0),
                 "trace_s": parts["jaxpr_trace"], "lower_s": parts["jaxpr_to_mlir_module"], "xla_s": parts["backend_compile"]}


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


# --------------------------------------------------------------------------- tasks (run in a child process)
def child(task: str, K: int, rows: int, repeat: bool, compare_starts: int = COMPARE_STARTS) -> dict:
    import warnings

    import jax

    jax.config.update("jax_enable_x64", True)
    import mixjax as mj

    warnings.simplefilter("ignore")
    clock = CompileClock()
    t = time.perf_counter()
    data, truth, ht, yt, info = make_table(K, rows)
    out = {"table_s": time.perf_counter() - t, **info}
    if task == "table":
        return out
    if task in ("fit_exposure", "fit_loglinear", "optimize"):
        law = "exposure" if task != "fit_loglinear" else "loglinear"
        fit, tm = timed(clock, lambda: mj.fit(law, data, starts=FIT_STARTS, seed=0))
        pred = np.asarray(fit.law.predict(ht, N_PARAMS / 1e6, D_TOKENS / 1e9))[:, 0]
        noisy = yt + NOISE * np.random.default_rng([K, 4]).standard_normal(yt.shape)
        rec = {"status": fit.status.name, "steps": int(fit.num_steps), "loop_steps": int(np.max(np.asarray(fit.starts.num_steps))),
               "n_params": int(fit.n_params),
               "rmse_truth": rmse(pred, yt), "rmse_noisy": rmse(pred, noisy), "train_rmse": rmse(fit.predict(data)[:, 0], data.losses[:, 0])}
        if law == "exposure":
            p = fit.params()
            rec.update(alpha=float(np.ravel(p["alpha"])[0]), beta=float(np.ravel(p["beta"])[0]), r_star=float(np.ravel(p["r_star"])[0]))
        if task != "optimize":
            out.update(tm, **rec)
            if repeat:
                _, t2 = timed(clock, lambda: mj.fit(law, data, starts=FIT_STARTS, seed=1))
                out["second_s"] = t2["wall_s"]
            return out
        out["fit"] = {**tm, **rec}
        U = np.asarray(data.unique_tokens) / 1e9
        kw = dict(n_tokens=D_TOKENS / 1e9, model_size=N_PARAMS / 1e6, unique_tokens=U, max_epochs=MAX_EPOCHS,
                  kl_penalty=KL_PENALTY, prior=U / U.sum(), starts=OPT_STARTS, seed=0)
        res, tm = timed(clock, lambda: mj.optimize_mixture(fit, **kw))
        out.update(tm)
        if repeat:
            _, t2 = timed(clock, lambda: mj.optimize_mixture(fit, **{**kw, "seed": 1}))
            out["second_s"] = t2["wall_s"]
        out.update(status=res.status.name, steps=int(res.num_steps), max_epochs=float(np.max(res.epochs)),
                   caps_active=int(np.sum(np.asarray(res.epochs) > MAX_EPOCHS * (1 - 1e-6))),
                   constraint_violation=float(res.constraint_violation or 0.0), kl_to_prior=float(res.kl_to_prior))
        if K > TRUTH_OPT_MAX_K:
            return out
        best, tt = timed(clock, lambda: mj.optimize_mixture(truth, domains=data.domains, phase_shares=SHARES, **kw))
        true_at = lambda r: float(np.asarray(truth.predict(np.asarray(r.mixture)[None], N_PARAMS / 1e6, D_TOKENS / 1e9))[0, 0])  # noqa: E731
        kl = lambda r: float(r.kl_to_prior)  # noqa: E731
        out.update(true_regret=(true_at(res) + KL_PENALTY * kl(res)) - (true_at(best) + KL_PENALTY * kl(best)),
                   truth_opt_wall_s=tt["wall_s"], truth_opt_status=best.status.name)
        return out
    if task == "step_cost":
        import equinox as eqx
        import jax.numpy as jnp

        from mixjax.laws.loglinear import LogLinearLaw

        H, y = jnp.asarray(data.mixtures), jnp.asarray(data.losses[:, 0])
        N, D = jnp.asarray(N_PARAMS / 1e6), jnp.asarray(D_TOKENS / 1e9)
        r = np.random.default_rng(5)
        loglin = LogLinearLaw.from_params(np.log([2.5]), 0.1 * r.standard_normal((1, 2 * K)))
        for name, law in (("exposure", truth), ("loglinear", loglin)):
            params, static = eqx.partition(law, eqx.is_inexact_array)
            batch = jax.tree_util.tree_map(lambda x: x + 0.01 * jnp.asarray(r.standard_normal((FIT_STARTS,) + x.shape)), params)

            def objective(p, static=static):
                lw = eqx.combine(p, static)
                return jnp.mean((jax.vmap(lambda h: lw(h, N, D)[0])(H) - y) ** 2)

            fn = jax.jit(jax.vmap(jax.value_and_grad(objective)))
            jax.block_until_ready(fn(batch))
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(batch))
                times.append(time.perf_counter() - t0)
            out[f"eval_ms_{name}"] = 1e3 * min(times)
        return out
    if task == "optimize_steps":
        from mixjax import internal

        U = np.asarray(data.unique_tokens) / 1e9
        base = dict(n_tokens=D_TOKENS / 1e9, model_size=N_PARAMS / 1e6, unique_tokens=U, max_epochs=MAX_EPOCHS,
                    kl_penalty=KL_PENALTY, prior=U / U.sum(), seed=0)
        probes = [("short", dict(starts=4, steps=10))] + ([("full", dict(starts=OPT_STARTS))] if K <= TRUTH_OPT_MAX_K else [])
        for label, kw in probes:
            count = {"steps": 0, "last": 0}

            def sink(steps, n_active, n_done, count=count):  # steps so far in the current loop; a new loop starts lower
                count["steps"] += steps - count["last"] if steps > count["last"] else steps
                count["last"] = steps

            with internal.reporting(sink, every_loop=True):
                res, tm = timed(clock, lambda kw=kw: mj.optimize_mixture(truth, domains=data.domains, phase_shares=SHARES, **base, **kw))
            out[label] = {**tm, "loop_steps": count["steps"], "ms_per_step": 1e3 * tm["run_s"] / max(count["steps"], 1),
                          "status": res.status.name, "max_epochs": float(np.max(res.epochs))}
        return out
    if task == "compare":
        comp, tm = timed(clock, lambda: mj.compare(data, ["exposure", "loglinear"], cv="mixtures:5", seed=0, starts=compare_starts,
                                                        workers=1))
        out.update(tm)
        for s in comp.scores:
            out[f"val_rmse_{s.law}"] = float(s.val_rmse)
            out[f"status_{s.law}"] = str(s.status)
        out["compare_starts"] = compare_starts
        return out
    raise ValueError(task)


# --------------------------------------------------------------------------- parent
def run_child(task: str, K: int, rows: int, repeat: bool, timeout: float, compare_starts: int = COMPARE_STARTS) -> dict:
    """Run one task in a fresh process; its result with ``peak_rss_mb`` (the child's maximum resident set)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, str(K), str(rows), path, "--compare-starts", str(compare_starts)] + (["--repeat"] if repeat else [])
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = t + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    proc.stderr.close()
    out = {"task": task, "K": K, "rows": rows, "process_s": time.perf_counter() - t, "peak_rss_mb": usage.ru_maxrss / 1024.0,
           "cpu_s": usage.ru_utime + usage.ru_stime}
    try:
        with open(path) as f:
            out.update(json.load(f))
    except (OSError, json.JSONDecodeError):
        out["error"] = ("timed out" if proc.returncode < 0 else f"exit {proc.returncode}") + ": " + " ".join(err.split())[-400:]
    finally:
        os.unlink(path)
    return out


def load_results() -> dict:
    if os.path.exists(JSON_PATH):
        with open(JSON_PATH) as f:
            return json.load(f)
    return {"runs": {}}


def slope(xs, ys):
    """Least-squares slope of log y against log x (None with fewer than 2 points)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def per_step(r: dict):
    """Milliseconds of running (compilation excluded) per step of the batched loop, which runs until the slowest of
    the 16 starts stops (fits only; the best start's steps where the loop's were not recorded)."""
    steps = r.get("loop_steps") or r.get("steps")
    if not r["task"].startswith("fit") or not steps or r.get("run_s") is None:
        return None
    return 1e3 * r["run_s"] / steps


def report(res: dict) -> str:
    runs = list(res["runs"].values())
    floor = {(r["K"], r["rows"]): r.get("peak_rss_mb") for r in runs if r["task"] == "table"}
    f = lambda v, s=".2f": "" if v is None else format(v, s)  # noqa: E731
    lines = [f"Noise sd {NOISE}; fit {FIT_STARTS} starts, compare {COMPARE_STARTS} starts per fold (5-fold CV by run), "
             f"optimize {OPT_STARTS} start mixtures (caps {MAX_EPOCHS:g} epochs at the training budget, KL penalty {KL_PENALTY}).", "",
             "| task | K | rows | params | wall s | compile s | run s | CPU s | steps (best / loop) | run ms / step | second call s | peak RSS MB | over table MB | status | recovery |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    order = {t: i for i, t in enumerate(TASKS)}
    for r in sorted(runs, key=lambda r: (order.get(r["task"], 9), r["K"], r["rows"])):
        if "error" in r:
            if "underdetermined" in r["error"] or "training cells in fold" in r["error"]:
                why = "refused: fewer (training) loss cells than parameters"
            elif r["error"].startswith("timed out"):
                why = f"stopped at the time limit, after {r['process_s']:.0f} s"
            else:
                why = r["error"][:80]
            lines.append(f"| {r['task']} | {r['K']} | {r['rows']} | | | | | | | | | {f(r['peak_rss_mb'], '.0f')} | | {why} | |")
            continue
        over = None if floor.get((r["K"], r["rows"])) is None or r["task"] == "table" else r["peak_rss_mb"] - floor[(r["K"], r["rows"])]
        if r["task"].startswith("fit"):
            rec = f"RMSE vs truth {r['rmse_truth']:.4f}, vs noisy {r['rmse_noisy']:.4f}"
        elif r["task"] == "step_cost":
            ns = 1e6 * r["eval_ms_exposure"] / (FIT_STARTS * r["rows"] * r["K"])
            rec = (f"objective + gradient of 16 starts: exposure {r['eval_ms_exposure']:.2f} ms ({ns:.0f} ns per start x row x "
                   f"domain), loglinear {r['eval_ms_loglinear']:.2f} ms")
        elif r["task"] == "optimize_steps":
            parts = [f"{lab}: {r[lab]['loop_steps']} loop steps, {r[lab]['ms_per_step']:.2f} ms per step, run {r[lab]['run_s']:.1f} s"
                     for lab in ("full", "short") if lab in r]
            rec = "; ".join(parts)
        elif r["task"] == "compare":
            rec = f"{r.get('compare_starts', COMPARE_STARTS)} starts per fold; CV RMSE exposure {r.get('val_rmse_exposure', float('nan')):.4f}, loglinear {r.get('val_rmse_loglinear', float('nan')):.4f}"
        elif r["task"] == "optimize":
            regret = "" if r.get("true_regret") is None else f"true regret {r['true_regret']:.2e}, "
            rec = (f"{regret}caps active {r['caps_active']}, max epochs {r['max_epochs']:.3f} "
                   f"(fit {r['fit']['wall_s']:.1f} s, RMSE vs truth {r['fit']['rmse_truth']:.4f})")
        else:
            rec = f"signal sd {r['signal_std']:.4f}, repeated cells {100 * r['repeated_cells']:.0f} %, load {r['table_s']:.2f} s"
        n_params = r.get("n_params", r.get("fit", {}).get("n_params"))
        wall = r.get("wall_s", r.get("process_s"))
        lines.append(f"| {r['task']} | {r['K']} | {r['rows']} | {n_params or ''} | {f(wall, '.2f')} | {f(r.get('compile_s'))} | "
                     f"{f(r.get('run_s'))} | {f(r.get('cpu_s_call'), '.1f')} | {r.get('steps', '')}{' / ' + str(r['loop_steps']) if r.get('loop_steps') else ''} | {f(per_step(r), '.1f')} | {f(r.get('second_s'))} | {f(r['peak_rss_mb'], '.0f')} | {f(over, '.0f')} | {r.get('status', '')} | {rec} |")
    lines += ["", "Growth exponents (least-squares slope of log quantity against log K at fixed rows, and against log rows at fixed K):", "",
              "| task | quantity | fixed | slope | points |", "|---|---|---|---:|---|"]
    for task in TASKS[1:]:
        rs = [r for r in runs if r["task"] == task and "error" not in r]
        qs = ("eval_ms_exposure", "eval_ms_loglinear") if task == "step_cost" else ("run_s", "cpu_s_call", "compile_s", "over_mb")
        for q in qs:
            def val(r, q=q):
                if q == "ms_per_step":
                    return per_step(r)
                if q == "over_mb":
                    fl = floor.get((r["K"], r["rows"]))
                    return None if fl is None else max(r["peak_rss_mb"] - fl, 1e-9)
                return r.get(q)
            for rows in sorted({r["rows"] for r in rs}):
                pts = sorted((r["K"], val(r)) for r in rs if r["rows"] == rows)
                s = slope(*zip(*pts)) if len(pts) > 1 else None
                if s is not None:
                    lines.append(f"| {task} | {q} | rows {rows} | {s:.2f} | K = {', '.join(str(p[0]) for p in pts)} |")
            for K in sorted({r["K"] for r in rs}):
                pts = sorted((r["rows"], val(r)) for r in rs if r["K"] == K)
                s = slope(*zip(*pts)) if len(pts) > 1 else None
                if s is not None:
                    lines.append(f"| {task} | {q} | K {K} | {s:.2f} | rows = {', '.join(str(p[0]) for p in pts)} |")
    return "\n".join(lines)


def write(res: dict) -> str:
    text = report(res)
    os.makedirs(RESULTS, exist_ok=True)
    with open(JSON_PATH, "w") as f:
        json.dump(res, f, indent=1)
    with open(MD_PATH, "w") as f:
        notes = "".join(f"\n\n{n}" for n in res.get("notes", []))
        f.write("# Swarm scale (benchmarks/swarm_scale.py)\n\n" + res.get("machine", "") + notes + "\n\n" + text + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=4, metavar=("TASK", "K", "ROWS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="K = 39, 100 x rows 200, 1000")
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS))
    ap.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--repeat", action="store_true", help="also time a second, compiled call")
    ap.add_argument("--compare-starts", type=int, default=COMPARE_STARTS, help=f"starts per fold of compare (default {COMPARE_STARTS})")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds one task may take (default 1200)")
    ap.add_argument("--report", action="store_true", help="print the stored results' tables and slopes only")
    args = ap.parse_args()
    if args.child:
        task, K, rows, out = args.child
        result = child(task, int(K), int(rows), args.repeat, args.compare_starts)
        with open(out, "w") as f:
            json.dump(result, f)
        return
    res = load_results()
    if args.report:
        print(write(res))
        return
    if args.quick:
        args.ks, args.rows = [39, 100], [200, 1000]
    import jax

    res["machine"] = (f"{platform.platform()}, {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()}), "
                      "float64; the cores are shared with other jobs (wall times vary; compare ratios and slopes)")
    for rows in sorted(args.rows):
        for K in sorted(args.ks):
            for task in [t for t in TASKS if t in args.tasks]:
                t0 = time.strftime("%H:%M:%S")
                r = run_child(task, K, rows, args.repeat, args.timeout, args.compare_starts)
                r["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
                load = os.getloadavg()[0]
                r["load_average"] = load
                machine = res["machine"]
                res = load_results()  # merge: another invocation may have written meanwhile
                res["machine"] = machine
                res["runs"][f"{task}/{K}/{rows}"] = r
                write(res)
                short = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if not isinstance(v, dict)}
                print(f"[{t0}] {json.dumps(short)}", flush=True)
    print(write(load_results()))


if __name__ == "__main__":
    main()
