"""Setting up a tunnel through a proxy, sans-IO: bytes in, bytes out, then ``ready``.

A connection through a proxy that tunnels (HTTP ``CONNECT`` for https, and any
SOCKS proxy) exchanges these bytes before its first request.  Each tunnel is
driven like h11: ``start`` gives the first bytes to send, ``receive`` takes
what the proxy answered (any split) and gives the next bytes to send (often
none); ``ready`` turns True once the stream reaches the origin.  Whatever the
proxy refuses or garbles is one ``TunnelError``, whose ``retryable`` says
whether another attempt could fare better (a wrong password cannot).

SOCKS messages are made and read by socksio; it reads one whole reply per call,
so the framing (how long the next reply is) is done here.  ``socks5`` and
``socks4`` send an address the client resolved (``needs_address``: the caller
resolves ``host`` and passes it to ``start``); ``socks5h`` and ``socks4a`` send
the name, for the proxy to resolve.
"""

from __future__ import annotations

from socksio import ProtocolError, SOCKSError
from socksio.socks4 import (
    SOCKS4ARequest,
    SOCKS4Command,
    SOCKS4Connection,
    SOCKS4ReplyCode,
    SOCKS4Request,
)
from socksio.socks5 import (
    SOCKS5AType,
    SOCKS5AuthMethod,
    SOCKS5AuthMethodsRequest,
    SOCKS5Command,
    SOCKS5CommandRequest,
    SOCKS5Connection,
    SOCKS5ReplyCode,
    SOCKS5State,
    SOCKS5UsernamePasswordRequest,
)

from .http import MAX_HEAD_BYTES, FramingError, _head_end, _parse_head
from .proxy import Proxy


class TunnelError(Exception):
    """The proxy did not open the tunnel; ``str()`` says why, without credentials."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


class HttpConnect:
    """``CONNECT host:port`` to an HTTP proxy; a 2xx answer opens the tunnel."""

    needs_address = False

    def __init__(self, proxy: Proxy, host: str, port: int, user_agent: str) -> None:
        self.proxy, self.authority = proxy, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.user_agent = user_agent
        self.ready = False
        self._buffer = b""

    def start(self, address: str | None = None) -> bytes:
        lines = [f"CONNECT {self.authority} HTTP/1.1", f"Host: {self.authority}"]
        lines.append(f"User-Agent: {self.user_agent}")
        authorization = self.proxy.authorization()
        if authorization is not None:
            lines.append(f"Proxy-Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        while not self.ready:
            end = _head_end(self._buffer, 0)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise TunnelError("CONNECT answer: head too large")
                return b""
            self._take_head(self._buffer[:end])
            self._buffer = self._buffer[end:]
        if self._buffer.strip(b"\r\n"):  # the origin speaks only once asked
            raise TunnelError("bytes from the proxy after its CONNECT answer")
        return b""

    def _take_head(self, head: bytes) -> None:
        """Read one head: a 1xx is skipped, a 2xx opens the tunnel, anything else refuses."""
        try:
            response = _parse_head(head)
        except FramingError as exc:
            raise TunnelError(f"CONNECT answer: {exc}") from None
        if response is None:
            return
        status = response.head.status  # type: ignore[union-attr]
        if 200 <= status < 300:
            self.ready = True
            return
        line = head.split(b"\n", 1)[0].strip().decode("latin-1")
        reason = line.split(" ", 1)[1] if " " in line else str(status)
        # 407, or 401 as tinyproxy says it: the credentials are wrong, and stay so
        raise TunnelError(f"CONNECT refused: {reason}", retryable=status not in (401, 407))


class Socks5:
    """SOCKS5 (RFC 1928), with username/password (RFC 1929) when the proxy URL has them."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy, self.host, self.port = proxy, host, port
        self.needs_address = proxy.scheme == "socks5" and not _is_ip(host)
        self.ready = False
        self._socks = SOCKS5Connection()
        self._buffer = b""

    def start(self, address: str | None = None) -> bytes:
        self._address = address or self.host
        methods = [SOCKS5AuthMethod.NO_AUTH_REQUIRED]
        if self.proxy.username is not None:
            methods.append(SOCKS5AuthMethod.USERNAME_PASSWORD)
        self._socks.send(SOCKS5AuthMethodsRequest(methods))
        return self._socks.data_to_send()

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while not self.ready:
            size = self._next_size()
            if size is None or len(self._buffer) < size:
                return out
            reply, self._buffer = self._buffer[:size], self._buffer[size:]
            out += self._take(reply)
        if self._buffer:
            raise TunnelError("bytes from the SOCKS5 proxy after its reply")
        return out

    def _next_size(self) -> int | None:
        """The length of the reply the current state waits for; None: not known yet."""
        if self._socks.state is not SOCKS5State.CLIENT_AUTHENTICATED:
            return 2  # a method choice, or a username/password verdict
        if len(self._buffer) < 5:
            return None
        kind = self._buffer[3:4]
        if kind == SOCKS5AType.IPV4_ADDRESS:
            return 10
        if kind == SOCKS5AType.IPV6_ADDRESS:
            return 22
        return 7 + self._buffer[4]  # a domain name: its length byte, then the name

    def _take(self, reply: bytes) -> bytes:
        state = self._socks.state
        version = 1 if state is SOCKS5State.SERVER_VERIFY_USERNAME_PASSWORD else 5
        if reply[0] != version:  # socksio reads a method choice without looking
            raise TunnelError("malformed SOCKS5 reply")
        try:
            answer = self._socks.receive_data(reply)
        except (ProtocolError, SOCKSError, ValueError):
            raise TunnelError("malformed SOCKS5 reply") from None
        if state is SOCKS5State.SERVER_AUTH_REPLY:
            return self._after_method(answer.method)  # type: ignore[union-attr]
        if state is SOCKS5State.SERVER_VERIFY_USERNAME_PASSWORD:
            if self._socks.state is SOCKS5State.MUST_CLOSE:
                raise TunnelError("SOCKS5 authentication failed", retryable=False)
            return self._command()
        code = answer.reply_code  # type: ignore[union-attr]
        if code != SOCKS5ReplyCode.SUCCEEDED:
            raise TunnelError(f"SOCKS5 connect failed: {_words(code.name)}")
        self.ready = True
        return b""

    def _after_method(self, method: SOCKS5AuthMethod) -> bytes:
        if method == SOCKS5AuthMethod.NO_AUTH_REQUIRED:
            return self._command()
        if method == SOCKS5AuthMethod.USERNAME_PASSWORD and self.proxy.username is not None:
            name, word = self.proxy.username.encode(), (self.proxy.password or "").encode()
            self._socks.send(SOCKS5UsernamePasswordRequest(name, word))
            return self._socks.data_to_send()
        needs = "credentials" if self.proxy.username is None else "another method"
        raise TunnelError(f"SOCKS5 proxy wants {needs}", retryable=False)

    def _command(self) -> bytes:
        try:
            request = SOCKS5CommandRequest.from_address(
                SOCKS5Command.CONNECT, (self._address, self.port)
            )
        except (SOCKSError, ValueError) as exc:
            raise TunnelError(
                f"SOCKS5: cannot send {self._address!r}: {exc}", retryable=False
            ) from None
        self._socks.send(request)
        return self._socks.data_to_send()


