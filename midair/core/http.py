"""One HTTP/1.1 client connection, sans-IO, over llhttp (the httptools binding).

``request`` gives the bytes of a GET; ``receive`` takes the bytes that come back and
tells a ``ResponseSink`` what they mean: ``on_head``, ``on_body`` (any number of times),
``on_end``.  Every framing failure is one ``FramingError``.

How a response is read:

- The head is collected until its empty line, then parsed in one piece by llhttp.
  Knowing where the head ends bounds it (64 KiB, 256 fields) whatever the read sizes,
  and tells exactly where the body starts.
- llhttp validates the status line, every field and ``Content-Length``, refuses
  ``Transfer-Encoding`` with ``Content-Length``, and says whether the connection stays
  open; midair adds what it refuses on top (any coding but chunked, a 101 to a plain
  GET, a status below 100) and skips 1xx interim heads.
- Content-Length and close-delimited bodies only need counting: the bytes pass
  through untouched (a memoryview slice where a read holds head or trailing bytes).
  Chunked bodies are decoded by llhttp.
- Bytes past a declared body (empty lines aside), an EOF-delimited body, or the
  peer's EOF make the connection non-reusable; a body cut short is a ``FramingError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 256


class Piped:
    """Body bytes an engine moved into a pipe (splice(2)) without reading them.

    Only their count crosses Python: the core counts them like any chunk (offsets,
    sizes, stall timers, limits) and the store moves them from ``pipe`` to the part
    file.  An engine hands one over only within ``ClientConnection.body_remaining``,
    so framing never has to look inside it.  ``emptied`` turns True once the store
    has taken them (or thrown them away): only otherwise must the engine empty the
    pipe itself before its next body.
    """

    __slots__ = ("count", "emptied", "pipe")

    def __init__(self, count: int, pipe: int) -> None:
        self.count, self.pipe = count, pipe
        self.emptied = False

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"Piped({self.count})"


Bytes = bytes | memoryview
Chunk = Bytes | Piped


def _bytes(data: Chunk) -> Bytes:
    """``data``, where framing has to read it: a Piped chunk there is an engine's bug."""
    if isinstance(data, Piped):
        raise TypeError("Piped bytes outside a Content-Length body (see body_remaining)")
    return data


_SHORT_BODY = "connection closed before the end of the body (short body)"
_NO_RESPONSE = "connection closed before a response"
_HEAD_TOO_LARGE = f"response head larger than {MAX_HEAD_BYTES // 1024} KiB"
# llhttp's words for what users know by other names.
_REASONS = {
    "Invalid character in Content-Length": "bad Content-Length",
    "Content-Length overflow": "bad Content-Length (too large)",
    "Content-Length can't be present with Transfer-Encoding": (
        "both Transfer-Encoding and Content-Length"
    ),
}
_LENGTH_REASONS = ("Duplicate Content-Length", "Invalid character in Content-Length")
_EMPTY_LINES = re.compile(rb"[\r\n]*")


class FramingError(Exception):
    """The response cannot be parsed or broke a limit.  Message says which."""


