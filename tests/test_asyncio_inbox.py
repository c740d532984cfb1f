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
