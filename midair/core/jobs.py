"""What to fetch and how: jobs, options, and aria2's input-file format."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator

from .._version import __version__
from .errors import InputError
from .naming import relative_path
from .records import Record, Settings
from .urls import URL, parse_url, parse_urls, redact

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Final

CHECKSUM_ALGORITHMS = {
    "sha-256": "sha256",
    "sha-1": "sha1",
    "sha-512": "sha512",
    "sha-384": "sha384",
    "md5": "md5",
}
HEX_LENGTH = {"sha256": 64, "sha1": 40, "sha512": 128, "sha384": 96, "md5": 32}
# Strongest first: of several digests a file is given (a Metalink's, a server's), the
# first of these is its checksum.
STRENGTH = ("sha512", "sha384", "sha256", "sha1", "md5")


class Checksum(Record):
    """An expected digest: ``algorithm`` is a hashlib name, ``hexdigest`` lower case."""

    __match_args__ = ("algorithm", "hexdigest")
    __slots__ = __match_args__

    def __init__(self, algorithm: str, hexdigest: str) -> None:
        self.algorithm: Final = algorithm
        self.hexdigest: Final = hexdigest

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Parse ``sha-256=HEX`` (aria2's spelling; ``sha256=`` is accepted too)."""
        algo, sep, digest = text.strip().partition("=")
        algo = algo.lower()
        algo = CHECKSUM_ALGORITHMS.get(algo, algo.replace("-", ""))
        digest = digest.strip().lower()
        if not sep or algo not in HEX_LENGTH:
            raise ValueError(
                f"checksum {text!r}: expected ALGO=HEX with ALGO one of "
                f"{', '.join(CHECKSUM_ALGORITHMS)}"
            )
        if len(digest) != HEX_LENGTH[algo] or not re.fullmatch(r"[0-9a-f]+", digest):
            raise ValueError(f"checksum {text!r}: not a {algo} hex digest")
        return cls(algo, digest)


class Pieces(Record):
    """Expected digests of a file's consecutive pieces of ``length`` bytes (a Metalink's
    ``<pieces>``; the last piece may be shorter).  A file fetched in segments (-s) has
    each piece checked as its last byte lands (the store reads it back); a bad one is
    fetched again, its source blamed.  Otherwise the whole-file checksum decides."""

    __match_args__ = ("length", "algorithm", "hexdigests")
    __slots__ = __match_args__

    def __init__(self, length: int, algorithm: str, hexdigests: tuple[str, ...]) -> None:
        self.length: Final = length
        self.algorithm: Final = algorithm  # a hashlib name, as Checksum's
        self.hexdigests: Final = hexdigests


class Job(Record):
    """One file to fetch.  ``out`` and ``subdir`` are validated relative paths.
    ``mirrors``: more places holding the same file, tried in turn when ``url`` fails
    (see core/mirrors.py); the file is named after ``url``.  ``size``: the size the
    file must have (a Metalink's ``<size>``); a source declaring another is dropped.
    ``pieces``: per-piece digests (see ``Pieces``)."""

    __match_args__ = ("url", "out", "subdir", "checksum", "headers", "mirrors", "size", "pieces")
    __slots__ = __match_args__

    def __init__(
        self,
        url: URL,
        out: str | None = None,
        subdir: str | None = None,
        checksum: Checksum | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        mirrors: tuple[URL, ...] = (),
        size: int | None = None,
        pieces: Pieces | None = None,
    ) -> None:
        self.url: Final = url
        self.out: Final = out
        self.subdir: Final = subdir
        self.checksum: Final = checksum
        self.headers: Final = headers
        self.mirrors: Final = mirrors
        self.size: Final = size
        self.pieces: Final = pieces

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> Job:
        return cls.from_urls([url], **kwargs)

    @classmethod
    def from_urls(cls, urls: Iterable[str], **kwargs: object) -> Job:
        """A job for the first of ``urls``, the others its mirrors."""
        texts = [urls] if isinstance(urls, str) else list(urls)
        if not texts:
            raise InputError("urls: expected at least one URL")
        parsed = []
        for url in texts:
            try:
                parsed.append(parse_url(url))
            except (ValueError, TypeError) as exc:
                raise InputError(f"{redact(str(url))}: {exc}") from None
        return cls(parsed[0], mirrors=tuple(parsed[1:]), **kwargs)  # type: ignore[arg-type]


