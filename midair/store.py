"""The files: part files written at offsets, control files, atomic publication.

Layout beside each target ``NAME``:

- ``NAME.midair-part`` — the bytes so far, always a contiguous prefix;
- ``NAME.midair-ctl``  — JSON: URL, complete size and validators, written when
  a response is accepted, so a later run knows whether it may resume.

Publication checks size and checksum, tags the part file with an extended
attribute (``user.midair``) naming the URL and size, makes it durable and
renames it to ``NAME``: the tag is how a re-run recognises a finished file as
its own and skips it, while a file midair did not make is left alone.  A
publisher thread does this for groups of files at once (group commit): one
``syncfs`` for the group (an fsync per file where syncfs cannot be trusted)
before any rename, one fsync per directory after.  Files finished in one
loop iteration are published as one group when the loop calls ``collect``:
on the publisher thread (one hand-off per group), or, where durability costs
nothing — ``fsync=False``, or a directory on tmpfs or ramfs, where a sync
writes nothing — right there in the caller's thread, with no sync and no
thread.  The rename never replaces a file it may not (``RENAME_NOREPLACE``),
whatever ``prepare`` saw earlier.

Per file the store aims at curl's handful of system calls: each directory is
listed once per batch (``prepare`` then answers "nothing there" from a set)
and made once; a part started from zero is cut by ``O_TRUNC`` in its open.

Open part files are kept in an LRU cache sized from the open-file limit: ten
thousand transfers must not need ten thousand extra descriptors.

A control file is written when the core asks (``Checkpoint``: the transfer has
run long enough to be worth resuming), at once when one already exists (its
record must never go stale), and for every unfinished download on ``close``.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import math
import os
import re
import resource
import stat
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterable

from .core.actions import (
    Action,
    Checkpoint,
    Discard,
    Disk,
    OnDisk,
    Open,
    Prepare,
    Publish,
    Rejected,
    Resume,
    Save,
    Write,
)
from .core.claims import made_for
from .core.errors import DestinationError, DownloadError, IntegrityError
from .core.http import Bytes, Piped
from .core.jobs import Checksum, Pieces
from .core.naming import CONTROL_SUFFIX, PART_SUFFIX
from .core.segments import merged, recorded, subtract

# json's string encoder, from its C module: importing the json package costs ~1 ms of every
# command's start-up, and only control files and a re-run's look at a file's tag need the rest.
try:
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # a Python without the C accelerator
    from json.encoder import encode_basestring_ascii as _json_string

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import ctypes
    import queue
    from typing import Any

XATTR = "user.midair"
# Names of a directory held at most (a set, ~100 B each); past it each file is looked at
# alone (a stat or two), and the survey of earlier names (NAME.1, a server's) is skipped.
LISTING_LIMIT = 1 << 16
# How long the publisher waits after a first publication for others to share its syncfs
# and directory fsync (and one thread wake-up); the session polls for outcomes every 5 ms.
GATHER_SECONDS = 0.002
# A part or control file that is a symlink would carry writes out of the directory.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class _Unpublished:
    """What the store keeps about an opened download until it is published or discarded."""

    __slots__ = ("durable", "path", "pieces", "ranges", "record", "verified")

    def __init__(
        self, path: str, record: Resume, durable: bool, pieces: Pieces | None = None
    ) -> None:
        self.path = path
        self.record = record
        self.durable = durable  # publication must wait for stable storage
        # A file written in segments: the ranges on disk, kept from every ``Write`` so a
        # control file written at any moment (a checkpoint, the exit) tells the truth.
        self.ranges = None if record.ranges is None else list(record.ranges)
        self.pieces = pieces  # digests each piece is checked against as it completes
        self.verified: set[int] = set()  # the pieces that passed

    def holds(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` is all written (``ranges`` are merged and sorted)."""
        ranges = self.ranges or []
        index = bisect.bisect_right(ranges, (start, math.inf)) - 1
        return index >= 0 and ranges[index][1] >= end

    def whole(self) -> bool:
        """Whether every piece to check is there (a rejected one is not, until fetched again)."""
        return self.pieces is None or self.holds(0, self.record.size or 0)

    def unwrote(self, start: int, end: int) -> None:
        assert self.ranges is not None
        self.ranges = [kept for s, e in self.ranges for kept in subtract(s, e, start, end)]

    def check(self, ident: int, fd: int, start: int, end: int) -> list[Action] | None:
        """Check the pieces ``[start, end)`` completed; a bad one is no longer counted as
        written and is answered ``Rejected``, for the core to fetch it again."""
        pieces, size = self.pieces, self.record.size
        assert pieces is not None and size is not None
        length, rejected = pieces.length, list[Action]()
        for k in range(start // length, min((end - 1) // length + 1, len(pieces.hexdigests))):
            first, last = k * length, min((k + 1) * length, size)
            if k in self.verified or not self.holds(first, last):
                continue
            if _digest(fd, pieces.algorithm, first, last) == pieces.hexdigests[k]:
                self.verified.add(k)
                continue
            self.unwrote(first, last)
            reason = f"piece {k} (bytes {first}-{last - 1}) does not match its {pieces.algorithm}"
            rejected.append(Rejected(ident, first, last, reason))
        return rejected or None

    def wrote(self, start: int, end: int) -> None:
        """Merge ``[start, end)`` into ``ranges`` (a few: one per range in flight, at most)."""
        assert self.ranges is not None
        self.ranges = merged([*self.ranges, (start, end)])

    def control(self) -> Resume:
        """The record a control file holds now."""
        if self.ranges is None:
            return self.record
        return self.record.with_ranges(tuple(self.ranges))


class Store:
    """Carries out the core's file actions; one per batch (not thread-safe)."""

    def __init__(
        self,
        max_open: int | None = None,
        sockets: int = 0,
        background: bool = True,
        fsync: bool = True,
    ) -> None:
        self._max_open = max_open or default_max_open(sockets)
        self.background = background  # publish in groups, durable ones on a thread; off: at once
        self.fsync = fsync  # off: publish without waiting for stable storage (tmpfs, scratch)
        self._publisher = _Publisher()
        self._queued: list[_Publication] = []  # submitted: ``collect`` publishes them
        self._published: list[tuple[int, DownloadError | None]] = []  # here, for ``collect``
        self._syncs_write: dict[str, bool] = {}  # directory -> does a sync there write anything
        self._listings: dict[str, set[str] | None] = {}  # directory -> names, see _may_exist
        self._directories: set[str] = set()  # known to exist: made or listed by this batch
        self._fds: OrderedDict[int, int] = OrderedDict()  # download id -> fd
        self._parts: dict[int, str] = {}  # download id -> part path
        self._records: dict[int, _Unpublished] = {}
        self._controls: set[str] = set()  # targets whose control file exists on disk

    # --- before a batch: which URL made which file? ----------------------------------
    def survey(self, directories: Iterable[str], claimed: Container[str]) -> dict[str, str | None]:
        """Path -> the URL midair made the file for (None: a file midair did not make), for
        every file of ``directories`` whose path is not in ``claimed``.

        ``claimed`` paths are each one job's own first choice: ``prepare`` looks at those.
        The others are where a duplicate's ``NAME.1`` or a server's name may stand, and
        their tags are what keeps such names stable across runs.  A part file stands for
        its final name, with its control file's URL.  The listing is the one ``prepare``
        uses, so a first run into an empty directory costs no call more.
        """
        owners: dict[str, str | None] = {}
        for directory in directories:
            try:
                names = self._names_in(directory)
            except OSError:  # e.g. not a directory: ``prepare`` fails each job there
                continue
            if names:  # None (unlistable) or empty: nothing to learn
                inside = directory if directory.endswith(os.sep) else directory + os.sep
                for name in names:
                    if inside + name.removesuffix(PART_SUFFIX) not in claimed:
                        _survey_name(inside, name, names, owners)
        return owners

    # --- before a download: what is on disk? ----------------------------------------
    def prepare(self, action: Prepare) -> OnDisk:
        """What is on disk at ``action.path``.

        A name is looked up on disk only when its directory's listing may hold
        it.  The listing is read once per batch and does not learn the names the
        batch creates: a batch claims each name for one job, to its end, so it
        never prepares a name it made (learning them was a set entry per file,
        the bulk of a long list's memory).  It goes stale only by another
        process creating a file meanwhile; publication checks the final name
        again, atomically.
        """
        path = action.path
        directory, name = _split(path)
        names = self._names_in(directory)
        if names is None:  # unlistable: every name may exist
            return self._look_at(path, action, lambda suffix: True)
        if name not in names and name + PART_SUFFIX not in names:
            return _FRESH  # most files of most batches: nothing to look at
        return self._look_at(path, action, lambda suffix: name + suffix in names)

    def _look_at(self, path: str, action: Prepare, may_exist: Callable[[str], bool]) -> OnDisk:
        if may_exist("") and os.path.lexists(path):
            return _inspect_final(path, action)
        part = path + PART_SUFFIX
        if not may_exist(PART_SUFFIX):
            return _FRESH
        try:
            size = os.stat(part).st_size
        except FileNotFoundError:
            return _FRESH
        control = path + CONTROL_SUFFIX
        if not (may_exist(CONTROL_SUFFIX) and os.path.exists(control)):
            return OnDisk(Disk.PARTIAL, size, None)
        self._controls.add(path)
        return OnDisk(Disk.PARTIAL, size, _control_for(control, action))

    def _names_in(self, directory: str) -> set[str] | None:
        """The names in ``directory`` (empty if it does not exist); None if unlistable, or
        too long to hold (past ``LISTING_LIMIT`` names): then each name is looked at."""
        if directory not in self._listings:
            try:
                self._listings[directory] = _listing(directory or ".")
                self._directories.add(directory)
            except FileNotFoundError:
                self._listings[directory] = set()
            except PermissionError:  # searchable but unreadable: ask about each name
                self._listings[directory] = None
        return self._listings[directory]

    def _ensure_directory(self, directory: str) -> None:
        if directory and directory not in self._directories:
            os.makedirs(directory, exist_ok=True)
        self._directories.add(directory)

    def _durable(self, directory: str, fd: int) -> bool:
        """Whether publishing a file of ``directory`` (``fd`` is one) must wait for stable
        storage: not with ``fsync`` off, nor where the file system lives in memory."""
        if not self.fsync:
            return False
        writes = self._syncs_write.get(directory)
        if writes is None:  # asked once per directory: a sync's cost is the file system's
            writes = _file_system_type(fd) not in _MEMORY_FILE_SYSTEMS
            self._syncs_write[directory] = writes
        return writes

    # --- during: open, write ---------------------------------------------------------
    def open(self, action: Open | Save) -> None:
        part, ident = action.path + PART_SUFFIX, action.download
        directory = _split(action.path)[0]
        try:
            self._ensure_directory(directory)
            cached = ident in self._fds and self._parts[ident] == part
            # From zero, O_TRUNC cuts a new or old part in the open call itself; a part
            # written in segments keeps what its ranges say is there.
            ranges = action.record.ranges
            empty = action.offset == 0 and not ranges
            fd = self._fd(ident, part, os.O_CREAT | (os.O_TRUNC if empty else 0))
            if (cached or action.offset) and not ranges:
                _cut(fd, action.offset)
            durable = self._durable(directory, fd)
            pieces = action.pieces if isinstance(action, Open) else None
            self._records[ident] = _Unpublished(action.path, action.record, durable, pieces)
            if action.path in self._controls:
                self._write_control(ident)
        except OSError as exc:
            raise self._local_error(ident, action.path, exc, action.record.url) from exc

    def checkpoint(self, action: Checkpoint) -> None:
        try:
            self._write_control(action.download)
        except OSError as exc:
            path = self._records[action.download].path
            raise self._local_error(action.download, path, exc) from exc

    def _write_control(self, ident: int) -> None:
        unpublished = self._records[ident]
        path = unpublished.path
        _write_control(path + CONTROL_SUFFIX, unpublished.control(), self._open)
        self._controls.add(path)

    def write(self, action: Write | Save) -> list[Action] | None:
        """Write at the offset; for a file in segments, note the range, and check the
        pieces it completes (answering ``Rejected`` for a bad one)."""
        try:
            fd = self._fd(action.download, self._parts[action.download])
            _write_body(fd, action.data, action.offset)
            unpublished = self._records.get(action.download)
            if unpublished is not None and unpublished.ranges is not None:
                end = action.offset + len(action.data)
                unpublished.wrote(action.offset, end)
                if unpublished.pieces is not None:
                    return unpublished.check(action.download, fd, action.offset, end)
            return None
        except OSError as exc:
            path = self._parts[action.download].removesuffix(PART_SUFFIX)
            raise self._local_error(action.download, path, exc) from exc

    def save(self, action: Save) -> bool:
        """``open``, ``write`` and ``submit`` a whole body at once (answered as ``submit``).

        A fresh file from zero (nearly every one) takes a shortcut: its descriptor goes
        straight from the open to publication, never into the cache, and publication
        knows its size without asking the file system (no fstat)."""
        if action.offset or action.download in self._fds or action.path in self._controls:
            self.open(action)
            self.write(action)
            return self._queue(self._detach(action))  # no pieces: a Save is never in segments
        directory = _split(action.path)[0]
        fd = self._create(action, directory)
        try:
            _write_body(fd, action.data, 0)
        except OSError as exc:  # as after ``open``: the part stays, with its control file
            self._fds[action.download], self._parts[action.download] = fd, action.path + PART_SUFFIX
            durable = self._durable(directory, fd)  # as ``open`` records it
            self._records[action.download] = _Unpublished(action.path, action.record, durable)
            raise self._local_error(action.download, action.path, exc) from exc
        return self._queue(self._saved(action, fd, directory))

    def _create(self, action: Save, directory: str) -> int:
        """A new, empty part file for ``action``; DestinationError if it cannot be made."""
        try:
            self._ensure_directory(directory)
            flags = os.O_RDWR | _OPEN_FLAGS | os.O_CREAT | os.O_TRUNC
            return self._open(action.path + PART_SUFFIX, flags)
        except OSError as exc:
            raise self._local_error(action.download, action.path, exc, action.url) from exc

    def _saved(self, action: Save, fd: int, directory: str) -> _Publication:
        """The publication of a part file ``save`` made and wrote whole."""
        durable = self._durable(directory, fd)
        publication = _Publication(action, fd, action.url, action.record, False, durable)
        publication.written = len(action.data)
        return publication

    # --- after: publish or discard --------------------------------------------------
    def submit(self, action: Publish | Save) -> bool | None:
        """Queue ``action`` for the group ``collect`` publishes (True: its outcome comes from
        ``collect``), or, when not ``background``, publish it here and now (False; raises on
        failure).  None: not published, as a piece of it failed its digest just now (its
        ``Rejected`` follows: the core fetches the piece again)."""
        unpublished = self._records.get(action.download)
        if unpublished is not None and not unpublished.whole():
            return None
        return self._queue(self._detach(action))

    def _queue(self, publication: _Publication) -> bool:
        if not self.background:
            _publish_now(publication)
            return False
        self._queued.append(publication)
        return True

    def collect(self) -> list[tuple[int, DownloadError | None]]:
        """Publish the group queued since the last call; return the outcomes known since then.
        The loop calls it once per iteration."""
        self._publish_queued()
        done, self._published = self._published + self._publisher.collect(), []
        return done

    def _publish_queued(self) -> None:
        """Publish the queued group: here what needs no sync, and hand the rest to the
        publisher thread at once (one hand-off, not one per file)."""
        group, self._queued = self._queued, []
        here = [publication for publication in group if not publication.durable]
        durable = [publication for publication in group if publication.durable]
        if here:
            self._published += _outcomes(here)
        if durable:
            self._publisher.submit(durable)

    @property
    def pending(self) -> int:
        """Submitted publications whose outcome ``collect`` has not handed out yet."""
        return len(self._queued) + len(self._published) + self._publisher.pending

    def publish(self, action: Publish) -> None:
        """Verify, fsync and rename into place.  Raises a DownloadError if the bytes are wrong."""
        _publish_now(self._detach(action))

    def _detach(self, action: Publish | Save) -> _Publication:
        """Hand the finished part file over to publication, which touches only it: the
        publisher thread may run it while transfers go on."""
        ident, part = action.download, action.path + PART_SUFFIX
        try:
            fd = self._fd(ident, part)
        except OSError as exc:
            raise self._local_error(ident, action.path, exc) from exc
        del self._fds[ident], self._parts[ident]
        unpublished = self._records.pop(ident, None)
        had_control = action.path in self._controls
        self._controls.discard(action.path)
        if unpublished is None:  # never opened by this store: all it knows is the action
            return _Publication(action, fd, action.url, None, had_control, self.fsync)
        record = unpublished.control()
        return _Publication(action, fd, record.url, record, had_control, unpublished.durable)

    def discard(self, action: Discard) -> None:
        self._forget(action.download)
        self._parts.pop(action.download, None)
        self._records.pop(action.download, None)
        self._controls.discard(action.path)
        _unlink(action.path + PART_SUFFIX)
        _unlink(action.path + CONTROL_SUFFIX)

    def close(self) -> None:
        """Finish publications, close every part file and write every missing control
        file: what a re-run resumes."""
        self._publish_queued()
        self._publisher.close()
        for ident in list(self._fds):
            self._forget(ident)
        for ident, unpublished in list(self._records.items()):
            if unpublished.path not in self._controls or unpublished.ranges is not None:
                with contextlib.suppress(OSError):
                    self._write_control(ident)

    # --- descriptors -----------------------------------------------------------------
    def _fd(self, ident: int, part: str, flags: int = 0) -> int:
        fd = self._fds.get(ident)
        if fd is not None and self._parts[ident] == part:
            self._fds.move_to_end(ident)
            return fd
        self._forget(ident)  # a redirect can move a download to another name
        # Read-write: checksum verification reads the bytes back.  Only ``open`` creates
        # (O_CREAT): a part that vanished while its descriptor was closed must fail, not
        # come back empty and get the rest written after a hole of zeros.
        fd = self._open(part, os.O_RDWR | _OPEN_FLAGS | flags)
        if len(self._fds) >= self._max_open:
            self._shed(1)
        self._fds[ident], self._parts[ident] = fd, part
        return fd

    def _open(self, path: str, flags: int) -> int:
        """Open a part or control file; out of descriptors (EMFILE, ENFILE), it sheds half
        the cache, which then stays that size, and tries once more: a cached descriptor
        is only a saved open, and a download must never fail for it."""
        try:
            return _open_file(path, flags)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._fds:
                raise
        self._max_open = max(1, len(self._fds) // 2)
        self._shed(len(self._fds) - self._max_open)
        return _open_file(path, flags)

    def _shed(self, count: int) -> None:
        """Close ``count`` cached descriptors, the most recently used first: transfers
        write in turn (each connection's bytes come about once a round), so the least
        recently used is the one written next.  At c10k (10,000 files, 9,936 descriptors)
        evicting that one made 16,444 opens, this way 10,192 (one per file: 10,000)."""
        for _ in range(count):
            _, latest = self._fds.popitem(last=True)
            os.close(latest)

    def _forget(self, ident: int) -> None:
        fd = self._fds.pop(ident, None)
        if fd is not None:
            os.close(fd)

    def _local_error(
        self, ident: int, path: str, exc: OSError, url: str | None = None
    ) -> DownloadError:
        self._forget(ident)
        if url is None:
            unpublished = self._records.get(ident)
            url = path if unpublished is None else unpublished.record.url
        return DestinationError(url, f"cannot write {path}: {_reason(exc)}")


_FRESH = OnDisk(Disk.FRESH)  # the answer for nothing on disk: one frozen record for every file
_TAKEN, _FOREIGN = OnDisk(Disk.TAKEN), OnDisk(Disk.FOREIGN)


def _split(path: str) -> tuple[str, str]:
    """``os.path.split(path)``, at C speed for the paths the core resolves (normalised,
    so no slashes doubled before the name)."""
    head, _, tail = path.rpartition("/")
    if head and head[-1] != "/":
        return head, tail
    return os.path.split(path)


def _reason(exc: OSError) -> str:
    """An OS error as users read it: "disk full" rather than "No space left on device"."""
    if exc.errno == errno.ENOSPC:
        return "disk full"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def default_max_open(sockets: int) -> int:
    """Part files to keep open: what the open-file limit leaves beside the sockets.

    No cap of its own: a descriptor the cache cannot hold is a file reopened at its next
    write (at c10k, with the 4,096 it once had, 35,905 opens for 10,000 files).  The
    margin is for what else a run opens: resolver sockets, pipes, the journal, control
    files, and finished parts waiting for publication, which have left the cache."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    free = soft - sockets
    return max(16, free - 64 - free // 16)


def _digest(fd: int, algorithm: str, start: int = 0, end: float = math.inf) -> str:
    """The hex digest of the file's bytes ``[start, end)`` (to its end by default), read
    back a MiB at a time (from the page cache, for bytes just written)."""
    import hashlib  # only checksummed jobs need it (and libcrypto's load time)

    digest = hashlib.new(algorithm)
    while start < end and (chunk := os.pread(fd, int(min(1 << 20, end - start)), start)):
        digest.update(chunk)
        start += len(chunk)
    return digest.hexdigest()


def _write_body(fd: int, data: Bytes | Piped, offset: int) -> None:
    if isinstance(data, Piped):
        _move_from_pipe(data, fd, offset)
    else:
        _write_at(fd, data, offset)


def _write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    written = os.pwrite(fd, data, offset)  # the whole body, nearly always: no view made
    if written < len(data):  # a short write (a signal, a full disk): the rest
        view, offset = memoryview(data)[written:], offset + written
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


# A file system (or a file) splice cannot write to: copy through Python instead.
_NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _move_from_pipe(piped: Piped, fd: int, offset: int) -> None:
    """Move the ``piped`` bytes into ``fd`` at ``offset``: splice, so that they never
    enter Python, or read and pwrite where the file cannot take a splice.

    Whatever happens the pipe is left empty, and ``piped.emptied`` says so: an engine
    reuses the pipe for other bodies, and need not look into it again.
    """
    left = piped.count
    try:
        while left:
            try:
                moved = os.splice(piped.pipe, fd, left, offset_dst=offset)
            except OSError as exc:
                if exc.errno not in _NO_SPLICE:
                    raise
                moved = _copy_from_pipe(piped.pipe, fd, left, offset)
            if not moved:  # the engine promised bytes the pipe does not hold
                raise OSError(errno.EIO, "pipe empty before the body's bytes were moved")
            left, offset = left - moved, offset + moved
    finally:
        if left:
            _discard_from_pipe(piped.pipe, left)
        piped.emptied = True


def _copy_from_pipe(pipe: int, fd: int, count: int, offset: int) -> int:
    data = os.read(pipe, count)
    _write_at(fd, data, offset)
    return len(data)


def _discard_from_pipe(pipe: int, count: int) -> None:
    with contextlib.suppress(OSError):
        while count > 0 and (data := os.read(pipe, count)):
            count -= len(data)


def _cut(fd: int, offset: int) -> None:
    """Make the part file exactly ``offset`` bytes: resuming keeps only the prefix."""
    if os.fstat(fd).st_size != offset:
        os.ftruncate(fd, offset)


def _listing(directory: str) -> set[str] | None:
    """The names in ``directory``, or None past ``LISTING_LIMIT``: a re-run into a directory
    of millions of files must neither hold every name nor read every file's tag before its
    first request (a journal finds its done jobs without them)."""
    names: set[str] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            names.add(entry.name)
            if len(names) > LISTING_LIMIT:
                return None
    return names


def _survey_name(inside: str, name: str, names: set[str], owners: dict[str, str | None]) -> None:
    """Note who owns ``name`` (a final name, or a part file standing for one)."""
    if name.endswith(CONTROL_SUFFIX):
        return
    if name.endswith(PART_SUFFIX):
        final = name.removesuffix(PART_SUFFIX)
        if final not in names and final + CONTROL_SUFFIX in names:  # a final file's tag wins
            record = _read_control(inside + final + CONTROL_SUFFIX)
            if record is not None:
                owners[inside + final] = record.url
        return
    tag = _read_tag(inside + name, follow_symlinks=False)
    url = tag.get("url") if tag is not None else None
    owners[inside + name] = url if isinstance(url, str) else None


def _control_for(control: str, action: Prepare) -> Resume | None:
    """The part file's record, as this job's when the file is its own by name (a signed
    URL's old token, ``claims.made_for``): the core resumes a record of its own URL only,
    and then only if the server still answers the record's validator."""
    record = _read_control(control)
    if record is None or record.url == action.url:
        return record
    if not made_for(record.url, action.url, action.by_name):
        return record  # another URL's part: the core restarts it from zero
    return Resume(action.url, record.size, record.etag, record.last_modified, record.ranges)


def _inspect_final(path: str, action: Prepare) -> OnDisk:
    """A finished file at a job's path: complete (skipped), fresh (fetched again and
    replaced: its own), or another URL's or a foreign file (never replaced unasked).  A file
    made for the job's URL with another query is complete by name (``claims.made_for``) if
    it has its tag's size, and never replaced on that ground."""
    try:
        info = os.stat(path)
    except FileNotFoundError:  # a dangling symlink
        return OnDisk(Disk.FOREIGN)
    if not stat.S_ISREG(info.st_mode):
        return OnDisk(Disk.FOREIGN)
    tag, url, checksum = _read_tag(path), action.url, action.checksum
    owner = tag.get("url") if tag is not None else None
    ours = owner == url
    if checksum is not None:
        if file_digest(path, checksum) == checksum.hexdigest:
            return OnDisk(Disk.COMPLETE, info.st_size)
        return OnDisk(Disk.FRESH) if ours else _not_ours(tag)
    by_name = isinstance(owner, str) and made_for(owner, url, action.by_name)
    if (ours or by_name) and tag is not None and tag.get("size") == info.st_size:
        return OnDisk(Disk.COMPLETE, info.st_size)
    return OnDisk(Disk.FRESH) if ours else _not_ours(tag)


def file_digest(path: str, checksum: Checksum) -> str:
    """The hex digest of the file at ``path`` by ``checksum``'s algorithm."""
    import hashlib  # only checksummed jobs need it (and libcrypto's load time)

    with open(path, "rb") as f:
        return hashlib.file_digest(f, checksum.algorithm).hexdigest()


def _not_ours(tag: dict[str, object] | None) -> OnDisk:
    """A file that is not this URL's: another URL's (``taken``: a duplicate is numbered
    past it) or one midair did not make (``foreign``: never replaced unless asked)."""
    return _TAKEN if tag is not None and isinstance(tag.get("url"), str) else _FOREIGN


# --- publication: verify, make durable, rename, in groups --------------------------------
class _Publication:
    """One finished part file on its way to its final name; ``error`` once it has failed."""

    __slots__ = (
        "action",
        "device",
        "durable",
        "error",
        "fd",
        "had_control",
        "part",
        "record",
        "target",
        "url",
        "written",
    )

    def __init__(
        self,
        action: Publish | Save,
        fd: int,
        url: str,
        record: Resume | None,
        had_control: bool,
        durable: bool,
    ) -> None:
        self.action, self.fd, self.url, self.record = action, fd, url, record
        self.had_control, self.durable = had_control, durable
        self.part = action.path + PART_SUFFIX
        self.target = action.target or action.path
        self.device = 0
        self.error: DownloadError | None = None
        self.written: int | None = None  # the part's size, when this store wrote it whole

    def fail(self, exc: OSError | DownloadError) -> None:
        if isinstance(exc, DownloadError):
            self.error = exc
        else:
            self.error = DestinationError(
                self.url, f"cannot publish {self.action.path}: {_reason(exc)}"
            )


def _publish_now(publication: _Publication) -> None:
    """Publish one file in the caller's thread; raise its DownloadError if it failed."""
    (error,) = _publish_group([publication])
    if error is not None:
        raise error


def _publish_group(group: list[_Publication]) -> list[DownloadError | None]:
    """Publish every file of ``group``; one outcome each, in order.

    The slow steps are paid once per group, not per file: one ``syncfs`` makes
    every part durable before any of them gets its final name (a final name
    never points at bytes a crash could lose), and each directory is fsynced
    once after the renames so that they survive a crash too.  A file failing
    at any step drops out of the later ones; the others go on.
    """
    verified = _each(group, _verify_and_tag)
    durable = _make_durable(verified)
    renamed = _each(durable, _rename)
    _sync_directories(renamed)
    for publication in group:
        _settle(publication)
    return [publication.error for publication in group]


def _each(group: list[_Publication], step: Callable[[_Publication], None]) -> list[_Publication]:
    """Run ``step`` on each publication; return those it did not fail."""
    survivors = []
    for publication in group:
        try:
            step(publication)
        except (OSError, DownloadError) as exc:
            publication.fail(exc)
        else:
            survivors.append(publication)
    return survivors


def _verify_and_tag(publication: _Publication) -> None:
    """Check size and checksum, then tag the part (fsetxattr) so the sync covers the tag."""
    fd, action, size = publication.fd, publication.action, publication.written
    if size is None or publication.durable:  # a durable one's device groups the syncs
        info = os.fstat(fd)
        size, publication.device = info.st_size, info.st_dev
    if action.size is not None and size != action.size:
        raise IntegrityError(
            action.url, f"{publication.part} has {size} bytes, expected {action.size}"
        )
    if action.checksum is not None:
        _verify(fd, action.checksum, action.url)
    _tag(fd, publication.url, size)


def _make_durable(group: list[_Publication]) -> list[_Publication]:
    """Put the bytes of every part on stable storage: one syncfs per file system, or,
    where that is missing or fails, an fsync per file (which also tells which one failed)."""
    waiting = [publication for publication in group if publication.durable]
    if not waiting:  # fsync off, or a file system in memory
        return group
    ready = [publication for publication in group if not publication.durable]
    by_device: dict[int, list[_Publication]] = {}
    for publication in waiting:
        by_device.setdefault(publication.device, []).append(publication)
    for members in by_device.values():
        if len(members) > 1 and _syncfs(members[0].fd):  # for one file, fsync does less
            ready += members
        else:
            ready += _each(members, lambda publication: os.fsync(publication.fd))
    return ready


def _rename(publication: _Publication) -> None:
    """Give the part its final name, which may replace only nothing, a file midair made
    for this URL, or anything when the user said ``--overwrite``."""
    part, target, action = publication.part, publication.target, publication.action
    if not action.replace and _rename_if_free(part, target):
        return
    if not action.replace:
        _check_replaceable(target, action, publication.url)
    os.replace(part, target)


def _sync_directories(group: list[_Publication]) -> None:
    """fsync once each directory a rename touched, so that the renames are durable too.

    Best effort: the files already stand complete under their final names, so an
    error here must not report them failed; and a rename that a crash then loses
    leaves its durable part file, which a re-run publishes or fetches again.
    """
    directories = {
        _directory_of(path)
        for publication in group
        if publication.durable
        for path in (publication.part, publication.target)
    }
    for directory in directories:
        with contextlib.suppress(OSError):
            _fsync_directory(directory)


def _directory_of(path: str) -> str:
    return os.path.dirname(path) or "."


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _settle(publication: _Publication) -> None:
    """Close the part; a published file needs no control file, a failed one keeps it."""
    os.close(publication.fd)
    path = publication.action.path
    if publication.error is None:
        if publication.had_control:  # a leftover control file without its part is ignored
            with contextlib.suppress(OSError):
                os.unlink(path + CONTROL_SUFFIX)
    else:
        _keep_resumable(path, publication.record, publication.had_control)


def _keep_resumable(path: str, record: Resume | None, had_control: bool) -> None:
    """Publication failed (the name is taken, the disk is full): like every unfinished
    download, the part file keeps the control file a re-run resumes it with."""
    if record is not None and not had_control:
        with contextlib.suppress(OSError):
            _write_control(path + CONTROL_SUFFIX, record)


def _check_replaceable(target: str, action: Publish | Save, url: str) -> None:
    """A name that is taken may be replaced only by the download midair made it for."""
    if not os.path.lexists(target):
        return
    tag = _read_tag(target) if os.path.isfile(target) else None
    if tag is None or tag.get("url") != url:
        raise DestinationError(
            url,
            f"cannot publish {action.path}: {target} exists and "
            "was not made by midair (use --overwrite)",
        )


def _verify(fd: int, checksum: Checksum, url: str) -> None:
    got = _digest(fd, checksum.algorithm)
    if got != checksum.hexdigest:
        raise IntegrityError(
            url, f"checksum mismatch: expected {checksum.algorithm}={checksum.hexdigest}, got {got}"
        )


# --- system calls the os module lacks ---------------------------------------------------
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


@functools.cache
def _libc_function(name: str) -> Any:
    """The C library's function ``name``, or None where it (or the library) is missing."""
    return getattr(_libc(), name, None)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded on first use (importing ctypes costs startup time)."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _rename_if_free(source: str, target: str) -> bool:
    """rename(2) that fails rather than replace: True if done, False if ``target`` is
    taken or the call is unavailable (then the caller checks the name itself)."""
    rename = _libc_function("renameat2")
    if rename is None:
        return False
    encoding, errors = _FS_ENCODING  # ``os.fsencode`` for a str, in one C call each
    old, new = source.encode(encoding, errors), target.encode(encoding, errors)
    if rename(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_NOREPLACE) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in (errno.EEXIST, errno.EINVAL, errno.ENOSYS):  # EINVAL: the fs cannot do it
        return False
    raise OSError(code, os.strerror(code), target)


_FS_ENCODING = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _syncfs(fd: int) -> bool:
    """syncfs(2): flush the whole file system ``fd`` is on.  False where it is missing,
    failed, or not known to mean "durable" there (then the caller fsyncs each file)."""
    sync = _libc_function("syncfs")
    return sync is not None and _syncfs_is_durable(fd) and sync(fd) == 0


# File systems kept in memory (tmpfs, ramfs): a sync writes nothing, so nothing waits for one.
_MEMORY_FILE_SYSTEMS = frozenset({0x01021994, 0x858458F6})
# Local file systems whose syncfs writes back and commits everything: ext2/3/4, xfs, btrfs,
# f2fs, tmpfs.  On FUSE syncfs need not reach the server, and network file systems vary.
_SYNCFS_FILE_SYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x01021994})


def _syncfs_is_durable(fd: int) -> bool:
    # Before Linux 5.8 syncfs returned 0 even when writing back failed.
    return _kernel() >= (5, 8) and _file_system_type(fd) in _SYNCFS_FILE_SYSTEMS


@functools.cache
def _kernel() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _file_system_type(fd: int) -> int | None:
    """fstatfs(2)'s ``f_type``, the first field of ``struct statfs``; None if unknown."""
    import ctypes

    statfs = _libc_function("fstatfs")
    buffer = (ctypes.c_long * 32)()  # larger than struct statfs on every Linux
    if statfs is None or statfs(fd, buffer) != 0:
        return None
    return buffer[0] & 0xFFFFFFFF


def _read_control(path: str) -> Resume | None:
    import json  # see _json_string

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            return None
        size, ranges = data.get("size"), data.get("ranges")
        if ranges is not None:  # one it cannot vouch for restarts the file
            ranges = recorded(ranges, size) if type(size) is int else None
            if ranges is None:
                return None
            ranges = tuple(ranges)
        return Resume(str(data["url"]), size, data.get("etag"), data.get("last_modified"), ranges)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the part file cannot be trusted, so it restarts


def _open_file(path: str, flags: int) -> int:
    return os.open(path, flags, 0o644)


def _write_control(
    path: str, record: Resume, open_file: Callable[[str, int], int] = _open_file
) -> None:
    """One encoding (C) and one write: a stop at c10k writes 10,000 of these, and
    ``json.dump`` into a text file took 2.5x as long (0.45 s of the stop).  ``open_file``:
    the store's, which makes room in its descriptor cache when the process is out."""
    import json  # see _json_string

    rest = memoryview(json.dumps(record.as_dict()).encode())
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS)
    try:
        while rest:  # a short write (a signal): the rest
            rest = rest[os.write(fd, rest) :]
    finally:
        os.close(fd)


