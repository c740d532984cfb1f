"""One HTTP/2 client connection, sans-IO, over the ``h2`` library: many GETs as streams.

The HTTP/1.1 ``ClientConnection`` carries one exchange at a time; this one carries a
stream per download, each with its own ``StreamSink``: the same ``on_head``,
``on_body``, ``on_end`` as HTTP/1.1 (the response head is given as a ``Head``, so
every decision on it is the HTTP/1.1 one), and ``on_broken`` when the stream alone
ends badly (RST_STREAM).  A fault of the whole connection (a frame h2 refuses, a
GOAWAY) is a ``FramingError`` or ``Goaway`` raised from ``receive``: the caller ends
every stream on it.

Flow control: h2's default windows (64 KiB) let a server send one window per round
trip and then wait (curl#1102, httpx#262), so the connection and each stream ask for
``WINDOW`` bytes at the start, and every DATA frame is acknowledged as it is handed
on: h2 sends the WINDOW_UPDATE once half a window is consumed.

CPU per stream (measured over TLS from nginx, 8 KiB files): h2 and hpack, not the
bytes, cost the most, so three of their general-purpose costs are cut here:

- header validation and normalisation, both ways: the request fields are midair's own
  (lower-cased, framing fields left out, ``-H`` checked as an InputError first), and
  what decides a response's framing and size is checked by ``head_of`` as llhttp would;
- h2 counts its open streams by walking every stream it holds on each new request;
  here they are the open sinks, and a stream that ended is forgotten at once
  (``_forget``), as that walk would have done;
- a server that sends its fields as Huffman literals without indexing (nginx does, for
  ``date``, ``etag``, ``last-modified``...) has hpack decode the same strings on every
  response: the pure decoding function is memoised (``_memoise_huffman``);
- ``:path``, different on every request, goes as a literal never indexed: it would only
  evict the fields that repeat (Host, User-Agent...) from hpack's table, at a cost.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hpack.hpack

from .http import FramingError, Head

WINDOW = 16 * 1024 * 1024  # per stream and for the connection: never the limit on loopback
MAX_STREAMS = 100  # open streams at most, whatever a server allows (RFC 9113 suggests 100)
_CANCEL = 0x8  # RST_STREAM's CANCEL: the client wants no more of this stream
_SETTINGS_FRAME = 0x4
_REFUSED = 0x7  # REFUSED_STREAM: the server did not process the stream at all
# Request fields HTTP/2 forbids or spells otherwise (RFC 9113 section 8.2.2).
_CONNECTION_FIELDS = frozenset({"host", "connection", "keep-alive", "upgrade", "te"})


class Goaway(Exception):
    """The server ends the connection: streams above ``last_stream`` were never
    processed, so they may go to a new connection as if never sent."""

    def __init__(self, last_stream: int, error_code: int) -> None:
        super().__init__(f"the server ended the HTTP/2 connection (GOAWAY, code {error_code})")
        self.last_stream = last_stream


class StreamSink(Protocol):
    """Where one stream's response goes: one head, body chunks, one end or ``on_broken``."""

    def on_head(self, head: Head) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_broken(self, reason: str, refused: bool) -> None:
        """The server reset the stream; ``refused``: before processing it (REFUSED_STREAM),
        so it may be sent again as if never sent."""