class Head:
    """A final response head: the status, and the head's bytes as llhttp validated them.

    Fields are found by name when asked for rather than split out as they arrive: a
    server sends a dozen, the core reads a handful.  Names match in any case; a
    repeated field's values are joined by ", " (RFC 9110 section 5.3).  The two fields
    that frame every body are read once, here.
    """

    __slots__ = ("_lower", "content_length", "raw", "status", "transfer_encoding")

    def __init__(self, status: int, raw: bytes) -> None:
        self.status = status
        self.raw = raw
        self._lower = raw.lower()  # the same offsets: names are found here, values in raw
        self.transfer_encoding = self.find(_TRANSFER_ENCODING)
        length = self.find(_CONTENT_LENGTH)
        # The parser has validated it (digits only, repeats merged); a coding frames instead.
        framed = length is not None and self.transfer_encoding is None
        self.content_length = int(length) if framed else None  # type: ignore[arg-type]

    def field(self, name: bytes) -> bytes | None:
        """The value of the field ``name`` (lower case), or None if the head has none."""
        return self.find(field_key(name))

    def get(self, name: bytes) -> str | None:
        return self.text(field_key(name))

    def text(self, key: bytes) -> str | None:
        """``get`` for a ``field_key``."""
        value = self.find(key)
        return None if value is None else value.decode("latin-1")  # never a decode error

    def has(self, fields: re.Pattern[bytes]) -> bool:
        """Whether any field ``fields`` matches is there (a pattern of ``field_key``s)."""
        return fields.search(self._lower) is not None

    def find(self, key: bytes) -> bytes | None:
        """``field`` for a ``field_key``: the core's own names are made into keys once."""
        at = self._lower.find(key)
        if at < 0:
            return None
        start = at + len(key)
        end = self.raw.find(b"\n", start)
        value = self.raw[start:end].strip(b" \t\r")
        if self._lower.find(key, end) < 0:  # the usual case: the field is there once
            return value
        return self._joined(key, value, end)

    def every(self, key: bytes) -> list[str]:
        """Each value of the field ``key`` (a ``field_key``) on its own, for the one field
        that cannot be joined by commas (Set-Cookie: its dates hold commas)."""
        values, at = [], self._lower.find(key)
        while at >= 0:
            start = at + len(key)
            end = self.raw.find(b"\n", start)
            values.append(self.raw[start:end].strip(b" \t\r").decode("latin-1"))
            at = self._lower.find(key, end)
        return values

    def _joined(self, key: bytes, first: bytes, end: int) -> bytes:
        values = [first]
        at = self._lower.find(key, end)
        while at >= 0:
            start = at + len(key)
            end = self.raw.find(b"\n", start)
            values.append(self.raw[start:end].strip(b" \t\r"))
            at = self._lower.find(key, end)
        return b", ".join(values)

    @property
    def fields(self) -> dict[bytes, bytes]:
        """Every field, by lower-cased name: for inspection, not on the per-file path."""
        names = dict.fromkeys(name.lower() for name in _FIELD_NAME.findall(self.raw))
        return {name: self.field(name) or b"" for name in names}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Head) and (self.status, self.raw) == (other.status, other.raw)

    def __repr__(self) -> str:
        return f"Head({self.status}, {self.raw!r})"


def field_key(name: bytes) -> bytes:
    """What ``Head.find`` looks for: a whole name (lower case) at the start of a line,
    never inside the status line or a value."""
    return b"\n" + name + b":"


_TRANSFER_ENCODING = field_key(b"transfer-encoding")
_CONTENT_LENGTH = field_key(b"content-length")
_FIELD_NAME = re.compile(rb"^([^:\s]+):", re.M)  # the status line has a space before any ':'


TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, Protocol

    import httptools

    class ResponseSink(Protocol):
        """Where a response goes as it is parsed: one head, body chunks, one end."""

        def on_head(self, head: Head) -> None: ...

        def on_body(self, data: Chunk) -> None: ...

        def on_end(self) -> None: ...


