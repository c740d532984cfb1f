"""``reactor``: callbacks on protocol objects, Twisted's design on asyncio's API.

Each connection is a ``Protocol`` object; the event loop calls it when bytes
arrive (``data_received``), when the peer ends the stream (``eof_received``)
and when the transport is gone (``connection_lost``).  Every callback hands
what happened straight to the session and carries out the actions that come
back, on the spot: no coroutine, no task and no buffer between the socket and
the core.  Only opening a connection is awaited — ``create_connection`` is a
coroutine — in a small task whose one job is to connect.

One ``call_later`` handle wakes the core for retries and stall sweeps; it is
re-armed only when the core's next deadline moves, not after every chunk.
With the ``uvloop`` extra, ``loop="uvloop"`` runs the same protocols on libuv.
``stop()`` ends a run from another thread the way Ctrl-C does (the sharding
engines use it).

A ``BufferedProtocol`` reading into one preallocated buffer was measured (8 x
100 MB over loopback): no CPU difference beyond noise, so the plain
``data_received`` path stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from ..core.actions import Close, Connect, NetAction, Send
from ._net import check_loop, classify, run_on_loop, tls_context
from ._session import Session


class ReactorEngine:
    name = "reactor"

    def __init__(self, loop: str = "asyncio") -> None:
        self.loop = check_loop(loop)
        self._running: tuple[asyncio.AbstractEventLoop, asyncio.Task[object]] | None = None

    def run(self, session: Session) -> None:
        run_on_loop(self.loop, self.run_async(session))

    async def run_async(self, session: Session) -> None:
        reactor = _Reactor(session, asyncio.get_running_loop())
        task = asyncio.current_task()
        if task is not None:
            self._running = (reactor.loop, task)
        try:
            reactor.execute(session.start())
            await reactor.finished
        finally:
            self._running = None
            reactor.abort()
            session.close()

    def stop(self) -> None:
        """From any thread: end a running ``run`` early, as Ctrl-C would (it raises
        ``CancelledError``; part files are flushed).  A no-op when nothing runs."""
        running = self._running
        if running is not None:
            loop, task = running
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)


class _Conn(asyncio.Protocol):
    """One connection's callbacks; reports to the session at most one end."""

    __slots__ = ("conn", "reactor", "transport")

    def __init__(self, reactor: _Reactor, conn: int) -> None:
        self.reactor = reactor
        self.conn = conn
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.reactor.made(self)

    def data_received(self, data: bytes) -> None:
        reactor = self.reactor
        if reactor.protocols.get(self.conn) is self:
            reactor.call(reactor.session.received, self.conn, data)

    def eof_received(self) -> bool:
        self.reactor.lost(self, None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.reactor.lost(self, exc)


class _Reactor:
    def __init__(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.loop = loop
        self.tls: ssl.SSLContext | None = None  # made on first use: http may redirect to https
        self.protocols: dict[int, _Conn] = {}  # connections the core still wants
        self.connecting: dict[int, asyncio.Task[None]] = {}
        self.finished: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.armed: float | None = None  # the deadline ``timer`` is set for

    # --- session calls: every one ends by re-arming the timer -------------------------
    def call(self, event: Callable[..., list[NetAction]], *args: object) -> None:
        try:
            actions = event(*args)
        except Exception as exc:  # a bug in the core or store: stop, don't retry it
            if not self.finished.done():
                self.finished.set_exception(exc)
            return
        self.execute(actions)

    def execute(self, actions: list[NetAction]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                protocol = self.protocols.get(action.conn)
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.write(action.data)  # type: ignore[union-attr]
            elif kind is Connect:
                self.connect(action)  # type: ignore[arg-type]
            elif kind is Close:
                self.close(action.conn)
        self.rearm()

    def rearm(self) -> None:
        session = self.session
        if session.done:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        deadline = session.next_deadline()
        if deadline == self.armed and (deadline is None or self.timer is not None):
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.armed = deadline
        if deadline is not None:
            delay = max(0.0, deadline - session.clock())
            self.timer = self.loop.call_later(delay, self.on_timer)

    def on_timer(self) -> None:
        self.timer = self.armed = None
        self.call(self.session.timer)

    # --- connections -----------------------------------------------------------------
    def connect(self, action: Connect) -> None:
        protocol = _Conn(self, action.conn)
        self.protocols[action.conn] = protocol
        task = self.loop.create_task(self.open(action, protocol))
        self.connecting[action.conn] = task

    async def open(self, action: Connect, protocol: _Conn) -> None:
        try:
            if action.tls and self.tls is None:
                self.tls = tls_context(self.session.options)
            tls = self.tls if action.tls else None
            await self.loop.create_connection(
                lambda: protocol, action.host, action.port,
                ssl=tls, server_hostname=action.host if tls else None)
        except Exception as exc:  # OSError, ssl.SSLError, a bad host name: classify decides
            if self.protocols.get(action.conn) is protocol:
                del self.protocols[action.conn]
                self.call(self.session.closed, action.conn, classify(exc))
        finally:
            self.connecting.pop(action.conn, None)

    def made(self, protocol: _Conn) -> None:
        if self.protocols.get(protocol.conn) is not protocol:  # closed while connecting
            protocol.transport.abort()  # type: ignore[union-attr]
            return
        self.call(self.session.connected, protocol.conn)

    def lost(self, protocol: _Conn, exc: Exception | None) -> None:
        if self.protocols.get(protocol.conn) is not protocol:
            return  # we closed it, or already reported its end
        del self.protocols[protocol.conn]
        if protocol.transport is not None:
            protocol.transport.abort()
        self.call(self.session.closed, protocol.conn, classify(exc) if exc else None)

    def close(self, conn: int) -> None:
        protocol = self.protocols.pop(conn, None)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()  # nothing left to send: skip the graceful dance
        task = self.connecting.pop(conn, None)
        if task is not None:
            task.cancel()

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for task in list(self.connecting.values()):
            task.cancel()
        for protocol in list(self.protocols.values()):
            if protocol.transport is not None:
                protocol.transport.abort()
        self.protocols.clear()
