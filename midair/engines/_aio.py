"""The event-loop parts the ``asyncio`` and ``reactor`` engines share (imports asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..run import Run

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


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing waits
        loop.call_soon_threadsafe(callback)


async def guarded(run: Run, work: Awaitable[None]) -> None:
    """Await ``work``; an exception is the run's internal error, never a lost task's log line."""
    try:
        await work
    except Exception as exc:
        run.fail(exc)
