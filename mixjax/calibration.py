"""How good the mixture mixjax picks will really be: a selection-aware estimate of its objective.

**The winner's curse.** A fitted law ``J_hat`` (the objective of its predicted losses at the target scale) is
minimized over the feasible mixtures (or over a pool of candidate mixtures), and its minimum ``J_hat(h_hat)`` is
reported as the loss the chosen mixture will reach. But ``h_hat`` is where the fitting errors happen to make the law
look best, so on average the law's true objective at its own pick is worse than predicted,

    E[J_hat(h_hat)] <= E[J(h_hat)]

(the optimizer's curse: Smith & Winkler, "The Optimizer's Curse", Management Science 2006; Olmix and Marin's swarms
report chosen optima that measure worse than predicted). The error is largest when many mixtures look nearly
equally good and the law has many parameters per run, as in swarms of 20-64 domains fitted with a log-linear law.

**Bootstrap estimate of the selection bias.** Each member b of a bootstrap ensemble (:func:`mixjax.bootstrap`)
plays the fitted law, and the full-data fit ``J_hat`` plays the truth: member b picks ``h_b = argmin J_b`` (by the
same search, from the same starts, under the same bounds) and claims ``J_b(h_b)``, while its pick is "really"
worth ``J_hat(h_b)``. With ``d_b = g(J_hat(h_b)) - g(J_b(h_b))`` (positive when member b flatters its own pick),

    calibrated  = g^-1( g(J_hat(h_hat)) + median_b d_b )
    interval    = g^-1( g(J_hat(h_hat)) + [q_(1-level)/2 (d), q_(1+level)/2 (d)] )

the selection-corrected estimate and the basic (pivotal) bootstrap interval of the law's objective at the mixture that
was picked (the pivot ``g(J_hat(h_hat)) - g(J(h_hat))`` imitated by ``g(J_b(h_b)) - g(J_hat(h_b))``; Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 10 and 13; the same correction as Tibshirani &
Tibshirani, "A bias correction for the minimum error rate in cross-validation", Ann. Appl. Stat. 2009), and
``optimism = calibrated - J_hat(h_hat)``. The median, not the mean, of ``d``: where the law has many parameters per
run (log-linear laws of swarms), a member whose fit runs away would dominate a mean, and the bootstrap of rows
inflates the members' spread when parameters are many for the rows (El Karoui & Purdom, "Can we trust the bootstrap
in high dimensions?", JMLR 2018), which the mean feels more than the median. On synthetic sweeps with a known truth
both overshoot, the mean more (``benchmarks/calibrated_optimum.py``): the calibrated value leans pessimistic there.
``g`` is the logarithm when the objective is positive at every pick
(``log_scale``, the default for losses and bits per byte: errors are compared as ratios, and the interval stays
positive), the identity otherwise. For contrast, ``fixed_interval`` is the ordinary percentile interval of
``J_b(h_hat)``, which treats the picked mixture as if it had been chosen before seeing the data, and
``MixtureEnsemble``'s ``objective_value_interval`` (the members' own minima ``J_b(h_b)``) is more optimistic still.

**Regret.** ``J_hat(h_b) - J_hat(h_hat) >= 0`` imitates ``J(h_hat) - min_h J(h)``, how much worse the pick is than
the best mixture: ``regret`` is its mean over the members and ``regret_hi`` its upper ``(1+level)/2`` quantile.

**One run's measurement.** A run trained at ``h_hat`` measures the law's objective plus the run's own noise and
the law's error at that mixture. ``run_interval`` adds, to each member's ``d_b``, its out-of-bag residuals
``g(J(y_i)) - g(J_b(h_i))`` over the training rows that member b did not see (the measured objective of row i
against member b's prediction there; rows missing a target, or with a weight below the law's ``min_weight``, are
left out), :data:`RESIDUAL_DRAWS` of them per member, drawn with replacement with the given ``seed``, and maps
the quantiles back with ``g^-1`` as above: an interval for what one run at the picked mixture will measure.
``run_noise`` is the root mean square of those residuals (relative, in log units, with ``log_scale``). Out-of-bag
residuals measure the noise and the law's misfit at mixtures like the measured ones, at the training rows' own
scales; they contain the member's own estimation error too, so the run interval leans wide.

**Beating a reference.** With a reference mixture r (the natural or proportional mixture a project would otherwise
train), ``p_beats_reference`` is the bootstrap estimate of the probability that a run at the pick measures a lower
objective than a run at r: each member's pick h_b, judged by the full-data fit (standing in for the truth), against
r judged the same way, with the noise of two independent runs,

    p = mean_b Phi( (g(J_hat(r)) - g(J_hat(h_b))) / (sqrt(2) run_noise) )

(an indicator ``g(J_hat(h_b)) < g(J_hat(r))`` without a run noise). ``nearest_measured_distance`` is the
total-variation distance from the pick to the nearest measured mixture: far from every run, the law itself, not
only its fit, is being trusted.

**Cross-validated selection optimism (the default with 20 or more usable runs).** The bootstrap takes the law's
form as true, so it misses the part of the optimism that is the law's misfit near the pick. Cross-validation sees
it: the distinct mixtures of the training table are dealt at random into k folds (``cv_folds``, default 5), M times
(``cv_repeats``, default 10; repeat r from ``numpy.random.default_rng([seed, 3, r])``), and all M k fits, each on
the other folds' rows, run in one batched solve (the bootstrap's starts per fit, start 0 warm from the full-data
fit). Fit f picks, among its held-out runs at each training scale, the ``cv_top`` (default 1) with the lowest
predicted objective, and records at each pick i, measured against predicted at the run's own scale,

    e_i = g(J(y_i)) - g(J_f(h_i))

The mean ``e_bar`` estimates how much worse a pick among runs like the measured ones measures than the law says,
misfit and run noise included (the noise averages out of the mean). With ``method == "cv"``:

    calibrated       = g^-1( g(J_hat(h_hat)) + e_bar )
    cv_run_interval  = g^-1( g(J_hat(h_hat)) + [e_(k_lo), e_(k_hi)] )   (split-conformal, :func:`conformal_interval`)
    run_interval     = g^-1( g(J_hat(h_hat)) + e_bar + [-hypot(e_bar - e_(k_lo), m_d - q_lo(d)),
                                                         +hypot(e_(k_hi) - e_bar, q_hi(d) - m_d)] )
    interval         = g^-1( g(calibrated) + [-hypot(m_d - q_lo(d), z se), +hypot(q_hi(d) - m_d, z se)] )

with ``k_lo = floor((m+1)(1-level)/2)``, ``k_hi = ceil((m+1)(1+level)/2)`` over the m picks (e sorted), ``m_d``,
``q_lo``, ``q_hi`` the median and ``(1 -/+ level)/2`` quantiles of the bootstrap's d (the spread of the full-data
fit's own selection error, which the folds' residuals do not carry), ``se = sd(e) / sqrt(distinct picked runs)``
and z the standard normal ``(1+level)/2`` quantile: each side of the run interval adds the conformal half-width of
the picks and the bootstrap's half-width in quadrature. The bootstrap values stay in ``bootstrap_calibrated``,
``bootstrap_interval`` and ``bootstrap_run_interval``. The residuals of repeated folds are not independent, so the
coverage is approximate; the conformal interval alone under-covered the replays of real sweeps, the combined one
less so (``benchmarks/calibrated_optimum.py``). With fewer than :data:`CV_MIN_ROWS` usable runs (or fewer than 10
distinct mixtures among them), or without the training rows (a bootstrap loaded from a file, no ``data=``), ``cv_folds="auto"`` keeps the bootstrap correction
(``method == "bootstrap"``). The picks are among held-out runs, so ``e_bar`` is the optimism of a pick among a pool
like one fold of the design: a pick among far more, or far more extreme, mixtures than were measured (a large pool,
the continuous optimum) can be more optimistic than it says; ``nearest_measured_distance`` tells how far the pick is.

**Phased tables.** A fit of a table with several training phases (columns ``<domain>@<phase>``, phase p's block
summing to its share) is calibrated over a pool of candidates (each row checked to give every phase its share);
its continuous per-phase optimum is not (a :class:`mixjax.PhasedMixtureError`).

**What the correction cannot see.** The bootstrap takes the law's form as true: when the law is wrong in a region
no run measured (an optimum at a vertex, far from every measured mixture, or at a far larger scale), the truth can
be worse than any bootstrap member says. The result carries the extrapolation report of :func:`mixjax.optimize_mixture`
(``point.coverage``) and the scale report; read ``calibrated`` together with them.

Units: objective values in the units of the predicted losses; scales in millions of parameters and billions of
tokens (the laws' units), or raw counts via ``raw_model_size`` / ``raw_n_tokens``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import MixtureData
from .design import check_candidates, objective_of_rows, predict_members
from .intervals import check_level, percentile_interval
from .laws._base import check_mixture_rows
from .mixture.spec import accepts_spec
from .mixture import (
    ExtrapolationWarning,
    MixtureEnsemble,
    MixtureResult,
    check_single_phase,
    optimize_mixture_ensemble,
)
from .mixture.coverage import measured_of, tv_distances
from .mixture.phases import phases_of
from .mixture.setup import problem_fields
from .fitting import best_of, init_starts, solve
from .problem import prepare, summarize
from .resampling import BootstrapResult
from .results import Status

__all__ = ["CalibratedOptimum", "calibrate_optimum", "conformal_interval", "RESIDUAL_DRAWS", "CV_MIN_ROWS"]

#: Out-of-bag residuals drawn (with replacement) per bootstrap member for the run interval.
RESIDUAL_DRAWS = 64
#: Fewer usable members than this: the interval's quantiles rest on too few values, and the result says so.
FEW_MEMBERS = 50
#: With ``cv_folds="auto"``, the cross-validated optimism is used when the table has at least this many usable rows.
CV_MIN_ROWS = 20
#: A pick farther than CV_REACH_FACTOR times the reach of the cross-validated picks (their largest TV distance to
#: their fold's training runs) from every measured run, and farther than CV_REACH_FLOOR, is warned about: the
#: correction was not estimated that far from the runs. (A pool of fresh random mixtures is typically 1-1.5 reaches
#: away; Olmix 22's optimum under ceilings of 0.25 is 3.4: benchmarks/optimum_identification.py.)
CV_REACH_FACTOR = 2.0
CV_REACH_FLOOR = 0.05


@dataclasses.dataclass
class CalibratedOptimum:
    """The picked mixture and an honest estimate of its objective (module docstring: the maths).

    Attributes:
      mixture: (K,) the picked mixture (the full-data fit's optimum, or its best candidate of a pool).
      predicted: the full-data fit's objective there, ``J_hat(h_hat)`` (what :func:`mixjax.optimize_mixture` reports).
      calibrated: the selection-corrected estimate of the law's objective at the pick (module docstring).
      optimism: ``calibrated - predicted``: how much the fit flatters its own pick, in objective units.
      interval: (lo, hi) selection-aware bootstrap interval of the law's objective at the pick.
      fixed_interval: (lo, hi) percentile interval of ``J_b(h_hat)``, as if the pick had been fixed in advance.
      run_interval: (lo, hi) interval of what one run at the pick will measure (None without residuals).
      run_noise: root mean square of the members' out-of-bag objective residuals (None without residuals); of the
        log residuals (a relative size: 0.01 is about 1 %) when ``log_scale``.
      log_scale: whether values were compared as ratios (logs) or differences (module docstring).
      regret, regret_hi: mean and upper quantile of ``J_hat(h_b) - J_hat(h_hat)`` (how much worse than the best).
      level: interval level; members, members_used: ensemble size and members with a usable pick.
      source: ``"optimum"`` (searched over the bounded simplex) or ``"pool"`` (best of given candidates);
      index: the pick's row in the given candidates (pool only).
      point: the full-data fit's :class:`mixjax.MixtureResult` (optimum only: bounds, coverage, scale report).
      member_mixtures (R, K), member_values ``J_b(h_b)``, point_at_members ``J_hat(h_b)``, members_at_pick
      ``J_b(h_hat)`` (R,), ok (R,): the per-member quantities, for inspection.
      residual_rows: rows with an out-of-bag residual for at least one member.
      nearest_measured_distance: total-variation distance ``0.5 sum_i |h_i - m_i|`` from the pick to the nearest
        measured training mixture (None when the training mixtures are not at hand).
      reference, reference_predicted, p_beats_reference: a reference mixture (given as ``reference=``), the full-data
        fit's objective there, and the probability that a run at the pick measures a lower objective than a run at
        the reference (module docstring).
      method: ``"cv"`` (``calibrated``, ``interval`` and ``run_interval`` with the cross-validated picks) or
        ``"bootstrap"``; bootstrap_calibrated, bootstrap_interval, bootstrap_run_interval: the bootstrap's own values.
      cv_optimism: ``g^-1(g(predicted) + e_bar) - predicted`` (objective units); cv_optimism_se: its standard error
        (objective units, to first order); cv_run_interval: the conformal run interval; cv_folds, cv_repeats,
        cv_picks (m), cv_rows (distinct runs picked), cv_residuals (m,) ``e_i`` and cv_law_residuals (m,)
        ``g(J_hat(h_i)) - g(J_f(h_i))`` (the full-data fit against the fold's fit at the picks), in g units;
        cv_reach: the largest TV distance from a cross-validated pick to the nearest training run of its fold (how
        far from the runs the correction was estimated; a pick more than twice as far from every run is warned about).
    """

    mixture: np.ndarray
    predicted: float
    optimism: float
    calibrated: float
    interval: tuple[float, float]
    fixed_interval: tuple[float, float]
    run_interval: tuple[float, float] | None
    run_noise: float | None
    regret: float
    regret_hi: float
    log_scale: bool
    level: float
    members: int
    members_used: int
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    objective: str
    model_size: float
    n_tokens: float
    source: str
    index: int | None
    point: MixtureResult | None
    member_mixtures: np.ndarray
    member_values: np.ndarray
    point_at_members: np.ndarray
    members_at_pick: np.ndarray
    ok: np.ndarray
    residual_rows: int = 0
    nearest_measured_distance: float | None = None
    reference: np.ndarray | None = None
    reference_predicted: float | None = None
    p_beats_reference: float | None = None
    method: str = "bootstrap"
    bootstrap_calibrated: float | None = None
    bootstrap_interval: tuple[float, float] | None = None
    bootstrap_run_interval: tuple[float, float] | None = None
    cv_optimism: float | None = None
    cv_optimism_se: float | None = None
    cv_run_interval: tuple[float, float] | None = None
    cv_folds: int = 0
    cv_repeats: int = 0
    cv_picks: int = 0
    cv_rows: int = 0
    cv_residuals: np.ndarray | None = None
    cv_law_residuals: np.ndarray | None = None
    cv_reach: float | None = None

    @property
    def beyond_reach(self) -> bool:
        """The cross-validated correction is used, and the pick lies farther from every measured run than
        CV_REACH_FACTOR times ``cv_reach`` (and than CV_REACH_FLOOR): the correction was not estimated that far."""
        return (self.method == "cv" and self.nearest_measured_distance is not None and self.cv_reach is not None
                and self.nearest_measured_distance > max(CV_REACH_FACTOR * self.cv_reach, CV_REACH_FLOOR))

    def notes(self) -> list[str]:
        """One line per caveat of this calibration, for people (warned by :func:`calibrate_optimum` too)."""
        if not self.beyond_reach:
            return []
        return [f"the pick lies at TV distance {self.nearest_measured_distance:.3g} from the nearest measured run, more than "
                f"{CV_REACH_FACTOR:g}x the {self.cv_reach:.3g} of any cross-validated pick from its fold's training runs: the "
                f"correction was not estimated that far, and calibrated ({self.calibrated:.6g}) rests on the law's form "
                "there (within_measured=True, or a pool of candidates near the runs)"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-member arrays)."""
        pair = lambda p: None if p is None else [float(p[0]), float(p[1])]  # noqa: E731
        return {
            "source": self.source,
            "index": self.index,
            "mixture": {d: float(x) for d, x in zip(self.domains, self.mixture)},
            "objective": self.objective,
            "predicted": float(self.predicted),
            "optimism": float(self.optimism),
            "log_scale": bool(self.log_scale),
            "calibrated": float(self.calibrated),
            "level": self.level,
            "interval": pair(self.interval),
            "fixed_mixture_interval": pair(self.fixed_interval),
            "run_interval": pair(self.run_interval),
            "run_noise": None if self.run_noise is None else float(self.run_noise),
            "residual_rows": int(self.residual_rows),
            "regret": float(self.regret),
            "regret_hi": float(self.regret_hi),
            "members": int(self.members),
            "members_used": int(self.members_used),
            "extrapolation": None if self.point is None else self.point.extrapolation,
            "nearest_measured_distance": None if self.nearest_measured_distance is None else float(self.nearest_measured_distance),
            "reference": None if self.reference is None else {d: float(x) for d, x in zip(self.domains, self.reference)},
            "reference_predicted": None if self.reference_predicted is None else float(self.reference_predicted),
            "p_beats_reference": None if self.p_beats_reference is None else float(self.p_beats_reference),
            "method": self.method,
            "bootstrap_calibrated": None if self.bootstrap_calibrated is None else float(self.bootstrap_calibrated),
            "bootstrap_interval": pair(self.bootstrap_interval),
            "bootstrap_run_interval": pair(self.bootstrap_run_interval),
            "cv_optimism": None if self.cv_optimism is None else float(self.cv_optimism),
            "cv_reach": None if self.cv_reach is None else float(self.cv_reach),
            "cv_optimism_se": None if self.cv_optimism_se is None else float(self.cv_optimism_se),
            "cv_run_interval": pair(self.cv_run_interval),
            "cv_folds": int(self.cv_folds),
            "cv_repeats": int(self.cv_repeats),
            "cv_picks": int(self.cv_picks),
            "cv_rows": int(self.cv_rows),
        }

    def __repr__(self) -> str:
        run = "" if self.run_interval is None else f", one run in [{self.run_interval[0]:.6g}, {self.run_interval[1]:.6g}]"
        return (f"CalibratedOptimum({self.objective}: predicted {self.predicted:.6g}, calibrated {self.calibrated:.6g} "
                f"(optimism {self.optimism:.3g}, {self.method}), {100 * self.level:g}% interval [{self.interval[0]:.6g}, {self.interval[1]:.6g}]"
                f"{run}; regret {self.regret:.3g}; {self.members_used} of {self.members} members, {self.source})")


@eqx.filter_jit
def _member_rows(laws, h, N, D, w, fn):
    """(R, n) objective of every member's prediction at every training row (each row at its own scale)."""
    return eqx.filter_vmap(lambda law: jax.vmap(lambda hr, Nr, Dr: fn(law(hr, Nr, Dr), w))(h, N, D))(laws)


def _table(boot: BootstrapResult, data: MixtureData | None, dtype) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``(arrays, y, h, rows)``: the training rows as the bootstrap fitted them (its zero-weight masking), their
    (n, V) measured losses (NaN where missing), (n, K) mixtures, and the rows usable as measurements of the
    objective (every target finite; every weight at least the law's ``min_weight``, when any row has that)."""
    cls = type(boot.point.law)
    if data is not None:
        data = data.align(boot.point.info["domains"], to=f"the fit of {cls.name}") if data.n_domains else data
        arrays, _ = prepare(cls, data, mask_zero_weight=boot.point.info.get("mask_zero_weight"), dtype=str(jnp.dtype(dtype)))
        _, y = prepare(cls, data, mask_zero_weight=False, dtype=str(jnp.dtype(dtype)))
        h = np.asarray(data.mixtures)
    elif boot.training_arrays is not None:
        arrays = boot.training_arrays
        y = np.where(np.asarray(arrays.mask), np.asarray(arrays.y, np.float64), np.nan)
        h = np.asarray(arrays.h, np.float64)
    else:
        raise ValueError("the run interval and the cross-validated optimism need the training rows: this bootstrap result "
                         "was loaded from a file, so pass data=")
    if np.asarray(boot.weights).shape[1] != y.shape[0]:
        raise ValueError(f"data has {y.shape[0]} rows; this bootstrap was drawn over {np.asarray(boot.weights).shape[1]}")
    rows = np.isfinite(y).all(axis=1)
    meaningful = rows & (h.min(axis=1, initial=1.0) >= cls.min_weight)
    if meaningful.any():
        rows = meaningful
    return arrays, y, h, rows


def _measured_objective(y: np.ndarray, rows: np.ndarray, fn, w, dtype) -> np.ndarray:
    """(n,) objective of each row's measured losses (meaningless outside ``rows``)."""
    if y.shape[1] != np.size(w):
        raise ValueError(f"data gives {y.shape[1]} loss columns; the law predicts {np.size(w)} targets")
    return np.asarray(objective_of_rows(jnp.asarray(np.where(rows[:, None], y, 1.0), dtype), jnp.asarray(w, dtype), fn), np.float64)


def _residuals(boot: BootstrapResult, table, fn, w, dtype, log_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(r, oob)``: (R, n) objective residuals ``J(y_i) - J_b(h_i)`` (of the logs with ``log_scale``) and the mask of
    usable out-of-bag cells."""
    arrays, y, _, rows = table
    W = np.asarray(boot.weights)
    J_obs = _measured_objective(y, rows, fn, w, dtype)
    J_pred = np.asarray(_member_rows(boot.laws, arrays.h, arrays.N, arrays.D, jnp.asarray(w, dtype), fn), np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(J_obs)[None, :] - np.log(J_pred) if log_scale else J_obs[None, :] - J_pred
    oob = (W == 0) & rows[None, :] & np.isfinite(r)
    return r, oob


def conformal_interval(residuals, level: float) -> tuple[float, float]:
    """Split-conformal interval of a new residual from m exchangeable ones: the ``k_lo``-th and ``k_hi``-th smallest,

        k_lo = floor((m + 1) (1 - level) / 2),    k_hi = ceil((m + 1) (1 + level) / 2)

    (1-based order statistics; each tail then holds at most ``(1 - level) / 2`` of the probability, so the interval
    covers at least ``level``: Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005; Lei et al.,
    "Distribution-free predictive inference for regression", JASA 2018). ``-inf`` / ``+inf`` where ``k_lo < 1`` /
    ``k_hi > m`` (too few residuals for the level: ``m >= 2 / (1 - level) - 1`` are needed)."""
    e = np.sort(np.asarray(residuals, np.float64).reshape(-1))
    e = e[np.isfinite(e)]
    m = e.size
    k_lo = math.floor((m + 1) * (1 - level) / 2 + 1e-9)
    k_hi = math.ceil((m + 1) * (1 + level) / 2 - 1e-9)
    return (float(e[k_lo - 1]) if k_lo >= 1 else -math.inf), (float(e[k_hi - 1]) if k_hi <= m else math.inf)


def _fold_tests(h: np.ndarray, folds: int, repeats: int, seed: int) -> np.ndarray:
    """(repeats * folds, n) held-out masks: the distinct mixtures dealt at random into ``folds`` folds, ``repeats``
    times (repeat r from ``numpy.random.default_rng([seed, 3, r])``); every row of a mixture on the same side."""
    _, group = np.unique(np.round(np.asarray(h, np.float64), 12), axis=0, return_inverse=True)
    group = np.asarray(group).reshape(-1)
    G = int(group.max()) + 1
    out = np.zeros((repeats * folds, group.size), bool)
    for r in range(repeats):
        fold_of = np.random.default_rng([int(seed), 3, r]).permutation(G) % folds
        for j in range(folds):
            out[r * folds + j] = fold_of[group] == j
    return out


def _cv_picks(boot: BootstrapResult, table, fn, w, dtype, f, folds: int, repeats: int, top: int, seed: int):
    """Cross-validated selection residuals (module docstring): ``(e, e0, picked_rows, fits_used, reach)``, where
    ``reach`` is the largest TV distance from a pick to the nearest training run of its fold.

    All ``repeats * folds`` fits run in one batched solve (:func:`mixjax.fitting.solve`) with 0/1 row weights, each
    with the bootstrap's starts per fit (start 0 warm from the full-data fit, the others drawn with ``seed``)."""
    arrays, y, h, rows = table
    point = boot.point
    config = point.config
    test = _fold_tests(h, folds, repeats, seed)
    F = test.shape[0]
    S = int(boot.record.starts or 2)
    summary = boot.record.summary if boot.record.summary is not None else summarize(arrays)
    key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), 3)
    batch = init_starts(point.law, key, F * S, summary, config.dtype)
    first = np.arange(F) * S  # every fit's start 0: the full-data fit
    batch = eqx.combine(
        jax.tree_util.tree_map(lambda s, p: s.at[first].set(p.astype(s.dtype)), eqx.filter(batch, eqx.is_array),
                               eqx.filter(point.law, eqx.is_array)),
        eqx.filter(batch, eqx.is_array, inverse=True))
    W = jnp.asarray(np.repeat(~test, S, axis=0), jnp.dtype(config.dtype))
    res = solve(batch, W, arrays, config)
    grouped = jax.tree_util.tree_map(lambda x: x.reshape((F, S) + x.shape[1:]) if eqx.is_array(x) else x, res)
    best, _ = best_of(grouped, axis=-1)
    fitted = np.asarray(best.status) != int(Status.nonfinite)
    P = np.asarray(_member_rows(best.law, arrays.h, arrays.N, arrays.D, jnp.asarray(w, dtype), fn), np.float64)
    J_obs = _measured_objective(y, rows, fn, w, dtype)
    _, scale = np.unique(np.stack([np.asarray(arrays.N, np.float64), np.asarray(arrays.D, np.float64)], 1), axis=0,
                         return_inverse=True)
    scale = np.asarray(scale).reshape(-1)
    point_law = jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, point.law)
    P0 = np.asarray(_member_rows(point_law, arrays.h, arrays.N, arrays.D, jnp.asarray(w, dtype), fn), np.float64)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        E = f(J_obs)[None, :] - f(P)  # (F, n) measured minus predicted, at each row's own scale
        E0 = f(P0)[None, :] - f(P)  # the full-data fit minus the fold's fit: the selection the law's form explains
    e, e0, picked, reach = [], [], [], 0.0
    flat_h = np.asarray(h, np.float64).reshape(h.shape[0], -1)
    for i in np.flatnonzero(fitted):
        train = flat_h[~test[i] & rows]  # the fold's training runs
        for s in np.unique(scale):
            cand = np.flatnonzero(test[i] & rows & (scale == s) & np.isfinite(E[i]))
            if cand.size <= top:  # no choice to make
                continue
            chosen = cand[np.argsort(P[i, cand], kind="stable")[:top]]
            e.extend(E[i, chosen].tolist())
            e0.extend(E0[i, chosen].tolist())
            picked.extend(chosen.tolist())
            if train.shape[0]:
                reach = max(reach, float(tv_distances(flat_h[chosen], train).min(axis=1).max()))
    return (np.asarray(e, np.float64), np.asarray(e0, np.float64), np.asarray(picked, np.int64), int(fitted.sum()),
            reach)


@accepts_spec
def calibrate_optimum(
    boot: BootstrapResult,
    *,
    candidates=None,
    reference=None,
    data: MixtureData | None = None,
    level: float | None = None,
    run_noise: bool = True,
    log_scale: bool | None = None,
    ensemble: MixtureEnsemble | None = None,
    model_size: float | None = None,
    n_tokens: float | None = None,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    starts: int = 8,
    seed: int = 0,
    steps: int = 3000,
    method: str = "mirror",
    step_size: float = 1.0,
    measured=None,
    within_measured: bool = False,
    check_fixed: bool = True,
    cv_folds: int | str | None = "auto",
    cv_repeats: int = 10,
    cv_top: int = 1,
) -> CalibratedOptimum:
    """The mixture a bootstrap's full-data fit picks, with a selection-aware estimate and interval of its objective.

    Args:
      boot: a :class:`mixjax.BootstrapResult` (its full-data fit picks; its members estimate the selection bias).
      reference: an optional (K,) mixture to beat (e.g. the natural or proportional mixture): the result then gives
        ``p_beats_reference`` (module docstring).
      candidates: ``None`` to search the bounded simplex (:func:`mixjax.optimize_mixture_ensemble`), or an (m, K)
        pool of allowed mixtures (e.g. runs that could be trained), of which each fit picks its best; candidates
        outside the floors and ceilings, or below the law's ``min_weight``, are left out with a warning.
      data: the training rows of ``boot`` (needed for ``run_interval`` only when ``boot`` was loaded from a file).
      level: interval level (default: the bootstrap's).
      run_noise: also form ``run_interval`` and ``run_noise`` from the members' out-of-bag residuals.
      log_scale: compare values as ratios (logs) rather than differences; default: ratios when the objective is
        positive at every pick (module docstring).
      ensemble: the :class:`mixjax.MixtureEnsemble` of ``boot`` at the same scale, objective and bounds, if already
        computed (it must carry the full-data optimum ``point``); otherwise it is computed here.
      model_size, n_tokens, ..., check_fixed: the scale, objective, bounds and search settings, as in
        :func:`mixjax.optimize_mixture_ensemble`; ``seed`` also draws the residuals of the run interval and the folds.
      cv_folds: folds of the cross-validated selection optimism (module docstring): ``"auto"`` (5 folds with at
        least :data:`CV_MIN_ROWS` usable runs of at least 10 distinct mixtures and the training rows at hand, else
        the bootstrap correction alone),
        an integer k >= 2 (at least two measured mixtures per fold), or 0 (off: the bootstrap correction).
      cv_repeats, cv_top: repeats of the k-fold split, and picks per fold and training scale.
    """
    if not isinstance(boot, BootstrapResult):
        raise TypeError(f"boot must be a mixjax.BootstrapResult (from mixjax.bootstrap), got {type(boot).__name__}")
    phases = _phases_of(boot)
    if phases is None or candidates is None:
        check_single_phase(boot, measured)  # a phased fit: a pool only (its continuous per-phase optimum is not calibrated)
    level = check_level(boot.level if level is None else level)
    info = boot.point.info
    if measured is None:
        measured = measured_of(boot)
    s = problem_fields(boot.laws, info.get("domains"), info.get("targets"), model_size, n_tokens, raw_model_size, raw_n_tokens, objective,
               target_weights, target, floors, ceilings, unique_tokens, max_epochs, method, steps, step_size, batched=True,
               measured=measured, within_measured=within_measured)
    dt, fn, w = s["dtype"], s["fn"], s["w"]
    R = boot.n_resamples
    ok = np.asarray(boot.ok).copy()
    point_law = jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, boot.point.law)
    point = index = None
    if candidates is None:
        if ensemble is None:
            ensemble = optimize_mixture_ensemble(
                boot, model_size=s["N"], n_tokens=s["D"], objective=objective, target_weights=target_weights, target=target,
                floors=s["lo"], ceilings=s["hi"], starts=starts, seed=seed, steps=steps, method=method, step_size=step_size,
                measured=s["H"], check_fixed=check_fixed)
        else:
            _check_ensemble(ensemble, R, s)
        point = ensemble.point
        pick = np.asarray(point.mixture, np.float64)
        H_members = np.asarray(ensemble.mixtures, np.float64)
        values = np.asarray(ensemble.values, np.float64)
        ok &= np.asarray(ensemble.ok)
        source = "optimum"
    else:
        H, dropped, below = check_candidates(candidates, s["K"], s["lo"], s["hi"], s["domains"], 0.0)
        if phases is not None:
            _check_phase_blocks(H, s["domains"], *phases, "candidate")
        if dropped + below:
            warnings.warn(f"{dropped + below} candidate(s) lie outside the floors and ceilings (the law's min_weight "
                          f"{type(boot.point.law).min_weight:g} included) and were left out", stacklevel=2)
        p = predict_members(point_law, H, s["N"], s["D"], w, fn, dt)[0]
        P = predict_members(boot.laws, H, s["N"], s["D"], w, fn, dt)
        if not np.isfinite(p).any():
            raise RuntimeError("the full-data fit predicts a non-finite objective at every candidate")
        j = int(np.argmin(np.where(np.isfinite(p), p, np.inf)))
        pick = H[j]
        Pm = np.where(np.isfinite(P) & np.isfinite(p)[None, :], P, np.inf)
        best = np.argmin(Pm, axis=1)
        H_members = H[best]
        values = Pm[np.arange(R), best]
        ok &= np.isfinite(values)
        index = int(np.flatnonzero(np.all(np.asarray(candidates, np.float64).reshape(-1, s["K"]) == pick, axis=1))[0])
        source = "pool"
    predicted = float(predict_members(point_law, pick[None], s["N"], s["D"], w, fn, dt)[0, 0])
    at_members = predict_members(point_law, H_members, s["N"], s["D"], w, fn, dt)[0]
    at_pick = predict_members(boot.laws, pick[None], s["N"], s["D"], w, fn, dt)[:, 0]
    ok &= np.isfinite(at_members) & np.isfinite(values) & np.isfinite(at_pick)
    if ok.sum() < 2:
        raise RuntimeError(f"only {int(ok.sum())} of {R} bootstrap members have a usable pick; the calibration needs at least 2")
    if ok.sum() < FEW_MEMBERS:
        warnings.warn(f"only {int(ok.sum())} bootstrap members have a usable pick: the interval's tails rest on few values "
                      f"(use {FEW_MEMBERS} or more resamples)", stacklevel=2)
    if log_scale is None:  # ratios for a positive objective (every loss, every bits-per-byte), differences otherwise
        log_scale = bool(predicted > 0 and (values[ok] > 0).all() and (at_members[ok] > 0).all())
    elif log_scale and not (predicted > 0 and (values[ok] > 0).all() and (at_members[ok] > 0).all()):
        raise ValueError("log_scale=True needs a positive objective; some member predicts a value <= 0 at a pick")
    f, inv = (np.log, np.exp) if log_scale else ((lambda x: x), (lambda x: x))
    d = (f(at_members) - f(values))[ok]
    lo, hi = percentile_interval(d, level)
    calibrated = float(inv(f(predicted) + np.median(d)))
    flo, fhi = percentile_interval(at_pick[ok], level)
    regret = (at_members - predicted)[ok]
    run_interval = noise = None
    rows_used = 0
    table = None
    if run_noise or cv_folds not in ("auto", 0, None, False):
        table = _table(boot, data, dt)
    elif cv_folds == "auto":
        table = _try_table(boot, data, dt)
    if run_noise:
        r, oob = _residuals(boot, table, fn, w, dt, log_scale)
        rng = np.random.default_rng([int(seed), 2])
        draws, resid = [], []
        for b in np.flatnonzero(ok):
            cand = r[b, oob[b]]
            if cand.size:
                picked = rng.choice(cand, size=RESIDUAL_DRAWS, replace=True)
                draws.append(f(at_members[b]) - f(values[b]) + picked)
                resid.append(picked)
        if draws:
            rl, rh = percentile_interval(np.concatenate(draws), level)
            run_interval = (float(inv(f(predicted) + rl)), float(inv(f(predicted) + rh)))
            noise = float(np.sqrt(np.mean(np.concatenate(resid) ** 2)))
            rows_used = int(oob.any(axis=0).sum())
    boot_calibrated, boot_interval = calibrated, (float(inv(f(predicted) + lo)), float(inv(f(predicted) + hi)))
    interval, boot_run_interval, method_used = boot_interval, run_interval, "bootstrap"
    cv = dict(cv_folds=0, cv_repeats=0)
    k = _cv_folds_of(cv_folds, cv_repeats, cv_top, table)
    if k:
        e, e0, picked, fits, reach = _cv_picks(boot, table, fn, w, dt, f, k, int(cv_repeats), int(cv_top), seed)
        if e.size < 2:
            warnings.warn(f"the cross-validated optimism rests on {e.size} pick(s); the bootstrap correction is reported",
                          stacklevel=2)
        else:
            e_bar = float(e.mean())
            distinct = int(np.unique(picked).size)
            se = float(e.std(ddof=1) / math.sqrt(distinct))
            clo, chi = conformal_interval(e, level)
            if not (math.isfinite(clo) and math.isfinite(chi)):
                warnings.warn(f"{e.size} cross-validated picks are too few for a {100 * level:g}% conformal interval; its "
                              "open ends are set to the extreme residuals (more cv_repeats, or a lower level)", stacklevel=2)
                clo, chi = (float(e.min()) if not math.isfinite(clo) else clo), (float(e.max()) if not math.isfinite(chi) else chi)
            calibrated = float(inv(f(predicted) + e_bar))
            z = statistics.NormalDist().inv_cdf((1 + level) / 2)
            med = float(np.median(d))
            wl, wh = math.hypot(med - lo, z * se), math.hypot(hi - med, z * se)
            interval = (float(inv(f(predicted) + e_bar - wl)), float(inv(f(predicted) + e_bar + wh)))
            cv_run = (float(inv(f(predicted) + clo)), float(inv(f(predicted) + chi)))
            rl, rh = e_bar - math.hypot(e_bar - clo, med - lo), e_bar + math.hypot(chi - e_bar, hi - med)
            run_interval, method_used = (float(inv(f(predicted) + rl)), float(inv(f(predicted) + rh))), "cv"
            cv = dict(cv_optimism=calibrated - predicted, cv_optimism_se=float(se * calibrated) if log_scale else se,
                      cv_run_interval=cv_run, cv_folds=k, cv_repeats=int(cv_repeats), cv_picks=int(e.size), cv_rows=distinct,
                      cv_residuals=e, cv_law_residuals=e0, cv_reach=reach)
    measured_h = data.mixtures if data is not None and data.n_domains else measured_of(boot)
    nearest = None
    if measured_h is not None and np.asarray(measured_h).shape[-1] == pick.shape[0]:
        nearest = float(tv_distances(pick[None], np.asarray(measured_h, np.float64)).min())
    ref = ref_value = p_beats = None
    if reference is not None:
        ref = np.asarray(reference, np.float64).reshape(-1)
        check_mixture_rows(ref[None], "reference", n_domains=s["K"])
        if phases is not None:
            _check_phase_blocks(ref[None], s["domains"], *phases, "reference")
        ref_value = float(predict_members(point_law, ref[None], s["N"], s["D"], w, fn, dt)[0, 0])
        if not np.isfinite(ref_value) or (log_scale and ref_value <= 0):
            raise ValueError(f"the full-data fit predicts {ref_value!r} at the reference mixture; it cannot be compared")
        gap = f(ref_value) - f(at_members[ok])  # > 0: member b's pick is better than the reference, judged by the fit
        spread = math.sqrt(2.0) * noise if noise else 0.0  # two independent runs, each with the run noise
        if spread > 0:
            p_beats = float(np.mean(0.5 * (1.0 + np.vectorize(math.erf)(gap / (spread * math.sqrt(2.0))))))
        else:
            p_beats = float(np.mean(gap > 0))
    result = CalibratedOptimum(
        nearest_measured_distance=nearest, reference=ref, reference_predicted=ref_value, p_beats_reference=p_beats,
        mixture=pick, predicted=predicted, optimism=calibrated - predicted, calibrated=calibrated, log_scale=log_scale,
        interval=interval, fixed_interval=(float(flo), float(fhi)), method=method_used, bootstrap_calibrated=boot_calibrated,
        bootstrap_interval=boot_interval, bootstrap_run_interval=boot_run_interval, **cv,
        run_interval=run_interval, run_noise=noise, regret=float(regret.mean()),
        regret_hi=float(np.quantile(regret, (1 + level) / 2)), level=level, members=R, members_used=int(ok.sum()),
        domains=s["domains"], targets=s["targets"], objective=s["desc"], model_size=s["N"], n_tokens=s["D"], source=source,
        index=index, point=point, member_mixtures=H_members, member_values=values, point_at_members=at_members,
        members_at_pick=at_pick, ok=ok, residual_rows=rows_used,
    )
    for line in result.notes():
        warnings.warn(line, ExtrapolationWarning, stacklevel=2)
    return result


