"""Request heads, parsed by hand, and response heads, written by hand.

Why not h11 here, as the client core does: this server must send responses
that break HTTP on purpose (wrong Content-Length, unterminated chunks, bogus
Content-Range), which h11 rightly refuses to produce, and its state machine
would then disagree with the wire. The requests it must read are simple (GET
or HEAD, no body worth reading), so a strict little parser is enough: anything
it does not understand is a 400 and the connection closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

__all__ = ["MAX_HEAD", "BadRequest", "Request", "build_head", "parse_head"]

MAX_HEAD = 64 * 1024
_MAX_FIELDS = 200


class BadRequest(Exception):
    """The client sent something this server will not parse; answer and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, values stripped

    def header(self, name: str) -> str | None:
        """The last value of ``name`` (lower-case), or None."""
        found = [v for k, v in self.headers if k == name]
        return found[-1] if found else None

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told; HTTP/1.0 only if asked."""
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def body_length(self) -> int:
        """Bytes of request body to skip; chunked request bodies are refused."""
        if self.header("transfer-encoding") is not None:
            raise BadRequest("request bodies with Transfer-Encoding are not supported", 501)
        text = self.header("content-length") or "0"
        if not text.isdigit():
            raise BadRequest(f"bad Content-Length {text!r}")
        return int(text)


def _request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"bad request line {line[:80]!r}")
    method, target, version = parts
    if not method.isalpha() or not target:
        raise BadRequest(f"bad request line {line[:80]!r}")
    return method, target, version


def _field(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or not name or name != name.strip() or line[0] in " \t":
        raise BadRequest(f"bad header line {line[:80]!r}")
    return name.lower(), value.strip(" \t")


def parse_head(buffer: bytes | bytearray) -> tuple[Request, int] | None:
    """The first request head in ``buffer`` and its length, or None if incomplete.

    Raises BadRequest for garbage or a head longer than ``MAX_HEAD``.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise BadRequest("request head too large", 431)
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # tolerate stray CRLFs between requests (RFC 9112 2.2)
        lines.pop(0)
    if not lines or len(lines) > _MAX_FIELDS:
        raise BadRequest("bad request head")
    method, target, version = _request_line(lines[0])
    headers = tuple(_field(line) for line in lines[1:])
    return Request(method, target, version, headers), end + 4


def build_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """A status line and header block; ``Date`` and ``Server`` are added here."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {formatdate(usegmt=True)}"]
    lines.append("Server: midair-serve")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")  # raw UTF-8, as nginx does
