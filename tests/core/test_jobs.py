"""Jobs, options and aria2's input-file format; errors name file:line."""

from __future__ import annotations

import os
import pickle
import re

import pytest

import midair
from midair.core.errors import InputError
from midair.core.jobs import Checksum, Job, Options, parse_header, parse_input_file
from midair.core.urls import parse_url

SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"


# --- checksums ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "algorithm", "digest"),
    [
        (f"sha-256={SHA256_EMPTY}", "sha256", SHA256_EMPTY),
        (f"SHA-256={SHA256_EMPTY.upper()}", "sha256", SHA256_EMPTY),
        (f"sha256={SHA256_EMPTY}", "sha256", SHA256_EMPTY),
        (f" md5={MD5_EMPTY} ", "md5", MD5_EMPTY),
        ("sha-1=" + "a" * 40, "sha1", "a" * 40),
        ("sha-512=" + "0" * 128, "sha512", "0" * 128),
    ],
)
def test_checksum_parse(text: str, algorithm: str, digest: str) -> None:
    assert Checksum.parse(text) == Checksum(algorithm, digest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SHA256_EMPTY, "expected ALGO=HEX"),
        (f"crc32={SHA256_EMPTY}", "expected ALGO=HEX"),
        (f"sha-256={SHA256_EMPTY[:-1]}", "not a sha256 hex digest"),
        ("sha-256=" + "g" * 64, "not a sha256 hex digest"),
        ("md5=" + "a" * 64, "not a md5 hex digest"),
        ("sha-256=", "not a sha256 hex digest"),
    ],
)
def test_checksum_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Checksum.parse(text)


# --- headers -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "header"),
    [
        ("X-Token: abc", ("X-Token", "abc")),
        ("Authorization:Bearer x:y", ("Authorization", "Bearer x:y")),
        ("  Cookie :  a=b  ", ("Cookie", "a=b")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_parse_header(text: str, header: tuple[str, str]) -> None:
    assert parse_header(text) == header


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no colon", "expected 'Name: value'"),
        (": value", "not a valid HTTP header name"),
        ("Bad Name: x", "not a valid HTTP header name"),
        ("X-Split: a\r\nInjected: yes", "line break"),
        ("X-Nul: a\0b", "line break"),
        ("Content-Length: 5", "Content-Length: midair sets it itself"),
        ("transfer-encoding: chunked", "midair sets it itself"),
        ("Connection: close", "midair sets it itself"),
        ("Range: bytes=0-", "midair sets it itself"),
        ("If-Range: x", "midair sets it itself"),
    ],
)
def test_parse_header_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_header(text)


@pytest.mark.parametrize("text", ["Host: example.org", "User-Agent: x", "X-A: \u00e9\u2603"])
def test_headers_a_user_may_set(text: str) -> None:
    name, value = parse_header(text)
    assert f"{name}: {value}" == text


