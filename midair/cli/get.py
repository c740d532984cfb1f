"""``midair get``: fetch URLs (and an aria2-style input list) into a directory."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator

from ..api import Downloader
from ..core.errors import InputError
from ..core.jobs import Job, Options, iter_input_file
from ..core.metalink import parse_locations
from ..engines import DEFAULT_ENGINE, ENGINES
from ..run import LISTENER, Run
from ._units import parse_size
from .progress import Reporter, make_reporter

JOURNAL_NAME = ".midair-journal.sqlite"  # journal.DEFAULT_NAME, without importing sqlite3

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

D = Options()  # the defaults, written once: argparse shows them and passes only what was given


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("get", help="download URLs", description=__doc__)
    p.add_argument("urls", nargs="*", metavar="URL")
    p.add_argument("-d", "--dir", default=".", help="download directory (default: .)")
    p.add_argument(
        "-i",
        "--input-file",
        metavar="FILE",
        help="aria2-style list of URLs with out=, dir=, checksum=, header= ('-': stdin)",
    )
    p.add_argument(
        "-M",
        "--metalink",
        action="append",
        metavar="FILE",
        help="download the files a Metalink (v4 .meta4 or v3 .metalink) lists (repeatable)",
    )
    p.add_argument(
        "--metalink-location",
        type=parse_locations,
        metavar="LOC[,LOC...]",
        help="a Metalink's URLs of servers in these locations (country codes) first",
    )
    p.add_argument(
        "--no-follow-metalink",
        dest="follow_metalink",
        action="store_false",
        default=None,
        help="save a .meta4/.metalink URL as a file instead of downloading what it lists",
    )
    p.add_argument(
        "--check-input",
        action="store_true",
        help="read the whole -i list before starting: a bad entry stops the run (exit 2); "
        "without it a bad entry is reported, skipped and fails the run at the end (exit 1)",
    )
    p.add_argument(
        "-j",
        "--concurrency",
        type=whole,
        metavar="N",
        help=f"transfers in the air at once (default: {D.concurrency})",
    )
    p.add_argument(
        "--per-host", type=whole, metavar="N", help=f"connections per host (default: {D.per_host})"
    )
    p.add_argument(
        "--retries", type=whole, metavar="N", help=f"retries per file (default: {D.retries})"
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        metavar="S",
        help=f"seconds without a byte before an attempt is retried (default: {D.timeout:g})",
    )
    p.add_argument(
        "--max-retry-wait",
        type=seconds,
        metavar="S",
        help=f"cap on backoff and Retry-After, seconds (default: {D.max_retry_wait:g})",
    )
    p.add_argument("--checksum", metavar="ALGO=HEX", help="expected digest, e.g. sha-256=…")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="'Name: value'",
        help="extra request header, replacing midair's own of that name (repeatable)",
    )
    p.add_argument("--user-agent", metavar="STRING", help=f"User-Agent (default: {D.user_agent})")
    p.add_argument(
        "-u",
        "--user",
        metavar="USER[:PASSWORD]",
        help="Basic credentials for URLs without user:password@ (only to their own origin); "
        "USER alone asks for the password on the terminal, keeping it out of ps",
    )
    netrc = p.add_mutually_exclusive_group()
    netrc.add_argument(
        "--netrc",
        action="store_true",
        default=None,
        help="credentials from $NETRC or ~/.netrc for hosts without --user or userinfo",
    )
    netrc.add_argument("--netrc-file", metavar="FILE", help="as --netrc, from FILE")
    p.add_argument(
        "--load-cookies", metavar="FILE", help="send cookies from FILE (Netscape format)"
    )
    p.add_argument(
        "--save-cookies", metavar="FILE", help="write every cookie at the end to FILE (Netscape)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace existing files midair did not create",
    )
    p.add_argument(
        "--auto-rename",
        action="store_true",
        default=None,
        help="accepted for old scripts: saving duplicates as NAME.1, NAME.2, … is the default",
    )
    p.add_argument(
        "--no-clobber",
        action="store_true",
        default=None,
        help="fail a URL whose name another URL of the list (or of an earlier run) took",
    )
    p.add_argument(
        "--trust-server-names",
        action="store_true",
        default=None,
        help="name files after the last redirect's URL, not the URL given",
    )
    p.add_argument(
        "--max-filesize",
        type=size,
        metavar="BYTES",
        help="refuse bodies larger than this (units K, M, G)",
    )
    p.add_argument(
        "-s",
        "--split",
        type=whole,
        metavar="N",
        help="fetch a large file as up to N ranges at once, within -j and --per-host, "
        f"when its server honours Range (default: {D.split}: one connection)",
    )
    p.add_argument(
        "--min-split-size",
        type=size,
        metavar="BYTES",
        help=f"no range smaller than this (default: {D.min_split_size >> 20}M)",
    )
    p.add_argument(
        "--lowest-speed",
        type=size,
        metavar="BYTES_PER_S",
        help="retry an attempt slower than this over --lowest-speed-time (off)",
    )
    p.add_argument(
        "--lowest-speed-time",
        type=seconds,
        metavar="S",
        help=f"window for --lowest-speed (default: {D.lowest_speed_time:g})",
    )
    p.add_argument(
        "--max-rate",
        type=size,
        metavar="RATE",
        help="limit each file to RATE bytes/s (all its connections; units K, M, G; off)",
    )
    p.add_argument(
        "--max-overall-rate",
        type=size,
        metavar="RATE",
        help="limit all transfers together to RATE bytes/s (off)",
    )
    p.add_argument(
        "--host-delay",
        type=seconds,
        metavar="S",
        help="wait at least S seconds between two requests to one host (off)",
    )
    p.add_argument(
        "--no-fsync",
        dest="fsync",
        action="store_false",
        default=None,
        help="skip making files durable before publishing (scratch dirs, tmpfs)",
    )
    p.add_argument(
        "--insecure", action="store_true", default=None, help="do not verify TLS certificates"
    )
    journal = p.add_mutually_exclusive_group()
    journal.add_argument(
        "--journal",
        nargs="?",
        const="",
        metavar="FILE",
        help=f"keep a batch journal (default file: DIR/{JOURNAL_NAME}); a re-run continues",
    )
    journal.add_argument(
        "--no-journal", dest="journal", action="store_const", const=None, help="no journal"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        default=None,
        help="retry jobs the journal says failed in an earlier run",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        default=None,
        help="skip a journaled done job only if its file is there with its size and checksum",
    )
    p.add_argument("--ca-certificate", metavar="FILE", help="trust this CA bundle as well")
    version = p.add_mutually_exclusive_group()
    version.add_argument(
        "--http1.1",
        dest="http2",
        action="store_false",
        default=None,
        help="speak HTTP/1.1 only (default: HTTP/2 over TLS when the server offers it)",
    )
    version.add_argument(
        "--http2-prior-knowledge",
        action="store_true",
        default=None,
        help="speak HTTP/2 at once on http:// URLs (h2c, no upgrade)",
    )
    p.add_argument(
        "--proxy",
        metavar="URL",
        help="proxy for every URL: http://, socks5://, socks5h://, socks4://, socks4a:// "
        "(default: $http_proxy, $HTTPS_PROXY, $ALL_PROXY; '' for none)",
    )
    p.add_argument(
        "--noproxy",
        metavar="LIST",
        help="comma list of hosts, domains and CIDR networks to reach directly ('*': all; "
        "default: $NO_PROXY)",
    )
    p.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        choices=sorted(ENGINES),
        help=f"concurrency model (default: {DEFAULT_ENGINE}; see `midair engines`)",
    )
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default=None,
        help="event loop for the asyncio and reactor engines",
    )
    p.add_argument(
        "--workers",
        type=whole,
        default=None,
        metavar="N",
        help="worker processes for the processes and dask engines",
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler to join")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    p.set_defaults(run=run)


# Converters turn text into values; Options decides which values are acceptable.
def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def size(text: str) -> int:
    if text.strip().startswith("-"):  # let Options name the option and the bound
        return whole(text)
    return parse_size(text)


def run(args: argparse.Namespace) -> int:
    downloader = Downloader(
        args.dir, engine=args.engine, engine_options=_engine_options(args), **_options(args)
    )
    for url in args.urls:
        downloader.enqueue(url)
    for name in args.metalink or ():
        downloader.enqueue_metalink(name)
    bad = _add_input(downloader, args) if args.input_file else []
    if not downloader.jobs:
        if bad:
            return 1  # every entry was bad, each already reported: nothing to start
        raise InputError("no URLs given (pass URLs, -i FILE or -M FILE)")
    if args.insecure:
        print(
            "midair: warning: --insecure: TLS certificates and host names are not verified",
            file=sys.stderr,
        )
    reporter = make_reporter(json=args.json, quiet=args.quiet)
    downloader.on_event, downloader.listens_to = reporter.event, reporter.kinds
    downloader.keeps_successes = False  # the summary counts; no entry per file is needed
    results = downloader.run(around=lambda run: _display(reporter, run))
    return 0 if results.ok and not bad else 1


def _add_input(downloader: Downloader, args: argparse.Namespace) -> list[InputError]:
    """Add the -i list's jobs, read as the run goes (a window at a time); the bad entries,
    reported and skipped as they are reached (the list grows while the run reads).  With
    --check-input the whole list is read first and the first bad entry raises, before
    anything starts.  The first job is read here, so an empty list fails at once."""
    bad: list[InputError] = []

    def skip(error: InputError) -> None:
        bad.append(error)
        print(f"midair: {error} (entry skipped)", file=sys.stderr)

    if args.check_input:
        _add_stream(downloader, iter(_checked(args.input_file)))
        return bad
    name = args.input_file
    _add_stream(downloader, iter_input_file(_open_input(name), _source_name(name), skip))
    return bad


def _add_stream(downloader: Downloader, jobs: Iterator[Job]) -> None:
    """Add ``jobs``, read as the run goes; the first is read here, so an empty list (or
    one whose every entry is bad) is known before anything starts."""
    first = next(jobs, None)
    if first is not None:
        downloader.add_jobs([first])
        downloader.add_jobs(jobs)


def _checked(name: str) -> Iterator[Job] | list[Job]:
    """--check-input: every entry of the list read (and checked) before the run starts; a
    file is then read again as the run goes, rather than held whole (stdin is held)."""
    source = _source_name(name)
    if name == "-":
        return list(iter_input_file(_open_input(name), source))
    for _ in iter_input_file(_open_input(name), source):
        pass
    return iter_input_file(_open_input(name), source)


@contextlib.contextmanager
def _display(reporter: Reporter, run: Run) -> Iterator[None]:
    """The live view for the run's duration; the summary only if it ended normally."""
    started = time.monotonic()
    with reporter.live(run.tracker, on_error=lambda exc: run.fail(exc, LISTENER)):
        yield
    reporter.summary(run.tracker, time.monotonic() - started)


