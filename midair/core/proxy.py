"""Which proxy a URL goes through, decided once per origin from the batch's options.

The surface (api, cli) reads the environment (``http_proxy``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``...) into ``Options``; everything here is pure: the
proxy URL's parts, the no-proxy list's rules, and the choice for an origin.

The rules, as curl has them:

- ``Options.proxy`` (``--proxy``) applies to every URL; ``""`` means none at all,
  the environment's included.  Else ``Options.proxies`` maps a scheme (``http``,
  ``https``, ``all``) to the environment's proxy for it.
- ``Options.noproxy`` (``--noproxy``, ``NO_PROXY``) is a comma list: ``*`` (every
  host), a domain (matches itself and its subdomains; a leading dot is the same),
  an IP address, or an IP network in CIDR form.
- A proxy URL without a scheme is an HTTP proxy; its port defaults to 1080.
  Its credentials (``user:password@``) are never shown: ``Proxy.text`` omits them.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

from .records import FrozenRecord
from .transfer import basic_authorization
from .urls import redact

PROXY_SCHEMES = ("http", "socks4", "socks4a", "socks5", "socks5h")
DEFAULT_PROXY_PORT = 1080
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proxy(FrozenRecord):
    """A parsed proxy URL.  ``text`` is the URL without credentials, for every message."""

    __match_args__ = ("scheme", "host", "port", "username", "password")
    __slots__ = (*__match_args__, "text")
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    text: str

    def __init__(
        self, scheme: str, host: str, port: int, username: str | None, password: str | None
    ) -> None:
        set_field = object.__setattr__
        for name, value in zip(
            self.__match_args__, (scheme, host, port, username, password), strict=True
        ):
            set_field(self, name, value)
        shown = f"[{host}]" if ":" in host else host
        set_field(self, "text", f"{scheme}://{shown}:{port}")

    def __repr__(self) -> str:  # never the password, not even in a traceback
        return f"Proxy({self.text!r})"

    @property
    def tunnels_always(self) -> bool:
        """A SOCKS proxy carries every connection as a tunnel; an HTTP one only https."""
        return self.scheme != "http"

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value an HTTP proxy gets, if it has credentials."""
        if self.username is None:
            return None
        return basic_authorization(self.username, self.password or "")


def parse_proxy(text: str) -> Proxy:
    """Parse a proxy URL or raise ValueError (whose message shows it redacted)."""
    given = text.strip()
    if "://" not in given:
        given = "http://" + given
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid proxy URL {redact(text)!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"proxy {redact(text)!r}: unsupported scheme {scheme!r} "
            f"(one of {', '.join(PROXY_SCHEMES)})"
        )
    if not parts.hostname:
        raise ValueError(f"proxy {redact(text)!r} has no host")
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return Proxy(scheme, parts.hostname, port or DEFAULT_PROXY_PORT, username, password)


class NoProxy:
    """The hosts that go direct: see the module docstring for the list's rules."""

    __slots__ = ("everything", "names", "networks")

    def __init__(self, text: str) -> None:
        entries = [e.strip().lower() for e in text.split(",")]
        entries = [e.removeprefix(".") for e in entries if e]
        self.everything = "*" in entries
        self.networks: list[_Network] = []
        self.names: list[str] = []
        for entry in entries:
            network = _network(entry)
            if network is None:
                self.names.append(entry.removeprefix("[").removesuffix("]"))
            else:
                self.networks.append(network)

    def __contains__(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.everything:
            return True
        if any(host == name or host.endswith("." + name) for name in self.names):
            return True
        return bool(self.networks) and _in_networks(host, self.networks)


def _network(entry: str) -> _Network | None:
    """``entry`` as an IP network (an address is a network of one), or None: a name."""
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _in_networks(host: str, networks: list[_Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: CIDR entries match only addresses, as curl's
    return any(address in network for network in networks)


class ProxyChoice:
    """The proxy of each origin, for one batch's options (asked once per origin)."""

    __slots__ = ("_by_scheme", "_noproxy")

    def __init__(self, proxy: str | None, proxies: dict[str, str], noproxy: str | None) -> None:
        if proxy is not None:
            chosen = dict.fromkeys(("http", "https"), proxy)
        else:
            every = proxies.get("all", "")
            chosen = {s: proxies.get(s) or every for s in ("http", "https")}
        self._by_scheme = {s: parse_proxy(u) for s, u in chosen.items() if u.strip()}
        self._noproxy = NoProxy(noproxy or "")

    @property
    def any(self) -> bool:
        """Whether any URL can go through a proxy: else the batch never asks."""
        return bool(self._by_scheme) and not self._noproxy.everything

    def for_origin(self, scheme: str, host: str) -> Proxy | None:
        proxy = self._by_scheme.get(scheme)
        if proxy is None or host in self._noproxy:
            return None
        return proxy
