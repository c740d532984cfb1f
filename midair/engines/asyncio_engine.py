"""``asyncio``: one coroutine per connection on one event loop.

Each connection is a coroutine that connects, then reads until the socket
ends, feeding every chunk to the session; the actions that come back are
carried out on the spot.  One timer handle, re-armed after every session call,
wakes the core for retries and stall sweeps.  With the ``uvloop`` extra,
``loop="uvloop"`` runs the same code on libuv.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from ..core.actions import Close, Connect, NetAction, Send
from ._net import check_loop, classify, run_on_loop, tls_context
from ._session import Session

READ_SIZE = 64 * 1024  # also the stream's buffer limit: bounds memory per transfer


class AsyncioEngine:
    name = "asyncio"

    def __init__(self, loop: str = "asyncio") -> None:
        self.loop = check_loop(loop)

    def run(self, session: Session) -> None:
        run_on_loop(self.loop, self.run_async(session))

    async def run_async(self, session: Session) -> None:
        driver = _Driver(session)
        try:
            await driver.run()
        finally:
            driver.abort()
            session.close()


class _Driver:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.tls: ssl.SSLContext | None = None  # made on first use: http may redirect to https
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.finished = self.loop.create_future()
        self.timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self.execute(self.session.start())
        await self.finished

    def abort(self) -> None:
        if self.timer:
            self.timer.cancel()
        for task in self.tasks.values():
            task.cancel()
        for writer in self.writers.values():
            writer.transport.abort()

    def execute(self, actions: list[NetAction]) -> None:
        for action in actions:
            if type(action) is Send:
                writer = self.writers.get(action.conn)
                if writer is not None:
                    writer.write(action.data)
            elif type(action) is Connect:
                self.tasks[action.conn] = self.loop.create_task(self.connection(action))
            elif type(action) is Close:
                self.close(action.conn)
        self.rearm()

    def close(self, conn: int) -> None:
        writer = self.writers.pop(conn, None)
        if writer is not None:
            writer.transport.abort()  # nothing left to send: skip the graceful dance
        task = self.tasks.pop(conn, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def rearm(self) -> None:
        if self.session.done:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        if self.timer:
            self.timer.cancel()
        deadline = self.session.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self.timer = self.loop.call_later(delay, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.execute(self.session.timer())

    async def connection(self, action: Connect) -> None:
        conn, session = action.conn, self.session
        if action.tls and self.tls is None:
            self.tls = tls_context(session.options)
        try:
            reader, writer = await asyncio.open_connection(
                action.host, action.port, ssl=self.tls if action.tls else None,
                limit=READ_SIZE)
        except (TimeoutError, OSError) as exc:
            self.tasks.pop(conn, None)
            self.execute(session.closed(conn, classify(exc)))
            return
        self.writers[conn] = writer
        self.execute(session.connected(conn))
        try:
            while conn in self.writers:
                data = await reader.read(READ_SIZE)
                if conn not in self.writers:
                    break
                self.execute(session.received(conn, data) if data else session.closed(conn))
                if not data:
                    break
        except OSError as exc:
            self.execute(session.closed(conn, classify(exc)))
        finally:
            self.close(conn)

