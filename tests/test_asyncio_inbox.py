"""The asyncio engine's inbox: chunks handed over uncopied, in order, with flow control."""

from __future__ import annotations

import asyncio

import pytest

from midair.engines.asyncio_engine import INBOX_LIMIT, _Inbox


class _Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused, self.pauses = True, self.pauses + 1

    def resume_reading(self) -> None:
        self.paused = False


def _inbox() -> tuple[_Inbox, _Transport]:
    inbox, transport = _Inbox(asyncio.get_running_loop()), _Transport()
    inbox.connection_made(transport)  # type: ignore[arg-type]
    return inbox, transport


def test_chunks_come_out_whole_and_in_order_then_the_end() -> None:
    async def main() -> None:
        inbox, _ = _inbox()
        first, second = b"a" * 300_000, b"b" * 10
        inbox.data_received(first)
        inbox.data_received(second)
        inbox.eof_received()
        assert await inbox.read() is first  # the transport's own object: no copy
        assert await inbox.read() is second
        assert await inbox.read() == b""

    asyncio.run(main())


def test_a_reader_waits_for_the_next_chunk() -> None:
    async def main() -> None:
        inbox, _ = _inbox()
        reading = asyncio.ensure_future(inbox.read())
        await asyncio.sleep(0)
        assert not reading.done()
        inbox.data_received(b"late")
        assert await reading == b"late"

    asyncio.run(main())


def test_the_socket_pauses_past_the_limit_and_resumes_once_read() -> None:
    async def main() -> None:
        inbox, transport = _inbox()
        inbox.data_received(b"x" * INBOX_LIMIT)
        assert not transport.paused  # a reader keeping up never pauses it
        inbox.data_received(b"y")
        assert transport.paused and transport.pauses == 1
        await inbox.read()
        assert not transport.paused

    asyncio.run(main())


def test_a_broken_connection_raises_after_what_arrived() -> None:
    async def main() -> None:
        inbox, _ = _inbox()
        inbox.data_received(b"kept")
        inbox.connection_lost(ConnectionResetError("reset"))
        assert await inbox.read() == b"kept"
        with pytest.raises(ConnectionResetError):
            await inbox.read()

    asyncio.run(main())


# --- under a rate limit (core/rate.py) ------------------------------------------------------
def test_under_a_rate_limit_a_chunk_goes_out_in_pieces_uncopied() -> None:
    async def main() -> None:
        inbox, _ = _inbox()
        inbox.most = 4
        inbox.data_received(b"abcdefghij")
        pieces = [await inbox.read() for _ in range(3)]
        assert [bytes(p) for p in pieces] == [b"abcd", b"efgh", b"ij"]
        assert all(isinstance(p, memoryview) for p in pieces[:2])  # views of the chunk
        assert inbox.held == 0

    asyncio.run(main())


def test_a_held_inbox_pauses_its_socket_and_gives_nothing_until_released() -> None:
    async def main() -> None:
        inbox, transport = _inbox()
        inbox.data_received(b"waiting")
        inbox.hold(True)
        assert transport.paused
        reading = asyncio.ensure_future(inbox.read())
        await asyncio.sleep(0)
        assert not reading.done()
        inbox.hold(False)
        assert await reading == b"waiting"
        assert not transport.paused

    asyncio.run(main())


def test_a_release_does_not_resume_a_socket_paused_for_a_full_inbox() -> None:
    async def main() -> None:
        inbox, transport = _inbox()
        inbox.data_received(b"x" * (INBOX_LIMIT + 1))
        inbox.hold(True)
        inbox.hold(False)
        assert transport.paused  # still over the limit until read
        await inbox.read()
        assert not transport.paused

    asyncio.run(main())


def test_the_end_of_a_held_stream_waits_for_its_release() -> None:
    async def main() -> None:
        inbox, _ = _inbox()
        inbox.hold(True)
        inbox.eof_received()
        reading = asyncio.ensure_future(inbox.read())
        await asyncio.sleep(0)
        assert not reading.done()
        inbox.hold(False)
        assert await reading == b""

    asyncio.run(main())
