"""Sending one planned response: latency, pacing, flow control and the ending.

Callbacks and timers on the transport, not a coroutine per response: a server
holding thousands of slow connections then costs one small object and at most
one timer each. The pump obeys two brakes at once:

- *pacing*: a throttled response may have sent ``rate * elapsed`` body bytes at
  any moment, topped up every ``TICK`` or, for slow rates, once ``MIN_SLICE``
  bytes are due (at most ``MAX_TICK`` apart), so thousands of slow connections
  cost few wake-ups; ``trickle=S`` sends one byte per S seconds;
- *flow control*: the transport's ``pause_writing`` stops the pump until
  ``resume_writing``, so an unthrottled response goes out in big zero-copy
  slices exactly as fast as the peer reads, never piling up in memory.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable

from midair.serve.responder import Ending, Plan

__all__ = ["CHUNK", "MAX_TICK", "MIN_SLICE", "STALL_LIMIT", "TICK", "BodySender"]

CHUNK = 256 * 1024
TICK = 0.025
MIN_SLICE = 8192
MAX_TICK = 0.2
STALL_LIMIT = 120.0
_DRAIN_POLL = 0.005


class BodySender:
    """Drives one response over a transport; the protocol forwards flow control.

    ``done`` is called once a response ended normally (the connection may serve
    another request). Fault endings close, reset or stall the connection
    themselves; ``cancel`` stops everything when the connection is lost.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        plan: Plan,
        done: Callable[[BodySender], None],
    ) -> None:
        self.plan = plan
        self.sent = 0  # body bytes written, framing excluded
        self._loop, self._transport, self._done = loop, transport, done
        self._pos = plan.start
        self._paused = False
        self._sending = False  # head written, body under way
        self.stalled = False  # ended by stall_after: waiting for the client to leave
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0

    def start(self) -> None:
        if self.plan.latency > 0:
            self._later(self.plan.latency, self._begin)
        else:
            self._begin()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        """Carry on at once unless a timer (latency, pacing, ending) will anyway."""
        self._paused = False
        if self._sending and self._timer is None:
            self._pump()

    def cancel(self) -> None:
        self._sending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._timer = self._loop.call_later(delay, callback)

    def _begin(self) -> None:
        self._timer = None
        self._write_head()
        self._t0 = self._loop.time()
        self._sending = True
        self._pump()

    def _write_head(self) -> None:
        self._transport.write(self.plan.head)

    def _allowance(self) -> int:
        """Body bytes pacing lets us send now."""
        if self.plan.trickle is not None:
            return 1
        if self.plan.rate <= 0:
            return sys.maxsize
        return int(self.plan.rate * (self._loop.time() - self._t0)) - self.sent

    def _pump(self) -> None:
        self._timer = None
        budget = min(self.plan.stop_at - self.sent, self._allowance())
        while budget > 0 and not self._paused and not self._transport.is_closing():
            written = self._emit(budget)
            if written == 0:  # a file under --root shrank: nothing honest left to send
                self.plan.ending, self.plan.stop_at = Ending.CLOSE, self.sent
                break
            budget -= written
        if self._transport.is_closing():
            return
        if self.sent >= self.plan.stop_at:
            self._finish()
        elif not self._paused:
            self._later(self._delay(), self._pump)

    def _delay(self) -> float:
        """Seconds until the next slice is worth sending."""
        if self.plan.trickle is not None:
            return max(self.plan.trickle, 0.001)
        return min(max(TICK, MIN_SLICE / self.plan.rate), MAX_TICK)

    def _emit(self, budget: int) -> int:
        """Write one slice of the body (framed if chunked); its length, 0 at EOF."""
        assert self.plan.body is not None
        data = self.plan.body.read(self._pos, min(budget, CHUNK))
        if not data:
            return 0
        if self.plan.chunked:
            self._transport.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self._transport.write(data)
        self._pos += len(data)
        self.sent += len(data)
        return len(data)

    def _finish(self) -> None:
        self._sending = False
        ending = self.plan.ending
        if ending is Ending.NORMAL:
            if self.plan.chunked and self.plan.send_body:
                self._transport.write(b"0\r\n\r\n")
            self._done(self)
        elif ending is Ending.CLOSE:
            self._transport.close()
        elif ending is Ending.RESET:
            self._reset()
        elif ending is Ending.GOAWAY:
            self._drop_connection()
        else:
            self.stalled = True
            self._later(STALL_LIMIT, self._transport.close)

    def _drop_connection(self) -> None:
        """HTTP/1.1 has no GOAWAY: the drop is a clean close (HTTP/2 overrides this)."""
        self._transport.close()

    def _reset(self) -> None:
        """Let what was written reach the peer, then RST: close with SO_LINGER 0."""
        self._timer = None
        if self._transport.get_write_buffer_size() > 0:
            self._later(_DRAIN_POLL, self._reset)
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()
