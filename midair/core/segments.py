"""Segments: one file of known size fetched as byte ranges over several connections.

Pure bookkeeping (issue 10).  A ``Plan`` cuts a file into ``Piece`` ranges, hands a
piece to each connection that asks (``take``), counts the bytes each one writes at
its offsets (``wrote``), and when nothing is left waiting, a connection that asks
takes the back half of the largest range still in flight (work stealing), so the
tail never waits on one slow connection.  A connection that fails gives its piece
back (``release``) with what it wrote kept.

How a file becomes a plan (the first request decides, no HEAD): the first
connection asks ``Range: bytes=0-`` with the download's usual headers.  A 206 whose
Content-Range names the total size proves the server serves ranges: the plan is made
from that size and the first connection keeps piece 0, reading on into the pieces
after it while nobody else has taken them (``wrote`` absorbs them).  A 200, or a
size unknown, is an ordinary one-connection download.

Every later range request carries If-Range with the first response's validator;
``judge`` says what its answer means: keep it, restart the whole file (another
version: never splice), or stop splitting (the server ignored Range there).

Which URL serves a piece is a choice (``Sources``): one URL by default; mirrors
(issue 10's second half) plug in a ``Sources`` that picks by measured speed.
"""

from __future__ import annotations

import itertools
from collections import Counter

from .records import MutableRecord, Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final, Protocol

    from .urls import URL

    class Sources(Protocol):
        """Which URL serves a piece: asked each time a connection takes one."""

        def pick(self, piece: Piece, owner: int) -> str: ...


DEFAULT_MIN_SPLIT_SIZE = 20 << 20  # aria2's --min-split-size default
# A range smaller than this is not worth a new request: stealing leaves it alone.  Small,
# so the tail on a slow connection (a slow mirror) is short: 32 KiB at most at its pace.
MIN_STEAL = 16 << 10


class OneSource:
    """Every piece from the same URL: what a file without mirrors does."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def pick(self, piece: Piece, owner: int) -> str:
        return self.url


class Piece(MutableRecord):
    """Bytes ``[start, end)`` of the file; ``done`` of them written from ``start``.

    ``owner`` is the connection fetching it (None: waiting), ``source`` the URL it
    asked; ``end`` moves down when another connection steals the back half.
    """

    __slots__ = ("done", "end", "owner", "source", "start")
    __match_args__ = ("start", "end", "done", "owner")

    def __init__(self, start: int, end: int, done: int = 0, owner: int | None = None) -> None:
        self.start, self.end, self.done, self.owner = start, end, done, owner
        self.source: str | None = None

    @property
    def next(self) -> int:
        """The next byte to fetch."""
        return self.start + self.done

    @property
    def remaining(self) -> int:
        return self.end - self.next

    def range_header(self) -> str:
        """The Range asked for it: closed, so a stolen-from answer can be cut short."""
        return f"bytes={self.next}-{self.end - 1}"


class Verdict(Record):
    """What a range answer means: ``keep`` it, ``restart`` the file, or ``degrade``
    (stop splitting, give the piece back).  ``reason`` says why, for the log."""

    __slots__ = ("action", "reason")
    __match_args__ = ("action", "reason")

    def __init__(self, action: str, reason: str = "") -> None:
        self.action: Final = action
        self.reason: Final = reason


KEEP = Verdict("keep")


def piece_count(size: int, split: int, min_split_size: int) -> int:
    """How many pieces a file of ``size`` is cut into: aria2's rule, no piece
    under ``min_split_size`` (so a file under twice that is not split)."""
    return max(1, min(split, size // max(1, min_split_size)))


def cut(size: int, count: int) -> list[tuple[int, int]]:
    """``[start, end)`` of ``count`` near-equal pieces covering ``size`` bytes."""
    bounds = [size * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def gaps(size: int, finished: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What is left of ``[0, size)`` once the ``finished`` ranges (any order, may
    overlap, from a control file) are taken out."""
    left, at = [], 0
    for start, end in sorted(finished):
        if start > at:
            left.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        left.append((at, size))
    return [(s, e) for s, e in left if s < e]


