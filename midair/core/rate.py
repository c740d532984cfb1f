"""Rate limits and request spacing: when a connection may be read, and a host asked, again.

``--max-rate`` bounds each transfer (a file, as aria2's --max-download-limit: all its
connections together under ``-s``, its stream over HTTP/2), ``--max-overall-rate``
the whole batch, each by a token bucket (``Bucket``) filled at the rate and spent by
the bytes received.  An engine has read a chunk before the core counts it, so a bucket
may go into debt: the connection is then held (``Hold``) until the debt is paid back,
and released (``Release``) by the batch's timer.  Bytes received by any time ``T`` are at most
``depth + rate * T`` plus one read, so the long-run rate holds whatever the read size;
``read_size`` keeps that one read small next to a second's worth (``READS_PER_SECOND``),
so even a short transfer takes as long as its rate says.

The overall bucket holds only the connection whose bytes overdrew it: each other
connection is held at its own next read, so no connection overdraws it by more
than one read, and they take turns as their holds end.  A small file comes whole in
one read, often on a connection its end closes, where no hold can reach: its bytes
count all the same, and while the overall bucket is in debt no new connection or
stream opens (``overdrawn``), so many small files keep to the rate too.

A read is counted by transfer first (``transfer``: the batch tells whose bytes they
were) and then as a whole (``received``): a connection is held until the debt of the
most overdrawn transfer it carried is paid back.  The other connections of a file in
segments are held at their own next reads.  An HTTP/2 connection carries several
transfers: no stream passes its rate, but streams that share a connection unevenly
may get less than theirs (the connection is held for the busiest).

``--host-delay`` (``Spacing``) books each host's requests at least that far apart.  A
new connection books its first request's turn as it opens, so connections open one per
turn rather than all at once to sit idle; connecting takes time, so the turn is taken
at the request, its gap counted from then, unless another was booked meanwhile.

Sharding engines give each shard an equal part of ``--max-overall-rate``
(``_shards.plan_shards``), so the sum holds across processes or computers.
No clock here: every call takes ``now``.
"""

from __future__ import annotations

import heapq

from .actions import Hold, Release

__all__ = ["READS_PER_SECOND", "Bucket", "Spacing", "Throttle", "read_size"]

READS_PER_SECOND = 32  # a limited connection's reads are at most 1/32 of its second
LEAST_READ = 1024  # below this, a read costs more in calls than a rate is worth


