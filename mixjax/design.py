"""Which runs to train next: a batch of mixtures chosen by sequential design from a bootstrap ensemble.

A bootstrap ensemble of R refits of a law (:func:`mixjax.bootstrap`) gives, at every candidate mixture h, R
predictions ``J_r(h)`` of the objective (the mean predicted loss over targets, a weighted mean, or one target's
loss, at the scale of the next runs). Where the members disagree, a run teaches the most; where no member expects a
good loss, a run is of little use for choosing the final mixture. The criterion multiplies the two:

    a(h) = v(h) p(h),   v(h) = 1/(R-1) sum_r (J_r(h) - Jbar(h))^2,   p(h) = 1/R sum_r exp(-(J_r(h) - m_r) / tau)

* ``v`` is the committee's disagreement, the variance of the predicted objective across members (query by
  committee: Seung, Opper & Sompolinsky, "Query by committee", COLT 1992), in loss units squared;
* ``p`` is the share of members that consider h near-optimal: ``m_r = min_c J_r(c)`` is member r's best predicted
  objective over the candidates, and a candidate within about ``tau`` of it counts (``tau -> 0``: the fraction of
  members whose optimum h is, as in Thompson sampling from the ensemble). By default ``tau`` is the noise standard
  deviation of one run's measured objective (a run within the noise of the best cannot be told from it).

Predictions enter capped, ``J_r <- min(J_r, U)`` with ``U = max_r m_r + gap_cap tau`` (default 4 tau): above U no
member considers h within ``gap_cap tau`` of its best, so how much worse a member predicts there is irrelevant to the
choice of the optimum (and a single member that diverges somewhere cannot dominate the variance: capped, it adds
at most about ``(U - Jbar)^2 / R`` to v). The reported ``disagreement`` and ``predicted`` are the uncapped values.

So the criterion targets both the predicted loss at the optimal mixture and the optimum's location: it asks for
runs where the members that could hold the optimum disagree most (the committee's expected reduction of the
optimum's variance, to first order).

**A diverse batch.** The n runs of a batch are chosen greedily. After each pick j the ensemble is conditioned on a
pretended measurement at j equal to the ensemble mean (the kriging believer of Ginsbourger, Le Riche & Carraro,
"Kriging is well-suited to parallelize optimization", 2010): the mean is unchanged, and the members' deviations
``A = J - Jbar`` (R x m) are updated by the serial ensemble square-root filter (Whitaker & Hamill, "Ensemble data
assimilation without perturbed observations", 2002)

    A <- A - alpha a k^T,   a = A[:, j],   k = Cov(J, J_j) / (v_j + s^2),   alpha = 1 / (1 + sqrt(s^2 / (v_j + s^2)))

with s^2 the noise variance of a measured run's objective. The updated deviations have exactly the Kalman
posterior covariance ``Cov - c c^T / (v_j + s^2)`` (c = Cov(J, J_j)): the disagreement shrinks at j and wherever
the members' predictions are correlated with theirs at j, so the next pick goes where the ensemble is still
uncertain about something else. Members' gaps to their own best (hence ``p``) are recomputed from the conditioned
predictions. Picks also keep a total-variation distance ``TV(h, h') = 0.5 sum_i |h_i - h'_i|`` of at least
``min_distance`` from each other and from the measured mixtures. When no disagreement is left (noise 0 and more
picks than members), the remaining picks maximize ``p(h)`` times the distance to the nearest pick or measured run.

**Candidates.** A pool of allowed mixtures (``candidates=``, e.g. the runs a sweep could still train), or sampled
from the bounded simplex: uniform Dirichlet(1) draws, the members' own optimal mixtures
(:func:`mixjax.optimize_mixture_ensemble`) and Dirichlet draws around them (concentrations 30 and 300), each
projected onto ``{h : sum h = 1, lo <= h <= hi}``.

**Training phases.** On a table with P training phases (phase shares s_p, summing to 1; :mod:`mixjax.swarm`) a
mixture is a weight vector per phase, w_p on the simplex over the K domains, and the law takes it flattened,
``h[k@p] = s_p w_pk``. Floors and ceilings bound each phase's weights (a number, K numbers, (P, K) numbers,
``{domain: v}`` or ``{domain@phase: v}``, as in :func:`mixjax.optimize_mixture`); the law's ``min_weight`` bounds
every flattened weight, ``w_pk >= min_weight / s_p``. Sampled candidates are drawn phase by phase: each phase's block
is a Dirichlet draw projected onto its own bounded simplex, uniform (Dirichlet(1)) or around one member's per-phase
optimum (the same member and concentration for every phase; the members' optima come from the per-phase search of
:func:`mixjax.optimize_mixture_ensemble`). A pool is given as per-phase weights (m, P, K), every phase summing to 1,
or flattened in the table's columns (m, P K). Repetition caps (``unique_tokens`` / ``max_epochs``) couple the phases,
``D sum_p s_p w_pk <= E_k U_k``: candidates that break them are left out. Distances between mixtures are the mean
over phases of each phase's total-variation distance, weighted by the phases' token shares,

    d(h, h') = sum_p s_p TV(w_p, w'_p) = 0.5 sum_p sum_k s_p |w_pk - w'_pk| = TV(h, h'),

the share of the training tokens whose domain differs between the two runs; it equals the total-variation distance
of the flattened mixtures, so the ``min_distance`` rule and the distance to the measured runs are unchanged. A phase
with a small share thus counts little: two runs that differ only in a phase of share 0.2 are at most 0.2 apart.

**Where the law is meaningful.** A law whose prediction diverges at a zero weight declares the smallest meaningful
weight (``min_weight``, e.g. 1e-4 for the capacity-noise law, whose noise term ``A_i (D h_i)^-a_i`` blows up as
``h_i -> 0``): it is an implicit floor, ``lo_i <- max(lo_i, min_weight)``, for the sampled candidates, the members'
optima and the picks; pool candidates below it are dropped with a warning. Candidates where some member's predicted
objective is non-finite, or above ``T = J_ref + max(|J_ref|, J_hi - J_lo)`` (``J_hi``, ``J_lo``: the largest and
smallest observed objective over fully measured runs; ``J_ref = max(J_hi, median prediction)``, so a suggestion at
a smaller scale than the data's is not cut), are dropped with a warning too. For a loss, T is twice the worst
measured objective: no mixture inside the simplex doubles the worst measured loss unless a diverging term does.

Units: model size in millions of parameters and tokens in billions (the laws' units), or raw counts via
``raw_model_size`` / ``raw_n_tokens``; criterion values in loss units squared, disagreement in loss units.
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
from .laws import AbstractLaw
from .mixture import (
    InfeasibleMixtureError,
    mixture_bounds,
    objective_spec,
    PhaseProblem,
    optimize_mixture_ensemble,
    phase_problem,
    project_capped_simplex,
)
from .mixture.spec import accepts_spec
from .problem import law_class, prepare
from .resampling import BootstrapResult, bootstrap, check_resamples
from .results import SuggestionRecord
from .units import TOKENS_UNIT, ScaleExtrapolationWarning, check_scale, extrapolation, extrapolation_message, law_scale, scale_arguments

__all__ = ["Suggestion", "condition_on", "law_floors", "sample_candidates", "select_batch", "suggest"]

#: Candidates are evaluated in blocks of this many (padded), so a shrinking pool reuses one compiled program.
_CANDIDATE_BLOCK = 256
#: Concentrations of the Dirichlet draws around each member's optimal mixture.
_LOCAL_CONCENTRATIONS = (30.0, 300.0)
#: Tolerance of a candidate's weights summing to 1 and lying inside the bounds.
_SIMPLEX_TOL = 1e-6


# --------------------------------------------------------------------------- the result
@dataclasses.dataclass
class Suggestion:
    """A batch of mixtures to train next, in the order they were picked.

    Attributes:
      mixtures: ``(n, K)`` weights of each suggested run (on the simplex, inside the bounds); for a table with
        training phases the flattened mixture over its ``domain@phase`` columns, ``h[k@p] = s_p w_pk``.
      criterion: ``(n,)`` the criterion ``v(h) p(h)`` of each pick when it was picked (after conditioning on the
        earlier picks; loss units squared).
      disagreement: ``(n,)`` standard deviation of the members' predicted objective there, before any
        conditioning (loss units).
      near_optimal: ``(n,)`` ``p(h)`` when picked: the share of members that consider h near-optimal.
      predicted: ``(n,)`` ensemble-mean predicted objective.
      domains: domain names; objective: what ``J`` is; law: the law's name.
      noise: s^2, the noise variance of one run's measured objective; temperature: tau.
      members: usable ensemble members; n_candidates: candidates scored; candidates: ``"pool"`` or ``"sampled"``.
      model_size, n_tokens: the scale of the suggested runs (millions of parameters, billions of tokens).
      record: a :class:`mixjax.SuggestionRecord` of the other settings (seed, resamples, min_distance, how many
        candidates were excluded and why); ``info`` is the same as a plain dict.
      phases, phase_shares, base_domains: a table with training phases: the P phase names, their (P,) token shares
        s_p and the K domain names (None for one phase); phase_mixtures: ``(n, P, K)`` each suggested run's weights
        per phase, w_pk (each phase sums to 1), or None.
    """

    mixtures: np.ndarray
    criterion: np.ndarray
    disagreement: np.ndarray
    near_optimal: np.ndarray
    predicted: np.ndarray
    domains: tuple[str, ...]
    objective: str
    law: str
    noise: float
    temperature: float
    members: int
    n_candidates: int
    candidates: str
    model_size: float
    n_tokens: float
    record: SuggestionRecord = dataclasses.field(default_factory=SuggestionRecord)
    phases: tuple[str, ...] | None = None
    phase_shares: np.ndarray | None = None
    base_domains: tuple[str, ...] | None = None
    phase_mixtures: np.ndarray | None = None

    @property
    def info(self) -> dict[str, Any]:
        """The :attr:`record` as a plain dict, without the fields that are not set (a copy: change the record with
        ``record.replace``)."""
        return self.record.as_dict()

    @property
    def n(self) -> int:
        return int(self.mixtures.shape[0])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``"mixtures"`` is a list of ``{domain: weight}``, one per suggested run; with training
        phases also ``"phases"`` (``{phase: token share}``) and ``"phase_mixtures"``, one ``{phase: {domain: weight}}``
        per suggested run (each phase summing to 1), as :meth:`mixjax.MixtureResult.as_dict` reports an optimum."""
        phased = {} if self.phase_mixtures is None else {
            "phases": {p: float(x) for p, x in zip(self.phases, self.phase_shares)},
            "phase_mixtures": [{p: {d: float(x) for d, x in zip(self.base_domains, row)} for p, row in zip(self.phases, w)}
                               for w in self.phase_mixtures],
        }
        return {
            "law": self.law,
            "objective": self.objective,
            "criterion": "disagreement x near-optimal share (query by committee near the members' optima)",
            "model_size_m": self.model_size,
            "n_tokens_b": self.n_tokens,
            "mixtures": [{d: float(x) for d, x in zip(self.domains, h)} for h in self.mixtures],
            **phased,
            "criterion_value": [float(v) for v in self.criterion],
            "disagreement_sd": [float(v) for v in self.disagreement],
            "near_optimal_share": [float(v) for v in self.near_optimal],
            "predicted_objective": [float(v) for v in self.predicted],
            "noise_variance": float(self.noise),
            "temperature": float(self.temperature),
            "members": int(self.members),
            "n_candidates": int(self.n_candidates),
            "candidates": self.candidates,
            **{k: v for k, v in self.info.items() if k not in ("seconds",)},
        }

    def __repr__(self) -> str:
        if self.phase_mixtures is not None:
            rows = "; ".join(" | ".join(f"{p}: " + ", ".join(f"{d}={x:.3f}" for d, x in zip(self.base_domains, row))
                                        for p, row in zip(self.phases, w)) for w in self.phase_mixtures[:3])
        else:
            rows = "; ".join(", ".join(f"{d}={x:.3f}" for d, x in zip(self.domains, h)) for h in self.mixtures[:3])
        more = f"; ... ({self.n} in all)" if self.n > 3 else ""
        return f"Suggestion(law={self.law}, n={self.n}, {self.candidates} candidates={self.n_candidates}, members={self.members}: {rows}{more})"


