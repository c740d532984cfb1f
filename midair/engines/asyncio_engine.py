"""``asyncio``: one coroutine per connection on one event loop.

Each connection is a task that connects, then reads until the socket ends,
feeding every chunk to the session; the actions that come back are carried
out on the spot.  A task reads from an ``_Inbox``, not a ``StreamReader``: the
stream copies every chunk into its buffer and out again, which for a 2 GiB body
was half the engine's CPU (3.9 s against reactor's 1.9).  One ``Alarm`` wakes
the core for retries and stall sweeps.
Every task is ``guarded``: an exception in it fails the run instead of being
logged as "never retrieved".  A stop request resolves the future ``run_async``
awaits, from any thread.  With the ``uvloop`` extra, ``loop="uvloop"`` runs
the same code on libuv.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any

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

# Bytes an inbox holds before it pauses its socket: bounds memory per transfer.  Above
# one transport read (256 KiB), so a reader keeping up never pauses and resumes it.
INBOX_LIMIT = 512 * 1024


class _Inbox(asyncio.Protocol):
    """One connection's received chunks, as the transport read them, for its task.

    Under a rate limit, a chunk goes out in pieces of at most ``most`` bytes (views of
    it, uncopied), and none while the core holds the connection (``hold``): the socket
    is paused meanwhile, so the server is slowed down too, not only the core."""

    def __init__(self, loop: asyncio.AbstractEventLoop, most: int | None = None) -> None:
        self.loop = loop
        self.most = most
        self.holding = False
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes | memoryview] = deque()
        self.held = 0  # bytes in ``chunks``
        self.paused = False
        self.ended = False  # the stream ended: EOF, or lost with ``error``
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.held += len(data)
        self.flow()
        self.wake()

    def hold(self, holding: bool) -> None:
        """The core's Hold (True) or Release (False) of this connection."""
        self.holding = holding
        self.flow()
        if not holding:
            self.wake()

    def flow(self) -> None:
        """Pause the socket while held or holding too much, resume it once neither."""
        pause = self.holding or self.held > INBOX_LIMIT
        if pause != self.paused and self.transport is not None:
            self.paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.ended = True
        self.wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended, self.error = True, exc
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self) -> bytes | memoryview:
        """The next chunk; b"" once the stream ended; the connection's error if it broke."""
        while self.holding or not self.chunks:
            if self.ended and not self.chunks and not self.holding:
                if self.error is not None:
                    raise self.error
                return b""
            self.waiter = self.loop.create_future()
            await self.waiter
        data = self.chunks.popleft()
        if self.most is not None and len(data) > self.most:
            view = memoryview(data)
            data, rest = view[: self.most], view[self.most :]
            self.chunks.appendleft(rest)
        self.held -= len(data)
        self.flow()
        return data


class AsyncioEngine:
    name = "asyncio"

    def __init__(self, loop: str = "asyncio") -> None:
        self.loop = check_loop(loop)

    def run(self, run: Run) -> None:
        run_on_loop(self.loop, self.run_async(run))

    async def run_async(self, run: Run) -> None:
        session = Session(run)
        driver = _Driver(session)
        try:
            driver.execute(session.start())
            await driver.finished
        finally:
            driver.abort()
            session.close()


