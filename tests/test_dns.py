"""Name resolution never blocks, on every engine, behind a DNS server that answers late.

A private network namespace (``ip netns``) gets its own resolv.conf pointing at
``tests/dns_server.py`` on its loopback, which answers every ``*.test`` name
0.3 s late (``nx.test``: NXDOMAIN), and a ``midair serve`` on 127.0.0.1 there;
midair runs inside it with ``ip netns exec``.  One run per engine fetches 100
files from 100 host names and 50 from ``nx.test``: resolving one name at a time
would take 30 s, so a bound of 4 s shows the loop never waits for a name; the 50
fail with one shared reason after one query, and the server sees at least 16
lookups in flight at once.  The time is the span of the run's
``--json`` events (each carries its time), first to last: an engine's own
start-up (a dask cluster: 1.5 to 3.5 s on a busy 2-core machine) is not DNS.
Needs root and ip(8): skipped without them, failed in CI.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Midair
from tests.proxies import OUTGOING, require

DNS_SERVER = Path(__file__).with_name("dns_server.py")
HOSTS, NX_JOBS = 100, 50
BOUND = 4.0  # seconds: 30 s resolving one name at a time; ~1 s when nothing waits for one
NX_REASON = "cannot resolve nx.test: Name or service not known"
DELAY = 0.3  # the DNS server's, by default
AT_ONCE = 16  # lookups in flight together, at least (the resolver runs 32; asyncio's own 6)
# One dask worker: a second one may start seconds later on a busy machine, which
# would stretch the span of the events with its shard's; the test is about its names.
ONE_WORKER = {"dask": ["--workers", "1"]}
DOWNLOAD_EVENTS = ("start", "done", "failed", "retry")


@dataclass
class World:
    namespace: str
    log: Path  # the DNS server's query log
    port: int  # midair serve's, on the namespace's 127.0.0.1

    def inside(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def queries(self, name: str, qtype: int = 1) -> int:
        return len(self.arrivals(name, qtype))

    def arrivals(self, name: str = "", qtype: int = 1, since: float = 0.0) -> list[float]:
        """When A queries for ``name`` (every name if "") came, from ``since`` on."""
        entries = [line.split() for line in self.log.read_text().splitlines()]
        return [
            float(t)
            for n, q, t in entries
            if n == (name or n) and q == str(qtype) and float(t) >= since
        ]


def _require_netns() -> None:
    if os.geteuid() == 0 and shutil.which("ip"):
        return
    if os.environ.get("CI"):
        pytest.fail("CI must run the DNS tests: they need root and ip(8)")
    pytest.skip("needs root and ip(8) for a private network namespace")


def _started(argv: list[str], started: list[subprocess.Popen[str]]) -> str:
    """Start ``argv`` and return its first line of output (it prints one when ready)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, f"{argv} exited with {proc.wait(5)}"
    return line


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    _require_netns()
    with slow_dns_world(tmp_path_factory.mktemp("dns")) as made:
        yield made