# --------------------------------------------------------------------------- the design maths (numpy)
def condition_on(deviations: np.ndarray, j: int, noise: float) -> np.ndarray:
    """Members' deviations ``A`` (R, m) after a kriging-believer measurement at column j with noise variance
    ``noise`` (serial ensemble square-root filter, module docstring): ``A - alpha a k^T``. The result's sample
    covariance is ``Cov - c c^T / (v_j + noise)`` exactly; a column with no spread (v_j = 0) changes nothing."""
    A = np.asarray(deviations, np.float64)
    R = A.shape[0]
    a = A[:, j]
    vj = float(a @ a) / (R - 1)
    if not vj > 0:
        return A.copy()
    k = (A.T @ a) / (R - 1) / (vj + noise)
    alpha = 1.0 / (1.0 + math.sqrt(noise / (vj + noise)))
    return A - alpha * np.outer(a, k)


def _tv(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(p, q) total-variation distances 0.5 sum |a - b|."""
    if points.shape[0] == 0 or others.shape[0] == 0:
        return np.full((points.shape[0], others.shape[0]), np.inf)
    return 0.5 * np.abs(points[:, None, :] - others[None, :, :]).sum(-1)


def _cap(P: np.ndarray, tau: float, gap_cap: float) -> tuple[np.ndarray, float]:
    """Predictions capped at ``U = max_r m_r + gap_cap tau`` (module docstring), and U."""
    U = float(P.min(axis=1).max()) + float(gap_cap) * tau
    return np.minimum(P, U), U


def select_batch(
    predictions,
    n: int,
    *,
    noise: float = 0.0,
    temperature: float | None = None,
    gap_cap: float = 4.0,
    mixtures=None,
    min_distance: float = 0.0,
    measured=None,
    pending_predictions=None,
    lower=None,
) -> dict[str, np.ndarray]:
    """Greedy batch selection from members' predicted objectives (the module docstring's criterion).

    Args:
      predictions: ``(R, m)`` objective predicted by each of R >= 2 members at each of m candidates.
      n: picks wanted (fewer are returned when the distance rule leaves too few candidates).
      noise: s^2 >= 0, noise variance of one run's measured objective (conditioning and the default tau).
      temperature: tau >= 0 of the near-optimal share (default sqrt(noise)).
      gap_cap: predictions are capped at U = max_r m_r + gap_cap * tau (module docstring).
      mixtures: ``(m, K)`` candidate mixtures (needed for ``min_distance`` and the fallback; optional otherwise).
      min_distance: least TV distance between picks, and between a pick and a ``measured`` ``(q, K)`` mixture.
      pending_predictions: ``(R, p)`` predictions at runs already launched but not measured: the ensemble is
        conditioned on them first (kriging believer), and they are not picked.
      lower: a floor per domain (K,) or one number (e.g. the law's ``min_weight`` combined with the user's floors):
        candidates with a weight below it are never picked (needs ``mixtures``).

    Returns a dict: ``index`` (n,) candidate indices in pick order, ``criterion``, ``near_optimal``,
    ``disagreement`` (standard deviation of the uncapped predictions), ``mean`` (their ensemble mean), each (n,)."""
    P = np.asarray(predictions, np.float64)
    if P.ndim != 2 or P.shape[0] < 2 or P.shape[1] < 1:
        raise ValueError(f"predictions must be (R, m) with at least 2 members and 1 candidate, got shape {P.shape}")
    if not np.isfinite(P).all():
        raise ValueError("predictions must be finite (drop members or candidates with non-finite predictions first)")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite variance >= 0, got {noise!r}")
    tau = math.sqrt(noise) if temperature is None else float(temperature)
    if not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
    if not (math.isfinite(gap_cap) and gap_cap > 0):
        raise ValueError(f"gap_cap must be finite and > 0, got {gap_cap!r}")
    R, m = P.shape
    H = None if mixtures is None else np.asarray(mixtures, np.float64)
    if H is not None and H.shape[0] != m:
        raise ValueError(f"mixtures has {H.shape[0]} rows for {m} candidates")
    if min_distance > 0 and H is None:
        raise ValueError("min_distance needs the candidate mixtures")
    if lower is not None and H is None:
        raise ValueError("lower needs the candidate mixtures")
    sd_raw, mean_raw = P.std(axis=0, ddof=1), P.mean(axis=0)
    P, U = _cap(P, tau, gap_cap)
    mu = P.mean(axis=0)
    # the pending runs are extra columns, conditioned on first and never picked
    Q = np.zeros((R, 0)) if pending_predictions is None else np.asarray(pending_predictions, np.float64).reshape(R, -1)
    if not np.isfinite(Q).all():
        raise ValueError("pending_predictions must be finite")
    Q = np.minimum(Q, U)
    A = np.concatenate([P, Q], axis=1) - np.concatenate([mu, Q.mean(axis=0)])
    for j in range(m, m + Q.shape[1]):
        A = condition_on(A, j, noise)
    available = np.ones(m, bool)
    if lower is not None:
        floor = np.broadcast_to(np.asarray(lower, np.float64), (H.shape[1],))
        available &= np.all(H >= floor * (1 - _SIMPLEX_TOL), axis=1)
    near_measured = np.full(m, np.inf)
    if H is not None and measured is not None:
        M = np.asarray(measured, np.float64).reshape(-1, H.shape[1])
        near_measured = _tv(H, M).min(axis=1) if M.shape[0] else near_measured
        available &= near_measured >= min_distance
    scale = float(np.max(np.abs(mu))) or 1.0
    tiny_tau = max(tau, 1e-300)
    first_score = None
    nearest = near_measured.copy()  # distance to the nearest pick or measured run
    out = {k: [] for k in ("index", "criterion", "near_optimal", "disagreement", "mean")}
    for _ in range(int(n)):
        if not available.any():
            break
        Am = A[:, :m]
        v = (Am**2).sum(axis=0) / (R - 1)
        J = mu + Am
        gap = J - J.min(axis=1, keepdims=True)
        p = np.exp(-gap / tiny_tau).mean(axis=0)
        score = v * p
        masked = np.where(available, score, -np.inf)
        if first_score is None:
            first_score = float(masked.max())
        j = int(np.argmax(masked))
        if not masked[j] > 1e-12 * max(first_score, 1e-300 * scale**2) and H is not None:
            # no disagreement left: spread the remaining picks among near-optimal candidates
            j = int(np.argmax(np.where(available, p * np.minimum(nearest, 1.0), -np.inf)))
        for key, val in (("index", j), ("criterion", score[j]), ("near_optimal", p[j]), ("disagreement", sd_raw[j]), ("mean", mean_raw[j])):
            out[key].append(val)
        available[j] = False
        if H is not None:
            d = _tv(H, H[j : j + 1])[:, 0]
            nearest = np.minimum(nearest, d)
            if min_distance > 0:
                available &= d >= min_distance
        A = condition_on(A, j, noise)
    return {k: np.asarray(v, np.int64 if k == "index" else np.float64) for k, v in out.items()}


# --------------------------------------------------------------------------- candidates
def sample_candidates(n_candidates: int, lo, hi, *, centers=None, seed: int = 0) -> np.ndarray:
    """Mixtures on ``{h : sum h = 1, lo <= h <= hi}``: with ``centers`` (c, K) (e.g. members' optima), the centers
    themselves, then half of ``n_candidates`` as Dirichlet draws around them (concentrations 30 and 300 times the
    center, plus 0.01 per domain) and half as uniform Dirichlet(1) draws; without centers all are uniform. Every
    draw is projected onto the bounds (Euclidean projection). Drawn with ``numpy.random.default_rng([seed, 2])``.

    With ``(P, K)`` bounds (a table with P training phases), a mixture is P weight vectors, each on its own bounded
    simplex ``{w_p : sum w_p = 1, lo_p <= w_p <= hi_p}``: every phase is drawn and projected on its own (a draw
    around a center uses the same center and concentration for every phase), centers are (c, P, K), and the result
    is (m, P, K) per-phase weights."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo.ndim not in (1, 2) or hi.shape != lo.shape:
        raise ValueError(f"lo and hi must both be (K,) or (P, K) bounds, got shapes {lo.shape} and {hi.shape}")
    phased = lo.ndim == 2
    lo2, hi2 = lo.reshape(-1, lo.shape[-1]), hi.reshape(-1, hi.shape[-1])
    P, K = lo2.shape
    if isinstance(n_candidates, bool) or int(n_candidates) != n_candidates or n_candidates < 1:
        raise ValueError(f"n_candidates must be a positive integer, got {n_candidates!r}")
    rng = np.random.default_rng([int(seed), 2])
    parts = []
    n_uniform = int(n_candidates)
    if centers is not None and len(centers):
        C = np.asarray(centers, np.float64).reshape(-1, P, K)
        parts.append(C)
        n_local = int(n_candidates) // 2
        n_uniform = int(n_candidates) - n_local
        pick = rng.integers(0, C.shape[0], n_local)
        conc = np.asarray(_LOCAL_CONCENTRATIONS)[rng.integers(0, len(_LOCAL_CONCENTRATIONS), n_local)]
        alpha = conc[:, None, None] * (C[pick] + 0.01)
        parts.append(rng.gamma(alpha))
    parts.append(rng.dirichlet(np.ones(K), size=(n_uniform, P)))
    draws = np.concatenate(parts)
    draws = draws / draws.sum(axis=-1, keepdims=True)
    proj = jax.jit(jax.vmap(jax.vmap(project_capped_simplex), in_axes=(0, None, None)))
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    out = np.asarray(proj(jnp.asarray(draws, dt), jnp.asarray(lo2, dt), jnp.asarray(hi2, dt)), np.float64)
    return out if phased else out[:, 0]


def law_floors(law, lo, hi, domains=None) -> np.ndarray:
    """Floors ``max(lo_i, min_weight)`` with the law's ``min_weight`` (its smallest meaningful weight), checked
    against the ceilings ``hi``; :class:`InfeasibleMixtureError` naming the law when they leave no mixture."""
    cls = law_class(law)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    mw = float(cls.min_weight)
    if not mw > 0:
        return lo.copy()
    try:
        return mixture_bounds(lo.size, floors=np.maximum(lo, mw), ceilings=hi, domains=domains)[0]
    except InfeasibleMixtureError as e:
        raise InfeasibleMixtureError(f"law {cls.name} diverges at a domain weight below {mw:g} (its min_weight, an implicit "
                                     f"floor on every domain): {e}") from None


def check_candidates(candidates, K: int, lo, hi, domains, min_weight: float = 0.0) -> tuple[np.ndarray, int, int]:
    """Candidate mixtures (m, K) validated; those outside the bounds, then those with a weight below the law's
    ``min_weight``, are dropped (the two counts are returned)."""
    H = np.array(candidates, np.float64, copy=True)
    if H.ndim == 1 and H.size == K:
        H = H[None]
    if H.ndim != 2 or H.shape[1] != K or H.shape[0] < 1:
        raise ValueError(f"candidates must be an (m, {K}) array of mixtures over {list(domains)}, got shape {np.shape(candidates)}")
    bad = np.argwhere(~np.isfinite(H) | (H < 0))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"candidate row {r}: weight of {domains[c]!r} is {H[r, c]!r}; weights must be finite and >= 0")
    sums = H.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > _SIMPLEX_TOL)
    if off.size:
        raise ValueError(f"candidate row {off[0]} sums to {sums[off[0]]:.9g}, not 1 (tolerance {_SIMPLEX_TOL:g}); {off.size} row(s) in all")
    inside = np.all((H >= lo - _SIMPLEX_TOL) & (H <= hi + _SIMPLEX_TOL), axis=1)
    if not inside.any():
        raise ValueError(f"none of the {H.shape[0]} candidates lies within the floors and ceilings")
    meaningful = inside & (H.min(axis=1) >= min_weight * (1 - _SIMPLEX_TOL))
    if not meaningful.any():
        raise ValueError(f"every candidate within the floors and ceilings gives some domain a weight below {min_weight:g}, "
                         "where the law diverges (its min_weight)")
    return H[meaningful], int((~inside).sum()), int((inside & ~meaningful).sum())


