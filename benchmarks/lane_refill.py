"""Lane refill against the whole-batch engine loop, in one run (same machine, same load).

A batch whose members finish at different times pays, without refill, the slowest member's steps for every
member. With ``lanes=L`` the loop holds L members and a finished lane takes the next pending member
(:mod:`mixjax._engine`). For each setting: seconds of the fastest of ``--repeats`` identical calls after one that
compiles (the settings of a case take turns, so that the shared machine's load hits them alike), member steps (sum
and max), loop iterations (chunks of 10 steps), the lane efficiency ``sum(steps) / (lanes x iterations x 10)``
(lanes = B without refill), members whose status or step count differ from the whole-batch run, and the largest
difference of final objectives from it (absolute, and relative to the objective), and the largest relative
difference of a fit's best objective (the best of its starts: of all starts for a fit, of each resample's 2 starts
for a bootstrap). Case 1 also runs the whole-batch loop on chunks of 64 members (``chunk_size``, no refill): XLA's
float arithmetic depends slightly on the batch size, and a fit that has not settled amplifies it, so that row shows
how far batch size alone moves the results.

Cases: (1) capacity_noise on the SlimPajama 122M subset, 256 starts, default max_steps; (2) a bootstrap of the
same law, 128 resamples x 2 starts (the resample batch; the full-data fit of 16 starts runs as usual); (3)
power_linear on pile17_regmix1b (307 parameters), 32 starts, max_steps 1000: members finish at very different
times; (4) shukor_additive on the same data, 32 starts, max_steps 1000: every start runs to the step limit; (5)
the bootstrap of (2) with 512 resamples x 2 starts (1024 members: a batch much larger than the lanes).

    python benchmarks/lane_refill.py                 # all cases, float64
    python benchmarks/lane_refill.py --cases 1 --lanes 32 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 fits, the library default with 64-bit JAX

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax import fitting, internal, resampling  # noqa: E402
from mixjax.problem import summarize  # noqa: E402

CHUNK = 10  # engine steps per loop iteration (the engine's default)


class Counter:
    """Counts the engine's loop iterations of batches of ``size`` members (one report per iteration)."""

    def __init__(self, size: int):
        self.size, self.iterations = size, 0

    def __call__(self, steps, n_active, n_done):
        if n_active + n_done == self.size:
            self.iterations += 1


def timed(runs, sizes, repeats: int):
    """[(result, seconds, loop iterations)] of each ``run(counter)``: each is called once to compile, then all of them
    in turn ``repeats`` times (so that a change of the shared machine's load hits every setting alike); the fastest
    call of each is kept."""
    for run, size in zip(runs, sizes):
        run(Counter(size))
    best = [None] * len(runs)
    for _ in range(repeats):
        for i, (run, size) in enumerate(zip(runs, sizes)):
            counter = Counter(size)
            out, seconds = run(counter)
            if best[i] is None or seconds < best[i][1]:
                best[i] = (out, seconds, counter.iterations)
    return best


def fit_case(law, data, starts, max_steps, lanes, chunk_size=None):
    """The batch of :func:`mixjax.fit` (``starts`` random starts, seed 0), through :func:`mixjax.fitting.solve`."""
    cls = fitting.law_class(law)
    arrays, _ = fitting.prepare(cls, data, dtype="float64")
    batch = fitting.init_starts(cls, jax.random.PRNGKey(0), starts, summarize(arrays, data), "float64")
    W = jnp.ones((starts, data.n_rows))
    config = fitting.FitConfig(max_steps=max_steps, lanes=lanes)

    def run(counter):
        t0 = time.perf_counter()
        with internal.reporting(counter, every_loop=True):
            res = fitting.solve(batch, W, arrays, config, chunk_size=chunk_size)
            jax.block_until_ready(res.loss)
        return res, time.perf_counter() - t0

    return run


def bootstrap_case(law, data, resamples, starts, lanes):
    def run(counter):
        seen = []
        inner = resampling._solve_chunked

        def keep(*a, **k):  # the resample batch's per-member results (the bootstrap keeps only each resample's best)
            seen.append(inner(*a, **k))
            return seen[-1]

        resampling._solve_chunked = keep
        try:
            with internal.reporting(counter, every_loop=True):
                b = mj.bootstrap(law, data, resamples=resamples, starts=starts, seed=0, lanes=lanes)
        finally:
            resampling._solve_chunked = inner
        return seen[0], b.info["seconds_resamples"]

    return run


