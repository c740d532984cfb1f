"""The batch journal: one SQLite file per download directory, every job's state in it.

It lives beside the store (the I/O layer; the core stays pure) and is owned by the
surface that starts a run (``api.Downloader``), never by an engine or a shard: every
engine's reports reach the parent's ``Run``, and the journal hears them there
(``Run.recorders``), so the processes and dask engines need nothing of their own.

Rows are keyed by the URL as given; ``name`` (the output path) is indexed too, so a
caller can ask which job claimed a name without holding every name in memory
(``claim``, ``by_name``).  Writes are buffered and committed in groups
(``GROUP_ROWS`` rows or ``GROUP_SECONDS``, whichever comes first, and at ``close``):
never a commit per event.  A ``done`` row is written only from a ``Finished`` report,
which the batch makes after the store published the file under its final name, so a
SIGKILL loses at most the last group and never leaves a row pointing at a partial file.

The journal is locked for its run (``flock`` on the file, released by the OS on any
exit, SIGKILL included): a second run on the same journal refuses at once.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from .core import transfer
from .core.actions import Failed, Finished
from .core.claims import made_for
from .core.errors import DownloadError, InputError
from .core.jobs import Job, Options
from .core.progress import Tracker
from .core.results import Failure, Results, Success

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NAME = ".midair-journal.sqlite"  # inside the download directory
GROUP_ROWS = 2000  # rows per transaction at most
GROUP_SECONDS = 0.5  # and no row waits longer than this for its commit (while reports come)
# A library run's results are held in memory up to this many jobs, read from the journal
# past it (``Journal.hold_results``): a small run's stay as they were, a run of millions
# costs nothing per file.
HELD = 10_000
COUNT_EVERY = 10_000  # jobs read between two records of the run's count (``sort_out``)
QUEUED, ACTIVE, DONE, FAILED = "queued", "active", "done", "failed"
STATES = (QUEUED, ACTIVE, DONE, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    url TEXT PRIMARY KEY,
    name TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    status INTEGER,
    bytes INTEGER NOT NULL DEFAULT 0,
    size INTEGER,
    etag TEXT,
    last_modified TEXT,
    updated REAL NOT NULL,
    run INTEGER,
    skipped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_name ON jobs (name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    pid INTEGER, started REAL, ended REAL, jobs INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 0
);
"""
# One statement for every state change: later columns keep what an earlier row knew.
_UPSERT = """
INSERT INTO jobs (url, name, state, reason, status, bytes, size, updated, run, skipped)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (url) DO UPDATE SET
    name = COALESCE(excluded.name, name), state = excluded.state,
    reason = excluded.reason, status = excluded.status,
    bytes = MAX(bytes, excluded.bytes), size = COALESCE(excluded.size, size),
    updated = excluded.updated, run = excluded.run, skipped = excluded.skipped
"""
# A job an earlier run settled (done, or failed and not retried) is this run's too, skipped.
_SETTLED = "UPDATE jobs SET run = ?, skipped = 1 WHERE url = ?"
_COLUMNS = {"run": "INTEGER", "skipped": "INTEGER NOT NULL DEFAULT 0"}  # added since v0.1
_RUNNING = "SELECT pid, started FROM runs WHERE ended IS NULL ORDER BY rowid DESC"
_LATEST = "SELECT jobs, active FROM runs ORDER BY rowid DESC"
_Row = tuple[str, str | None, str, str | None, int | None, int, int | None, float, int, bool]


def journal_path(directory: str, given: str | None = None) -> str:
    """Where a run's journal is: ``given`` (``--journal FILE``), else inside ``directory``."""
    return given if given else os.path.join(directory, DEFAULT_NAME)


