"""Cookies at the session layer: the standard library's jar behind the core's protocol.

``http.cookiejar`` applies the domain, path, secure and expiry rules, reads the
clock and works on urllib ``Request`` objects, so it stays out of the core: the
batch calls ``cookies_for``/``store_cookies`` (``midair.core.cookies.Cookies``)
and this adapter turns them into jar calls.  Every session has one, so a cookie
set during the batch (on a redirect too) is sent back; until the first cookie
arrives each request costs one flag test, and the jar (with urllib, ~20 ms of
imports) is made only then.  Files are Netscape/Mozilla format (curl's, wget's
and aria2's ``--load-cookies``/``--save-cookies``).
"""

from __future__ import annotations

import threading

from .core.errors import InputError
from .core.jobs import Options
from .core.urls import URL

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from collections.abc import Iterable
    from http.cookiejar import Cookie, MozillaCookieJar


class JarCookies:
    """A ``MozillaCookieJar`` as the core's ``Cookies``; thread-safe (the jar locks)."""

    def __init__(self, jar: MozillaCookieJar | None = None) -> None:
        self.jar = jar
        self._any = jar is not None and any(True for _ in jar)  # a cookie to look up
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, options: Options) -> JarCookies:
        """A jar holding --load-cookies' file, if one is given."""
        return cls(load_jar(options.load_cookies) if options.load_cookies else None)

    def cookies_for(self, url: URL) -> str | None:
        if not self._any or self.jar is None:
            return None
        from urllib.request import Request

        request = Request(url.text)
        self.jar.add_cookie_header(request)
        return request.get_header("Cookie")

    def store_cookies(self, url: URL, set_cookie: list[str]) -> None:
        from urllib.request import Request

        with self._lock:
            if self.jar is None:
                self.jar = _new_jar()
        self.jar.extract_cookies(_Response(set_cookie), Request(url.text))  # type: ignore[arg-type]
        self._any = self._any or any(True for _ in self.jar)

    def all(self) -> list[Cookie]:
        """Every cookie held: what a shard sends home for the caller's jar to ``add``."""
        return [] if self.jar is None else list(self.jar)

    def add(self, cookies: Iterable[Cookie]) -> None:
        """Take cookies another jar held (a shard's), each replacing its namesake."""
        with self._lock:
            if self.jar is None:
                self.jar = _new_jar()
        for cookie in cookies:
            self.jar.set_cookie(cookie)
            self._any = True

    def save(self, path: str) -> None:
        """Write every cookie to ``path``, session cookies included (as curl's -c does).
        A file that cannot be written is the --save-cookies input's fault: one line, exit 2."""
        try:
            (self.jar if self.jar is not None else _new_jar()).save(path, ignore_discard=True)
        except OSError as exc:
            raise InputError(f"{path}: cannot write cookies: {exc.strerror or exc}") from None


class _Response:
    """What ``CookieJar.extract_cookies`` reads of a response: ``info().get_all``."""

    def __init__(self, set_cookie: list[str]) -> None:
        self._set_cookie = set_cookie

    def info(self) -> _Response:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._set_cookie if name.lower() == "set-cookie" else default


def _new_jar() -> MozillaCookieJar:
    from http.cookiejar import MozillaCookieJar

    return MozillaCookieJar()


def load_jar(path: str) -> MozillaCookieJar:
    """The cookies of ``path``; InputError (one line, naming the file) if it cannot be read."""
    from http.cookiejar import LoadError

    jar = _new_jar()
    try:
        jar.load(path, ignore_discard=True, ignore_expires=True)
    except LoadError as exc:
        raise InputError(f"{path}: not a Netscape cookie file ({_first_line(exc)})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read cookies: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a Netscape cookie file (not text)") from None
    for cookie in jar:
        if cookie.expires == 0:  # curl and wget write a session cookie's expiry as 0
            cookie.expires, cookie.discard = None, True
    jar.clear_expired_cookies()
    return jar


def check_writable(path: str) -> None:
    """Refuse a --save-cookies file that cannot be written, before anything is fetched."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot write cookies: {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