def read_size(per_connection: int, overall: int) -> int | None:
    """The most bytes an engine should read at once from a limited connection (None: no
    limit, read as much as it likes)."""
    rates = [rate for rate in (per_connection, overall) if rate]
    if not rates:
        return None
    return max(LEAST_READ, min(rates) // READS_PER_SECOND)


class Bucket:
    """Bytes that may arrive, ``rate`` per second, at most ``depth`` saved up."""

    __slots__ = ("depth", "level", "rate", "stamp")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.depth = rate / READS_PER_SECOND  # what may come at once after a quiet spell
        self.level = self.depth
        self.stamp = now

    def spend(self, count: int, now: float) -> float:
        """Take ``count`` bytes; when reading may go on: ``now`` at once, later in debt."""
        self.level = min(self.depth, self.level + (now - self.stamp) * self.rate) - count
        self.stamp = now
        return self.paid(now)

    def paid(self, now: float) -> float:
        """When the debt is paid back: ``now`` if there is none."""
        return now if self.level >= 0 else max(now, self.stamp - self.level / self.rate)


class Throttle:
    """The batch's rate limits: which connection to hold after a read, and until when."""

    __slots__ = (
        *("_buckets", "_due", "_held", "_overall", "_owed", "_wake"),
        *("overall", "per_transfer"),
    )

    def __init__(self, per_transfer: int, overall: int) -> None:
        self.per_transfer = per_transfer  # bytes/s, 0: none
        self.overall = overall
        self._overall: Bucket | None = None  # made at the first bytes, with their ``now``
        self._buckets: dict[int, Bucket] = {}  # by transfer (the batch's download id)
        self._held: dict[int, float] = {}  # connection -> the end of its current hold
        self._due: list[tuple[float, int]] = []  # (end, connection), a heap; stale ones stay
        self._owed: dict[int, float] = {}  # connection -> its transfers' latest debt end
        self._wake = 0.0  # when the batch's timer comes for new connections (``overdrawn``)

    def transfer(self, conn: int, transfer: int, count: int, now: float) -> None:
        """``count`` bytes of ``transfer`` (a file: all its connections' bytes, its streams')
        came in the read of ``conn`` being counted: its --max-rate.  Then ``received``."""
        if self.per_transfer:
            bucket = self._buckets.get(transfer)
            if bucket is None:
                bucket = self._buckets[transfer] = Bucket(self.per_transfer, now)
            self._owed[conn] = max(self._owed.get(conn, now), bucket.spend(count, now))

    def received(self, conn: int, count: int, now: float) -> Hold | None:
        """The read of ``count`` bytes on ``conn`` is counted: a ``Hold`` if it must pause
        (for a transfer's debt or the batch's), else None."""
        until = self._owed.pop(conn, now)
        if self.overall:
            until = max(until, self._spend_overall(count, now))
        if until <= now:
            return None
        self._held[conn] = until
        heapq.heappush(self._due, (until, conn))
        return Hold(conn, until)

    def received_closed(self, count: int, now: float) -> None:
        """``count`` bytes came on a connection that ended with them (no hold reaches it):
        they count against the overall rate all the same."""
        if self.overall:
            self._spend_overall(count, now)

    def overdrawn(self, now: float) -> bool:
        """Whether all transfers together are over --max-overall-rate now: then no new
        connection or stream opens, and the batch's timer comes when the debt is paid."""
        if self._overall is None:
            return False
        paid = self._overall.paid(now)
        if paid <= now:
            return False
        if paid != self._wake:  # one timer per debt, however often the batch asks
            self._wake = paid
            heapq.heappush(self._due, (paid, -1))  # no connection: releases nothing
        return True

    def _spend_overall(self, count: int, now: float) -> float:
        if self._overall is None:
            self._overall = Bucket(self.overall, now)
        return self._overall.spend(count, now)

    def releases(self, now: float) -> list[Release]:
        """The holds that ended by ``now``, as actions."""
        due, held, out = self._due, self._held, []
        while due and due[0][0] <= now:
            until, conn = heapq.heappop(due)
            if held.get(conn) == until:  # not closed, nor held again since
                del held[conn]
                out.append(Release(conn))
        return out

    def next_deadline(self) -> float | None:
        """When the next hold ends (maybe one since forgotten: a timer call too many)."""
        return self._due[0][0] if self._due else None

    def forget(self, conn: int) -> None:
        """``conn`` is closed: no release for it, nor debt left to its next read."""
        self._held.pop(conn, None)
        self._owed.pop(conn, None)

    def ended(self, transfer: int) -> None:
        """``transfer`` finished or failed: its bucket goes (a retry keeps it)."""
        self._buckets.pop(transfer, None)


class Spacing:
    """``--host-delay``: each host's requests at least ``delay`` seconds apart."""

    __slots__ = ("_next", "delay")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._next: dict[str, float] = {}  # host name -> when its next request may go

    def free_at(self, host: str) -> float:
        """When ``host`` may next be asked (0: whenever)."""
        return self._next.get(host, 0.0)

    def book(self, host: str, now: float) -> float:
        """Take ``host``'s next turn: when this request may go (``now`` or later)."""
        at = max(now, self._next.get(host, 0.0))
        self._next[host] = at + self.delay
        return at

    def take(self, host: str, turn: float | None, now: float) -> float:
        """When a request may go: at once on the ``turn`` booked for it (when its connection
        opened) if no turn was booked after it, its gap counted from ``now``; else (or
        without one) at the next turn, as ``book``."""
        if turn is not None and self._next.get(host) == turn + self.delay:
            self._next[host] = max(now, turn) + self.delay
            return max(now, turn)
        return self.book(host, now)
