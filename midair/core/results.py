"""What a batch produced: one record per job, successes and failures."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import DownloadError
from .records import MutableRecord, Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final


class Success(Record):
    __match_args__ = ("url", "path", "size", "skipped")
    __slots__ = __match_args__

    def __init__(self, url: str, path: str, size: int, skipped: bool = False) -> None:
        self.url: Final = url
        self.path: Final = path
        self.size: Final = size
        self.skipped: Final = skipped  # already complete on disk: nothing was transferred


class Failure(Record):
    __match_args__ = ("url", "error")
    __slots__ = __match_args__

    def __init__(self, url: str, error: DownloadError) -> None:
        self.url: Final = url
        self.error: Final = error


class Results(MutableRecord):
    """Every job ends in exactly one of the two lists.  ``len`` counts every job, and
    iterating gives every record, successes first.  A journaled library run's results are
    read from its journal instead (``midair.journal.JournalResults``: same API, no memory
    per file)."""

    __match_args__ = ("successes", "failures")
    __slots__ = __match_args__

    def __init__(
        self, successes: list[Success] | None = None, failures: list[Failure] | None = None
    ) -> None:
        self.successes = [] if successes is None else successes
        self.failures = [] if failures is None else failures

    def __len__(self) -> int:
        return len(self.successes) + len(self.failures)

    def __bool__(self) -> bool:  # a record, true as before ``__len__`` came (ask ``ok``)
        return True

    def __iter__(self) -> Iterator[Success | Failure]:
        yield from self.successes
        yield from self.failures

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.successes]
