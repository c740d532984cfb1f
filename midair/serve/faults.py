"""Per-request behaviour of ``midair serve``, chosen by query parameters.

A test asks for the misbehaviour it wants in the URL, so one server serves every
case at once and each request says what it checks. Parameters combine freely;
unknown ones are ignored (a client may add cache-busters). A malformed value
gets ``400``.

Content and pacing (always applied):

- ``size=N``        length of a ``/gen/NAME`` file (default 1 MiB).
- ``version=V``     changes content and ETag of the file: a changed resource.
- ``rate=B``        bytes per second for this response (overrides ``--rate``; 0 = unlimited).
- ``latency=S``     seconds to wait before the response head (overrides ``--latency``).
- ``chunked=1``     ``Transfer-Encoding: chunked`` instead of ``Content-Length``.
- ``cd=NAME``       adds ``Content-Disposition: attachment; filename="NAME"``.
- ``redirect=N``    ``302`` to the same URL with ``redirect=N-1``; ``redirect=0`` serves.
- ``location=URL``  ``302`` to exactly ``URL`` (absolute or relative).
- ``echo=1``        the body is the request's header fields, ``name: value`` a line
  (names lower case): a downloaded file shows what that server was sent.

Credentials and cookies (always applied, before anything else but ``/__stats``):

- ``auth=USER:SHA``   ``401`` with ``WWW-Authenticate: Basic`` unless the request
  carries ``Authorization: Basic`` of ``USER`` and a password whose SHA-256 is the
  hex ``SHA`` (so the URL, which clients print, does not hold the password).
- ``set_cookie=V``    add ``Set-Cookie: V`` verbatim to the response, whatever it is
  (a redirect's too).
- ``cookie=N=V``      ``403`` unless the request's ``Cookie`` holds ``N=V``.

Faults (gated by ``fail_times``):

- ``status=CODE``     answer ``CODE`` (404, 429, 503, ...) with a short text body.
- ``retry_after=V``   add ``Retry-After: V`` verbatim (seconds or an HTTP date).
- ``reset_after=K``   send K body bytes, then abort with a TCP RST (SO_LINGER 0).
- ``stall_after=K``   send K body bytes, then nothing; the socket stays open until
  the client closes it (the server gives up after 120 s).
- ``truncate=K``      declare the full length, send K body bytes, close cleanly (FIN).
- ``goaway_after=K``  send K body bytes, then drop the connection: over HTTP/2 a
  GOAWAY naming only the streams before this one as processed, then FIN (the
  other streams on it are cut too); over HTTP/1.1, where there is no GOAWAY, as
  ``truncate``.
- ``length=N``        declare ``Content-Length: N`` but send the real body, then close.
- ``no_range=1``      ignore ``Range``: always ``200`` with the full body,
  ``Accept-Ranges: none``.
- ``bad_range=1``     answer a ``Range`` request with ``206`` whose ``Content-Range``
  start is one too high (the body is the requested bytes).
- ``trickle=S``       send the body one byte every S seconds.
- ``new_version=V``   serve version ``V`` (content and ETag) instead of ``version``:
  with ``faults_after``, a file that changes while a client fetches it.
- ``fail_times=N``    apply the faults above only to the first N requests for this
  exact path and query (without ``fail_times``), counted per server across all
  its addresses, HEAD included; later requests are served normally. This is how
  a test sees a retry succeed.
- ``faults_after=N``  serve the first N requests for this path and query normally,
  the faults from the next one on (then ``fail_times`` counts from there): how a
  test faults the second connection of a file fetched in segments.

The K of ``reset_after``/``stall_after``/``truncate``/``goaway_after`` counts body bytes of this
response; if K is at least the body length the whole body goes out first.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["FAULT_FIELDS", "FailCounter", "Options", "fail_key", "parse_options"]

DEFAULT_SIZE = 1 << 20

FAULT_FIELDS = (
    "status",
    "retry_after",
    "reset_after",
    "stall_after",
    "truncate",
    "goaway_after",
    "length",
    "no_range",
    "bad_range",
    "trickle",
    "new_version",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Everything the query string can ask for; ``None`` means "not asked"."""

    size: int = DEFAULT_SIZE
    version: str = ""
    rate: int | None = None
    latency: float | None = None
    chunked: bool = False
    cd: str | None = None
    redirect: int | None = None
    location: str | None = None
    echo: bool = False
    auth: str | None = None
    set_cookie: str | None = None
    cookie: str | None = None
    status: int | None = None
    retry_after: str | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    truncate: int | None = None
    goaway_after: int | None = None
    length: int | None = None
    no_range: bool = False
    bad_range: bool = False
    trickle: float | None = None
    new_version: str | None = None
    fail_times: int | None = None
    faults_after: int | None = None

    def without_faults(self) -> Options:
        """The same request once its ``fail_times`` budget is spent."""
        cleared: dict[str, Any] = {name: None for name in FAULT_FIELDS}
        cleared.update(no_range=False, bad_range=False)
        return dataclasses.replace(self, **cleared)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def _flag(text: str) -> bool:
    if text not in ("", "0", "1", "true", "false"):
        raise ValueError("must be 0 or 1")
    return text in ("", "1", "true")


def _status(text: str) -> int:
    value = int(text)
    if not 100 <= value <= 999:
        raise ValueError("must be a 3-digit status code")
    return value


def _header_value(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise ValueError("must not contain line breaks")
    return text


_PARSERS: dict[str, Callable[[str], Any]] = {
    "size": _count,
    "version": str,
    "rate": _count,
    "latency": _seconds,
    "chunked": _flag,
    "cd": _header_value,
    "redirect": _count,
    "location": _header_value,
    "echo": _flag,
    "auth": _header_value,
    "set_cookie": _header_value,
    "cookie": _header_value,
    "status": _status,
    "retry_after": _header_value,
    "reset_after": _count,
    "stall_after": _count,
    "truncate": _count,
    "goaway_after": _count,
    "length": _count,
    "no_range": _flag,
    "bad_range": _flag,
    "trickle": _seconds,
    "new_version": str,
    "fail_times": _count,
    "faults_after": _count,
}


def parse_options(pairs: Iterable[tuple[str, str]]) -> Options:
    """Options from decoded query pairs; the last of a repeated key wins.

    Raises ValueError naming the parameter, which the server turns into a 400.
    """
    values: dict[str, Any] = {}
    for key, text in pairs:
        parser = _PARSERS.get(key)
        if parser is None:
            continue
        try:
            values[key] = parser(text)
        except ValueError as exc:
            raise ValueError(f"bad query parameter {key}={text!r}: {exc}") from None
    return Options(**values)


def fail_key(path: str, query: str) -> str:
    """The request's identity for ``fail_times``: its raw query minus that parameter."""
    kept = [p for p in query.split("&") if p and not p.startswith("fail_times=")]
    return path + "?" + "&".join(kept)


class FailCounter:
    """How many times each key was asked for; one per server instance."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def should_fail(self, key: str, times: int | None, after: int | None = None) -> bool:
        """Count this request; True when it is past the first ``after`` (if given) and
        one of the ``times`` after those (all of them when ``times`` is None)."""
        seen = self._seen[key]
        self._seen[key] = seen + 1
        seen -= after or 0
        return seen >= 0 and (times is None or seen < times)

    def clear(self) -> None:
        self._seen.clear()
