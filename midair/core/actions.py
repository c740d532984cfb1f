"""What the core asks its driver to do, and what it reports.

Network actions go to the engine, store actions to the store, reports to the
user's display.  All are frozen, slotted records: cheap to make, safe to pass
between threads and processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DownloadError
from .jobs import Checksum


# --- network: executed by an engine -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connect:
    conn: int
    host: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    conn: int


NetAction = Connect | Send | Close


# --- files: executed by the store ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Prepare:
    """Look at ``path`` on disk; answer with ``Batch.prepared``."""

    download: int
    path: str
    url: str
    checksum: Checksum | None


@dataclass(frozen=True, slots=True)
class Resume:
    """What a previous run left; the fields of the control file."""

    url: str
    size: int | None
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class Open:
    """Open the part file for writing from ``offset`` (cutting off anything after it)."""

    download: int
    path: str
    offset: int
    record: Resume


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Write the control file now: the transfer has run long enough to be worth resuming."""

    download: int


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` at ``offset``.  A memoryview refers to bytes an engine read: the
    store copies them out (to the file) before the next event, never keeps the view."""

    download: int
    offset: int
    data: bytes | memoryview

    def __repr__(self) -> str:  # the bytes, not a view's address: logs of two runs compare
        return f"Write(download={self.download}, offset={self.offset}, data={bytes(self.data)!r})"


@dataclass(frozen=True, slots=True)
class Publish:
    """Verify, fsync and rename ``path``'s part file to ``target``; answer with ``Batch.published``.

    ``target`` differs from ``path`` when the server named the file
    (Content-Disposition): the part file keeps the URL's name so a re-run can
    find it, and the server's name must not replace a file midair did not
    make unless ``replace``.
    """

    download: int
    path: str
    size: int | None
    checksum: Checksum | None
    url: str
    target: str = ""
    replace: bool = False


@dataclass(frozen=True, slots=True)
class Discard:
    """Remove the part and control files: their bytes are known to be wrong."""

    download: int
    path: str


StoreAction = Prepare | Open | Checkpoint | Write | Publish | Discard


# --- reports: for progress displays and results -------------------------------------
@dataclass(frozen=True, slots=True)
class Started:
    download: int
    url: str
    path: str
    offset: int
    size: int | None


@dataclass(frozen=True, slots=True)
class Retrying:
    download: int
    url: str
    reason: str
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Finished:
    download: int
    url: str
    path: str
    size: int
    skipped: bool


@dataclass(frozen=True, slots=True)
class Failed:
    download: int
    url: str
    error: DownloadError


Report = Started | Retrying | Finished | Failed
Action = NetAction | StoreAction | Report


@dataclass(frozen=True, slots=True)
class OnDisk:
    """The store's answer to ``Prepare``.

    ``kind`` is ``fresh`` (nothing there), ``partial`` (a part file of ``offset``
    bytes with its ``resume`` record), ``complete`` (a finished file of ``offset``
    bytes that midair made, or whose checksum matches) or ``foreign`` (a file
    midair did not make: never overwritten unless the user says so).
    """

    kind: str
    offset: int = 0
    resume: Resume | None = None


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    """Why an engine lost a connection, already classified at the I/O boundary."""

    reason: str
    retryable: bool = True
    tls: bool = False
