"""The results of a mixture search: :class:`MixtureResult` (one law) and :class:`MixtureEnsemble` (every member of
a batched law, with percentile intervals over the usable members), each with a JSON-ready ``as_dict``.

Units: ``model_size`` in millions of parameters, ``n_tokens`` in billions of tokens; distances to measured mixtures
are total variation ``0.5 ||h - m||_1``; KL in nats.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..intervals import DEFAULT_LEVEL, percentile_interval
from ..results import Solution, Status, status_counts
from .coverage import MeasuredCoverage
from .phases import PhaseProblem
from .solver import MixtureConfig

__all__ = ["MixtureResult", "MixtureEnsemble"]


@dataclasses.dataclass
class MixtureResult:
    """The optimal mixture at one scale.

    Attributes: ``mixture`` (K,), predicted ``losses`` (V,) there, the objective ``value``, ``status``
    (:class:`Status` of the best start), ``num_steps``, ``kkt_residual`` (||h - P(h - grad)||_inf, 0 at an exact
    KKT point), ``starts``: every start's :class:`~mixjax.Solution` (``y`` the mixtures (S, K), numpy arrays; read
    as ``start_mixtures`` / ``start_values`` / ``start_status`` too), the bounds ``lower`` /
    ``upper`` that were enforced, names ``domains`` / ``targets``, the scale (``model_size`` in millions of
    parameters, ``n_tokens`` in billions of tokens) and ``objective`` (a description).

    ``scale_extrapolation``: where the scale lies against the fit's scales, per scale the law uses (``{kind: {"value",
    "fitted_min", "fitted_max", "factor", "far"}}``, raw counts; None when optimizing a bare law, which records none).
    ``coverage``: a :class:`MeasuredCoverage` of the optimum when the measured mixtures were given (else None);
    ``extrapolation``: its verdict (None without measured mixtures). ``optimum_fixed_by_law``: True when the
    optimum does not depend on the fitted parameters, False when it does, None when not checked or not
    applicable; ``fixed_message`` says why (:mod:`mixjax.mixture.fixed`)."""

    mixture: np.ndarray
    losses: np.ndarray
    value: float
    status: Status
    num_steps: int
    kkt_residual: float
    starts: Solution
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    config: MixtureConfig
    coverage: MeasuredCoverage | None = None
    optimum_fixed_by_law: bool | None = None
    fixed_message: str | None = None
    scale_extrapolation: dict | None = None
    #: Constrained searches (phases, repetition caps, KL, trust region; see :func:`optimize_mixture`): the
    #: :class:`PhaseProblem`, per-phase weights ``phase_mixtures`` (P, K), ``epochs`` (K,) at the target tokens,
    #: ``kl_to_prior`` (sum_p s_p KL(w_p || prior), nats), ``nearest_measured_distance`` (TV),
    #: ``penalized_value`` (J + lambda KL), ``active`` constraints and the largest ``constraint_violation``.
    problem: PhaseProblem | None = None
    phase_mixtures: np.ndarray | None = None
    epochs: np.ndarray | None = None
    kl_to_prior: float | None = None
    nearest_measured_distance: float | None = None
    penalized_value: float | None = None
    active_constraints: dict | None = None
    constraint_violation: float | None = None

    @property
    def start_mixtures(self) -> np.ndarray:
        return self.starts.y

    @property
    def start_values(self) -> np.ndarray:
        return self.starts.value

    @property
    def start_status(self) -> np.ndarray:
        return self.starts.status

    @property
    def extrapolation(self) -> bool | None:
        return None if self.coverage is None else self.coverage.extrapolation

    def notes(self) -> list[str]:
        """One line per caveat of this optimum (extrapolation, optimum fixed by the law), for people."""
        out = []
        if self.coverage is not None and self.coverage.extrapolation:
            out.append("the optimal mixture extrapolates beyond the measured mixtures: " + "; ".join(self.coverage.reasons))
        if self.optimum_fixed_by_law:
            out.append(self.fixed_message)
        return out

    @property
    def at_floor(self) -> np.ndarray:
        return self.mixture <= self.lower + 1e-9

    @property
    def at_ceiling(self) -> np.ndarray:
        return self.mixture >= self.upper - 1e-9

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "mixture": {d: float(x) for d, x in zip(self.domains, self.mixture)},
            "predicted_loss": {t: float(x) for t, x in zip(self.targets, self.losses)},
            "objective": self.objective,
            "objective_value": float(self.value),
            "status": self.status.name,
            "num_steps": int(self.num_steps),
            "kkt_residual": float(self.kkt_residual),
            "model_size_m": self.model_size,
            "n_tokens_b": self.n_tokens,
            "lower": {d: float(x) for d, x in zip(self.domains, self.lower)},
            "upper": {d: float(x) for d, x in zip(self.domains, self.upper)},
            "active": {d: ("floor" if f else "ceiling" if c else "free") for d, f, c in zip(self.domains, self.at_floor, self.at_ceiling)},
            "start_values": [float(v) for v in self.start_values],
            "start_status": status_counts(self.start_status),
            "method": self.config.method,
            **self._coverage_dict(),
            "optimum_fixed_by_law": self.optimum_fixed_by_law,
            "optimum_fixed_message": self.fixed_message,
            "scale_extrapolation": self.scale_extrapolation,
            **self._problem_dict(),
        }

    def _problem_dict(self) -> dict[str, Any]:
        pb = self.problem
        if pb is None:
            return {}
        base = pb.base_domains
        return {
            "phases": list(pb.phases) if pb.n_phases > 1 else None,
            "phase_shares": [float(x) for x in pb.shares] if pb.n_phases > 1 else None,
            "phase_mixtures": {p: {d: float(x) for d, x in zip(base, row)} for p, row in zip(pb.phases, self.phase_mixtures)},
            "epochs": None if self.epochs is None else {d: float(x) for d, x in zip(base, self.epochs)},
            "max_epochs": None if pb.max_epochs is None else {d: float(x) for d, x in zip(base, pb.max_epochs)},
            "prior": None if pb.prior is None else {d: float(x) for d, x in zip(base, pb.prior)},
            "kl_to_prior": self.kl_to_prior,
            "kl_penalty": pb.kl_penalty,
            "max_kl": pb.max_kl,
            "trust_radius": pb.trust_radius,
            "nearest_measured_distance_tv": self.nearest_measured_distance,
            "penalized_objective_value": self.penalized_value,
            "active_constraints": self.active_constraints,
            "constraint_violation": self.constraint_violation,
        }

    def _coverage_dict(self) -> dict[str, Any]:
        if self.coverage is None:
            keys = ("measured_range", "outside_range", "nearest_measured_distance", "typical_measured_spacing",
                    "n_measured_mixtures", "distance", "extrapolation", "extrapolation_reasons")
            return dict.fromkeys(keys)
        return self.coverage.as_dict(self.domains)

    def __repr__(self) -> str:
        mix = ", ".join(f"{d}={x:.4f}" for d, x in zip(self.domains, self.mixture))
        return (
            f"MixtureResult({mix}; {self.objective} = {self.value:.6g} at N={self.model_size:g}M, D={self.n_tokens:g}B; "
            f"status={self.status.name}, kkt={self.kkt_residual:.2g}, starts={status_counts(self.start_status)}"
            + ("" if self.extrapolation is None else f", extrapolation={self.extrapolation}")
            + ("" if self.optimum_fixed_by_law is None else f", optimum_fixed_by_law={self.optimum_fixed_by_law}")
            + ")"
        )


@dataclasses.dataclass
class MixtureEnsemble:
    """Optimal mixtures of every member of a law ensemble (e.g. bootstrap refits), at one scale.

    ``members``: each member's best start as one :class:`~mixjax.Solution` (R,) (``y`` the mixtures (R, K), numpy
    arrays; read as ``mixtures``, ``values`` and ``status`` too), ``losses`` (R, V) predicted there,
    ``ok`` (R,): members used in summaries (the ensemble's own mask and a finite optimum); ``point``: the optimum
    of a point-estimate law when one was given. Intervals are percentile intervals over the ``ok`` members
    (:func:`mixjax.intervals.percentile_interval`, default level :data:`mixjax.intervals.DEFAULT_LEVEL` = 0.9).
    ``member_extrapolation`` (R,): whether each member's optimum extrapolates beyond the measured mixtures (None
    without them); ``optimum_fixed_by_law`` / ``fixed_message``: whether the usable members' optima coincide while
    their objectives differ (:mod:`mixjax.mixture.fixed`)."""

    members: Solution
    losses: np.ndarray
    ok: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    model_size: float
    n_tokens: float
    objective: str
    point: MixtureResult | None = None
    member_extrapolation: np.ndarray | None = None
    optimum_fixed_by_law: bool | None = None
    fixed_message: str | None = None
    #: Constrained searches: the :class:`PhaseProblem`, per-member ``phase_mixtures`` (R, P, K), ``epochs`` (R, K),
    #: ``kl_to_prior`` (R,) and ``nearest_measured_distance`` (R,) (None where not applicable).
    problem: PhaseProblem | None = None
    phase_mixtures: np.ndarray | None = None
    epochs: np.ndarray | None = None
    kl_to_prior: np.ndarray | None = None
    nearest_measured_distance: np.ndarray | None = None

    @property
    def mixtures(self) -> np.ndarray:
        return self.members.y

    @property
    def values(self) -> np.ndarray:
        return self.members.value

    @property
    def status(self) -> np.ndarray:
        return self.members.status

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def _need(self):
        if not self.ok.any():
            raise RuntimeError("no ensemble member has a usable optimum (every member failed or was excluded)")

    def median(self) -> np.ndarray:
        self._need()
        return np.median(self.mixtures[self.ok], axis=0)

    def interval(self, level: float = DEFAULT_LEVEL, what: str = "mixture") -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of ``"mixture"`` (K,), ``"losses"`` (V,) or ``"value"`` over the usable members."""
        self._need()
        arr = {"mixture": self.mixtures, "losses": self.losses, "value": self.values}.get(what)
        if arr is None:
            raise ValueError(f"what must be 'mixture', 'losses' or 'value', got {what!r}")
        return percentile_interval(arr[self.ok], level)

    def as_dict(self, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
        self._need()
        lo, hi = self.interval(level)
        llo, lhi = self.interval(level, "losses")
        vlo, vhi = self.interval(level, "value")
        return {
            "level": level,
            "members": int(self.ok.size),
            "members_used": self.n_ok,
            "member_status": status_counts(self.status),
            "mixture_median": {d: float(x) for d, x in zip(self.domains, self.median())},
            "mixture_interval": {d: [float(a), float(b)] for d, a, b in zip(self.domains, lo, hi)},
            "predicted_loss_interval": {t: [float(a), float(b)] for t, a, b in zip(self.targets, llo, lhi)},
            "objective_value_interval": [float(vlo), float(vhi)],
            "members_extrapolating": None if self.member_extrapolation is None else int(self.member_extrapolation[self.ok].sum()),
            **({} if self.problem is None else {
                "phase_mixture_median": {p: {d: float(x) for d, x in zip(self.problem.base_domains, row)}
                                         for p, row in zip(self.problem.phases, np.median(self.phase_mixtures[self.ok], axis=0))},
                "max_epochs_interval": None if self.epochs is None else [float(x) for x in percentile_interval(self.epochs[self.ok].max(-1), level)],
                "kl_to_prior_interval": None if self.kl_to_prior is None else [float(x) for x in percentile_interval(self.kl_to_prior[self.ok], level)],
            }),
            "optimum_fixed_by_law": self.optimum_fixed_by_law,
            "optimum_fixed_message": self.fixed_message,
        }
