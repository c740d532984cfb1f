"""One download's rules: the decision table of ``Download.on_head``, resume and redirects."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.actions import OnDisk, Resume
from midair.core.errors import (
    HTTPStatusError,
    IntegrityError,
    ProtocolError,
    RedirectError,
)
from midair.core.http import Head, encode_fields
from midair.core.jobs import Job, Options
from midair.core.transfer import (
    Accept,
    AlreadyComplete,
    Download,
    Fail,
    Redirect,
    RequestFields,
    Restart,
    Retry,
    first_path,
)
from midair.core.urls import parse_url

URL = "http://h.example/dir/file.iso"
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"

# Deterministic: the same examples on every run (no example database either).
SEEDED = settings(derandomize=True, database=None, deadline=None)


def download(
    url: str = URL,
    *,
    offset: int = 0,
    size: int | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    job: dict[str, object] | None = None,
    **options: object,
) -> Download:
    d = Download(7, Job.from_url(url, **(job or {})), Options(**options))  # type: ignore[arg-type]
    d.offset, d.size, d.etag, d.last_modified = offset, size, etag, last_modified
    return d


def head(status: int, *headers: tuple[str, str]) -> Head:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return Head(status, f"HTTP/1.1 {status} X\r\n{lines}\r\n".encode("latin-1"))


def length(n: int) -> tuple[str, str]:
    return ("Content-Length", str(n))


# --- 200 --------------------------------------------------------------------------------
def test_200_fresh() -> None:
    d = download()
    assert d.on_head(head(200, length(10), ("ETag", '"e1"'), ("Last-Modified", DATE))) == Accept(0)
    assert (d.offset, d.size, d.etag, d.last_modified) == (0, 10, '"e1"', DATE)


def test_200_chunked_has_no_size() -> None:
    d = download()
    assert d.on_head(head(200, ("Transfer-Encoding", "chunked"))) == Accept(0)
    assert d.size is None


def test_200_weak_etag_is_no_validator() -> None:
    d = download()
    d.on_head(head(200, length(1), ("ETag", 'W/"weak"')))
    assert d.etag is None


def test_200_to_a_range_request_accepts_at_zero_restarted() -> None:
    d = download(offset=500, size=1000, etag='"e1"')
    assert d.on_head(head(200, length(1000), ("ETag", '"e2"'))) == Accept(0)
    assert (d.offset, d.size, d.etag) == (0, 1000, '"e2"')


def test_200_over_max_filesize_fails() -> None:
    decision = download(max_filesize=99).on_head(head(200, length(100)))
    assert isinstance(decision, Fail) and isinstance(decision.error, IntegrityError)
    assert "exceeds --max-filesize" in str(decision.error)
    assert download(max_filesize=100).on_head(head(200, length(100))) == Accept(0)


def test_200_of_another_size_than_the_jobs_fails_that_source() -> None:
    decision = download(job={"size": 100}).on_head(head(200, length(101)))
    assert isinstance(decision, Fail) and isinstance(decision.error, IntegrityError)
    assert "serves 101 bytes where 100 were expected" in str(decision.error)
    assert download(job={"size": 100}).on_head(head(200, length(100))) == Accept(0)


def test_200_without_a_length_must_end_at_the_jobs_size() -> None:
    d = download(job={"size": 100})
    assert d.on_head(head(200, ("Transfer-Encoding", "chunked"))) == Accept(0)
    assert d.size == 100 and d.body_limit() == 100
    d.position = 60
    assert "body ended at 60 of 100 bytes" in str(d.short_body())


def test_206_of_another_total_than_the_jobs_fails_that_source() -> None:
    d = download(offset=400, size=1000, etag='"e1"', job={"size": 1000})
    decision = d.on_head(
        head(206, ("Content-Range", "bytes 400-1199/1200"), length(800), ("ETag", '"e1"'))
    )
    assert isinstance(decision, Fail) and "serves 1200 bytes where 1000" in str(decision.error)


# --- 206 --------------------------------------------------------------------------------
def test_206_continues_at_the_offset() -> None:
    d = download(offset=400, size=1000, etag='"e1"')
    decision = d.on_head(
        head(206, ("Content-Range", "bytes 400-999/1000"), length(600), ("ETag", '"e1"'))
    )
    assert decision == Accept(400) and d.size == 1000


def test_206_unknown_total_keeps_what_we_knew() -> None:
    d = download(offset=400, size=None, etag='"e1"')
    assert d.on_head(head(206, ("Content-Range", "bytes 400-999/*"))) == Accept(400)
    assert d.size is None


def test_206_to_a_plain_request_from_zero_is_fine() -> None:
    d = download()
    assert d.on_head(head(206, ("Content-Range", "bytes 0-9/10"))) == Accept(0) and d.size == 10


@pytest.mark.parametrize(
    ("content_range", "reason"),
    [
        (None, "without a usable Content-Range"),
        ("bytes 400-999", "without a usable Content-Range"),
        ("items 400-999/1000", "without a usable Content-Range"),
        ("bytes 0-999/1000", "does not continue at byte 400"),
        ("bytes 401-999/1000", "does not continue at byte 400"),
        ("bytes 400-500/1000", "does not continue at byte 400"),  # not to the end
        ("bytes 400-999/2000", "does not continue at byte 400"),
        ("bytes 400-1999/2000", "the size changed from 1000 to 2000"),
    ],
)
def test_206_that_cannot_continue_restarts(content_range: str | None, reason: str) -> None:
    d = download(offset=400, size=1000, etag='"e1"')
    headers = [("Content-Range", content_range)] if content_range else []
    decision = d.on_head(head(206, *headers))
    assert isinstance(decision, Restart) and reason in decision.reason


def test_206_with_a_changed_etag_restarts() -> None:
    d = download(offset=400, size=1000, etag='"e1"')
    decision = d.on_head(head(206, ("Content-Range", "bytes 400-999/1000"), ("ETag", '"e2"')))
    assert decision == Restart("the ETag changed")


# --- 416 --------------------------------------------------------------------------------
def test_416_for_exactly_the_bytes_we_have_means_complete() -> None:
    d = download(offset=1000, size=1000, etag='"e1"')
    assert d.on_head(head(416, ("Content-Range", "bytes */1000"))) == AlreadyComplete()
    assert d.size == 1000


def test_416_with_unknown_size_and_matching_total_means_complete() -> None:
    d = download(offset=1000, etag='"e1"')
    assert d.on_head(head(416, ("Content-Range", "bytes */1000"))) == AlreadyComplete()
    assert d.size == 1000


@pytest.mark.parametrize(
    "headers", [[], [("Content-Range", "bytes */999")], [("Content-Range", "bytes */5000")]]
)
def test_416_otherwise_restarts(headers: list[tuple[str, str]]) -> None:
    d = download(offset=1000, size=1000, etag='"e1"')
    assert isinstance(d.on_head(head(416, *headers)), Restart)


def test_416_without_a_range_request_fails() -> None:
    decision = download().on_head(head(416))
    assert isinstance(decision, Fail) and decision.error.status == 416


# --- errors and retry signals ---------------------------------------------------------
@pytest.mark.parametrize("status", [204, 304, 400, 401, 403, 404, 410, 451, 501, 505, 599])
def test_statuses_that_fail_at_once(status: int) -> None:
    decision = download().on_head(head(status))
    assert isinstance(decision, Fail)
    assert isinstance(decision.error, HTTPStatusError)
    assert decision.error.status == status
    hint = ": authentication required (give --user, --netrc or user:password@)"
    assert str(decision.error) == f"{URL}: HTTP {status}" + (hint if status == 401 else "")


@pytest.mark.parametrize(
    ("status", "pause"),
    [(408, False), (429, True), (500, False), (502, False), (503, True), (504, False)],
)
def test_statuses_that_retry(status: int, pause: bool) -> None:
    decision = download().on_head(head(status))
    assert isinstance(decision, Retry)
    assert (decision.wait, decision.pause_host, decision.error.status) == (None, pause, status)


def test_retry_after_seconds() -> None:
    decision = download().on_head(head(429, ("Retry-After", "30")))
    assert decision == Retry(decision.error, 30.0, pause_host=True)  # type: ignore[union-attr]


def test_retry_after_date_measured_against_the_response_date() -> None:
    decision = download().on_head(
        head(503, ("Retry-After", "Wed, 21 Oct 2015 07:29:00 GMT"), ("Date", DATE))
    )
    assert isinstance(decision, Retry) and decision.wait == 60.0


# --- redirects --------------------------------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("other.iso", "http://h.example/dir/other.iso"),
        ("/top", "http://h.example/top"),
        ("https://m.example/x", "https://m.example/x"),
        ("//m.example/y", "http://m.example/y"),
    ],
)
def test_redirect_resolves_location(status: int, location: str, target: str) -> None:
    assert download().on_head(head(status, ("Location", location))) == Redirect(parse_url(target))


def test_redirect_without_location_fails() -> None:
    decision = download().on_head(head(302))
    assert isinstance(decision, Fail) and isinstance(decision.error, RedirectError)
    assert "without Location" in str(decision.error)


@pytest.mark.parametrize("location", ["ftp://h/x", "file:///etc/passwd"])
def test_redirect_to_another_scheme_is_refused(location: str) -> None:
    decision = download().on_head(head(302, ("Location", location)))
    assert isinstance(decision, Fail) and isinstance(decision.error, RedirectError)
    assert "redirect refused: unsupported scheme" in str(decision.error)


def test_redirect_hop_limit() -> None:
    d = download(max_redirects=3)
    d.hops = 2
    assert isinstance(d.on_head(head(302, ("Location", "/x"))), Redirect)
    d.hops = 3
    decision = d.on_head(head(302, ("Location", "/x")))
    assert isinstance(decision, Fail)
    assert str(decision.error) == f"{URL}: more than 3 redirects"


# --- the request ------------------------------------------------------------------------
def names(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


def test_fresh_request_headers() -> None:
    h = names(download("http://h.example:8080/x", user_agent="ua/1").request_headers())
    assert h == {
        "host": "h.example:8080",
        "user-agent": "ua/1",
        "accept": "*/*",
        "accept-encoding": "identity",
    }


@pytest.mark.parametrize(
    ("etag", "last_modified", "if_range"),
    [('"e1"', None, '"e1"'), (None, DATE, DATE), ('"e1"', DATE, '"e1"')],
)
def test_resume_sends_range_and_if_range(
    etag: str | None, last_modified: str | None, if_range: str
) -> None:
    d = download(offset=123, etag=etag, last_modified=last_modified)
    h = names(d.request_headers())
    assert (h["range"], h["if-range"]) == ("bytes=123-", if_range)


def test_no_range_without_a_validator() -> None:
    # Without ETag or Last-Modified nothing proves the bytes on disk belong to the same
    # version; an empty If-Range header would be malformed.
    h = names(download(offset=123).request_headers())
    assert "range" not in h and "if-range" not in h


CREDENTIALS = (
    ("Authorization", "Bearer s3cret"),
    ("Cookie", "sid=1"),
    ("Proxy-Authorization", "Basic x"),
    ("X-Trace", "t"),
)


def test_credentials_follow_a_same_origin_redirect() -> None:
    d = download(job={"headers": CREDENTIALS[:2]}, headers=CREDENTIALS[2:])
    d.url = parse_url("http://h.example/elsewhere")
    h = names(d.request_headers())
    assert {"authorization", "cookie", "proxy-authorization", "x-trace"} <= set(h)


@pytest.mark.parametrize(
    "other", ["http://cdn.example/x", "https://h.example/x", "http://h.example:8080/x"]
)
def test_credentials_dropped_on_cross_origin_redirect(other: str) -> None:
    d = download(job={"headers": CREDENTIALS[:2]}, headers=CREDENTIALS[2:])
    d.url = parse_url(other)
    h = names(d.request_headers())
    assert not {"authorization", "cookie", "proxy-authorization"} & set(h)
    assert h["x-trace"] == "t"
    assert h["host"] == d.url.host_header


def test_job_headers_come_after_option_headers() -> None:
    d = download(job={"headers": (("X-A", "job"),)}, headers=(("X-A", "global"),))
    assert [v for k, v in d.request_headers() if k == "X-A"] == ["global", "job"]


@pytest.mark.parametrize("name", ["User-Agent", "user-agent", "Accept", "Accept-Encoding"])
def test_a_user_header_replaces_midairs_own(name: str) -> None:
    sent = download(headers=((name, "mine"),)).request_headers()
    assert [v for k, v in sent if k.lower() == name.lower()] == ["mine"]


def test_a_user_host_replaces_midairs_and_stays_first() -> None:
    d = download(headers=(("X-A", "1"), ("host", "virtual.example")))
    sent = d.request_headers()
    assert sent[0] == ("host", "virtual.example")
    assert [k for k, _ in sent].count("Host") == 0 and ("X-A", "1") in sent


def test_a_user_host_does_not_follow_a_redirect_to_another_origin() -> None:
    d = download(headers=(("Host", "virtual.example"),))
    d.url = parse_url("http://cdn.example/x")
    assert d.request_headers()[0] == ("Host", "cdn.example")


# --- the request lines shared between downloads ----------------------------------------
def variants(options: Options) -> list[Download]:
    """Downloads whose requests differ: job headers, a resume, redirects to the same
    origin and to another one (where credentials must be dropped)."""
    plain = Download(0, Job.from_url(URL), options)
    own = Download(1, Job.from_url(URL, headers=CREDENTIALS[:2]), options)
    resumed = Download(2, Job.from_url(URL), options)
    resumed.offset, resumed.etag = 123, '"e1"'
    moved = Download(3, Job.from_url(URL, headers=CREDENTIALS[:2]), options)
    moved.url = parse_url("http://cdn.example/x")
    nearby = Download(4, Job.from_url(URL, headers=CREDENTIALS[:2]), options)
    nearby.url = parse_url("http://h.example/elsewhere")
    other_port = Download(5, Job.from_url("http://h.example:8080/y"), options)
    return [plain, own, resumed, moved, nearby, other_port]


@pytest.mark.parametrize("order", [1, -1])
@pytest.mark.parametrize("headers", [(), CREDENTIALS[2:], (("Host", "virtual.example"),)])
def test_shared_request_lines_are_each_downloads_own(
    order: int, headers: tuple[tuple[str, str], ...]
) -> None:
    options = Options(headers=headers)
    shared = RequestFields(options)
    for _ in range(2):  # the second round is served from what the first one built
        for d in variants(options)[::order]:
            assert shared.of(d) == encode_fields(d.request_headers())


def test_a_resume_leaves_nothing_in_the_shared_lines() -> None:
    options = Options()
    shared = RequestFields(options)
    first, second = variants(options)[0], variants(options)[0]
    first.offset, first.etag = 10, '"e1"'
    assert b'Range: bytes=10-\r\nIf-Range: "e1"\r\n' in shared.of(first)
    assert b"Range" not in shared.of(second)
    first.offset = 0  # the same download, fetched from zero again
    assert b"Range" not in shared.of(first)


def test_a_download_with_other_options_gets_its_own_lines() -> None:
    shared = RequestFields(Options(user_agent="batch/1"))
    d = Download(0, Job.from_url(URL), Options(user_agent="own/1"))
    assert b"User-Agent: own/1\r\n" in shared.of(d)
    assert b"batch/1" not in shared.of(Download(1, Job.from_url(URL), Options(user_agent="x/1")))


def test_shared_lines_stay_bounded() -> None:
    options = Options()
    shared = RequestFields(options)
    for i in range(RequestFields.LIMIT + 10):
        d = Download(i, Job.from_url(f"http://h{i}.example/f"), options)
        assert shared.of(d).startswith(f"Host: h{i}.example\r\n".encode())
    assert len(shared._known) <= RequestFields.LIMIT


# --- what a previous run left -----------------------------------------------------------
@pytest.mark.parametrize(
    ("disk", "state"),
    [
        (OnDisk("fresh"), (0, None, None, None)),
        (OnDisk("partial", 50, Resume(URL, 100, '"e"', None)), (50, 100, '"e"', None)),
        (OnDisk("partial", 50, Resume(URL, None, None, DATE)), (50, None, None, DATE)),
        (OnDisk("partial", 50, Resume(URL, 100, None, None)), (0, None, None, None)),
        (OnDisk("partial", 50, Resume("http://other/x", 100, '"e"', None)), (0, None, None, None)),
        (OnDisk("partial", 50, None), (0, None, None, None)),
        (OnDisk("foreign"), (0, None, None, None)),
    ],
)
def test_adopt(disk: OnDisk, state: tuple[object, ...]) -> None:
    d = download(offset=9, size=9, etag="stale")
    d.adopt(disk)
    assert (d.offset, d.size, d.etag, d.last_modified) == state


def test_record_names_the_job_url_even_after_a_redirect() -> None:
    d = download(etag='"e"', size=5)
    d.url = parse_url("http://mirror.example/x")
    assert d.record() == Resume(URL, 5, '"e"', None)


@pytest.mark.parametrize(
    ("url", "job", "renames", "name"),
    [
        (URL, {}, 0, "file.iso"),
        (URL, {}, 2, "file.iso.2"),
        (URL, {"out": "mine.bin"}, 0, "mine.bin"),
        (URL, {"out": "mine.bin"}, 1, "mine.bin.1"),
        (URL, {"subdir": "sub"}, 0, "sub/file.iso"),
        ("http://h.example/", {}, 0, "index.html"),
        ("http://h.example/a%2F..%2F..%2Fx", {}, 0, "x"),
    ],
)
def test_candidate_name(url: str, job: dict[str, object], renames: int, name: str) -> None:
    d = download(url, job=job)
    d.renames = renames
    assert d.candidate_name() == name
    if not renames:  # what a batch claims at its start, made without a Download
        assert first_path(d.job, d.options) == d.resolve(name)


# --- body accounting ------------------------------------------------------------------
def test_body_limit_overflow_and_short_body() -> None:
    d = download(size=10, max_filesize=20)
    assert d.body_limit() == 10
    d.position = 10
    assert d.short_body() is None
    assert isinstance(d.body_overflow(11), ProtocolError)
    d.position = 9
    error = d.short_body()
    assert isinstance(error, ProtocolError) and "body ended at 9 of 10 bytes" in str(error)


def test_body_over_max_filesize_with_unknown_size() -> None:
    d = download(max_filesize=5)
    assert d.body_limit() == 5
    error = d.body_overflow(6)
    assert isinstance(error, IntegrityError) and "--max-filesize 5" in str(error)
    assert download().body_limit() == float("inf") and download().short_body() is None


# --- property: a 206 is accepted exactly when it continues what we have ------------------
@SEEDED
@given(
    offset=st.integers(0, 10_000),
    size=st.integers(1, 10_000),
    start=st.integers(0, 10_000),
    end=st.integers(0, 10_000),
    total=st.integers(1, 10_000),
)
def test_206_accepted_only_if_it_continues_to_the_end(
    offset: int, size: int, start: int, end: int, total: int
) -> None:
    d = download(offset=offset, size=size, etag='"e"')
    decision = d.on_head(head(206, ("Content-Range", f"bytes {start}-{end}/{total}")))
    continues = start == offset and end == total - 1 and total == size
    assert isinstance(decision, Accept) == continues
    if continues:
        assert decision == Accept(offset) and d.size == size
    else:
        assert isinstance(decision, Restart)
