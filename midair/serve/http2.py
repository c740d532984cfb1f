"""HTTP/2 for ``midair serve`` (h2c, by prior knowledge): the same plans, one stream each.

Every request is planned by ``plan_response`` as over HTTP/1.1 and sent by the
same ``BodySender`` — latency, pacing, the whole fault catalogue — through a
``_Stream`` that stands in for its transport, so the two protocols cannot drift
apart.  What ends an HTTP/1.1 response early maps onto its stream:

- a normal end, and ``truncate=K`` / ``length=N`` (a close, in HTTP/1.1):
  END_STREAM where the bytes stop, short of or past the declared length, which
  a client must refuse (RFC 9113 8.1.1);
- ``reset_after=K``: RST_STREAM of that stream only (HTTP/1.1 resets the
  connection); ``stall_after=K``: nothing more on that stream, the others go on
  (after ``STALL_LIMIT``, END_STREAM short of its length);
- ``goaway_after=K`` (a close, in HTTP/1.1): GOAWAY whose last stream is the
  one before this, so this stream and later ones are unprocessed (safe to
  retry), then FIN; every stream on the connection ends with it.

HTTP/1.1 framing has no meaning here: ``chunked=1`` is a body without a
length, and ``Connection`` and ``Transfer-Encoding`` are not sent.  Flow
control holds a stream's bytes until the client's window opens, pausing its
sender meanwhile, as a full socket buffer pauses an HTTP/1.1 one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableSet
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from midair.serve.request import Request
from midair.serve.responder import Plan, Settings, plan_response
from midair.serve.sender import BodySender
from midair.serve.stats import StatsBook

__all__ = ["H2ServeProtocol"]

# Connection-specific fields, which HTTP/2 forbids (RFC 9113 8.2.2).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})
_INTERNAL_ERROR = 2
_DROP_LIMIT = 10.0  # seconds a dropped connection waits for the client to close its side


class H2ServeProtocol(asyncio.Protocol):
    """The server side of one h2c connection; ``registry`` tracks the live ones."""

    def __init__(self, settings: Settings, stats: StatsBook, registry: MutableSet[Any]) -> None:
        self._settings, self._stats, self._registry = settings, stats, registry
        self._loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self._host = ""
        self._streams: dict[int, _Stream] = {}
        self._write_paused = False
        self._dropping = False  # GOAWAY sent: nothing more out, what comes in is discarded

    # --- the connection --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._host = str(transport.get_extra_info("sockname")[0])
        self._stats.opened(self._host)
        self._registry.add(self)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in list(self._streams.values()):
            self.forget(stream)
        self._stats.closed(self._host)
        self._registry.discard(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:  # the client broke HTTP/2: GOAWAY, then close
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [])
        elif isinstance(event, h2.events.WindowUpdated):  # stream 0: the connection's
            for stream in list(self._streams.values()):
                if event.stream_id in (0, stream.id):
                    stream.send_pending()
        elif isinstance(event, h2.events.StreamReset):  # the client gave up on it
            reset = self._streams.get(event.stream_id)
            if reset is not None:
                self.forget(reset)
        elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing() and not self._dropping:
            transport.write(data)

    def drop(self) -> None:
        """After a GOAWAY: every stream ends, FIN, and the client's late bytes are read
        until it closes too, for closing with them unread would send RST, which can
        destroy the GOAWAY in the client's kernel (TLS cannot half-close: a plain close)."""
        self.flush()
        self._dropping = True
        for stream in list(self._streams.values()):
            self.forget(stream)
        transport = self.transport
        if transport is None or not transport.can_write_eof():
            if transport is not None:
                transport.close()
            return
        transport.write_eof()
        self._loop.call_later(_DROP_LIMIT, transport.close)

    def pause_writing(self) -> None:
        self._write_paused = True
        for stream in self._streams.values():
            stream.sender.pause()

    def resume_writing(self) -> None:
        """On the next loop turn, as ``ServeProtocol.resume_writing`` explains."""
        self._write_paused = False
        self._loop.call_soon(self._resume_senders)

    def _resume_senders(self) -> None:
        for stream in list(self._streams.values()):
            self.resume_sender(stream)

    def resume_sender(self, stream: _Stream) -> None:
        """Unless the socket or the stream's window still holds it back."""
        if not self._write_paused and not stream.blocked:
            stream.sender.resume()

    # --- requests --------------------------------------------------------------------
    def _request(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        request = _as_request(raw)
        plan = plan_response(self._settings, request)
        self._stats.request(self._host, request, plan.status)
        plan.chunked = False  # DATA frames carry any body: no chunk framing in HTTP/2
        stream = self._streams[stream_id] = _Stream(self, stream_id, plan)
        if self._write_paused:
            stream.sender.pause()
        stream.sender.start()

    def done(self, sender: BodySender) -> None:
        """A response ended normally: END_STREAM."""
        stream = cast(_StreamSender, sender).stream
        stream.end()

    def forget(self, stream: _Stream) -> None:
        stream.closed = True
        if self._streams.pop(stream.id, None) is stream:
            stream.sender.cancel()
            self._stats.sent(self._host, stream.sender.sent)


class _Stream:
    """One response's stream, as the transport its ``BodySender`` writes to."""

    def __init__(self, owner: H2ServeProtocol, stream_id: int, plan: Plan) -> None:
        self.owner, self.id = owner, stream_id
        self.pending = bytearray()  # body bytes the client's window holds back
        self.ending = False  # END_STREAM once ``pending`` is out
        self.blocked = False  # the client's window is shut: the sender waits for it
        self.closed = False
        self.sender = _StreamSender(owner._loop, self, plan, owner.done)

    def send_head(self, plan: Plan) -> None:
        fields = [(b":status", str(plan.status).encode())]
        fields += [
            (name.lower().encode(), value.encode())
            for name, value in plan.headers
            if name.lower() not in _HOP_BY_HOP
        ]
        self._act(self.owner.h2.send_headers, self.id, fields)

    # What a BodySender calls on its transport.
    def write(self, data: bytes | memoryview) -> None:
        self.pending += data
        self.send_pending()

    def is_closing(self) -> bool:
        transport = self.owner.transport
        return self.closed or transport is None or transport.is_closing()

    def close(self) -> None:
        """``truncate``, a wrong ``length`` (or a stall given up on): END_STREAM now."""
        self.end()

    def abort(self) -> None:
        """``reset_after``: RST_STREAM, this stream only."""
        self._act(self.owner.h2.reset_stream, self.id, _INTERNAL_ERROR)
        self._close()

    def goaway(self) -> None:
        """``goaway_after``: this stream and later ones unprocessed, then close the link."""
        owner = self.owner
        last = max(0, self.id - 2)  # client streams are odd: the one opened before this
        self._act(owner.h2.close_connection, 0, None, last)
        owner.drop()

    def get_write_buffer_size(self) -> int:
        return len(self.pending)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket of its own: a reset is RST_STREAM, not SO_LINGER

    # Flow control and the end.
    def send_pending(self) -> None:
        h2c = self.owner.h2
        while self.pending and not self.closed:
            room = min(h2c.local_flow_control_window(self.id), h2c.max_outbound_frame_size)
            if room <= 0:
                if not self.blocked:  # until the client's WINDOW_UPDATE
                    self.blocked = True
                    self.sender.pause()
                return
            piece, self.pending[:room] = bytes(self.pending[:room]), b""
            self._act(h2c.send_data, self.id, piece)
        if self.closed:
            return
        if self.ending:
            self._act(h2c.end_stream, self.id)
            self._close()
        elif self.blocked:  # a window update, never the sender's own write: no re-entry
            self.blocked = False
            self.owner.resume_sender(self)

    def end(self) -> None:
        self.ending = True
        self.send_pending()

    def _act(self, call: Callable[..., object], *args: object) -> None:
        """One h2 call on this stream and its bytes out; a stream h2 refuses is dropped."""
        if self.closed:
            return
        try:
            call(*args)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._close()
            return
        self.owner.flush()

    def _close(self) -> None:
        self.owner.forget(self)


class _StreamSender(BodySender):
    """A ``BodySender`` whose head is a HEADERS frame."""

    stream: _Stream

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stream: _Stream, plan: Plan, done: Any
    ) -> None:
        super().__init__(loop, stream, plan, done)  # type: ignore[arg-type]
        self.stream = stream

    def _write_head(self) -> None:
        self.stream.send_head(self.plan)

    def _drop_connection(self) -> None:
        self.stream.goaway()


def _as_request(raw: list[tuple[bytes, bytes]]) -> Request:
    """The request as the planner reads it: pseudo-fields as a request line, Host."""
    fields = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
    pseudo = {k: v for k, v in fields if k.startswith(":")}
    headers = tuple((k, v) for k, v in fields if not k.startswith(":"))
    if ":authority" in pseudo:
        headers += (("host", pseudo[":authority"]),)
    return Request(pseudo.get(":method", "GET"), pseudo.get(":path", "/"), "HTTP/2", headers)