def encode_fields(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines as sent (UTF-8), each ending in CRLF, with no other line break."""
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        # Headers are validated where they are made; this guards the wire all the same.
        raise ValueError(f"a line break inside a request header: {text!r}")
    return text.encode()


class ClientConnection:
    """Request bytes out, response events to ``sink``; reusable after a clean exchange.

    The sink may call ``abandon`` (nothing more is delivered) or, from ``on_end``,
    ``request`` (the next exchange).  A ``FramingError`` is raised only while the
    exchange is live: never after ``on_end`` or ``abandon``.
    """

    __slots__ = (
        "_before",
        "_complete",
        "_eof",
        "_keep_alive",
        "_live",
        "_pending",
        "_remaining",
        "_response",
        "_sink",
        "_trailing",
        "receive",
    )
    receive: Callable[[Chunk], None]
    """Feed bytes; ``b""`` means the peer closed.  The current phase of the exchange
    itself (``_await_head``, a body, ``_after_end``): one call per read, not two."""

    def __init__(self, sink: ResponseSink) -> None:
        self._sink = sink
        self._live = True
        self._begin()

    def request(self, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
        """Begin an exchange: the bytes of ``GET target``, headers sent as given (UTF-8)."""
        return self.request_with(target, encode_fields(headers))

    def request_with(self, target: str, fields: bytes) -> bytes:
        """Begin an exchange whose header lines were encoded once for many requests."""
        if "\n" in target or "\r" in target:
            raise ValueError(f"a line break inside the request target {target!r}")
        self._begin()
        return b"GET " + target.encode() + b" HTTP/1.1\r\n" + fields + b"\r\n"

    def abandon(self) -> None:
        """The caller is done with this exchange: deliver nothing more."""
        self._live = False
        self.receive = self._after_end
        self._remaining = 0

    @property
    def body_remaining(self) -> int:
        """Bytes still due in a Content-Length body being read; 0 in any other phase."""
        return self._remaining

    @property
    def reusable(self) -> bool:
        """True once the response ended cleanly on a connection both sides keep open."""
        return self._complete and self._keep_alive and not (self._trailing or self._eof)

    # --- the phases of one exchange: ``receive`` is the current one ---------------------
    def _begin(self) -> None:
        self.receive = self._await_head
        self._pending: bytes | bytearray = b""  # the start of a head that spans reads
        self._before = 0  # bytes before ``_pending``: empty lines and 1xx heads
        self._response: _Response | None = None
        self._remaining = 0
        self._complete = self._keep_alive = self._trailing = self._eof = False

    def _await_head(self, data: Chunk) -> None:
        if not data:
            raise FramingError(_NO_RESPONSE)
        searched = len(self._pending) - 2  # an empty line may straddle two reads
        buffer, at = self._collect(data), 0
        while True:
            start, end = self._find_head(buffer, at, searched)
            if end < 0:
                self._keep(buffer, start)
                return
            response = _parse_head(bytes(buffer[start:end]))
            if response is not None:
                self._pending = b""  # a new buffer later: body views may refer to the old one
                self._take_head(response, memoryview(buffer)[end:])
                return
            at = end  # that was an interim 1xx head: the final one follows

    def _collect(self, data: Chunk) -> bytes | bytearray:
        """The head's bytes so far: this read alone (no copy) if it begins the head."""
        if self._pending:  # a bytearray: only ``_keep`` makes a non-empty one
            self._pending += _bytes(data)
            return self._pending
        return data if isinstance(data, bytes) else bytes(_bytes(data))

    def _find_head(self, buffer: bytes | bytearray, at: int, searched: int) -> tuple[int, int]:
        """Where the next head in ``buffer`` starts and ends (-1: not yet complete).

        Empty lines before a status line are skipped, as llhttp does between messages
        (a server may end a body with a stray CRLF).  They and 1xx heads count toward
        the final head's limit, so no flood of them goes on for ever.
        """
        start = at
        if not buffer.startswith(b"H", at):  # "HTTP/...": the usual start needs no regex
            start = _EMPTY_LINES.match(buffer, at).end()  # type: ignore[union-attr]
        end = _head_end(buffer, max(start, searched))
        if self._before + (end if end >= 0 else len(buffer)) > MAX_HEAD_BYTES:
            raise FramingError(_HEAD_TOO_LARGE)
        return start, end

    def _keep(self, buffer: bytes | bytearray, start: int) -> None:
        """Keep the incomplete head that starts at ``start`` for the next read."""
        self._before += start
        if start or buffer is not self._pending:
            self._pending = bytearray(buffer[start:])

    def _take_head(self, response: _Response, rest: memoryview) -> None:
        """Tell the sink about a final head; then hand what follows to the body."""
        head = response.head
        assert head is not None
        self._response, self._keep_alive = response, response.keep_alive
        self._sink.on_head(head)
        if not self._live:
            return
        if response.done:  # no body: 204, 304, Content-Length: 0
            response.release()
            self._trailing = _unasked(rest)
            self._end()
            return
        if head.content_length == len(rest):  # the whole body came with its head (most
            response.release()  # small files): what ``_counted_body`` does, in one step
            self._sink.on_body(rest)
            if self._live:
                self._end()
            return
        self.receive = self._body_reader(response, head)
        if rest:
            self.receive(rest)

    def _body_reader(self, response: _Response, head: Head) -> Callable[[Chunk], None]:
        """The phase that reads the body.  Only a chunked one needs llhttp past the head."""
        if head.transfer_encoding is not None:
            response.lenient()
            return self._chunked_body
        response.release()
        if head.content_length is not None:
            self._remaining = head.content_length
            return self._counted_body
        self._keep_alive = False
        return self._body_until_eof

    def _counted_body(self, data: Chunk) -> None:
        remaining = self._remaining
        if len(data) < remaining:
            if not data:
                raise FramingError(_SHORT_BODY)
            self._remaining = remaining - len(data)
            self._sink.on_body(data)
            return
        if len(data) > remaining:
            view = memoryview(_bytes(data))
            self._trailing = _unasked(view[remaining:])
            data = view[:remaining]
        self._sink.on_body(data)
        if self._live:
            self._end()

    def _body_until_eof(self, data: Chunk) -> None:
        if data:
            self._sink.on_body(data)
            return
        self._eof = True
        self._end()

    def _chunked_body(self, data: Chunk) -> None:
        response = self._response
        assert response is not None
        if not data:
            raise FramingError(_SHORT_BODY)
        chunks = response.feed_body(_bytes(data))
        for chunk in chunks:
            self._sink.on_body(chunk)
            if not self._live:
                return
        if response.done:
            self._trailing = response.after_end
            self._end()

    def _after_end(self, data: Chunk) -> None:
        if data:
            self._trailing = self._trailing or _unasked(_bytes(data))
        else:
            self._eof = True

    def _end(self) -> None:
        self._complete = True
        self.receive = self._after_end
        self._remaining = 0
        self._sink.on_end()  # last: the sink may begin the next exchange from here


def _first_parser(response: _Response) -> Any:
    """Import httptools, then make ``response``'s parser: at the first response, so the
    import (with ``typing``, ~2.5 ms) runs while the first request is on its way, not
    before it.  From then on ``_Parser`` is httptools' class itself."""
    global _Parser, _PARSER_ERRORS
    import httptools

    _PARSER_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
    _Parser = httptools.HttpResponseParser
    return _Parser(response)


_Parser: Callable[[_Response], Any] = _first_parser
_PARSER_ERRORS: tuple[type[Exception], ...] = ()  # none can be raised before the first parser


class _Response:
    """One response as llhttp reports it; httptools calls the ``on_*`` methods.

    They only record: the sink is called after ``feed_data`` returns, so its
    exceptions and its ``abandon`` never unwind through the C parser.
    """

    __slots__ = (
        "after_end",
        "chunks",
        "done",
        "failure",
        "head",
        "idle",
        "keep_alive",
        "parser",
        "raw",
    )

    def __init__(self, head: bytes, *, lenient: bool = False) -> None:
        self.raw = head  # the head alone: fields are read from it when asked for
        self.head: Head | None = None  # once the head is complete
        self.done = self.after_end = self.keep_alive = False
        self.chunks: list[bytes] = []
        self.idle = 0  # chunked framing bytes in reads that carried no body byte
        self.failure = ""  # llhttp's reason, when it refused the bytes
        self.parser: httptools.HttpResponseParser | None = _Parser(self)
        if lenient:
            self.lenient()

    def lenient(self) -> None:
        """Take a bare LF as a line's end (RFC 9112 section 2.2 lets a recipient accept
        it): in a head that has one, and in a chunked body's framing always."""
        assert self.parser is not None
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)

    def release(self) -> None:
        """Drop the parser once no body needs it.  It refers back to this object (its
        callbacks), so without this every response would wait for the cycle collector."""
        self.parser = None

    # No ``on_header``: llhttp validates every field without calling back for each one
    # (a chunked body's trailer fields are dropped so, too); ``Head`` reads them later.
    def on_headers_complete(self) -> None:
        assert self.parser is not None  # it is the one calling
        self.head = Head(self.parser.get_status_code(), self.raw)
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it at the end

    def on_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_message_complete(self) -> None:
        self.done = True

    def on_message_begin(self) -> None:
        if self.done:  # bytes after the end began another response: stop parsing there
            raise _AfterEnd

    def feed(self, data: Bytes) -> None:
        assert self.parser is not None, "fed after release"
        try:
            self.parser.feed_data(data)
        except _PARSER_ERRORS as exc:
            if not self.done:
                self.failure = str(exc)
                raise FramingError(
                    f"malformed response: {_REASONS.get(self.failure, self.failure)}"
                ) from None
            self.after_end = True  # not body, and not a response we asked for

    def feed_body(self, data: Bytes) -> list[bytes]:
        """Decode chunked body bytes.  Framing that carries no body (trailers, chunk
        extensions) is bounded here: httptools would accumulate a trailer without end."""
        self.feed(data)
        chunks, self.chunks = self.chunks, []
        self.idle = 0 if chunks else self.idle + len(data)
        if self.idle > MAX_HEAD_BYTES:
            raise FramingError(
                f"chunked framing without data for more than {MAX_HEAD_BYTES // 1024} KiB"
            )
        return chunks