class _Driver:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.tls = LazyTls(session.options)
        self.resolver = Resolver()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.writers: dict[int, asyncio.Transport] = {}
        self.inboxes: dict[int, _Inbox] = {}  # for a rate limit's Hold and Release
        self.tunnelling: set[asyncio.Task[None]] = set()  # TLS starts, SOCKS look-ups
        self.finished = finished_on_stop(session.run)
        self.alarm = Alarm(self.loop, session, lambda: self.execute(session.timer()))
        self.writes = TurnWrites(self.loop, session.run)

    def abort(self) -> None:
        self.alarm.cancel()
        for task in self.tasks.values():
            task.cancel()
        for writer in self.writers.values():
            writer.abort()
        for step in self.tunnelling:
            step.cancel()

    def execute(self, actions: list[NetAction]) -> None:
        for action in actions:
            if type(action) is Send:
                writer = self.writers.get(action.conn)
                if writer is not None:
                    self.writes.write(writer, action.data)
            elif type(action) is Connect:
                work = guarded(self.session.run, self.connection(action))
                self.tasks[action.conn] = self.loop.create_task(work)
            elif type(action) is Close:
                self.close(action.conn)
            elif type(action) is StartTls:
                self.tunnel_step(self.start_tls(action))
            elif type(action) is Resolve:
                self.tunnel_step(self.resolve(action))
            elif type(action) is Hold or type(action) is Release:
                inbox = self.inboxes.get(action.conn)
                if inbox is not None:
                    inbox.hold(type(action) is Hold)
        self.rearm()

    def tunnel_step(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(guarded(self.session.run, work))
        self.tunnelling.add(task)
        task.add_done_callback(self.tunnelling.discard)

    async def resolve(self, action: Resolve) -> None:
        """A SOCKS proxy's origin address, looked up off the loop."""
        told = await tell_socks_address(self.loop, self.resolver, action)
        self.execute(self.session.resolved(*told))

    def close(self, conn: int) -> None:
        self.inboxes.pop(conn, None)
        writer = self.writers.pop(conn, None)
        if writer is not None:
            writer.abort()  # nothing left to send: skip the graceful dance
        task = self.tasks.pop(conn, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def rearm(self) -> None:
        if not self.session.done:
            self.alarm.update()
        elif not self.finished.done():
            self.finished.set_result(None)

    async def connection(self, action: Connect) -> None:
        conn, session = action.conn, self.session
        if session.done:  # stopped before this task's first step: one turn runs the first
            self.tasks.pop(conn, None)  # step of every task started, 10,000 at c10k (~0.7 s)
            return
        try:
            tls = self.tls.get() if action.tls else None
            writer, reader = await open_connection(
                self.loop, lambda: _Inbox(self.loop, session.read_size), self.resolver, action, tls
            )
        except Exception as exc:  # OSError, ssl.SSLError, a bad host name: classify decides
            self.tasks.pop(conn, None)
            self.execute(session.closed(conn, classify(exc)))
            return
        if session.done:  # stopped while connecting (see ``pump``)
            writer.abort()
            return
        self.writers[conn] = writer
        self.inboxes[conn] = reader
        self.execute(session.connected(conn, alpn(writer.get_extra_info("ssl_object"))))
        try:
            await self.pump(conn, reader)
        except OSError as exc:
            self.execute(session.closed(conn, classify(exc)))
        finally:
            self.close(conn)

    async def start_tls(self, action: StartTls) -> None:
        """TLS over an open tunnel; the task reading the inbox reads what TLS decrypts."""
        conn, session = action.conn, self.session
        writer = self.writers.get(conn)
        if writer is None:
            return
        try:
            upgraded = await self.loop.start_tls(
                writer,
                writer.get_protocol(),
                self.tls.get(),
                server_hostname=action.server_hostname,
                ssl_handshake_timeout=session.options.timeout,
            )
        except Exception as exc:  # OSError, ssl.SSLError, a timeout: classify decides
            if self.writers.get(conn) is writer:
                self.close(conn)
                self.execute(session.closed(conn, classify(exc)))
            return
        if self.writers.get(conn) is not writer or upgraded is None:
            if upgraded is not None:
                upgraded.abort()
            return
        self.writers[conn] = upgraded
        self.execute(session.connected(conn, alpn(upgraded.get_extra_info("ssl_object"))))

    async def pump(self, conn: int, reader: _Inbox) -> None:
        session = self.session
        while conn in self.writers:
            data = await reader.read()
            # Stopping: at c10k thousands of tasks were woken in the loop's last turn, and
            # each feeding its chunk first held the stop up by ~0.4 s.
            if conn not in self.writers or session.done:
                return
            self.execute(session.received(conn, data) if data else session.closed(conn))
            if not data:
                return
