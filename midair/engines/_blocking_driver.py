"""One download driver in plain blocking-socket style, for three concurrency models.

Each connection is a straight-line function: connect (and TLS handshake),
report ``connected``, then loop "send what is queued, block in ``recv``,
report what arrived" until the core closes it or the socket ends.  How those
functions run together is injected as a ``Runtime`` — the socket module, a
lock and a waker — plus a ``spawn`` function, so the same code runs on OS
threads, on gevent greenlets (cooperative sockets, nothing monkey-patched),
or one connection after another on the calling thread.

The session is not thread-safe: every session call happens under ``lock``,
and carrying out its actions never blocks there (a ``Send`` is queued for the
connection's owner, a ``Close`` marks the connection and shuts its socket
down, which wakes an owner blocked in ``recv``).  A ``Connect`` is handed to
``spawn`` once the lock is released (``_SessionCall``): starting a thread takes a while
(~0.5 ms with many running), and a new connection's first report needs the
lock, so 10,000 started under it kept every one waiting for the last.
Timers: the concurrent models wait for the next deadline on the calling
thread; the sequential one bounds each ``recv`` by it.

A stop (signal, failure) must interrupt every blocking call at once, so each
socket is registered on its connection *before* it connects: ``interrupt``
shuts every registered socket down, which ends a blocked ``connect``,
handshake, ``sendall`` or ``recv``, and sets the waker the calling thread
waits on.  It takes no lock, since it may run in a signal handler on a thread
that holds it.  From then on no session call is made (``stopping``): owners queued
for the lock give up, the calling thread leaves without it, and the connections
not started yet never are; ``abort`` closes the rest.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..core.actions import (
    Close,
    Connect,
    ConnectionFailure,
    Hold,
    NetAction,
    Release,
    Resolve,
    Send,
    StartTls,
)
from ..core.http import Piped
from ..core.records import Settings
from ..session import Session
from ._common import LazyTls, Waker, alpn, classify
from ._resolver import Answer, Lookup, Resolver, lookup, socks_address
from ._splice import MIN_BUDGET, Splicer, make_splicer

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

READ_SIZE = 64 * 1024  # per connection; a slow server rarely fills even this


def poll_readable(fd: int, timeout: float | None) -> bool:
    """Wait for ``fd`` to be readable.  poll(2), not select(2): at 1,000 connections
    descriptors pass FD_SETSIZE (1024), which select refuses."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


class Runtime(Settings):
    """What "blocking" means here: stdlib sockets and threads, or gevent's."""

    net: Any  # the socket module, for its ``socket``
    # An SSLContext whose wrap_socket gives this runtime's TLS sockets (None: the stdlib's).
    context_class: type | None
    lock: Callable[[], AbstractContextManager[Any]]
    waker: Callable[[], Waker]
    readable: Callable[[int, float | None], bool] = poll_readable  # waits before a splice
    lookup: Lookup = lookup  # a host name's getaddrinfo, blocking only the caller
    event: type[Any] = threading.Event  # what a connection waits on for its name's lookup
    start_lookup: Callable[[Callable[[], None]], object] | None = None  # None: the pool's
    # Whether ``event``'s set() works from any thread (a stop's): gevent's only on the hub's.
    events_any_thread: bool = True


class _Link:
    """One connection: the owner's socket, and the bytes the core asked it to send."""

    __slots__ = (
        *("action", "closed", "held_until", "outbox", "pause", "sock", "splicer", "tls"),
        "waker",
    )

    def __init__(self, action: Connect) -> None:
        self.action = action
        self.tls = action.tls  # True, too, once a tunnel's StartTls is done
        self.sock: socket.socket | None = None
        self.outbox: deque[bytes | StartTls | Resolve] = deque()  # in order: tunnel steps too
        self.closed = False  # the core closed it, or its end was reported
        # Made for the first big body: a pipe per connection, since owners fill theirs
        # outside the lock.
        self.splicer: Splicer | None = None
        # HTTP/2 (other threads' events open streams on it) or --host-delay (the timer
        # sends a request when its turn comes): a Send must wake an owner blocked reading
        # (else HTTP/1.1 sends only in answer to its own reads).
        self.waker: Waker | None = None
        # A rate limit's Hold: no read before this time (session clock; 0: none), and what
        # the owner sleeps on meanwhile, set by a Release, a Close or a stop.
        self.held_until = 0.0
        self.pause: Waker | None = None