class Journal:
    """One open, locked journal.  Not thread-safe: the run's reports arrive on one thread
    (the session's, or the sharded engines' drain), as ``Run.report`` requires anyway."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._lock_fd = _lock(path)
        try:
            self._db = _connect(path)
            if os.path.basename(path) == DEFAULT_NAME:  # in its download directory
                _follow_directory(self._db, directory + os.sep)
            started = (os.getpid(), time.time())
            row = self._db.execute("INSERT INTO runs (pid, started) VALUES (?, ?)", started)
            self._run: int = row.lastrowid or 0
            self._db.commit()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._rows: list[_Row] = []
        self._settled: list[tuple[int, str]] = []  # (run, url) of jobs an earlier run settled
        self._flushed_at = time.monotonic()
        self._tracker: Tracker | None = None  # the run's counts, for its transfers in flight
        self._concurrency = 0
        self._holds: int | None = None  # results held up to this many jobs (None: not ours)
        self._ended = 0  # this run's jobs ended or settled, while it holds results

    # --- what the run tells it -----------------------------------------------------------
    def begin(self, jobs: int) -> None:
        """The run's batch has ``jobs`` jobs: those without a done or failed row are queued
        (no row per queued job: at thousands of files per second, a row per job's end is
        the journal's whole cost)."""
        with self._db:
            self._db.execute("UPDATE runs SET jobs = ? WHERE rowid = ?", (jobs, self._run))

    def watch(self, tracker: Tracker, concurrency: int) -> None:
        """Record the run's transfers in flight from its ``tracker`` at each group (see
        ``in_flight``), not from a report per start: a quiet run makes no ``Started``
        (from a sharded run's workers, 20,000 of them would cross a pipe: ~7% of the CPU
        of a run of small files)."""
        self._tracker, self._concurrency = tracker, concurrency

    def hold_results(self, limit: int | None = None) -> None:
        """The watched tracker's results (a library run's): its lists up to ``limit`` jobs
        (``HELD``), then this journal's rows (``results``) from the job past it on."""
        self._holds = HELD if limit is None else limit
        if self._holds < 0:
            self._read_results()

    def _count_ended(self) -> None:
        if self._holds is not None:
            self._ended += 1
            if self._ended > self._holds:
                self._read_results()

    def _read_results(self) -> None:
        """Let go of the results held so far: the journal has them (``JournalResults``)."""
        self._holds = None
        tracker = self._tracker
        if tracker is not None:
            tracker.keeps = tracker.keeps_failures = False
            tracker.results = self.results()

    def in_flight(self) -> int:
        """The run's transfers in the air: counted where its tracker follows them (a display
        does), else bounded by what is known without a report per start: its jobs taken and
        not ended, at most ``concurrency`` (--max-concurrent) of them."""
        tracker = self._tracker
        if tracker is None:
            return 0
        if tracker.follows:
            return len(tracker.active)
        unended = tracker.jobs - tracker.files_done - tracker.files_failed
        return max(0, min(unended, self._concurrency))

    def finished(self, action: Finished) -> None:
        size = action.size
        self._add((action.url, action.path, DONE, None, None, size, size), action.skipped)
        self._count_ended()

    def failed(self, action: Failed) -> None:
        error = action.error
        if isinstance(error, EarlierFailure):  # its row says so already, with its reason
            return
        self._add((action.url, None, FAILED, error.reason, error.status, 0, None))
        self._count_ended()

    def results(self) -> JournalResults:
        """This run's results, read from the journal once it is closed (see
        ``JournalResults``)."""
        return JournalResults(self.path, self._run)

    def recorders(self) -> dict[type, Callable[[Any], None]]:
        """The reports the journal hears, for ``Run.recorders``: a job's end alone."""
        return {Finished: self.finished, Failed: self.failed}

    def settled(self, url: str) -> None:
        """``url``'s job is this run's, settled by an earlier run's row (``sort_out``)."""
        self._settled.append((self._run, url))
        self._maybe_flush()
        self._count_ended()

    def _add(
        self,
        row: tuple[str, str | None, str, str | None, int | None, int, int | None],
        skipped: bool = False,
    ) -> None:
        self._rows.append((*row, time.time(), self._run, skipped))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if (
            len(self._rows) + len(self._settled) >= GROUP_ROWS
            or time.monotonic() - self._flushed_at >= GROUP_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows as one transaction."""
        with self._db:
            if self._rows:
                self._db.executemany(_UPSERT, self._rows)
            if self._settled:
                self._db.executemany(_SETTLED, self._settled)
            self._db.execute(
                "UPDATE runs SET active = ? WHERE rowid = ?", (self.in_flight(), self._run)
            )
        self._rows, self._settled = [], []
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Commit what is buffered, mark the run ended, release the lock."""
        try:
            self.flush()
            with self._db:
                self._db.execute(
                    "UPDATE runs SET ended = ?, active = 0 WHERE rowid = ?",
                    (time.time(), self._run),
                )
            self._db.close()
        finally:
            os.close(self._lock_fd)

    # --- what a run asks it ----------------------------------------------------------------
    def empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM jobs LIMIT 1").fetchone() is None

    def get(self, url: str) -> Entry | None:
        row = self._db.execute(f"SELECT {_ENTRY} FROM jobs WHERE url = ?", (url,)).fetchone()
        return None if row is None else Entry(*row)

    def rekey(self, old: str, new: str) -> None:
        """Key ``old``'s row by ``new`` from now on (a signed URL's new signature): the next
        run finds it at once.  Committed with the next group, like every other write."""
        self._db.execute("UPDATE OR IGNORE jobs SET url = ? WHERE url = ?", (new, old))

    def by_name(self, name: str) -> Entry | None:
        row = self._db.execute(f"SELECT {_ENTRY} FROM jobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else Entry(*row)

    def claim(self, name: str, url: str) -> bool:
        """Whether ``url`` may have ``name``: no other job's row holds it (then it is ours)."""
        other = self.by_name(name)
        if other is not None and other.url != url:
            return False
        self._add((url, name, QUEUED if other is None else other.state, None, None, 0, None))
        return True


_ENTRY = "url, name, state, reason, status, bytes, size, updated"


class Entry:
    """One job's row, as read back."""

    __slots__ = ("bytes", "name", "reason", "size", "state", "status", "updated", "url")

    def __init__(
        self,
        url: str,
        name: str | None,
        state: str,
        reason: str | None,
        status: int | None,
        bytes: int,
        size: int | None,
        updated: float = 0.0,  # wall-clock time of the row's last change
    ) -> None:
        self.url, self.name, self.state, self.reason = url, name, state, reason
        self.status, self.bytes, self.size, self.updated = status, bytes, size, updated


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        return db
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses at most the last commits
    db.executescript(_SCHEMA)
    _add_columns(db)
    return db


def _add_columns(db: sqlite3.Connection) -> None:
    """A journal an older midair made gets the columns added since (its rows: no run)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    with db:
        for name, kind in _COLUMNS.items():
            if name not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")


def _follow_directory(db: sqlite3.Connection, root: str) -> None:
    """Rows name files by absolute path: a journal inside a download directory that was
    copied or moved since (its recorded ``root`` differs) has its names moved along, once,
    so that they name the files beside it (``sort_out``'s look-ups by name, ``--verify``,
    results).  A journal kept elsewhere (``--journal FILE``) names what it named."""
    row = db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
    with db:
        if row is not None and row[0] != root:
            old = row[0]
            db.execute(
                "UPDATE jobs SET name = ? || substr(name, ?) WHERE substr(name, 1, ?) = ?",
                (root, len(old) + 1, len(old), old),
            )
        if row is None or row[0] != root:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('root', ?)", (root,))


def _lock(path: str) -> int:
    """The run's lock on the journal file itself (flock, not SQLite's own POSIX locks)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(_busy_message(path)) from None
    return fd


def _busy_message(path: str) -> str:
    pid = _running_pid(path)
    who = f"PID {pid}" if pid is not None else "another process"
    where = os.path.dirname(os.path.abspath(path))
    return f"{where}: another midair run ({who}) is using this directory (journal {path})"


def _running_pid(path: str) -> int | None:
    try:
        db = _connect(path, readonly=True)
        try:
            row = db.execute(_RUNNING).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else int(row[0])


# --- reading a journal without running (midair status, read_journal) ---------------------
def entries(path: str) -> Iterator[Entry]:
    """Every row of the journal at ``path``, streamed (not held as a list)."""
    db = _connect(path, readonly=True)
    try:
        yield from (Entry(*row) for row in db.execute(f"SELECT {_ENTRY} FROM jobs"))
    finally:
        db.close()


def latest_run(path: str) -> tuple[int, int]:
    """The latest run's job count and its transfers in flight at its last group."""
    db = _connect(path, readonly=True)
    try:
        row = db.execute(_LATEST).fetchone()
    finally:
        db.close()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def active_run(path: str) -> tuple[int, float] | None:
    """The PID and start time of the run now holding the journal, if one does."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        return None  # nobody holds it
    finally:
        os.close(fd)
    db = _connect(path, readonly=True)
    try:
        row = db.execute(_RUNNING).fetchone()
    finally:
        db.close()
    return None if row is None else (int(row[0]), float(row[1]))


# --- a run against its journal -------------------------------------------------------------
def sort_out(
    journal: Journal,
    jobs: Iterable[Job],
    options: Options,
    settle: Callable[[Success | Failure], None],
) -> Iterator[Job]:
    """The jobs still to run, as they come; what the journal already settles goes to
        ``settle`` instead: done jobs (skipped without a stat per file unless ``verify``; found
    by name for a signed URL with a new signature, see ``_signed``),
        and jobs that failed in an earlier run (unless ``retry_failed``), which fail again
        with the earlier reason.  The run's count of jobs is recorded as they are read (every
        ``COUNT_EVERY``: ``midair status`` shows what is queued of a list still being read)."""
    count = 0
    first = journal.empty()  # a first run: no look-up per job
    for job in jobs:
        count += 1
        if count % COUNT_EVERY == 0:
            journal.begin(count)
        entry = None if first else journal.get(job.url.text) or _signed(journal, job, options)
        if entry is not None and entry.state == DONE and _still_there(entry, job, options):
            journal.settled(entry.url)
            settle(Success(entry.url, entry.name or "", entry.size or 0, True))
        elif entry is not None and entry.state == FAILED and not options.retry_failed:
            journal.settled(entry.url)
            settle(Failure(entry.url, EarlierFailure.of(entry)))
        else:
            yield job
    journal.begin(count)


def _signed(journal: Journal, job: Job, options: Options) -> Entry | None:
    """The done row at ``job``'s first path, made for its URL with other signing parameters
    (``claims.made_for``; a signed URL's new signature), re-keyed to the job's URL: the rule
    the store applies to a file's tag, here for a file without one (copied, or on a file
    system without user xattrs).  None for any other job, and at once for one without a
    query (nothing signs it), so a plain list's new jobs cost no look-up more."""
    url = job.url.text
    path = transfer.claimable_path(job, options) if "?" in url else None
    entry = journal.by_name(path) if path is not None else None
    if entry is None or entry.state != DONE or not made_for(entry.url, url, by_name=True):
        return None
    journal.rekey(entry.url, url)
    return Entry(url, entry.name, entry.state, None, None, entry.bytes, entry.size, entry.updated)


def _still_there(entry: Entry, job: Job, options: Options) -> bool:
    """``--verify``: the file is there with the size the journal says and, for a job with a
    checksum, that checksum (else it is fetched again, and replaced: the file is midair's)."""
    if not options.verify:
        return True
    path = entry.name or ""
    try:
        if os.stat(path).st_size != entry.size:
            return False
    except OSError:
        return False
    checksum = job.checksum or options.checksum
    if checksum is None:
        return True
    from .store import file_digest  # only --verify with checksums reads the bytes back

    try:
        return file_digest(path, checksum) == checksum.hexdigest
    except OSError:
        return False


class EarlierFailure(DownloadError):
    """A job the journal says failed in an earlier run, not retried (no --retry-failed)."""

    @classmethod
    def of(cls, entry: Entry) -> EarlierFailure:
        return cls(entry.url, _earlier(entry.reason), status=entry.status)


def _earlier(reason: str | None) -> str:
    return f"failed in an earlier run: {reason} (--retry-failed retries it)"


def read_journal(directory: str = ".", journal: str | None = None) -> Results:
    """The results recorded in a directory's journal (or the file ``journal``): a done job
    is a skipped ``Success``; a failed one a ``Failure`` with its reason and status.  Read
    from the file as asked, never held (see ``JournalResults``)."""
    return JournalResults(journal_path(directory, journal))


class JournalResults(Results):
    """A journaled run's ``Results``, read from its journal rather than held: ``successes``
    and ``failures`` are sequences over its rows (``len`` counts, iterating streams, an
    index reads one row), so a run of 10,000,000 files costs no memory per file.

    ``run``: the rows of that run alone (what it did, and what it found an earlier run
    had settled: skipped successes, ``EarlierFailure``s); None: every row, as
    ``read_journal`` reads them (each done job a skipped success).  Read when asked, so a
    later run on the same journal changes what an earlier run's results read; errors come
    back as ``DownloadError`` with the recorded reason and status (not their classes)."""

    __slots__ = ()

    def __init__(self, path: str, run: int | None = None) -> None:
        super().__init__()
        self.successes = _Rows(path, run, DONE)  # type: ignore[assignment]
        self.failures = _Rows(path, run, FAILED)  # type: ignore[assignment]


class _Rows(Sequence):  # type: ignore[type-arg]  # typing's Any: not imported at run time
    """One state's rows of a journal (of one run, or all), as records, read on demand."""

    def __init__(self, path: str, run: int | None, state: str) -> None:
        self.path, self.run, self.state = path, run, state
        self._where = "state = ?" + ("" if run is None else " AND run = ?")
        self._args: tuple[object, ...] = (state,) if run is None else (state, run)

    def _query(self, what: str, tail: str = "", args: tuple[object, ...] = ()) -> list[Any]:
        db = _connect(self.path, readonly=True)
        try:
            sql = f"SELECT {what} FROM jobs WHERE {self._where} {tail}"
            return db.execute(sql, self._args + args).fetchall()
        finally:
            db.close()

    def __len__(self) -> int:
        return int(self._query("COUNT(*)")[0][0])

    def __iter__(self) -> Iterator[Any]:
        db = _connect(self.path, readonly=True)
        try:
            sql = f"SELECT {_RESULT} FROM jobs WHERE {self._where} ORDER BY rowid"
            yield from (self._record(*row) for row in db.execute(sql, self._args))
        finally:
            db.close()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = index + len(self) if index < 0 else index
        rows = self._query(_RESULT, "ORDER BY rowid LIMIT 1 OFFSET ?", (position,))
        if position < 0 or not rows:
            raise IndexError(index)
        return self._record(*rows[0])

    def __repr__(self) -> str:
        return f"<{len(self)} {self.state} rows of {self.path}>"

    def _record(
        self,
        url: str,
        name: str | None,
        reason: str | None,
        status: int | None,
        size: int | None,
        skipped: int,
    ) -> Success | Failure:
        if self.state == DONE:
            return Success(url, name or "", size or 0, bool(skipped) or self.run is None)
        if skipped:  # failed in an earlier run, not retried by this one
            return Failure(url, EarlierFailure(url, _earlier(reason), status=status))
        return Failure(url, DownloadError(url, reason or "", status=status))


_RESULT = "url, name, reason, status, size, skipped"
