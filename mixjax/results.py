"""Status codes of a fit, one per member of a batch."""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Status", "status_counts", "worst", "SEVERITY"]


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


def status_counts(codes) -> dict[str, int]:
    """How many members ended in each status."""
    codes = np.asarray(codes).reshape(-1)
    return {s.name: int((codes == s).sum()) for s in Status}


#: Statuses from best to worst (for summaries over several fits).
SEVERITY = (Status.converged, Status.max_steps, Status.out_of_range, Status.nonfinite)


def worst(statuses) -> Status:
    """The worst of several statuses (see :data:`SEVERITY`)."""
    return max((Status(int(s)) for s in statuses), key=SEVERITY.index)