class Plan:
    """The pieces of one file and who fetches each (see the module docstring)."""

    def __init__(
        self,
        size: int,
        split: int,
        min_split_size: int = DEFAULT_MIN_SPLIT_SIZE,
        finished: list[tuple[int, int]] | None = None,
        sources: Sources | None = None,
    ) -> None:
        self.size = size
        self.split = split
        self.sources = sources
        self.finished = [(s, min(e, size)) for s, e in finished or [] if s < min(e, size)]
        self.pieces = self._initial_pieces(piece_count(size, split, min_split_size))

    def _initial_pieces(self, count: int) -> list[Piece]:
        """The gaps a resume leaves, the largest cut further until there are
        ``count`` pieces or none is worth cutting."""
        pieces = [Piece(s, e) for s, e in gaps(self.size, self.finished)]
        while 0 < len(pieces) < count:
            largest = max(pieces, key=lambda p: p.remaining)
            if largest.remaining < 2 * MIN_STEAL:
                break
            pieces.append(self._halve(largest))
        pieces.sort(key=lambda p: p.start)
        return pieces

    # --- handing out work ---------------------------------------------------------
    def take(self, owner: int) -> Piece | None:
        """A piece for connection ``owner``: the first one waiting, else the back
        half of the largest in flight; None when nothing is worth a request."""
        piece = next((p for p in self.pieces if p.owner is None and p.remaining), None)
        piece = piece or self._steal()
        if piece is not None:
            piece.owner = owner
            piece.source = self.sources.pick(piece, owner) if self.sources else None
        return piece

    def _steal(self) -> Piece | None:
        busy = [p for p in self.pieces if p.owner is not None]
        victim = max(busy, key=lambda p: p.remaining, default=None)
        if victim is None or victim.remaining < 2 * MIN_STEAL:
            return None
        return self._add(self._halve(victim))

    def _halve(self, piece: Piece) -> Piece:
        """Cut ``piece`` at the middle of what it has left; the back half, unowned."""
        middle = piece.next + piece.remaining // 2
        back = Piece(middle, piece.end)
        piece.end = middle
        return back

    def _add(self, piece: Piece) -> Piece:
        self.pieces.append(piece)
        self.pieces.sort(key=lambda p: p.start)
        return piece

    @property
    def connections(self) -> int:
        """How many connections are worth having now (within -s): one per piece in
        flight or waiting, and one more per piece in flight with half worth stealing."""
        waiting = busy = stealable = 0
        for p in self.pieces:
            if p.owner is None:
                waiting += p.remaining > 0
            elif p.remaining:
                busy += 1
                stealable += p.remaining >= 2 * MIN_STEAL
        return min(self.split, busy + waiting + stealable)

    # --- what a connection reports ------------------------------------------------
    def wrote(self, piece: Piece, count: int) -> int:
        """``count`` more bytes arrived for ``piece``; how many to write at
        ``piece.next`` (the rest belongs to another piece: stolen, or finished).
        Fewer than ``count`` kept: the answer runs past what this connection may
        write, so the caller ends the exchange (closes the connection) and takes again."""
        kept = min(count, piece.remaining)
        piece.done += kept
        if not piece.remaining and kept < count:
            kept += self._absorb(piece, count - kept)
        return kept

    def _absorb(self, piece: Piece, count: int) -> int:
        """An answer reading on past its piece takes the next piece if nobody has it
        (the first connection's open ``bytes=0-`` answer)."""
        after = next((p for p in self.pieces if p.start == piece.end), None)
        if after is None or after.owner is not None or after.done:
            return 0
        self.pieces.remove(after)
        piece.end = after.end
        return self.wrote(piece, count)

    def redo(self, start: int, end: int) -> set[str]:
        """Bytes ``[start, end)`` proved bad: fetch them again.  Returns the sources of
        the pieces that wrote them (to blame).  A piece in flight keeps its identity and
        its next byte (its connection writes on where it was); what each piece had
        written, less the bad bytes, counts as finished."""
        blamed = {p.source for p in self.pieces if p.done and p.start < end and start < p.next}
        finished = [*self.finished, *((p.start, p.next) for p in self.pieces if p.done)]
        self.finished = [kept for s, e in finished for kept in subtract(s, e, start, end)]
        for p in self.pieces:
            p.start, p.done = p.next, 0
        self.pieces = [p for p in self.pieces if p.remaining or p.owner is not None]
        self._add(Piece(start, end))
        return {source for source in blamed if source is not None}

    def release(self, piece: Piece) -> None:
        """The connection fetching ``piece`` is gone: the piece waits again, what
        it wrote kept (its own retry rules decided this is not a failure)."""
        piece.owner = None

    def degrade(self) -> None:
        """The server ignored Range for a later connection: one connection from now
        on (what is in flight finishes; no new connection is asked for)."""
        self.split = 1

    # --- state ----------------------------------------------------------------------
    @property
    def bytes_done(self) -> int:
        """Bytes on disk: what a resumed transfer starts its progress from."""
        return sum(end - start for start, end in self.written())

    @property
    def complete(self) -> bool:
        return all(not p.remaining for p in self.pieces)

    def written(self) -> list[tuple[int, int]]:
        """Every range on disk, merged: what the control file records for a resume."""
        return merged(self.finished + [(p.start, p.next) for p in self.pieces if p.done])


