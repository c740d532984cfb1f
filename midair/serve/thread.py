"""``ServerThread``: a ``SlowServer`` on its own event loop, for synchronous code.

The blocking engines, their tests and ``midair demo`` are not async, yet need a
server running beside them. This runs one in a daemon thread:

    with ServerThread(addresses=10, rate=262144) as srv:
        urllib.request.urlopen(srv.url(0, "/gen/f3.bin?size=1048576"))
        srv.stats().addresses["127.0.1.1"].requests

Every call that touches server state is marshalled onto the loop thread, so
``stats()`` is safe from any thread. Leaving the ``with`` block closes every
connection and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from midair.serve.server import SlowServer
from midair.serve.stats import ServerStats

__all__ = ["ServerThread"]

T = TypeVar("T")
_START_TIMEOUT = 30.0
_CALL_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class ServerThread:
    """Run ``SlowServer(addresses, **options)`` in a background thread."""

    def __init__(self, addresses: int = 10, **options: Any) -> None:
        self.server = SlowServer(addresses, **options)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.server.hosts

    def url(self, host_index: int, path: str = "/") -> str:
        return self.server.url(host_index, path)

    def urls(self, path: str = "/") -> list[str]:
        return self.server.urls(path)

    def start(self) -> ServerThread:
        """Start the thread and wait until every address listens; bind errors raise here."""
        self._thread = threading.Thread(target=self._run, name="midair-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise TimeoutError("midair serve thread did not start")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT)
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # handed to the starting thread, raised there
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's loop thread and return its result."""
        if self._loop is None:
            raise RuntimeError("server thread is not running")

        async def wrapper() -> T:
            return function()

        future = asyncio.run_coroutine_threadsafe(wrapper(), self._loop)
        return future.result(_CALL_TIMEOUT)

    def stats(self) -> ServerStats:
        return self.call(self.server.stats)

    def reset_stats(self) -> None:
        self.call(self.server.reset_stats)

    def set_rate(self, rate: int) -> None:
        """``SlowServer.set_rate`` on the loop thread."""
        self.call(lambda: self.server.set_rate(rate))

    def stop(self) -> None:
        """Close the server and join the thread; safe to call twice."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed since the check
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
        self._loop = self._stop = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
