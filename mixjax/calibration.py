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
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import MixtureData
from .design import _check_candidates, _objective_of_rows, _predict_members
from .intervals import check_level, percentile_interval
from .laws._base import check_mixture_rows
from .mixture import (
    MixtureEnsemble,
    MixtureResult,
    _measured_of,
    _setup,
    _tv_to_set,
    check_single_phase,
    optimize_mixture_ensemble,
)
from .problem import prepare
from .resampling import BootstrapResult

__all__ = ["CalibratedOptimum", "calibrate_optimum", "RESIDUAL_DRAWS"]

#: Out-of-bag residuals drawn (with replacement) per bootstrap member for the run interval.
RESIDUAL_DRAWS = 64
#: Fewer usable members than this: the interval's quantiles rest on too few values, and the result says so.
FEW_MEMBERS = 50


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
        }

    def __repr__(self) -> str:
        run = "" if self.run_interval is None else f", one run in [{self.run_interval[0]:.6g}, {self.run_interval[1]:.6g}]"
        return (f"CalibratedOptimum({self.objective}: predicted {self.predicted:.6g}, calibrated {self.calibrated:.6g} "
                f"(optimism {self.optimism:.3g}), {100 * self.level:g}% interval [{self.interval[0]:.6g}, {self.interval[1]:.6g}]"
                f"{run}; regret {self.regret:.3g}; {self.members_used} of {self.members} members, {self.source})")


@eqx.filter_jit
def _member_rows(laws, h, N, D, w, fn):
    """(R, n) objective of every member's prediction at every training row (each row at its own scale)."""
    return eqx.filter_vmap(lambda law: jax.vmap(lambda hr, Nr, Dr: fn(law(hr, Nr, Dr), w))(h, N, D))(laws)


def _residuals(boot: BootstrapResult, data: MixtureData | None, fn, w, dtype, log_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(r, oob)``: (R, n) objective residuals ``J(y_i) - J_b(h_i)`` (of the logs with ``log_scale``) and the mask of
    usable out-of-bag cells."""
    cls = type(boot.point.law)
    if data is not None:
        data = data.align(boot.point.info["domains"], to=f"the fit of {cls.name}") if data.n_domains else data
        arrays, y = prepare(cls, data, mask_zero_weight=False, dtype=str(jnp.dtype(dtype)))
        h = np.asarray(data.mixtures)
    elif boot._arrays is not None:
        arrays = boot._arrays
        y = np.where(np.asarray(arrays.mask), np.asarray(arrays.y, np.float64), np.nan)
        h = np.asarray(arrays.h, np.float64)
    else:
        raise ValueError("the run interval needs the training rows: this bootstrap result was loaded from a file, so pass data=")
    W = np.asarray(boot.weights)
    if W.shape[1] != y.shape[0]:
        raise ValueError(f"data has {y.shape[0]} rows; this bootstrap was drawn over {W.shape[1]}")
    if y.shape[1] != np.size(w):
        raise ValueError(f"data gives {y.shape[1]} loss columns; the law predicts {np.size(w)} targets")
    rows = np.isfinite(y).all(axis=1)
    meaningful = rows & (h.min(axis=1, initial=1.0) >= cls.min_weight)
    if meaningful.any():
        rows = meaningful
    J_obs = np.asarray(_objective_of_rows(jnp.asarray(np.where(rows[:, None], y, 1.0), dtype), jnp.asarray(w, dtype), fn), np.float64)
    J_pred = np.asarray(_member_rows(boot.laws, arrays.h, arrays.N, arrays.D, jnp.asarray(w, dtype), fn), np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(J_obs)[None, :] - np.log(J_pred) if log_scale else J_obs[None, :] - J_pred
    oob = (W == 0) & rows[None, :] & np.isfinite(r)
    return r, oob


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
        :func:`mixjax.optimize_mixture_ensemble`; ``seed`` also draws the residuals of the run interval.
    """
    if not isinstance(boot, BootstrapResult):
        raise TypeError(f"boot must be a mixjax.BootstrapResult (from mixjax.bootstrap), got {type(boot).__name__}")
    check_single_phase(boot, measured)
    level = check_level(boot.level if level is None else level)
    info = boot.point.info
    if measured is None:
        measured = _measured_of(boot)
    s = _setup(boot.laws, info.get("domains"), info.get("targets"), model_size, n_tokens, raw_model_size, raw_n_tokens, objective,
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
        H, dropped, below = _check_candidates(candidates, s["K"], s["lo"], s["hi"], s["domains"], 0.0)
        if dropped + below:
            warnings.warn(f"{dropped + below} candidate(s) lie outside the floors and ceilings (the law's min_weight "
                          f"{type(boot.point.law).min_weight:g} included) and were left out", stacklevel=2)
        p = _predict_members(point_law, H, s["N"], s["D"], w, fn, dt)[0]
        P = _predict_members(boot.laws, H, s["N"], s["D"], w, fn, dt)
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
    predicted = float(_predict_members(point_law, pick[None], s["N"], s["D"], w, fn, dt)[0, 0])
    at_members = _predict_members(point_law, H_members, s["N"], s["D"], w, fn, dt)[0]
    at_pick = _predict_members(boot.laws, pick[None], s["N"], s["D"], w, fn, dt)[:, 0]
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
    if run_noise:
        r, oob = _residuals(boot, data, fn, w, dt, log_scale)
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
    measured_h = data.mixtures if data is not None and data.n_domains else _measured_of(boot)
    nearest = None
    if measured_h is not None and np.asarray(measured_h).shape[-1] == pick.shape[0]:
        nearest = float(_tv_to_set(pick[None], np.asarray(measured_h, np.float64)).min())
    ref = ref_value = p_beats = None
    if reference is not None:
        ref = np.asarray(reference, np.float64).reshape(-1)
        check_mixture_rows(ref[None], "reference", n_domains=s["K"])
        ref_value = float(_predict_members(point_law, ref[None], s["N"], s["D"], w, fn, dt)[0, 0])
        if not np.isfinite(ref_value) or (log_scale and ref_value <= 0):
            raise ValueError(f"the full-data fit predicts {ref_value!r} at the reference mixture; it cannot be compared")
        gap = f(ref_value) - f(at_members[ok])  # > 0: member b's pick is better than the reference, judged by the fit
        spread = math.sqrt(2.0) * noise if noise else 0.0  # two independent runs, each with the run noise
        if spread > 0:
            p_beats = float(np.mean(0.5 * (1.0 + np.vectorize(math.erf)(gap / (spread * math.sqrt(2.0))))))
        else:
            p_beats = float(np.mean(gap > 0))
    return CalibratedOptimum(
        nearest_measured_distance=nearest, reference=ref, reference_predicted=ref_value, p_beats_reference=p_beats,
        mixture=pick, predicted=predicted, optimism=calibrated - predicted, calibrated=calibrated, log_scale=log_scale,
        interval=(float(inv(f(predicted) + lo)), float(inv(f(predicted) + hi))), fixed_interval=(float(flo), float(fhi)),
        run_interval=run_interval, run_noise=noise, regret=float(regret.mean()),
        regret_hi=float(np.quantile(regret, (1 + level) / 2)), level=level, members=R, members_used=int(ok.sum()),
        domains=s["domains"], targets=s["targets"], objective=s["desc"], model_size=s["N"], n_tokens=s["D"], source=source,
        index=index, point=point, member_mixtures=H_members, member_values=values, point_at_members=at_members,
        members_at_pick=at_pick, ok=ok, residual_rows=rows_used,
    )


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
