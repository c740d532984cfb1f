"""Where clients download to: tmpfs by default, a disk when asked, and which it was.

On a disk, creating, writing and closing thousands of files costs every client
the same kernel time and hides what the client itself costs per file; on tmpfs
that cost is small, so the client's own CPU shows. A disk-backed run is still
offered (``--downloads disk``, on the data cache's file system): it is what
users see, and the only place where fsync means anything, so there the bench
also measures what midair's durable publication costs (``durable``).

Every report names the directory, its mount point and file-system type, read
from /proc/mounts.

On tmpfs a run's bytes go into memory the kernel takes from its free pages, and
in a virtual machine that reports free pages to its host (virtio-balloon free
page reporting) a page freed a second or two ago may no longer be backed: the
first write to it waits for the host.  Measured on the bench's 2-core VM, 2 GiB
written into such pages took 1.2-4 s of the writer's CPU (up to 14 s into memory
long unused) instead of 0.6 s, whoever the writer was, depending on how long ago the
previous run's files were deleted: in bulk that, not the client, set the
ranking.  So before every run on a memory file system the bench writes as many
bytes as the run will into a scratch file there and deletes it (``prefault``):
each client starts with the same freshly used, backed memory, as on a machine
without a host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MEMORY_FS", "Downloads", "choose_downloads", "mount_of", "prefault"]

MEMORY_FS = frozenset({"tmpfs", "ramfs"})  # nothing to fsync to
PREFERRED_TMPFS = Path("/dev/shm")
_MARGIN = 256 << 20  # bytes beyond the largest run's output
_MOUNTS = Path("/proc/mounts")
_KERNEL_TREES = ("/sys", "/proc", "/dev")  # tmpfs mounts there are not for files of ours
_PREFAULT_BLOCK = 1 << 20
_PREFAULT_MARGIN = 32 << 20  # a run's metadata and part files' slack


@dataclass(frozen=True)
class Downloads:
    """The directory the bench makes its work directory in, and what it sits on."""

    path: Path
    mount: str
    fstype: str
    choice: str  # tmpfs | disk | DIR, as asked
    note: str = ""

    @property
    def durable(self) -> bool:
        """True where fsync reaches stable storage, so its cost can be measured."""
        return self.fstype not in MEMORY_FS

    def as_dict(self) -> dict[str, str]:
        return {
            "path": str(self.path),
            "mount": self.mount,
            "fstype": self.fstype,
            "choice": self.choice,
            "note": self.note,
        }


def choose_downloads(choice: str, cache: Path, needed: int) -> Downloads:
    """``tmpfs`` (a writable tmpfs with room for ``needed`` bytes), ``disk``, or a DIR."""
    if choice == "tmpfs":
        return _tmpfs_or_disk(cache, needed + _MARGIN)
    path = cache if choice == "disk" else Path(choice)
    path.mkdir(parents=True, exist_ok=True)
    room = "" if _writable_with(path, needed) else f"{path} may not have {_gib(needed)} free"
    return _describe(path, choice, room)


def _tmpfs_or_disk(cache: Path, needed: int) -> Downloads:
    found = _roomy_tmpfs(needed)
    if found is not None:
        return _describe(found, "tmpfs")
    cache.mkdir(parents=True, exist_ok=True)
    return _describe(
        cache,
        "tmpfs",
        f"no writable tmpfs with {_gib(needed)} free: "
        "downloads went to the data cache's file system",
    )


def _describe(path: Path, choice: str, note: str = "") -> Downloads:
    mount, fstype = mount_of(path)
    return Downloads(path.resolve(), mount, fstype, choice, note)


def _roomy_tmpfs(needed: int) -> Path | None:
    """/dev/shm first, then any other tmpfs the user can write to (/run/user/UID, /tmp)."""
    others = [
        Path(m)
        for m, fs in _mounts()
        if fs == "tmpfs" and not any(m.startswith(k) for k in _KERNEL_TREES)
    ]
    for candidate in [PREFERRED_TMPFS, *others]:
        if mount_of(candidate)[1] == "tmpfs" and _writable_with(candidate, needed):
            return candidate
    return None


def _writable_with(path: Path, needed: int) -> bool:
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK) and stats.f_bavail * stats.f_frsize >= needed


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def prefault(directory: Path, size: int) -> None:
    """Write ``size`` bytes (and a margin) of zeros into a scratch file in ``directory``,
    then delete it: the next writer there gets memory just used (see the module docstring).
    Written, not fallocated: tmpfs's fallocate reserves pages without touching them."""
    scratch = directory / ".midair-bench-prefault"
    zeros = bytes(_PREFAULT_BLOCK)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(-(-(size + _PREFAULT_MARGIN) // _PREFAULT_BLOCK)):
            os.write(fd, zeros)
    finally:
        os.close(fd)
        scratch.unlink()


def mount_of(path: Path, mounts_text: str | None = None) -> tuple[str, str]:
    """(mount point, fstype) of the mount holding ``path``: the longest matching point wins,
    and of equal ones the last mounted (it hides the others)."""
    target = str(Path(path).resolve())
    best = ("/", "?")
    for point, fstype in _mounts(mounts_text):
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def _mounts(text: str | None = None) -> list[tuple[str, str]]:
    """(mount point, fstype) per line of /proc/mounts, in mount order."""
    if text is None:
        try:
            text = _MOUNTS.read_text()
        except OSError:
            return []
    pairs = [line.split()[1:3] for line in text.splitlines() if len(line.split()) >= 3]
    return [(_unescape(point), fstype) for point, fstype in pairs]


def _unescape(field: str) -> str:
    r"""/proc/mounts writes space, tab, newline and backslash as \040, \011, \012, \134."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field
