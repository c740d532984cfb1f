"""Every client the bench can run, each with the batch flags its docs recommend.

A client turns a ``Job`` (these URLs, one per line in ``list_file``, into
``out``, this many in flight, this many per host) into a command line. Peers:
curl ``--parallel``, aria2c, wget2, a sequential curl loop, and the Python
libraries in ``midair.bench.peers``; midair appears as ``midair-default``
(plain ``midair get``, no ``--engine``: what a user gets) and once per engine as
``midair-ENGINE``. Each is used only if installed; versions are recorded.

Beside them, in ``small`` only, the *reference loop* ``python-floor`` (three rows:
``-direct``, ``-atomic``, ``-tagged``): ``peers/python_floor.py``, a bare CPython epoll
loop doing the least a client must (no retries, resume or checks beyond a 200 and the
length). It is not a client and is not ranked: its rows say what CPython itself needs
per file, writing to the final name as curl does, with midair's part file and rename,
and with midair's tag as well.

Every peer gets the options a competent user would pick for a batch: N
transfers in flight, keep-alive (the default of each), no progress output, no
preallocation; where a peer cannot honour a limit the bench asks for (a
per-host cap, more than 300 in flight) its ``note`` says so in the report.
"""

from __future__ import annotations

import compileall
import functools
import platform
import re
import select
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from midair.bench.measure import package_version, tool_version

__all__ = [
    "CURL_PARALLEL_CAP",
    "DEFAULT",
    "DEFAULT_CLIENT",
    "NO_FSYNC",
    "NO_FSYNC_CLIENT",
    "PEERS",
    "PEER_GROUPS",
    "Client",
    "Job",
    "compile_midair",
    "engine_clients",
    "get_help",
    "no_fsync_client",
    "select_clients",
]

CURL_PARALLEL_CAP = 300  # curl clamps --parallel-max to 300 before 8.16
SPLIT_MIN = "1M"  # --min-split-size for midair and aria2c in split scenarios (aria2's least)
DEFAULT = "default"  # the --engines name of plain `midair get`
DEFAULT_CLIENT = "midair-default"
NO_FSYNC = "--no-fsync"
NO_FSYNC_CLIENT = "midair-nofsync"


@dataclass(frozen=True)
class Job:
    """What a client is asked to do: these URLs into ``out``."""

    urls: list[str]
    list_file: Path
    out: Path
    jobs: int
    per_host: int
    ca: Path | None = None  # a TLS scenario's CA certificate: the client must trust it
    split: int = 0  # connections per file, for a client that fetches ranges in parallel
    mirrors: list[list[str]] | None = None  # each file's URLs, when it has several


@dataclass(frozen=True)
class Client:
    """How to run one client in batch mode, as fast as its own options allow."""

    name: str
    command: Callable[[Job], list[str]]
    version: Callable[[], str | None]  # None = not installed
    sequential: bool = False  # one transfer at a time, whatever ``jobs`` says
    only: tuple[str, ...] = ()  # scenarios it runs in (empty = all)
    cap: Callable[[str], int | None] = lambda version: None  # most it keeps in flight
    note: str = ""
    reference: bool = False  # a measuring loop shown beside the clients, not ranked
    tls: bool = False  # takes ``Job.ca`` and speaks HTTP/2 over TLS: runs in TLS scenarios
    splits: bool = False  # takes ``Job.split``: fetches one file over several connections

    def in_flight(self, files: int, jobs: int, version: str) -> int:
        """How many transfers this client really keeps in the air for this job."""
        wanted = 1 if self.sequential else min(files, jobs)
        cap = self.cap(version)
        return min(wanted, cap) if cap else wanted


