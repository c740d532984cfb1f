"""What to fetch and how: jobs, options, and aria2's input-file format."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import InputError
from .naming import relative_path
from .urls import URL, parse_url

CHECKSUM_ALGORITHMS = {"sha-256": "sha256", "sha-1": "sha1", "sha-512": "sha512", "md5": "md5"}
_HEX_LENGTH = {"sha256": 64, "sha1": 40, "sha512": 128, "md5": 32}


@dataclass(frozen=True, slots=True)
class Checksum:
    """An expected digest: ``algorithm`` is a hashlib name, ``hexdigest`` lower case."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``sha-256=HEX`` (aria2's spelling; ``sha256=`` is accepted too)."""
        algo, sep, digest = text.strip().partition("=")
        algo = algo.lower()
        algo = CHECKSUM_ALGORITHMS.get(algo, algo.replace("-", ""))
        digest = digest.strip().lower()
        if not sep or algo not in _HEX_LENGTH:
            raise ValueError(f"checksum {text!r}: expected ALGO=HEX with ALGO one of "
                             f"{', '.join(CHECKSUM_ALGORITHMS)}")
        if len(digest) != _HEX_LENGTH[algo] or not re.fullmatch(r"[0-9a-f]+", digest):
            raise ValueError(f"checksum {text!r}: not a {algo} hex digest")
        return cls(algo, digest)


@dataclass(frozen=True, slots=True)
class Job:
    """One file to fetch.  ``out`` and ``subdir`` are validated relative paths."""

    url: URL
    out: str | None = None
    subdir: str | None = None
    checksum: Checksum | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> Job:
        try:
            return cls(parse_url(url), **kwargs)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InputError(f"{url}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a batch needs to know.  Defaults match the CLI's."""

    directory: str = "."
    concurrency: int = 100
    per_host: int = 6
    retries: int = 5
    timeout: float = 30.0
    max_retry_wait: float = 60.0
    retry_base: float = 0.25
    max_redirects: int = 10
    headers: tuple[tuple[str, str], ...] = ()
    overwrite: bool = False
    auto_rename: bool = False
    checksum: Checksum | None = None
    max_filesize: int | None = None
    lowest_speed: int = 0
    lowest_speed_time: float = 10.0
    insecure: bool = False
    ca_certificate: str | None = None
    user_agent: str = "midair"
    fsync: bool = True  # False: publish without waiting for stable storage (tmpfs, scratch runs)
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1")
        if self.retries < 0 or self.timeout <= 0 or self.max_retry_wait < 0:
            raise InputError("retries, timeout and max-retry-wait must not be negative")


def parse_header(text: str) -> tuple[str, str]:
    """Parse ``Name: value`` as given to ``-H`` or ``header=``."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ValueError(f"header {text!r}: expected 'Name: value'")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {text!r}: value contains a line break")
    return name, value.strip()


def parse_input_file(text: str, source: str) -> list[Job]:
    """Parse aria2's input-file format: a URL line, then indented ``key=value`` lines.

    Errors name ``source`` and the line number, so a user can fix the file.
    """
    jobs: list[Job] = []
    for url_line, url, opts in _entries(text, source):
        try:
            jobs.append(_job(url, opts))
        except _LineError as exc:
            raise InputError(f"{source}:{exc.line}: {exc.message}") from None
        except ValueError as exc:
            raise InputError(f"{source}:{url_line}: {url}: {exc}") from None
    return jobs


class _LineError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _entries(text: str, source: str) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    current: tuple[int, str, list[tuple[int, str]]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                raise InputError(f"{source}:{number}: option line before any URL")
            current[2].append((number, stripped))
            continue
        if current is not None:
            yield current
        # aria2 allows several tab-separated mirrors; midair takes the first.
        current = (number, stripped.split("\t")[0], [])
    if current is not None:
        yield current


def _job(url: str, opts: Iterable[tuple[int, str]]) -> Job:
    values: dict[str, object] = {}
    headers: list[tuple[str, str]] = []
    for number, opt in opts:
        key, sep, value = opt.partition("=")
        key = key.strip()
        try:
            if not sep:
                raise ValueError(f"expected key=value, got {opt!r}")
            if key == "out":
                values["out"] = relative_path(value.strip())
            elif key == "dir":
                values["subdir"] = relative_path(value.strip())
            elif key == "checksum":
                values["checksum"] = Checksum.parse(value)
            elif key == "header":
                headers.append(parse_header(value))
            else:
                raise ValueError(f"unknown option {key!r}")
        except ValueError as exc:
            raise _LineError(number, str(exc)) from None
    return Job(parse_url(url), headers=tuple(headers), **values)  # type: ignore[arg-type]
