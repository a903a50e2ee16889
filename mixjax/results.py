"""How a solve ended (:class:`Status`, one per member of a batch; :class:`Solution`, the batched solution that the
engine returns and that fits, bootstraps and mixture searches hold) and how a fit was made (:class:`FitRecord`, and
for a bootstrap and a design :class:`BootstrapRecord` and :class:`SuggestionRecord`)."""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import numpy as np

__all__ = ["Status", "Solution", "status_counts", "worst", "SEVERITY", "FitRecord", "BootstrapRecord", "SuggestionRecord", "FitFailedError"]


class Status(enum.IntEnum):
    """How one member of a batched fit ended."""

    converged = 0
    max_steps = 1
    nonfinite = 2
    out_of_range = 3

    @property
    def message(self) -> str:
        return {
            Status.converged: "converged (objective change or gradient below tolerance)",
            Status.max_steps: "stopped at the step limit before converging; raise max_steps or check the starts",
            Status.nonfinite: "failed: the objective or parameters became non-finite; the member is excluded",
            Status.out_of_range: "converged with a parameter outside the law's documented sane range (an exponent at "
            "its cap or bound, a scale far beyond the data): the fit ran away; the law's form may not suit this data",
        }[self]

    @property
    def ok(self) -> bool:
        """Finite result (converged, at the step limit, or out of range; only ``converged`` passed every test)."""
        return self != Status.nonfinite


class FitFailedError(RuntimeError):
    """A call has no usable answer: every member that could answer it ended ``nonfinite``.

    The one ``throw`` policy of every entry point (``fit``, ``bootstrap``, ``compare``, ``optimize_mixture``,
    ``suggest``): with ``throw=True`` (the default) a call raises this error when it has no usable answer (every
    start of a fit, of a mixture search, or every resample of a bootstrap failed, or every law of a comparison);
    a finite answer that passed no convergence test (``max_steps``, ``out_of_range``) is returned with its status
    and a warning, never raised. With ``throw=False`` nothing is raised for a failed fit: the result carries the
    status ``nonfinite``."""


def status_counts(codes) -> dict[str, int]:
    """How many members ended in each status."""
    codes = np.asarray(codes).reshape(-1)
    return {s.name: int((codes == s).sum()) for s in Status}


#: Statuses from best to worst (for summaries over several fits).
SEVERITY = (Status.converged, Status.max_steps, Status.out_of_range, Status.nonfinite)


def worst(statuses) -> Status:
    """The worst of several statuses (see :data:`SEVERITY`)."""
    return max((Status(int(s)) for s in statuses), key=SEVERITY.index)


# --------------------------------------------------------------------------- the batched solution
class Solution(eqx.Module):
    """Every member of one batched solve, leading axes alike (B,) or (R, S), as the engine returns it and as the
    entry points hold it:

    * ``y``: what was solved for: flat parameter vectors (B, P) inside the engine (:func:`mixjax.internal.minimize`),
      the fitted laws (a batched law) in a fit (:attr:`mixjax.Fit.starts`, :attr:`mixjax.BootstrapResult.resamples`),
      the mixtures (..., K) in a mixture search (:attr:`mixjax.MixtureResult.starts`,
      :attr:`mixjax.MixtureEnsemble.members`);
    * ``value``: the objective at ``y`` (a fit's loss; a mixture search's objective, penalized where it has a KL
      term, NaN for a start that ended infeasible);
    * ``status``: :class:`Status` codes (integers: ``Status(code)`` gives the name and the message);
    * ``num_steps``: solver steps taken;
    * ``rel_grad``: the stationarity residual at the end relative to ``|value|`` (a fit: ``max_k |df/dy_k| / f``
      over its stored logs and logits; a mixture search: its KKT residual ``||h - P(h - grad f)||_inf / |f|``);
    * ``num_accepted``: accepted steps (kept by the engine; None where not kept).

    Arrays are JAX arrays where the solve returns them and numpy arrays in mixture results. ``law``, ``loss`` and
    ``grad_norm`` read ``y``, ``value`` and ``rel_grad`` under the names a fit's members are known by."""

    y: Any
    value: Any
    status: Any
    num_steps: Any
    rel_grad: Any
    num_accepted: Any = None

    @property
    def law(self):
        """``y`` of a fit: the batched fitted laws."""
        return self.y

    @property
    def loss(self):
        """``value`` of a fit: each member's objective."""
        return self.value

    @property
    def grad_norm(self):
        """``rel_grad`` of a fit."""
        return self.rel_grad

    def counts(self) -> dict[str, int]:
        """How many members ended in each :class:`Status`."""
        return status_counts(self.status)