def _curl_cmd(job: Job) -> list[str]:
    """curl reads URL/output pairs from a config file (-K): no argv length limit."""
    config = job.list_file.with_suffix(".curl")
    config.write_text("".join(f'url = "{u}"\noutput = "{job.out / _name(u)}"\n' for u in job.urls))
    # Over HTTP/2, no --parallel-immediate: curl waits to multiplex on one connection.
    immediate = [] if job.ca else ["--parallel-immediate"]
    return [
        "curl",
        "-q",
        "--parallel",
        *immediate,
        "--parallel-max",
        str(job.jobs),
        "--fail",
        "-sS",
        "-K",
        str(config),
        *(["--http2", "--cacert", str(job.ca)] if job.ca else []),
    ]


def _curl_loop_cmd(job: Job) -> list[str]:
    """What many scripts do: one curl process per file, one after another."""
    script = (
        'while IFS= read -r u; do curl -q -sS --fail -o "$2/${u##*/}" "$u" || exit 1; done <"$1"'
    )
    return ["sh", "-c", script, "curl-loop", str(job.list_file), str(job.out)]


def _aria2_cmd(job: Job) -> list[str]:
    split = str(job.split or 1)
    return [
        "aria2c",
        "-i",
        str(job.list_file),
        "--deferred-input=true",
        "-d",
        str(job.out),
        "-j",
        str(job.jobs),
        f"--max-connection-per-server={split}",
        f"--split={split}",
        *([f"--min-split-size={SPLIT_MIN}"] if job.split else []),
        "--file-allocation=none",
        "--quiet=true",
        "--show-console-readout=false",
        "--console-log-level=error",
        "--summary-interval=0",
        "--download-result=hide",
        "--auto-file-renaming=false",
        "--allow-overwrite=true",
        "--no-conf=true",
    ]


def _axel_cmd(job: Job) -> list[str]:
    """axel fetches one file (the split scenarios') over ``-n`` connections, from each of
    its URLs (mirrors) when it has several."""
    [url] = job.urls
    urls = job.mirrors[0] if job.mirrors else [url]
    return ["axel", "-q", "-n", str(job.split or 1), "-o", str(job.out / _name(url)), *urls]


def _wget2_cmd(job: Job) -> list[str]:
    return [
        "wget2",
        "--no-config",
        "-q",
        "--progress=none",
        "--max-threads",
        str(job.jobs),
        "-i",
        str(job.list_file),
        "-P",
        str(job.out),
        "--no-hsts",
        "--no-hpkp",
        "--no-netrc",
    ]


def _python_peer(module: str) -> Callable[[Job], list[str]]:
    def command(job: Job) -> list[str]:
        return [
            sys.executable,
            "-m",
            f"midair.bench.peers.{module}",
            str(job.list_file),
            str(job.out),
            "--concurrency",
            str(job.jobs),
            "--per-host",
            str(job.per_host),
            *(["--ca", str(job.ca)] if job.ca else []),
        ]

    return command


FLOOR = "python-floor"
FLOOR_SCRIPT = Path(__file__).with_name("peers") / "python_floor.py"
_FLOOR_VARIANTS = {  # row -> (flags, how it writes each file)
    f"{FLOOR}-direct": (["--direct"], "straight to the final name, as curl and wget2"),
    f"{FLOOR}-atomic": ([], "NAME.midair-part, then a rename (atomic publication, as midair)"),
    f"{FLOOR}-tagged": (["--tag"], "as -atomic, plus midair's user.midair tag (fsetxattr)"),
}


def _floor_cmd(flags: list[str]) -> Callable[[Job], list[str]]:
    """Run by path, not ``-m``: importing no midair package, its start-up is CPython's."""

    def command(job: Job) -> list[str]:
        argv = [sys.executable, str(FLOOR_SCRIPT), str(job.list_file), str(job.out)]
        return [*argv, "--in-flight", str(job.jobs), *flags]

    return command


def _floor_version() -> str | None:
    """The CPython running it; None (skipped) without epoll, which the loop is built on."""
    if not hasattr(select, "epoll") or not FLOOR_SCRIPT.is_file():
        return None
    return f"{platform.python_implementation()} {platform.python_version()}"


