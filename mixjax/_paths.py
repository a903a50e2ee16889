"""Where mixjax writes: one check of an output path before any work, and one atomic write.

Rules (the same for the command line and the Python API): an output path is refused when it is empty, a directory,
an existing file that is not a regular file (a character or block device such as ``/dev/null``, a FIFO, a socket),
a path under ``/dev``, ``/proc`` or ``/sys`` (``/dev/stdout`` included), a read-only file, a file inside the installed
package (its bundled datasets),
the same file as one of the command's inputs (by ``os.path.samefile``, so links count), or when its folder is missing
or not writable. An existing regular file that is not an input (for example an earlier output of mixjax) is replaced;
a symbolic link is written through (the file it points to is replaced, the link stays).
Files are written under a temporary name in the same folder and moved into place, so a failed write leaves nothing
at the path, and they get the permissions of a newly created file (``0o666`` less the umask), not ``mkstemp``'s
``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable

__all__ = ["OutputPathError", "check_output_target", "atomic_write"]


class OutputPathError(ValueError):
    """An output path that mixjax will not write to; the message names the path and why."""


def _kind(mode: int) -> str | None:
    """A name for a file type that is not a regular file or a directory, else None."""
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _package_folder() -> str:
    return os.path.dirname(os.path.realpath(__file__))


def check_output_target(path, *, inputs: Iterable = (), label: str = "output path", suffixes: tuple[str, ...] | None = None) -> str:
    """Check that ``path`` may be written (rules in the module docstring); returns the path to write: ``path``
    itself, or the file a symbolic link at ``path`` points to (written through, so the link stays a link).

    ``inputs``: paths the same command reads (files that do not exist, or names of bundled datasets, are skipped);
    ``label``: how the message names the argument (``--output``, ``path``); ``suffixes``: allowed extensions."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise OutputPathError(f"{label} must be a file name (str or path), got {type(path).__name__}")
    given = os.fspath(path)
    if not given:
        raise OutputPathError(f"{label} is empty; give a file name")
    if suffixes and not given.lower().endswith(suffixes):
        raise OutputPathError(f"{label} must end in {', '.join(suffixes)}, got {given!r}")
    if suffixes and os.path.basename(given).lower() in suffixes:
        raise OutputPathError(f"{label} {given!r} has no name before its extension; give e.g. figure{os.path.basename(given)}")
    folder = os.path.dirname(given) or "."
    if not os.path.isdir(folder):  # before resolving: 'x/../out' needs the folder x
        raise OutputPathError(f"{label} {given!r}: the folder {folder!r} does not exist")
    p = os.path.realpath(given) if os.path.islink(given) else given
    real = os.path.realpath(p)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputPathError(f"{label} {given!r} cannot be examined ({e.strerror or e})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{label} {given!r} is a directory; give a file name")
        kind = _kind(st.st_mode)
        if kind:
            raise OutputPathError(f"{label} {given!r} is {kind}, not a regular file; mixjax writes results only to regular files")
        for src in inputs:
            if src is None:
                continue
            s = os.fspath(src)
            if os.path.exists(s) and _same_file(p, s):
                raise OutputPathError(f"{label} {given!r} is the input file {s!r}; writing there would destroy it: choose another name")
        if not os.access(p, os.W_OK) or not st.st_mode & 0o222:  # mode bits too: root may write anything
            raise OutputPathError(f"{label} {given!r} exists and is read-only; make it writable or choose another name")
    for special in ("/dev/", "/proc/", "/sys/"):
        if real.startswith(special) or os.path.abspath(given).startswith(special):
            raise OutputPathError(f"{label} {given!r} is a system device path ({real}); mixjax writes results only to regular files")
    if real.startswith(_package_folder() + os.sep):
        raise OutputPathError(f"{label} {given!r} lies inside the installed mixjax package ({_package_folder()}); choose another folder")
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise OutputPathError(f"{label} {given!r}: the folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{label} {given!r}: the folder {parent!r} is not writable")
    return p


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write: Callable[[str], None], *, inputs: Iterable = (), label: str = "output path") -> None:
    """Check ``path`` (:func:`check_output_target`), call ``write(tmp)`` on a temporary file beside it (same
    extension, so writers that choose a format by extension see the right one), give it the permissions of a new
    file and move it into place. On any failure the temporary file is removed and ``path`` is left as it was."""
    p = check_output_target(path, inputs=inputs, label=label)
    folder = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=os.path.splitext(base)[1] or ".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
        if check_output_target(path, inputs=inputs, label=label) != p:  # the path changed while the result was written
            raise OutputPathError(f"{label} {os.fspath(path)!r} changed while the result was written; nothing was saved")
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
