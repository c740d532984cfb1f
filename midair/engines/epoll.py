"""``epoll``: one thread, one ``selectors`` loop, an explicit state per connection.

The loop, in four steps, until the session is done:

1. start the connections whose host name was looked up meanwhile, and report
   the connection failures found while carrying out actions;
2. wait in ``select`` until a socket is ready or the session's deadline comes;
3. move every ready connection along: finish its connect, its TLS handshake,
   send what its write buffer holds, or read into the one shared buffer and
   report what arrived (a big plain-HTTP body is spliced through the loop's
   one pipe instead, see ``_splice``);
4. call the session's ``timer`` when its deadline has passed.

A stop request writes to a self-pipe the selector watches, so ``select``
returns at once and step 1 finds the session done.  The same pipe brings the
answers of host-name lookups, which run on the resolver's threads (``_resolver``):
the loop itself never waits for DNS.

Each connection is RESOLVING (its name being looked up, no socket yet),
CONNECTING (non-blocking ``connect_ex`` in flight), HANDSHAKING (TLS, want-read
or want-write) or OPEN, and asks the selector for exactly the readiness its
state needs.  Every session call returns actions,
carried out on the spot: ``Connect`` starts a connection, ``Close`` drops it;
a ``Send`` waits for the end of the turn, when the turn's requests go out
together (``send_unsent``) and the write buffer keeps what a socket does not take.
Connect and handshake need no timers of their own: the core's stall sweep
closes a connection that has not produced anything within ``timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import selectors
import socket
import threading
from collections import deque
from enum import Enum

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
from ..run import Run
from ..session import Session
from ._common import LazyTls, Waker, alpn, classify, would_block
from ._resolver import AddrInfo, Answer, Resolver, socks_address
from ._splice import make_splicer

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    _AddrInfo = tuple[Any, ...]  # one getaddrinfo result

__all__ = ["EpollEngine"]

READ_SIZE = 256 * 1024
# The first read after a request, where splicing: a head, and a small body whole; a big
# body after it is spliced, not copied through the read buffer.
HEAD_READ_SIZE = 32 * 1024
SPLICE_BURST = 8  # pipe-fulls moved from one socket before the loop looks at the others
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_IN_PROGRESS = (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY)


class State(Enum):
    RESOLVING = "resolving"
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    OPEN = "open"


class _Conn:
    __slots__ = (
        *("addresses", "asked", "held", "host", "id", "outbuf", "sock", "state", "tls"),
        "want",
    )

    def __init__(self, action: Connect, addresses: list[AddrInfo]) -> None:
        self.id, self.host, self.tls = action.conn, action.host, action.tls
        self.addresses = addresses  # getaddrinfo results still to try
        self.sock: socket.socket | None = None
        self.state = State.CONNECTING
        self.want = WRITE  # the readiness the current state waits for (0: unregistered)
        self.held = False  # a rate limit's Hold: not read until its Release
        self.outbuf = bytearray()
        self.asked = False  # a request went out and nothing came back yet


class EpollEngine:
    name = "epoll"

    def run(self, run: Run) -> None:
        session = Session(run)
        loop = _Loop(session)
        try:
            loop.run()
        finally:
            loop.close_all()
            session.close()


class _Loop:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.failed: deque[tuple[_Conn, ConnectionFailure]] = deque()
        self.resolver = Resolver()
        self.answers: deque[Callable[[], None]] = deque()  # lookups' answers, to be told
        self.unsent: list[tuple[_Conn, bytes]] = []  # this turn's requests (send_unsent)
        # A late answer must not write to the waker's descriptors once closed (their
        # numbers may be another file's by then): posting and closing take turns.
        self.posting = threading.Lock()
        # One buffer: one thread reads.  Smaller under a rate limit: see core/rate.py.
        self.view = memoryview(bytearray(min(READ_SIZE, session.read_size or READ_SIZE)))
        self.head_view = self.view[:HEAD_READ_SIZE]
        self.tls = LazyTls(session.options)
        self.splicer = make_splicer()
        self.waker = Waker()
        self.selector.register(self.waker, READ, None)
        session.run.on_stop(self.waker.set)

    def run(self) -> None:
        session = self.session
        self.execute(session.start())
        while True:
            while self.answers:
                self.answers.popleft()()
            while self.failed:
                conn, failure = self.failed.popleft()
                self.execute(session.closed(conn.id, failure))
            if session.done:
                return
            self.send_unsent()
            for key, mask in self.selector.select(self.timeout()):
                conn = key.data
                if conn is None:
                    self.waker.clear()  # before the answers are read: none is missed
                elif self.conns.get(conn.id) is conn:  # not closed meanwhile
                    self.ready(conn, mask)
            if session.due():
                self.execute(session.timer())

    def timeout(self) -> float | None:
        if self.failed or self.answers:
            return 0.0
        timeout = self.session.timeout()
        if timeout is None and not self.conns:  # nothing to wait for, yet not done: a core bug
            raise RuntimeError("session is waiting for nothing")
        return timeout

    # --- actions ----------------------------------------------------------------------
    def execute(self, actions: list[NetAction]) -> None:
        for action in actions:
            if type(action) is Send:
                conn = self.conns.get(action.conn)
                if conn is not None:
                    conn.asked = True
                    if conn.state is State.OPEN and not conn.outbuf:
                        self.unsent.append((conn, action.data))
                    else:
                        conn.outbuf += action.data
            elif type(action) is Connect:
                if not self.session.done:  # a stop amid a batch's first 10,000 connects
                    self.connect(action)
            elif type(action) is Close:
                conn = self.conns.get(action.conn)
                if conn is not None:
                    self.drop(conn)
            elif type(action) is StartTls:
                self.start_tls(action)
            elif type(action) is Resolve:
                self.resolve(action)
            elif type(action) is Hold or type(action) is Release:
                self.hold(action)

    def hold(self, action: Hold | Release) -> None:
        """Stop reading a connection, or read it again: a rate limit (core/rate.py)."""
        conn = self.conns.get(action.conn)
        if conn is None or conn.state is not State.OPEN:
            return
        conn.held = type(action) is Hold
        self.interest(conn, READ | WRITE if conn.outbuf else READ)
        if not conn.held and conn.tls and conn.sock.pending():  # type: ignore[union-attr]
            # Decrypted bytes the socket will not signal: read them from the loop's top.
            self.answers.append(functools.partial(self.read_again, conn))

    def read_again(self, conn: _Conn) -> None:
        if self.conns.get(conn.id) is conn and not conn.held:
            self.ready(conn, READ)

    def resolve(self, action: Resolve) -> None:
        """A SOCKS proxy's origin address, told at the top of the loop (no re-entry)."""

        def tell(answer: Answer) -> None:
            self.execute(self.session.resolved(action.conn, *socks_address(action.host, answer)))

        answer = self.resolver.answer(action.host, 0, lambda later: self.post(tell, later))
        if answer is not None:
            self.answers.append(functools.partial(tell, answer))

    def start_tls(self, action: StartTls) -> None:
        """TLS over an open tunnel: the same handshake as a direct connection's."""
        conn = self.conns.get(action.conn)
        if conn is None:
            return
        conn.tls, conn.host = True, action.server_hostname
        try:
            self.begin_tls(conn)
        except OSError as exc:  # includes ssl.SSLError
            self.fail(conn, exc)

    def connect(self, action: Connect) -> None:
        """Connect at once to an IP literal or a name already known; else when its
        lookup answers (``answered``)."""
        conn = self.conns[action.conn] = _Conn(action, [])
        try:
            post = functools.partial(self.post, functools.partial(self.answered, conn))
            addresses = self.resolver.resolve(action.host, action.port, post)
        except OSError as exc:  # known not to resolve
            self.fail(conn, exc)
            return
        if addresses is None:
            conn.state = State.RESOLVING
            return
        conn.addresses = addresses
        self.try_next_address(conn, None)

    def post(self, tell: Callable[[Answer], None], answer: Answer) -> None:
        """On a resolver thread: queue ``answer`` to be told and wake the loop for it."""
        with self.posting:
            self.answers.append(functools.partial(tell, answer))
            self.waker.set()  # a no-op once closed

    def answered(self, conn: _Conn, answer: Answer) -> None:
        if self.conns.get(conn.id) is not conn:  # closed while its name was looked up
            return
        conn.state = State.CONNECTING
        if isinstance(answer, OSError):
            self.fail(conn, answer)
        else:
            conn.addresses = answer
            self.try_next_address(conn, None)

    def try_next_address(self, conn: _Conn, error: OSError | None) -> None:
        """Start a connect to the next address; when none is left, report ``error``."""
        self.close_socket(conn)
        while conn.addresses:
            family, kind, proto, _, address = conn.addresses.pop(0)
            try:
                conn.sock = socket.socket(family, kind, proto)  # EMFILE lands here
                conn.sock.setblocking(False)
                code = conn.sock.connect_ex(address)
            except OSError as exc:
                error = exc
            else:
                if code in _IN_PROGRESS:
                    self.selector.register(conn.sock, WRITE, conn)
                    return
                error = OSError(code, os.strerror(code))
            self.close_socket(conn)
        self.fail(conn, error or OSError(errno.EHOSTUNREACH, "no address to connect to"))

    def fail(self, conn: _Conn, exc: OSError) -> None:
        """Close ``conn`` now; report the failure at the top of the loop (no re-entry)."""
        self.drop(conn)
        self.failed.append((conn, classify(exc)))

    def drop(self, conn: _Conn) -> None:
        self.conns.pop(conn.id, None)
        self.close_socket(conn)

    def close_socket(self, conn: _Conn) -> None:
        self.unregister(conn)
        if conn.sock is not None:
            conn.sock.close()
            conn.sock = None

    def unregister(self, conn: _Conn) -> None:
        if conn.sock is not None and conn.sock.fileno() >= 0:
            with contextlib.suppress(KeyError):  # never registered
                self.selector.unregister(conn.sock)

    def close_all(self) -> None:
        # The selector first: a closed socket leaves epoll by itself, so a stop at c10k
        # makes no 10,000 unregisters.
        self.selector.close()
        for conn in self.conns.values():
            if conn.sock is not None:
                conn.sock.close()
                conn.sock = None
        self.conns.clear()
        with self.posting:
            self.waker.close()
        if self.splicer is not None:
            self.splicer.close()

    # --- readiness, by state ----------------------------------------------------------
    def ready(self, conn: _Conn, mask: int) -> None:
        try:
            if conn.state is State.CONNECTING:
                self.connected(conn)
            elif conn.state is State.HANDSHAKING:
                self.handshake(conn)
            else:
                if mask & WRITE:
                    self.flush(conn)
                if mask & READ and self.conns.get(conn.id) is conn:
                    self.read(conn)
        except OSError as exc:  # includes ssl.SSLError
            if self.conns.get(conn.id) is conn:
                self.drop(conn)
                self.execute(self.session.closed(conn.id, classify(exc)))

    def connected(self, conn: _Conn) -> None:
        assert conn.sock is not None
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.try_next_address(conn, OSError(code, os.strerror(code)))
            return
        if not conn.tls:
            self.opened(conn)
            return
        self.begin_tls(conn)

    def begin_tls(self, conn: _Conn) -> None:
        assert conn.sock is not None
        self.unregister(conn)
        conn.sock = self.tls.get().wrap_socket(
            conn.sock, server_hostname=conn.host, do_handshake_on_connect=False
        )
        conn.state, conn.want = State.HANDSHAKING, WRITE
        self.selector.register(conn.sock, WRITE, conn)
        self.handshake(conn)

    def handshake(self, conn: _Conn) -> None:
        import ssl  # loaded by the wrap_socket before: a lookup, not an import

        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.interest(conn, READ)
        except ssl.SSLWantWriteError:
            self.interest(conn, WRITE)
        else:
            self.opened(conn)

    def opened(self, conn: _Conn) -> None:
        conn.state = State.OPEN
        self.interest(conn, READ | WRITE if conn.outbuf else READ)
        self.execute(self.session.connected(conn.id, alpn(conn.sock) if conn.tls else None))

    def read(self, conn: _Conn) -> None:
        """Read once; TLS may hold decrypted bytes the socket no longer signals, so drain."""
        view = self.view
        # The first read after a plain request holds a head, and a small body whole (most
        # files): ``recv`` makes its bytes at once, where ``recv_into`` and ``bytes`` would
        # copy them once more (on `small`, nearly all of the run's memcpy).
        first = conn.asked and not conn.tls
        if self.splicer is not None and not conn.tls:
            if conn.asked:  # a head comes first: there is no body to splice yet
                view = self.head_view
            elif self.splice(conn):
                return
        conn.asked = False
        sock = conn.sock
        assert sock is not None
        while True:
            try:
                if first:  # no larger than a rate limit's read_size, as the buffer
                    data = sock.recv(len(self.head_view))
                else:  # a fresh READ_SIZE object per read would cost more than the copy
                    data = bytes(view[: sock.recv_into(view)])
            except OSError as exc:
                if would_block(exc):
                    return
                raise
            if not data:
                self.drop(conn)
                self.execute(self.session.closed(conn.id))
                return
            self.execute(self.session.received(conn.id, data))
            if conn.held or not (conn.tls and conn.sock is not None and conn.sock.pending()):  # type: ignore[attr-defined]
                return

    def splice(self, conn: _Conn) -> bool:
        """Move a big enough Content-Length body's next bytes without reading them
        (``_splice``); False: read them instead.

        A pipe holds at most ``splicer.size`` bytes, so a fast body is many moves: the
        next one is tried at once, up to ``SPLICE_BURST`` of them, while the socket has
        bytes (EAGAIN ends it), rather than after another ``select`` each time (measured:
        a select per MiB cost ~5% of bulk's throughput).  The burst keeps the loop fair
        to the other connections."""
        for burst in range(SPLICE_BURST):
            moved = self.splice_once(conn)
            if moved is None:
                return burst > 0
            if not moved or self.conns.get(conn.id) is not conn or conn.held:
                return True
        return True

    def splice_once(self, conn: _Conn) -> bool | None:
        """One move into the pipe and the session: True when bytes were moved, False when
        there is nothing more to move now (none waiting, or the connection ended), None
        when these bytes are not to be spliced."""
        splicer = self.splicer
        assert splicer is not None
        budget = self.session.pipeable(conn.id)
        if not splicer.worth(budget):
            return None
        try:
            piped = splicer.fill(conn.sock, budget)  # type: ignore[arg-type]
        except BlockingIOError:
            return False
        if piped is None:
            return None
        if not piped.count:
            self.drop(conn)
            self.execute(self.session.closed(conn.id))
            return False
        self.execute(self.session.received(conn.id, piped))
        if not piped.emptied:  # the store did not take them (the download failed first)
            splicer.clear()
        return True

    def send_unsent(self) -> None:
        """Send the requests this turn made, together, just before the loop waits.

        Sent as each response was read, every request found the server idle and woke it
        (on `small`, nginx switched context once per file; curl's ~0.1): one burst per
        turn wakes it once, and its answers come back while the loop still works."""
        unsent, self.unsent = self.unsent, []
        for conn, data in unsent:
            if self.conns.get(conn.id) is not conn:  # closed since
                continue
            if conn.outbuf:  # an earlier request of this turn was not taken whole
                conn.outbuf += data
            else:
                self.send(conn, data)

    def send(self, conn: _Conn, data: bytes) -> None:
        """Send a request straight from its bytes (nearly always the socket takes them
        whole); buffer only what it does not take."""
        sent = self.try_send(conn, data)
        if sent is not None and sent < len(data):
            conn.outbuf += data[sent:]
            self.interest(conn, READ | WRITE)

    def flush(self, conn: _Conn) -> None:
        """Write what the socket takes now; wait for writability only while bytes remain."""
        while conn.outbuf:
            sent = self.try_send(conn, conn.outbuf)
            if sent is None:
                return
            if not sent:
                break
            del conn.outbuf[:sent]
        self.interest(conn, READ | WRITE if conn.outbuf else READ)

    def try_send(self, conn: _Conn, data: bytes | bytearray) -> int | None:
        """Bytes the socket took (0: none now); None: it failed, and so did ``conn``."""
        try:
            return conn.sock.send(data)  # type: ignore[union-attr]
        except OSError as exc:
            if would_block(exc):
                return 0
            self.fail(conn, exc)  # a Send may come from any event: report it from the top
            return None

    def interest(self, conn: _Conn, events: int) -> None:
        if conn.held:
            events &= ~READ
        if conn.want == events or conn.sock is None:
            return
        if not events:  # a selector takes no empty interest: held with nothing to send
            self.selector.unregister(conn.sock)
        elif not conn.want:
            self.selector.register(conn.sock, events, conn)
        else:
            self.selector.modify(conn.sock, events, conn)
        conn.want = events