def _phase_rows(x, prob: PhaseProblem, label: str) -> np.ndarray:
    """Per-phase weights W (m, P, K) of mixtures given as per-phase weights (m, P, K) (or one (P, K)), or flattened
    in the table's columns (m, P K) (or one (P K,)), ``w_pk = h[k@p] / s_p``; checked: finite, >= 0 and every phase's
    weights summing to 1 (a ValueError naming the row and phase otherwise)."""
    P, K = prob.index.shape
    s = np.asarray(prob.shares, np.float64)
    X = np.array(x, np.float64, copy=True)
    if X.shape == (P, K) or X.shape == (P * K,):
        X = X[None]
    flat = X.ndim == 2 and X.shape[1] == P * K
    if not (flat or (X.ndim == 3 and X.shape[1:] == (P, K))) or X.shape[0] < 1:
        raise ValueError(f"{label} must be (m, {P}, {K}) weights per phase (phases {list(prob.phases)}, domains "
                         f"{list(prob.base_domains)}) or (m, {P * K}) mixtures over the table's columns, got shape {np.shape(x)}")
    W = prob.blocks(X).reshape(-1, P, K) / s[None, :, None] if flat else X
    bad = np.argwhere(~np.isfinite(W) | (W < 0))
    if bad.size:
        r, p, k = bad[0]
        raise ValueError(f"{label} row {r}: weight of {prob.base_domains[k]!r} in phase {prob.phases[p]!r} is "
                         f"{X[r, prob.index[p, k]] if flat else W[r, p, k]!r}; weights must be finite and >= 0")
    sums = W.sum(axis=-1)
    off = np.argwhere(np.abs(sums - 1.0) > _SIMPLEX_TOL)
    if off.size:
        r, p = off[0]
        how = f" (its columns sum to {sums[r, p] * s[p]:.9g}, the phase's share being {s[p]:.6g})" if flat else ""
        raise ValueError(f"{label} row {r}: the weights of phase {prob.phases[p]!r} sum to {sums[r, p]:.9g}, not 1 "
                         f"(tolerance {_SIMPLEX_TOL:g}){how}; every phase's weights sum to 1; "
                         f"{len(np.unique(off[:, 0]))} row(s) in all")
    return W


