"""Shared fixtures.

``nginx`` starts real nginx servers (see ``midair.serve.nginx``) so midair is
never tested only against its own server. Without nginx the tests that need it
skip locally, but fail in CI (``CI`` set): there a skip would hide a broken setup.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from midair.core.actions import Started
from midair.run import Run
from midair.serve import ServerThread
from midair.serve.nginx import Nginx, find_nginx

NginxFactory = Callable[..., Nginx]

# A developer's or a CI machine's proxy must not carry the tests' loopback traffic: midair
# reads these as curl does, so they are cleared for this process and every child.
for _name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_name, None)
for _name in ("no_proxy", "NO_PROXY"):
    os.environ.pop(_name, None)


def require_nginx() -> str:
    """Path of nginx, or skip (locally) / fail (CI) the calling test."""
    binary = find_nginx()
    if binary is not None:
        return binary
    if os.environ.get("CI"):
        pytest.fail("nginx not installed, but CI must have it: apt-get install nginx-light")
    pytest.skip("nginx not installed: apt-get install nginx-light")


@pytest.fixture
def nginx() -> Iterator[NginxFactory]:
    """Factory: ``nginx(root, hosts=[...], limit_rate=...)`` -> a started ``Nginx``.

    Function-scoped because tests want different roots and rates; a start costs
    a few milliseconds. Every server started is stopped at teardown.
    """
    require_nginx()
    started: list[Nginx] = []

    def start(root: Path, **options: Any) -> Nginx:
        server = Nginx(root, **options)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


# --- the CLI against midair serve: shared by the end-to-end and conformance suites --------
def test_engines() -> list[str]:
    """Every engine that can run here (``MIDAIR_TEST_ENGINES=a,b`` narrows the list)."""
    import importlib.util

    from midair.engines import ENGINES

    chosen = os.environ.get("MIDAIR_TEST_ENGINES")
    names = chosen.split(",") if chosen else list(ENGINES)
    return [
        n
        for n in names
        if ENGINES[n].available and importlib.util.find_spec(ENGINES[n].module) is not None
    ]


test_engines.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(params=test_engines())
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Midair:
    """Runs ``python -m midair get`` with a fixed engine; returns the finished process."""

    engine: str
    options: tuple[str, ...] = ()  # after the engine's own, before the test's

    def get(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def command(self, *args: str) -> list[str]:
        extra = ["--workers", "2"] if self.engine in ("processes", "dask") else []
        return [
            sys.executable,
            "-m",
            "midair",
            "get",
            "--engine",
            self.engine,
            *extra,
            *self.options,
            "--max-retry-wait",
            "2",
            *args,
        ]


# --- HTTP/1.1 and HTTP/2: the suites over either ---------------------------------------------
HTTP1, H2C, H2 = "http1", "h2c", "h2"  # h2: over TLS, as ALPN settles (midair's default)
# Where a case costs seconds per engine, HTTP/2 runs on one engine of each kind of I/O
# glue: a selector loop, asyncio, blocking threads (its multiplexing waker), shards.
H2_ENGINES = ("epoll", "asyncio", "threads", "processes")


def over_http2(engines: tuple[str, ...] | None = None) -> pytest.MarkDecorator:
    """Parametrize ``engine`` x ``protocol``: every engine over HTTP/1.1, and over h2c
    (``midair serve --http2``, ``--http2-prior-knowledge``) ``engines`` (default: all)."""
    return _over(H2C, engines)


def over_tls_http2(engines: tuple[str, ...] = H2_ENGINES) -> pytest.MarkDecorator:
    """Parametrize ``engine`` x ``protocol`` for the HTTPS cases: every engine over
    HTTP/1.1, and over h2 by ALPN (``SlowServer(tls=..., http2=True)``) ``engines``;
    each I/O glue reads ALPN its own way, so one engine of each."""
    return _over(H2, engines)


def _over(http2: str, engines: tuple[str, ...] | None) -> pytest.MarkDecorator:
    """Every engine over HTTP/1.1, and ``engines`` (None: all) over ``http2`` too."""
    every = test_engines()
    pairs = [(e, HTTP1) for e in every]
    pairs += [(e, http2) for e in every if engines is None or e in engines]
    return pytest.mark.parametrize(
        ("engine", "protocol"), pairs, ids=[f"{e}-{p}" for e, p in pairs]
    )


def protocol_options(protocol: str) -> tuple[str, ...]:
    return ("--http2-prior-knowledge",) if protocol == H2C else ()


@pytest.fixture
def protocol() -> str:
    """HTTP/1.1, unless a test is parametrized ``over_http2``."""
    return HTTP1


def midair_for(engine: str, request: pytest.FixtureRequest, *options: str) -> Midair:
    """``Midair`` for ``engine`` with ``options``; dask's joins the module's LocalCluster
    (``dask_cluster``) instead of starting one per run."""
    if engine != "dask":
        return Midair(engine, options)
    return Midair(engine, ("--scheduler", request.getfixturevalue("dask_cluster"), *options))


@pytest.fixture
def midair(engine: str, protocol: str) -> Midair:
    """dask starts its own cluster per run, in the run's process: what the contract's
    cases need (their markers and faults reach its workers through the environment)."""
    return Midair(engine, protocol_options(protocol))


@pytest.fixture
def clustered_midair(engine: str, protocol: str, request: pytest.FixtureRequest) -> Midair:
    """``midair``, dask's runs joining the module's LocalCluster (seconds saved a run)."""
    return midair_for(engine, request, *protocol_options(protocol))


@pytest.fixture(scope="session")
def http1_server() -> Iterator[ServerThread]:
    """An unthrottled midair serve on 127.0.1.1-3 for the whole session."""
    with ServerThread(addresses=3) as srv:
        yield srv


@pytest.fixture(scope="session")
def h2c_server() -> Iterator[ServerThread]:
    """The same, speaking HTTP/2 by prior knowledge (every fault per stream)."""
    with ServerThread(addresses=3, http2=True) as srv:
        yield srv


@pytest.fixture
def server(protocol: str, request: pytest.FixtureRequest) -> ServerThread:
    """The session's midair serve for the test's protocol."""
    return request.getfixturevalue("h2c_server" if protocol == H2C else "http1_server")


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A LocalCluster of 2 workers for a module's dask cases: starting one takes seconds."""
    from midair.engines.dask_engine import local_cluster

    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


@contextlib.contextmanager
def stop_once(begun: threading.Event, run: Run, settle: float = 0.0) -> Iterator[None]:
    """``around`` for ``Downloader.run``: once ``begun`` (or after 30 s), wait ``settle`` s
    and stop ``run`` from another thread, as a signal handler or a GUI would."""

    def stop() -> None:
        if begun.wait(timeout=30):
            time.sleep(settle)
        run.request_stop()

    with stopping(stop):
        yield


@contextlib.contextmanager
def stopping(stop: Callable[[], None]) -> Iterator[None]:
    """Run ``stop`` in another thread for the block's duration; joined as it ends."""
    thread = threading.Thread(target=stop)
    thread.start()
    try:
        yield
    finally:
        thread.join()


class ShardKiller:
    """A listener that SIGKILLs worker process ``midair-shard-0`` at the first ``Started``
    (once); ``killed`` holds its pid after."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def __call__(self, event: object) -> None:
        if self.killed or type(event) is not Started:
            return
        for child in multiprocessing.active_children():
            if child.name == "midair-shard-0" and child.pid:
                os.kill(child.pid, signal.SIGKILL)
                self.killed.append(child.pid)
