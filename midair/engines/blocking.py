"""``sequential``, ``threads`` and ``green``: one blocking-style driver, three ways to run it.

The driver (``_blocking_driver``) is written as if every socket call blocks.
``sequential`` runs each connection to its end on the calling thread, then
the next: the baseline every other engine is measured against.  ``threads``
gives each connection an OS thread from a pool of up to ``concurrency``.
``green`` runs the very same code on gevent greenlets with gevent's
cooperative sockets, injected rather than monkey-patched in: the program
"thinks it's doing blocking i/o but it's really not".
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..run import Run
from ..session import Session
from ._blocking_driver import Driver, Runtime, _Link
from ._common import Waker
from ._resolver import POOL_SIZE, AddrInfo, lookup

__all__ = ["GreenEngine", "SequentialEngine", "ThreadsEngine"]

_JOIN_TIMEOUT = 10.0  # after an abort every socket is shut down: workers end at once
PREFETCH = 4096  # jobs whose host names ``sequential`` looks up ahead, all at once


STDLIB = Runtime(socket, ssl.SSLContext, threading.Lock, Waker)


class SequentialEngine:
    """One connection at a time on the calling thread.

    The session is told to open one connection at a time, so no connection
    waits in the queue on the core's stall clock.
    """

    name = "sequential"

    def run(self, run: Run) -> None:
        session = Session(run)
        queue: deque[_Link] = deque()
        driver = Driver(session, STDLIB, lambda _, link: queue.append(link), sequential=True)
        session.limit_connections(1)
        try:
            # One connection at a time would mean one lookup at a time: look ahead.
            driver.resolver.prefetch(list(dict.fromkeys(j.url.host for j in run.jobs[:PREFETCH])))
            driver.start()
            while not session.done:
                if queue:
                    driver.connection(queue.popleft())
                else:
                    driver.idle()
        finally:
            driver.abort()
            session.close()


class ThreadsEngine:
    """An OS thread per connection, up to ``concurrency`` at once."""

    name = "threads"

    def run(self, run: Run) -> None:
        session = Session(run)
        with ThreadPoolExecutor(run.options.concurrency, thread_name_prefix="midair") as pool:
            driver = Driver(session, STDLIB, pool.submit)
            try:
                driver.start()
                driver.wait_done()
            finally:
                driver.abort()  # the pool's exit then joins the workers
                session.close()


class GreenEngine:
    """A gevent greenlet per connection, on gevent's sockets (no monkey-patching)."""

    name = "green"

    def run(self, run: Run) -> None:
        import gevent.pool

        session = Session(run)
        group = gevent.pool.Group()
        lookups = _GreenLookups()
        driver = Driver(session, _green_runtime(lookups), group.spawn)
        try:
            driver.start()
            driver.wait_done()
        finally:
            driver.abort()
            group.join(timeout=_JOIN_TIMEOUT)
            group.kill(block=True, timeout=_JOIN_TIMEOUT)
            lookups.close()
            session.close()


class _GreenLookups:
    """Host-name lookups on a gevent thread pool of the resolver's size, made on the first
    name: the hub's own pool runs 10 at a time, so 100 names at 0.3 s took 3 s."""

    def __init__(self) -> None:
        self.pool: Any = None

    def __call__(self, host: str) -> list[AddrInfo]:
        if self.pool is None:
            import gevent.threadpool

            self.pool = gevent.threadpool.ThreadPool(POOL_SIZE)
        return self.pool.apply(lookup, (host,))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.kill()


def _green_runtime(lookups: _GreenLookups) -> Runtime:
    import gevent.event
    import gevent.lock
    import gevent.select
    import gevent.socket
    import gevent.ssl

    return Runtime(
        gevent.socket,
        gevent.ssl.SSLContext,
        gevent.lock.Semaphore,
        lambda: Waker(gevent.select.poll),
        _green_readable,
        lookups,
        gevent.event.Event,
    )


def _green_readable(fd: int, timeout: float | None) -> bool:
    """Wait on the hub for ``fd``: gevent's ``select`` first tries select(2), which
    refuses descriptors past FD_SETSIZE (1024), common at 1,000 connections."""
    import gevent.socket

    try:
        gevent.socket.wait_read(fd, timeout)
    except TimeoutError:
        return False
    return True
