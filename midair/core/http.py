"""One HTTP/1.1 client connection, sans-IO, over h11.

h11 does the framing (Content-Length, chunked, close-delimited, keep-alive
rules); this wrapper narrows its events to the three a download cares about
and turns every framing failure into one ``ProtocolError``-shaped exception.
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
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)

    def request(self, target: str, headers: list[tuple[str, str]]) -> bytes:
        request = h11.Request(method="GET", target=target, headers=headers)
        return self._h11.send(request) + self._h11.send(h11.EndOfMessage())  # type: ignore[operator]

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes (``b""`` means the peer closed) and return complete events."""
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
                    events.append(_head(event))
                elif isinstance(event, h11.EndOfMessage):
                    events.append(End())
                    return events
                elif isinstance(event, h11.ConnectionClosed):
                    raise FramingError("connection closed before a response")
        except h11.RemoteProtocolError as exc:
            raise FramingError(_describe(exc)) from None

    @property
    def reusable(self) -> bool:
        """True once both sides finished an exchange that keeps the connection open."""
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def next_cycle(self) -> None:
        self._h11.start_next_cycle()


def _head(event: h11.Response) -> Head:
    headers = tuple((bytes(k), bytes(v)) for k, v in event.headers)
    if len(headers) > MAX_HEADER_FIELDS:
        raise FramingError(f"response head has {len(headers)} fields (limit {MAX_HEADER_FIELDS})")
    return Head(event.status_code, headers)


def _describe(exc: h11.RemoteProtocolError) -> str:
    text = str(exc)
    if "without sending complete message body" in text:
        return "connection closed before the end of the body (short body)"
    if "exceeded" in text or "too long" in text:
        return f"response head larger than {MAX_HEAD_BYTES // 1024} KiB"
    return f"malformed response: {text}"
