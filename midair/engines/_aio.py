"""The event-loop parts the ``asyncio`` and ``reactor`` engines share (imports asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.actions import Connect, Resolve
from ..run import Run
from ._resolver import AddrInfo, Answer, Resolver, addresses_of, socks_address

if TYPE_CHECKING:
    import ssl

_P = TypeVar("_P", bound=asyncio.BaseProtocol)

LOOPS = ("asyncio", "uvloop")


def check_loop(loop: str) -> str:
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {loop!r}")
    return loop


def run_on_loop(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a fresh asyncio loop, or on uvloop (the extra) when asked."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def finished_on_stop(run: Run) -> asyncio.Future[None]:
    """A future of the running loop that a stop request resolves, from any thread."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    run.on_stop(lambda: _call_soon(loop, resolve))
    return finished


class TurnWrites:
    """Requests written together once the loop's turn ends, not each as it is made: the
    epoll engine's ``send_unsent``, for the same reason (one wake-up of the server per
    turn, not per file).  A callback made with ``call_soon`` runs after every callback of
    this turn's readiness."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run: Run) -> None:
        self.loop, self.run = loop, run
        self.pending: list[tuple[asyncio.WriteTransport, bytes]] = []

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append((transport, data))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        try:
            for transport, data in pending:
                if not transport.is_closing():  # closed since: the core knows
                    transport.write(data)
        except Exception as exc:  # a callback's exception would only be logged
            self.run.fail(exc)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing waits
        loop.call_soon_threadsafe(callback)


async def guarded(run: Run, work: Awaitable[None]) -> None:
    """Await ``work``; an exception is the run's internal error, never a lost task's log line."""
    try:
        await work
    except Exception as exc:
        run.fail(exc)


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], _P],
    resolver: Resolver,
    action: Connect,
    tls: ssl.SSLContext | None,
) -> tuple[asyncio.Transport, _P]:
    """``create_connection`` to ``action``'s host, its name looked up by ``resolver``
    (not the loop's default executor: it would resolve a few names at a time, each
    connection on its own), each address tried in turn."""
    error = OSError(errno.EHOSTUNREACH, f"no address for {action.host}")
    for *_, address in await resolve_off_loop(loop, resolver, action.host, action.port):
        try:
            return await loop.create_connection(
                factory,
                address[0],
                address[1],
                ssl=tls,
                server_hostname=action.host if tls else None,
            )
        except OSError as exc:
            error = exc
    raise error


async def resolve_off_loop(
    loop: asyncio.AbstractEventLoop, resolver: Resolver, host: str, port: int
) -> list[AddrInfo]:
    """``host``'s addresses (or its lookup's error raised), never waited for on the loop."""
    return addresses_of(await answer_off_loop(loop, resolver, host, port))


async def answer_off_loop(
    loop: asyncio.AbstractEventLoop, resolver: Resolver, host: str, port: int = 0
) -> Answer:
    """``host``'s answer: at once for a literal or a known name, else from a resolver
    thread, which hands it over with ``call_soon_threadsafe``."""
    answered: asyncio.Future[Answer] = loop.create_future()
    answer = resolver.answer(
        host, port, lambda later: _call_soon(loop, functools.partial(_settle, answered, later))
    )
    return answer if answer is not None else await answered


async def tell_socks_address(
    loop: asyncio.AbstractEventLoop, resolver: Resolver, action: Resolve
) -> tuple[int, str | None, str]:
    """The arguments of the session's ``resolved`` for ``action``."""
    answer = await answer_off_loop(loop, resolver, action.host)
    return (action.conn, *socks_address(action.host, answer))


def _settle(future: asyncio.Future[Answer], answer: Answer) -> None:
    if not future.done():  # not cancelled meanwhile
        future.set_result(answer)
