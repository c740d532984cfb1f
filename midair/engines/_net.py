"""What engines share at the socket boundary: TLS set-up and error classification."""

from __future__ import annotations

import socket
import ssl

from ..core.actions import ConnectionFailure
from ..core.jobs import Options


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
