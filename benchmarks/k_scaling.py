"""How fits grow with the number of domains K: fit time and statuses of a law fitted to synthetic data drawn from
the law itself with known parameters, at K = 7, 17, 50, 100, 200, 400 domains and a fixed number of rows; then at
fixed K with a growing number of rows.

Data: ``rows / 6`` mixtures drawn from a flat Dirichlet over the K domains, each at 3 model sizes (100M, 300M,
900M parameters) x 2 token counts (2B, 8B); losses are the true law's, times ``1 + noise z`` (z standard normal,
``--noise`` 2e-3 by default; 0 gives noise-free data, whose best fit has a zero residual). The true capacity-noise
law has, per domain, b in U(0.2, 0.8), c in U(2, 6), A in U(0.3, 1), a in U(0.2, 0.5), E in U(0.8, 1.5) and
H = 20 / K (millions of parameters); other laws (``--law``) are drawn by their own ``init``.

Each fit is ``mixjax.fit(law, data, starts=16)`` with the default settings (float64, the default step limit).
Printed per K: wall time and CPU time of the process (first call, compilation included, and with ``--repeat`` a
second call of the same shapes); the ratio is of the first call's CPU time to the smallest K's (CPU time, since
wall time on a shared machine measures the other jobs too); the best start's status, the fraction of starts ``converged``, mean and largest steps, and the
parameter-recovery error (median and largest relative error of the exponents, c and H over domains).
``--baseline`` also fits with the L-BFGS of earlier releases (no diagonal scaling) in the same run, for ratios.
``--polish`` polishes each best start with scipy's L-BFGS-B (as ``status_check.py`` does) and prints
``J / J_polished - 1`` (0 or a few 1e-16: scipy found nothing lower).

    python benchmarks/k_scaling.py --quick            # K = 7, 17, 50; rows 150 and 600 at K = 17
    python benchmarks/k_scaling.py                    # K = 7 ... 400; rows 150 ... 1200 at K = 50
    python benchmarks/k_scaling.py --ks 100 --baseline --noise 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mixjax as mj  # noqa: E402
from mixjax.laws import DataSummary, get_law  # noqa: E402


def true_law(law: str, K: int, seed: int = 0):
    """The law the data are drawn from."""
    if law == "capacity_noise":
        r = np.random.default_rng(seed)
        return mj.CapacityNoiseLaw.from_params(b=r.uniform(0.2, 0.8, K), c=r.uniform(2, 6, K), A=r.uniform(0.3, 1.0, K),
                                               a=r.uniform(0.2, 0.5, K), E=r.uniform(0.8, 1.5, K), H=20.0 / K)
    cls = get_law(law)
    ones = np.ones(K)
    summary = DataSummary(K, K, 2.5 * ones, 3.5 * ones, 3.0 * ones, 300.0, 4.0, (100.0, 900.0), (2.0, 8.0))
    return cls.init(jax.random.PRNGKey(seed), summary)


def synthetic(law, K: int, rows: int, noise: float, seed: int = 1):
    """Rows of ``law`` at random mixtures (see the module docstring)."""
    r = np.random.default_rng(seed)
    h = r.dirichlet(np.ones(K), size=max(rows // 6, 1))
    grid = [(hh, N, D) for hh in h for N in (100.0, 300.0, 900.0) for D in (2.0, 8.0)]
    H, N, D = (np.array([g[i] for g in grid]) for i in range(3))
    y = np.asarray(law.predict(H, N, D))
    y = y * (1 + noise * r.standard_normal(y.shape))
    return mj.from_arrays(H, y, N * 1e6, D * 1e9, domains=[f"d{i}" for i in range(K)], name=f"synthetic K={K}")


def recovery(fitted, truth) -> tuple[float, float]:
    """Median and largest relative error of the nonlinear parameters (exponents, c, H) over domains."""
    got, want = fitted.params(), {k: np.asarray(v) for k, v in truth.params().items()}
    keys = [k for k in ("b", "c", "a", "H", "alpha", "beta") if k in want and k in got]
    if not keys:
        return float("nan"), float("nan")
    errs = np.concatenate([np.ravel(np.abs(np.asarray(got[k]) / want[k] - 1)) for k in keys])
    return float(np.median(errs)), float(np.max(errs))


#: The L-BFGS of earlier releases (a scalar initial inverse Hessian), passed as a solver object.
PREVIOUS_LBFGS = mj.LBFGS(diagonal=False)


def polish_gap(law: str, fitted, data) -> float:
    """J of the best start over what scipy's L-BFGS-B (float64, full parametrisation) reaches from it, minus 1."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from scipy_reference import scipy_fit  # tests/scipy_reference.py; needs scipy

    one = jax.tree_util.tree_map(lambda x: x[None] if isinstance(x, jax.Array) else x, fitted.law)
    _, polished, _ = scipy_fit(law, data, starts=1, start_laws=one)
    return fitted.loss / polished - 1