def _unasked(data: Bytes) -> bool:
    """Whether bytes after a response are more than empty lines: an answer to nothing,
    so framing is broken.  Empty lines are skipped, by llhttp and before a head alike."""
    return bool(bytes(data).strip(b"\r\n"))


class _AfterEnd(Exception):
    """Raised from a callback to stop llhttp at the start of an unasked-for response."""


def _head_end(data: bytes | bytearray, start: int) -> int:
    """Where the first empty line after ``start`` ends (LF, optional CR, LF), or -1.

    With empty lines before the status line skipped and obs-fold refused by llhttp,
    this is where llhttp's head ends too: it is fed exactly the head.
    """
    crlf = data.find(b"\n\r\n", start)
    stop = crlf if crlf >= 0 else len(data)
    lf = data.find(b"\n\n", start, stop + 1)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def _parse_head(head: bytes) -> _Response | None:
    """The response whose complete head this is, or None for an interim 1xx head.

    llhttp parses strictly first: what it accepts so, it accepts the same way with the
    leniencies below, which cost a call (and a scan for bare LFs) on every head.
    """
    response = _Response(head)
    try:
        response.feed(head)
    except FramingError:
        if response.failure not in _LENGTH_REASONS and not _has_bare_lf(head):
            raise
        response = _parse_leniently(head)
    return _final(response)


