"""What a batch produced: one record per job, successes and failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .errors import DownloadError
from .records import Record


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


@dataclass(slots=True)
class Results:
    """Every job ends in exactly one of the two lists."""

    successes: list[Success] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.successes]
