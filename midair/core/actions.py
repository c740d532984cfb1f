"""What the core asks its driver to do, and what it reports.

Network actions go to the engine, store actions to the store, reports to the
user's display.  All are ``Record``s (immutable, slotted; see records.py): several
are made per file, so they must be cheap to make.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import DownloadError
from .http import Chunk, Piped
from .jobs import Checksum, Pieces
from .records import Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any, Final


# --- network: executed by an engine -------------------------------------------------
class Connect(Record):
    __match_args__ = ("conn", "host", "port", "tls")
    __slots__ = __match_args__

    def __init__(self, conn: int, host: str, port: int, tls: bool) -> None:
        self.conn: Final = conn
        self.host: Final = host
        self.port: Final = port
        self.tls: Final = tls


class Send(Record):
    __match_args__ = ("conn", "data")
    __slots__ = __match_args__

    def __init__(self, conn: int, data: bytes) -> None:
        self.conn: Final = conn
        self.data: Final = data


class Close(Record):
    __match_args__ = ("conn",)
    __slots__ = __match_args__

    def __init__(self, conn: int) -> None:
        self.conn: Final = conn


class StartTls(Record):
    """Begin TLS over the open connection ``conn`` (a tunnel through a proxy), checking
    the certificate against ``server_hostname``; then report ``connected`` again."""

    __match_args__ = ("conn", "server_hostname")
    __slots__ = __match_args__

    def __init__(self, conn: int, server_hostname: str) -> None:
        self.conn: Final = conn
        self.server_hostname: Final = server_hostname


class Resolve(Record):
    """Look ``host`` up for a SOCKS proxy that takes addresses (socks5, socks4), on the
    engine's resolver as a connection's name is (never on its loop): the engine answers
    with the session's ``resolved``."""

    __match_args__ = ("conn", "host")
    __slots__ = __match_args__

    def __init__(self, conn: int, host: str) -> None:
        self.conn: Final = conn
        self.host: Final = host


class Hold(Record):
    """Read nothing more from ``conn`` until ``until`` (the session's clock): a rate limit
    (core/rate.py).  ``Release`` follows, from the batch's timer; an engine that blocks
    may instead sleep until ``until`` before its next read."""

    __match_args__ = ("conn", "until")
    __slots__ = __match_args__

    def __init__(self, conn: int, until: float) -> None:
        self.conn: Final = conn
        self.until: Final = until


class Release(Record):
    """Read ``conn`` again: its ``Hold`` is over."""

    __match_args__ = ("conn",)
    __slots__ = __match_args__

    def __init__(self, conn: int) -> None:
        self.conn: Final = conn


NetAction = Connect | Send | Close | StartTls | Resolve | Hold | Release


# --- files: executed by the store ---------------------------------------------------
class Prepare(Record):
    """Look at ``path`` on disk; answer with ``Batch.prepared``.

    ``by_name``: the job claims ``path`` alone (its first choice, or the file its URL owns),
    so a file made for its URL with other signing parameters is its own (``claims.made_for``).
    """

    __match_args__ = ("download", "path", "url", "checksum", "by_name")
    __slots__ = __match_args__

    def __init__(
        self, download: int, path: str, url: str, checksum: Checksum | None, by_name: bool = False
    ) -> None:
        self.download: Final = download
        self.path: Final = path
        self.url: Final = url
        self.checksum: Final = checksum
        self.by_name: Final = by_name


class Resume(Record):
    """What a previous run left; the fields of the control file.

    ``ranges``: for a file fetched in segments (core/segments.py), the ``[start, end)``
    ranges already on disk, any of them anywhere in the part file; None for a file
    fetched from the start, whose part file holds its first bytes and nothing else.
    """

    __match_args__ = ("url", "size", "etag", "last_modified", "ranges")
    __slots__ = __match_args__

    def __init__(
        self,
        url: str,
        size: int | None,
        etag: str | None,
        last_modified: str | None,
        ranges: tuple[tuple[int, int], ...] | None = None,
    ) -> None:
        self.url: Final = url
        self.size: Final = size
        self.etag: Final = etag
        self.last_modified: Final = last_modified
        self.ranges: Final = ranges

    def as_dict(self) -> dict[str, Any]:
        """The control file's JSON object (``ranges`` only when there are some to keep)."""
        fields = dict(zip(self.__match_args__[:4], self.values()[:4], strict=True))
        if self.ranges is not None:
            fields["ranges"] = [list(r) for r in self.ranges]
        return fields

    def with_ranges(self, ranges: tuple[tuple[int, int], ...]) -> Resume:
        return Resume(self.url, self.size, self.etag, self.last_modified, ranges)


