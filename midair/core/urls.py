"""URLs as the core needs them: an origin to connect to and a target to ask for."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urljoin, urlsplit

from .records import FrozenRecord

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters allowed unescaped in a request target (RFC 3986 pchar, '/', '?', '%').
_TARGET_SAFE = "/:@!$&'()*+,;=-._~%?"
# A host name or IP literal (RFC 3986 reg-name, IPv6 with a zone): nothing else may reach
# a connect call, or a message.
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%:-]+")
# The URLs of nearly every list: a lower-case host, a port, a path and query that need no
# escaping.  For these the parts are read straight off; ``_parse_any`` gives the same.
_PLAIN_CHARS = "A-Za-z0-9/:@!$&'()*+,;=._~%-"  # in a target: quote() leaves them as they are
_PLAIN = re.compile(
    rf"(https?)://([a-z0-9.-]+)(?::([0-9]{{1,5}}))?(/[{_PLAIN_CHARS}]*)?(?:\?([{_PLAIN_CHARS}?]*))?"
)


class URL(FrozenRecord):
    """An absolute http(s) URL split into what a request needs.

    ``origin`` and ``host_header`` are derived once here: every download asks for
    them (its host queue, its request) and would otherwise rebuild them each time.

    ``text`` never holds userinfo: a URL given with ``user:password@`` is a
    ``CredentialedURL``, its text rebuilt without them, so no message, report or
    control file can show the password (and a re-run matches the same text).
    """

    credentials: tuple[str, str] | None = None  # a plain URL's; see CredentialedURL

    __match_args__ = ("text", "scheme", "host", "port", "target")
    __slots__ = (*__match_args__, "origin", "host_header")
    text: str
    scheme: str
    host: str
    port: int
    target: str
    origin: tuple[str, str, int]
    host_header: str

    def __init__(self, text: str, scheme: str, host: str, port: int, target: str) -> None:
        set_field = object.__setattr__
        set_field(self, "text", text)
        set_field(self, "scheme", scheme)
        set_field(self, "host", host)
        set_field(self, "port", port)
        set_field(self, "target", target)
        set_field(self, "origin", (scheme, host, port))
        set_field(self, "host_header", _host_header(scheme, host, port))

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def __str__(self) -> str:
        return self.text


class CredentialedURL(URL):
    """A URL given with userinfo: ``credentials`` are its (user, password), percent-decoded."""

    __slots__ = ("credentials",)
    credentials: tuple[str, str]

    def __init__(self, url: URL, credentials: tuple[str, str]) -> None:
        super().__init__(*url.values())
        object.__setattr__(self, "credentials", credentials)

    def values(self) -> tuple[Any, ...]:
        return (*super().values(), self.credentials)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CredentialedURL, (URL(*super().values()), self.credentials))

    def __repr__(self) -> str:  # never the password
        return f"CredentialedURL({self.text!r}, user={self.credentials[0]!r})"


def redact(text: str) -> str:
    """``text`` (a URL as given, a proxy's without its scheme too) with any password
    replaced by ``***``, for messages: ``user:***@host``."""
    return _USERINFO.sub(lambda m: m[1] + (":***" if m[2] else "") + "@", text)


_USERINFO = re.compile(r"(^\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?[^/?#@:]*)(:[^/?#]*)?@")


def _host_header(scheme: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"


def parse_url(text: str) -> URL:
    """Parse an absolute http(s) URL or raise ValueError saying what is wrong."""
    text = text.strip()
    return _parse_plain(text) or _parse_any(text)


def _parse_plain(text: str) -> URL | None:
    """The URL if it is plain (see ``_PLAIN``), else None: ``_parse_any`` decides."""
    match = _PLAIN.fullmatch(text)
    if match is None:
        return None
    scheme, host, port, path, query = match.groups()
    number = int(port or 0)
    if number > 65535:
        return None  # out of range: _parse_any says so
    target = (path or "/") + (f"?{query}" if query else "")
    return URL(text, scheme, host, number or DEFAULT_PORTS[scheme], target)


def parse_urls(texts: Iterable[str]) -> list[URL]:
    """``parse_url`` of each text, made cheaper for a list: its URLs of one plain origin
    share that origin's parts, parsed once, and each is then read from its target alone."""
    seen: dict[str, URL] = {}  # a plain origin's text -> a URL parsed with it
    return [_parse_listed(text.strip(), seen) for text in texts]


# ``_PLAIN``'s two halves: a URL made of both parses as a plain one.
_PLAIN_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+)(?::([0-9]{1,5}))?")
_PLAIN_TARGET = re.compile(rf"/[{_PLAIN_CHARS}]*(?:\?[{_PLAIN_CHARS}?]*)?")


