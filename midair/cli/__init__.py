"""The ``midair`` command: one module per subcommand, each with ``add_parser`` and ``run``.

Exit statuses: 0 all succeeded; 1 some downloads failed; 2 bad usage or
input; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).  Part files are
flushed on every exit path, so re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import InputError

SUBCOMMANDS = ("get", "serve", "demo", "bench", "engines")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM so cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midair", description="Download many files from many slow servers at once.")
    parser.add_argument("--version", action="version", version=f"midair {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"midair.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"midair.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def raise_open_file_limit() -> None:
    """Thousands of transfers need thousands of descriptors: take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_open_file_limit()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.run(args))
    except InputError as exc:
        print(f"midair: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("midair: interrupted; part files kept, run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("midair: terminated; part files kept", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    sys.exit(main())
