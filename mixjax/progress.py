"""Progress of long calls, drawn with tqdm.

Every call that fits a batch takes ``progress=``, a callable ``progress(done, total)`` that the library calls as
the solver advances (members fitted so far, of the batch's total; see :func:`mixjax.solve`). :class:`ProgressBar`
is such a callable: pass ``progress=mixjax.ProgressBar("bootstrap")`` to see a bar with the rate and the time left.
The command line passes one on a terminal and none in JSON mode or when stderr is a file or a pipe.
"""

from __future__ import annotations

import sys

__all__ = ["ProgressBar"]


class ProgressBar:
    """A ``progress(done, total)`` callback drawn as a tqdm bar on stderr (members fitted, rate, time left).

    ``label``: the bar's prefix; ``unit``: what is counted (default "fits"); ``always``: draw even when stderr is not
    a terminal (by default such a bar stays silent, so logs and JSON output are not littered). A new ``total``
    (a later call of the same command) starts a new bar."""

    def __init__(self, label: str, *, unit: str = "fits", always: bool = False):
        self.label = label
        self.unit = unit
        self.show = always or sys.stderr.isatty()
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.show or total <= 0:
            return
        from tqdm.auto import tqdm

        if self._bar is None or self._bar.total != total or done < self._bar.n:
            self.close()
            self._bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr, leave=True, dynamic_ncols=True)
        self._bar.update(max(0, min(done, total) - self._bar.n))
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the current bar (it stays on the screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
