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
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.actions import Close, Connect, ConnectionFailure, NetAction, Send
from ._net import classify, tls_context
from ._session import Session

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
    event: Callable[[], EventLike]


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
        self.tls: ssl.SSLContext | None = None
        self.error: BaseException | None = None  # raised in a worker, re-raised by wait_done
        self.sequential = sequential  # one link at a time: bound each recv by the deadline

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
            deadline = self.session.next_deadline()
            if deadline is not None and time.monotonic() >= deadline:
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
        except BaseException as exc:  # a bug, not the network: stop the whole run
            with self.lock:
                self.error = self.error or exc
            self.wake.set()

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
                sock = self.tls_context().wrap_socket(sock, server_hostname=action.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(None)
        return sock

    def tls_context(self) -> ssl.SSLContext:
        with self.lock:  # made on first use: an http batch may redirect to https
            if self.tls is None:
                self.tls = tls_context(self.session.options, self.runtime.context_class)
            return self.tls

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
        while not link.closed:
            deadline = self.session.next_deadline()
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:  # (a zero timeout would mean non-blocking)
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
                if self.error is not None:
                    raise self.error
                if self.session.done:
                    return
                deadline = self.armed = self.session.next_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    self.carry_out(self.session.timer())
                    continue
            self.wake.wait(None if deadline is None else deadline - time.monotonic())

    def abort(self) -> None:
        """Every exit path: shut every socket down so its owner returns."""
        with self.lock:
            for link in list(self.links.values()):
                self.forget(link)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)