def _flatten(W: np.ndarray, prob: PhaseProblem) -> np.ndarray:
    """The law's flattened mixtures (m, P K), ``h[k@p] = s_p w_pk``, from per-phase weights (m, P, K)."""
    return prob.flat((np.asarray(W) * prob.shares[None, :, None]).reshape(W.shape[0], -1))


def _within_caps(W: np.ndarray, prob: PhaseProblem) -> np.ndarray:
    """(m,) whether per-phase weights keep the repetition caps ``sum_p s_p w_pk <= caps_k`` (all True without caps)."""
    if prob.caps is None:
        return np.ones(W.shape[0], bool)
    frac = np.einsum("p,mpk->mk", prob.shares, W)
    return np.all(frac <= prob.caps * (1 + _SIMPLEX_TOL) + _SIMPLEX_TOL, axis=1)


def _check_phase_candidates(candidates, prob: PhaseProblem, min_weight: float) -> tuple[np.ndarray, int, int]:
    """A pool for a table with phases (:func:`_phase_rows`) as flattened mixtures (m, P K); those outside the
    per-phase floors and ceilings or the repetition caps, then those with a flattened weight below the law's
    ``min_weight``, are dropped (the two counts are returned)."""
    W = _phase_rows(candidates, prob, "candidate")
    inside = np.all((W >= prob.lower - _SIMPLEX_TOL) & (W <= prob.upper + _SIMPLEX_TOL), axis=(1, 2)) & _within_caps(W, prob)
    if not inside.any():
        raise ValueError(f"none of the {W.shape[0]} candidates lies within the floors, ceilings and repetition caps of every phase")
    H = _flatten(W, prob)
    meaningful = inside & (H.min(axis=1) >= min_weight * (1 - _SIMPLEX_TOL))
    if not meaningful.any():
        raise ValueError(f"every candidate within the floors and ceilings gives some domain of some phase a flattened weight "
                         f"s_p w_pk below {min_weight:g}, where the law diverges (its min_weight)")
    return H[meaningful], int((~inside).sum()), int((inside & ~meaningful).sum())