def _phases_of(boot: BootstrapResult) -> tuple[list[str], np.ndarray] | None:
    """``(phases, shares)`` of a fit of a table with several training phases (None for one phase); a fit that
    records phases without a share for each is refused."""
    phases, shares = phases_of(boot)
    if phases is None:
        return None
    if shares is None or len(shares) != len(phases):
        raise ValueError(f"the fit records {len(phases)} training phases but no share for each; it cannot be calibrated")
    return [str(p) for p in phases], np.asarray(shares, np.float64)


def _check_phase_blocks(H: np.ndarray, domains, phases, shares, label: str, tol: float = 1e-6) -> None:
    """Every row of a phased pool gives phase p (columns ``<domain>@<p>``) the total weight ``share_p``."""
    of = np.array([str(d).rpartition("@")[2] for d in domains])
    for p, share in zip(phases, shares):
        cols = of == p
        if not cols.any():
            raise ValueError(f"no mixture column of phase {p!r} among the law's domains")
        total = H[:, cols].sum(axis=1)
        bad = np.flatnonzero(np.abs(total - share) > tol)
        if bad.size:
            raise ValueError(f"{label} row {bad[0]} gives phase {p!r} a total weight {total[bad[0]]:.9g}; a phased mixture gives "
                             f"each phase its share ({share:g}): columns <domain>@<phase> hold share x the phase's mixture")