# --- options and jobs --------------------------------------------------------------
def test_options_defaults_are_valid() -> None:
    options = Options()
    assert options.concurrency >= options.per_host >= 1
    assert options.retries >= 0 and options.timeout > 0
    assert options.user_agent == f"midair/{midair.__version__}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "--concurrency: expected a whole number >= 1, got 0"),
        ({"concurrency": "100"}, "--concurrency: expected a whole number >= 1, got '100'"),
        ({"concurrency": True}, "--concurrency: expected a whole number"),
        ({"per_host": 0}, "--per-host: expected a whole number >= 1"),
        ({"retries": -1}, "--retries: expected a whole number >= 0"),
        ({"retries": "3"}, "--retries: expected a whole number >= 0, got '3'"),
        ({"retries": 2.5}, "--retries: expected a whole number"),
        ({"timeout": 0}, "--timeout: expected a number of seconds > 0"),
        ({"timeout": float("nan")}, "--timeout: expected a number of seconds > 0, got nan"),
        ({"timeout": float("inf")}, "--timeout: expected a number of seconds"),
        ({"timeout": "30"}, "--timeout: expected a number of seconds"),
        ({"max_retry_wait": -1}, "--max-retry-wait: expected a number of seconds >= 0"),
        ({"lowest_speed_time": 0}, "--lowest-speed-time: expected a number of seconds > 0"),
        ({"lowest_speed": -5}, "--lowest-speed: expected a whole number >= 0, got -5"),
        ({"max_filesize": -1}, "--max-filesize: expected a whole number >= 1, got -1"),
        ({"max_filesize": 0}, "--max-filesize: expected a whole number >= 1"),
        ({"max_redirects": -1}, "--max-redirects: expected a whole number >= 0"),
        ({"overwrite": "yes"}, "--overwrite: expected True or False"),
        ({"fsync": 1}, "--fsync: expected True or False"),
        ({"user_agent": ""}, "--user-agent: expected a non-empty string"),
        ({"user_agent": "a\r\nb"}, "User-Agent: the value must be text without line breaks"),
        ({"directory": 3}, "--directory: expected a non-empty string"),
        ({"checksum": "sha-256=00"}, "--checksum: expected ALGO=HEX"),
        ({"headers": (("Content-Length", "1"),)}, "midair sets it itself"),
    ],
)
def test_options_refuse_nonsense(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        Options(**kwargs)  # type: ignore[arg-type]


def test_job_from_url() -> None:
    job = Job.from_url("http://h/f.iso", out="g.iso")
    assert job.url == parse_url("http://h/f.iso") and job.out == "g.iso"


def test_job_from_url_names_the_url_in_errors() -> None:
    with pytest.raises(InputError, match=r"^ftp://h/x: unsupported scheme 'ftp'"):
        Job.from_url("ftp://h/x")


# --- the input file ----------------------------------------------------------------
INPUT = f"""\
# a comment, then a blank line

http://a.example/one.iso
  out=first.iso
\tdir=sub/dir
  checksum=sha-256={SHA256_EMPTY}
  header=X-Token: t1
  header=Cookie: c=1
http://b.example/two.iso\thttp://mirror.example/two.iso
   # an indented comment
http://c.example/three
"""


def test_parse_input_file() -> None:
    jobs = parse_input_file(INPUT, "list.txt")
    assert [j.url.text for j in jobs] == [
        "http://a.example/one.iso",
        "http://b.example/two.iso",
        "http://c.example/three",
    ]
    first = jobs[0]
    assert first.out == "first.iso"
    assert first.subdir == os.path.join("sub", "dir")
    assert first.checksum == Checksum("sha256", SHA256_EMPTY)
    assert first.headers == (("X-Token", "t1"), ("Cookie", "c=1"))
    mirror = parse_url("http://mirror.example/two.iso")
    assert jobs[1] == Job(parse_url("http://b.example/two.iso"), mirrors=(mirror,))
    assert jobs[2] == Job(parse_url("http://c.example/three"))


def test_every_tab_separated_uri_is_a_mirror_and_options_still_apply() -> None:
    [job] = parse_input_file("http://a/x\thttp://b/y\t\thttp://c/z\n  out=n\n", "l")
    assert job.url.text == "http://a/x" and job.out == "n"
    assert [m.text for m in job.mirrors] == ["http://b/y", "http://c/z"]


def test_a_bad_mirror_names_its_line() -> None:
    with pytest.raises(InputError, match=r"^l:2: .*unsupported scheme 'ftp'"):
        parse_input_file("http://a/x\nhttp://a/y\tftp://b/y\n", "l")


def test_from_urls_takes_the_first_as_the_job_and_the_rest_as_mirrors() -> None:
    job = Job.from_urls(["http://a/x", "http://b/x"])
    assert job.url.text == "http://a/x" and [m.text for m in job.mirrors] == ["http://b/x"]
    with pytest.raises(InputError, match="at least one URL"):
        Job.from_urls([])
    with pytest.raises(InputError, match=r"^ftp://b/x: unsupported scheme"):
        Job.from_urls(["http://a/x", "ftp://b/x"])


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parse_input_file_line_endings(newline: str) -> None:
    jobs = parse_input_file(INPUT.replace("\n", newline), "list.txt")
    assert len(jobs) == 3 and jobs[0].out == "first.iso"


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n  \n"])
def test_parse_input_file_empty(text: str) -> None:
    assert parse_input_file(text, "empty.txt") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  out=x\nhttp://h/a\n", "list.txt:1: option line before any URL"),
        ("http://h/a\nftp://h/b\n", "list.txt:2: ftp://h/b: unsupported scheme 'ftp'"),
        ("\n\nnot a url\n", "list.txt:3: not a url: unsupported scheme"),
        ("http://h/a\n  out=ok\n  bogus=1\n", "list.txt:3: unknown option 'bogus'"),
        ("http://h/a\n  out\n", "list.txt:2: expected key=value, got 'out'"),
        ("http://h/a\n\n  out=../escape\n", "list.txt:3: '../escape': component '..'"),
        ("http://h/a\n  out=/abs\n", "list.txt:2: '/abs' must be a relative path"),
        ("http://h/a\n  dir=a/../..\n", "list.txt:2: 'a/../..': component '..'"),
        ("http://h/a\n  checksum=sha-256=abc\n", "list.txt:2: checksum 'sha-256=abc'"),
        ("http://h/a\n  header=nope\n", "list.txt:2: header 'nope'"),
        ("http://h/a\nhttp://h/b\n  header=X: a\0b\n", "list.txt:3: header"),
    ],
)
def test_parse_input_file_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_input_file(text, "list.txt")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_parse_input_file_stops_at_the_first_error() -> None:
    text = "http://h/a\n  bogus=1\nftp://h/b\n"
    with pytest.raises(InputError, match=r"^list\.txt:2:"):
        parse_input_file(text, "list.txt")


