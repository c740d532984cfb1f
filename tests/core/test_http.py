"""The h11 wrapper: every response fed whole, a byte at a time, and with trailing data."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.http import (
    MAX_HEADER_FIELDS,
    Body,
    ClientConnection,
    End,
    Event,
    FramingError,
    Head,
)

HOST = [("Host", "example.com")]

# Deterministic: the same examples on every run (no example database either).
SEEDED = settings(derandomize=True, database=None, deadline=None)


def connection() -> ClientConnection:
    conn = ClientConnection()
    conn.request("/", HOST)
    return conn


def feed(conn: ClientConnection, chunks: list[bytes], eof: bool = False
         ) -> tuple[Head | None, bytes, bool]:
    """Feed every chunk (then EOF) and fold the events into (head, body, ended)."""
    events: list[Event] = []
    for chunk in chunks:
        events += conn.receive(chunk)
    if eof:
        events += conn.receive(b"")
    heads = [e for e in events if isinstance(e, Head)]
    ends = [e for e in events if isinstance(e, End)]
    assert len(heads) <= 1 and len(ends) <= 1
    if heads:
        assert events[0] == heads[0], "the head comes first"
    if ends:
        assert events[-1] == ends[0], "End comes last"
    body = b"".join(e.data for e in events if isinstance(e, Body))
    return (heads[0] if heads else None), body, bool(ends)


def splits(data: bytes) -> dict[str, list[bytes]]:
    return {"whole": [data], "bytewise": [data[i:i + 1] for i in range(len(data))]}


# (name, response bytes, needs EOF to end, status, body, reusable afterwards)
CASES = [
    ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello",
     False, 200, b"hello", True),
    ("empty", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, 200, b"", True),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n",
     False, 200, b"hello world", True),
    ("close-delimited", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
     True, 200, b"until the end", False),
    ("http/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", False),
    ("close after length", b"HTTP/1.1 206 Partial\r\nContent-Length: 3\r\n"
     b"Connection: close\r\n\r\nabc", False, 206, b"abc", False),
    ("informational first", b"HTTP/1.1 100 Continue\r\n\r\n"
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", False, 404, b"nope", True),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, 200, b"ok", True),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "data", "eof", "status", "body", "reusable"), CASES, ids=IDS)
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_responses(name: str, data: bytes, eof: bool, status: int, body: bytes,
                   reusable: bool, how: str) -> None:
    conn = connection()
    head, got, ended = feed(conn, splits(data)[how], eof)
    assert head is not None and head.status == status
    assert got == body
    assert ended
    assert conn.reusable is reusable


@pytest.mark.parametrize(("name", "data", "eof", "status", "body", "reusable"),
                         [c for c in CASES if not c[2]], ids=[c[0] for c in CASES if not c[2]])
@pytest.mark.parametrize("how", ["together", "later"])
def test_trailing_data_is_not_part_of_the_response(name: str, data: bytes, eof: bool,
                                                   status: int, body: bytes,
                                                   reusable: bool, how: str) -> None:
    # Bytes after a complete response break framing: the server must not get to answer
    # the next request on this connection, whichever path (fast or h11) parsed the body.
    conn = connection()
    junk = b"HTTP/1.1 200 OK\r\ngarbage"
    head, got, ended = feed(conn, [data + junk] if how == "together" else [data, junk])
    assert head is not None and head.status == status
    assert (got, ended) == (body, True)
    assert not conn.reusable


def test_a_body_ended_by_eof_never_makes_the_connection_reusable() -> None:
    # HTTP/1.1 without "Connection: close": h11 calls the exchange DONE once EOF ends the
    # body, but the peer is gone; reusing it failed the next download's attempt.
    conn = connection()
    head, got, ended = feed(conn, [b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], eof=True)
    assert head is not None and (got, ended) == (b"until the end", True)
    assert not conn.reusable


def test_head_accessors() -> None:
    conn = connection()
    head, _, _ = feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\n"
                             b"ETag: \"\xe9\"\r\n\r\n"])
    assert head is not None
    assert head.get(b"x-a") == "1, 2"
    assert head.count(b"x-a") == 2
    assert head.get(b"etag") == '"\xe9"'  # latin-1, never a decode error
    assert head.get(b"missing") is None and head.count(b"missing") == 0
    assert all(name == name.lower() for name, _ in head.headers)


def test_request_bytes() -> None:
    conn = ClientConnection()
    data = conn.request("/a%20b?x=1", [("Host", "h:8080"), ("Range", "bytes=5-")])
    assert data.startswith(b"GET /a%20b?x=1 HTTP/1.1\r\n")
    assert b"Host: h:8080\r\n" in data and b"Range: bytes=5-\r\n" in data
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1


def test_keep_alive_cycle() -> None:
    conn = connection()
    feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"])
    assert conn.reusable
    conn.next_cycle()
    conn.request("/second", HOST)
    assert not conn.reusable
    assert feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"])[1:] == (b"b", True)
    assert conn.reusable


def test_not_reusable_mid_response() -> None:
    conn = connection()
    conn.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na")
    assert not conn.reusable


# --- failures: always FramingError, with a message a user can read --------------------
BAD = [
    ("not http", b"SSH-2.0-OpenSSH\r\n\r\n", "malformed response"),
    ("bad status", b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed response"),
    ("bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     "malformed response"),
    ("conflicting lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     "malformed response"),
    ("negative length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed response"),
    ("huge head", b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024), "larger than 64 KiB"),
    ("many fields", b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * (MAX_HEADER_FIELDS + 1) + b"\r\n",
     f"{MAX_HEADER_FIELDS + 1} fields"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_framing_errors(name: str, data: bytes, message: str, how: str) -> None:
    conn = connection()
    with pytest.raises(FramingError, match=message):
        feed(conn, splits(data)[how])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "connection closed before a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed before a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", "short body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "short body"),
    ],
)
def test_early_eof(data: bytes, message: str) -> None:
    conn = connection()
    with pytest.raises(FramingError, match=message) as info:
        feed(conn, [data], eof=True)
    assert "\n" not in str(info.value)


def test_early_eof_on_a_reused_connection() -> None:
    conn = connection()
    feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"])
    conn.next_cycle()
    conn.request("/again", HOST)
    with pytest.raises(FramingError, match="connection closed before a response"):
        conn.receive(b"")


# --- properties: framing and splits never change the body ----------------------------
def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)] if sizes else len(body)
        out.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
        i, k = i + n, k + 1
    return b"".join(out) + b"0\r\n\r\n"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@SEEDED
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10_000), max_size=20),
       sizes=st.lists(st.integers(1, 50), max_size=5), trailing=st.binary(max_size=20),
       framing=st.sampled_from(["length", "chunked", "close"]))
def test_any_split_of_any_framing_gives_the_same_body(
        body: bytes, cuts: list[int], sizes: list[int], trailing: bytes, framing: str) -> None:
    if framing == "length":
        data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body + trailing
    elif framing == "chunked":
        data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunked(body, sizes) + trailing)
    else:
        data = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    conn = connection()
    head, got, ended = feed(conn, split_at(data, cuts), eof=framing == "close")
    assert head is not None and head.status == 200
    assert (got, ended) == (body, True)


@SEEDED
@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=10))
def test_fuzz_parses_or_raises_framing_error(data: bytes, cuts: list[int]) -> None:
    conn = connection()
    with contextlib.suppress(FramingError):
        feed(conn, split_at(b"HTTP/1.1 " + data, cuts), eof=True)
