"""``midair get``: fetch URLs (and an aria2-style input list) into a directory."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..api import Downloader
from ..core.errors import InputError
from ..core.jobs import parse_input_file
from ..engines import DEFAULT_ENGINE, ENGINES
from ..run import LISTENER, Run
from .progress import Reporter, make_reporter


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("get", help="download URLs", description=__doc__)
    p.add_argument("urls", nargs="*", metavar="URL")
    p.add_argument("-d", "--dir", default=".", help="download directory (default: .)")
    p.add_argument("-i", "--input-file", metavar="FILE",
                   help="aria2-style list of URLs with out=, dir=, checksum=, header= ('-': stdin)")
    p.add_argument("-j", "--concurrency", type=_positive, default=100,
                   help="transfers in the air at once (default: 100)")
    p.add_argument("--per-host", type=_positive, default=6,
                   help="connections per host (default: 6)")
    p.add_argument("--retries", type=int, default=5, help="retries per file (default: 5)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds without a byte before an attempt is retried (default: 30)")
    p.add_argument("--max-retry-wait", type=float, default=60.0,
                   help="cap on backoff and Retry-After, seconds (default: 60)")
    p.add_argument("--checksum", metavar="ALGO=HEX", help="expected digest, e.g. sha-256=…")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files midair did not create")
    p.add_argument("--auto-rename", action="store_true",
                   help="on a name clash, save as NAME.1, NAME.2, …")
    p.add_argument("--max-filesize", type=int, metavar="BYTES")
    p.add_argument("--lowest-speed", type=int, default=0, metavar="BYTES_PER_S",
                   help="retry an attempt slower than this over --lowest-speed-time")
    p.add_argument("--lowest-speed-time", type=float, default=10.0, metavar="S")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--ca-certificate", metavar="FILE", help="trust this CA bundle as well")
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=sorted(ENGINES),
                   help=f"concurrency model (default: {DEFAULT_ENGINE}; see `midair engines`)")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default=None,
                   help="event loop for the asyncio and reactor engines")
    p.add_argument("--workers", type=_positive, default=None,
                   help="worker processes for the processes and dask engines")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler to join")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    p.set_defaults(run=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    downloader = Downloader(args.dir, engine=args.engine, engine_options=_engine_options(args),
                            **_options(args))
    for url in args.urls:
        downloader.enqueue(url)
    if args.input_file:
        downloader.add_jobs(parse_input_file(*_read_input(args.input_file)))
    if not downloader.jobs:
        raise InputError("no URLs given (pass URLs or -i FILE)")
    if args.insecure:
        print("midair: warning: --insecure: TLS certificates and host names are not verified",
              file=sys.stderr)
    reporter = make_reporter(json=args.json, quiet=args.quiet)
    downloader.on_event = reporter.event
    results = downloader.run(around=lambda run: _display(reporter, run))
    return 0 if results.ok else 1


@contextlib.contextmanager
def _display(reporter: Reporter, run: Run) -> Iterator[None]:
    """The live view for the run's duration; the summary only if it ended normally."""
    started = time.monotonic()
    with reporter.live(run.tracker, on_error=lambda exc: run.fail(exc, LISTENER)):
        yield
    reporter.summary(run.tracker, time.monotonic() - started)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "concurrency": args.concurrency, "per_host": args.per_host, "retries": args.retries,
        "timeout": args.timeout, "max_retry_wait": args.max_retry_wait,
        "headers": args.header, "overwrite": args.overwrite, "auto_rename": args.auto_rename,
        "max_filesize": args.max_filesize, "lowest_speed": args.lowest_speed,
        "lowest_speed_time": args.lowest_speed_time, "insecure": args.insecure,
        "ca_certificate": args.ca_certificate,
    }
    if args.checksum:
        options["checksum"] = args.checksum
    from .. import __version__

    options["user_agent"] = f"midair/{__version__}"
    return options


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {"loop": args.loop, "workers": args.workers, "scheduler": args.scheduler}
    return {k: v for k, v in chosen.items() if v is not None}


def _read_input(name: str) -> tuple[str, str]:
    if name == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(name, encoding="utf-8") as f:
            return f.read(), name
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text") from None
