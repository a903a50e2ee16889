"""The ``mixjax`` command line. Each sub-command lives in its own module of this package, which defines
``add_parser(subparsers)`` (registering the sub-command and its ``run(args) -> int`` handler)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order ``mixjax --help`` lists them.
COMMAND_MODULES = ["datasets", "laws", "fit", "predict", "plot", "bootstrap", "optimize"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixjax",
        description="Fit data-mixing scaling laws, quantify their uncertainty, and find optimal mixtures. "
        "Model sizes are raw parameter counts (1.22e8 or 122M) and token counts raw tokens (9.998e9 or 9.998B).",
    )
    from mixjax import __version__

    parser.add_argument("--version", action="version", version=f"mixjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mixjax.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._common import CliError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except CliError as e:
        print(f"mixjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        print(f"mixjax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