# --------------------------------------------------------------------------- how a fit was made
def _list(x):
    """Tuples (nested) as lists, for JSON and for callers that index or compare with lists."""
    if isinstance(x, (list, tuple)):
        return [_list(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _list(v) for k, v in x.items()}
    return x


def _immutable(x):
    """Lists as tuples and dicts as read-only views, nested."""
    if isinstance(x, (list, tuple)):
        return tuple(_immutable(v) for v in x)
    if isinstance(x, Mapping):
        return types.MappingProxyType({k: _immutable(v) for k, v in x.items()})
    return x


class _Record:
    """What the frozen records of how a result was made share (a mixin for frozen dataclasses with an ``extra``
    field): sequences stored as tuples and mappings as read-only views, :meth:`as_dict` / :meth:`from_dict` for
    files and JSON, entries a saved record holds but this version does not know kept in ``extra``, and
    :meth:`replace`.

    Class attributes: ``_SEQUENCES`` and ``_MAPPINGS``, the fields made immutable; ``_OPTIONAL``, the fields
    :meth:`as_dict` leaves out when None; ``_SKIP``, the fields it never writes."""

    _SEQUENCES: tuple[str, ...] = ()
    _MAPPINGS: tuple[str, ...] = ("extra",)
    _OPTIONAL: tuple[str, ...] = ()
    _SKIP: tuple[str, ...] = ()

    def __post_init__(self):
        for name in (*self._SEQUENCES, *self._MAPPINGS):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _immutable(value))

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (lists, not tuples), in field order, with ``extra``'s entries at the end."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or f.name in self._SKIP or (f.name in self._OPTIONAL and value is None):
                continue
            out[f.name] = _list(value)
        out.update(_list(dict(self.extra)))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """A record from :meth:`as_dict`'s form; entries this version does not know go to ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def replace(self, **changes):
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class FitRecord(_Record):
    """How a fit was made: what fitting-pitfall surveys ask a fit to record (data selection, mask rule, starts,
    seed, the statuses of the starts, timings). Written to fit files (less the timings) and read back.

    Attributes:
      law, law_reference: the law's registered name and its source.
      data, n_rows, n_cells: the table's name, its rows and the loss cells the objective counted; ``data_sha256``:
        a fingerprint of the table's rows and names (:func:`mixjax.data.data_fingerprint`), None in older files.
      domains: the mixture's domains, in the fit's order; ``phases`` and ``phase_shares`` for a table of training
        phases (None otherwise).
      targets: the fitted loss columns (the domains themselves for a per-domain law).
      scales: the distinct ``(model size in M parameters, tokens in B)`` pairs of the rows.
      units: the units of the scales.
      mask_zero_weight: whether cells of a domain at weight 0 were excluded; ``cells_per_target``: cells counted per
        target; ``loss_scale``: "log" for the Huber-on-log objective, "raw" otherwise.
      init, seed, starts, best_start: how the starting points were drawn and which one won.
      start_status: how many starts ended in each :class:`Status`.
      weights: "uniform" or "user row weights".
      seconds, backend: wall-clock time of the solve and the JAX backend (not saved to files).
      polish: for a float32 fit continued in float64, the float32 objective, status and the polish's steps.
      extra: entries of a saved record that this version does not know (kept, and written back).
    """

    law: str
    law_reference: str | None = None
    data: str | None = None
    n_rows: int | None = None
    n_cells: int | None = None
    data_sha256: str | None = None
    domains: tuple[str, ...] = ()
    phases: tuple[str, ...] | None = None
    phase_shares: tuple[float, ...] | None = None
    targets: tuple[str, ...] = ()
    scales: tuple[tuple[float, float], ...] = ()
    units: Mapping[str, str] | None = None
    mask_zero_weight: bool | None = None
    cells_per_target: tuple[int, ...] | None = None
    loss_scale: str | None = None
    init: str | None = None
    seed: int | None = None
    starts: int | None = None
    best_start: int | None = None
    start_status: Mapping[str, int] | None = None
    weights: str | None = None
    seconds: float | None = None
    backend: str | None = None
    polish: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    #: Fields written only when set (a record of an older file, or of a fit without a polish, has none).
    _OPTIONAL = ("seconds", "polish")
    _SEQUENCES = ("domains", "targets", "phases", "phase_shares", "scales", "cells_per_target")
    _MAPPINGS = ("units", "start_status", "polish", "extra")

    def __post_init__(self):
        if not isinstance(self.law, str) or not self.law:
            raise ValueError(f"a fit record needs the law's name, got {self.law!r}")
        super().__post_init__()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitRecord:
        """A record from :meth:`as_dict`'s form (a saved file's ``info``): ``law``, ``domains`` and ``targets`` are
        required; entries this version does not know go to ``extra``."""
        missing = [k for k in ("law", "domains", "targets") if k not in d]
        if missing:
            raise ValueError(f"a fit record needs {missing}: a fit records its law name, domains and targets")
        return super().from_dict(d)


@dataclasses.dataclass(frozen=True)
class BootstrapRecord(_Record):
    """How a bootstrap was made: the data, resample and start counts, settings, the statuses of every start and
    resample, timings. Written to bootstrap files (less the timings and the data summary) and read back.

    Attributes:
      law: the law's registered name; data, n_rows, data_sha256: the table's name, rows and fingerprint.
      resamples: R, the resamples of the whole bootstrap (of every slice together); starts: S per resample;
        warm_start: whether start 0 of every resample was the full-data fit.
      point_fit: how the full-data fit was made (``"given"``, or ``"fitted, N starts"``).
      chunk_size: the members per compiled call (None: one call).
      start_status, resample_status: how many starts and resamples ended in each :class:`Status`.
      best_start: the winning start of each resample.
      seconds_point_fit, seconds_resamples, jackknife_seconds: wall-clock times (not saved to files).
      backend: the JAX backend.
      summary: the :class:`mixjax.laws.DataSummary` the starts were drawn from (saved in its own header entry, not
        in :meth:`as_dict`; not compared).
      slice: for a slice of a distributed bootstrap, ``{"index", "count", "first", "stop"}`` (None otherwise).
      extra: entries of a saved record that this version does not know (kept, and written back).
    """

    law: str | None = None
    data: str | None = None
    n_rows: int | None = None
    data_sha256: str | None = None
    resamples: int | None = None
    starts: int | None = None
    warm_start: bool | None = None
    point_fit: str | None = None
    chunk_size: int | None = None
    start_status: Mapping[str, int] | None = None
    resample_status: Mapping[str, int] | None = None
    best_start: tuple[int, ...] | None = None
    seconds_point_fit: float | None = None
    seconds_resamples: float | None = None
    jackknife_seconds: float | None = None
    backend: str | None = None
    summary: Any = dataclasses.field(default=None, compare=False)
    slice: Mapping[str, int] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    #: Fields written only when set (timings are not in saved files; ``slice`` only for a slice); ``summary`` has
    #: its own entry in a file's header.
    _OPTIONAL = ("seconds_point_fit", "seconds_resamples", "jackknife_seconds", "slice")
    _SKIP = ("summary",)
    _SEQUENCES = ("best_start",)
    _MAPPINGS = ("start_status", "resample_status", "slice", "extra")

    def __post_init__(self):
        if self.law is not None and (not isinstance(self.law, str) or not self.law):
            raise ValueError(f"a bootstrap record's law must be a law's name, got {self.law!r}")
        super().__post_init__()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], summary: Any = None) -> BootstrapRecord:
        """A record from :meth:`as_dict`'s form (a saved file's bootstrap ``info``) and the data ``summary`` (which
        replaces a ``"summary"`` entry of ``d``); entries this version does not know go to ``extra``."""
        return super().from_dict(d if summary is None else {**d, "summary": summary})


@dataclasses.dataclass(frozen=True)
class SuggestionRecord(_Record):
    """How a design was made (:func:`mixjax.suggest`): its seed and settings, the ensemble's resamples, and how many
    candidates were left out and why. Reported in :meth:`mixjax.Suggestion.as_dict` (less ``seconds``).

    Attributes:
      seed, min_distance: the design's seed and the TV distance kept between runs; min_weight: the law's
        ``min_weight`` (where it diverges).
      resamples, resamples_failed, scheme: the bootstrap ensemble's resamples, failed ones and scheme.
      candidates_outside_bounds, candidates_below_min_weight: candidates of a given pool left out (outside the
        floors and ceilings; below ``min_weight``); candidates_above_caps: sampled candidates of a table with
        training phases that broke a repetition cap.
      candidates_nonfinite, candidates_absurd, absurd_threshold: candidates left out for a non-finite prediction, or
        one above the threshold.
      noise_rows: the rows the noise variance was estimated from (when it was not given).
      phase_distance: how distances between runs of a table with training phases are measured.
      seconds: wall-clock time (not reported).
      extra: entries this version does not know.

    Fields that are None (not set for this design) are left out of :meth:`as_dict`.
    """

    seed: int | None = None
    min_distance: float | None = None
    min_weight: float | None = None
    resamples: int | None = None
    resamples_failed: int | None = None
    scheme: str | None = None
    candidates_outside_bounds: int | None = None
    candidates_below_min_weight: int | None = None
    candidates_above_caps: int | None = None
    candidates_nonfinite: int | None = None
    candidates_absurd: int | None = None
    absurd_threshold: float | None = None
    noise_rows: int | None = None
    phase_distance: str | None = None
    seconds: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: Every field of a design's record is written only when set.
SuggestionRecord._OPTIONAL = tuple(f.name for f in dataclasses.fields(SuggestionRecord))
