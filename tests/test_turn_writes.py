"""Requests go out together at the end of a loop's turn, not each as it is made.

Sent as each response was read, every request found nginx idle and woke it: on
`small` the server switched context once per file (~18,000 for 20,000 files; curl
~0.1 per file), which cost both sides CPU and cost the run a third of its wall time.
The event-loop engines now hold a turn's requests and write them in one burst just
before the loop waits again: the epoll engine's ``send_unsent`` and the asyncio
engines' ``TurnWrites``.  These pin down that nothing is written before the turn
ends, that the order holds, and that a connection closed meanwhile gets nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midair.api import make_options
from midair.core.actions import Close, Connect, Send
from midair.core.jobs import Job
from midair.engines._aio import TurnWrites
from midair.engines.epoll import State, _Conn, _Loop
from midair.run import Run
from midair.session import Session


@pytest.fixture
def run(tmp_path: Path) -> Run:
    jobs = [Job.from_url("http://127.0.0.1:9/f.bin")]
    return Run(jobs, make_options(str(tmp_path)))


@pytest.fixture
def loop(run: Run) -> Iterator[_Loop]:
    session = Session(run)
    loop = _Loop(session)
    yield loop
    loop.close_all()
    session.close()


@pytest.fixture
def peers() -> Iterator[list[socket.socket]]:
    """The far ends of the connections ``open_conn`` makes, closed after the test."""
    peers: list[socket.socket] = []
    yield peers
    for peer in peers:
        peer.close()


@pytest.fixture
def open_conn(loop: _Loop, peers: list[socket.socket]) -> Callable[[int], socket.socket]:
    return lambda conn_id: opened(loop, conn_id, peers)


def opened(loop: _Loop, conn_id: int, peers: list[socket.socket]) -> socket.socket:
    """An OPEN connection of ``loop`` over a socket pair; the peer's end is returned."""
    ours, peer = socket.socketpair()
    peers.append(peer)
    ours.setblocking(False)
    peer.setblocking(False)
    conn = loop.conns[conn_id] = _Conn(Connect(conn_id, "127.0.0.1", 80, False), [])
    conn.sock, conn.state = ours, State.OPEN
    loop.selector.register(ours, 1, conn)
    return peer


def received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


def test_epoll_sends_a_turns_requests_only_when_the_turn_ends(
    loop: _Loop, open_conn: Callable[[int], socket.socket]
) -> None:
    first, second = open_conn(1), open_conn(2)
    loop.execute([Send(1, b"GET /a"), Send(2, b"GET /b")])
    loop.execute([Send(1, b" GET /c")])
    assert received(first) == b"" and received(second) == b""
    loop.send_unsent()
    assert received(first) == b"GET /a GET /c"
    assert received(second) == b"GET /b"
    assert loop.unsent == []


def test_epoll_sends_nothing_to_a_connection_closed_before_the_turn_ends(
    loop: _Loop, open_conn: Callable[[int], socket.socket]
) -> None:
    peer = open_conn(1)
    loop.execute([Send(1, b"GET /a"), Close(1)])
    loop.send_unsent()
    assert peer.recv(10) == b""  # the end of the stream: closed, nothing sent


def test_epoll_keeps_in_the_write_buffer_what_the_socket_does_not_take(
    loop: _Loop, open_conn: Callable[[int], socket.socket]
) -> None:
    peer = open_conn(1)
    conn = loop.conns[1]
    big = b"x" * (16 << 20)  # far more than a socket pair's buffers
    loop.execute([Send(1, big), Send(1, b"end")])
    loop.send_unsent()
    assert conn.outbuf.endswith(b"end")  # the second waits behind the first's rest
    got = bytearray()
    while len(got) < len(big) + 3:
        got += received(peer)
        loop.flush(conn)
    assert bytes(got) == big + b"end"


class FakeTransport:
    def __init__(self, closing: bool = False, broken: bool = False) -> None:
        self.written: list[bytes] = []
        self.closing, self.broken = closing, broken

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("broken transport")
        self.written.append(data)


def test_turn_writes_write_when_the_loop_turns_in_order(run: Run) -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        writes = TurnWrites(asyncio.get_running_loop(), run)
        one, other = FakeTransport(), FakeTransport()
        writes.write(one, b"a")  # type: ignore[arg-type]
        writes.write(other, b"b")  # type: ignore[arg-type]
        writes.write(one, b"c")  # type: ignore[arg-type]
        before = list(one.written)
        await asyncio.sleep(0)
        assert other.written == [b"b"]
        return before, one.written

    before, after = asyncio.run(main())
    assert before == [] and after == [b"a", b"c"]


def test_turn_writes_skip_a_transport_closed_meanwhile(run: Run) -> None:
    async def main() -> FakeTransport:
        writes = TurnWrites(asyncio.get_running_loop(), run)
        closed = FakeTransport()
        writes.write(closed, b"a")  # type: ignore[arg-type]
        closed.closing = True  # as Close's abort does, later in the same turn
        await asyncio.sleep(0)
        return closed

    assert asyncio.run(main()).written == []
    assert run.error is None


def test_a_write_that_raises_fails_the_run(run: Run) -> None:
    async def main() -> None:
        writes = TurnWrites(asyncio.get_running_loop(), run)
        writes.write(FakeTransport(broken=True), b"a")  # type: ignore[arg-type]
        await asyncio.sleep(0)

    asyncio.run(main())
    assert isinstance(run.error, RuntimeError)
