"""Progress counters, fed by the same actions the store and displays see.

Displays read a ``Tracker`` from their own refresh thread: every field is a
plain int or a small dict replaced whole, so a reader never sees a torn value
worth worrying about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .actions import Action, Failed, Finished, Retrying, Started, Write
from .results import Failure, Results, Success


@dataclass(slots=True)
class Transfer:
    url: str
    path: str
    done: int
    size: int | None


@dataclass
class Tracker:
    """Totals for a whole batch, and the transfers now in the air."""

    jobs: int = 0
    bytes_done: int = 0
    files_done: int = 0
    files_failed: int = 0
    retries: int = 0
    active: dict[int, Transfer] = field(default_factory=dict)
    results: Results = field(default_factory=Results)

    def observe(self, action: Action) -> None:
        kind = type(action)
        if kind is Write:
            self.bytes_done += len(action.data)  # type: ignore[union-attr]
            transfer = self.active.get(action.download)  # type: ignore[union-attr]
            if transfer is not None:
                transfer.done = action.offset + len(action.data)  # type: ignore[union-attr]
        elif kind is Started:
            assert isinstance(action, Started)
            self.active[action.download] = Transfer(
                action.url, action.path, action.offset, action.size)
        elif kind is Retrying:
            self.retries += 1
        elif kind is Finished:
            assert isinstance(action, Finished)
            self.active.pop(action.download, None)
            self.files_done += 1
            self.results.successes.append(
                Success(action.url, action.path, action.size, action.skipped))
        elif kind is Failed:
            assert isinstance(action, Failed)
            self.active.pop(action.download, None)
            self.files_failed += 1
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
            t.size - t.done for t in list(self.active.values()) if t.size is not None)
