"""URLs: what a request needs (origin, target, Host) and redirect resolution."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midair.core.urls import (
    URL,
    _parse_any,
    _parse_plain,
    parse_url,
    parse_urls,
    resolve_location,
)

SEEDED = settings(derandomize=True, database=None, deadline=None, max_examples=2000)


@pytest.mark.parametrize(
    ("text", "origin", "target", "host_header"),
    [
        ("http://example.com", ("http", "example.com", 80), "/", "example.com"),
        ("http://example.com/", ("http", "example.com", 80), "/", "example.com"),
        ("https://example.com/a/b.iso", ("https", "example.com", 443), "/a/b.iso", "example.com"),
        ("http://example.com:8080/x", ("http", "example.com", 8080), "/x", "example.com:8080"),
        ("https://example.com:443/x", ("https", "example.com", 443), "/x", "example.com"),
        ("https://example.com:80/x", ("https", "example.com", 80), "/x", "example.com:80"),
        ("HTTP://EXAMPLE.com/Path", ("http", "example.com", 80), "/Path", "example.com"),
        ("http://[::1]:8000/f", ("http", "::1", 8000), "/f", "[::1]:8000"),
        ("http://[::1]/f", ("http", "::1", 80), "/f", "[::1]"),
        ("http://127.0.0.2:9/f?a=1&b=2", ("http", "127.0.0.2", 9), "/f?a=1&b=2", "127.0.0.2:9"),
        ("http://h/a b", ("http", "h", 80), "/a%20b", "h"),
        ("http://h/%41%20already", ("http", "h", 80), "/%41%20already", "h"),
        ("http://h/x#fragment", ("http", "h", 80), "/x", "h"),
        ("http://h/?q=a b", ("http", "h", 80), "/?q=a%20b", "h"),
        ("http://h/ünï", ("http", "h", 80), "/%C3%BCn%C3%AF", "h"),
        (
            "http://bücher.example/",
            ("http", "xn--bcher-kva.example", 80),
            "/",
            "xn--bcher-kva.example",
        ),
        ("  http://h/padded  ", ("http", "h", 80), "/padded", "h"),
    ],
)
def test_parse_url(text: str, origin: tuple[str, str, int], target: str, host_header: str) -> None:
    url = parse_url(text)
    assert url.origin == origin
    assert url.target == target
    assert url.host_header == host_header
    assert url.text == text.strip() == str(url)


def test_userinfo_is_not_part_of_the_text() -> None:
    url = parse_url("http://user:pw@h/x")
    assert (url.origin, url.target, url.host_header) == (("http", "h", 80), "/x", "h")
    assert url.text == "http://h/x" and url.credentials == ("user", "pw")


def test_target_is_always_ascii_and_starts_with_slash() -> None:
    for text in ("http://h", "http://h/ü?ä=ö", "http://h/a\tb"):
        target = parse_url(text).target
        assert target.startswith("/")
        target.encode("ascii")
        assert " " not in target


def test_path_drops_the_query() -> None:
    assert parse_url("http://h/dir/file.tar.gz?token=1").path == "/dir/file.tar.gz"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://h/x", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("h/x", "unsupported scheme '(none)'"),
        ("", "unsupported scheme '(none)'"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://h:99999/", "invalid URL"),
        ("http://h:port/", "invalid URL"),
        ("http://[::1/", "invalid URL"),
    ],
)
def test_parse_url_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_url(text)


def test_url_is_a_frozen_value() -> None:
    url = parse_url("http://h/x")
    assert url == parse_url("http://h/x")
    assert hash(url) == hash(parse_url("http://h/x"))
    with pytest.raises(AttributeError):
        url.host = "other"  # type: ignore[misc]
    assert isinstance(url, URL)


@pytest.mark.parametrize(
    ("base", "location", "expected"),
    [
        ("http://h/a/b/c.iso", "d.iso", "http://h/a/b/d.iso"),
        ("http://h/a/b/c.iso", "../d.iso", "http://h/a/d.iso"),
        ("http://h/a/b/c.iso", "/top.iso", "http://h/top.iso"),
        ("http://h/a/b/c.iso", "//mirror.example/x.iso", "http://mirror.example/x.iso"),
        ("https://h/a", "//mirror.example/x.iso", "https://mirror.example/x.iso"),
        ("http://h/a", "https://other:8443/y", "https://other:8443/y"),
        ("http://h/a?x=1", "?x=2", "http://h/a?x=2"),
        ("http://h/a", "  /spaced  ", "http://h/spaced"),
    ],
)
def test_resolve_location(base: str, location: str, expected: str) -> None:
    assert resolve_location(parse_url(base), location) == parse_url(expected)


@pytest.mark.parametrize(
    "location", ["ftp://h/x", "file:///etc/passwd", "javascript:x", "mailto:a@b"]
)
def test_resolve_location_refuses_what_parse_url_refuses(location: str) -> None:
    with pytest.raises(ValueError):
        resolve_location(parse_url("http://h/a"), location)


# --- the plain-URL fast path gives what the general parser gives -------------------------
def parsed(parse: Callable[[str], URL | None], text: str) -> URL | str | None:
    try:
        return parse(text)
    except ValueError as exc:
        return f"ValueError: {exc}"


PIECES = ["http", "https", "HTTP", "://", "h", "H", "a.b-c", "9", ":", "0", "65535", "65536"]
PIECES += ["/", "?", "#", "%", "%41", "@", "[::1]", " ", "\t", "ü", "..", "a b", "=&", "~"]


@SEEDED
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_plain_urls_parse_as_the_general_parser_does(text: str) -> None:
    for candidate in (text, "http://" + text, "https://h" + text):
        fast = _parse_plain(candidate.strip())
        if fast is not None:
            assert fast == parsed(_parse_any, candidate.strip()), candidate


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:18080/small/f00000",
        "https://h.example/a/b.iso?x=1&y=%20",
        "http://h:0/x",  # port 0 means the default, as in the general parser
        "http://h/x?",
        "http://h?q",
    ],
)
def test_typical_urls_take_the_fast_path(text: str) -> None:
    fast = _parse_plain(text)
    assert fast is not None and fast == _parse_any(text) == parse_url(text)


@pytest.mark.parametrize("text", ["HTTP://h/", "http://H/", "http://h/a b", "http://h:99999/"])
def test_unusual_urls_take_the_general_path(text: str) -> None:
    assert _parse_plain(text) is None


# --- a list's URLs, parsed together, are what each parses to alone -----------------------
def whole(url: URL) -> tuple[object, ...]:
    """Every slot, the derived ones too (equality compares the constructor's fields)."""
    return tuple(getattr(url, name) for name in URL.__slots__)


@SEEDED
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=8).map("".join), max_size=6))
def test_a_list_parses_as_each_of_its_urls(tails: list[str]) -> None:
    texts = [origin + tail for tail in tails for origin in ("http://h", "https://h:8", "http://")]
    alone = [parsed(parse_url, text) for text in texts]
    errors = [one for one in alone if isinstance(one, str)]
    if errors:  # a bad URL: the first one's error, listed too
        with pytest.raises(ValueError, match=re.escape(errors[0].removeprefix("ValueError: "))):
            parse_urls(texts)
        return
    listed = parse_urls(texts)
    assert [whole(u) for u in listed] == [whole(u) for u in alone if isinstance(u, URL)]


def test_listed_urls_of_one_origin_share_its_parts() -> None:
    first, second = parse_urls(["http://h.example:81/a", " http://h.example:81/b?q \n"])
    assert whole(second) == whole(parse_url("http://h.example:81/b?q"))
    assert second.origin is first.origin
