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

Whose file is it?  A file (its tag) or a part file (its control file) names the
URL midair made it for; a re-run's job takes it as its own (``made_for``) when
that is its URL exactly, or, for a signed URL whose signature changes between
runs, when both hold:

- the URLs differ in signing parameters only (``differs_in_signature_only``:
  same scheme, host, port, path and every other query parameter; the differing
  ones named as signatures, tokens and expiry times are, by S3, GCS, Azure,
  CloudFront, Akamai and most CDNs, see ``SIGNING_PARAMETERS``), and
- the job claims the path alone: as its first choice, or as the file its URL
  owns by step 1 (``by_name``, which the batch grants only then; the other jobs
  of a clash, numbered by step 2, go by exact URL only).

Step 1 and step 2's order go by a URL's ``identity``, its signing parameters
dropped, so a clash of signed URLs (``f?id=1&token=..``, ``f?id=2&token=..``)
keeps its numbers when every signature changes.

``download.php?id=1`` and ``?id=2`` differ in ``id``, no signing parameter: they
never take each other's file, whichever is in the batch and whatever ran before;
a batch holding both numbers them by step 1 and 2.  A query parameter this list
does not know keeps the old behaviour (the file is another URL's: fetched again
under a number), never a wrong file.  Safety nets: a part file so taken resumes
only if the server still answers its validator (``If-Range``), else it restarts
from zero; a finished file must have the size its tag records.  The limit: a
parameter named like a signature that selects the file (``get?token=<file id>``)
listed alone in a later run is taken for the earlier file of its name when the
two have one size (in one batch they clash, and go by exact URL).  The journal
applies the same rule to the names it recorded (``midair.journal.sort_out``), for
files without a tag (a copied directory, a file system without user xattrs).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from .naming import numbered
from .records import Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final, Protocol

    class Claims(Protocol):
        """Path -> the job that claimed it: what the batch needs of a dict.  A list of
        millions gives one that keeps its oldest entries on disk (``midair.spool``)."""

        def __contains__(self, key: object, /) -> bool: ...
        def __getitem__(self, key: str, /) -> int: ...
        def __setitem__(self, key: str, value: int, /) -> None: ...
        def __delitem__(self, key: str, /) -> None: ...
        def get(self, key: str, /) -> int | None: ...
        def pop(self, key: str, default: None, /) -> int | None: ...
        def setdefault(self, key: str, default: int, /) -> int: ...
        def update(self, entries: Mapping[str, int], /) -> None: ...


class Wish(Record):
    """One job's claim before it is settled.  (Records, not NamedTuples: ``typing``'s
    import is ~2 ms of every start.)"""

    __match_args__ = ("ident", "url", "first", "fixed")
    __slots__ = __match_args__

    def __init__(self, ident: int, url: str, first: str, fixed: bool) -> None:
        self.ident: Final = ident
        self.url: Final = url  # its ``identity``: the URL without signing parameters
        self.first: Final = first  # its first-choice path: ``out=`` or the URL's name
        self.fixed: Final = fixed  # ``out=`` names it: ``first`` or a number of it only


class Settled(Record):
    __match_args__ = ("placed", "beaten")
    __slots__ = __match_args__

    def __init__(self, placed: dict[int, tuple[str, int]], beaten: dict[int, int]) -> None:
        self.placed: Final = placed  # ident -> its path and that path's number
        self.beaten: Final = beaten  # ident -> the job that took its path (no_clobber)


def settle(
    claims: Claims,
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


def _keep_owned(claims: Claims, wish: Wish, path: str, settled: Settled) -> None:
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


def _first_wins(claims: Claims, base: str, waiting: list[Wish], settled: Settled) -> None:
    for wish in waiting:
        winner = claims.setdefault(base, wish.ident)
        if winner == wish.ident:
            settled.placed[wish.ident] = (base, 0)
        else:
            settled.beaten[wish.ident] = winner


def _number(
    claims: Claims,
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


# Query parameters that sign or expire a URL, not name what it points at (lower case):
# AWS S3 and CloudFront, Google Cloud Storage, Azure SAS, Alibaba OSS, Akamai, and the
# generic names CDNs use (Bunny, Fastly, KeyCDN, Nginx secure_link).
SIGNING_PREFIXES = ("x-amz-", "x-goog-", "x-oss-")
SIGNING_PARAMETERS = frozenset(
    {
        "awsaccesskeyid", "googleaccessid", "ossaccesskeyid", "signature", "expires",
        "policy", "key-pair-id", "sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr",
        "sip", "si", "skoid", "sktid", "skt", "ske", "sks", "skv", "hdnts", "__token__",
        "token", "access_token", "auth", "expiry", "exp", "sign", "md5", "verify",
    }
)  # fmt: skip


def made_for(owner: str, url: str, by_name: bool) -> bool:
    """Whether a file midair made for ``owner`` (a URL) is the file of the job for ``url``:
    the same URL, or (``by_name``: the job claims the path alone) one that differs in its
    signing parameters only (see the module's docstring)."""
    return owner == url or (by_name and differs_in_signature_only(owner, url))


def identity(url: str) -> str:
    """``url`` without its signing parameters: what stays of a signed URL from run to run.
    Who owns a file and the order of a clash go by it (``Wish.url``), so a clash of signed
    URLs keeps its numbers when every signature changes."""
    if "?" not in url:
        return url
    base, _, query = url.partition("?")
    kept = _unsigned(query)
    return f"{base}?{'&'.join(kept)}" if kept else base


def differs_in_signature_only(a: str, b: str) -> bool:
    """Whether URLs ``a`` and ``b`` are one scheme, host, port, path and query but for
    the values of signing parameters (added, dropped or changed): a signed URL anew."""
    base_a, _, query_a = a.partition("?")
    base_b, _, query_b = b.partition("?")
    if base_a != base_b or query_a == query_b:
        return False
    return _unsigned(query_a) == _unsigned(query_b)


def _unsigned(query: str) -> list[str]:
    """The query's parameters that are no signing parameter, in order, as written."""
    return [pair for pair in query.split("&") if pair and not _signing(pair)]


def _signing(pair: str) -> bool:
    name = pair.partition("=")[0].lower()
    return name in SIGNING_PARAMETERS or name.startswith(SIGNING_PREFIXES)