def _phase_layout(data: MixtureData, cls, floors, ceilings, unique_tokens, max_epochs, n_tokens) -> tuple[PhaseProblem, PhaseProblem]:
    """The per-phase bounds of a table with phases: (user's, with the law's ``min_weight`` too), as
    :class:`PhaseProblem` (``n_tokens`` in the units of ``unique_tokens``)."""
    kw = dict(phases=data.phases, phase_shares=data.phase_shares, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens,
              max_epochs=max_epochs, n_tokens=n_tokens if unique_tokens is not None else None)
    user = phase_problem(data.domains, **kw)
    mw = float(cls.min_weight)
    if not mw > 0:
        return user, user
    try:
        return user, phase_problem(data.domains, min_weight=mw, **kw)
    except InfeasibleMixtureError as e:
        raise InfeasibleMixtureError(f"law {cls.name} diverges at a flattened weight below {mw:g} (its min_weight, an implicit "
                                     f"floor s_p w_pk >= {mw:g} on every domain of every phase): {e}") from None


def _ensemble_phases(ensemble) -> tuple[str, ...] | None:
    """The training phases an ensemble records (a bootstrap's fit info, or a bound law's class), or None."""
    for i in (getattr(ensemble, "info", None), getattr(getattr(ensemble, "point", None), "info", None)):
        if isinstance(i, dict) and i.get("phases") is not None:
            return tuple(i["phases"])
    ph = getattr(getattr(ensemble, "laws", ensemble), "phases", None)
    return tuple(ph) if isinstance(ph, (tuple, list)) else None


# --------------------------------------------------------------------------- predictions
@eqx.filter_jit
def _member_objectives(laws, H, N, D, w, fn):
    """(R, m) objective of every member at every candidate."""
    return eqx.filter_vmap(lambda law: jax.vmap(lambda h: fn(law(h, N, D), w))(H))(laws)


@eqx.filter_jit
def _row_objectives(law, h, N, D, y, w, fn):
    """Objective of one law's predictions and of the measured losses ``y``, row by row (each row its own scale)."""
    return jax.vmap(lambda hr, Nr, Dr: fn(law(hr, Nr, Dr), w))(h, N, D), jax.vmap(lambda yr: fn(yr, w))(y)


def predict_members(laws, H: np.ndarray, N: float, D: float, w, fn, dtype) -> np.ndarray:
    m = H.shape[0]
    padded = math.ceil(m / _CANDIDATE_BLOCK) * _CANDIDATE_BLOCK
    Hp = np.concatenate([H, np.repeat(H[:1], padded - m, axis=0)])
    out = _member_objectives(laws, jnp.asarray(Hp, dtype), jnp.asarray(N, dtype), jnp.asarray(D, dtype), jnp.asarray(w, dtype), fn)
    return np.asarray(out, np.float64)[:, :m]


def _noise_variance(law, data: MixtureData, fn, w, dtype) -> tuple[float, int]:
    """Mean squared residual of the objective, ``(J(law(h_r)) - J(y_r))^2``, over rows whose every target was
    measured (and is finite), and the number of rows used. Rows with a weight below the law's ``min_weight`` (where
    its prediction is a floor, not the law) are left out while other rows remain."""
    arrays, y = prepare(type(law), data, mask_zero_weight=False, dtype=dtype)
    full = np.isfinite(y).all(axis=1)
    meaningful = full & (data.mixtures.min(axis=1, initial=1.0) >= type(law).min_weight)
    if meaningful.any():
        full = meaningful
    if not full.any():
        return 0.0, 0
    J_pred, J_meas = (np.asarray(a, np.float64) for a in _row_objectives(
        law, arrays.h, arrays.N, arrays.D, jnp.asarray(np.where(full[:, None], y, 1.0), dtype), jnp.asarray(w, dtype), fn))
    r = (J_pred - J_meas)[full & np.isfinite(J_pred)]
    return (float(np.mean(r**2)) if r.size else 0.0), int(r.size)