class Driver:
    """Carry out a session's actions with blocking sockets; see the module docstring."""

    def __init__(
        self,
        session: Session,
        runtime: Runtime,
        spawn: Callable[[Callable[[_Link], None], _Link], object],
        *,
        sequential: bool = False,
    ) -> None:
        self.session = session
        self.runtime = runtime
        self.spawn = spawn
        self.lock = runtime.lock()
        self.wake = runtime.waker()  # set when the deadline moved earlier or the run ended
        self.armed: float | None = None  # the deadline the waiting thread sleeps towards
        self.links: dict[int, _Link] = {}
        self.starting: list[_Link] = []  # opened by the core, spawned as its lock is let go
        self.session_call = _SessionCall(self)
        self.tls = LazyTls(session.options, runtime.context_class)
        self.resolver = Resolver(runtime.lookup, runtime.event, start=runtime.start_lookup)
        self.sequential = sequential  # one link at a time: bound each recv by the deadline
        session.run.on_stop(self.interrupt)

    # --- session calls, always under the lock ------------------------------------------
    def start(self) -> None:
        with self.session_call:
            self.carry_out(self.session.start())

    def report(self, link: _Link, method: Callable[..., list[NetAction]], *args: Any) -> None:
        """Tell the session about ``link``, unless the core already closed it or the run is
        stopping."""
        if self.stopping():
            return
        with self.session_call:
            if not (link.closed or self.stopping()):
                self.carry_out(method(link.action.conn, *args))

    def report_end(self, link: _Link, failure: ConnectionFailure | None) -> None:
        if self.stopping():
            return
        with self.session_call:
            if link.closed or self.stopping():
                return
            self.forget(link)
            self.carry_out(self.session.closed(link.action.conn, failure))

    def tick(self) -> None:
        """Call the session's timer if it is due."""
        if self.stopping():
            return
        with self.session_call:
            if self.session.due():
                self.carry_out(self.session.timer())

    def carry_out(self, actions: list[NetAction]) -> None:
        for action in actions:
            if type(action) is Send:
                link = self.links.get(action.conn)
                if link is not None:
                    link.outbox.append(action.data)
                    if link.waker is not None:
                        link.waker.set()
            elif type(action) is StartTls or type(action) is Resolve:
                link = self.links.get(action.conn)
                if link is not None:
                    link.outbox.append(action)  # the link's owner takes it in turn
            elif type(action) is Connect:
                link = self.links[action.conn] = _Link(action)
                self.starting.append(link)
            elif type(action) is Close:
                link = self.links.get(action.conn)
                if link is not None:
                    self.forget(link)
            elif type(action) is Hold or type(action) is Release:
                link = self.links.get(action.conn)
                if link is not None:
                    self.hold(link, action)
        deadline = self.session.next_deadline()
        if self.session.done or (
            deadline is not None and (self.armed is None or deadline < self.armed)
        ):
            self.wake.set()

    def hold(self, link: _Link, action: Hold | Release) -> None:
        """A rate limit: the owner sleeps until ``until`` before its next read."""
        if link.pause is None:
            link.pause = self.runtime.waker()
        link.held_until = action.until if type(action) is Hold else 0.0
        if type(action) is Release:
            link.pause.set()

    def forget(self, link: _Link) -> None:
        link.closed = True
        del self.links[link.action.conn]
        if link.sock is not None:
            _shutdown(link.sock)  # wakes the owner if it is blocked on this socket
        if link.pause is not None:
            link.pause.set()  # or sleeping out a hold

    def stopping(self) -> bool:
        """Whether a stop was requested: then no session call is made any more, not even one
        already waiting for the lock (at c10k, thousands of owners queue for it with a
        chunk each; served first, they held a stop up for seconds).  ``abort`` closes what
        is left.  Read without the lock: a flag that is only ever set."""
        return self.session.run.stopping

    def interrupt(self) -> None:
        """A stop: wake the waiting thread and every blocked owner (no lock; see above)."""
        self.wake.set()
        if self.runtime.events_any_thread:  # else ``abort``, on the run's thread, does it
            self.resolver.stop()  # no owner stays waiting for a name (sequential: the caller)
        for link in list(self.links.values()):
            if link.sock is not None:
                _shutdown(link.sock)
            if link.pause is not None:
                link.pause.set()

    # --- one connection, start to end (the owner's code) ------------------------------
    def connection(self, link: _Link) -> None:
        try:
            self.converse(link)
        except Exception as exc:  # a bug, not the network: stop the whole run
            self.session.run.fail(exc)

    def converse(self, link: _Link) -> None:
        try:
            sock = self.open(link)
        except Exception as exc:  # OSError, ssl.SSLError, a bad host name: classify decides
            self.report_end(link, classify(exc))
            return
        if sock is None:  # closed while connecting
            return
        try:
            protocol = alpn(sock)
            if not self.sequential and self.multiplexed(link, protocol):
                link.waker = self.runtime.waker()
            self.report(link, self.session.connected, protocol)
            self.pump(link, sock)
        except OSError as exc:
            self.report_end(link, classify(exc))
        finally:
            sock.close()
            if link.sock is not None and link.sock is not sock:  # a tunnel's TLS socket
                link.sock.close()
            if link.splicer is not None:
                link.splicer.close()
            if link.waker is not None:
                link.waker.close()
            if link.pause is not None:
                with self.lock:  # a Release may be setting it
                    link.pause.close()

    def multiplexed(self, link: _Link, protocol: str | None) -> bool:
        """Whether a Send for ``link`` may come from another thread's event: the core will
        speak HTTP/2 on it (as Batch decides it), or --host-delay has its timer send the
        requests whose turn came."""
        if self.session.options.host_delay:
            return True
        if protocol is None:
            return not link.action.tls and self.session.options.http2_prior_knowledge
        return protocol == "h2"

    def open(self, link: _Link) -> socket.socket | None:
        """Connect (and shake hands) within ``timeout``; the result blocks without one."""
        sock = self.connect(link)
        if sock is not None and link.action.tls:
            sock = self.handshake(link, sock)
        if sock is not None:
            sock.settimeout(None)
        return sock

    def handshake(self, link: _Link, sock: socket.socket) -> socket.socket | None:
        tls = self.tls.get().wrap_socket(
            sock, server_hostname=link.action.host, do_handshake_on_connect=False
        )
        if not self.adopt(link, tls):
            return None
        try:
            tls.do_handshake()
        except BaseException:
            tls.close()
            raise
        return tls

    def start_tls(self, link: _Link, sock: socket.socket, action: StartTls) -> socket.socket | None:
        """TLS over an open tunnel, as ``open`` shakes hands; then ``connected`` again."""
        sock.settimeout(self.session.options.timeout)
        tls = self.tls.get().wrap_socket(
            sock, server_hostname=action.server_hostname, do_handshake_on_connect=False
        )
        if not self.adopt(link, tls):
            return None
        tls.do_handshake()
        tls.settimeout(None)
        link.tls = True
        protocol = alpn(tls)
        if not self.sequential and self.multiplexed(link, protocol) and link.waker is None:
            link.waker = self.runtime.waker()
        self.report(link, self.session.connected, protocol)
        return tls

    def tell_address(self, link: _Link, action: Resolve) -> None:
        """A SOCKS proxy's origin address, looked up on the owner's thread (its own)."""
        try:
            answer: Answer = self.resolver.resolve_blocking(action.host, 0)
        except OSError as exc:
            answer = exc
        self.report(link, self.session.resolved, *socks_address(action.host, answer))

    def connect(self, link: _Link) -> socket.socket | None:
        """``socket.create_connection``, with each socket adopted before it connects; the
        name looked up once for all the connections to it (``_resolver``)."""
        net, action = self.runtime.net, link.action
        error: OSError = OSError(f"no address for {action.host}")
        for family, kind, proto, _, address in self.resolver.resolve_blocking(
            action.host, action.port
        ):
            sock = net.socket(family, kind, proto)
            if not self.adopt(link, sock):
                return None
            try:
                sock.settimeout(self.session.options.timeout)
                sock.connect(address)
                return sock  # type: ignore[no-any-return]
            except OSError as exc:
                error = exc
                sock.close()
        raise error

    def adopt(self, link: _Link, sock: socket.socket) -> bool:
        """Register ``sock`` so a stop can shut it down; False (and closed) if too late."""
        if self.stopping():  # (not queued for the lock behind a stop)
            sock.close()
            return False
        with self.lock:
            link.sock = sock
            if link.closed or self.session.done:  # checked after: no stop slips between
                sock.close()
                return False
            return True

    def pump(self, link: _Link, sock: socket.socket) -> None:
        # ``recv``, not ``recv_into`` a buffer of the link's own: what is read was copied out
        # for the core anyway, and 10,000 links' zeroed 64 KiB buffers were 640 MiB (c10k).
        size = min(READ_SIZE, self.session.read_size or READ_SIZE)
        while True:
            if link.outbox and self.sequential:  # sends stay bounded, as connects are
                sock.settimeout(self.session.options.timeout)
            while link.outbox and not link.closed:
                item = link.outbox.popleft()
                if type(item) is StartTls:
                    upgraded = self.start_tls(link, sock, item)
                    if upgraded is None:
                        return
                    sock = upgraded
                elif type(item) is Resolve:
                    self.tell_address(link, item)
                else:
                    sock.sendall(item)  # type: ignore[arg-type]
            if link.closed:
                return
            if link.held_until and self.sit_out_hold(link):
                continue  # woken early (a Send, a timer, a stop): look again
            if link.waker is not None and not self.wait_multiplexed(link, sock):
                continue  # woken to send
            piped = self.splice(link, sock)
            if piped is not None:
                self.deliver(link, piped)
                continue
            data = self.receive(link, sock, size) if self.sequential else sock.recv(size)
            if link.closed or self.session.done:
                return
            if data is None:
                continue  # a timer sent a request: it goes out first
            if not data:
                self.report_end(link, None)
                return
            self.report(link, self.session.received, data)

    def sit_out_hold(self, link: _Link) -> bool:
        """Sleep until the link's hold ends; False once it has (read on).  Sequential
        wakes for the session's timer meanwhile, as ``receive`` does."""
        assert link.pause is not None
        wait = link.held_until - self.session.clock()
        if wait <= 0 or self.session.done:
            link.held_until = 0.0
            return False
        timer = self.session.timeout() if self.sequential else None
        link.pause.wait(wait if timer is None else min(wait, timer))
        link.pause.clear()
        if self.sequential:
            self.tick()
        return True

    def wait_multiplexed(self, link: _Link, sock: socket.socket) -> bool:
        """Wait for bytes or a Send for ``link``; True: bytes (TLS may hold some already)."""
        assert link.waker is not None
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        readable = link.waker.wait_with(sock.fileno())
        link.waker.clear()
        return readable

    def deliver(self, link: _Link, piped: Piped) -> None:
        """Report spliced bytes (a count of 0: EOF); then nothing may stay in the pipe."""
        if link.closed:
            return
        if not piped.count:
            self.report_end(link, None)
            return
        self.report(link, self.session.received, piped)
        if not piped.emptied:  # the store did not take them (the download failed first)
            assert link.splicer is not None
            link.splicer.clear()

    def splice(self, link: _Link, sock: socket.socket) -> Piped | None:
        """A big Content-Length body's next bytes, moved into the link's pipe unread
        (``_splice``); None: recv them instead."""
        if link.tls:
            return None
        with self.lock:
            stopped = link.closed or self.stopping()
            budget = 0 if stopped else self.session.pipeable(link.action.conn)
        if budget < MIN_BUDGET or (link.splicer is not None and not link.splicer.working):
            return None
        if link.splicer is None:
            link.splicer = make_splicer()
            if link.splicer is None:
                return None
        while not (link.closed or self.session.done):
            if not os.get_blocking(sock.fileno()) and not self.wait_readable(link, sock):
                continue  # a timer was due: it ran, and the link may be closed now
            try:
                return link.splicer.fill(sock, budget)
            except BlockingIOError:
                continue
        return Piped(0, link.splicer.read)

    def wait_readable(self, link: _Link, sock: socket.socket) -> bool:
        """For a socket that does not block (a timeout, gevent's): wait for bytes, as
        ``recv`` would; sequential wakes for the session's timer, as ``receive`` does."""
        wait = self.session.timeout() if self.sequential else None
        if wait == 0:
            self.tick()
            return False
        if self.runtime.readable(sock.fileno(), wait):
            return True
        if self.sequential:
            self.tick()
        return False

    def receive(self, link: _Link, sock: socket.socket, size: int) -> bytes | None:
        """Sequential: ``recv``, waking for the session's timer when it is due.
        Empty once the session is done: a stop must not leave it ticking a due timer.  None
        when the timer had a request sent (--host-delay): it goes out before reading."""
        while not (link.closed or self.session.done):
            wait = self.session.timeout()
            if wait == 0:  # (a zero socket timeout would mean non-blocking)
                self.tick()
                if link.outbox:
                    return None
                continue
            sock.settimeout(wait)
            try:
                return sock.recv(size)
            except TimeoutError:
                self.tick()
                if link.outbox:
                    return None
        return b""

    # --- the calling thread: timers until the batch is done ---------------------------
    def wait_done(self) -> None:
        """Concurrent models: serve the timer on this thread until the session is done."""
        while not self.stopping():
            self.wake.clear()
            with self.session_call:
                if self.session.done:
                    return
                wait = self.session.timeout()
                self.armed = self.session.next_deadline()
                if wait == 0:
                    self.carry_out(self.session.timer())
                    continue
            self.wake.wait(wait)

    def idle(self) -> None:
        """Sequential, between connections: sleep until the timer (or a stop), then tick."""
        self.wake.clear()
        if self.session.done:  # stopped since the caller looked
            return
        wait = self.session.timeout()
        if wait is None:  # nothing queued, nothing timed, not done: a core bug
            raise RuntimeError("session is waiting for nothing")
        self.wake.wait(wait)
        self.tick()

    def abort(self) -> None:
        """Every exit path: shut every socket down, end every wait for a name, so each
        owner returns."""
        self.resolver.stop()
        with self.lock:
            for link in list(self.links.values()):
                self.forget(link)
        self.wake.close()


class _SessionCall:
    """``with driver.session_call:`` holds the lock for a session call, and on leaving it
    spawns the connections the call's actions opened (``Driver.starting``), outside it.
    Not a ``contextlib`` generator: one runs for every read, where this costs less."""

    __slots__ = ("driver",)

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def __enter__(self) -> None:
        self.driver.lock.__enter__()

    def __exit__(self, *_: object) -> None:
        driver = self.driver
        starting, driver.starting = driver.starting, []
        driver.lock.__exit__(None, None, None)
        for link in starting:
            if driver.stopping():  # 10,000 threads take seconds to start: ``abort`` closes
                break  # the links not spawned yet
            driver.spawn(driver.connection, link)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)
