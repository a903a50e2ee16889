"""How a fit ended (:class:`Status`, one per member of a batch) and how it was made (:class:`FitRecord`)."""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Status", "status_counts", "worst", "SEVERITY", "FitRecord", "FitFailedError"]


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
            Status.out_of_range: "a parameter left the law's documented sane range (an exponent at its bound, a scale "
            "far beyond the data): the fit ran away; the law's form may not suit this data",
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


# --------------------------------------------------------------------------- how a fit was made
def _tuple(x):
    """Lists (nested) as tuples, so that a record holds no mutable sequence."""
    if isinstance(x, (list, tuple)):
        return tuple(_tuple(v) for v in x)
    return x


def _list(x):
    """Tuples (nested) as lists, for JSON and for callers that index or compare with lists."""
    if isinstance(x, (list, tuple)):
        return [_list(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _list(v) for k, v in x.items()}
    return x


@dataclasses.dataclass(frozen=True)
class FitRecord:
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

    def __post_init__(self):
        if not isinstance(self.law, str) or not self.law:
            raise ValueError(f"a fit record needs the law's name, got {self.law!r}")
        for name in ("domains", "targets", "phases", "phase_shares", "scales", "cells_per_target"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _tuple(value))
        for name in ("units", "start_status", "polish", "extra"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, types.MappingProxyType(dict(value)))

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (lists, not tuples), in field order, with ``extra``'s entries at the end."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in self._OPTIONAL and value is None:
                continue
            out[f.name] = _list(value)
        out.update(_list(dict(self.extra)))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitRecord:
        """A record from :meth:`as_dict`'s form (a saved file's ``info``): ``law``, ``domains`` and ``targets`` are
        required; entries this version does not know go to ``extra``."""
        missing = [k for k in ("law", "domains", "targets") if k not in d]
        if missing:
            raise ValueError(f"a fit record needs {missing}: a fit records its law name, domains and targets")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    def replace(self, **changes) -> FitRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
