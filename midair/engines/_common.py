"""What engines share at the I/O boundary: waking, timers, TLS set-up, error classification.

No asyncio here (``_aio`` has the event-loop parts): importing a blocking or
``epoll`` engine must stay quick.  Nor ``ssl`` until the first TLS connection
(~5 ms of start-up an http batch never needs): until then no TLS socket exists,
so no exception can be a TLS one, and ``would_block``/``classify`` look for
``ssl`` only where it is already loaded.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator

from ..core.actions import ConnectionFailure
from ..core.jobs import Options
from ..session import Session

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import ssl
    from typing import Any


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block: for reading a whole list ahead (a plan
    over every job).  What it makes all lives on, so each collection it sets off finds
    nothing, and the full ones walk every job made so far again (on 20,000 jobs, ~5 ms
    of the ~40 before the processes engine's first fork)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Waker:
    """An event on a self-pipe: ``set()`` is safe from any thread and from a signal handler.

    Same ``set``/``clear``/``wait`` as ``threading.Event``, whose ``set`` takes a
    lock the interrupted main thread may hold; a selector may also watch ``fileno()``.
    A stop request sets it, so whatever the engine waits in returns at once.
    """

    def __init__(self, poll: Callable[[], Any] = select.poll) -> None:
        # poll(2), not select(2): at thousands of connections descriptors pass FD_SETSIZE
        # (1024), which select refuses.  gevent's ``poll`` for the green engine: waiting
        # must not block the hub.
        self._poll = poll
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.closed = False

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        if self.closed:  # its descriptor numbers may belong to another file by now
            return
        with contextlib.suppress(OSError):  # full: set already
            os.write(self._write, b"!")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._read, 4096):
                pass

    def wait(self, timeout: float | None = None) -> None:
        self._wait_for((self._read,), timeout)

    def wait_with(self, fd: int) -> bool:
        """Wait until it is set or ``fd`` is readable; True if ``fd`` is."""
        return fd in self._wait_for((self._read, fd), None)

    def _wait_for(self, fds: tuple[int, ...], timeout: float | None) -> list[int]:
        """The descriptors of ``fds`` that became readable (or hung up) within ``timeout``."""
        poller = self._poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000)
        return [fd for fd, _ in events]

    def close(self) -> None:
        self.closed = True
        os.close(self._read)
        os.close(self._write)


class Alarm:
    """One loop timer for the session's deadline, re-armed only when the deadline moves.

    Works with any loop that has ``call_later`` (asyncio, uvloop); aioquic arms
    its timer the same way, so a busy connection does not churn timer handles.
    """

    def __init__(self, loop: Any, session: Session, fire: Callable[[], None]) -> None:
        self.loop, self.session, self.fire = loop, session, fire
        self.handle: Any = None
        self.armed: float | None = None  # the deadline ``handle`` is set for

    def update(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self.armed and (deadline is None or self.handle is not None):
            return
        self.cancel()
        self.armed = deadline
        if deadline is not None:
            self.handle = self.loop.call_later(self.session.timeout(), self._ring)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.armed = None

    def _ring(self) -> None:
        self.handle = self.armed = None
        try:
            self.fire()
        except Exception as exc:  # the loop would only log it, and the run would hang
            self.session.run.fail(exc)


class LazyTls:
    """The run's TLS context, made on first use: an http batch may redirect to https.

    ``context_class`` lets the green engine get gevent's cooperative context
    with exactly the same settings.
    """

    def __init__(self, options: Options, context_class: type[ssl.SSLContext] | None = None) -> None:
        self.options, self.context_class = options, context_class
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # threads may ask at once; making it does no I/O

    def get(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = tls_context(self.options, self.context_class)
            return self._context


def tls_context(
    options: Options, context_class: type[ssl.SSLContext] | None = None
) -> ssl.SSLContext:
    """Verification on (system trust store) unless --insecure; --ca-certificate adds a CA.

    ``context_class`` defaults to the stdlib's ``ssl.SSLContext``."""
    import ssl

    context = (context_class or ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer
    context.load_default_certs()
    if options.ca_certificate:
        context.load_verify_locations(cafile=options.ca_certificate)
    if options.insecure:  # the CLI warns the user; a library caller asked for it
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"] if options.http2 else ["http/1.1"])
    return context


def alpn(tls: Any) -> str | None:
    """The protocol TLS negotiated ("h2", "http/1.1"), from an ``ssl.SSLSocket`` or
    ``SSLObject``; None for a plain socket or none (asyncio's ``get_extra_info``)."""
    select = getattr(tls, "selected_alpn_protocol", None)
    return select() if select is not None else None


def _loaded_ssl() -> Any:
    """The ``ssl`` module if something imported it, else None: then no TLS socket exists."""
    return sys.modules.get("ssl")


def would_block(exc: OSError) -> bool:
    """A non-blocking socket, plain or TLS, can give or take nothing more right now."""
    if isinstance(exc, BlockingIOError):
        return True
    ssl = _loaded_ssl()
    return ssl is not None and isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError))


def classify(exc: BaseException) -> ConnectionFailure:
    """Turn whatever the socket layer raised into the core's one failure record."""
    ssl = _loaded_ssl()
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionFailure(
            f"TLS certificate rejected: {exc.verify_message}", retryable=False, tls=True
        )
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return ConnectionFailure(f"TLS error: {exc.reason or exc}", tls=True)
    if isinstance(exc, socket.gaierror):
        transient = exc.errno == socket.EAI_AGAIN  # the DNS server did not answer (in time)
        return ConnectionFailure(exc.strerror or str(exc), retryable=transient, unresolved=True)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailure("connection refused")
    if isinstance(exc, ConnectionResetError):
        return ConnectionFailure("connection reset by peer")
    if isinstance(exc, TimeoutError):
        return ConnectionFailure("connection timed out")
    if isinstance(exc, OSError):
        return ConnectionFailure(exc.strerror or str(exc) or type(exc).__name__)
    return ConnectionFailure(f"{type(exc).__name__}: {exc}")