def _tag(fd: int, url: str, size: int) -> None:
    try:
        os.setxattr(fd, XATTR, _tag_value(url, size))
    except OSError:  # without xattrs here, a re-run sees the file as foreign and says so
        return


def _tag_value(url: str, size: int) -> bytes:
    """``json.dumps({"url": url, "size": size})`` byte for byte, without building an
    encoder for every file."""
    return b'{"url": %s, "size": %d}' % (_json_string(url).encode(), size)


def _read_tag(path: str, follow_symlinks: bool = True) -> dict[str, object] | None:
    import json  # see _json_string

    try:
        data = json.loads(os.getxattr(path, XATTR, follow_symlinks=follow_symlinks))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Publisher:
    """A thread that publishes in groups: everything handed over since it last looked, at
    once.  Outcomes wait in ``collect`` for the I/O thread."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[list[_Publication] | None]  # made with the thread
        self._done: deque[list[tuple[int, DownloadError | None]]] = deque()
        self._thread: threading.Thread | None = None
        self.pending = 0

    def submit(self, group: list[_Publication]) -> None:
        if self._thread is None:
            self._start()
        self.pending += len(group)
        self._work.put(group)

    def _start(self) -> None:
        import queue  # only a run that publishes off the loop (on a disk) needs it

        self._work = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="midair-publish", daemon=True)
        self._thread.start()

    def collect(self) -> list[tuple[int, DownloadError | None]]:
        done = []
        while self._done:  # deque appends and pops are atomic: no lock needed
            done += self._done.popleft()
        self.pending -= len(done)
        return done

    def close(self) -> None:
        """Wait for what was submitted: a file being renamed must not be cut off."""
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        running = True
        while running:
            groups = [self._work.get()]
            if groups[0] is not None:  # None: closing, nothing more will come to gather
                time.sleep(GATHER_SECONDS)
            while not self._work.empty():
                groups.append(self._work.get())
            running = groups[-1] is not None  # close() puts None last, after every submit
            self._publish([each for group in groups if group is not None for each in group])

    def _publish(self, group: list[_Publication]) -> None:
        self._done.append(_outcomes(group))


def _outcomes(group: list[_Publication]) -> list[tuple[int, DownloadError | None]]:
    """Publish ``group``; each download with its error, None if it stands published."""
    try:
        errors = _publish_group(group)
    except Exception as exc:  # a bug must fail the files, not hang the batch
        errors = [DestinationError(p.url, f"cannot publish: {exc!r}") for p in group]
        for publication in group:
            with contextlib.suppress(OSError):
                os.close(publication.fd)
    return [(p.action.download, error) for p, error in zip(group, errors, strict=True)]