def row(case, B, lanes, res, seconds, iterations, ref, group):
    steps = np.asarray(res.num_steps)
    loss = np.asarray(res.loss)
    chunked = isinstance(lanes, tuple)
    used = lanes[1] if chunked else B if lanes is None or lanes >= B else lanes
    label = f"none, chunk_size {lanes[1]}" if chunked else "none" if lanes is None else lanes
    r = {
        "case": case, "lanes": label, "seconds": seconds, "sum_steps": int(steps.sum()),
        "max_steps": int(steps.max()), "iterations": iterations, "efficiency": steps.sum() / (used * iterations * CHUNK),
        "status_diff": 0, "steps_diff": 0, "loss_abs": 0.0, "loss_rel": 0.0, "best_rel": 0.0,
    }
    if ref is not None:
        ref_loss = np.asarray(ref.loss)
        r["status_diff"] = int(np.sum(np.asarray(res.status) != np.asarray(ref.status)))
        r["steps_diff"] = int(np.sum(steps != np.asarray(ref.num_steps)))
        both = np.isfinite(loss) & np.isfinite(ref_loss)
        d = np.abs(loss - ref_loss)[both]
        r["loss_abs"] = float(d.max(initial=0.0))
        r["loss_rel"] = float((d / np.abs(ref_loss[both])).max(initial=0.0))
        best = lambda x: np.nanmin(np.where(np.isfinite(x), x, np.nan).reshape(-1, group), axis=1)  # noqa: E731
        r["best_rel"] = float(np.nanmax(np.abs(best(loss) - best(ref_loss)) / np.abs(best(ref_loss))))
    return r


HEAD = ("| case | lanes | seconds | vs none | sum steps | max steps | iterations | efficiency | status / steps differ | "
        "max abs diff loss | max rel diff loss | best-start loss rel diff |")


def fmt(r, base):
    return (f"| {r['case']} | {r['lanes']} | {r['seconds']:.2f} | {r['seconds'] / base:.2f} | {r['sum_steps']} | {r['max_steps']} | "
            f"{r['iterations']} | {r['efficiency']:.2f} | {r['status_diff']} / {r['steps_diff']} | {r['loss_abs']:.2g} | "
            f"{r['loss_rel']:.2g} | {r['best_rel']:.2g} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--lanes", nargs="+", type=int, default=None, help="lane counts (default per case)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per setting (the fastest is kept)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "lane_refill.md"))
    args = p.parse_args(argv)

    slim = mj.load_dataset("slimpajama7").at_scale(122e6, 9.998e9)
    pile = mj.load_dataset("pile17_regmix1b")
    cases = {
        1: ("capacity_noise, slimpajama 122M, 256 starts", 256, [32, 64, 128],
            lambda L: fit_case("capacity_noise", slim, 256, None, L)),
        2: ("bootstrap capacity_noise, 128 resamples x 2 starts", 256, [32, 64, 128],
            lambda L: bootstrap_case("capacity_noise", slim, 128, 2, L)),
        3: ("power_linear, pile17_regmix1b, 32 starts, 1000 steps", 32, [8, 16],
            lambda L: fit_case("power_linear", pile, 32, 1000, L)),
        4: ("shukor_additive, pile17_regmix1b, 32 starts, 1000 steps", 32, [8, 16],
            lambda L: fit_case("shukor_additive", pile, 32, 1000, L)),
        5: ("bootstrap capacity_noise, 512 resamples x 2 starts", 1024, [128, 256, 512],
            lambda L: bootstrap_case("capacity_noise", slim, 512, 2, L)),
    }
    print(HEAD)
    print("|" + "---|" * (HEAD.count("|") - 1))
    lines = []
    for c in args.cases:
        name, B, default_lanes, make = cases[c]
        group = 2 if c in (2, 5) else B  # the starts of one fit: one resample's, or all
        ref, base = None, None
        settings = [None] + (args.lanes or default_lanes)
        if c == 1:  # the whole-batch loop on smaller batches: how far batch size alone moves the results
            settings.append(("chunk", 64))
        runs = [fit_case("capacity_noise", slim, 256, None, None, x[1]) if isinstance(x, tuple) else make(x) for x in settings]
        sizes = [x[1] if isinstance(x, tuple) else B for x in settings]
        for lanes, (res, seconds, iterations) in zip(settings, timed(runs, sizes, args.repeats)):
            r = row(name, B, lanes, res, seconds, iterations, ref, group)
            if ref is None:
                ref, base = res, seconds
            lines.append(fmt(r, base))
            print(lines[-1], flush=True)
    sep = "|" + "---|" * (HEAD.count("|") - 1)
    text = (
        f"# lane_refill ({jax.default_backend()}, {os.cpu_count()} cores), float64\n\n"
        f"Command: `python benchmarks/lane_refill.py`. Seconds: the fastest of {args.repeats} calls after one that compiles, the settings of a case taking turns; "
        "`vs none`: seconds over the whole-batch loop's (lanes none) in the same run. Efficiency: "
        "sum(steps) / (lanes x iterations x 10). Differences are against the whole-batch run of the same case.\n\n"
        + HEAD + "\n" + sep + "\n" + "\n".join(lines) + "\n"
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