# A netrc entry: (machine, login, password); machine "" is the ``default`` entry.
NetrcEntry = tuple[str, str, str]


class Options(Settings):
    """Everything a batch needs to know.  The defaults here are the CLI's too.

    Every value is checked on construction (``__post_init__``), so the library and
    the command line refuse the same bad values with the same message, which names
    the option as the command line spells it.
    """

    directory: str = "."
    concurrency: int = 100
    per_host: int = 6
    retries: int = 5
    timeout: float = 30.0
    max_retry_wait: float = 60.0
    retry_base: float = 0.25
    max_redirects: int = 10
    headers: tuple[tuple[str, str], ...] = ()
    overwrite: bool = False
    auto_rename: bool = False  # no-op: numbering duplicates is the default (see no_clobber)
    no_clobber: bool = False  # two jobs for one name: the later fails instead of NAME.1
    trust_server_names: bool = False  # name a file after the last redirect's URL (wget)
    checksum: Checksum | None = None
    max_filesize: int | None = None
    # Segments (core/segments.py): a file of known size whose server honours Range is
    # fetched as up to ``split`` ranges at once, none under ``min_split_size`` (aria2's -s,
    # --min-split-size; 1: one connection per file, as curl and wget).
    split: int = 1
    min_split_size: int = 20 << 20
    # A Metalink's URLs of servers in these locations (ISO 3166 codes, lower case) first
    # (aria2's --metalink-location).
    metalink_location: tuple[str, ...] = ()
    lowest_speed: int = 0
    lowest_speed_time: float = 10.0
    # Rate limits in bytes per second (0: none): each file, as aria2's --max-download-limit,
    # and all together, as --max-overall-download-limit; and the least seconds between two
    # requests to one host (core/rate.py).
    max_rate: int = 0
    max_overall_rate: int = 0
    host_delay: float = 0.0
    insecure: bool = False
    ca_certificate: str | None = None
    user_agent: str = f"midair/{__version__}"
    fsync: bool = True  # False: publish without waiting for stable storage (tmpfs, scratch runs)
    # Credentials for URLs without userinfo: --user "USER:PASSWORD", then --netrc's entries
    # (read at the surface).  Never shown: a repr would put them in a traceback.
    user: str | None = None
    netrc: tuple[NetrcEntry, ...] = ()
    # Cookie files (Netscape format), read and written by the session layer, not the core.
    load_cookies: str | None = None
    save_cookies: str | None = None
    http2: bool = True  # offer HTTP/2 by ALPN over TLS (False: --http1.1)
    http2_prior_knowledge: bool = False  # speak HTTP/2 at once on http:// URLs (h2c)
    # Proxies (see core/proxy.py): ``proxy`` for every URL ("" for none, whatever the
    # environment says); else ``proxies``, the environment's by scheme (http, https, all).
    # Not in the repr: a proxy URL may hold a password.
    proxy: str | None = None
    proxies: tuple[tuple[str, str], ...] = ()
    noproxy: str | None = None
    # The batch journal (midair/journal.py), kept by the surface: None runs without one,
    # "" keeps it in the download directory, else the file's name.
    journal: str | None = None
    retry_failed: bool = False  # retry jobs the journal says failed in an earlier run
    verify: bool = (
        False  # a journaled done job is skipped only if its file has its size (and checksum)
    )
    # A .meta4/.metalink URL: fetch the document and download the files it lists (aria2's
    # --follow-metalink), done by the surface (midair/metalink.py); False saves it as is.
    follow_metalink: bool = True

    __secret__ = frozenset({"user", "netrc", "proxy", "proxies"})  # see above

    def __post_init__(self) -> None:
        for name, low in _WHOLE_NUMBERS.items():
            _check_whole(name, getattr(self, name), low)
        for name, positive in _SECONDS.items():
            _check_seconds(name, getattr(self, name), positive)
        if self.max_filesize is not None:
            _check_whole("max_filesize", self.max_filesize, 1)
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, "True or False", getattr(self, name))
        for name in ("directory", "user_agent"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise _bad(name, "a non-empty string", getattr(self, name))
        for name in ("ca_certificate", "load_cookies", "save_cookies", "journal"):
            if not isinstance(getattr(self, name), str | None):
                raise _bad(name, "a file name", getattr(self, name))
        _check_credentials(self.user, self.netrc)
        locations = self.metalink_location
        if not isinstance(locations, tuple) or not all(isinstance(c, str) for c in locations):
            raise _bad("metalink_location", "a tuple of location codes", locations)
        if not isinstance(self.checksum, Checksum | None):
            raise _bad("checksum", "ALGO=HEX", self.checksum)
        _check_value("User-Agent", self.user_agent)
        for name in ("max_rate", "max_overall_rate"):  # or every attempt would fail
            if getattr(self, name) and self.lowest_speed > getattr(self, name):
                raise InputError(
                    f"--lowest-speed {self.lowest_speed} is above "
                    f"{option_flag(name)} {getattr(self, name)}"
                )
        if self.http2_prior_knowledge and not self.http2:
            raise InputError("--http2-prior-knowledge and --http1.1 contradict each other")
        if self.proxy is not None or self.proxies or self.noproxy is not None:
            _check_proxies(self)
        for header in self.headers:
            check_header(*header)

    def credentials_for(self, host: str) -> tuple[str, str] | None:
        """(user, password) for a URL of ``host`` without userinfo: --user, else the netrc
        entry for ``host``, else netrc's default entry (curl's order)."""
        if self.user is not None:
            name, _, password = self.user.partition(":")
            return name, password
        entries = {machine: (login, password) for machine, login, password in self.netrc}
        return entries.get(host.lower()) or entries.get("")


def _check_credentials(user: object, netrc: object) -> None:
    if user is not None and (not isinstance(user, str) or any(c in user for c in "\r\n\0")):
        raise InputError("--user: expected USER:PASSWORD text")  # never the value: a secret
    ok = isinstance(netrc, tuple) and all(
        isinstance(e, tuple) and len(e) == 3 and all(isinstance(v, str) for v in e) for e in netrc
    )
    if not ok:
        raise InputError("--netrc: expected (machine, login, password) entries")


_WHOLE_NUMBERS = {
    "concurrency": 1,
    "per_host": 1,
    "retries": 0,
    "max_redirects": 0,
    "lowest_speed": 0,
    "max_rate": 0,
    "max_overall_rate": 0,
    "split": 1,
    "min_split_size": 1,
}
_SECONDS = {
    "timeout": True,
    "max_retry_wait": False,
    "retry_base": False,
    "lowest_speed_time": True,
    "host_delay": False,
}  # name -> must be above zero
_FLAGS = (
    "overwrite",
    "auto_rename",
    "no_clobber",
    "trust_server_names",
    "insecure",
    "fsync",
    "http2",
    "http2_prior_knowledge",
    "retry_failed",
    "verify",
    "follow_metalink",
)


def option_flag(name: str) -> str:
    """``max_filesize`` -> ``--max-filesize``: messages name options as the CLI spells them."""
    return "--" + name.replace("_", "-")


def _bad(name: str, expected: str, value: object) -> InputError:
    return InputError(f"{option_flag(name)}: expected {expected}, got {value!r}")


def _check_proxies(options: Options) -> None:
    """Each proxy URL parses (the message shows it without credentials)."""
    from .proxy import ProxyChoice  # only a batch with proxies pays for the import

    for name, value in (("proxy", options.proxy), ("noproxy", options.noproxy)):
        if not isinstance(value, str | None):
            raise _bad(name, "a string", value)
    if not all(isinstance(u, str) and s in ("http", "https", "all") for s, u in options.proxies):
        raise InputError("proxies: expected (scheme, URL) pairs, scheme http, https or all")
    try:
        ProxyChoice(options.proxy, dict(options.proxies), options.noproxy)
    except ValueError as exc:
        raise InputError(f"--proxy: {exc}") from None


def _check_whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(name, f"a whole number >= {low}", value)


def _check_seconds(name: str, value: object, positive: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        raise _bad(name, "a number of seconds " + ("> 0" if positive else ">= 0"), value)


# Headers midair writes itself: framing and connection management (a user value would
# desynchronise the exchange) and resume (the core decides what to ask for).
CONTROLLED_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "connection",
        "keep-alive",
        "upgrade",
        "expect",
        "range",
        "if-range",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_header(text: str) -> tuple[str, str]:
    """Parse ``Name: value`` as given to ``-H``, ``header=`` or ``headers=``."""
    name, sep, value = text.partition(":")
    if not sep:
        raise InputError(f"header {text!r}: expected 'Name: value'")
    name, value = name.strip(), value.strip()
    check_header(name, value)
    return name, value


def check_header(name: object, value: object) -> None:
    """A header a user may add: a token name, a value without line breaks, and not one
    that midair must control.  A user header replaces midair's own of the same name."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise InputError(f"header name {name!r}: not a valid HTTP header name")
    if name.lower() in CONTROLLED_HEADERS:
        raise InputError(f"header {name}: midair sets it itself; it cannot be given")
    _check_value(name, value)


def _check_value(name: str, value: object) -> None:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise InputError(f"header {name}: the value must be text without line breaks")


def parse_input_file(
    text: str, source: str, on_bad: Callable[[InputError], None] | None = None, first: int = 1
) -> list[Job]:
    """Parse aria2's input-file format: a URL line, then indented ``key=value`` lines.

    Errors name ``source`` and the line number (``first``: the number of the text's first
    line, for a piece of a longer list), so a user can fix the file.  Without
    ``on_bad`` the first bad entry raises its InputError; with it, each bad entry (a URL
    and its option lines) is handed to ``on_bad`` and left out, and the rest are read.
    """
    plain = _plain_list(text)
    if plain is not None:
        return plain
    jobs: list[Job] = []
    for url_line, url, opts in _entries(text, first):
        try:
            jobs.append(_entry_job(source, url_line, url, opts))
        except InputError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
    return jobs


def iter_input_file(
    lines: Iterable[str], source: str, on_bad: Callable[[InputError], None] | None = None
) -> Iterator[Job]:
    """``parse_input_file`` as the lines come (a file object, stdin): the jobs are made a
    block of lines at a time, so a list of millions is never held whole, and a bad entry is
    found (and raised, or handed to ``on_bad``) when its line is reached."""
    pending: list[str] = []  # the last entry's lines: option lines may follow in the next block
    number = 1  # of pending's first line
    for block in _blocks(lines):
        plain = _plain_block(block)
        if plain is not None:  # no line of it is an option line: pending's entry is whole
            yield from parse_input_file("".join(pending), source, on_bad, number)
            number += _line_count(pending)
            yield from plain[:-1]
            number += _line_count(block[:-1])
            pending = [block[-1]]
            continue
        pending += block
        cut = _last_entry_start(pending)
        yield from parse_input_file("".join(pending[:cut]), source, on_bad, number)
        number += _line_count(pending[:cut])
        pending = pending[cut:]
    yield from parse_input_file("".join(pending), source, on_bad, number)


BLOCK_LINES = 2048  # lines read at a time by ``iter_input_file``


def _blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    it = iter(lines)
    while block := list(itertools.islice(it, BLOCK_LINES)):
        yield block


def _line_count(lines: list[str]) -> int:
    """How many lines ``str.splitlines`` makes of ``lines`` joined (\v, \f... end lines too)."""
    return sum(len(line.splitlines()) or 1 for line in lines)


def _plain_block(block: list[str]) -> list[Job] | None:
    """A block's jobs, one per non-empty line, if every line is a bare URL (else None)."""
    jobs = _plain_list("".join(block))
    if jobs is None or len(jobs) != sum(1 for line in block if line.strip()):
        return None
    return jobs if block[-1].strip() else None


def _last_entry_start(lines: list[str]) -> int:
    """Where the last entry (a URL line and the option or blank lines after it) begins:
    what may still take option lines from the lines to come.  0 when there is none: option
    lines before any URL wait for it, to be one bad entry however long."""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        stripped = line.strip()
        if stripped and line[0] not in " \t" and not stripped.startswith("#"):
            return index
    return 0


def _entry_job(source: str, url_line: int, url: str | None, opts: list[tuple[int, str]]) -> Job:
    if url is None:
        raise InputError(f"{source}:{url_line}: option line before any URL")
    try:  # a line with no options (most lists) is its URL alone: nothing else to read
        return _job(url, opts) if opts or "\t" in url else Job(parse_url(url))
    except _LineError as exc:
        raise InputError(f"{source}:{exc.line}: {exc.message}") from None
    except ValueError as exc:
        raise InputError(f"{source}:{url_line}: {redact(url)}: {exc}") from None


# In an ASCII list without these, every line is one URL alone or empty (no option or
# comment lines, no mirrors), and ``str.split`` cuts it where ``splitlines`` + ``strip``
# would: both treat \n \r \v \f \x1c-\x1e as line ends, and nothing else separates.
_NOT_PLAIN = (" ", "\t", "#", "\x1f")


def _plain_list(text: str) -> list[Job] | None:
    """The jobs of a list of bare URLs (most lists), read without the per-line pass that
    looks for options; None if the text may hold more, or a bad URL (whose error the
    full pass reports with its line number)."""
    if not text.isascii() or any(c in text for c in _NOT_PLAIN):
        return None
    try:
        return [Job(url) for url in parse_urls(text.split())]
    except ValueError:
        return None


class _LineError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _entries(text: str, first: int = 1) -> Iterator[tuple[int, str | None, list[tuple[int, str]]]]:
    """Each URL line with its option lines; option lines before any URL come as one
    entry whose URL is None, so the caller reports them as one bad entry."""
    current: tuple[int, str | None, list[tuple[int, str]]] | None = None
    for number, line in enumerate(text.splitlines(), first):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                current = (number, None, [])
            current[2].append((number, stripped))
            continue
        if current is not None:
            yield current
        # aria2's several tab-separated URIs for one file: the first, then its mirrors.
        current = (number, stripped, [])
    if current is not None:
        yield current


def _job(line: str, opts: Iterable[tuple[int, str]]) -> Job:
    url, *mirrors = (u for u in line.split("\t") if u.strip())
    values: dict[str, object] = {}
    headers: list[tuple[str, str]] = []
    for number, opt in opts:
        key, sep, value = opt.partition("=")
        key = key.strip()
        try:
            if not sep:
                raise ValueError(f"expected key=value, got {opt!r}")
            if key == "out":
                values["out"] = relative_path(value.strip())
            elif key == "dir":
                values["subdir"] = relative_path(value.strip())
            elif key == "checksum":
                values["checksum"] = Checksum.parse(value)
            elif key == "header":
                headers.append(parse_header(value))
            else:
                raise ValueError(f"unknown option {key!r}")
        except (ValueError, InputError) as exc:
            raise _LineError(number, str(exc)) from None
    return Job(
        parse_url(url),
        headers=tuple(headers),
        mirrors=tuple(parse_url(m.strip()) for m in mirrors),
        **values,  # type: ignore[arg-type]
    )
