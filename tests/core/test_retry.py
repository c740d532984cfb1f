"""Retry timing: backoff with full jitter, Retry-After in both forms; errors' retry flags."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.errors import (
    DestinationError,
    DownloadError,
    HTTPStatusError,
    IntegrityError,
    NetworkError,
    ProtocolError,
    RedirectError,
    StallTimeout,
    TLSError,
)
from midair.core.retry import backoff, parse_retry_after

# Deterministic: the same examples on every run (no example database either).
SEEDED = settings(derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    ("attempt", "draw", "delay"),
    [
        (1, 0.0, 0.0),
        (1, 0.5, 0.125),
        (1, 0.999, 0.24975),
        (2, 0.5, 0.25),
        (3, 1.0, 1.0),
        (0, 1.0, 0.25),
        (10, 1.0, 10.0),
        (1000, 0.5, 5.0),
    ],
)
def test_backoff(attempt: int, draw: float, delay: float) -> None:
    assert backoff(attempt, base=0.25, cap=10.0, draw=draw) == pytest.approx(delay)


def test_backoff_survives_a_huge_attempt_number() -> None:
    assert backoff(100_000, base=0.25, cap=60.0, draw=0.5) == 30.0


@SEEDED
@given(
    st.integers(0, 10_000), st.floats(0, 1, exclude_max=True), st.floats(0, 10), st.floats(0, 100)
)
def test_backoff_stays_in_bounds(attempt: int, draw: float, base: float, cap: float) -> None:
    delay = backoff(attempt, base, cap, draw)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(max(attempt - 1, 0), 1000)) + 1e-9


@SEEDED
@given(st.integers(1, 60), st.floats(0, 1, exclude_max=True))
def test_backoff_never_shrinks_with_attempts_for_one_draw(attempt: int, draw: float) -> None:
    assert backoff(attempt + 1, 0.25, 60.0, draw) >= backoff(attempt, 0.25, 60.0, draw)


DATE = "Wed, 21 Oct 2015 07:28:00 GMT"


@pytest.mark.parametrize(
    ("value", "date", "seconds"),
    [
        ("120", None, 120.0),
        (" 7 ", None, 7.0),
        ("0", None, 0.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", DATE, 120.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", DATE, 0.0),  # in the past: now
        ("Wednesday, 21-Oct-15 07:29:00 GMT", DATE, 60.0),  # RFC 850 form
        ("Wed Oct 21 07:28:30 2015", DATE, 30.0),  # asctime form
        ("Wed, 21 Oct 2015 07:29:00 GMT", None, None),  # no Date: no clock to measure by
        ("Wed, 21 Oct 2015 07:29:00 GMT", "garbage", None),
        ("soon", DATE, None),
        ("-5", None, None),
        ("1.5", None, None),
        ("", None, None),
        ("\xb2", None, None),  # superscript two: a latin-1 byte that str.isdigit() accepts
        ("\u0661\u0662", None, None),
        (None, DATE, None),
    ],
)
def test_parse_retry_after(value: str | None, date: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, date) == seconds


@pytest.mark.parametrize(
    ("value", "date"),
    [
        ("Wed, 21 Oct 2015 07:30:00 -0000", DATE),
        ("Wed, 21 Oct 2015 07:30:00 GMT", "Wed, 21 Oct 2015 07:28:00 -0000"),
    ],
)
def test_parse_retry_after_mixed_naive_and_aware_dates_do_not_crash(value: str, date: str) -> None:
    # "-0000" parses to a naive datetime, GMT to an aware one: they must still compare.
    assert parse_retry_after(value, date) == 120.0


LATIN1 = st.text(st.characters(max_codepoint=255), max_size=40)  # how header values decode


@SEEDED
@given(LATIN1 | st.text(max_size=40), LATIN1 | st.none())
def test_parse_retry_after_never_raises(value: str, date: str | None) -> None:
    result = parse_retry_after(value, date)
    assert result is None or result >= 0


# --- which errors are worth retrying -------------------------------------------------
@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (NetworkError("u", "reset"), True),
        (StallTimeout("u", "stalled"), True),
        (ProtocolError("u", "short body"), True),
        (TLSError("u", "bad certificate"), False),
        (RedirectError("u", "loop"), False),
        (IntegrityError("u", "checksum"), False),
        (DestinationError("u", "disk full"), False),
        (DownloadError("u", "other"), False),
        *[
            (HTTPStatusError("u", f"HTTP {s}", status=s), True)
            for s in (408, 429, 500, 502, 503, 504)
        ],
        *[
            (HTTPStatusError("u", f"HTTP {s}", status=s), False)
            for s in (400, 401, 403, 404, 410, 416, 501, 505)
        ],
    ],
)
def test_retryable(error: DownloadError, retryable: bool) -> None:
    assert error.retryable is retryable


@pytest.mark.parametrize(
    "kind",
    [
        NetworkError,
        StallTimeout,
        TLSError,
        ProtocolError,
        RedirectError,
        IntegrityError,
        DestinationError,
        HTTPStatusError,
        DownloadError,
    ],
)
def test_errors_pickle_with_url_reason_and_status(kind: type[DownloadError]) -> None:
    error = kind("http://h/x", "went wrong", status=503)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind
    assert (copy.url, copy.reason, copy.status, str(copy)) == (
        "http://h/x",
        "went wrong",
        503,
        "http://h/x: went wrong",
    )
    assert copy.retryable == error.retryable
