"""One download driver in plain blocking-socket style, for three concurrency models.

Each connection is a straight-line function: connect (and TLS handshake),
report ``connected``, then loop "send what is queued, block in ``recv_into``,
report what arrived" until the core closes it or the socket ends.  How those
functions run together is injected as a ``Runtime`` — the socket module, a
lock and an event — plus a ``spawn`` function, so the same code runs on
OS threads, on gevent greenlets (cooperative sockets, nothing monkey-patched),
or one connection after another on the calling thread.

The session is not thread-safe: every session call happens under ``lock``,
and carrying out its actions never blocks there (a ``Send`` is queued for the
connection's owner, a ``Connect`` is handed to ``spawn``, a ``Close`` marks
the connection and shuts its socket down, which wakes an owner blocked in
``recv``).  Timers: the concurrent models wait for the next deadline on the
calling thread; the sequential one bounds each ``recv`` by it.

A stop request sets ``wake`` and shuts every socket down, so the calling
thread and every owner blocked in ``recv`` return at once; an exception in an
owner's code is the run's internal error.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.actions import Close, Connect, ConnectionFailure, NetAction, Send
from ..session import Session
from ._common import LazyTls, classify

READ_SIZE = 64 * 1024  # per connection; a slow server rarely fills even this


class EventLike(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class Runtime:
    """What "blocking" means here: stdlib sockets and threads, or gevent's."""

    create_connection: Callable[..., socket.socket]
    context_class: type[ssl.SSLContext]  # its wrap_socket gives this runtime's TLS sockets
    lock: Callable[[], AbstractContextManager[Any]]
    event: Callable[[], EventLike]  # its ``set`` must be safe from a signal handler
    max_wait: float | None = None  # bound on one wait, where ``set`` may not wake at once


class _Link:
    """One connection: the owner's socket, and the bytes the core asked it to send."""

    __slots__ = ("action", "closed", "outbox", "sock")

    def __init__(self, action: Connect) -> None:
        self.action = action
        self.sock: socket.socket | None = None
        self.outbox: deque[bytes] = deque()
        self.closed = False  # the core closed it, or its end was reported


