"""What ``midair serve`` sends: generated files and files from a real directory.

Generated files must be checkable by the test that asked for them without
storing anything, and cheap enough to serve at line rate. So every generated
file is a window onto one fixed 1 MiB block of seeded pseudo-random bytes:
byte ``i`` of file (NAME, size, version) is ``BLOCK[(i + k) % BLOCK_SIZE]``,
where the offset ``k`` comes from a SHA-256 of the three. Serving is slicing a
doubled copy of the block (any window up to 1 MiB is contiguous, so no copy),
and a test recomputes the bytes or the digest with ``expected_bytes`` /
``expected_sha256``.

The block's bytes are not compressible and do not repeat inside 1 MiB, so a
client that writes a chunk to the wrong offset is caught by the checksum.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

__all__ = [
    "BLOCK_SIZE",
    "LAST_MODIFIED",
    "BytesBody",
    "FileResource",
    "GeneratedResource",
    "expected_bytes",
    "expected_sha256",
    "find_file",
]

BLOCK_SIZE = 1 << 20
_SEED = 0x6D696461  # "mida": any fixed value; changing it changes every file
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"  # fixed, so If-Range by date is testable


@functools.cache
def _doubled_block() -> memoryview:
    """The block twice over, built once: a window of <= 1 MiB never wraps."""
    block = random.Random(_SEED).randbytes(BLOCK_SIZE)
    return memoryview(block + block)


def _digest(name: str, size: int, version: str) -> bytes:
    """One hash drives both content offset and ETag, so they change together."""
    return hashlib.sha256(f"{name}\0{size}\0{version}".encode()).digest()


def _window(offset: int, start: int, length: int) -> memoryview:
    """Bytes ``start .. start+length`` of a file shifted by ``offset``; length <= 1 MiB."""
    base = (start + offset) % BLOCK_SIZE
    return _doubled_block()[base : base + length]


def expected_bytes(name: str, size: int, version: str = "") -> bytes:
    """The exact body of ``GET /gen/NAME?size=SIZE&version=VERSION``."""
    return b"".join(GeneratedResource(name, size, version).chunks(0, size))


def expected_sha256(name: str, size: int, version: str = "") -> str:
    """Hex SHA-256 of that body, computed without holding it all in memory."""
    digest = hashlib.sha256()
    for chunk in GeneratedResource(name, size, version).chunks(0, size):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class GeneratedResource:
    """A deterministic file that exists only as (name, size, version)."""

    name: str
    size: int
    version: str = ""

    @property
    def etag(self) -> str:
        return '"g' + _digest(self.name, self.size, self.version)[:12].hex() + '"'

    @property
    def last_modified(self) -> str:
        return LAST_MODIFIED

    def read(self, start: int, length: int) -> memoryview:
        """Up to ``length`` bytes (at most one block) from ``start``, zero-copy."""
        offset = int.from_bytes(_digest(self.name, self.size, self.version)[12:20], "big")
        return _window(offset, start, min(length, BLOCK_SIZE, self.size - start))

    def chunks(self, start: int, end: int) -> list[memoryview]:
        """The bytes ``start .. end`` as block-sized views."""
        return [self.read(pos, end - pos) for pos in range(start, end, BLOCK_SIZE)]


@dataclass(frozen=True, slots=True)
class FileResource:
    """A file under ``--root``; read on demand so big files cost no memory."""

    path: Path
    size: int
    mtime: float
    version: str = ""

    @property
    def etag(self) -> str:
        key = f"{self.path}\0{self.mtime}"
        return '"f' + _digest(key, self.size, self.version)[:12].hex() + '"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)

    def read(self, start: int, length: int) -> bytes:
        """Open, read, close: no descriptor outlives a chunk, even on a reset."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, min(length, BLOCK_SIZE), start)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class BytesBody:
    """A small in-memory body: error texts, stats JSON."""

    data: bytes
    content_type: str = "text/plain; charset=utf-8"

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, start: int, length: int) -> memoryview:
        return memoryview(self.data)[start : start + length]


def find_file(root: Path, rel: str, version: str = "") -> FileResource | None:
    """``root/rel`` if it is a regular file inside ``root`` (after symlinks), else None."""
    base = root.resolve()
    try:
        path = (base / unquote(rel).lstrip("/")).resolve()
        info = path.stat()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return FileResource(path, info.st_size, info.st_mtime, version)