def _parse_leniently(head: bytes) -> _Response:
    """Parse a head that has bare LFs, or Content-Length fields that agree (merged)."""
    response = _Response(head, lenient=True)
    try:
        response.feed(head)
    except FramingError:
        if response.failure not in _LENGTH_REASONS:
            raise
        merged = _merge_lengths(head)
        response = _Response(merged, lenient=True)
        response.feed(merged)
    return response


def _has_bare_lf(head: bytes) -> bool:
    return head.count(b"\n") != head.count(b"\r\n")


def _final(response: _Response) -> _Response | None:
    """Check what llhttp leaves to its caller; None for an interim (1xx) head."""
    head = response.head
    if head is None:
        raise FramingError("malformed response: the head does not end")
    if head.status < 100:
        raise FramingError(f"malformed response: status {head.status}")
    if head.status == 101:
        raise FramingError("malformed response: 101 Switching Protocols to a plain GET")
    if len(response.raw) > _FIELDS_FIT and _field_count(response.raw) > MAX_HEADER_FIELDS:
        count = _field_count(response.raw)
        raise FramingError(f"response head has {count} fields (limit {MAX_HEADER_FIELDS})")
    if head.status < 200:
        return None
    coding = head.transfer_encoding
    if coding is not None and not response.done and coding.strip().lower() != b"chunked":
        # Another coding would be saved undecoded, and its framing guessed.
        raise FramingError(
            f"malformed response: unsupported Transfer-Encoding {coding.decode('latin-1')!r}"
        )
    return response


def _field_count(head: bytes) -> int:
    """Lines between the status line and the empty line: llhttp refuses obs-fold, so
    each is one field."""
    return head.count(b"\n") - 2


# A field line takes 3 bytes at least ("X:" and LF): a shorter head cannot break the limit.
_FIELDS_FIT = 3 * MAX_HEADER_FIELDS


def _merge_lengths(head: bytes) -> bytes:
    """The head with its Content-Length fields merged into one, when they agree.

    RFC 9110 section 8.6 lets a recipient take "42, 42" or a repeated field of
    equal values as one; llhttp refuses both.  Values that differ are an error.
    """
    lines = head.split(b"\n")
    found = [i for i, line in enumerate(lines) if line[:15].lower() == b"content-length:"]
    values = {value.strip() for i in found for value in lines[i][15:].split(b",")}
    if len(values) != 1:
        raise FramingError("malformed response: conflicting Content-Length")
    ending = b"\r" if lines[found[0]].endswith(b"\r") else b""
    lines[found[0]] = b"Content-Length: " + values.pop() + ending
    return b"\n".join(line for i, line in enumerate(lines) if i not in found[1:])
