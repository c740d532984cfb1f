"""Name resolution never blocks, on every engine, behind a DNS server that answers late.

A private network namespace (``ip netns``) gets its own resolv.conf pointing at
``tests/dns_server.py`` on its loopback, which answers every ``*.test`` name
0.3 s late (``nx.test``: NXDOMAIN), and a ``midair serve`` on 127.0.0.1 there;
midair runs inside it with ``ip netns exec``.  One run per engine fetches 100
files from 100 host names and 50 from ``nx.test``: resolving one name at a time
would take 30 s, so a bound of 4 s shows the loop never waits for a name; the 50
fail with one shared reason after one query.  Needs root and ip(8): skipped
without them, failed in CI.
"""

from __future__ import annotations

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

import pytest

from tests.conftest import Midair

DNS_SERVER = Path(__file__).with_name("dns_server.py")
HOSTS, NX_JOBS = 100, 50
BOUND = 4.0  # seconds: 30 s resolving one name at a time; ~1 s when nothing waits for one
NX_REASON = "cannot resolve nx.test: Name or service not known"


@dataclass
class World:
    namespace: str
    log: Path  # the DNS server's query log
    port: int  # midair serve's, on the namespace's 127.0.0.1

    def inside(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def queries(self, name: str, qtype: int = 1) -> int:
        return self.log.read_text().splitlines().count(f"{name} {qtype}")


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


def _failures(stdout: str) -> list[str]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e.get("reason") or e.get("error", "") for e in events if e.get("event") == "failed"]


def test_slow_names_block_nothing(world: World, engine: str, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(_urls(world.port)) + "\n")
    before = world.queries("nx.test")
    command = Midair(engine).command("--json", "-i", str(listing), "-d", str(tmp_path / "out"))
    began = time.monotonic()
    done = subprocess.run(world.inside(command), capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert len(list((tmp_path / "out").glob("f*"))) == HOSTS, done.stderr
    failures = _failures(done.stdout)
    assert len(failures) == NX_JOBS and all(NX_REASON in f for f in failures), failures[:3]
    assert world.queries("nx.test") - before == 1  # one lookup, however many jobs wait on it
    assert elapsed < BOUND, f"{engine}: {elapsed:.1f} s"