@contextlib.contextmanager
def slow_dns_world(scratch: Path) -> Iterator[World]:
    """The namespace, its DNS server and its ``midair serve``; all removed at the end."""
    name = f"midair-dns-{os.getpid()}-{secrets.token_hex(2)}"
    conf = Path("/etc/netns") / name
    log = scratch / "queries.log"
    started: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        conf.mkdir(parents=True)
        (conf / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")
        world = World(name, log, 0)
        _started(world.inside([sys.executable, str(DNS_SERVER), str(log)]), started)
        serve = [sys.executable, "-m", "midair", "serve", "--host", "127.0.0.1", "--port", "0"]
        world.port = int(_started(world.inside(serve), started).rsplit(":", 1)[1].strip("/"))
        yield world
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(conf, ignore_errors=True)


def _urls(port: int) -> list[str]:
    named = [f"http://h{i}.test:{port}/gen/f{i}?size=2000" for i in range(HOSTS)]
    return named + [f"http://nx.test:{port}/gen/n{i}" for i in range(NX_JOBS)]


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _failures(stdout: str) -> list[str]:
    return [e["reason"] for e in _events(stdout) if e["event"] == "failed"]


def _most_at_once(arrivals: list[float]) -> int:
    """The most queries in flight together: each is answered ``DELAY`` after it came."""
    arrivals.sort()
    return max(bisect.bisect_left(arrivals, t + DELAY) - i for i, t in enumerate(arrivals))


def _span(stdout: str) -> float:
    """Seconds from the run's first download event to its last (not its progress lines,
    which a sharded engine prints while its workers start)."""
    times = [float(e["time"]) for e in _events(stdout) if e["event"] in DOWNLOAD_EVENTS]
    return max(times) - min(times)


def test_slow_names_block_nothing(world: World, engine: str, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(_urls(world.port)) + "\n")
    before, began = world.queries("nx.test"), time.time()
    out = ["-d", str(tmp_path / "out"), *ONE_WORKER.get(engine, [])]
    command = Midair(engine).command("--json", "-i", str(listing), *out)
    done = subprocess.run(world.inside(command), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert len(list((tmp_path / "out").glob("f*"))) == HOSTS, done.stderr
    failures = _failures(done.stdout)
    assert len(failures) == NX_JOBS and all(NX_REASON in f for f in failures), failures[:3]
    assert world.queries("nx.test") - before == 1  # one lookup, however many jobs wait on it
    assert _span(done.stdout) < BOUND, f"{engine}: {_span(done.stdout):.1f} s"
    assert _most_at_once(world.arrivals(since=began)) >= AT_ONCE


# --- socks5:// : the client looks the origin up, then hands the proxy its address ---------
SOCKS_HOSTS = 30  # one at a time on the loop: 9 s, and 1 lookup in flight
SOCKS_PORT = 1080  # inside the namespace, where nothing else listens on it


@contextlib.contextmanager
def socks_proxy(world: World, scratch: Path) -> Iterator[Path]:
    """microsocks on the namespace's 127.0.0.1:``SOCKS_PORT``; yields its log, whose
    "connected to ADDRESS:PORT" lines show what it was asked to reach."""
    log = scratch / "microsocks.log"
    argv = [require("microsocks"), "-i", "127.0.0.1", "-p", str(SOCKS_PORT), "-b", OUTGOING]
    with log.open("wb") as out:
        proc = subprocess.Popen(world.inside(argv), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait = f"import socket\nsocket.create_connection(('127.0.0.1', {SOCKS_PORT}), 5).close()"
        for _ in range(100):  # at most ~5 s for it to listen
            if subprocess.run(world.inside([sys.executable, "-c", wait])).returncode == 0:
                break
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        proc.wait(10)


def test_slow_names_for_a_socks5_proxy_block_nothing(
    world: World, engine: str, tmp_path: Path
) -> None:
    urls = [f"http://s{i}.test:{world.port}/gen/s{i}?size=2000" for i in range(SOCKS_HOSTS)]
    out = ["-d", str(tmp_path / "out"), *ONE_WORKER.get(engine, [])]
    began = time.time()
    with socks_proxy(world, tmp_path) as log:
        proxy = ["--proxy", f"socks5://127.0.0.1:{SOCKS_PORT}"]
        command = Midair(engine).command("--json", *proxy, *out, *urls)
        done = subprocess.run(world.inside(command), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").glob("s*"))) == SOCKS_HOSTS
    reached = log.read_text().count(f"connected to 127.0.0.1:{world.port}")
    assert reached >= SOCKS_HOSTS  # through the proxy, given the address midair looked up
    assert all(world.queries(f"s{i}.test") >= 1 for i in range(SOCKS_HOSTS))
    # Looked up together, not one by one on the loop (whose wait no event's time shows):
    # one at a time before; half of AT_ONCE, as two shards' workers may start apart.
    assert _most_at_once(world.arrivals(since=began)) >= AT_ONCE // 2