def _try_table(boot: BootstrapResult, data: MixtureData | None, dtype):
    """The training rows (:func:`_table`), or None when they are not at hand."""
    return _table(boot, data, dtype) if (data is not None or boot.training_arrays is not None) else None


def _cv_folds_of(cv_folds, repeats, top, table) -> int:
    """The number of folds to use (0: no cross-validation), from ``cv_folds`` and the usable rows."""
    if cv_folds in (0, None, False):
        return 0
    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
        raise ValueError(f"cv_repeats must be a positive integer, got {repeats!r}")
    if isinstance(top, bool) or int(top) != top or top < 1:
        raise ValueError(f"cv_top must be a positive integer, got {top!r}")
    if cv_folds == "auto":
        if table is None or int(table[3].sum()) < CV_MIN_ROWS:
            return 0
        mixtures = np.unique(np.round(np.asarray(table[2], np.float64)[table[3]], 12), axis=0).shape[0]
        return 5 if mixtures >= 10 else 0
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, (int, np.integer)) or cv_folds < 2:
        raise ValueError(f"cv_folds must be 'auto', 0 (off) or an integer >= 2, got {cv_folds!r}")
    mixtures = np.unique(np.round(np.asarray(table[2], np.float64)[table[3]], 12), axis=0).shape[0]
    if mixtures < 2 * cv_folds:
        raise ValueError(f"cv_folds={cv_folds} needs at least {2 * cv_folds} measured mixtures (two per fold); the table has {mixtures}")
    return int(cv_folds)


def _check_ensemble(ens: MixtureEnsemble, R: int, s: dict) -> None:
    """A given ensemble must be this bootstrap's, at the same scale, objective and bounds, with its point optimum."""
    if not isinstance(ens, MixtureEnsemble):
        raise TypeError(f"ensemble must be a mixjax.MixtureEnsemble, got {type(ens).__name__}")
    if ens.point is None:
        raise ValueError("ensemble has no full-data optimum (point); compute it from the BootstrapResult itself")
    if ens.mixtures.shape[0] != R:
        raise ValueError(f"ensemble has {ens.mixtures.shape[0]} members; the bootstrap has {R}")
    same = (math.isclose(ens.model_size, s["N"], rel_tol=1e-12) and math.isclose(ens.n_tokens, s["D"], rel_tol=1e-12)
            and ens.objective == s["desc"] and np.allclose(ens.lower, s["lo"]) and np.allclose(ens.upper, s["hi"]))
    if not same:
        raise ValueError("ensemble was computed at another scale, objective or bounds than those given here")
