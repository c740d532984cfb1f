"""The HTTP exchange over llhttp: every response whole, at every split, cut at every byte."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.http import (
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    Chunk,
    ClientConnection,
    FramingError,
    Head,
    Piped,
)

HOST = [("Host", "example.com")]

# Deterministic: the same examples on every run (no example database either).
SEEDED = settings(derandomize=True, database=None, deadline=None)


class Recorder:
    """A ResponseSink that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_head(self, head: Head) -> None:
        self.events.append(("head", head))

    def on_body(self, data: Chunk) -> None:
        self.events.append(("body", data))

    def on_end(self) -> None:
        self.events.append(("end", None))

    def fold(self) -> tuple[Head | None, bytes, bool]:
        """(head, body, ended), checking the order: one head first, one end last."""
        kinds = [kind for kind, _ in self.events]
        assert kinds.count("head") <= 1 and kinds.count("end") <= 1
        if "head" in kinds:
            assert kinds[0] == "head", "the head comes first"
        if "end" in kinds:
            assert kinds[-1] == "end", "the end comes last"
        heads = [e for k, e in self.events if k == "head"]
        body = b"".join(bytes(e) for k, e in self.events if k == "body")  # type: ignore[arg-type]
        return (heads[0] if heads else None), body, "end" in kinds  # type: ignore[return-value]


def connection() -> tuple[ClientConnection, Recorder]:
    sink = Recorder()
    conn = ClientConnection(sink)
    conn.request("/", HOST)
    return conn, sink


def feed(chunks: list[bytes], eof: bool = False) -> tuple[Head | None, bytes, bool, bool]:
    """Feed every chunk (then EOF) to a new exchange: (head, body, ended, reusable)."""
    conn, sink = connection()
    for chunk in chunks:
        conn.receive(chunk)
    if eof:
        conn.receive(b"")
    return (*sink.fold(), conn.reusable)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# (name, response bytes, needs EOF to end, status, body, reusable afterwards)