@eqx.filter_jit
def objective_of_rows(y, w, fn):
    return jax.vmap(lambda yr: fn(yr, w))(y)


def _absurd_threshold(cls, data: MixtureData, P: np.ndarray, fn, w, dtype) -> tuple[float, float]:
    """``(T, J_hi)``: predicted objectives above ``T = J_ref + max(|J_ref|, J_hi - J_lo)`` are absurd (module
    docstring); ``J_hi``/``J_lo`` the largest/smallest observed objective over fully measured rows (the largest and
    smallest measured loss when no row is complete), ``J_ref = max(J_hi, median over candidates of the members'
    median prediction)``. Infinite when nothing was measured."""
    _, y = prepare(cls, data, mask_zero_weight=False, dtype=dtype)
    full = np.isfinite(y).all(axis=1)
    if full.any() and y.shape[1] == np.size(w):
        J = np.asarray(objective_of_rows(jnp.asarray(y[full], dtype), jnp.asarray(w, dtype), fn), np.float64)
        J = J[np.isfinite(J)]
    else:
        J = y[np.isfinite(y)]
    if J.size == 0:
        return math.inf, math.nan
    J_hi, J_lo = float(J.max()), float(J.min())
    cols = np.isfinite(P).any(axis=0)
    typical = float(np.median(np.nanmedian(np.where(np.isfinite(P), P, np.nan)[:, cols], axis=0))) if cols.any() else -math.inf
    J_ref = max(J_hi, typical)
    margin = max(abs(J_ref), J_hi - J_lo)
    return (J_ref + margin if margin > 0 else math.inf), J_hi


