"""One HTTP/1.1 client connection, sans-IO, over h11.

h11 does the framing (Content-Length, chunked, close-delimited, keep-alive
rules); this wrapper narrows its events to the three a download cares about
and turns every framing failure into one ``FramingError``.

Fast path: a 200/206 with a plain Content-Length is by far the common case,
and once h11 has parsed and validated its head, the body needs only counting.
Passing body bytes through untouched (no buffer, no slicing, no event object
per chunk) saves two copies of every byte; the next exchange on the same
connection starts a fresh h11 state.  The slow path handles everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 256


class FramingError(Exception):
    """The response cannot be parsed or broke a limit.  Message says which."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # names lower-cased by h11

    def get(self, name: bytes) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return b", ".join(values).decode("latin-1") if values else None

    def count(self, name: bytes) -> int:
        return sum(1 for k, _ in self.headers if k == name)


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    pass


Event = Head | Body | End


class ClientConnection:
    """Request bytes out, response events in; reusable after a clean exchange."""

    def __init__(self) -> None:
        self._h11 = _new_h11()
        self._remaining: int | None = None  # fast path: body bytes still to come
        self._fast: bool = False  # this exchange's body went through the fast path
        self._fast_reusable = False
        self._eof = False  # the peer closed: whatever the framing said, no reuse

    def request(self, target: str, headers: list[tuple[str, str]]) -> bytes:
        # Values as UTF-8 bytes: curl sends what the user typed; h11 would refuse non-ASCII.
        request = h11.Request(method="GET", target=target,
                              headers=[(name, value.encode()) for name, value in headers])
        return self._h11.send(request) + self._h11.send(h11.EndOfMessage())  # type: ignore[operator]

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (``b""`` means the peer closed) and return complete events."""
        self._eof = self._eof or not data
        if self._remaining is not None:
            return self._counted_body(data)
        if self._fast:  # the exchange is over: unsolicited bytes or EOF, either way not reusable
            self._fast_reusable = False
            return []
        self._h11.receive_data(data)
        events: list[Event] = []
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return events
                if isinstance(event, h11.Data):
                    events.append(Body(bytes(event.data)))
                elif isinstance(event, h11.Response):
                    head = _head(event)
                    events.append(head)
                    if _plain_length(head) is not None:
                        return events + self._start_counting(head, event)
                elif isinstance(event, h11.EndOfMessage):
                    events.append(End())
                    return events
                elif isinstance(event, h11.ConnectionClosed):
                    raise FramingError("connection closed before a response")
        except h11.RemoteProtocolError as exc:
            raise FramingError(_describe(exc)) from None

    def _start_counting(self, head: Head, response: h11.Response) -> list[Event]:
        length = _plain_length(head)
        assert length is not None
        leftover, closed = self._h11.trailing_data
        self._remaining, self._fast = length, True
        self._fast_reusable = response.http_version == b"1.1" and not any(
            v.lower() == "close" for v in (head.get(b"connection") or "").split(","))
        events = self._counted_body(leftover) if leftover or not length else []
        if closed and self._remaining is not None:
            events += self._counted_body(b"")
        return events

    def _counted_body(self, data: bytes) -> list[Event]:
        remaining = self._remaining
        assert remaining is not None
        if not data and remaining:
            raise FramingError("connection closed before the end of the body (short body)")
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            return [Body(data)]
        self._remaining = None
        if len(data) > remaining:  # bytes after the body: the server broke framing
            self._fast_reusable = False
        return [Body(data[:remaining]), End()] if remaining else [End()]

    @property
    def reusable(self) -> bool:
        """True once both sides finished an exchange that keeps the connection open."""
        if self._eof:  # e.g. a close-delimited body without "Connection: close"
            return False
        if self._fast:
            return self._remaining is None and self._fast_reusable
        return (self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
                and not self._h11.trailing_data[0])  # bytes past the body: framing broken

    def next_cycle(self) -> None:
        if self._fast:
            self._h11, self._fast = _new_h11(), False
        else:
            self._h11.start_next_cycle()


def _new_h11() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)


def _plain_length(head: Head) -> int | None:
    """The body length when the fast path applies: a 200/206 framed by Content-Length alone."""
    if head.status not in (200, 206) or b"transfer-encoding" in (k for k, _ in head.headers):
        return None
    value = head.get(b"content-length")
    # h11 has already rejected malformed or conflicting values.
    return int(value.split(",")[0]) if value is not None else None


def _head(event: h11.Response) -> Head:
    headers = tuple((bytes(k), bytes(v)) for k, v in event.headers)
    if len(headers) > MAX_HEADER_FIELDS:
        raise FramingError(f"response head has {len(headers)} fields (limit {MAX_HEADER_FIELDS})")
    # h11 bounds a head only while it is incomplete: one that arrives whole in a single
    # read is parsed at any size.  Measure it (status line, "name: value\r\n" each).
    size = 15 + len(event.reason) + sum(len(k) + len(v) + 4 for k, v in headers)
    if size > MAX_HEAD_BYTES:
        raise FramingError(f"response head larger than {MAX_HEAD_BYTES // 1024} KiB")
    return Head(event.status_code, headers)


def _describe(exc: h11.RemoteProtocolError) -> str:
    text = str(exc)
    if "without sending complete message body" in text:
        return "connection closed before the end of the body (short body)"
    if "ConnectionClosed" in text or "unexpectedly closed" in text:
        # h11 raises these instead of returning ConnectionClosed mid-response.
        return "connection closed before a response"
    if "exceeded" in text or "too long" in text:
        return f"response head larger than {MAX_HEAD_BYTES // 1024} KiB"
    return f"malformed response: {text}"