class Socks4:
    """SOCKS4a sends the name (``socks4a``); SOCKS4 an IPv4 address the caller resolved."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy, self.host, self.port = proxy, host, port
        self.needs_address = proxy.scheme == "socks4" and not _is_ip(host)
        self.ready = False
        self._socks = SOCKS4Connection((proxy.username or "").encode())
        self._buffer = b""

    def start(self, address: str | None = None) -> bytes:
        target = (address or self.host, self.port)
        user = self._socks.user_id  # on the request too: socksio refuses an empty one else
        kind = SOCKS4ARequest if self.proxy.scheme == "socks4a" else SOCKS4Request
        try:
            self._socks.send(kind.from_address(SOCKS4Command.CONNECT, target, user_id=user))
        except (SOCKSError, ValueError) as exc:
            raise TunnelError(
                f"SOCKS4: cannot send {target[0]!r}: {exc}", retryable=False
            ) from None
        return self._socks.data_to_send()

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        if len(self._buffer) < 8:
            return b""
        if len(self._buffer) > 8:
            raise TunnelError("bytes from the SOCKS4 proxy after its reply")
        try:
            reply = self._socks.receive_data(self._buffer)
        except (ProtocolError, SOCKSError, ValueError):
            raise TunnelError("malformed SOCKS4 reply") from None
        if reply.reply_code != SOCKS4ReplyCode.REQUEST_GRANTED:
            raise TunnelError(f"SOCKS4 connect failed: {_words(reply.reply_code.name)}")
        self.ready = True
        return b""


Tunnel = HttpConnect | Socks5 | Socks4


def make_tunnel(proxy: Proxy, host: str, port: int, user_agent: str) -> Tunnel:
    """The tunnel to ``host:port`` through ``proxy``."""
    if proxy.scheme == "http":
        return HttpConnect(proxy, host, port, user_agent)
    if proxy.scheme.startswith("socks5"):
        return Socks5(proxy, host, port)
    return Socks4(proxy, host, port)


def _words(name: str) -> str:
    return name.lower().replace("_", " ")


def _is_ip(host: str) -> bool:
    """An IP literal needs no resolving (a name has a letter past its last dot)."""
    return ":" in host or host.replace(".", "").isdigit()
