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
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

from ..run import Run
from ..session import Session
from ._blocking_driver import Driver, Runtime, _Link
from ._common import Waker
from ._resolver import POOL_SIZE, AddrInfo, lookup

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

__all__ = ["GreenEngine", "SequentialEngine", "ThreadsEngine"]

_JOIN_TIMEOUT = 10.0  # after an abort every socket is shut down: workers end at once
PREFETCH = 4096  # jobs whose host names ``sequential`` looks up ahead, all at once


# No context class: the stdlib's, from ``ssl`` imported at the first TLS connection (~5 ms
# of start-up an http batch never needs).
STDLIB = Runtime(socket, None, threading.Lock, Waker)


class SequentialEngine:
    """One connection at a time on the calling thread.

    The session is told to open one connection at a time, so no connection
    waits in the queue on the core's stall clock.
    """

    name = "sequential"

    def run(self, run: Run) -> None:
        ahead, _ = run.head(PREFETCH)  # read before the session takes the jobs
        session = Session(run)
        queue: deque[_Link] = deque()
        driver = Driver(session, STDLIB, lambda _, link: queue.append(link), sequential=True)
        session.limit_connections(1)
        try:
            # One connection at a time would mean one lookup at a time: look ahead.
            driver.resolver.prefetch(list(dict.fromkeys(j.url.host for j in ahead)))
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
        pool = _Pool(run.options.concurrency, lambda: run.stopping)
        driver = Driver(session, STDLIB, pool.submit)
        try:
            driver.start()
            driver.wait_done()
        finally:
            driver.abort()  # every socket shut down: the workers' connections end
            pool.join()
            session.close()


_Work = tuple[Callable[[_Link], None], _Link]


class _Pool:
    """Up to ``size`` OS threads, started as connections need them, each running one
    connection after another.  Not ``concurrent.futures``: its import (with ``logging``)
    is ~3.7 ms of start-up, and the driver reads no futures (``connection`` reports its
    own errors)."""

    def __init__(self, size: int, stopping: Callable[[], bool]) -> None:
        self._size = size
        self._stopping = stopping
        self._work: SimpleQueue[_Work | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)  # one count per thread waiting for work
        self._threads: list[threading.Thread] = []
        # ``submit`` against ``join``: no work may be queued after the threads' Nones.
        self._lock = threading.Lock()
        self._joining = False

    def submit(self, run: Callable[[_Link], None], link: _Link) -> None:
        """Run ``run(link)`` on a waiting thread, a new one if none waits, else queue it.

        Dropped once ``join`` has begun: the driver spawns outside the session's lock, so a
        connection opened just before the abort can come after it, closed by then; queued
        behind the Nones, it would keep a thread (and ``join``) waiting for ever."""
        with self._lock:
            if self._joining:
                return
            self._work.put((run, link))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._size:
                name = f"midair_{len(self._threads)}"
                # A daemon: CPython walks every live non-daemon thread's lock as each one
                # starts and ends (threading._maintain_shutdown_locks), O(n^2) for n
                # threads: at c10k, seconds of CPU.  ``join`` waits for them all.
                thread = threading.Thread(target=self._serve, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            work[0](work[1])
            if self._stopping():  # end now, not woken again for a None: at c10k, a second
                return  # wake of 10,000 threads (each needing the GIL) slowed a stop ~0.1 s
            self._idle.release()

    def join(self) -> None:
        """End every thread once the work queued before is done; wait for them."""
        with self._lock:
            self._joining = True
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


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
        self.in_flight = 0  # lookups not answered yet (a stop does not wait for them)

    def __call__(self, host: str) -> list[AddrInfo]:
        if self.pool is None:
            import gevent.threadpool

            self.pool = gevent.threadpool.ThreadPool(POOL_SIZE)
        self.in_flight += 1
        try:
            return self.pool.apply(lookup, (host,))  # type: ignore[no-any-return]
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """End the pool's threads.  ``kill`` waits for a thread still in ``getaddrinfo``
        (for as long as the DNS server takes): with lookups in flight, it is left to a
        greenlet of its own, which ends with the last of them."""
        if self.pool is None:
            return
        if self.in_flight:
            import gevent

            gevent.spawn(self.pool.kill)
        else:
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
        gevent.spawn,  # the lookup on its own greenlet: the caller's wait can be ended
        events_any_thread=False,
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
