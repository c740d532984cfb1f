"""What a batch produced: one record per job, successes and failures."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DownloadError


@dataclass(frozen=True, slots=True)
class Success:
    url: str
    path: str
    size: int
    skipped: bool = False  # already complete on disk: nothing was transferred


@dataclass(frozen=True, slots=True)
class Failure:
    url: str
    error: DownloadError


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
