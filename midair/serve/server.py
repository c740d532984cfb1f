"""``SlowServer``: one HTTP test server listening on many loopback addresses.

Why many addresses: a download client limits connections *per host*, so to
test (and benchmark) many slow servers at once we need many hosts. All of
127.0.0.0/8 is loopback on Linux, so one process can listen on 127.0.1.1,
127.0.1.2, ... with a single port, and each address looks like its own server
(with its own statistics). macOS only configures 127.0.0.1 by default: pass
``hosts=["127.0.0.1"]`` there.

    server = SlowServer(addresses=10, rate=256 * 1024)
    await server.start()
    server.url(3, "/gen/a.bin?size=1048576")  # "http://127.0.1.4:PORT/gen/a.bin?size=1048576"
    await server.close()

Only loopback addresses are accepted: this server exists to misbehave.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from midair.serve.protocol import ServeProtocol
from midair.serve.responder import Settings
from midair.serve.stats import ServerStats, StatsBook

__all__ = ["FIRST_HOST", "SlowServer", "loopback_hosts"]

FIRST_HOST = "127.0.1.1"
_PORT_ATTEMPTS = 20
_BACKLOG = 4096
_SHUTDOWN_SPINS = 20  # loop turns to let aborted connections report connection_lost


def loopback_hosts(count: int) -> tuple[str, ...]:
    """``count`` addresses from 127.0.1.1 up, skipping .0 and .255 of each /24."""
    if not 1 <= count <= 60_000:
        raise ValueError(f"addresses must be between 1 and 60000, not {count}")
    hosts: list[str] = []
    value = int(ipaddress.IPv4Address(FIRST_HOST)) - 1
    while len(hosts) < count:
        value += 1
        if value & 0xFF not in (0, 255):
            hosts.append(str(ipaddress.IPv4Address(value)))
    return tuple(hosts)


def _check_loopback(host: str) -> str:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback IP address (like 127.0.1.1 or ::1)")
    return host


class SlowServer:
    """Slow, faulty HTTP/1.1 server on loopback; see ``midair.serve.faults`` for the knobs.

    ``rate`` is bytes per second per connection (0 = unlimited), ``latency`` the
    seconds before each response head; both can be overridden per request.
    ``root`` enables ``/files/REL``. ``port=0`` picks a free port, the same on
    every address. ``tls`` serves HTTPS instead of HTTP; ``http2`` serves HTTP/2,
    the same faults on each stream (``midair.serve.http2``): by prior knowledge
    (h2c) without ``tls``, with it as ALPN settles, h2 or HTTP/1.1
    (``midair.serve.alpn``; this sets the context's ALPN protocols).
    """

    def __init__(
        self,
        addresses: int = 10,
        *,
        hosts: Sequence[str] | None = None,
        port: int = 0,
        rate: int = 0,
        latency: float = 0.0,
        root: str | os.PathLike[str] | None = None,
        tls: ssl.SSLContext | None = None,
        http2: bool = False,
    ) -> None:
        chosen = tuple(_check_loopback(h) for h in hosts) if hosts else loopback_hosts(addresses)
        self.hosts = chosen
        if rate < 0 or latency < 0:
            raise ValueError("rate and latency must be >= 0")
        self._port = port
        self._requested_port = port
        self._tls = tls
        self._http2 = http2
        if http2 and tls is not None:
            from midair.serve.alpn import ALPN_PROTOCOLS

            tls.set_alpn_protocols(list(ALPN_PROTOCOLS))
        self._stats = StatsBook(self.hosts)
        root_path = Path(root) if root is not None else None
        self._settings = Settings(rate, latency, root_path, stats_json=self._stats_json)
        self._listeners: list[asyncio.Server] = []
        self._connections: set[ServeProtocol] = set()  # or H2ServeProtocol: both abort()

    @property
    def port(self) -> int:
        """The port every address listens on (known after ``start``)."""
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def url(self, host_index: int, path: str = "/") -> str:
        """Absolute URL of ``path`` on the ``host_index``-th address."""
        host = self.hosts[host_index]
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self._port}/{path.lstrip('/')}"

    def urls(self, path: str = "/") -> list[str]:
        """``path`` on every address, in order."""
        return [self.url(i, path) for i in range(len(self.hosts))]

    def stats(self) -> ServerStats:
        """A frozen snapshot; call from the server's event loop thread."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters and the log (fail_times counts are kept)."""
        self._stats.reset()

    def set_rate(self, rate: int) -> None:
        """The default ``rate`` from the next response on (one under way keeps its pace).

        So a test can keep a transfer in flight while it needs one, then let the
        re-run that checks the result go at full speed.
        """
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._settings.rate = rate

    def _stats_json(self) -> bytes:
        return self.stats().to_json()

    async def start(self) -> SlowServer:
        """Listen on every address; with port 0, retry until one port is free on all."""
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._listeners, self._port = await self._listen_all(self._requested_port)
                return self
            except OSError as exc:
                retry = self._requested_port == 0 and exc.errno == errno.EADDRINUSE
                if not retry or attempt == _PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _listen_all(self, port: int) -> tuple[list[asyncio.Server], int]:
        """Bind the first address (maybe to port 0), then the rest to its port."""
        loop = asyncio.get_running_loop()
        listeners: list[asyncio.Server] = []
        try:
            for host in self.hosts:
                listeners.append(await self._listen(loop, host, port))
                port = int(listeners[0].sockets[0].getsockname()[1])
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        return listeners, port

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> asyncio.Server:
        protocol = self._protocol()

        def factory() -> asyncio.Protocol:
            return protocol(self._settings, self._stats, self._connections)  # type: ignore[no-any-return]

        try:
            return await loop.create_server(
                factory, host, port, ssl=self._tls, backlog=_BACKLOG, reuse_address=True
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            message = f"cannot listen on {host} port {port}: {reason}"
            raise OSError(exc.errno, message) from exc

    def _protocol(self) -> Any:
        """The server side of each connection: HTTP/1.1, h2c, or either by ALPN."""
        if not self._http2:
            return ServeProtocol
        if self._tls is not None:
            from midair.serve.alpn import AlpnServeProtocol

            return AlpnServeProtocol
        from midair.serve.http2 import H2ServeProtocol

        return H2ServeProtocol

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        for listener in self._listeners:
            listener.close()
        for connection in list(self._connections):
            connection.abort()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners = []
        for _ in range(_SHUTDOWN_SPINS):
            if not self._connections:
                break
            await asyncio.sleep(0)

    async def __aenter__(self) -> SlowServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