class Http2Connection:
    """Request streams out, each stream's events to its sink; see the module docstring.

    A sink may call ``reset`` on its own stream from any callback: nothing more is
    delivered to it.  Every method returns the bytes to send (possibly empty).
    """

    def __init__(self) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config)
        # Our streams (odd ids) are the open sinks; the server opens none (no push).
        self._h2._open_streams = self._open_streams  # type: ignore[method-assign]
        self._sinks: dict[int, StreamSink] = {}
        self._first: bytes | None = (
            b""  # the server's first bytes, until they show a SETTINGS frame
        )
        self._handlers: dict[type, Any] = {
            h2.events.ResponseReceived: self._head,
            h2.events.DataReceived: self._data,
            h2.events.StreamEnded: self._ended,
            h2.events.StreamReset: self._reset_by_peer,
            h2.events.ConnectionTerminated: self._goaway,
        }

    def start(self) -> bytes:
        """The connection preface, with windows that do not throttle and no server push."""
        settings = h2.settings.SettingCodes
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={settings.INITIAL_WINDOW_SIZE: WINDOW, settings.ENABLE_PUSH: 0},
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(WINDOW - self._h2.inbound_flow_control_window)
        return self._h2.data_to_send()

    @property
    def room(self) -> int:
        """How many more streams may be opened now (the server's limit, and ours)."""
        allowed = min(self._h2.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return max(0, allowed - len(self._sinks))

    @property
    def streams(self) -> int:
        return len(self._sinks)

    def request(
        self, sink: StreamSink, scheme: str, target: str, headers: Iterable[tuple[str, str]]
    ) -> tuple[int, bytes]:
        """Open a stream for ``GET target``: its id and the bytes to send.  ``headers``
        are HTTP/1.1's (Host first); Host becomes ``:authority``."""
        fields = [(name.lower(), value) for name, value in headers]
        authority = next((value for name, value in fields if name == "host"), "")
        sent: list[tuple[Any, ...]] = [(":method", "GET"), (":scheme", scheme)]
        sent += [(":authority", authority), hpack.NeverIndexedHeaderTuple(":path", target)]
        sent += [field for field in fields if field[0] not in _CONNECTION_FIELDS]
        stream = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream, sent, end_stream=True)
        # The core checks a body against its Content-Length (``body_limit``, ``short_body``)
        # for one download; h2 would end the whole connection, every stream on it, instead.
        self._h2._get_stream_by_id(stream)._initialize_content_length = _unchecked  # type: ignore[method-assign]
        self._sinks[stream] = sink
        return stream, self._h2.data_to_send()

    def reset(self, stream: int) -> bytes:
        """Cancel ``stream`` (if it is still open): nothing more goes to its sink."""
        if self._sinks.pop(stream, None) is not None:
            with contextlib.suppress(h2.exceptions.StreamClosedError):  # it ended there first
                self._h2.reset_stream(stream, _CANCEL)
            self._forget(stream)
        return self._h2.data_to_send()

    def _open_streams(self, remainder: int) -> int:
        """H2Connection._open_streams without its walk over every stream it holds."""
        return len(self._sinks) if remainder == 1 else 0

    def _forget(self, stream_id: int) -> None:
        """Drop a closed stream from h2's table, keeping what h2 keeps of a closed stream
        (who closed it: late frames on it are then answered as h2 would)."""
        stream = self._h2.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self._h2.streams[stream_id]
            self._h2._closed_streams[stream_id] = stream.closed_by

    def receive(self, data: bytes) -> bytes:
        """Feed bytes read; ``b""`` (the peer closed) is a ``FramingError`` while streams
        are open.  Returns the bytes h2 must send in answer (acks, WINDOW_UPDATEs)."""
        if not data:
            raise FramingError("connection closed with HTTP/2 streams open")
        if self._first is not None:
            self._check_preface(self._first + data[:4])
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise FramingError(f"HTTP/2 protocol error: {exc}") from None
        for event in events:
            handler = self._handlers.get(type(event))
            if handler is not None:
                handler(event)
        return self._h2.data_to_send()

    def _check_preface(self, first: bytes) -> None:
        """The server's preface is a SETTINGS frame (RFC 9113 section 3.4).  h2 would read
        an HTTP/1.1 answer as the length of a huge frame and wait for it for ever."""
        self._first = first
        if len(first) >= 4:
            if first[3] != _SETTINGS_FRAME:
                raise FramingError(f"the server does not speak HTTP/2 (it sent {first!r}...)")
            self._first = None

    # --- the events of h2 that matter to a download ------------------------------------
    def _head(self, event: h2.events.ResponseReceived) -> None:
        sink = self._sinks.get(event.stream_id)
        if sink is None:
            return
        try:
            head = head_of(event.headers)
        except FramingError as exc:  # this stream's fault alone
            self.reset(event.stream_id)
            sink.on_broken(str(exc), False)
            return
        sink.on_head(head)

    def _data(self, event: h2.events.DataReceived) -> None:
        # Acknowledged even for a stream we reset: the connection's window counts it.
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sink = self._sinks.get(event.stream_id)
        if sink is not None and event.data:
            sink.on_body(event.data)

    def _ended(self, event: h2.events.StreamEnded) -> None:
        sink = self._sinks.pop(event.stream_id, None)
        self._forget(event.stream_id)
        if sink is not None:
            sink.on_end()

    def _reset_by_peer(self, event: h2.events.StreamReset) -> None:
        sink = self._sinks.pop(event.stream_id, None)
        self._forget(event.stream_id)
        if sink is not None:
            reason = f"stream reset by the server (RST_STREAM, code {event.error_code})"
            sink.on_broken(reason, event.error_code == _REFUSED)

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        raise Goaway(event.last_stream_id or 0, event.error_code or 0)


def _memoise_huffman() -> None:
    """hpack's Huffman decoder, remembering the last strings it decoded: a pure function of
    its bytes, so the cache is right for every user of hpack in the process.  (hpack
    passes slices of a memoryview; bytes of them are the key.)"""
    decode = hpack.hpack.decode_huffman  # type: ignore[attr-defined]
    if getattr(decode, "memoised", False):
        return
    cached = functools.lru_cache(maxsize=512)(decode)

    def decode_huffman(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
        return cached(bytes(huffman_string or b""))

    decode_huffman.memoised = True  # type: ignore[attr-defined]
    hpack.hpack.decode_huffman = decode_huffman  # type: ignore[attr-defined]


_memoise_huffman()


def _unchecked(headers: object) -> None:
    """H2Stream._initialize_content_length, for streams whose length the core checks."""


def head_of(headers: Iterable[tuple[bytes, bytes]]) -> Head:
    """An HTTP/2 response's fields as the ``Head`` an HTTP/1.1 one gives: the same
    lookups, and the checks llhttp would make on what decides framing and size."""
    status = b""
    lines = []
    for name, value in headers:
        if name == b":status":
            status = value
        elif not name.startswith(b":"):
            lines.append(name + b": " + value + b"\r\n")
    if not (len(status) == 3 and status.isdigit()):
        raise FramingError(f"malformed response: HTTP/2 status {status!r}")
    raw = b"HTTP/2 " + status + b"\r\n" + b"".join(lines) + b"\r\n"
    head = Head(int(status), raw) if _valid_length(raw) else None
    if head is None or raw.count(b"\n") != len(lines) + 2:
        raise FramingError("malformed response: bad Content-Length or a field with a line break")
    return head


def _valid_length(raw: bytes) -> bool:
    """At most one Content-Length field, a whole number: ``Head`` reads it as one."""
    lengths = [line for line in raw.lower().split(b"\n") if line.startswith(b"content-length:")]
    return not lengths or (len(lengths) == 1 and lengths[0][15:].strip().isdigit())