class Split:
    """One download fetched in segments: its ``plan``, the connections working on it
    (``conns``, by id: each owns a piece, or is connecting to take one), and how many
    more it asked for (``wanted``).  ``opened``: the store has the part file open for
    this run (its ``Open`` went out with the first accepted answer).

    Its ``sources`` are the URL in use and the job's mirrors: each new connection goes to
    the one ``pick`` prefers (one not yet measured, else the fastest), and a source
    that fails for good is dropped for this file, its reason kept (``drop``).
    """

    __slots__ = (
        *("checkpoint_at", "conns", "opened", "plan", "wanted", "origin", "sources", "dropped"),
        *("validators", "rates", "using", "failures"),
    )

    def __init__(
        self,
        plan: Plan,
        checkpoint_at: float,
        sources: list[URL],
        validator: str | None,
        opened: bool = False,
    ) -> None:
        self.plan = plan
        self.conns: set[int] = set()
        self.wanted = 0
        self.opened = opened
        self.checkpoint_at = checkpoint_at  # when to write the control file next
        self.origin = sources[0]  # where the first answer came from: its validator rules
        self.sources = sources  # those still usable
        self.dropped: list[tuple[str, str]] = []  # (URL, reason), in the order dropped
        # What each source's answers must carry (If-Range): the first's from its first
        # answer, a mirror's from its own first range (servers' validators differ).
        self.validators: dict[str, str | None] = {sources[0].text: validator}
        self.rates: dict[str, float] = {}  # bytes/s of each source's last finished range
        self.using: Counter[str] = Counter()  # connections (and wanted ones) per source
        self.failures: Counter[str] = Counter()  # failed ranges per source

    def more_wanted(self) -> int:
        """How many more connections to ask for: what the plan can use, less those it
        has or asked for; none once no source is left."""
        if not self.sources:
            return 0
        return max(0, self.plan.connections - len(self.conns) - self.wanted)

    def pick(self) -> URL:
        """The source for one more connection: one nobody has tried yet, else the fastest
        measured (those not measured yet count as slowest), fewest connections first."""
        using, rates = self.using, self.rates

        def preference(url: URL) -> tuple[bool, float, int]:
            untried = url.text not in rates and not using[url.text]
            return untried, rates.get(url.text, 0.0), -using[url.text]

        return max(self.sources, key=preference)

    def better_than(self, url: URL) -> bool:
        """Whether a connection to another source would do better than one to ``url``:
        one untried, or one measured at least twice as fast."""
        best = self.pick()
        if best == url:
            return False
        rate = self.rates.get(best.text)
        return rate is None or rate >= 2 * self.rates.get(url.text, 0.0)

    def drop(self, url: URL, reason: str) -> None:
        if url in self.sources:
            self.sources.remove(url)
            self.dropped.append((url.text, reason))

    def measured(self, url: URL, count: int, seconds: float) -> None:
        if seconds > 0:
            self.rates[url.text] = count / seconds


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (any order, may overlap or touch) as sorted, disjoint ranges."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(s: int, e: int, start: int, end: int) -> list[tuple[int, int]]:
    """``[s, e)`` less ``[start, end)``: none, one or two ranges."""
    return [(a, b) for a, b in ((s, min(e, start)), (max(s, end), e)) if a < b]


def judge(
    piece: Piece,
    status: int,
    content_range: tuple[int, int, int | None] | None,
    validator: str | None,
    first_validator: str | None,
    size: int,
) -> Verdict:
    """What a later range answer means, given the first answer's validator and size.

    ``content_range`` is (first, last, total) as parsed from the field.  Another
    validator or size is another version: restart the file.  A 200 with the same
    version is a server ignoring Range here: stop splitting.
    """
    if first_validator and validator and validator != first_validator:
        return Verdict("restart", "the validator changed between ranges")
    if status == 200:
        return Verdict("degrade", "the server ignored Range on another connection")
    if status != 206 or content_range is None:
        return Verdict("restart", f"a range was answered with {status}")
    first, _last, total = content_range
    if total is not None and total != size:
        return Verdict("restart", f"the size changed from {size} to {total}")
    if first != piece.next:
        return Verdict("restart", f"a range starting at {first}, not {piece.next}")
    return KEEP


def recorded(value: object, size: int) -> list[tuple[int, int]] | None:
    """The finished ranges a control file's ``ranges`` holds (``[[start, end], ...]``),
    or None when it is not a list of ranges inside ``[0, size)``: a control file is
    read back from disk, and a range it cannot vouch for restarts the file."""
    if not isinstance(value, list):
        return None
    ranges = [_one_range(item, size) for item in value]
    return None if None in ranges else [r for r in ranges if r is not None]


def _one_range(item: object, size: int) -> tuple[int, int] | None:
    if not (isinstance(item, list) and len(item) == 2):
        return None
    start, end = item
    if type(start) is not int or type(end) is not int or not 0 <= start < end <= size:
        return None
    return start, end
