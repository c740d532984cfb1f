"""URLs as the core needs them: an origin to connect to and a target to ask for."""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit

from .records import FrozenRecord

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
    """

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
    return URL(text, scheme, host, port or DEFAULT_PORTS[scheme], target)


def resolve_location(base: URL, location: str) -> URL:
    """Resolve a redirect's Location against the URL that answered it.

    The server wrote this URL, so its text is rebuilt from what will be
    requested (percent-encoded ASCII): messages that show it stay printable.
    """
    url = parse_url(urljoin(base.text, location.strip()))
    return URL(f"{url.scheme}://{url.host_header}{url.target}", *url.values()[1:])