CASES = [
    (
        "length",
        b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "x"\r\n\r\nhello',
        False,
        200,
        b"hello",
        True,
    ),
    ("empty", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, 200, b"", True),
    (
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n",
        False,
        200,
        b"hello world",
        True,
    ),
    (
        "chunked, any case",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked \r\n\r\n2\r\nok\r\n0\r\n\r\n",
        False,
        200,
        b"ok",
        True,
    ),
    (
        "close-delimited",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        True,
        200,
        b"until the end",
        False,
    ),
    (
        "no length, keep-alive",
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
        True,
        200,
        b"until the end",
        False,
    ),
    ("http/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", False),
    (
        "http/1.0 keep-alive",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        False,
        200,
        b"ok",
        True,
    ),
    (
        "close after length",
        b"HTTP/1.1 206 Partial\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        False,
        206,
        b"abc",
        False,
    ),
    (
        "close in a list",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
        False,
        200,
        b"ok",
        False,
    ),
    (
        "informational first",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
        False,
        404,
        b"nope",
        True,
    ),
    (
        "several interim heads",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
        b"Link: </a>\r\nContent-Length: 9\r\n\r\nHTTP/1.1 199 Whatever\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
        200,
        b"ok",
        True,
    ),
    ("no content", b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", False, 204, b"", True),
    (
        "not modified",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        False,
        304,
        b"",
        True,
    ),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, 200, b"ok", True),
    (
        "empty lines first",
        b"\r\n\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
        200,
        b"ok",
        True,
    ),
    ("mixed line ends", b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", False, 200, b"ok", True),
    ("no reason phrase", b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", True),
    (
        "same length twice",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
        False,
        200,
        b"ok",
        True,
    ),
    (
        "same length listed",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        False,
        200,
        b"ok",
        True,
    ),
]
IDS = [c[0] for c in CASES]
COMPLETE = [c for c in CASES if not c[2]]


@pytest.mark.parametrize(("name", "data", "eof", "status", "body", "reusable"), CASES, ids=IDS)
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_responses(
    name: str, data: bytes, eof: bool, status: int, body: bytes, reusable: bool, how: str
) -> None:
    head, got, ended, reuse = feed([data] if how == "whole" else bytewise(data), eof)
    assert head is not None and head.status == status
    assert (got, ended, reuse) == (body, True, reusable)


@pytest.mark.parametrize(("name", "data", "eof", "status", "body", "reusable"), CASES, ids=IDS)
def test_every_split_into_two_reads_gives_the_same_events(
    name: str, data: bytes, eof: bool, status: int, body: bytes, reusable: bool
) -> None:
    whole = feed([data], eof)
    for cut in range(1, len(data)):
        assert feed([data[:cut], data[cut:]], eof) == whole, cut


@pytest.mark.parametrize(("name", "data", "eof", "status", "body", "reusable"), CASES, ids=IDS)
def test_eof_at_every_byte(
    name: str, data: bytes, eof: bool, status: int, body: bytes, reusable: bool
) -> None:
    # Before the final head: no response.  Inside a framed body: short.  Never a quiet end.
    final = data.rindex(b"HTTP/1.")
    head_len = min(
        i + len(sep) for sep in (b"\n\r\n", b"\n\n") if (i := data.find(sep, final)) >= 0
    )
    for cut in range(len(data)):
        conn, sink = connection()
        if cut:
            conn.receive(data[:cut])
        if cut >= head_len and eof:  # a close-delimited body: EOF ends it
            conn.receive(b"")
            assert sink.fold()[1:] == (data[head_len:cut], True) and not conn.reusable
            continue
        expected = "before a response" if cut < head_len else "short body"
        with pytest.raises(FramingError, match=expected):
            conn.receive(b"")
        assert ("end", None) not in sink.events


@pytest.mark.parametrize(
    ("name", "data", "eof", "status", "body", "reusable"), COMPLETE, ids=[c[0] for c in COMPLETE]
)
@pytest.mark.parametrize("how", ["together", "later"])
def test_trailing_data_is_not_part_of_the_response(
    name: str, data: bytes, eof: bool, status: int, body: bytes, reusable: bool, how: str
) -> None:
    # Bytes after a complete response break framing: the server must not get to answer
    # the next request on this connection, whichever way the body was framed.
    for junk in (b"HTTP/1.1 200 OK\r\ngarbage", b"garbage", b"\r\n\r\nHTTP/1.1 200 OK\r\n"):
        head, got, ended, reuse = feed([data + junk] if how == "together" else [data, junk])
        assert head is not None and head.status == status
        assert (got, ended, reuse) == (body, True, False), junk


@pytest.mark.parametrize(
    ("name", "data", "eof", "status", "body", "reusable"), COMPLETE, ids=[c[0] for c in COMPLETE]
)
def test_empty_lines_after_a_response_are_no_trailing_data(
    name: str, data: bytes, eof: bool, status: int, body: bytes, reusable: bool
) -> None:
    # llhttp skips them after a chunked body, and a head may follow them: they leave the
    # connection as reusable as it was, in the same read or a later one.
    for reads in ([data + b"\r\n\n"], [data, b"\r\n"], [data + b"\r", b"\n\r\n"]):
        assert feed(reads)[1:] == (body, True, reusable), reads


def test_eof_after_the_end_makes_the_connection_unusable() -> None:
    conn, sink = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    assert conn.reusable
    conn.receive(b"")
    assert sink.fold()[1:] == (b"a", True) and not conn.reusable


def test_not_reusable_mid_response() -> None:
    conn, _ = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na")
    assert not conn.reusable


def test_keep_alive_cycle() -> None:
    conn, sink = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    assert conn.reusable
    conn.request("/second", HOST)
    assert not conn.reusable
    sink.events.clear()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
    assert sink.fold()[1:] == (b"b", True) and conn.reusable


class NextRequestOnEnd(Recorder):
    """Begins the next exchange from ``on_end``, as the batch does."""

    def __init__(self) -> None:
        super().__init__()
        self.conn: ClientConnection | None = None

    def on_end(self) -> None:
        super().on_end()
        assert self.conn is not None and self.conn.reusable
        self.conn.request("/next", HOST)


def test_the_next_exchange_can_begin_inside_on_end() -> None:
    sink = NextRequestOnEnd()
    conn = sink.conn = ClientConnection(sink)
    conn.request("/", HOST)
    for body in (b"one", b"two"):
        conn.receive(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n" + body + b"\r\n0\r\n\r\n"
        )
    assert [(k, bytes(e)) for k, e in sink.events if k == "body"] == [  # type: ignore[arg-type]
        ("body", b"one"),
        ("body", b"two"),
    ]
    assert [k for k, _ in sink.events].count("end") == 2


# --- the sink: abandon, exceptions, no copies -----------------------------------------
class AbandonOn(Recorder):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conn: ClientConnection | None = None

    def on_head(self, head: Head) -> None:
        super().on_head(head)
        if self.kind == "head" and self.conn is not None:
            self.conn.abandon()

    def on_body(self, data: Chunk) -> None:
        super().on_body(data)
        if self.kind == "body" and self.conn is not None:
            self.conn.abandon()


@pytest.mark.parametrize("kind", ["head", "body"])
@pytest.mark.parametrize(
    "framing", [b"Content-Length: 10", b"Transfer-Encoding: chunked", b"Connection: close"]
)
def test_nothing_is_delivered_after_abandon(kind: str, framing: bytes) -> None:
    sink = AbandonOn(kind)
    conn = sink.conn = ClientConnection(sink)
    conn.request("/", HOST)
    chunked = b"Transfer-Encoding" in framing
    body = b"1\r\na\r\n1\r\nb\r\n" if chunked else b"ab"
    conn.receive(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n" + body)
    conn.receive(b"more body, then junk that would be an error")
    conn.receive(b"")
    expected = ["head"] if kind == "head" else ["head", "body"]
    assert [k for k, _ in sink.events] == expected
    assert not conn.reusable


class Exploding(Recorder):
    def on_body(self, data: Chunk) -> None:
        raise RuntimeError("the sink's own bug")


@pytest.mark.parametrize("framing", [b"Content-Length: 1", b"Transfer-Encoding: chunked"])
def test_a_sink_exception_comes_out_as_it_was_raised(framing: bytes) -> None:
    conn = ClientConnection(Exploding())
    conn.request("/", HOST)
    body = b"1\r\na\r\n0\r\n\r\n" if b"chunked" in framing else b"a"
    with pytest.raises(RuntimeError, match="the sink's own bug"):
        conn.receive(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n" + body)


def test_body_bytes_pass_through_without_copies() -> None:
    conn, sink = connection()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
    first, second, third = head + b"abcd", b"efgh", b"ijkl" + b"junk"
    for data in (first, second, third):
        conn.receive(data)
    [(_, a), (_, b), (_, c)] = [e for e in sink.events if e[0] == "body"]
    assert isinstance(a, memoryview) and a.obj is first and bytes(a) == b"abcd"
    assert b is second  # a read that is all body is handed on as it came
    assert isinstance(c, memoryview) and c.obj is third and bytes(c) == b"ijkl"
    assert not conn.reusable  # (the junk)


def test_body_remaining_counts_down_a_content_length_body_only() -> None:
    conn, _ = connection()
    assert conn.body_remaining == 0  # awaiting the head
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert conn.body_remaining == 7
    conn.receive(b"defghij")
    assert conn.body_remaining == 0 and conn.reusable
    chunked, _ = connection()
    chunked.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    assert chunked.body_remaining == 0  # framing needs the bytes: nothing to pipe
    abandoned, _ = connection()
    abandoned.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    abandoned.abandon()
    assert abandoned.body_remaining == 0


def test_piped_bytes_are_counted_not_read() -> None:
    conn, sink = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    first, last = Piped(60, pipe=7), Piped(40, pipe=7)
    conn.receive(first)
    assert conn.body_remaining == 40
    conn.receive(last)
    assert [e for e in sink.events if e[0] != "head"] == [
        ("body", first),
        ("body", last),
        ("end", None),
    ]
    assert conn.reusable


def test_a_body_that_comes_whole_with_its_head_is_one_chunk_then_the_end() -> None:
    conn, sink = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert [kind for kind, _ in sink.events] == ["head", "body", "end"]
    assert bytes(sink.events[1][1]) == b"abc"  # type: ignore[arg-type]
    assert conn.reusable and conn.body_remaining == 0


def test_a_sink_that_abandons_a_whole_body_gets_no_end() -> None:
    class Abandoning(Recorder):
        def on_body(self, data: Chunk) -> None:
            super().on_body(data)
            conn.abandon()

    sink = Abandoning()
    conn = ClientConnection(sink)
    conn.request("/", HOST)
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert [kind for kind, _ in sink.events] == ["head", "body"]
    assert not conn.reusable


def test_piped_bytes_where_framing_reads_them_are_a_bug() -> None:
    conn, _ = connection()
    with pytest.raises(TypeError):
        conn.receive(Piped(10, pipe=7))  # awaiting the head


# --- heads -------------------------------------------------------------------------------
def test_head_fields() -> None:
    head, _, _, _ = feed(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\nx-a:  2 \t\r\n"
            b'ETag: "\xe9"\r\nEmpty:\r\n\r\n'
        ]
    )
    assert head is not None
    assert head.get(b"x-a") == "1, 2"  # repeated fields joined, whitespace trimmed
    assert head.get(b"etag") == '"\xe9"'  # latin-1, never a decode error
    assert head.get(b"empty") == "" and head.get(b"missing") is None
    assert all(name == name.lower() for name in head.fields)
    assert head.content_length == 0


def test_fields_are_found_by_whole_name_in_any_case() -> None:
    head, _, _, _ = feed(
        [
            b"HTTP/1.1 200 ETag: no\nCONTENT-LENGTH: 0\nX-ETag: a\nETag-X: b\n"
            b'eTaG: "c"\nLocation:\t/x \t\n\n'
        ]
    )
    assert head is not None
    assert head.get(b"etag") == '"c"'  # not the status line's, nor a longer name's
    assert head.get(b"location") == "/x" and head.content_length == 0
    assert set(head.fields) == {b"content-length", b"x-etag", b"etag-x", b"etag", b"location"}


def test_trailer_fields_are_not_head_fields() -> None:
    head, body, _, _ = feed(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'1\r\na\r\n0\r\nETag: "late"\r\n\r\n'
        ]
    )
    assert head is not None and head.get(b"etag") is None and body == b"a"


@pytest.mark.parametrize(
    ("lines", "length"),
    [
        (b"Content-Length: 7\r\n", 7),
        (b"content-length:7 \r\nTransfer-Encoding: chunked\r\n", None),
        (b"X-Content-Length: 7\r\nContent-Length-X: 8\r\n", None),  # whole names only
        (b"", None),
    ],
)
def test_content_length(lines: bytes, length: int | None) -> None:
    assert Head(200, b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n").content_length == length


def test_request_bytes() -> None:
    conn = ClientConnection(Recorder())
    data = conn.request("/a%20b?x=1", [("Host", "h:8080"), ("Range", "bytes=5-"), ("X-Name", "é")])
    assert data == (
        b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h:8080\r\nRange: bytes=5-\r\nX-Name: \xc3\xa9\r\n\r\n"
    )  # values go as typed, in UTF-8


@pytest.mark.parametrize(
    "header", [("X", "a\r\nInjected: 1"), ("X", "a\nb"), ("X\r", "a"), ("X", "a\r")]
)
def test_a_line_break_never_reaches_the_wire(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        ClientConnection(Recorder()).request("/", [*HOST, header])


@pytest.mark.parametrize("target", ["/a\r\nInjected: 1", "/a\n", "/a\r"])
def test_a_line_break_in_the_target_never_reaches_the_wire(target: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        ClientConnection(Recorder()).request(target, HOST)


# --- failures: always FramingError, with a message a user can read --------------------
def fields(n: int) -> bytes:
    return b"".join(b"X-%d: 1\r\n" % i for i in range(n))


BAD = [
    ("not http", b"SSH-2.0-OpenSSH\r\n\r\n", "malformed response"),
    ("bad status", b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed response"),
    ("status below 100", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", "status 99"),
    ("status over 999", b"HTTP/1.1 1000 Odd\r\n\r\n", "malformed response"),
    ("bad version", b"HTTP/1.2 200 OK\r\n\r\n", "malformed response"),
    ("endless empty lines", b"\r\n" * (MAX_HEAD_BYTES // 2 + 1), "larger than 64 KiB"),
    (
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        "malformed response",
    ),
    ("no colon", b"HTTP/1.1 200 OK\r\nJunk\r\n\r\n", "malformed response"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "malformed response"),
    ("control character", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", "malformed response"),
    ("lone CR", b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "malformed response"),
    (
        "switching protocols",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        "101 Switching Protocols",
    ),
    (
        "bad chunk size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "malformed response",
    ),
    (
        "chunk without CRLF",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        "malformed response",
    ),
    (
        "conflicting lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "malformed response: conflicting Content-Length",
    ),
    (
        "conflicting list",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        "conflicting Content-Length",
    ),
    (
        "negative length",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "malformed response: bad Content-Length",
    ),
    (
        "huge length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "bad Content-Length",
    ),
    (
        "length and chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        "both Transfer-Encoding and Content-Length",
    ),
    (
        "another coding",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        "unsupported Transfer-Encoding 'gzip'",
    ),
    (
        "gzip then chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "unsupported Transfer-Encoding",
    ),
    (
        "chunked twice",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "unsupported Transfer-Encoding",
    ),
    ("huge head", b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024), "larger than 64 KiB"),
    (
        "huge complete head",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n",
        "larger than 64 KiB",
    ),
    (
        "huge interim head",
        b"HTTP/1.1 100 Continue\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n",
        "larger than 64 KiB",
    ),
    (
        "many fields",
        b"HTTP/1.1 200 OK\r\n" + fields(MAX_HEADER_FIELDS + 1) + b"\r\n",
        f"{MAX_HEADER_FIELDS + 1} fields",
    ),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("how", ["whole", "bytewise", "in 4 KiB reads"])
def test_framing_errors(name: str, data: bytes, message: str, how: str) -> None:
    reads = {
        "whole": [data],
        "bytewise": bytewise(data),
        "in 4 KiB reads": split_at(data, list(range(0, len(data), 4096))),
    }[how]
    conn, sink = connection()
    with pytest.raises(FramingError, match=message) as info:
        for chunk in reads:
            conn.receive(chunk)
    assert "\n" not in str(info.value)
    assert ("end", None) not in sink.events


@pytest.mark.parametrize(
    "framing", [b"1\r\na\r\n0\r\nX: ", b"1;", b"1\r\na\r\n0\r\n" + fields(1000)]
)
def test_chunked_framing_without_data_is_bounded(framing: bytes) -> None:
    # An endless trailer, chunk extension or list of trailer fields: httptools keeps a
    # trailer value in memory, so the bytes that carry no body are limited like a head.
    conn, _ = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framing)
    with pytest.raises(FramingError, match="chunked framing without data for more than 64"):
        for _ in range(MAX_HEAD_BYTES // 1024 + 1):
            conn.receive(b"a" * 1024)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_thousands_of_interim_heads_in_one_read() -> None:
    many = MAX_HEAD_BYTES // len(CONTINUE) - 2  # just within the limit, with the final head
    assert feed([CONTINUE * many + FINAL])[1:] == (b"ok", True, True)


@pytest.mark.parametrize("filler", [CONTINUE, b"\r\n"])
def test_interim_heads_and_empty_lines_count_toward_the_head_limit(filler: bytes) -> None:
    # Else a server could keep an attempt busy for ever without sending a response.
    flood = filler * (MAX_HEAD_BYTES // len(filler) + 1)
    for reads in ([flood + FINAL], split_at(flood, list(range(0, len(flood), 1000)))):
        with pytest.raises(FramingError, match="larger than 64 KiB"):
            feed(reads)


def test_a_head_of_exactly_the_limit_is_accepted() -> None:
    start, end = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ", b"\r\n\r\n"
    filler = b"a" * (MAX_HEAD_BYTES - len(start) - len(end))
    head, body, ended, _ = feed([start + filler + end])
    assert head is not None and (head.status, body, ended) == (200, b"", True)
    assert head.fields == {b"content-length": b"0", b"x": filler}
    with pytest.raises(FramingError, match="larger than 64 KiB"):
        feed([start + filler + b"a" + end])


def test_the_field_limit_is_exact() -> None:
    head, _, ended, _ = feed([b"HTTP/1.1 204 No Content\r\n" + fields(MAX_HEADER_FIELDS) + b"\r\n"])
    assert head is not None and len(head.fields) == MAX_HEADER_FIELDS and ended


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "connection closed before a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed before a response"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "connection closed before a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "short body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "short body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "short body"),
    ],
)
def test_early_eof(data: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message) as info:
        feed([data], eof=True)
    assert "\n" not in str(info.value)


def test_early_eof_on_a_reused_connection() -> None:
    conn, _ = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    conn.request("/again", HOST)
    with pytest.raises(FramingError, match="connection closed before a response"):
        conn.receive(b"")


# --- properties: framing and splits never change the body ----------------------------
def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)] if sizes else len(body)
        out.append(b"%x\r\n%s\r\n" % (len(body[i : i + n]), body[i : i + n]))
        i, k = i + n, k + 1
    return b"".join(out) + b"0\r\n\r\n"


@SEEDED
@given(
    body=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    sizes=st.lists(st.integers(1, 50), max_size=5),
    trailing=st.binary(max_size=20),
    framing=st.sampled_from(["length", "chunked", "close"]),
)
def test_any_split_of_any_framing_gives_the_same_body(
    body: bytes, cuts: list[int], sizes: list[int], trailing: bytes, framing: str
) -> None:
    if framing == "length":
        data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + trailing
    elif framing == "chunked":
        data = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(body, sizes)
            + trailing
        )
    else:
        data = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    head, got, ended, _ = feed(split_at(data, cuts), eof=framing == "close")
    assert head is not None and head.status == 200
    assert (got, ended) == (body, True)


@SEEDED
@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=10))
def test_fuzz_parses_or_raises_framing_error(data: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(FramingError):
        feed(split_at(b"HTTP/1.1 " + data, cuts), eof=True)


HEAD_BYTES = st.sampled_from(
    [
        b"HTTP/1.1 ",
        b"200 ",
        b"100 ",
        b"OK",
        b"\r\n",
        b"\n",
        b"\r",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        b"5",
        b"0",
        b"-",
        b",",
        b" ",
        b":",
        b"hello",
    ]
)


@SEEDED
@given(st.lists(HEAD_BYTES, max_size=25), st.lists(st.integers(0, 1000), max_size=6))
def test_fuzz_structured_heads_parse_the_same_at_any_split(
    parts: list[bytes], cuts: list[int]
) -> None:
    # Whatever the bytes, reading them in pieces never changes the outcome.
    data = b"HTTP/1.1 " + b"".join(parts)

    def outcome(reads: list[bytes]) -> object:
        try:
            return feed(reads, eof=True)
        except FramingError as exc:
            return str(exc)

    assert outcome(split_at(data, cuts)) == outcome([data])