_OPTIONS = (
    "concurrency",
    "per_host",
    "retries",
    "timeout",
    "max_retry_wait",
    "checksum",
    "user_agent",
    "overwrite",
    "auto_rename",
    "no_clobber",
    "trust_server_names",
    "max_filesize",
    "split",
    "min_split_size",
    "lowest_speed",
    "lowest_speed_time",
    "max_rate",
    "max_overall_rate",
    "host_delay",
    "fsync",
    "insecure",
    "ca_certificate",
    "user",
    "netrc",
    "load_cookies",
    "save_cookies",
    "http2",
    "http2_prior_knowledge",
    "proxy",
    "noproxy",
    "journal",
    "retry_failed",
    "verify",
    "follow_metalink",
    "metalink_location",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line; Options supplies every default."""
    options = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    if args.header:
        options["headers"] = args.header
    if args.netrc_file:
        options["netrc"] = args.netrc_file
    if args.user is not None and ":" not in args.user:
        options["user"] = f"{args.user}:{_ask_password(args.user)}"
    return options


def _ask_password(user: str) -> str:
    """``--user USER``: the password from the terminal, as curl asks for it (a password in
    the command line is visible to every user in ps)."""
    if not sys.stdin.isatty():
        raise InputError(
            f"--user {user}: no password given and no terminal to ask on "
            "(give USER:PASSWORD, or --netrc to keep it out of ps)"
        )
    import getpass

    try:
        return getpass.getpass(f"Enter host password for user '{user}': ")
    except EOFError:
        raise InputError(f"--user {user}: no password given") from None


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {"loop": args.loop, "workers": args.workers, "scheduler": args.scheduler}
    return {k: v for k, v in chosen.items() if v is not None}


def _source_name(name: str) -> str:
    return "<stdin>" if name == "-" else name


def _open_input(name: str) -> Iterator[str]:
    """The list's lines as they are read.  A file that cannot be opened fails here, before
    the run; one that is not UTF-8 fails where the bad bytes are reached (an InputError,
    which stops the run: what came before it is kept)."""
    if name == "-":
        return _lines(sys.stdin, name)
    try:
        f = open(name, encoding="utf-8")  # noqa: SIM115 -- closed by _lines, read or dropped
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror}") from None
    return _lines(f, name)


def _lines(f: Any, name: str) -> Iterator[str]:
    try:
        with contextlib.closing(f) if f is not sys.stdin else contextlib.nullcontext():
            yield from f
    except UnicodeDecodeError:
        raise InputError(f"{_source_name(name)}: not UTF-8 text") from None