def _parse_listed(text: str, seen: dict[str, URL]) -> URL:
    cut = text.find("/", 8)  # past "https://" and the host's first character
    origin, target = text[:cut], text[cut:]
    model = seen.get(origin) if cut > 0 else None
    if model is None or not _PLAIN_TARGET.fullmatch(target):
        url = parse_url(text)
        if cut > 0 and _PLAIN_ORIGIN.fullmatch(origin):
            seen.setdefault(origin, url)
        return url
    if target.find("?") == len(target) - 1:  # an empty query, dropped as ``_PLAIN`` does
        target = target[:-1]
    return _same_origin(model, text, target)


def _same_origin(model: URL, text: str, target: str) -> URL:
    """A URL of ``model``'s origin, those parts shared: what ``URL(...)`` makes (a test
    holds them equal), without deriving the origin's parts again or an
    ``object.__setattr__`` call per field."""
    url = _new_url(URL)
    _set_text(url, text)
    _set_target(url, target)
    _set_scheme(url, model.scheme)
    _set_host(url, model.host)
    _set_port(url, model.port)
    _set_origin(url, model.origin)
    _set_host_header(url, model.host_header)
    return url


_new_url = object.__new__
# Each slot's own setter, which FrozenRecord's refusing ``__setattr__`` does not guard.
_set_text, _set_scheme, _set_host, _set_port, _set_target, _set_origin, _set_host_header = (
    getattr(URL, name).__set__ for name in URL.__slots__
)


def _parse_any(text: str) -> URL:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {scheme or '(none)'!r}: only http and https")
    host = parts.hostname
    if not host:
        raise ValueError("URL has no host")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if not _HOST.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")
    path = quote(parts.path or "/", safe=_TARGET_SAFE)
    target = path + (f"?{quote(parts.query, safe=_TARGET_SAFE)}" if parts.query else "")
    port = port or DEFAULT_PORTS[scheme]
    if parts.username is None and parts.password is None:
        return URL(text, scheme, host, port, target)
    bare = URL(_without_userinfo(text), scheme, host, port, target)
    return CredentialedURL(bare, (unquote(parts.username or ""), unquote(parts.password or "")))


def _without_userinfo(text: str) -> str:
    scheme, rest = text.split("://", 1)
    authority, sep, tail = rest.partition("/")
    for mark in "?#":  # an authority also ends where a query or fragment begins
        if mark in authority:
            authority, cut, more = authority.partition(mark)
            sep, tail = cut, more + sep + tail
    return f"{scheme}://{authority.rpartition('@')[2]}{sep}{tail}"


def resolve_location(base: URL, location: str) -> URL:
    """Resolve a redirect's Location against the URL that answered it.

    The server wrote this URL, so its text is rebuilt from what will be
    requested (percent-encoded ASCII): messages that show it stay printable.
    Credentials come only from the user: a Location's userinfo is dropped.
    """
    url = parse_url(urljoin(base.text, location.strip()))
    text = f"{url.scheme}://{url.host_header}{url.target}"
    return URL(text, url.scheme, url.host, url.port, url.target)  # userinfo in it: dropped