def _floor_clients() -> list[Client]:
    return [
        Client(
            name,
            _floor_cmd(flags),
            _floor_version,
            only=("small",),
            reference=True,
            note=f"reference loop, not a client (small only): python_floor.py, one epoll "
            f"thread, N keep-alive connections, per file a GET, a 200 and its length, "
            f"then {how}",
        )
        for name, (flags, how) in _FLOOR_VARIANTS.items()
    ]


def _binary_version(name: str) -> Callable[[], str | None]:
    def version() -> str | None:
        path = shutil.which(name)
        return tool_version([path, "--version"]) if path else None

    return version


def _package(dist: str, *needs: str) -> Callable[[], str | None]:
    def version() -> str | None:
        if any(package_version(n) is None for n in needs):
            return None
        return package_version(dist)

    return version


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1].partition("?")[0]


def _curl_cap(version: str) -> int | None:
    """300 for curl < 8.16, none after (it lifted the clamp)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return CURL_PARALLEL_CAP if found and (int(found[1]), int(found[2])) < (8, 16) else None


def _midair_journal_cmd(job: Job) -> list[str]:
    return _midair_cmd("--journal")(job)  # defined below: looked up at call time


def _midair_version() -> str:
    from midair import __version__

    return __version__


PEERS: dict[str, Client] = {
    c.name: c
    for c in [
        Client(
            "curl",
            _curl_cmd,
            _binary_version("curl"),
            cap=_curl_cap,
            tls=True,
            note="--parallel --parallel-max N, connections kept alive and reused; "
            "no per-host cap before 8.16 (--parallel-max-host); "
            "--parallel-max clamped to 300 before 8.16",
        ),
        Client(
            "aria2c",
            _aria2_cmd,
            _binary_version("aria2c"),
            splits=True,
            note="-j N, --max-connection-per-server=1 --split=1 (split scenarios: -x N -s N "
            f"--min-split-size={SPLIT_MIN}), keep-alive, "
            "--file-allocation=none, no console readout; -x is per download, so no "
            "cross-download per-host cap",
        ),
        Client(
            "axel",
            _axel_cmd,
            _binary_version("axel"),
            splits=True,
            only=("split", "mirrors"),
            note="-n N connections for the one file, its mirrors as more URLs (split "
            "scenarios only)",
        ),
        Client(
            "wget2",
            _wget2_cmd,
            _binary_version("wget2"),
            note="--max-threads N (keep-alive by default): one thread per transfer, "
            "no per-host cap",
        ),
        Client(
            "curl-loop",
            _curl_loop_cmd,
            _binary_version("curl"),
            sequential=True,
            only=("seed",),
            note="one curl process per file, one after another (seed only)",
        ),
        Client(
            "parfive",
            _python_peer("parfive_peer"),
            _package("parfive", "aiohttp"),
            note="Downloader(max_conn=N, max_splits=1), aiohttp pool sized to N",
        ),
        Client(
            "requests",
            _python_peer("requests_peer"),
            _package("requests"),
            note="ThreadPoolExecutor(N), one Session per thread",
        ),
        Client(
            "aiohttp",
            _python_peer("aiohttp_peer"),
            _package("aiohttp"),
            note="TCPConnector(limit=N, limit_per_host=per-host), gather + semaphore",
        ),
        Client(
            "httpx",
            _python_peer("httpx_peer"),
            _package("httpx"),
            tls=True,
            note="AsyncClient(limits=Limits(max_connections=N)); no per-host cap; "
            "http2=True in TLS scenarios",
        ),
        *_floor_clients(),
        Client(
            "midair-journal",
            _midair_journal_cmd,
            _midair_version,
            note="midair-default with --journal: every job's state in a SQLite journal "
            "in the download directory; the difference is what the journal costs",
        ),
    ]
}
PEER_GROUPS = {FLOOR: list(_FLOOR_VARIANTS)}  # a --peers name that stands for several


def _midair_cmd(*flags: str) -> Callable[[Job], list[str]]:
    def command(job: Job) -> list[str]:
        return [
            sys.executable,
            "-m",
            "midair",
            "get",
            *flags,
            "-j",
            str(job.jobs * (job.split or 1)),  # midair's -j counts connections, ranges too
            "--per-host",
            str(job.per_host),
            "-q",
            "-i",
            str(job.list_file),
            "-d",
            str(job.out),
            *(["--ca-certificate", str(job.ca)] if job.ca else []),
            *(["-s", str(job.split), "--min-split-size", SPLIT_MIN] if job.split else []),
        ]

    return command


def compile_midair() -> str:
    """Byte-compile midair's modules where they are installed, as ``pip install`` does,
    and say so for the report.

    Without ``__pycache__`` (an editable install run with PYTHONDONTWRITEBYTECODE,
    a fresh checkout) every run compiles each module again, ~20 ms per start that a
    user of an installed midair never pays; the peers, binaries or installed
    packages, pay nothing of the kind either.
    """
    import midair

    where = Path(midair.__file__).parent
    if compileall.compile_dir(where, quiet=1):
        return f"byte-compiled in {where} before timing, as an install does"
    return f"NOT byte-compiled ({where} not writable): each run compiles it again"


def engine_clients(names: list[str]) -> dict[str, Client]:
    """``midair-ENGINE`` per name (``default``: no --engine); None = cannot run here."""
    return dict(_engine_client(n) for n in names)


def _engine_client(name: str) -> tuple[str, Client]:
    from midair import __version__
    from midair.engines import ENGINES

    if name == DEFAULT:
        note = f"`midair get` without --engine: the default (today {default_engine()})"
        return DEFAULT_CLIENT, Client(
            DEFAULT_CLIENT, _midair_cmd(), lambda: __version__, note=note, tls=True, splits=True
        )
    info = ENGINES[name]
    return f"midair-{name}", Client(
        f"midair-{name}",
        _midair_cmd("--engine", name),
        lambda: __version__ if _engine_ready(info) else None,
        sequential=name == "sequential",
        note=info.model,
        tls=True,
        splits=name != "sequential",
    )


def default_engine() -> str:
    """The engine ``midair get`` uses when none is named, as its own parser says."""
    from midair.cli import build_parser

    return str(build_parser(["get"]).parse_args(["get"]).engine)


@functools.cache
def get_help() -> str:
    """``midair get --help`` as this midair prints it (the flags it has)."""
    done = subprocess.run(
        [sys.executable, "-m", "midair", "get", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout


def no_fsync_client() -> Client | None:
    """The default ``midair get`` with --no-fsync, when this midair has that flag."""
    if NO_FSYNC not in get_help():
        return None
    from midair import __version__

    return Client(
        NO_FSYNC_CLIENT,
        _midair_cmd(NO_FSYNC),
        lambda: __version__,
        note="midair-default with --no-fsync: files published without fsync; "
        "the difference is what durable publication costs",
    )


def _engine_ready(info: object) -> bool:
    import importlib.util

    module = getattr(info, "module", "")
    return bool(getattr(info, "available", False)) and importlib.util.find_spec(module) is not None


def default_engines() -> list[str]:
    """The default client, then every engine that can run here except dask (a
    LocalCluster start dominates every run)."""
    from midair.engines import ENGINES

    return [DEFAULT] + [n for n, info in ENGINES.items() if n != "dask" and _engine_ready(info)]


def select_clients(engines: list[str], peers: list[str]) -> dict[str, Client]:
    """midair engines first, then peers, in the order asked for (a group in its place)."""
    from midair.engines import ENGINES

    for kind, asked, known in [
        ("engine", engines, [DEFAULT, *ENGINES]),
        ("peer", peers, [*PEERS, *PEER_GROUPS]),
    ]:
        unknown = [a for a in asked if a not in known]
        if unknown:
            raise ValueError(f"unknown {kind}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    named = [n for p in peers for n in PEER_GROUPS.get(p, [p])]
    return {**engine_clients(engines), **{n: PEERS[n] for n in named}}
