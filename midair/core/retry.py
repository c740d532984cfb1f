"""Retry timing: exponential backoff with full jitter, and Retry-After.

Pure functions of their inputs (the caller passes the random draw), so tests
can pin every delay.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime


def backoff(attempt: int, base: float, cap: float, draw: float) -> float:
    """Full jitter (AWS): uniform in [0, min(cap, base * 2**(attempt-1))]; ``draw`` in [0, 1)."""
    return draw * min(cap, base * 2 ** max(attempt - 1, 0))


def parse_retry_after(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    An HTTP date is measured against the response's own Date header, so the
    core needs no clock and client/server clock skew does not matter.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        return None
    if now is None:
        return None
    return max(0.0, (when - now).total_seconds())