class Open(Record):
    """Open the part file for writing from ``offset`` (cutting off anything after it),
    unless ``record.ranges`` says it is written in segments: then what is there stays.
    ``pieces``: digests to check each piece against as its last byte lands (segments;
    a bad one is answered ``Rejected``)."""

    __match_args__ = ("download", "path", "offset", "record", "pieces")
    __slots__ = __match_args__

    def __init__(
        self, download: int, path: str, offset: int, record: Resume, pieces: Pieces | None = None
    ) -> None:
        self.download: Final = download
        self.path: Final = path
        self.offset: Final = offset
        self.record: Final = record
        self.pieces: Final = pieces


class Checkpoint(Record):
    """Write the control file now: the transfer has run long enough to be worth resuming."""

    __match_args__ = ("download",)
    __slots__ = __match_args__

    def __init__(self, download: int) -> None:
        self.download: Final = download


class Write(Record):
    """Write ``data`` at ``offset``.  A memoryview refers to bytes an engine read: the
    store copies them out (to the file) before the next event, never keeps the view.
    ``Piped`` bytes wait in a pipe: the store moves them before the next event, too."""

    __match_args__ = ("download", "offset", "data")
    __slots__ = __match_args__

    def __init__(self, download: int, offset: int, data: Chunk) -> None:
        self.download: Final = download
        self.offset: Final = offset
        self.data: Final = data

    def __repr__(self) -> str:  # the bytes, not a view's address: logs of two runs compare
        data = self.data if isinstance(self.data, Piped) else bytes(self.data)
        return f"Write(download={self.download}, offset={self.offset}, data={data!r})"


class Publish(Record):
    """Verify, fsync and rename ``path``'s part file to ``target``; answer with ``Batch.published``.

    ``target`` differs from ``path`` when the server named the file
    (Content-Disposition): the part file keeps the URL's name so a re-run can
    find it, and the server's name must not replace a file midair did not
    make unless ``replace``.
    """

    __match_args__ = ("download", "path", "size", "checksum", "url", "target", "replace")
    __slots__ = __match_args__

    def __init__(
        self,
        download: int,
        path: str,
        size: int | None,
        checksum: Checksum | None,
        url: str,
        target: str = "",
        replace: bool = False,
    ) -> None:
        self.download: Final = download
        self.path: Final = path
        self.size: Final = size
        self.checksum: Final = checksum
        self.url: Final = url
        self.target: Final = target
        self.replace: Final = replace


class Save(Record):
    """``Open``, ``Write`` and ``Publish`` in one: a response whose head and whole body came
    in one read (most small files).  Their fields, in their order; the store answers as
    for ``Publish``.  ``data`` follows ``Write``'s rule: copied out before the next event."""

    __match_args__ = (
        "download",
        "path",
        "offset",
        "record",
        "data",
        "size",
        "checksum",
        "url",
        "target",
        "replace",
    )
    __slots__ = __match_args__

    def __init__(
        self,
        download: int,
        path: str,
        offset: int,
        record: Resume,
        data: Chunk,
        size: int,
        checksum: Checksum | None,
        url: str,
        target: str,
        replace: bool,
    ) -> None:
        self.download: Final = download
        self.path: Final = path
        self.offset: Final = offset
        self.record: Final = record
        self.data: Final = data
        self.size: Final = size
        self.checksum: Final = checksum
        self.url: Final = url
        self.target: Final = target
        self.replace: Final = replace

    def split(self) -> tuple[Open, Write]:
        """The ``Open`` and ``Write`` this saves, for a body that did not end after all."""
        return Open(self.download, self.path, self.offset, self.record), Write(
            self.download, self.offset, self.data
        )

    def __repr__(self) -> str:  # the bytes, not a view's address: as ``Write``
        data = self.data if isinstance(self.data, Piped) else bytes(self.data)
        shown = ", ".join(
            f"{name}={data if name == 'data' else getattr(self, name)!r}"
            for name in self.__match_args__
        )
        return f"Save({shown})"


