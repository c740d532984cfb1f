"""``reactor``: callbacks on protocol objects, Twisted's design on asyncio's API.

Each connection is a ``Protocol`` object; the event loop calls it when bytes
arrive (``data_received``), when the peer ends the stream (``eof_received``)
and when the transport is gone (``connection_lost``).  Every callback hands
what happened straight to the session and carries out the actions that come
back, on the spot: no coroutine, no task and no buffer between the socket and
the core.  Only opening a connection is awaited — ``create_connection`` is a
coroutine — in a small task whose one job is to connect.

One ``call_later`` handle (an ``Alarm``) wakes the core for retries and stall
sweeps; it is re-armed only when the core's next deadline moves, not after
every chunk.  With the ``uvloop`` extra, ``loop="uvloop"`` runs the same
protocols on libuv.  A stop request resolves the future ``run_async`` awaits,
from any thread; an exception in a callback or the connect task fails the run.

A ``BufferedProtocol`` reading into one preallocated buffer was measured (8 x
100 MB over loopback): no CPU difference beyond noise, so the plain
``data_received`` path stays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..core.actions import Close, Connect, Hold, NetAction, Release, Resolve, Send, StartTls
from ..run import Run
from ..session import Session
from ._aio import (
    TurnWrites,
    check_loop,
    finished_on_stop,
    guarded,
    open_connection,
    run_on_loop,
    tell_socks_address,
)
from ._common import Alarm, LazyTls, alpn, classify
from ._resolver import Resolver


class ReactorEngine:
    name = "reactor"

    def __init__(self, loop: str = "asyncio") -> None:
        self.loop = check_loop(loop)

    def run(self, run: Run) -> None:
        run_on_loop(self.loop, self.run_async(run))

    async def run_async(self, run: Run) -> None:
        session = Session(run)
        reactor = _Reactor(session, asyncio.get_running_loop())
        try:
            reactor.call(session.start)
            await reactor.finished
        finally:
            reactor.abort()
            session.close()


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


class _Limited(_Conn, asyncio.BufferedProtocol):
    """A connection under a rate limit: the loop reads at most ``read_size`` bytes at once,
    into its buffer (core/rate.py).  A memoryview of it goes to the session, which copies
    the bytes out before the next read."""

    __slots__ = ("buffer",)

    def __init__(self, reactor: _Reactor, conn: int) -> None:
        super().__init__(reactor, conn)
        self.buffer = memoryview(bytearray(reactor.session.read_size or 1))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        reactor = self.reactor
        if reactor.protocols.get(self.conn) is self:
            reactor.call(reactor.session.received, self.conn, self.buffer[:nbytes])


class _Reactor:
    def __init__(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.loop = loop
        self.tls = LazyTls(session.options)
        self.resolver = Resolver()
        self.protocols: dict[int, _Conn] = {}  # connections the core still wants
        self.connecting: dict[int, asyncio.Task[None]] = {}
        self.finished = finished_on_stop(session.run)
        self.alarm = Alarm(loop, session, lambda: self.call(session.timer))
        self.writes = TurnWrites(loop, session.run)

    # --- session calls: every one ends by re-arming the timer -------------------------
    def call(self, event: Callable[..., list[NetAction]], *args: object) -> None:
        """Report to the session from a callback; a bug in carrying out fails the run."""
        try:
            self.execute(event(*args))
        except Exception as exc:
            self.session.run.fail(exc)

    def execute(self, actions: list[NetAction]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                protocol = self.protocols.get(action.conn)
                if protocol is not None and protocol.transport is not None:
                    self.writes.write(protocol.transport, action.data)  # type: ignore[union-attr]
            elif kind is Connect:
                self.connect(action)  # type: ignore[arg-type]
            elif kind is Close:
                self.close(action.conn)
            elif kind is StartTls:
                self.start_tls(action)  # type: ignore[arg-type]
            elif kind is Resolve:
                self.resolve(action)  # type: ignore[arg-type]
            elif kind is Hold or kind is Release:
                self.hold(action.conn, kind is Hold)
        self.rearm()

    def hold(self, conn: int, holding: bool) -> None:
        """A rate limit: stop reading ``conn`` (the loop reads nothing for it), or go on."""
        protocol = self.protocols.get(conn)
        if protocol is not None and protocol.transport is not None:
            if holding:
                protocol.transport.pause_reading()
            else:
                protocol.transport.resume_reading()

    def rearm(self) -> None:
        if not self.session.done:
            self.alarm.update()
        elif not self.finished.done():
            self.finished.set_result(None)

    # --- connections -----------------------------------------------------------------
    def connect(self, action: Connect) -> None:
        protocol = (_Conn if self.session.read_size is None else _Limited)(self, action.conn)
        self.protocols[action.conn] = protocol
        task = self.loop.create_task(guarded(self.session.run, self.open(action, protocol)))
        self.connecting[action.conn] = task

    async def open(self, action: Connect, protocol: _Conn) -> None:
        try:
            if self.session.done:  # stopped before this task's first step: one turn runs
                return  # the first step of every task started, 10,000 at c10k (~0.7 s)
            tls = self.tls.get() if action.tls else None
            await open_connection(self.loop, lambda: protocol, self.resolver, action, tls)
        except Exception as exc:  # OSError, ssl.SSLError, a bad host name: classify decides
            if self.protocols.get(action.conn) is protocol:
                del self.protocols[action.conn]
                self.call(self.session.closed, action.conn, classify(exc))
        finally:
            self.connecting.pop(action.conn, None)

    def resolve(self, action: Resolve) -> None:
        """A SOCKS proxy's origin address, looked up off the loop in a task, as connecting."""
        task = self.loop.create_task(guarded(self.session.run, self.tell_address(action)))
        self.connecting[action.conn] = task

    async def tell_address(self, action: Resolve) -> None:
        try:
            told = await tell_socks_address(self.loop, self.resolver, action)
        finally:
            self.connecting.pop(action.conn, None)
        self.call(self.session.resolved, *told)

    def start_tls(self, action: StartTls) -> None:
        """TLS over an open tunnel, in a task as connecting is; ``connected`` again after."""
        protocol = self.protocols.get(action.conn)
        if protocol is None or protocol.transport is None:
            return
        task = self.loop.create_task(guarded(self.session.run, self.upgrade(action, protocol)))
        self.connecting[action.conn] = task

    async def upgrade(self, action: StartTls, protocol: _Conn) -> None:
        plain = protocol.transport
        assert plain is not None
        try:
            upgraded = await self.loop.start_tls(
                plain,
                protocol,
                self.tls.get(),
                server_hostname=action.server_hostname,
                ssl_handshake_timeout=self.session.options.timeout,
            )
        except Exception as exc:  # OSError, ssl.SSLError, a timeout: classify decides
            if self.protocols.get(action.conn) is protocol:
                del self.protocols[action.conn]
                plain.abort()
                self.call(self.session.closed, action.conn, classify(exc))
            return
        finally:
            self.connecting.pop(action.conn, None)
        if self.protocols.get(action.conn) is not protocol or upgraded is None:
            if upgraded is not None:
                upgraded.abort()
            return
        protocol.transport = upgraded
        self.call(self.session.connected, action.conn, alpn(upgraded.get_extra_info("ssl_object")))

    def made(self, protocol: _Conn) -> None:
        if self.protocols.get(protocol.conn) is not protocol:  # closed while connecting
            protocol.transport.abort()  # type: ignore[union-attr]
            return
        tls = protocol.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        self.call(self.session.connected, protocol.conn, alpn(tls))

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
        self.alarm.cancel()
        for task in list(self.connecting.values()):
            task.cancel()
        for protocol in list(self.protocols.values()):
            if protocol.transport is not None:
                protocol.transport.abort()
        self.protocols.clear()
