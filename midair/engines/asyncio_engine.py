"""``asyncio``: one coroutine per connection on one event loop.

Each connection is a task that connects, then reads until the socket ends,
feeding every chunk to the session; the actions that come back are carried
out on the spot.  One ``Alarm`` wakes the core for retries and stall sweeps.
Every task is ``guarded``: an exception in it fails the run instead of being
logged as "never retrieved".  A stop request resolves the future ``run_async``
awaits, from any thread.  With the ``uvloop`` extra, ``loop="uvloop"`` runs
the same code on libuv.
"""

from __future__ import annotations

import asyncio

from ..core.actions import Close, Connect, NetAction, Send
from ..run import Run
from ..session import Session
from ._aio import check_loop, finished_on_stop, guarded, run_on_loop
from ._common import Alarm, LazyTls, classify

READ_SIZE = 64 * 1024  # also the stream's buffer limit: bounds memory per transfer


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
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.finished = finished_on_stop(session.run)
        self.alarm = Alarm(self.loop, session, lambda: self.execute(session.timer()))

    def abort(self) -> None:
        self.alarm.cancel()
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
                work = guarded(self.session.run, self.connection(action))
                self.tasks[action.conn] = self.loop.create_task(work)
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
        if not self.session.done:
            self.alarm.update()
        elif not self.finished.done():
            self.finished.set_result(None)

    async def connection(self, action: Connect) -> None:
        conn, session = action.conn, self.session
        try:
            reader, writer = await asyncio.open_connection(
                action.host,
                action.port,
                ssl=self.tls.get() if action.tls else None,
                limit=READ_SIZE,
            )
        except Exception as exc:  # OSError, ssl.SSLError, a bad host name: classify decides
            self.tasks.pop(conn, None)
            self.execute(session.closed(conn, classify(exc)))
            return
        self.writers[conn] = writer
        self.execute(session.connected(conn))
        try:
            await self.pump(conn, reader)
        except OSError as exc:
            self.execute(session.closed(conn, classify(exc)))
        finally:
            self.close(conn)

    async def pump(self, conn: int, reader: asyncio.StreamReader) -> None:
        session = self.session
        while conn in self.writers:
            data = await reader.read(READ_SIZE)
            if conn not in self.writers:
                return
            self.execute(session.received(conn, data) if data else session.closed(conn))
            if not data:
                return
