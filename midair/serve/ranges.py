"""Range and If-Range, as a server reads them (RFC 9110 sections 14 and 13.1.5).

One range per request: a client resuming or splitting a file asks for one. A
multi-range or malformed header is ignored (a 200 with the whole file), which
RFC 9110 allows and which clients must cope with anyway.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

__all__ = ["Unsatisfiable", "if_range_matches", "parse_range"]


class Unsatisfiable(Exception):
    """The range starts at or past the end: answer 416 with ``bytes */TOTAL``."""


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_range(value: str, total: int) -> tuple[int, int] | None:
    """``(first, last)`` inclusive, clamped to ``total``; None means "ignore it".

    Handles ``bytes=A-``, ``bytes=A-B`` and the suffix form ``bytes=-N``.
    Raises Unsatisfiable when no byte of the file is in the range.
    """
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        return None
    first, last = _number(first_text), _number(last_text)
    if first is None:
        return _suffix(last, total) if not first_text.strip() else None
    if last_text.strip() and (last is None or last < first):
        return None
    if first >= total:
        raise Unsatisfiable(value)
    return first, total - 1 if last is None else min(last, total - 1)


def _suffix(length: int | None, total: int) -> tuple[int, int] | None:
    """The last ``length`` bytes; ``bytes=-0`` (or any suffix of nothing) is unsatisfiable."""
    if length is None:
        return None
    if length == 0 or total == 0:
        raise Unsatisfiable(f"bytes=-{length}")
    return max(0, total - length), total - 1


def if_range_matches(value: str, etag: str, last_modified: str) -> bool:
    """True if the validator still names this representation, so Range applies.

    An entity tag must match strongly (a weak ``W/`` tag never does); a date must
    equal Last-Modified exactly, as RFC 9110 requires for a strong date match.
    """
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    try:
        return parsedate_to_datetime(value) == parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return False