class Driver:
    """Carry out a session's actions with blocking sockets; see the module docstring."""

    def __init__(self, session: Session, runtime: Runtime,
                 spawn: Callable[[Callable[[_Link], None], _Link], object], *,
                 sequential: bool = False) -> None:
        self.session = session
        self.runtime = runtime
        self.spawn = spawn
        self.lock = runtime.lock()
        self.wake = runtime.event()  # set when the deadline moved earlier or the batch ended
        self.armed: float | None = None  # the deadline the waiting thread sleeps towards
        self.links: dict[int, _Link] = {}
        self.tls = LazyTls(session.options, runtime.context_class)
        self.sequential = sequential  # one link at a time: bound each recv by the deadline
        session.run.on_stop(self.interrupt)

    # --- session calls, always under the lock ------------------------------------------
    def start(self) -> None:
        with self.lock:
            self.carry_out(self.session.start())

    def report(self, link: _Link, method: Callable[..., list[NetAction]], *args: Any) -> None:
        """Tell the session about ``link``, unless the core already closed it."""
        with self.lock:
            if not link.closed:
                self.carry_out(method(link.action.conn, *args))

    def report_end(self, link: _Link, failure: ConnectionFailure | None) -> None:
        with self.lock:
            if link.closed:
                return
            self.forget(link)
            self.carry_out(self.session.closed(link.action.conn, failure))

    def tick(self) -> None:
        """Call the session's timer if it is due."""
        with self.lock:
            if self.session.due():
                self.carry_out(self.session.timer())

    def carry_out(self, actions: list[NetAction]) -> None:
        for action in actions:
            if type(action) is Send:
                link = self.links.get(action.conn)
                if link is not None:
                    link.outbox.append(action.data)
            elif type(action) is Connect:
                link = self.links[action.conn] = _Link(action)
                self.spawn(self.connection, link)
            elif type(action) is Close:
                link = self.links.get(action.conn)
                if link is not None:
                    self.forget(link)
        deadline = self.session.next_deadline()
        if self.session.done or (deadline is not None and
                                 (self.armed is None or deadline < self.armed)):
            self.wake.set()

    def forget(self, link: _Link) -> None:
        link.closed = True
        del self.links[link.action.conn]
        if link.sock is not None:
            _shutdown(link.sock)  # wakes the owner if it is blocked on this socket

    # --- one connection, start to end (the owner's code) ------------------------------
    def connection(self, link: _Link) -> None:
        try:
            self.converse(link)
        except Exception as exc:  # a bug, not the network: stop the whole run
            self.session.run.fail(exc)

    def converse(self, link: _Link) -> None:
        try:
            sock = self.open(link.action)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            self.report_end(link, classify(exc))
            return
        try:
            with self.lock:
                if link.closed:
                    return
                link.sock = sock
            self.report(link, self.session.connected)
            self.pump(link, sock)
        except OSError as exc:
            self.report_end(link, classify(exc))
        finally:
            sock.close()

    def open(self, action: Connect) -> socket.socket:
        """Connect (and shake hands) within ``timeout``; the result blocks without one."""
        timeout = self.session.options.timeout
        sock = self.runtime.create_connection((action.host, action.port), timeout=timeout)
        if action.tls:
            try:
                sock = self.tls.get().wrap_socket(sock, server_hostname=action.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(None)
        return sock

    def pump(self, link: _Link, sock: socket.socket) -> None:
        view = memoryview(bytearray(READ_SIZE))
        while True:
            if link.outbox and self.sequential:  # sends stay bounded, as connects are
                sock.settimeout(self.session.options.timeout)
            while link.outbox and not link.closed:
                sock.sendall(link.outbox.popleft())
            if link.closed:
                return
            n = self.receive(link, sock, view) if self.sequential else sock.recv_into(view)
            if link.closed:
                return
            if n == 0:
                self.report_end(link, None)
                return
            self.report(link, self.session.received, bytes(view[:n]))

    def receive(self, link: _Link, sock: socket.socket, view: memoryview) -> int:
        """Sequential: ``recv_into``, waking for the session's timer when it is due."""
        while not link.closed and not self.session.done:
            wait = self.session.timeout()
            if wait == 0.0:  # (a zero socket timeout would mean non-blocking)
                self.tick()
                continue
            sock.settimeout(wait)
            try:
                return sock.recv_into(view)
            except TimeoutError:
                self.tick()
        return 0

    # --- the calling thread: timers until the batch is done ---------------------------
    def wait_done(self) -> None:
        """Concurrent models: serve the timer on this thread until the session is done."""
        while True:
            self.wake.clear()
            with self.lock:
                if self.session.done:
                    return
                if self.session.due():
                    self.carry_out(self.session.timer())
                    continue
                self.armed = self.session.next_deadline()
                timeout = self.session.timeout()
            self.idle(timeout)

    def idle(self, timeout: float | None) -> None:
        """Wait for ``timeout`` seconds, a wake-up, or (where wakes may lag) ``max_wait``."""
        bound = self.runtime.max_wait
        if bound is not None and (timeout is None or timeout > bound):
            timeout = bound
        self.wake.wait(timeout)

    def interrupt(self) -> None:
        """On a stop (any thread, a signal handler too): wake the waiter and every owner.

        No lock: the interrupted thread may hold it.  Copying the dict is atomic."""
        self.wake.set()
        for link in list(self.links.values()):
            if link.sock is not None:
                _shutdown(link.sock)

    def abort(self) -> None:
        """Every exit path: shut every socket down so its owner returns."""
        with self.lock:
            for link in list(self.links.values()):
                self.forget(link)
        close = getattr(self.wake, "close", None)
        if close is not None:
            close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)
