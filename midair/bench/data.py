"""Data sets: deterministic files generated once, a manifest, file-by-file checks.

A client that is fast but writes wrong bytes has failed, so every run is
checked against the sha256 recorded when the files were made. Files are
generated from a seeded PRNG, so the same parameters give the same bytes on
every machine, and a cache directory keeps them between runs (the manifest is
written last and atomically: a half-made cache is never taken for a whole one).

Before each run its files are read into the page cache (``into_page_cache``):
the server must send every client its files from memory.  Cached pages that go
unread for a while do not stay: this machine's kernel pages out cold memory
(DAMON), ~23 MiB of bulk's 2 GiB file in two idle minutes, and a client whose
server reads from disk meanwhile is measured slower for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from midair.bench.scenarios import TINY_BODY

__all__ = [
    "MANIFEST",
    "Dataset",
    "TinySet",
    "Verification",
    "into_page_cache",
    "make_dataset",
    "tiny_set",
    "verify",
]

MANIFEST = "manifest.json"
_CHUNK = 8 << 20  # big files are generated and hashed this much at a time


@dataclass(frozen=True)
class Dataset:
    """Files under ``root`` (names sorted = manifest order) with their sha256."""

    root: Path
    size: int
    sha256: dict[str, str]

    @property
    def names(self) -> list[str]:
        return sorted(self.sha256)

    def subset(self, count: int) -> dict[str, str]:
        """The first ``count`` files' digests: sweep points reuse one data set."""
        return {n: self.sha256[n] for n in self.names[:count]}


@dataclass(frozen=True)
class TinySet:
    """A ``tiny`` scenario's files (``list``): none on disk, as a list of millions would
    need millions of inodes; nginx answers every ``/tiny/`` path with ``TINY_BODY``."""

    root: Path  # an empty directory: nginx's root
    count: int
    size: int = len(TINY_BODY)
    prefix: str = "tiny/"  # the URL path the names are under

    @property
    def names(self) -> list[str]:
        return [f"t{i}" for i in range(self.count)]

    def subset(self, count: int) -> dict[str, str]:
        return dict.fromkeys(self.names[:count], hashlib.sha256(TINY_BODY).hexdigest())


def tiny_set(work: Path, count: int) -> TinySet:
    root = work / "tiny-root"
    root.mkdir(parents=True, exist_ok=True)
    return TinySet(root, count)


def dataset_dir(cache: Path, count: int, size: int, seed: str) -> Path:
    return cache / f"{seed}-{count}x{size}"


def make_dataset(cache: Path, count: int, size: int, seed: str) -> Dataset:
    """``count`` files of ``size`` bytes under ``cache``; reused when already made."""
    root = dataset_dir(cache, count, size, seed)
    wanted = {"count": count, "size": size, "seed": seed}
    cached = _load_manifest(root, wanted)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    sums = {
        f"f{i:05d}.bin": _write_file(root / f"f{i:05d}.bin", seed, i, size) for i in range(count)
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({**wanted, "sha256": sums}, indent=0))
    tmp.replace(root / MANIFEST)
    return Dataset(root, size, sums)


def _write_file(path: Path, seed: str, index: int, size: int) -> str:
    """Write one file in chunks (2 GiB never sits in memory) and return its sha256."""
    rng = random.Random(f"{seed}:{index}")
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for start in range(0, size, _CHUNK):
            chunk = rng.randbytes(min(_CHUNK, size - start))
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def _load_manifest(root: Path, wanted: dict[str, object]) -> Dataset | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if any(data.get(k) != v for k, v in wanted.items()):
        return None
    sums: dict[str, str] = data["sha256"]
    size = int(data["size"])
    if not all(_size(root / name) == size for name in sums):
        return None
    return Dataset(root, size, sums)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


@dataclass(frozen=True)
class Verification:
    """What a client left in its output directory, compared with the manifest."""

    ok: int
    missing: list[str]
    wrong: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.wrong


def into_page_cache(root: Path, names: list[str]) -> None:
    """Read ``names`` under ``root`` into the page cache: ``sendfile`` to /dev/null, which
    reads only the pages not cached yet and copies none (~50 ms for a cached 2 GiB)."""
    with open(os.devnull, "wb") as null:
        for name in names:
            with open(root / name, "rb") as f:
                _read_through(f.fileno(), null.fileno())


def _read_through(src: int, null: int) -> None:
    try:
        while os.sendfile(null, src, None, 1 << 30):
            pass
    except OSError:  # no sendfile to a device here: read instead
        with contextlib.suppress(OSError):
            while os.read(src, _CHUNK):
                pass


def verify(out_dir: Path, expected: dict[str, str]) -> Verification:
    """sha256 every expected file; a missing or different file is named."""
    ok, missing, wrong = 0, [], []
    for name, digest in sorted(expected.items()):
        path = out_dir / name
        if not path.is_file():
            missing.append(name)
            continue
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() == digest:
                ok += 1
            else:
                wrong.append(name)
    return Verification(ok, missing, wrong)
