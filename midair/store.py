"""The files: part files written at offsets, control files, atomic publication.

Layout beside each target ``NAME``:

- ``NAME.midair-part`` — the bytes so far, always a contiguous prefix;
- ``NAME.midair-ctl``  — JSON: URL, complete size and validators, written when
  a response is accepted, so a later run knows whether it may resume.

Publication checks size and checksum, fsyncs, renames the part file over
``NAME`` and tags it with an extended attribute (``user.midair``) naming the
URL and size: that tag is how a re-run recognises a finished file as its own
and skips it, while a file midair did not make is left alone.

Open part files are kept in an LRU cache sized from the open-file limit: ten
thousand transfers must not need ten thousand extra descriptors.

A control file is written when the core asks (``Checkpoint``: the transfer has
run long enough to be worth resuming), at once when one already exists (its
record must never go stale), and for every unfinished download on ``close``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import resource
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict

from .core.actions import Checkpoint, Discard, OnDisk, Open, Prepare, Publish, Resume, Write
from .core.errors import DestinationError, DownloadError, IntegrityError
from .core.jobs import Checksum
from .core.naming import CONTROL_SUFFIX, PART_SUFFIX

XATTR = "user.midair"
# A part or control file that is a symlink would carry writes out of the directory.
_OPEN_FLAGS = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class Store:
    """Carries out the core's file actions; one per batch (not thread-safe)."""

    def __init__(self, max_open: int | None = None, sockets: int = 0,
                 background: bool = True) -> None:
        self._max_open = max_open or default_max_open(sockets)
        self.background = background  # publish on a thread; off for simulations
        self._publisher = _Publisher()
        self._fds: OrderedDict[int, int] = OrderedDict()  # download id -> fd
        self._parts: dict[int, str] = {}  # download id -> part path
        self._urls: dict[int, str] = {}
        self._records: dict[int, tuple[str, Resume]] = {}  # unpublished: target, record
        self._controls: set[str] = set()  # targets whose control file exists on disk

    # --- before a download: what is on disk? ----------------------------------------
    def prepare(self, action: Prepare) -> OnDisk:
        path = action.path
        if os.path.lexists(path):
            return _inspect_final(path, action.url, action.checksum)
        part = path + PART_SUFFIX
        try:
            size = os.stat(part).st_size
        except FileNotFoundError:
            return OnDisk("fresh")
        record = _read_control(path + CONTROL_SUFFIX)
        if os.path.exists(path + CONTROL_SUFFIX):
            self._controls.add(path)
        return OnDisk("partial", size, record)

    # --- during: open, write ---------------------------------------------------------
    def open(self, action: Open) -> None:
        part = action.path + PART_SUFFIX
        self._urls[action.download] = action.record.url
        try:
            os.makedirs(os.path.dirname(action.path), exist_ok=True)
            fd = self._fd(action.download, part)
            if os.fstat(fd).st_size != action.offset:
                os.ftruncate(fd, action.offset)
            self._records[action.download] = (action.path, action.record)
            if action.path in self._controls:
                self._write_control(action.download)
        except OSError as exc:
            raise self._local_error(action.download, action.path, exc) from exc

    def checkpoint(self, action: Checkpoint) -> None:
        try:
            self._write_control(action.download)
        except OSError as exc:
            path = self._records[action.download][0]
            raise self._local_error(action.download, path, exc) from exc

    def _write_control(self, ident: int) -> None:
        path, record = self._records[ident]
        _write_control(path + CONTROL_SUFFIX, record)
        self._controls.add(path)

    def write(self, action: Write) -> None:
        try:
            fd = self._fd(action.download, self._parts[action.download])
            view, offset = memoryview(action.data), action.offset
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            path = self._parts[action.download].removesuffix(PART_SUFFIX)
            raise self._local_error(action.download, path, exc) from exc

    # --- after: publish or discard --------------------------------------------------
    def submit(self, action: Publish) -> bool:
        """Publish ``action``: on the publisher thread (True: its outcome comes from
        ``collect``), or here and now when not ``background`` (False; raises on failure)."""
        if not self.background:
            self.publish(action)
            return False
        self._publisher.submit(action.download, action.url, self.begin_publish(action))
        return True

    def collect(self) -> list[tuple[int, DownloadError | None]]:
        """Outcomes of submitted publications that have finished since the last call."""
        return self._publisher.collect()

    @property
    def pending(self) -> int:
        """Submitted publications whose outcome ``collect`` has not handed out yet."""
        return self._publisher.pending

    def publish(self, action: Publish) -> None:
        """Verify, fsync and rename into place.  Raises a DownloadError if the bytes are wrong."""
        self.begin_publish(action)()

    def begin_publish(self, action: Publish) -> Callable[[], None]:
        """Detach the finished part file; return the slow rest (verify, fsync, rename).

        The returned function touches only the file it was given, so a session
        can run it on another thread while transfers go on: fsync can take a
        millisecond, and ten thousand of them must not stall the I/O loop.
        """
        part = action.path + PART_SUFFIX
        try:
            fd = self._fd(action.download, part)
        except OSError as exc:
            raise self._local_error(action.download, action.path, exc) from exc
        self._fds.pop(action.download, None)
        url = self._urls.pop(action.download, action.url)
        _, record = self._records.pop(action.download, (None, None))
        had_control = action.path in self._controls
        self._controls.discard(action.path)

        def finish() -> None:
            try:
                _publish(fd, part, action, url, had_control)
            except OSError as exc:
                _keep_resumable(action.path, record, had_control)
                raise DestinationError(
                    url, f"cannot publish {action.path}: {_reason(exc)}") from exc
            except DownloadError:
                _keep_resumable(action.path, record, had_control)
                raise
            finally:
                os.close(fd)

        return finish

    def discard(self, action: Discard) -> None:
        self._forget(action.download)
        self._records.pop(action.download, None)
        self._controls.discard(action.path)
        _unlink(action.path + PART_SUFFIX)
        _unlink(action.path + CONTROL_SUFFIX)

    def close(self) -> None:
        """Finish publications, close every part file and write every missing control
        file: what a re-run resumes."""
        self._publisher.close()
        for ident in list(self._fds):
            self._forget(ident)
        for ident, (path, _) in list(self._records.items()):
            if path not in self._controls:
                with contextlib.suppress(OSError):
                    self._write_control(ident)

    # --- descriptors -----------------------------------------------------------------
    def _fd(self, ident: int, part: str) -> int:
        fd = self._fds.get(ident)
        if fd is not None and self._parts[ident] == part:
            self._fds.move_to_end(ident)
            return fd
        self._forget(ident)  # a redirect can move a download to another name
        # Read-write: checksum verification reads the bytes back.
        fd = os.open(part, os.O_RDWR | _OPEN_FLAGS, 0o644)
        self._fds[ident], self._parts[ident] = fd, part
        if len(self._fds) > self._max_open:
            _, oldest = self._fds.popitem(last=False)
            os.close(oldest)
        return fd

    def _forget(self, ident: int) -> None:
        fd = self._fds.pop(ident, None)
        if fd is not None:
            os.close(fd)

    def _local_error(self, ident: int, path: str, exc: OSError) -> DownloadError:
        self._forget(ident)
        reason = _reason(exc)
        return DestinationError(self._urls.get(ident, path), f"cannot write {path}: {reason}")


