"""The servers a scenario runs against: a real nginx, or ``midair serve`` without one.

nginx is the reference: a config the bench writes (``midair.serve.nginx``),
one ``listen`` per loopback address 127.0.1.x so every address looks like its
own server, ``limit_rate`` per connection for the slow scenarios and none for
``bulk`` and ``small`` (keep-alive, sendfile). When nginx is not installed, or
``--server midair`` asks for it, the same files are served by ``midair serve
--root`` in its own process (so its CPU never mixes with the bench's), and the
report says which one was used. Either way ``Served.log`` tells when each
request started (and, with nginx, ended): ``midair.bench.timeline``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from midair.bench.measure import tool_version
from midair.bench.scenarios import TINY_BODY
from midair.bench.timeline import NginxLog, RequestLog, StatsLog
from midair.serve.nginx import Nginx, find_nginx
from midair.serve.server import loopback_hosts

__all__ = ["Served", "choose_server", "serve", "server_version"]

_STOP_TIMEOUT = 10.0
_TINY_LOCATION = f"""        location /tiny/ {{
            default_type application/octet-stream;
            return 200 "{TINY_BODY.decode()}";
        }}
"""


@dataclass(frozen=True)
class Served:
    """A running server: which kind, the base URL of each address, what it logged."""

    kind: str
    bases: list[str]
    log: RequestLog

    def url(self, host_index: int, name: str) -> str:
        return self.bases[host_index] + name


def choose_server(requested: str) -> str:
    """``auto`` picks nginx when installed; asking for nginx without it is an error."""
    if requested == "midair":
        return "midair"
    if find_nginx() is not None:
        return "nginx"
    if requested == "nginx":
        raise RuntimeError("--server nginx: nginx not installed (apt-get install nginx-light)")
    return "midair"


def server_version(kind: str) -> str:
    if kind == "nginx":
        binary = find_nginx()
        return tool_version([binary, "-v"]) if binary else "missing"
    from midair import __version__

    return __version__


@contextlib.contextmanager
def serve(
    kind: str,
    root: Path,
    hosts: int,
    rate: int,
    work: Path,
    workers: int = 1,
    tls: tuple[Path, Path] | None = None,
    tiny: bool = False,
) -> Iterator[Served]:
    """Serve ``root`` on ``hosts`` loopback addresses at ``rate`` bytes/s per connection.

    ``work`` takes nginx's access log and ``midair serve``'s stderr (a pipe
    could fill and stall it).  ``tls`` (certificate, key): nginx over TLS, HTTP/2 offered.
    ``tiny``: nginx also answers every ``/tiny/`` path with ``TINY_BODY`` (no file behind it).
    """
    if tls is not None and kind != "nginx":
        raise RuntimeError("TLS scenarios need nginx (--server nginx)")
    if tiny and kind != "nginx":
        raise RuntimeError("the list scenario needs nginx (--server nginx)")
    if kind == "nginx":
        access = work / "access.log"
        with Nginx(
            root,
            hosts=loopback_hosts(hosts),
            limit_rate=rate,
            workers=workers,
            access_log=access,
            tls=tls,
            http2=tls is not None,
            extra_locations=_TINY_LOCATION if tiny else "",
        ) as ng:
            yield Served("nginx", [ng.url(i, "") for i in range(hosts)], NginxLog(access))
        return
    with _midair_serve(root, hosts, rate, work / "server.log") as bases:
        yield Served("midair serve", bases, StatsLog(bases[0]))


@contextlib.contextmanager
def _midair_serve(root: Path, hosts: int, rate: int, log: Path) -> Iterator[list[str]]:
    """``midair serve --root`` in its own process group; files appear under /files/."""
    argv = [
        sys.executable,
        "-m",
        "midair",
        "serve",
        "--addresses",
        str(hosts),
        "--port",
        "0",
        "--rate",
        str(rate),
        "--root",
        str(root),
    ]
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            process_group=0,
        )
    try:
        yield [_read_base(proc, log) + "files/" for _ in range(hosts)]
    finally:
        _stop(proc)


def _read_base(proc: subprocess.Popen[str], log: Path) -> str:
    """The next base URL ``midair serve`` prints, or the reason it did not start."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        _stop(proc)
        error = log.read_text(errors="replace").strip()[-500:]
        raise RuntimeError(f"midair serve did not start: {error or 'no output'}")
    return line.rstrip("/") + "/"


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