def one(law: str, truth, data, starts: int, repeat: bool, polish: bool = False, optimizer="lbfgs") -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    f = mj.fit(law, data, starts=starts, seed=0, throw=False, optimizer=optimizer)
    first, cpu = time.perf_counter() - t0, time.process_time() - c0
    second = cpu2 = float("nan")
    if repeat:
        t0, c0 = time.perf_counter(), time.process_time()
        f = mj.fit(law, data, starts=starts, seed=0, throw=False, optimizer=optimizer)
        second, cpu2 = time.perf_counter() - t0, time.process_time() - c0
    status, steps, loss = np.asarray(f.starts.status), np.asarray(f.starts.num_steps), np.asarray(f.starts.loss)
    med, worst = recovery(f, truth)
    gap = polish_gap(law, f, data) if polish else float("nan")
    return dict(first=first, second=second, cpu=cpu, cpu2=cpu2, gap=gap, best=f.status.name, conv=float(np.mean(status == int(mj.Status.converged))),
                steps_mean=float(steps.mean()), steps_max=int(steps.max()), loss=float(f.loss), med=med, worst=worst,
                P=f.n_params, max_steps=f.config.max_steps, near=float(np.mean(loss / loss.min() - 1 <= 1e-6)))


def show(label: str, r: dict, ref: float) -> None:
    print(f"{label:>16s} {r['P']:6d} {r['max_steps']:5d} {r['first']:8.1f} {r['second']:8.1f} {r['cpu']:7.1f} {r['cpu2']:7.1f} {r['cpu'] / ref:6.1f}x "
          f"{r['best']:>10s} {r['conv']:5.2f} {r['near']:5.2f} {r['steps_mean']:7.0f} {r['steps_max']:6d} {r['loss']:11.4e} "
          f"{r['med']:9.1e} {r['worst']:9.1e} {r['gap']:9.1e}", flush=True)


HEADER = (f"{'':>16s} {'params':>6s} {'limit':>5s} {'time s':>8s} {'again s':>8s} {'cpu s':>7s} {'again':>7s} {'ratio':>7s} {'best':>10s} {'conv':>5s} "
          f"{'near':>5s} {'steps':>7s} {'max':>6s} {'best J':>11s} {'med err':>9s} {'max err':>9s} {'polish':>9s}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--law", default="capacity_noise")
    p.add_argument("--ks", type=int, nargs="+", default=None)
    p.add_argument("--rows", type=int, default=300, help="rows at every K (default 300)")
    p.add_argument("--rows-k", type=int, default=None, help="K of the rows-growth table (default 50; 17 with --quick)")
    p.add_argument("--row-counts", type=int, nargs="*", default=None)
    p.add_argument("--starts", type=int, default=16)
    p.add_argument("--noise", type=float, default=2e-3)
    p.add_argument("--repeat", action="store_true", help="time a second call of the same shapes (no compilation)")
    p.add_argument("--baseline", action="store_true", help="also fit with the earlier L-BFGS, in the same run")
    p.add_argument("--polish", action="store_true", help="polish each best start with scipy L-BFGS-B; print J / J_polished - 1")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    ks = args.ks or ([7, 17, 50] if args.quick else [7, 17, 50, 100, 200, 400])
    rows_k = args.rows_k or (17 if args.quick else 50)
    row_counts = args.row_counts if args.row_counts is not None else ([150, 600] if args.quick else [150, 300, 600, 1200])
    print(f"law {args.law}, {args.starts} starts, noise {args.noise:g}, backend {jax.default_backend()}; conv: fraction of "
          "starts converged; near: fraction within 1e-6 of the best J; err: relative parameter error against the truth")
    variants = [("after", "lbfgs")] + ([("before", PREVIOUS_LBFGS)] if args.baseline else [])
    print(f"rows {args.rows}, K growing")
    print(HEADER)
    ref = {}
    for K in ks:
        truth = true_law(args.law, K)
        data = synthetic(truth, K, args.rows, args.noise)
        for name, solver in variants:
            r = one(args.law, truth, data, args.starts, args.repeat, args.polish, solver)
            ref.setdefault(name, r["cpu"])
            show(f"K={K} {name}", r, ref[name])
    if row_counts:
        print(f"K = {rows_k}, rows growing")
        print(HEADER)
        ref = {}
        truth = true_law(args.law, rows_k)
        for n in row_counts:
            data = synthetic(truth, rows_k, n, args.noise)
            for name, solver in variants:
                r = one(args.law, truth, data, args.starts, args.repeat, optimizer=solver)
                ref.setdefault(name, r["cpu"])
                show(f"rows={data.n_rows} {name}", r, ref[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
