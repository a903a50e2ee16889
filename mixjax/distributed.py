"""Several processes, one answer: starting ``jax.distributed``, each process's share of a batch, gathering the
shares, and slices (of a bootstrap's resamples, of a comparison's law x split cells) for cluster schedulers.

Work items (starts, resamples) draw their random numbers from the seed and their own index, so a batch can be cut
anywhere: :func:`mixjax.fitting.solve` gives each process one contiguous share of the members (and shards that
share over the process's local devices), then :func:`gather` joins the shares so that every process holds the whole
result. Only the main process (index 0) should write files or print; the others finish the same calls and exit.

Every process must make the same calls in the same order (a gather waits for all of them); one that skips a fit
(for example an interval only process 0 asks for) leaves the others waiting.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys

import jax
import numpy as np

__all__ = ["initialize", "process_count", "process_index", "is_main", "share", "gather", "parse_slice", "slice_range"]

#: Environment variables read when no argument is given (JAX itself reads the first one).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _int_env(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} must be an integer") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Start ``jax.distributed`` for ``num_processes`` processes that meet at ``coordinator`` (``HOST:PORT``, served
    by process 0); unset arguments come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``. Does nothing (returns False) when no coordinator is given either way, or when
    ``num_processes`` is 1; returns True once started (a second call with the same settings is a no-op).

    Call it before anything else uses JAX (before the first array is made)."""
    coordinator = coordinator if coordinator is not None else os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _int_env(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _int_env(ENV_PROCESS_ID)
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError("a run over several processes needs the coordinator's address (HOST:PORT of process 0): "
                             f"pass --coordinator or set {ENV_COORDINATOR}")
        return False
    if not re.fullmatch(r"\[?[A-Za-z0-9_.:-]+\]?:[0-9]{1,5}", str(coordinator)):
        raise ValueError(f"coordinator must be HOST:PORT (for example localhost:12355), got {coordinator!r}")
    if num_processes is None or process_id is None:
        raise ValueError(f"with a coordinator ({coordinator}), give the number of processes and this process's index "
                         f"(--num-processes N --process-id I, or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID})")
    if num_processes < 1:
        raise ValueError(f"the number of processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"the process index must be in [0, {num_processes}), got {process_id}")
    if num_processes == 1:
        return False
    if _started():
        if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
            raise RuntimeError(f"jax.distributed already runs as process {jax.process_index()} of {jax.process_count()}; "
                               f"cannot restart it as process {process_id} of {num_processes}")
        return True
    jax.distributed.initialize(coordinator_address=str(coordinator), num_processes=int(num_processes), process_id=int(process_id))
    return True


def _started() -> bool:
    """Whether ``jax.distributed`` runs (asked without starting JAX's backend, which must come after it)."""
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    if is_initialized is not None:
        return bool(is_initialized())
    from jax._src import distributed as _jd  # older JAX: no public test

    return getattr(_jd.global_state, "client", None) is not None


def process_count() -> int:
    """Processes taking part in the run (1 without ``jax.distributed``)."""
    return jax.process_count()


def process_index() -> int:
    """This process's index (0 is the main process, the only one that writes files)."""
    return jax.process_index()


def is_main() -> bool:
    """Whether this is the main process (index 0): the one that prints results and writes files."""
    return jax.process_index() == 0


def share(n: int, count: int | None = None, index: int | None = None) -> tuple[int, int, int]:
    """This process's share of ``n`` members: ``(lo, hi, size)``; it fits members ``lo .. hi-1`` and pads them to
    ``size = ceil(n / count)`` (every share has that size, so the shares can be gathered)."""
    count = jax.process_count() if count is None else int(count)
    index = jax.process_index() if index is None else int(index)
    size = max(1, math.ceil(n / count))
    lo = min(index * size, n)
    return lo, min(lo + size, n), size


def gather(tree, n: int):
    """Join every process's share (a pytree of arrays with leading axis ``size`` from :func:`share`) into the
    whole batch: arrays with leading axis ``n``, in member order, the same on every process (numpy arrays)."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], tree)
    from jax.experimental import multihost_utils

    local = jax.tree_util.tree_map(np.asarray, tree)
    with _stdout_to_stderr():  # the collectives' library announces its connections on standard output
        whole = multihost_utils.process_allgather(local, tiled=True)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[:n], whole)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send what native code writes to file descriptor 1 to standard error meanwhile, so standard output keeps only
    the results (a JSON object stays parseable)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def parse_slice(text: str) -> tuple[int, int]:
    """``"i/n"`` (slice i of n, counted from 0) as ``(i, n)``; a ValueError names what is wrong."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"a slice is written i/n (slice i of n, counted from 0, e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    check_slice(i, n)
    return i, n


def check_slice(index: int, count: int, total: int | None = None, what: str = "resamples") -> None:
    """A ValueError unless ``0 <= index < count`` (and ``count <= total`` when given: every slice needs one item;
    ``what``: the items, named in the message)."""
    if isinstance(index, bool) or isinstance(count, bool) or int(index) != index or int(count) != count:
        raise ValueError(f"a slice is two integers (index, count), got ({index!r}, {count!r})")
    if count < 1:
        raise ValueError(f"the number of slices must be >= 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"slice index must be in [0, {count}) for {count} slices, got {index}")
    if total is not None and count > total:
        raise ValueError(f"{count} slices of {total} {what}: every slice needs at least one {what.rstrip('s')}; use at most "
                         f"{total} slices")


def slice_range(total: int, index: int, count: int, what: str = "resamples") -> tuple[int, int]:
    """Items ``lo .. hi-1`` of slice ``index`` of ``count`` over ``total`` items (contiguous; sizes differ by at
    most one)."""
    check_slice(index, count, total, what)
    return index * total // count, (index + 1) * total // count


def part_names(parts, names, kind: type) -> list[str]:
    """The names of ``parts`` in messages (``names``, or "part j"), after checking that there is at least one part,
    one name per part, and that every part is a ``kind``."""
    names = [f"part {j}" for j in range(len(parts))] if names is None else [str(x) for x in names]
    if not parts:
        raise ValueError("merge needs at least one part")
    if len(names) != len(parts):
        raise ValueError(f"{len(parts)} parts but {len(names)} names")
    for p, name in zip(parts, names):
        if not isinstance(p, kind):
            raise TypeError(f"{name} is a {type(p).__name__}, not a {kind.__name__}")
    return names


def check_slice_set(slices, names, what: str) -> int:
    """The slice count n of ``slices`` (``(index, count)`` per part), or a ValueError when the parts cut ``what``
    into different counts, give a slice twice or leave one out."""
    counts = sorted({int(c) for _, c in slices})
    if len(counts) != 1:
        raise ValueError(f"the parts cut {what} into different numbers of slices: {counts}")
    n = counts[0]
    seen: dict[int, str] = {}
    for (i, _), name in zip(slices, names):
        i = int(i)
        if i in seen:
            raise ValueError(f"slice {i}/{n} is given twice: {seen[i]} and {name}")
        seen[i] = name
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise ValueError(f"slice(s) {', '.join(f'{i}/{n}' for i in missing)} missing: {len(slices)} of {n} parts given")
    return n