def test_parse_input_file_with_on_bad_skips_each_bad_entry_and_reads_on() -> None:
    text = (
        "  out=orphan\n  out=orphan2\n"  # one entry: the option lines before any URL
        "http://h/a\n  bogus=1\n  out=x\n"
        "ftp://h/b\n  out=y\n"
        "http://h/c\n  out=c\n"
        "not a url\n"
        "http://h/d\n"
    )
    bad: list[InputError] = []
    jobs = parse_input_file(text, "list.txt", on_bad=bad.append)
    assert [j.url.path for j in jobs] == ["/c", "/d"] and jobs[0].out == "c"
    assert [str(e).split(" ")[0] for e in bad] == [
        "list.txt:1:",
        "list.txt:4:",
        "list.txt:6:",
        "list.txt:10:",
    ]


def test_a_bad_url_in_a_bare_list_is_skipped_with_its_line() -> None:
    bad: list[InputError] = []
    jobs = parse_input_file("http://h/a\nftp://h/b\nhttp://h/c\n", "l", on_bad=bad.append)
    assert [j.url.path for j in jobs] == ["/a", "/c"]
    assert [str(e) for e in bad] == [
        "l:2: ftp://h/b: unsupported scheme 'ftp': only http and https"
    ]


def test_a_job_is_compared_hashed_and_pickled_by_its_fields() -> None:
    url = parse_url("http://h.example/a")
    listed = parse_input_file("http://h.example/a\n", "list.txt")[0]
    assert listed == Job(url) and hash(listed) == hash(Job(url))
    assert listed != Job(url, out="b") and listed != Job(parse_url("http://h.example/b"))
    assert pickle.loads(pickle.dumps(listed)) == listed
    shown = repr(Job(url, out="b"))
    assert shown.startswith("Job(url=URL(") and "out='b'" in shown


@pytest.mark.parametrize(
    "text",
    [
        "http://h/a\nhttp://h/b\n",
        "\r\nhttp://h/a\r\n\r\nhttps://g:8/b?x=1\n\x0bhttp://h/c",
        "http://h/a\nHTTP://H/%7Eb\nhttp://h/a b\n",  # general URLs, an inner space
        "http://h/a\n  out=x\n",
        "http://h/a\thttp://mirror/a\n# c\n",
        "http://h/\u00e9\n\x1fhttp://h/b\n",
    ],
)
def test_a_bare_list_reads_as_the_line_by_line_pass_does(text: str) -> None:
    by_lines = parse_input_file("# forces the general pass\n" + text, "l")
    assert parse_input_file(text, "l") == by_lines


def test_a_bad_url_in_a_bare_list_names_its_line() -> None:
    with pytest.raises(InputError, match=r"^list\.txt:3: ftp://h/c: unsupported scheme"):
        parse_input_file("http://h/a\nhttp://h/b\nftp://h/c\n", "list.txt")
