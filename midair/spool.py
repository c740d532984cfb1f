"""What a run must remember per job, on disk once it outgrows memory.

A batch remembers a little of every job to its end, whatever its length: the
URL that collapses a repeat of the same line (``run.iter_distinct``), and the
name it claimed, so a clash with a name taken long before is still found
(``Batch``'s claims).  That is ~230 bytes a job in memory: 2.3 GB for a
10,000,000-line list.  Here both live in a dict (or set) until it holds
``LIMIT`` entries; then its oldest move to a temporary SQLite database (the
run's ``Spool``: on disk, deleted when closed) an eighth at a time (~40 ms: a
stop is never held long), so memory stays flat in list length and a list that
fits is never slowed.

Keys go to disk as 16-byte BLAKE2b digests, not their text: 10,000,000 names are
~400 MB of temporary disk instead of ~1 GB.  A digest stands for its text (two
texts share one by chance with odds of ~1e-25 in such a list).  A lookup that
misses memory costs a query (~2 us) only when a Bloom filter of what spilled
(``_Filter``) does not rule the key out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    import sqlite3

    from .core.claims import Claims

LIMIT = 1 << 17  # entries held in memory before they move to disk (~15-25 MB of names)


def chunk(limit: int) -> int:
    """How many entries move to disk at once, once ``limit`` are held."""
    return max(1, limit // 8)


def digest(key: str) -> bytes:
    import hashlib  # here: only a run that spilled pays its import

    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Spool:
    """A run's temporary database, made at first use (most runs never need it)."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._tables = 0

    def table(self, columns: str) -> tuple[sqlite3.Connection, str]:
        """A new table keyed by a 16-byte digest, with ``columns`` after the key."""
        if self._db is None:
            import sqlite3  # here: only a run that spills pays its import (~3 ms)

            # "": a private on-disk database in the temporary directory, deleted at close;
            # nothing here must outlive a crash, so nothing is made durable.
            self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("PRAGMA cache_size=-16384")  # KiB: most of a B-tree's inner pages
        self._tables += 1
        name = f"t{self._tables}"
        self._db.execute(f"CREATE TABLE {name} (key BLOB PRIMARY KEY{columns}) WITHOUT ROWID")
        return self._db, name

    @property
    def used(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class _Filter:
    """Which keys may be on disk (a Bloom filter over Python's string hash, two probes):
    most lookups are of new keys, and this answers those without a query.  16 MiB: at
    10,000,000 keys ~2% of new keys still cost a query."""

    BITS = 1 << 27

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS >> 3)

    def add(self, key: str) -> None:
        h = hash(key)
        bits, i, j = self._bits, h & (self.BITS - 1), (h >> 27) & (self.BITS - 1)
        bits[i >> 3] |= 1 << (i & 7)
        bits[j >> 3] |= 1 << (j & 7)

    def __contains__(self, key: str) -> bool:
        h = hash(key)
        bits, i, j = self._bits, h & (self.BITS - 1), (h >> 27) & (self.BITS - 1)
        return bool(bits[i >> 3] & (1 << (i & 7)) and bits[j >> 3] & (1 << (j & 7)))


class SpilledSet:
    """The part of a set of strings that moved to ``spool``; the caller holds the rest (a
    set) and moves it here when it reaches ``LIMIT`` (``absorb``)."""

    def __init__(self, spool: Spool) -> None:
        self._db, self._table = spool.table("")
        self._select = f"SELECT 1 FROM {self._table} WHERE key = ?"
        self._filter = _Filter()

    def __contains__(self, key: str) -> bool:
        if key not in self._filter:
            return False
        return self._db.execute(self._select, (digest(key),)).fetchone() is not None

    def absorb(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._filter.add(key)
        rows = ((digest(key),) for key in keys)
        _in_one_transaction(self._db, f"INSERT OR IGNORE INTO {self._table} VALUES (?)", rows)


def claims_kept(spool: Spool) -> Callable[[Claims], Claims]:
    """What ``Batch`` calls on its claims every window: past ``LIMIT`` names, a dict of them
    becomes a ``SpilledMap`` (so a list that fits is never slowed by one)."""

    def kept(claims: Claims) -> Claims:
        if isinstance(claims, dict) and len(claims) >= LIMIT:
            spilled = SpilledMap(spool)
            spilled.update(claims)
            return spilled
        return claims

    return kept


class SpilledMap:
    """A mapping of strings to ints, memory-bound as ``SpilledSet``: what ``Batch`` needs
    of a dict for its claims (``core.claims.Claims``).  ``recent`` shadows the disk: an
    entry set again after it spilled is written to memory and wins there; a delete goes
    to both."""

    def __init__(self, spool: Spool, limit: int | None = None) -> None:
        self._spool = spool
        self._limit = LIMIT if limit is None else limit
        self._recent: dict[str, int] = {}
        self._db: sqlite3.Connection | None = None
        self._table = ""
        self._select = ""
        self._filter = _Filter()

    def get(self, key: str) -> int | None:
        value = self._recent.get(key)
        if value is not None or self._db is None or key not in self._filter:
            return value
        row = self._db.execute(self._select, (digest(key),)).fetchone()
        return None if row is None else int(row[0])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> int:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: int) -> None:
        self._recent[key] = value
        while len(self._recent) >= self._limit:
            self._spill()

    def __delitem__(self, key: str) -> None:
        if self.pop(key, None) is None:
            raise KeyError(key)

    def pop(self, key: str, default: None = None) -> int | None:
        value = self.get(key)
        self._recent.pop(key, None)
        if self._db is not None and key in self._filter:  # it may be on disk too
            self._db.execute(f"DELETE FROM {self._table} WHERE key = ?", (digest(key),))
        return value

    def setdefault(self, key: str, value: int) -> int:
        found = self.get(key)
        if found is None:
            self[key] = value
            return value
        return found

    def update(self, entries: Mapping[str, int]) -> None:
        self._recent.update(entries)
        while len(self._recent) >= self._limit:
            self._spill()

    def _spill(self) -> None:
        if self._db is None:
            self._db, self._table = self._spool.table(", value INTEGER NOT NULL")
            self._select = f"SELECT value FROM {self._table} WHERE key = ?"
        recent = self._recent
        oldest = list(itertools.islice(recent, chunk(self._limit)))  # insertion order
        for key in oldest:
            self._filter.add(key)
        rows = [(digest(key), recent.pop(key)) for key in oldest]
        _in_one_transaction(self._db, f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", rows)


def _in_one_transaction(
    db: sqlite3.Connection, sql: str, rows: Iterable[tuple[object, ...]]
) -> None:
    """``executemany`` in one transaction: row by row in autocommit is ~15x slower."""
    db.execute("BEGIN")
    db.executemany(sql, rows)
    db.execute("COMMIT")