# --------------------------------------------------------------------------- entry point
def _scale_of(cls, data: MixtureData, model_size, n_tokens, raw_model_size, raw_n_tokens) -> tuple[float, float]:
    """(N millions, D billions) of the suggested runs; defaults to the data's only scale for laws that need it."""
    model_size, n_tokens = law_scale(model_size, n_tokens, raw_model_size, raw_n_tokens)
    out = []
    for flag, v, values, label in ((cls.uses_model_size, model_size, data.model_size_m, "model_size (millions of parameters)"),
                                   (cls.uses_tokens, n_tokens, data.n_tokens_b, "n_tokens (billions of tokens)")):
        if v is None and flag:
            known = np.unique(values[np.isfinite(values)])
            if known.size != 1:
                raise ValueError(f"law {cls.name} depends on {label}: pass the scale of the next runs"
                                 + (f" (the data has {known.size} values)" if known.size else ""))
            v = float(known[0])
        if v is not None and not (math.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{label.split()[0]} must be a positive finite number, got {v!r}")
        if v is not None:
            kind = label.split()[0]
            check_scale(float(v), kind, units="law")
            unit = 1e6 if kind == "model_size" else 1e9
            msg = extrapolation_message(extrapolation(float(v) * unit, values * unit, kind), kind) if flag else None
            if msg:
                warnings.warn(f"{data.name}: {msg}", ScaleExtrapolationWarning, stacklevel=3)
        out.append(1.0 if v is None else float(v))
    return out[0], out[1]


def _member_batch(ensemble, law):
    """(batched law, ok mask (R,), point law or None, name) from a BootstrapResult or a batched law."""
    if isinstance(ensemble, BootstrapResult):
        name = ensemble.point.record.law
        if law is not None and law_class(law).name != name:
            raise ValueError(f"ensemble holds law {name!r}, but law={law_class(law).name!r} was given")
        return ensemble.laws, np.asarray(ensemble.ok), ensemble.point.law, name
    if isinstance(ensemble, AbstractLaw):
        sizes = {int(np.shape(x)[0]) for x in jax.tree_util.tree_leaves(eqx.filter(ensemble, eqx.is_inexact_array)) if np.ndim(x) >= 1}
        if len(sizes) != 1:
            raise ValueError(f"ensemble must be batched with one leading axis R on every parameter array; leading sizes {sorted(sizes)}")
        R = sizes.pop()
        return ensemble, np.ones(R, bool), None, type(ensemble).name
    raise TypeError(f"ensemble must be a BootstrapResult or a batched AbstractLaw, got {type(ensemble).__name__}")


def _sample_phase_candidates(laws, ok, data: MixtureData, prob_user: PhaseProblem, prob: PhaseProblem, N, D, unit, targets,
                             objective, target_weights, target, n_candidates, mixture_starts, mixture_steps, seed) -> tuple[np.ndarray, int]:
    """Sampled candidates of a table with phases, flattened (m, P K): the members' per-phase optima
    (:func:`optimize_mixture_ensemble`, a simplex per phase) and draws per phase around them and uniform
    (:func:`sample_candidates` with (P, K) bounds); those breaking the repetition caps are left out (their count
    is returned)."""
    U = None if prob_user.unique_tokens is None else prob_user.unique_tokens / unit  # billions of tokens, as D
    ens = optimize_mixture_ensemble(laws, ok=ok, model_size=N, n_tokens=D, objective=objective, target_weights=target_weights,
                                    target=target, floors=prob_user.lower, ceilings=prob_user.upper, unique_tokens=U,
                                    max_epochs=prob_user.max_epochs if U is not None else None, starts=mixture_starts, seed=seed,
                                    steps=mixture_steps, domains=data.domains, targets=targets, check_fixed=False,
                                    phase_shares=prob.shares, measured=data)
    centers = ens.phase_mixtures[ens.ok] if ens.phase_mixtures is not None else None
    W = sample_candidates(n_candidates, prob.lower, prob.upper, centers=centers, seed=seed)
    capped = _within_caps(W, prob)
    if not capped.any():
        raise RuntimeError(f"none of the {W.shape[0]} sampled candidates keeps the repetition caps; give a pool (candidates=)")
    return _flatten(W[capped], prob), int((~capped).sum())


@accepts_spec
def suggest(
    data: MixtureData,
    law=None,
    n: int = 8,
    *,
    model_size: float | None = None,
    n_tokens: float | None = None,
    raw_model_size: float | None = None,
    raw_n_tokens: float | None = None,
    scale=None,
    objective: str | Callable = "mean",
    target_weights=None,
    target: str | int | None = None,
    floors=None,
    ceilings=None,
    unique_tokens=None,
    max_epochs=None,
    candidates=None,
    n_candidates: int = 2048,
    pending=None,
    resamples: int = 32,
    starts: int = 2,
    point_starts: int = 16,
    scheme: str = "rows",
    seed: int = 0,
    noise: float | None = None,
    temperature: float | None = None,
    gap_cap: float = 4.0,
    min_distance: float = 0.01,
    ensemble=None,
    mixture_starts: int = 4,
    mixture_steps: int = 500,
    **fit_kwargs,
) -> Suggestion:
    """Suggest the n mixtures to train next (module docstring: criterion, batch conditioning, candidates).

    Args:
      data: the runs measured so far (:class:`mixjax.MixtureData`).
      law: the law to bootstrap (name, class or instance); may be None when ``ensemble`` is given.
      n: runs to suggest.
      model_size, n_tokens: scale of the next runs in millions of parameters / billions of tokens (or raw counts
        as ``raw_model_size`` / ``raw_n_tokens``, or a :class:`mixjax.Scale` as ``scale``); default: the data's only
        scale, for laws that use it.
      objective, target_weights, target: the objective J, as in :func:`mixjax.optimize_mixture` (default: the mean
        predicted loss over targets).
      floors, ceilings, unique_tokens, max_epochs: bounds on the weights, as in :func:`mixjax.optimize_mixture`;
        the law's ``min_weight`` (its smallest meaningful weight) is an implicit floor on every domain.
      spec: a :class:`mixjax.MixtureSpec` standing for the scale, objective and bounds above (the question the
        optimum of :func:`mixjax.optimize_mixture` answers, asked of the next runs); its measured mixtures and
        constraint terms are refused, and so is an argument given both ways.
      candidates: ``(m, K)`` allowed mixtures (a pool); those outside the bounds, or with a weight below the law's
        ``min_weight``, are dropped with a warning.
        Default: ``n_candidates`` sampled from the bounded simplex around the members' optima and uniformly.
      pending: ``(p, K)`` mixtures of runs launched but not yet measured: conditioned on first, never suggested.
        A table with P training phases (module docstring, "Training phases"): floors and ceilings bound each phase's
        weights; ``max_epochs`` without ``unique_tokens`` uses the table's unique tokens; ``candidates`` and
        ``pending`` are per-phase weights ``(m, P, K)``, every phase summing to 1, or flattened ``(m, P K)`` in the
        table's columns; ``min_distance`` is the share-weighted mean of the phases' TV distances.
      resamples, starts, point_starts, scheme, **fit_kwargs: the bootstrap (:func:`mixjax.bootstrap`); its resample
        fits run in chunks of ``point_starts`` members (``chunk_size``), so they reuse the full-data fit's program.
      seed: seeds the bootstrap and the candidate draws; the same seed gives the same suggestions.
      noise: s^2, noise variance of one run's measured objective; default: the mean squared residual of the
        full-data fit's objective over fully measured rows. temperature: tau (default sqrt(noise)); gap_cap: (U - max_r m_r) / tau.
      min_distance: least TV distance between suggestions and from measured mixtures (default 0.01).
      ensemble: a :class:`mixjax.BootstrapResult` fitted to ``data`` or a batched law (leading axis R on every
        parameter), used instead of a new bootstrap.
      mixture_starts, mixture_steps: the members' optimal mixtures (sampled candidates only).
    """
    model_size, n_tokens, raw_model_size, raw_n_tokens = scale_arguments(scale, model_size, n_tokens, raw_model_size, raw_n_tokens)
    if not isinstance(data, MixtureData):
        raise TypeError(f"data must be a MixtureData (see mixjax.load_csv / from_arrays), got {type(data).__name__}")
    if data.n_domains < 2:
        raise ValueError(f"suggesting mixtures needs at least 2 domains; {data.name!r} has {data.n_domains}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(min_distance, (int, float)) and 0 <= min_distance < 1):
        raise ValueError(f"min_distance must be a TV distance in [0, 1), got {min_distance!r}")
    if noise is not None and not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite variance >= 0, got {noise!r}")
    phased = data.phases is not None and len(data.phases) > 1
    fitted_phases = None if ensemble is None else _ensemble_phases(ensemble)
    if fitted_phases is not None and len(fitted_phases) > 1 and tuple(fitted_phases) != tuple(data.phases or ()):
        raise ValueError(f"the ensemble was fitted on a table with training phases {list(fitted_phases)}, but {data.name!r} has "
                         + (f"phases {list(data.phases)}" if phased else "one phase"))
    if phased:  # check the pool's and the pending runs' layout before any fitting
        layout = phase_problem(data.domains, phases=data.phases, phase_shares=data.phase_shares)
        for x, label in ((candidates, "candidate"), (pending, "pending run")):
            if x is not None:
                _phase_rows(x, layout, label)
    if ensemble is None:
        if law is None:
            raise ValueError("give the law to fit (or a fitted ensemble)")
        resamples = check_resamples(resamples)
        fit_kwargs.setdefault("chunk_size", point_starts)  # resamples in chunks of the full-data fit's shape: one compile
        ensemble = bootstrap(law, data, resamples=int(resamples), starts=starts, point_starts=point_starts, scheme=scheme,
                             seed=seed, **fit_kwargs)
    elif fit_kwargs:
        raise TypeError(f"fit settings {sorted(fit_kwargs)} have no effect with a given ensemble")
    laws, ok, point_law, name = _member_batch(ensemble, law)
    cls = type(laws)
    K = data.n_domains
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(eqx.filter(laws, eqx.is_inexact_array)))
    N, D = _scale_of(cls, data, model_size, n_tokens, raw_model_size, raw_n_tokens)
    law0 = jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, laws)
    V = jax.eval_shape(law0, jnp.zeros(K, dtype), jnp.asarray(N, dtype), jnp.asarray(D, dtype)).shape[0]
    targets = data.domains if cls.per_domain else (data.targets if len(data.targets) == V else tuple(f"target{j}" for j in range(V)))
    fn, w, desc = objective_spec(V, objective, target_weights, target, targets)
    unit = TOKENS_UNIT if raw_n_tokens is not None else 1.0
    prob = None
    if phased:
        if unique_tokens is None and max_epochs is not None and data.unique_tokens is not None:
            unique_tokens = np.asarray(data.unique_tokens, np.float64) * unit / TOKENS_UNIT  # the table's raw counts, in D's units
        prob_user, prob = _phase_layout(data, cls, floors, ceilings, unique_tokens, max_epochs, D * unit)
        lo = _flatten(prob.lower[None], prob)[0]  # flattened floors s_p lo_pk, the law's min_weight included
    else:
        lo_user, hi = mixture_bounds(K, floors=floors, ceilings=ceilings, unique_tokens=unique_tokens, max_epochs=max_epochs,
                                     n_tokens=D * unit, domains=data.domains)
        lo = law_floors(cls, lo_user, hi, data.domains)
    record = SuggestionRecord(seed=int(seed), min_distance=float(min_distance), min_weight=float(cls.min_weight))
    if isinstance(ensemble, BootstrapResult):
        record = record.replace(resamples=ensemble.n_resamples, resamples_failed=ensemble.n_failed, scheme=ensemble.scheme)
    if ok.sum() < 2:
        raise RuntimeError(f"only {int(ok.sum())} of {ok.size} ensemble members are usable; a design needs at least 2")

    if candidates is not None:
        if phased:
            H, dropped, below = _check_phase_candidates(candidates, prob_user, float(cls.min_weight))
        else:
            H, dropped, below = check_candidates(candidates, K, lo_user, hi, data.domains, float(cls.min_weight))
        if dropped:
            warnings.warn(f"{dropped} candidate(s) lie outside the floors and ceilings"
                          + (" (of some phase) or the repetition caps" if phased else "") + " and were left out", stacklevel=2)
        if below:
            warnings.warn(f"{below} candidate(s) give some domain a weight below {cls.min_weight:g}, where law {name} diverges "
                          "(its min_weight), and were left out", stacklevel=2)
        record = record.replace(candidates_outside_bounds=dropped, candidates_below_min_weight=below)
        source = "pool"
    elif phased:
        H, n_capped = _sample_phase_candidates(laws, ok, data, prob_user, prob, N, D, unit, targets, objective, target_weights,
                                               target, n_candidates, mixture_starts, mixture_steps, seed)
        record = record.replace(candidates_above_caps=n_capped)
        source = "sampled"
    else:
        ens = optimize_mixture_ensemble(laws, ok=ok, model_size=N, n_tokens=D, objective=objective, target_weights=target_weights,
                                        target=target, floors=lo, ceilings=hi, starts=mixture_starts, seed=seed,
                                        steps=mixture_steps, domains=data.domains, targets=targets, check_fixed=False)
        centers = ens.mixtures[ens.ok]
        H = sample_candidates(n_candidates, lo, hi, centers=centers, seed=seed)
        source = "sampled"

    P = predict_members(laws, H, N, D, w, fn, dtype)
    T, J_hi = _absurd_threshold(cls, data, P[ok], fn, w, dtype)
    sane = np.isfinite(P) & (P <= T)
    members = ok & sane.any(axis=1)  # a member absurd at every candidate is no member
    P, sane = P[members], sane[members]
    finite = np.isfinite(P).all(axis=0)
    keep = sane.all(axis=0)
    if not finite.all():
        warnings.warn(f"{int((~finite).sum())} of {finite.size} candidates get a non-finite prediction from some member "
                      f"and were left out", stacklevel=2)
    absurd = finite & ~keep
    if absurd.any():
        warnings.warn(f"{int(absurd.sum())} of {absurd.size} candidates get a predicted objective above {T:.4g} from some member "
                      f"(the largest observed objective is {J_hi:.4g}: a diverging term, not an interpolation) and were left out",
                      stacklevel=2)
    if not keep.any():
        raise RuntimeError("every candidate gets a non-finite or absurd prediction from some ensemble member")
    record = record.replace(candidates_nonfinite=int((~finite).sum()), candidates_absurd=int(absurd.sum()), absurd_threshold=float(T))
    H, P = H[keep], P[:, keep]
    if P.shape[0] < 2:
        raise RuntimeError("fewer than 2 ensemble members give finite predictions; a design needs at least 2")
    if candidates is not None and H.shape[0] < n:
        raise ValueError(f"n={n} suggestions asked for, but only {H.shape[0]} usable candidate(s) are allowed")

    if noise is None:
        ref = point_law if point_law is not None else jax.tree_util.tree_map(
            lambda x: jnp.median(x[np.flatnonzero(members)], axis=0) if eqx.is_inexact_array(x) else x, laws)
        noise, used = _noise_variance(ref, data, fn, w, dtype)
        record = record.replace(noise_rows=used)
    Q = None
    if pending is not None:
        Hq = _flatten(_phase_rows(pending, prob, "pending run"), prob) if phased else np.asarray(pending, np.float64).reshape(-1, K)
        usable = Hq.min(axis=1) >= cls.min_weight * (1 - _SIMPLEX_TOL)
        if not usable.all():
            warnings.warn(f"{int((~usable).sum())} pending run(s) give some domain a weight below {cls.min_weight:g}, where law "
                          f"{name} diverges (its min_weight): the design is not conditioned on them", stacklevel=2)
        Q = predict_members(laws, Hq[usable], N, D, w, fn, dtype)[members] if usable.any() else None
        if Q is not None and not np.isfinite(Q).all():
            raise ValueError("some pending mixture gets a non-finite prediction from an ensemble member")
    measured = data.mixtures[np.isfinite(data.losses).any(axis=1)]
    if pending is not None:
        measured = np.concatenate([measured, Hq])
    sel = select_batch(P, n, noise=float(noise), temperature=temperature, gap_cap=gap_cap, mixtures=H, min_distance=float(min_distance),
                       measured=measured, pending_predictions=Q, lower=lo)
    if sel["index"].size < n:
        warnings.warn(f"only {sel['index'].size} of {n} suggestions keep a TV distance of {min_distance:g} from each other "
                      "and from the measured runs", stacklevel=2)
    tau = math.sqrt(noise) if temperature is None else float(temperature)
    picked = H[sel["index"]]
    if phased:
        record = record.replace(phase_distance="sum over phases of share x total-variation distance (= TV of the flattened mixtures)")
        phase_kw = dict(phases=tuple(prob.phases), phase_shares=np.asarray(prob.shares, np.float64), base_domains=tuple(prob.base_domains),
                        phase_mixtures=prob.blocks(picked).reshape(-1, *prob.index.shape) / prob.shares[None, :, None])
    else:
        phase_kw = {}
    return Suggestion(
        mixtures=picked, criterion=sel["criterion"], disagreement=sel["disagreement"],
        near_optimal=sel["near_optimal"], predicted=sel["mean"], domains=tuple(data.domains), objective=desc, law=name,
        noise=float(noise), temperature=tau, members=int(P.shape[0]), n_candidates=int(H.shape[0]), candidates=source,
        model_size=N, n_tokens=D, record=record, **phase_kw,
    )
