"""From a parsed request to a ``Plan``: what to send, how fast, and how it ends.

Deciding is kept apart from sending (``sender.py``) so the rules of the test
server (routes, Range, faults) read as one plain function of the request, with
no timers or sockets in sight.

Routes: ``/gen/NAME`` (generated file, see ``content``), ``/files/REL`` (a file
under ``--root``), ``/__stats`` (JSON statistics). Query parameters: ``faults``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from midair.serve.content import BytesBody, FileResource, GeneratedResource, find_file
from midair.serve.faults import FailCounter, Options, fail_key, parse_options
from midair.serve.ranges import Unsatisfiable, if_range_matches, parse_range
from midair.serve.request import Request, build_head
from midair.serve.stats import STATS_PATH

__all__ = ["Ending", "Plan", "Settings", "plan_response", "refusal"]

_NO_BODY_STATUS = frozenset({204, 304})
Resource = GeneratedResource | FileResource


class Readable(Protocol):
    @property
    def size(self) -> int: ...

    def read(self, start: int, length: int) -> bytes | memoryview: ...


class Ending(enum.Enum):
    """How the connection ends once ``Plan.stop_at`` body bytes are out."""

    NORMAL = "normal"  # response complete; keep-alive if the request allows
    CLOSE = "close"  # close cleanly (FIN), whatever was declared
    RESET = "reset"  # abort with RST
    STALL = "stall"  # send nothing more, keep the socket open
    GOAWAY = "goaway"  # drop the connection: HTTP/2's GOAWAY first, HTTP/1.1's FIN


@dataclass(slots=True)
class Settings:
    """Server-wide configuration the planner needs, shared by every connection."""

    rate: int = 0
    latency: float = 0.0
    root: Path | None = None
    fails: FailCounter = field(default_factory=FailCounter)
    stats_json: Callable[[], bytes] = lambda: b"{}"


@dataclass(slots=True)
class Plan:
    """One response, decided: the head, the body window, pacing and the ending."""

    status: int
    headers: list[tuple[str, str]]
    body: Readable | None = None
    start: int = 0
    end: int = 0  # exclusive
    chunked: bool = False
    send_body: bool = True
    stop_at: int = 0  # body bytes to send before ``ending``
    ending: Ending = Ending.NORMAL
    keep_alive: bool = True
    latency: float = 0.0
    rate: int = 0
    trickle: float | None = None
    head: bytes = b""


def _text(status: int, message: str, content_type: str = "text/plain; charset=utf-8") -> Plan:
    """A small response; statuses that forbid a body get none."""
    if status in _NO_BODY_STATUS or status < 200:
        return Plan(status, [])
    body = BytesBody((message + "\n").encode(), content_type)
    return Plan(status, [("Content-Type", content_type)], body, 0, body.size)


def _redirect(location: str) -> Plan:
    plan = _text(302, f"redirecting to {location}")
    plan.headers.append(("Location", location))
    return plan


def _one_less_redirect(path: str, query: str, hops: int) -> str:
    """The same URL (relative) with ``redirect`` decremented, other parameters kept."""
    pairs = parse_qsl(query, keep_blank_values=True)
    pairs = [(k, str(hops - 1) if k == "redirect" else v) for k, v in pairs]
    return path + "?" + urlencode(pairs)


def _resource(settings: Settings, path: str, opts: Options) -> Resource | None:
    if path.startswith("/gen/") and len(path) > 5:
        return GeneratedResource(unquote(path[5:]), opts.size, _version(opts))
    if path.startswith("/files/") and settings.root is not None:
        return find_file(settings.root, path[7:], _version(opts))
    return None


def _version(opts: Options) -> str:
    return opts.version if opts.new_version is None else opts.new_version


def _validators(resource: Resource, opts: Options) -> list[tuple[str, str]]:
    accept = "none" if opts.no_range else "bytes"
    return [
        ("Content-Type", "application/octet-stream"),
        ("ETag", resource.etag),
        ("Last-Modified", resource.last_modified),
        ("Accept-Ranges", accept),
    ]


def _wanted_range(req: Request, resource: Resource) -> tuple[int, int] | None:
    """The byte range to serve, honouring If-Range; Unsatisfiable propagates."""
    value = req.header("range")
    if value is None:
        return None
    validator = req.header("if-range")
    if validator is not None and not if_range_matches(
        validator, resource.etag, resource.last_modified
    ):
        return None
    return parse_range(value, resource.size)


def _content(req: Request, resource: Resource, opts: Options) -> Plan:
    """200, 206 or 416 for a file that exists."""
    headers = _validators(resource, opts)
    try:
        wanted = None if opts.no_range else _wanted_range(req, resource)
    except Unsatisfiable:
        plan = _text(416, "range not satisfiable")
        plan.headers.append(("Content-Range", f"bytes */{resource.size}"))
        return plan
    if wanted is None:
        return Plan(200, headers, resource, 0, resource.size)
    first, last = wanted
    shown = first + 1 if opts.bad_range else first
    headers.append(("Content-Range", f"bytes {shown}-{last}/{resource.size}"))
    return Plan(206, headers, resource, first, last + 1)


def _refused(req: Request, opts: Options) -> Plan | None:
    """401 for missing or wrong credentials, 403 for a missing cookie (``auth=``, ``cookie=``)."""
    if opts.auth is not None and not _authorized(req.header("authorization"), opts.auth):
        plan = _text(401, "credentials required")
        plan.headers.append(("WWW-Authenticate", 'Basic realm="midair"'))
        return plan
    if opts.cookie is not None:
        sent = [c.strip() for c in (req.header("cookie") or "").split(";")]
        if opts.cookie not in sent:
            return _text(403, f"cookie {opts.cookie.partition('=')[0]} required")
    return None


def _authorized(header: str | None, wanted: str) -> bool:
    """Whether ``header`` is Basic of ``wanted``'s user and a password of its SHA-256."""
    scheme, _, token = (header or "").partition(" ")
    try:
        given = base64.b64decode(token, validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        return False
    user, _, password = given.partition(":")
    digest = hashlib.sha256(password.encode()).hexdigest()
    return scheme.lower() == "basic" and f"{user}:{digest}" == wanted


def _echo(req: Request) -> Plan:
    lines = "".join(f"{name}: {value}\n" for name, value in req.headers)
    body = BytesBody(lines.encode(), "text/plain; charset=utf-8")
    return Plan(200, [("Content-Type", body.content_type)], body, 0, body.size)


def _route(settings: Settings, req: Request, path: str, query: str, opts: Options) -> Plan:
    if path == STATS_PATH:
        return _text(200, settings.stats_json().decode(), "application/json")
    refused = _refused(req, opts)
    if refused is not None:
        return refused
    if opts.echo:
        return _echo(req)
    if opts.status is not None and opts.status != 200:
        return _text(opts.status, f"status {opts.status} as requested")
    if opts.location is not None:
        return _redirect(opts.location)
    if opts.redirect:
        return _redirect(_one_less_redirect(path, query, opts.redirect))
    resource = _resource(settings, path, opts)
    if resource is None:
        return _text(404, f"not found: {path}")
    return _content(req, resource, opts)


def _disposition(name: str) -> str:
    """``filename="..."`` for plain ASCII, RFC 6266 ``filename*`` otherwise."""
    if name.isascii() and name.isprintable():
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'attachment; filename="{escaped}"'
    return f"attachment; filename*=UTF-8''{quote(name)}"


def _ending(plan: Plan, opts: Options, sent: int) -> None:
    """Pick the first fault that ends this response early, else a normal end."""
    for limit, ending in (
        (opts.reset_after, Ending.RESET),
        (opts.stall_after, Ending.STALL),
        (opts.truncate, Ending.CLOSE),
        (opts.goaway_after, Ending.GOAWAY),
    ):
        if limit is not None:
            plan.stop_at, plan.ending = min(limit, sent), ending
            return
    plan.stop_at = sent
    if opts.length is not None and opts.length != plan.end - plan.start:
        plan.ending = Ending.CLOSE


def _framing(plan: Plan, req: Request, opts: Options) -> None:
    """Length or chunking, extra headers, and the connection's fate."""
    if plan.status in _NO_BODY_STATUS or plan.status < 200:
        pass
    elif opts.chunked:
        plan.chunked = True
        plan.headers.append(("Transfer-Encoding", "chunked"))
    else:
        declared = opts.length if opts.length is not None else plan.end - plan.start
        plan.headers.append(("Content-Length", str(declared)))
    if opts.cd is not None:
        plan.headers.append(("Content-Disposition", _disposition(opts.cd)))
    if opts.retry_after is not None:
        plan.headers.append(("Retry-After", opts.retry_after))
    if opts.set_cookie is not None:
        plan.headers.append(("Set-Cookie", opts.set_cookie))
    plan.keep_alive = req.keep_alive
    if not plan.keep_alive:
        plan.headers.append(("Connection", "close"))
    elif req.version == "HTTP/1.0":
        plan.headers.append(("Connection", "keep-alive"))


def _decide(settings: Settings, req: Request) -> tuple[Plan, Options]:
    """Status, headers and body window, plus the options that shape the rest."""
    split = urlsplit(req.target)
    path, query = split.path or "/", split.query
    if req.method not in ("GET", "HEAD"):
        plan = _text(405, f"method {req.method} not allowed")
        plan.headers.append(("Allow", "GET, HEAD"))
        return plan, Options()
    try:
        opts = parse_options(parse_qsl(query, keep_blank_values=True))
    except ValueError as exc:
        return _text(400, str(exc)), Options()
    key = fail_key(path, query)
    gated = opts.fail_times is not None or opts.faults_after is not None
    if gated and not settings.fails.should_fail(key, opts.fail_times, opts.faults_after):
        opts = opts.without_faults()
    return _route(settings, req, path, query, opts), opts


def plan_response(settings: Settings, req: Request) -> Plan:
    """Everything about the response to ``req``, decided before a byte is sent."""
    plan, opts = _decide(settings, req)
    plan.send_body = req.method != "HEAD" and plan.body is not None
    _framing(plan, req, opts)
    _ending(plan, opts, plan.end - plan.start if plan.send_body else 0)
    plan.latency = settings.latency if opts.latency is None else opts.latency
    plan.rate = settings.rate if opts.rate is None else opts.rate
    plan.trickle = opts.trickle
    plan.head = build_head(plan.status, plan.headers)
    return plan


def refusal(status: int, message: str) -> Plan:
    """The answer to a request too broken to parse; the connection closes after it."""
    plan = _text(status, message)
    plan.headers += [("Content-Length", str(plan.end)), ("Connection", "close")]
    plan.stop_at, plan.keep_alive = plan.end, False
    plan.head = build_head(plan.status, plan.headers)
    return plan
