"""Progress counters, fed by the same actions the store and displays see.

Displays read a ``Tracker`` from their own refresh thread: every field is a
plain int or a small dict replaced whole, so a reader never sees a torn value
worth worrying about.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MethodType

from .actions import Action, Failed, Finished, Retrying, Save, Started, Write
from .records import MutableRecord
from .results import Failure, Results, Success

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any


class Transfer(MutableRecord):
    """One transfer in the air: ``done`` of ``size`` bytes (None: not known yet)."""

    __match_args__ = ("url", "path", "done", "size")
    __slots__ = __match_args__

    def __init__(self, url: str, path: str, done: int, size: int | None) -> None:
        self.url = url
        self.path = path
        self.done = done
        self.size = size


class Tracker(MutableRecord):
    """Totals for a whole batch, and the transfers now in the air (``active``) when
    someone ``follows`` them: a display of them, or a shard's home that shows them."""

    __match_args__ = (
        *("jobs", "bytes_done", "files_done", "files_failed", "retries"),
        *("active", "results", "follows", "keeps", "keeps_failures"),
    )
    __slots__ = __match_args__

    def __init__(
        self,
        jobs: int = 0,
        bytes_done: int = 0,
        files_done: int = 0,
        files_failed: int = 0,
        retries: int = 0,
        active: dict[int, Transfer] | None = None,
        results: Results | None = None,
        follows: bool = True,
        keeps: bool = True,
        keeps_failures: bool = True,
    ) -> None:
        """``keeps``: add a ``Success`` to ``results`` per finished file (False: count only);
        ``keeps_failures``: a ``Failure`` per failed one (False: results kept elsewhere, as
        a journaled library run's are, in its journal)."""
        self.jobs = jobs
        self.bytes_done = bytes_done
        self.files_done = files_done
        self.files_failed = files_failed
        self.retries = retries
        self.active: dict[int, Transfer] = {} if active is None else active
        self.results = Results() if results is None else results
        self.follows = follows
        self.keeps = keeps
        self.keeps_failures = keeps_failures

    def observe(self, action: Action) -> None:
        count = self._count(type(action))
        if count is not None:
            count(self, action)

    def counts(self, kind: type) -> bool:
        """Whether ``observe`` counts actions of ``kind``.  A driver that dispatches by
        kind can leave the others out: most of a file's actions count nothing."""
        return self._count(kind) is not None

    def counter(self, kind: type) -> Callable[[Any], None] | None:
        """``observe`` for actions of ``kind`` alone, looked up once (None: it counts
        nothing): for a driver that dispatches by kind."""
        count = self._count(kind)
        return None if count is None else MethodType(count, self)

    def _count(self, kind: type) -> Callable[[Tracker, Any], None] | None:
        if kind is Started and not self.follows:  # it only begins an ``active`` entry
            return None
        return _COUNTERS.get(kind)

    def _wrote(self, action: Write | Save) -> None:
        self.bytes_done += len(action.data)
        transfer = self.active.get(action.download)
        if transfer is not None:
            transfer.done += len(action.data)  # segments land anywhere: count, not place

    def _started(self, action: Started) -> None:
        self.active[action.download] = Transfer(action.url, action.path, action.offset, action.size)

    def _retrying(self, action: Retrying) -> None:
        self.retries += 1

    def _finished(self, action: Finished) -> None:
        self.active.pop(action.download, None)
        self.files_done += 1
        if self.keeps:
            self.results.successes.append(
                Success(action.url, action.path, action.size, action.skipped)
            )

    def _failed(self, action: Failed) -> None:
        self.active.pop(action.download, None)
        self.files_failed += 1
        if self.keeps_failures:
            self.results.failures.append(Failure(action.url, action.error))

    def add_progress(self, written: int, positions: Mapping[int, int]) -> None:
        """Merge progress counted elsewhere: bytes written, active downloads' positions."""
        self.bytes_done += written
        for download, done in positions.items():
            transfer = self.active.get(download)
            if transfer is not None:
                transfer.done = done

    @property
    def bytes_expected(self) -> int:
        """Known remaining bytes of the active transfers plus what is done."""
        return self.bytes_done + sum(
            t.size - t.done for t in list(self.active.values()) if t.size is not None
        )


# What each kind of action counts; the other kinds count nothing.
_COUNTERS: dict[type, Callable[[Tracker, Any], None]] = {
    Write: Tracker._wrote,
    Save: Tracker._wrote,
    Started: Tracker._started,
    Retrying: Tracker._retrying,
    Finished: Tracker._finished,
    Failed: Tracker._failed,
}
