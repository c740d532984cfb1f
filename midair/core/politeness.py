"""How many connections one host gets, adapting to how it answers.

The batch asks a host's policy for its ``limit`` before opening (or keeping) a
connection to it, and tells it what happened: ``on_congestion`` when the host
pushes back (a 429 or 503, a timeout, a connection error), ``on_success`` when a
response arrived whole.  The shape is that of a transport's congestion control
(aioquic's ``QuicCongestionControl``): the batch owns the connections, the policy
only the number, so another rule (a fixed limit, a delay-based one) is one class
with the same two methods.  No clock here: a policy counts events, never time.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Protocol

    class ConcurrencyPolicy(Protocol):
        """The connections one host may have open; the batch never exceeds ``limit``."""

        limit: int

        def on_success(self) -> bool:
            """A response arrived whole; True if that raised ``limit``."""

        def on_congestion(self) -> None: ...


__all__ = ["Aimd"]


class Aimd:
    """Additive increase, multiplicative decrease, between 1 and ``ceiling`` (--per-host).

    A push-back halves the limit (floor 1); a window of ``limit`` successes in a row
    at the current limit adds one back, as TCP's congestion avoidance does per round
    trip.  Starts at the ceiling: a host that never pushes back costs nothing."""

    __slots__ = ("_successes", "ceiling", "limit")

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._successes = 0

    def on_success(self) -> bool:
        if self.limit >= self.ceiling:  # the common case: nothing to recover
            return False
        self._successes += 1
        if self._successes < self.limit:
            return False
        self.limit += 1
        self._successes = 0
        return True

    def on_congestion(self) -> None:
        self.limit = max(1, self.limit // 2)
        self._successes = 0