class Discard(Record):
    """Remove the part and control files: their bytes are known to be wrong."""

    __match_args__ = ("download", "path")
    __slots__ = __match_args__

    def __init__(self, download: int, path: str) -> None:
        self.download: Final = download
        self.path: Final = path


class Rejected(Record):
    """The store's word that bytes ``[start, end)`` it wrote fail their piece's digest:
    it no longer counts them as written; the driver hands it to ``Batch.rejected``."""

    __match_args__ = ("download", "start", "end", "reason")
    __slots__ = __match_args__

    def __init__(self, download: int, start: int, end: int, reason: str) -> None:
        self.download: Final = download
        self.start: Final = start
        self.end: Final = end
        self.reason: Final = reason


StoreAction = Prepare | Open | Checkpoint | Write | Publish | Save | Discard


# --- reports: for progress displays and results -------------------------------------
class Started(Record):
    __match_args__ = ("download", "url", "path", "offset", "size")
    __slots__ = __match_args__

    def __init__(self, download: int, url: str, path: str, offset: int, size: int | None) -> None:
        self.download: Final = download
        self.url: Final = url
        self.path: Final = path
        self.offset: Final = offset
        self.size: Final = size


class Retrying(Record):
    __match_args__ = ("download", "url", "reason", "delay", "attempt")
    __slots__ = __match_args__

    def __init__(self, download: int, url: str, reason: str, delay: float, attempt: int) -> None:
        self.download: Final = download
        self.url: Final = url
        self.reason: Final = reason
        self.delay: Final = delay
        self.attempt: Final = attempt


class Finished(Record):
    __match_args__ = ("download", "url", "path", "size", "skipped")
    __slots__ = __match_args__

    def __init__(self, download: int, url: str, path: str, size: int, skipped: bool) -> None:
        self.download: Final = download
        self.url: Final = url
        self.path: Final = path
        self.size: Final = size
        self.skipped: Final = skipped


class Failed(Record):
    __match_args__ = ("download", "url", "error")
    __slots__ = __match_args__

    def __init__(self, download: int, url: str, error: DownloadError) -> None:
        self.download: Final = download
        self.url: Final = url
        self.error: Final = error


Report = Started | Retrying | Finished | Failed
Action = NetAction | StoreAction | Report | Rejected  # Rejected: the store's, for the core


class Disk(StrEnum):
    """What the store found at a download's path (``OnDisk.kind``).  A StrEnum: the
    values are the words control files, tests and messages have always used."""

    FRESH = "fresh"  # nothing there
    PARTIAL = "partial"  # a part file, maybe with its resume record
    COMPLETE = "complete"  # a finished file midair made, or whose checksum matches
    TAKEN = "taken"  # a file midair made for another URL: a duplicate is numbered past it
    FOREIGN = "foreign"  # a file midair did not make: never overwritten unless asked


class OnDisk(Record):
    """The store's answer to ``Prepare``.

    ``kind``: a ``Disk``; ``offset`` is the part file's or the complete file's size,
    ``resume`` a part file's record.
    """

    __match_args__ = ("kind", "offset", "resume")
    __slots__ = __match_args__

    def __init__(self, kind: Disk | str, offset: int = 0, resume: Resume | None = None) -> None:
        self.kind: Final = Disk(kind)  # a word that is no Disk raises here, not later
        self.offset: Final = offset
        self.resume: Final = resume


class ConnectionFailure(Record):
    """Why an engine lost a connection, already classified at the I/O boundary.

    ``unresolved``: the host's name did not resolve, and ``reason`` is the
    resolver's; the batch names the host, and a final failure (the name does not
    exist) ends every job of the host at once.
    """

    __match_args__ = ("reason", "retryable", "tls", "unresolved")
    __slots__ = __match_args__

    def __init__(
        self, reason: str, retryable: bool = True, tls: bool = False, unresolved: bool = False
    ) -> None:
        self.reason: Final = reason
        self.retryable: Final = retryable
        self.tls: Final = tls
        self.unresolved: Final = unresolved
