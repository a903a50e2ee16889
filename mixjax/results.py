"""Status codes of a fit, one per member of a batch."""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Status", "status_counts"]


class Status(enum.IntEnum):
    """How one member of a batched fit ended."""

    converged = 0
    max_steps = 1
    nonfinite = 2

    @property
    def message(self) -> str:
        return {
            Status.converged: "converged (objective change or gradient below tolerance)",
            Status.max_steps: "stopped at the step limit before converging; raise max_steps or check the starts",
            Status.nonfinite: "failed: the objective or parameters became non-finite; the member is excluded",
        }[self]

    @property
    def ok(self) -> bool:
        """Usable result: converged or stopped at the step limit with finite values."""
        return self != Status.nonfinite


def status_counts(codes) -> dict[str, int]:
    """How many members ended in each status."""
    codes = np.asarray(codes).reshape(-1)
    return {s.name: int((codes == s).sum()) for s in Status}
