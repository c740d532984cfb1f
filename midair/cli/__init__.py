"""The ``midair`` command: one module per subcommand, each with ``add_parser`` and ``run``.

Exit statuses: 0 all succeeded; 1 some downloads failed or an internal error
(reported with its traceback); 2 bad usage or input; 130 interrupted (Ctrl-C);
143 terminated (SIGTERM).  Part files are flushed on every exit path, so
re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import os
import resource
import signal
import sys

from .._version import __version__

TYPE_CHECKING = False  # not typing's: `midair --version` never imports typing (~2 ms)
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, NoReturn

# name -> one-line help.  Only the chosen subcommand's module is imported: the
# others (bench, serve) pull in much that `midair get` never needs.  Nor is the
# core until the arguments are parsed: `midair --version` and `--help` load none of it.
SUBCOMMANDS = {
    "get": "download URLs",
    "serve": "run the slow, faulty HTTP test server on loopback addresses",
    "demo": "one-by-one vs all-at-once on local slow servers",
    "bench": "benchmark midair's engines against other clients",
    "engines": "list the engines and their concurrency models",
    "status": "what a directory's batch journal says: counts, failures, rate",
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def _untranslated(message: str) -> str:
    return message


def _untranslated_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


# argparse hands each of its words to gettext: ~18 look-ups per `midair get`, each
# scanning the locale variables, normalising them with `locale` (imported for it) and
# stat-ing catalogue paths, ~2.5 ms before the first connect.  Python ships no catalogue
# for those words and midair's own text is English, so the look-ups never find one.
argparse._ = _untranslated  # type: ignore[attr-defined]
argparse.ngettext = _untranslated_plural  # type: ignore[attr-defined]


def _on_sigterm(signum: int, frame: object) -> None:
    """Outside a run (list loading, set-up) SIGTERM ends at once; a run only stops."""
    from ..run import Terminated  # loaded by main before this handler is installed

    raise Terminated


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, naming the option, exit 2 (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"midair: error: {message} (see `{self.prog} --help`)\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter per add_argument, each asking shutil (imported
        # for it, with bz2 and lzma: ~2 ms) for the terminal size.
        make: Any = self.formatter_class  # every HelpFormatter takes width; its stub omits it
        formatter: argparse.HelpFormatter = make(prog=self.prog, width=_help_width())
        return formatter


@functools.cache
def _help_width() -> int:
    """The width argparse would get from shutil.get_terminal_size, asked once."""
    with_env = os.environ.get("COLUMNS", "")
    if with_env.isdigit() and int(with_env) > 0:
        return int(with_env) - 2
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns - 2  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
        return 80 - 2


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser for the subcommand named in ``argv``; a one-line entry for the rest."""
    parser = _Parser(
        prog="midair", description="Download many files from many slow servers at once."
    )
    parser.add_argument("--version", action="version", version=f"midair {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(f"midair.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def raise_open_file_limit() -> int:
    """Thousands of transfers need thousands of descriptors: take what the hard limit
    allows (children inherit it).  Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the command starts.

    Loading the subcommand's modules (and the core's) and building its parser makes tens
    of thousands of objects that live as long as the process: the collector's passes over
    them find nothing and cost ~2 ms before the first connect.  They are then moved out of
    the collector's generations (``gc.freeze``), or its first pass would walk them all.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with _collector_paused():
        args = build_parser(argv).parse_args(argv)
    from ..core.errors import InputError
    from ..run import Terminated

    raise_open_file_limit()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.run(args))
    except InputError as exc:
        print(f"midair: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "midair: interrupted; part files kept, run the same command to resume", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except Terminated:
        print("midair: terminated; part files kept", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `midair engines | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # a bug: say so on one line, then show where
        import traceback

        print(f"midair: error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    try:
        code = main()
    except SystemExit as exc:  # argparse's own exits: --version, --help, usage errors
        if not isinstance(exc.code, int):
            raise
        code = exc.code
    _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """Skip the interpreter's teardown when nothing is left to finish.

    Freeing every module and object of a large run takes tens of milliseconds
    (half a second after a 300,000-job run: the last full collection walks every
    object) after the last file is already safe on disk.  By the time ``main`` returns,
    every engine has closed its files and joined its workers; if a non-daemon
    thread still runs (an embedding program's, say), or a profiler is attached,
    exit normally.
    """
    import threading

    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return  # a profiler or coverage writes its report at exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # stdout closed under us: nothing more to say
        pass
    os._exit(code)
