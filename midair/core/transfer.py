"""One download's life: requests, response rules, resume, redirects.

A ``Download`` is pure bookkeeping plus decisions.  It never touches a
connection; the batch scheduler asks it what a response head means and carries
out the answer.  Every HTTP rule about a single file lives here once.
"""

from __future__ import annotations

import math
import re

from . import naming
from .actions import Disk, OnDisk, Resume
from .errors import (
    DownloadError,
    HTTPStatusError,
    IntegrityError,
    ProtocolError,
    RedirectError,
)
from .http import Head, encode_fields, field_key
from .jobs import Job, Options
from .mirrors import Sources
from .records import Record
from .retry import parse_retry_after
from .state import MOVES, DownloadState, StateError
from .urls import URL, resolve_location

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final

    from .segments import Piece, Split

REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
# The fields the rules read, as ``Head.find`` keys (made once, not per response).
_CONTENT_DISPOSITION = field_key(b"content-disposition")
_LOCATION = field_key(b"location")
_ETAG = field_key(b"etag")
_LAST_MODIFIED = field_key(b"last-modified")
_CONTENT_RANGE_FIELD = field_key(b"content-range")
_RETRY_AFTER = field_key(b"retry-after")
_DATE = field_key(b"date")
_LINK = field_key(b"link")
_DIGEST = field_key(b"digest")
_REPR_DIGEST = field_key(b"repr-digest")
_HINTS = re.compile(rb"\n(?:link|digest|repr-digest):")  # Metalink/HTTP's fields
# User headers that must not follow a redirect to another origin.
_ORIGIN_BOUND = frozenset({"authorization", "cookie", "proxy-authorization", "host"})


# --- what a response head means -------------------------------------------------------
class Accept(Record):
    """Write the body from ``offset`` (the download's ``size`` is set, if known)."""

    __match_args__ = ("offset",)
    __slots__ = __match_args__

    def __init__(self, offset: int) -> None:
        self.offset: Final = offset


class Redirect(Record):
    __match_args__ = ("url",)
    __slots__ = __match_args__

    def __init__(self, url: URL) -> None:
        self.url: Final = url


class Retry(Record):
    """Try again later; ``wait`` is the server's Retry-After, ``pause_host`` for 429/503."""

    __match_args__ = ("error", "wait", "pause_host")
    __slots__ = __match_args__

    def __init__(
        self, error: DownloadError, wait: float | None = None, pause_host: bool = False
    ) -> None:
        self.error: Final = error
        self.wait: Final = wait
        self.pause_host: Final = pause_host


class Restart(Record):
    """The bytes on disk cannot be continued: drop them and fetch from zero."""

    __match_args__ = ("reason",)
    __slots__ = __match_args__

    def __init__(self, reason: str) -> None:
        self.reason: Final = reason


class Fail(Record):
    __match_args__ = ("error",)
    __slots__ = __match_args__

    def __init__(self, error: DownloadError) -> None:
        self.error: Final = error


class AlreadyComplete(Record):
    __match_args__ = ()
    __slots__ = __match_args__


_FROM_ZERO = Accept(0)  # a whole body: the usual answer, made once (records are immutable)

Decision = Accept | Redirect | Retry | Restart | Fail | AlreadyComplete


# --- naming, before any response ----------------------------------------------------
def name_for(job: Job, url: URL, renames: int = 0) -> str:
    """``job``'s file name while fetching ``url``: ``out=`` or the URL's last segment, then
    ``.N`` after ``renames`` names already taken (duplicates), under its ``dir=``."""
    name = naming.numbered(job.out or naming.name_from_path(url.path), renames)
    return name if not job.subdir else f"{job.subdir}/{name}"


def first_path(job: Job, options: Options) -> str:
    """Where ``job``'s file goes unless a clash or the server renames it: what a batch claims
    for it at its start, made without a ``Download``.  ValueError: it would land outside
    the directory."""
    if job.out is None and job.subdir is None:  # most jobs: the URL alone names the file
        return naming.path_from_url(options.directory, job.url.path)
    return naming.resolve(options.directory, name_for(job, job.url))


