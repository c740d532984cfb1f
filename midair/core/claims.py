"""Which job gets which path: duplicates numbered as aria2 does, stable across runs.

Two jobs of a batch may want one path (``.../file?id=1`` and ``.../file?id=2``).
One is saved as ``file``, the others as ``file.1``, ``file.2``, ...  Which one
gets which number must not depend on the order of the list: a re-run with the
list reversed must find each file where the run before left it, not swap them
(and fetch both again).  So the numbers are a function of the set of URLs and
of what is on disk, in two steps:

1. a URL that owns a file (``owned``: the store's survey of which URL midair made
   each file for, the one place a journal could answer instead) keeps it: a
   duplicate's ``file.1``, a server's name, a redirect's name;
2. the other jobs of each shared path, in the order of their URLs, take the
   lowest numbers that no other job claims and no file on disk holds.

With ``no_clobber`` step 2 gives a shared path to the first job of the list
and fails the others.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from .naming import numbered
from .records import Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final


class Wish(Record):
    """One job's claim before it is settled.  (Records, not NamedTuples: ``typing``'s
    import is ~2 ms of every start.)"""

    __match_args__ = ("ident", "url", "first", "fixed")
    __slots__ = __match_args__

    def __init__(self, ident: int, url: str, first: str, fixed: bool) -> None:
        self.ident: Final = ident
        self.url: Final = url
        self.first: Final = first  # its first-choice path: ``out=`` or the URL's name
        self.fixed: Final = fixed  # ``out=`` names it: ``first`` or a number of it only


class Settled(Record):
    __match_args__ = ("placed", "beaten")
    __slots__ = __match_args__

    def __init__(self, placed: dict[int, tuple[str, int]], beaten: dict[int, int]) -> None:
        self.placed: Final = placed  # ident -> its path and that path's number
        self.beaten: Final = beaten  # ident -> the job that took its path (no_clobber)


def settle(
    claims: dict[str, int],
    movers: Iterable[Wish],
    clashes: Mapping[str, list[Wish]],
    owned: Mapping[str, str],
    taken: Container[str],
    *,
    no_clobber: bool = False,
) -> Settled:
    """Place ``movers`` (jobs whose URL ``owned`` a file) and every job of ``clashes``
    (shared first paths, their wishes in list order).  ``claims`` (path -> job) holds the
    paths claimed by one job alone; it is updated in place.  ``taken``: paths on disk
    that no job may take (other URLs' files, files midair did not make)."""
    settled = Settled({}, {})
    for wish in movers:
        _keep_owned(claims, wish, owned[wish.url], settled)
    for base in sorted(clashes):
        waiting = [wish for wish in clashes[base] if wish.ident not in settled.placed]
        if no_clobber:
            _first_wins(claims, base, waiting, settled)
        else:
            _number(claims, base, sorted(waiting, key=_by_url), clashes, taken, settled)
    return settled


def _by_url(wish: Wish) -> tuple[str, int]:
    return wish.url, wish.ident


def _keep_owned(claims: dict[str, int], wish: Wish, path: str, settled: Settled) -> None:
    number = _number_of(wish.first, path)
    if path in claims or (wish.fixed and number is None) or not _same_directory(wish.first, path):
        return
    if claims.get(wish.first) == wish.ident:
        del claims[wish.first]
    claims[path] = wish.ident
    settled.placed[wish.ident] = (path, number or 0)


def _number_of(first: str, path: str) -> int | None:
    """N if ``path`` is ``numbered(first, N)``, else None."""
    if path == first:
        return 0
    suffix = path[len(first) + 1 :]
    if path.startswith(first + ".") and suffix.isdigit() and suffix[0] != "0":
        return int(suffix)
    return None


def _same_directory(a: str, b: str) -> bool:
    return a.rpartition("/")[0] == b.rpartition("/")[0]


def _first_wins(claims: dict[str, int], base: str, waiting: list[Wish], settled: Settled) -> None:
    for wish in waiting:
        winner = claims.setdefault(base, wish.ident)
        if winner == wish.ident:
            settled.placed[wish.ident] = (base, 0)
        else:
            settled.beaten[wish.ident] = winner


def _number(
    claims: dict[str, int],
    base: str,
    waiting: list[Wish],
    clashes: Container[str],
    taken: Container[str],
    settled: Settled,
) -> None:
    number = 0
    for wish in waiting:
        while _unavailable(numbered(base, number), base, claims, clashes, taken):
            number += 1
        path = numbered(base, number)
        claims[path] = wish.ident
        settled.placed[wish.ident] = (path, number)


def _unavailable(
    path: str, base: str, claims: Container[str], clashes: Container[str], taken: Container[str]
) -> bool:
    """Claimed by a job, held on disk, or the first choice of another shared path."""
    return path in claims or path in taken or (path != base and path in clashes)
