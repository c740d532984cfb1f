"""One accepted connection: read request heads, answer them one at a time.

An ``asyncio.Protocol`` rather than streams, because a benchmark holds thousands
of these open at once and a protocol object with a bytearray is the cheapest
thing asyncio offers. Requests are answered in order (pipelining works: later
heads wait in the buffer); the response itself is a ``BodySender``.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableSet
from typing import cast

from midair.serve.request import BadRequest, parse_head
from midair.serve.responder import Plan, Settings, plan_response, refusal
from midair.serve.sender import BodySender
from midair.serve.stats import StatsBook

__all__ = ["ServeProtocol"]


class ServeProtocol(asyncio.Protocol):
    """HTTP/1.1 server side of one connection; ``registry`` tracks the live ones."""

    def __init__(
        self, settings: Settings, stats: StatsBook, registry: MutableSet[ServeProtocol]
    ) -> None:
        self._settings, self._stats, self._registry = settings, stats, registry
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._host = ""
        self._buffer = bytearray()
        self._skip = 0  # request body bytes still to discard
        self._sender: BodySender | None = None
        self._write_paused = False
        self._closing = False  # no more requests will be answered
        self._eof = False
        self._tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._host = str(transport.get_extra_info("sockname")[0])
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._stats.opened(self._host)
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._stats.sent(self._host, self._sender.sent)
            self._sender = None
        self._closing = True
        self._stats.closed(self._host)
        self._registry.discard(self)

    def abort(self) -> None:
        """Drop the connection now (server shutdown)."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        self._serve_next()

    def eof_received(self) -> bool:
        """The client stopped sending: finish what it asked for, then close.

        TLS cannot stay half-open (asyncio closes it after close_notify anyway).
        """
        self._eof = True
        if self._sender is None:
            self._serve_next()
        elif self._sender.stalled and self._transport is not None:
            self._transport.close()  # the client gave up on the stalled response
        return not self._tls  # keep a plain TCP transport; we close it ourselves

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._sender is not None:
            self._sender.pause()

    def resume_writing(self) -> None:
        """Resume on the next loop turn, not inside the transport's write callback.

        CPython 3.11's ``_write_ready`` calls ``connection_lost`` itself when the
        transport is closing once its buffer empties, so a response that ends and
        closes (or aborts) from inside ``resume_writing`` would be lost twice.
        """
        self._write_paused = False
        self._loop.call_soon(self._resume_sender)

    def _resume_sender(self) -> None:
        if self._sender is not None and not self._write_paused:
            self._sender.resume()

    def _discard_body(self) -> bool:
        """Drop request body bytes; True once none are left to drop."""
        drop = min(self._skip, len(self._buffer))
        del self._buffer[:drop]
        self._skip -= drop
        return self._skip == 0

    def _serve_next(self) -> None:
        """Answer the next complete request in the buffer, if idle and there is one."""
        transport = self._transport
        if self._sender is not None or self._closing or transport is None:
            return
        if not self._discard_body():
            return
        try:
            parsed = parse_head(self._buffer)
            if parsed is not None:
                self._skip = parsed[0].body_length
        except BadRequest as exc:
            self._closing = True
            self._start(refusal(exc.status, str(exc)))
            return
        if parsed is None:
            if self._eof:
                transport.close()
            return
        request, used = parsed
        del self._buffer[:used]
        plan = plan_response(self._settings, request)
        self._stats.request(self._host, request, plan.status)
        self._start(plan)

    def _start(self, plan: Plan) -> None:
        assert self._transport is not None
        self._sender = BodySender(self._loop, self._transport, plan, self._response_done)
        if self._write_paused:
            self._sender.pause()
        self._sender.start()

    def _response_done(self, sender: BodySender) -> None:
        """A response ended normally: close, or look for the next request."""
        self._stats.sent(self._host, sender.sent)
        self._sender = None
        if not sender.plan.keep_alive or self._closing:
            self._closing = True
            assert self._transport is not None
            self._transport.close()
        else:
            self._loop.call_soon(self._serve_next)  # not recursively: pipelines can be long