def _reason(exc: OSError) -> str:
    """An OS error as users read it: "disk full" rather than "No space left on device"."""
    if exc.errno == errno.ENOSPC:
        return "disk full"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def default_max_open(sockets: int) -> int:
    """Part files to keep open: what the open-file limit leaves beside the sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(16, min(4096, soft - sockets - 64))


def _inspect_final(path: str, url: str, checksum: Checksum | None) -> OnDisk:
    if not os.path.isfile(path):
        return OnDisk("foreign")
    size = os.path.getsize(path)
    tag = _read_tag(path)
    ours = tag is not None and tag.get("url") == url
    if checksum is not None:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, checksum.algorithm).hexdigest()
        if digest == checksum.hexdigest:
            return OnDisk("complete", size)
        return OnDisk("fresh") if ours else OnDisk("foreign")
    if ours and tag is not None and tag.get("size") == size:
        return OnDisk("complete", size)
    return OnDisk("fresh") if ours else OnDisk("foreign")


def _publish(fd: int, part: str, action: Publish, url: str, had_control: bool) -> None:
    size = os.fstat(fd).st_size
    if action.size is not None and size != action.size:
        raise IntegrityError(action.url, f"{part} has {size} bytes, expected {action.size}")
    if action.checksum is not None:
        _verify(fd, action.checksum, action.url)
    target = action.target or action.path
    if target != action.path:
        _check_replaceable(target, action.url, action.replace)
    os.fsync(fd)
    os.replace(part, target)
    _tag(target, url, size)
    if had_control:
        _unlink(action.path + CONTROL_SUFFIX)


def _keep_resumable(path: str, record: Resume | None, had_control: bool) -> None:
    """Publication failed (the name is taken, the disk is full): like every unfinished
    download, the part file keeps the control file a re-run resumes it with."""
    if record is not None and not had_control:
        with contextlib.suppress(OSError):
            _write_control(path + CONTROL_SUFFIX, record)


def _check_replaceable(target: str, url: str, replace: bool) -> None:
    """A server-chosen name may replace only nothing, or a file midair made for this URL."""
    if not os.path.lexists(target) or replace:
        return
    tag = _read_tag(target) if os.path.isfile(target) else None
    if tag is None or tag.get("url") != url:
        raise DestinationError(url, f"{target} exists and was not made by midair "
                                    "(use --overwrite)")


def _verify(fd: int, checksum: Checksum, url: str) -> None:
    digest = hashlib.new(checksum.algorithm)
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    if digest.hexdigest() != checksum.hexdigest:
        raise IntegrityError(url, f"checksum mismatch: expected {checksum.algorithm}="
                                  f"{checksum.hexdigest}, got {digest.hexdigest()}")


def _read_control(path: str) -> Resume | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return Resume(str(data["url"]), data.get("size"), data.get("etag"),
                      data.get("last_modified"))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the part file cannot be trusted, so it restarts


def _write_control(path: str, record: Resume) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | _OPEN_FLAGS, 0o644)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(record), f)


def _tag(path: str, url: str, size: int) -> None:
    # Without xattrs here, a re-run sees the file as foreign and says so.
    with contextlib.suppress(OSError):
        os.setxattr(path, XATTR, json.dumps({"url": url, "size": size}).encode())


def _read_tag(path: str) -> dict[str, object] | None:
    try:
        data = json.loads(os.getxattr(path, XATTR))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Publisher:
    """A thread that finishes publications; outcomes wait in ``collect`` for the I/O thread."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[int, str, Callable[[], None]] | None] = (
            queue.SimpleQueue())
        self._done: deque[tuple[int, DownloadError | None]] = deque()
        self._thread: threading.Thread | None = None
        self.pending = 0

    def submit(self, ident: int, url: str, work: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="midair-publish", daemon=True)
            self._thread.start()
        self.pending += 1
        self._work.put((ident, url, work))

    def collect(self) -> list[tuple[int, DownloadError | None]]:
        done = []
        while self._done:  # deque appends and pops are atomic: no lock needed
            done.append(self._done.popleft())
        self.pending -= len(done)
        return done

    def close(self) -> None:
        """Wait for what was submitted: a file being renamed must not be cut off."""
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            ident, url, work = item
            try:
                work()
                self._done.append((ident, None))
            except DownloadError as error:
                self._done.append((ident, error))
            except Exception as exc:  # a bug must fail the file, not hang the batch
                self._done.append((ident, DestinationError(url, f"cannot publish: {exc!r}")))
