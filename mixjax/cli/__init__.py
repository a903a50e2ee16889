"""The ``mixjax`` command line. Each sub-command lives in its own module of this package, which defines
``add_parser(subparsers)`` (registering the sub-command and its ``run(args) -> int`` handler).

Every failure is one line on stderr, ``mixjax COMMAND: error: ...``, with exit status 2 (argument errors, bad
input files, unreadable saved fits); an unexpected exception is reported as ``mixjax COMMAND: internal error: ...``,
also with status 2. Set ``MIXJAX_DEBUG=1`` to get the full traceback instead. Warnings are printed as one line
``mixjax COMMAND: warning: ...``. Output cut short by a closed pipe (``mixjax laws | head -3``) ends quietly with
status 141, as a shell reports a process stopped by SIGPIPE. A closed standard output (``mixjax laws >&-``) is an
error (status 2) found before the command runs.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

# Sub-command modules, in the order ``mixjax --help`` lists them.
COMMAND_MODULES = ["datasets", "laws", "fit", "compare", "predict", "plot", "bootstrap", "merge", "optimize", "suggest"]

EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mixjax fit: error: ...`` (exit status 2), no usage block."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mixjax",
        description="Fit data-mixing scaling laws, quantify their uncertainty, and find optimal mixtures. "
        "Model sizes are raw parameter counts (1.22e8 or 122M) and token counts raw tokens (9.998e9 or 9.998B). "
        "Errors are one line on stderr with exit status 2 (MIXJAX_DEBUG=1 shows tracebacks).",
    )
    from mixjax import __version__

    parser.add_argument("--version", action="version", version=f"mixjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"mixjax.cli.{name}").add_parser(sub)
    return parser


def _one_line(text, limit: int = 1200) -> str:
    """Whitespace (newlines included) collapsed; beyond ``limit`` characters the middle is elided, keeping the start
    (what failed, usually with a file path) and the end (what was expected instead)."""
    s = " ".join(str(text).split())
    if len(s) <= limit:
        return s
    half = (limit - 5) // 2
    return s[:half] + " ... " + s[-half:]


def _debug() -> bool:
    return os.environ.get("MIXJAX_DEBUG", "") not in ("", "0")


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


def _stdout_closed() -> bool:
    """Whether standard output cannot be written: closed when the process started (``sys.stdout`` is None), closed
    since, or a file descriptor that is no longer open."""
    out = sys.stdout
    if out is None or getattr(out, "closed", False):
        return True
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (io.StringIO) has no descriptor
        return False
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


STDOUT_CLOSED = "standard output is closed; redirect it to a file or to /dev/null instead"


def main(argv: list[str] | None = None) -> int:
    """Run ``mixjax`` with ``argv`` (default: the process arguments); returns the exit status."""
    import jax

    jax.config.update("jax_enable_x64", True)  # the default --dtype float64 needs it; an application may set it
    from mixjax.data import DataError
    from mixjax.io import FitFileError

    from ._common import CliError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argument error already printed as one line
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    prog = f"mixjax {args.command}"
    if _stdout_closed():
        print(f"{prog}: error: {STDOUT_CLOSED}", file=sys.stderr)
        return EXIT_ERROR

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)

    def fail(kind: str, e: BaseException) -> int:
        msg = _one_line(e) or type(e).__name__
        if kind == "internal error":
            msg = f"{type(e).__name__}: {msg}"
        print(f"{prog}: {kind}: {msg}", file=sys.stderr)
        return EXIT_ERROR

    with warnings.catch_warnings():
        # a command reports mixjax's warnings (UserWarning and its subclasses) as "mixjax CMD: warning: ..." lines on
        # stderr whatever the caller's filters (a program or test suite that turns warnings into errors included)
        warnings.simplefilter("default", UserWarning)
        warnings.showwarning = show_warning
        try:
            rc = int(args.run(args) or 0)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:
            _quiet_stdout()
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            if _debug():
                raise
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
        except (CliError, DataError, FitFileError, ValueError, OSError, RuntimeError) as e:
            if _debug():
                raise
            if isinstance(e, (OSError, ValueError)) and _stdout_closed() and getattr(e, "errno", errno.EBADF) == errno.EBADF:
                _quiet_stdout()
                return fail("error", STDOUT_CLOSED)
            if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in str(e):
                return fail("error", f"{e.filename}: {e}")
            return fail("error", e)
        except Exception as e:  # last resort: never a traceback on the user's screen
            if _debug():
                raise
            if _stdout_closed():  # e.g. an AttributeError of a write to a standard output set to None
                return fail("error", STDOUT_CLOSED)
            return fail("internal error", e)


if __name__ == "__main__":
    sys.exit(main())
