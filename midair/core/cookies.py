"""What the core asks of a cookie store: a protocol, implemented outside the core.

Cookie rules (domain, path, secure, expiry) need a clock and the standard library's
``http.cookiejar``, which works on urllib objects: they live at the session layer
(``midair.cookies``).  The batch only hands over each response's ``Set-Cookie``
values and asks for the ``Cookie`` value of each request.
"""

from __future__ import annotations

from .urls import URL

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # the protocol is for type checkers; at run time a plain base


class Cookies(Protocol):
    def cookies_for(self, url: URL) -> str | None:
        """The ``Cookie`` value for a request of ``url``, or None: no cookie applies."""
        ...

    def store_cookies(self, url: URL, set_cookie: list[str]) -> None:
        """Take the ``Set-Cookie`` values of a response from ``url`` (a redirect's too)."""
        ...
