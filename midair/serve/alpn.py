"""HTTPS with HTTP/2 for ``midair serve``: h2 or HTTP/1.1, whichever ALPN settled.

The protocol is only known once the TLS handshake is done, which is when
asyncio calls ``connection_made``: ``AlpnServeProtocol`` then hands the
transport to the HTTP/2 server side (``h2`` chosen) or the HTTP/1.1 one
(``http/1.1`` chosen, or a client that offered no ALPN at all), and is out of
the way from the first byte on.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableSet
from typing import Any

from midair.serve.http2 import H2ServeProtocol
from midair.serve.protocol import ServeProtocol
from midair.serve.responder import Settings
from midair.serve.stats import StatsBook

__all__ = ["ALPN_PROTOCOLS", "AlpnServeProtocol"]

ALPN_PROTOCOLS = ("h2", "http/1.1")  # the server's preference: h2 whenever offered


class AlpnServeProtocol(asyncio.Protocol):
    """Until the handshake: then the chosen protocol's server side takes the transport."""

    def __init__(self, settings: Settings, stats: StatsBook, registry: MutableSet[Any]) -> None:
        self._settings, self._stats, self._registry = settings, stats, registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner = self._server_side(_negotiated(transport))
        transport.set_protocol(inner)
        inner.connection_made(transport)

    def _server_side(self, chosen: str | None) -> asyncio.Protocol:
        side: Any = H2ServeProtocol if chosen == "h2" else ServeProtocol
        return side(self._settings, self._stats, self._registry)  # type: ignore[no-any-return]


def _negotiated(transport: asyncio.BaseTransport) -> str | None:
    tls = transport.get_extra_info("ssl_object")
    return None if tls is None else tls.selected_alpn_protocol()