def claimable_path(job: Job, options: Options) -> str | None:
    """``first_path``, or None where it would land outside (the batch fails that job)."""
    try:
        return first_path(job, options)
    except ValueError:
        return None


class Download:
    """The state of one job across attempts, redirects and runs."""

    __slots__ = (
        "attempts",
        "checksum",
        "etag",
        "finished",
        "hops",
        "id",
        "job",
        "last_modified",
        "offset",
        "options",
        "path",
        "position",
        "renames",
        "size",
        "source",
        "sources",
        "split",
        "state",
        "target",
        "url",
    )

    def __init__(self, ident: int, job: Job, options: Options) -> None:
        self.id = ident
        self.job = job
        self.options = options
        self.url = self.source = job.url  # source: the URI (of the job's) now in use
        # The job's other URIs, only when it has some (see core/mirrors.py).
        self.sources = Sources(job.mirrors, job.size) if job.mirrors else None
        self.hops = 0
        self.attempts = 0
        self.path: str | None = None
        self.offset = 0  # contiguous bytes on disk, from zero
        self.size: int | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.position = 0  # where the next body byte goes during an exchange
        self.checksum = job.checksum or options.checksum
        self.renames = 0  # how many names were taken before ours: NAME.renames
        self.target: str | None = None  # set when the server names the file
        # Fetched in segments (core/segments.py): the plan and its connections, or None.
        # ``finished`` is set from a control file until a plan takes it over.
        self.split: Split | None = None
        self.finished: tuple[tuple[int, int], ...] | None = None
        self.state = DownloadState.NEW

    def move(self, state: DownloadState) -> None:
        """Go to ``state``; StateError if ``MOVES`` does not allow it from here (a bug)."""
        if state not in MOVES[self.state]:
            raise StateError(f"download {self.id}: {self.state.name} -> {state.name}")
        self.state = state

    # --- naming -----------------------------------------------------------------
    def candidate_name(self) -> str:
        """The name before any response: ``out=`` or the last segment of the URL the user
        gave (of the redirect's, with --trust-server-names), as curl -O and wget name it.

        ``renames`` counts the names already taken, so the candidate becomes
        ``name.1``, ``name.2``, and so on.
        """
        url = self.url if self.options.trust_server_names else self.job.url
        return name_for(self.job, url, self.renames)

    def server_name(self, head: Head) -> str | None:
        """The server's name for the file (Content-Disposition), unless ``out=`` rules."""
        if self.job.out:
            return None
        value = head.text(_CONTENT_DISPOSITION)
        if not value:
            return None
        name = naming.content_disposition_name(value)
        if name is None:
            return None
        return name if not self.job.subdir else f"{self.job.subdir}/{name}"

    @property
    def final_path(self) -> str | None:
        """Where the finished file goes: the server's name if it gave one, else ``path``."""
        return self.target or self.path

    def resolve(self, name: str) -> str:
        return naming.resolve(self.options.directory, name)

    def adopt(self, disk: OnDisk) -> None:
        """Take over what the store found.  Without a validator, nothing can be resumed."""
        self.offset, self.size = 0, None
        self.etag = self.last_modified = None
        self.split = self.finished = None
        if disk.kind is Disk.PARTIAL and disk.resume and disk.resume.url == self.job.url.text:
            record = disk.resume
            if record.etag or record.last_modified:
                self.offset, self.size = disk.offset, record.size
                self.etag, self.last_modified = record.etag, record.last_modified
                if record.ranges is not None:  # written in segments: its ranges, not a prefix
                    self.offset, self.finished = 0, record.ranges

    def record(self) -> Resume:
        split = self.split
        ranges = None if split is None else tuple(split.plan.written())
        return Resume(self.job.url.text, self.size, self.etag, self.last_modified, ranges)

    @property
    def validator(self) -> str | None:
        """The strong ETag, else Last-Modified: what proves two answers are one version."""
        return self.etag or self.last_modified

    # --- the request --------------------------------------------------------------
    @property
    def resume_validator(self) -> str | None:
        """What a Range request is conditioned on (If-Range), or None: nothing to resume.
        Without a validator nothing proves the bytes on disk still fit."""
        return (self.etag or self.last_modified) if self.offset else None

    @property
    def same_origin(self) -> bool:
        """Whether the URL now asked for is on its source's origin (no redirect left it)."""
        return self.url is self.source or self.url.origin == self.source.origin

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(user, password) to send, by curl's precedence: the URL's userinfo, --user,
        netrc.  None once a redirect left the job's origin (another host, port or scheme,
        so an https -> http downgrade too): the one rule ``user_headers`` follows as well."""
        if not self.same_origin:
            return None
        source = self.source
        return source.credentials or self.options.credentials_for(source.host)

    def request_headers(
        self, piece: Piece | None = None, url: URL | None = None, validator: str | None = None
    ) -> list[tuple[str, str]]:
        """midair's headers, each replaced by a user header of the same name, then the
        user's others.  Host comes first, as RFC 9112 asks.  For a file fetched in
        segments: ``piece``, the range asked, of ``url`` (a mirror's; default the one now
        in use), If-Range ``validator`` (none yet for a mirror's first range)."""
        url = url or self.url
        same = self.same_origin if url is self.url else url.origin == self.source.origin
        user = self.user_headers(same)
        given = {name.lower() for name, _ in user}
        ours = [
            ("Host", url.host_header),
            ("User-Agent", self.options.user_agent),
            ("Accept", "*/*"),
            ("Accept-Encoding", "identity"),
        ]
        credentials = self.credentials if same else None
        if credentials is not None:
            ours.append(("Authorization", basic_authorization(*credentials)))
        resume = self.resume_validator
        if piece is not None:
            ours.append(("Range", piece.range_header()))
            ours += [("If-Range", validator)] if validator else []
        elif resume:
            ours += [("Range", f"bytes={self.offset}-"), ("If-Range", resume)]
        host = [h for h in user if h[0].lower() == "host"] or ours[:1]
        rest = [h for h in ours[1:] if h[0].lower() not in given]
        return host + rest + [h for h in user if h[0].lower() != "host"]

    def user_headers(self, same_origin: bool | None = None) -> list[tuple[str, str]]:
        """-H and header= values; those bound to the origin are dropped after a redirect
        to another one (credentials, and a Host meant for the first server), and for a
        mirror's ranges (``same_origin`` False)."""
        if same_origin is None:
            same_origin = self.same_origin
        return [
            (name, value)
            for name, value in (*self.options.headers, *self.job.headers)
            if same_origin or name.lower() not in _ORIGIN_BOUND
        ]

    # --- the response -------------------------------------------------------------
    def on_head(self, head: Head, wall: float | None = None) -> Decision:
        """What ``head`` means.  ``wall``: the wall-clock time now (POSIX seconds), if the
        caller knows it; a Retry-After date is measured against it when no Date came."""
        status = head.status
        if status == 200:  # first: nearly every response
            self._hints(head)
            return self._full(head)
        if status in REDIRECTS:
            self._hints(head)  # a mirror redirector names the mirrors on its 302
            return self._redirect(head)
        if status == 206:
            return self._partial(head)
        if status == 416 and self.offset:
            return self._unsatisfiable(head)
        error = HTTPStatusError(self.url.text, self._status_reason(status), status=status)
        if error.retryable:
            return self._retry_or_end(error, _retry_after(head, wall))
        return Fail(error)

    def _hints(self, head: Head) -> None:
        """Metalink/HTTP (core/metalink_http.py): the mirrors (``Link: rel=duplicate``)
        and the digest the answer names become the download's, unless it has a digest."""
        if not head.has(_HINTS):  # nearly every answer: one search, not three
            return
        if head.find(_LINK) is not None:
            from .metalink_http import duplicates

            self._add_mirrors(duplicates(head.every(_LINK), self.url))
        if self.checksum is None:
            from .metalink_http import digest

            self.checksum = digest([*head.every(_DIGEST), *head.every(_REPR_DIGEST)])

    def _add_mirrors(self, urls: list[URL]) -> None:
        known = {self.url, self.source, *(self.sources.left if self.sources else ())}
        new = tuple(url for url in urls if url not in known)
        if not new:
            return
        if self.sources is None:
            self.sources = Sources(new, self.job.size)
        else:
            self.sources.left.extend(new)

    def _status_reason(self, status: int) -> str:
        if status != 401:
            return f"HTTP {status}"
        if self.credentials is not None or any(
            name.lower() == "authorization" for name, _ in self.user_headers()
        ):  # refused: asking again with the same would not help
            return "HTTP 401: the server refused the credentials"
        return "HTTP 401: authentication required (give --user, --netrc or user:password@)"

    def _retry_or_end(self, error: HTTPStatusError, wait: float | None) -> Decision:
        """Retry, or end this file at once when the server asks for a longer wait than
        --max-retry-wait allows: waiting less would only be refused again.  Other files
        of the host are not held back for it; each asks the server for itself."""
        limit = self.options.max_retry_wait
        if wait is not None and wait > limit:
            reason = f"server asks to wait {wait:g} s, more than --max-retry-wait {limit:g} s"
            return Fail(
                HTTPStatusError(error.url, f"{error.reason}: {reason}", status=error.status)
            )
        return Retry(error, wait, pause_host=error.status in (429, 503))

    def _redirect(self, head: Head) -> Decision:
        location = head.text(_LOCATION)
        if not location:
            return Fail(RedirectError(self.url.text, f"HTTP {head.status} without Location"))
        if self.hops >= self.options.max_redirects:
            return Fail(
                RedirectError(
                    self.job.url.text, f"more than {self.options.max_redirects} redirects"
                )
            )
        try:
            target = resolve_location(self.url, location)
        except ValueError as exc:
            return Fail(RedirectError(self.url.text, f"redirect refused: {exc}"))
        return Redirect(target)

    def _full(self, head: Head) -> Decision:
        self.etag = _strong_etag(head)
        self.last_modified = head.text(_LAST_MODIFIED)
        self.offset, self.size = 0, head.content_length
        if wrong := self._wrong_size(self.size):
            return Fail(IntegrityError(self.url.text, wrong))
        if self.size is None:  # no length given: the body must still end at the job's size
            self.size = self.job.size
        return self._check_limit() or _FROM_ZERO

    def _wrong_size(self, size: int | None) -> str | None:
        """Why ``size``, declared by this source, is not the file's: not the job's own
        size (a Metalink's), or not what an earlier mirror served."""
        expected = self.job.size
        if size is not None and expected is not None and size != expected:
            return f"serves {size} bytes where {expected} were expected"
        return self.sources.wrong_size(size) if self.sources is not None else None

    def _partial(self, head: Head) -> Decision:
        match = _CONTENT_RANGE.fullmatch((head.text(_CONTENT_RANGE_FIELD) or "").strip())
        if not match:
            return Restart("206 without a usable Content-Range")
        start, end, total = int(match[1]), int(match[2]), match[3]
        size = None if total == "*" else int(total)
        if wrong := self._wrong_size(size):
            return Fail(IntegrityError(self.url.text, wrong))
        if start != self.offset or (size is not None and end != size - 1):
            return Restart(f"Content-Range {match[0]!r} does not continue at byte {self.offset}")
        length = head.content_length
        if length is not None and length != end - start + 1:
            return Retry(
                ProtocolError(
                    self.url.text,
                    f"Content-Length {length} does not match Content-Range {match[0]!r}",
                )
            )
        if self.size is not None and size is not None and size != self.size:
            return Restart(f"the size changed from {self.size} to {size}")
        etag = head.text(_ETAG)
        if self.etag and etag and etag != self.etag:
            return Restart("the ETag changed")
        modified = head.text(_LAST_MODIFIED)
        if self.last_modified and modified and modified != self.last_modified:
            return Restart("Last-Modified changed")
        self.size = size if size is not None else self.size
        return self._check_limit() or Accept(start)

    def _unsatisfiable(self, head: Head) -> Decision:
        match = _UNSATISFIED_RANGE.search(head.text(_CONTENT_RANGE_FIELD) or "")
        if match and int(match[1]) == self.offset and self.size in (None, self.offset):
            self.size = self.offset
            return AlreadyComplete()
        return Restart("416 for a range that should exist")

    def _check_limit(self) -> Fail | None:
        limit = self.options.max_filesize
        if limit is not None and self.size is not None and self.size > limit:
            return Fail(IntegrityError(self.url.text, f"size {self.size} exceeds --max-filesize"))
        return None

    def body_limit(self) -> float:
        """Where an accepted body must end at the latest: the declared size, and
        --max-filesize.  Nothing past it reaches the disk."""
        size, limit = self.size, self.options.max_filesize
        if limit is None:
            return math.inf if size is None else size
        return limit if size is None else min(size, limit)

    def body_overflow(self, end: int) -> DownloadError:
        """Why a body that would reach ``end`` went past ``body_limit``."""
        if self.size is not None and end > self.size:
            return ProtocolError(self.url.text, f"more body than the declared {self.size} bytes")
        return IntegrityError(
            self.url.text, f"body exceeds --max-filesize {self.options.max_filesize}"
        )

    def short_body(self) -> DownloadError | None:
        if self.size is not None and self.position != self.size:
            return ProtocolError(
                self.url.text, f"body ended at {self.position} of {self.size} bytes"
            )
        return None


def _strong_etag(head: Head) -> str | None:
    """The answer's ETag if it is a strong one: a weak one (W/) proves no byte equal."""
    etag = head.text(_ETAG)
    return etag if etag and not etag.startswith("W/") else None


def validator_of(head: Head) -> str | None:
    """What an answer is conditioned on for If-Range: its strong ETag, else Last-Modified
    (``Download.validator`` of the download it answers)."""
    return _strong_etag(head) or head.text(_LAST_MODIFIED)


def content_range(head: Head) -> tuple[int, int, int | None] | None:
    """Content-Range's (first, last, total) (total None for ``*``), None if absent or bad."""
    match = _CONTENT_RANGE.fullmatch((head.text(_CONTENT_RANGE_FIELD) or "").strip())
    if not match:
        return None
    return int(match[1]), int(match[2]), None if match[3] == "*" else int(match[3])


def _retry_after(head: Head, wall: float | None) -> float | None:
    return parse_retry_after(head.text(_RETRY_AFTER), head.text(_DATE), wall)


def basic_authorization(user: str, password: str) -> str:
    """The Basic ``Authorization`` value (RFC 7617, UTF-8 as curl sends it)."""
    import base64  # here: only a URL with credentials needs it (with struct: start-up time)

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class RequestFields:
    """The encoded header lines of each download's next request, for one batch's options.

    A fresh GET's headers depend only on the Host asked, whether a redirect left the
    job's origin, and the job's own headers: thousands of downloads share a few sets,
    so each set is built and checked once.  A resume (Range, If-Range) is built whole,
    each time, as is any download with other options than the batch's.
    """

    LIMIT = 4096  # distinct sets kept; one host per job must not grow this for ever

    def __init__(self, options: Options) -> None:
        self.options = options
        self._known: dict[tuple[object, ...], bytes] = {}

    def of(self, download: Download) -> bytes:
        resuming = download.offset and download.resume_validator  # no property call at 0
        if resuming or download.options is not self.options:
            return encode_fields(download.request_headers())
        key = (
            download.url.host_header,
            download.same_origin,
            download.job.headers,
            download.source.credentials,  # None unless the URL had userinfo
        )
        fields = self._known.get(key)
        if fields is None:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            fields = self._known[key] = encode_fields(download.request_headers())
        return fields
