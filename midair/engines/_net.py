"""What engines share at the I/O boundary: event loops, TLS set-up, error classification."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

from ..core.actions import ConnectionFailure
from ..core.jobs import Options

LOOPS = ("asyncio", "uvloop")


def check_loop(loop: str) -> str:
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    return loop


def run_on_loop(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a fresh asyncio loop, or on uvloop (the extra) when asked."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def tls_context(options: Options, context_class: type[ssl.SSLContext] = ssl.SSLContext
                ) -> ssl.SSLContext:
    """Verification on (system trust store) unless --insecure; --ca-certificate adds a CA.

    ``context_class`` lets the green engine get gevent's cooperative context
    with exactly the same settings.
    """
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    context.load_default_certs()
    if options.ca_certificate:
        context.load_verify_locations(cafile=options.ca_certificate)
    if options.insecure:  # the CLI warns the user; a library caller asked for it
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def classify(exc: BaseException) -> ConnectionFailure:
    """Turn whatever the socket layer raised into the core's one failure record."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionFailure(f"TLS certificate rejected: {exc.verify_message}",
                                 retryable=False, tls=True)
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailure(f"TLS error: {exc.reason or exc}", tls=True)
    if isinstance(exc, socket.gaierror):
        transient = exc.errno == socket.EAI_AGAIN
        return ConnectionFailure(f"cannot resolve host: {exc.strerror}", retryable=transient)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailure("connection refused")
    if isinstance(exc, ConnectionResetError):
        return ConnectionFailure("connection reset by peer")
    if isinstance(exc, TimeoutError):
        return ConnectionFailure("connection timed out")
    if isinstance(exc, OSError):
        return ConnectionFailure(exc.strerror or str(exc) or type(exc).__name__)
    return ConnectionFailure(f"{type(exc).__name__}: {exc}")
