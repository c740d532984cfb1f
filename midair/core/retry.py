"""Retry timing: exponential backoff with full jitter, and Retry-After.

Pure functions of their inputs (the caller passes the random draw), so tests
can pin every delay.
"""

from __future__ import annotations


def backoff(attempt: int, base: float, cap: float, draw: float) -> float:
    """Full jitter (AWS): uniform in [0, min(cap, base * 2**(attempt-1))]; ``draw`` in [0, 1)."""
    # The exponent is capped so that a huge --retries cannot overflow the float.
    return draw * min(cap, base * 2.0 ** min(max(attempt - 1, 0), 1000))


def parse_retry_after(
    value: str | None, date: str | None = None, wall: float | None = None
) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    An HTTP date is measured against the response's own Date header, so client/server
    clock skew does not matter; without one, against ``wall`` (the caller's wall-clock
    time, POSIX seconds: the core reads no clock).  Neither: None, the caller's backoff.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "\xb2": str.isdigit() takes it
        return float(value)
    from datetime import UTC, datetime  # HTTP dates are rare: email's parser waits till needed
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError, IndexError):
        return None
    if now is None and wall is not None:
        now = datetime.fromtimestamp(wall, UTC)
    if now is None:
        return None
    # HTTP dates are GMT; the asctime and "-0000" forms parse as naive datetimes.
    when, now = (d if d.tzinfo else d.replace(tzinfo=UTC) for d in (when, now))
    return max(0.0, (when - now).total_seconds())
