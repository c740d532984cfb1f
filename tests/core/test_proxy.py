"""Proxies in the core, without sockets: URL parsing, NO_PROXY, the tunnels' state
machines (whole, a byte at a time, refused), and a batch driven by hand through them."""

from __future__ import annotations

import base64

import pytest

from midair.api import proxies_from_environment
from midair.core.actions import (
    Close,
    Connect,
    ConnectionFailure,
    Failed,
    OnDisk,
    Resolve,
    Retrying,
    Send,
    StartTls,
)
from midair.core.batch import Batch
from midair.core.errors import InputError
from midair.core.jobs import Job, Options
from midair.core.proxy import NoProxy, ProxyChoice, parse_proxy
from midair.core.tunnel import HttpConnect, Socks4, Socks5, TunnelError, make_tunnel
from midair.core.urls import redact

OK_CONNECT = b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n"


# --- proxy URLs and the choice per origin -------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("http://p.example:3128", ("http", "p.example", 3128, None, None)),
        ("p.example", ("http", "p.example", 1080, None, None)),  # curl's defaults
        ("socks5h://u:p%40ss@[::1]:9050", ("socks5h", "::1", 9050, "u", "p@ss")),
        ("SOCKS4A://someone@10.0.0.1", ("socks4a", "10.0.0.1", 1080, "someone", None)),
    ],
)
def test_proxy_urls_parse(text: str, parts: tuple[object, ...]) -> None:
    assert parse_proxy(text).values() == parts


def test_a_proxy_is_shown_without_its_credentials() -> None:
    proxy = parse_proxy("http://user:hunter2@127.0.0.1:8888")
    assert proxy.text == "http://127.0.0.1:8888"
    assert "hunter2" not in repr(proxy)
    assert proxy.authorization() == "Basic " + base64.b64encode(b"user:hunter2").decode()
    assert redact("socks5://u:hunter2@h:1/x") == "socks5://u:***@h:1/x"


@pytest.mark.parametrize("text", ["https://p:1", "ftp://p", "http://u:hunter2@:1", "http://p:x"])
def test_a_bad_proxy_url_is_refused_without_showing_the_password(text: str) -> None:
    with pytest.raises(InputError) as caught:
        Options(proxy=text)
    assert "hunter2" not in str(caught.value) and "proxy" in str(caught.value)


@pytest.mark.parametrize(
    ("rules", "host", "bypass"),
    [
        ("*", "anything.example", True),
        ("example.org", "example.org", True),
        ("example.org", "www.example.org", True),
        (".example.org", "www.example.org", True),
        ("example.org", "badexample.org", False),
        (" a.test , example.org ", "EXAMPLE.ORG.", True),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
        ("[::1]", "::1", True),
        ("10.0.0.0/8", "ten.example", False),
        ("", "example.org", False),
    ],
)
def test_no_proxy_rules(rules: str, host: str, bypass: bool) -> None:
    assert (host in NoProxy(rules)) is bypass


def test_the_choice_per_scheme_and_its_overrides() -> None:
    env = {"http": "http://web:1", "https": "http://tls:2", "all": "socks5h://all:3"}
    choice = ProxyChoice(None, env, "direct.example")
    assert choice.for_origin("http", "h.example").host == "web"  # type: ignore[union-attr]
    assert choice.for_origin("https", "h.example").host == "tls"  # type: ignore[union-attr]
    assert choice.for_origin("http", "direct.example") is None
    fallback = ProxyChoice(None, {"all": "socks5h://all:3"}, None)
    assert fallback.for_origin("https", "h").scheme == "socks5h"  # type: ignore[union-attr]
    assert ProxyChoice("", env, None).any is False  # --proxy '': none, whatever the environment
    assert ProxyChoice("http://one:1", env, None).for_origin("https", "h").host == "one"  # type: ignore[union-attr]
    assert ProxyChoice(None, env, "*").any is False


def test_the_environment_is_read_as_curl_reads_it() -> None:
    env = {
        "HTTP_PROXY": "http://httpoxy:1",  # upper case: ignored for http, as curl does
        "HTTPS_PROXY": "http://tls:2",
        "all_proxy": "socks5://all:3",
        "NO_PROXY": "localhost",
    }
    assert proxies_from_environment(env) == {
        "proxies": (("https", "http://tls:2"), ("all", "socks5://all:3")),
        "noproxy": "localhost",
    }
    lower = {"http_proxy": "http://web:1", "https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:1"}
    assert proxies_from_environment(lower)["proxies"] == (
        ("http", "http://web:1"),
        ("https", "http://a:1"),
    )
    assert proxies_from_environment({"http_proxy": ""}) == {}


# --- the tunnels, fed whole and a byte at a time --------------------------------------------
def feed(tunnel: HttpConnect | Socks5 | Socks4, data: bytes, whole: bool) -> bytes:
    if whole:
        return tunnel.receive(data)
    return b"".join(tunnel.receive(data[i : i + 1]) for i in range(len(data)))


@pytest.mark.parametrize("whole", [True, False])
def test_http_connect(whole: bool) -> None:
    tunnel = HttpConnect(parse_proxy("http://u:pw@p:8080"), "origin.example", 443, "midair/1")
    request = tunnel.start()
    assert request.startswith(
        b"CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\n"
    )
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"u:pw") in request
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert feed(tunnel, interim + OK_CONNECT[:-2], whole) == b"" and not tunnel.ready
    assert tunnel.receive(b"\r\n") == b"" and tunnel.ready


@pytest.mark.parametrize(
    ("answer", "reason", "retryable"),
    [
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            "CONNECT refused: 403 Forbidden",
            True,
        ),
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "407 Proxy", False),
        (b"HTTP/1.0 502 Bad Gateway\r\n\r\n", "502 Bad Gateway", True),
        (b"NOT HTTP\r\n\r\n", "CONNECT answer: malformed", True),
        (OK_CONNECT + b"early bytes", "after its CONNECT answer", True),
    ],
)
def test_http_connect_refused(answer: bytes, reason: str, retryable: bool) -> None:
    tunnel = HttpConnect(parse_proxy("p:1"), "h", 443, "ua")
    tunnel.start()
    with pytest.raises(TunnelError) as caught:
        tunnel.receive(answer)
    assert reason in str(caught.value) and caught.value.retryable is retryable


SOCKS5_OK_IPV4 = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"
SOCKS5_OK_NAME = b"\x05\x00\x00\x03\x09localhost\x1f\x90"


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("reply", [SOCKS5_OK_IPV4, SOCKS5_OK_NAME])
def test_socks5h_sends_the_name(whole: bool, reply: bytes) -> None:
    tunnel = Socks5(parse_proxy("socks5h://p"), "origin.example", 80)
    assert not tunnel.needs_address
    assert tunnel.start() == b"\x05\x01\x00"  # one method offered: none
    command = feed(tunnel, b"\x05\x00", whole)
    assert command == b"\x05\x01\x00\x03\x0eorigin.example\x00\x50"
    assert feed(tunnel, reply, whole) == b"" and tunnel.ready


@pytest.mark.parametrize("whole", [True, False])
def test_socks5_with_credentials_sends_a_resolved_address(whole: bool) -> None:
    tunnel = Socks5(parse_proxy("socks5://user:pw@p"), "origin.example", 443)
    assert tunnel.needs_address
    assert tunnel.start("192.0.2.7") == b"\x05\x02\x00\x02"
    assert feed(tunnel, b"\x05\x02", whole) == b"\x01\x04user\x02pw"
    assert feed(tunnel, b"\x01\x00", whole) == b"\x05\x01\x00\x01\xc0\x00\x02\x07\x01\xbb"
    assert not tunnel.ready
    assert feed(tunnel, SOCKS5_OK_IPV4, whole) == b"" and tunnel.ready


@pytest.mark.parametrize(
    ("proxy", "replies", "reason", "retryable"),
    [
        ("socks5h://u:bad@p", [b"\x05\x02", b"\x01\x01"], "authentication failed", False),
        ("socks5h://p", [b"\x05\xff"], "wants credentials", False),
        ("socks5h://p", [b"\x05\x00", b"\x05\x05\x00\x01\0\0\0\0\0\0"], "connection refused", True),
        ("socks5h://p", [b"\x04\x00"], "malformed SOCKS5 reply", True),
    ],
)
def test_socks5_refused(proxy: str, replies: list[bytes], reason: str, retryable: bool) -> None:
    tunnel = Socks5(parse_proxy(proxy), "h.example", 80)
    tunnel.start()
    with pytest.raises(TunnelError) as caught:
        for reply in replies:
            tunnel.receive(reply)
    assert reason in str(caught.value) and caught.value.retryable is retryable


@pytest.mark.parametrize("whole", [True, False])
def test_socks4a_sends_the_name_and_user_id(whole: bool) -> None:
    tunnel = make_tunnel(parse_proxy("socks4a://someone@p"), "origin.example", 80, "ua")
    assert isinstance(tunnel, Socks4) and not tunnel.needs_address
    assert tunnel.start() == b"\x04\x01\x00\x50\x00\x00\x00\xffsomeone\x00origin.example\x00"
    assert feed(tunnel, b"\x00\x5a\x00\x00\x00\x00\x00\x00", whole) == b"" and tunnel.ready


def test_socks4_sends_an_address_and_reports_a_rejection() -> None:
    tunnel = Socks4(parse_proxy("socks4://p"), "origin.example", 80)
    assert tunnel.needs_address
    assert tunnel.start("192.0.2.7") == b"\x04\x01\x00\x50\xc0\x00\x02\x07\x00"
    with pytest.raises(TunnelError, match="rejected or failed"):
        tunnel.receive(b"\x00\x5b\x00\x00\x00\x00\x00\x00")


# --- a batch through a proxy, by hand --------------------------------------------------------
def batch_via(proxy: str, url: str, **options: object) -> Batch:
    batch = Batch([Job.from_url(url)], Options(directory="/d", proxy=proxy, **options), seed=1)  # type: ignore[arg-type]
    batch.start(0.0)
    return batch


def test_plain_http_through_an_http_proxy_asks_in_absolute_form() -> None:
    batch = batch_via("http://u:pw@proxy.example:3128", "http://h.example/f?q=1")
    assert batch.prepared(0, OnDisk("fresh"), 0.0) == [Connect(1, "proxy.example", 3128, False)]
    [send] = batch.connected(1, 0.1)
    assert isinstance(send, Send)
    assert send.data.startswith(b"GET http://h.example/f?q=1 HTTP/1.1\r\n")
    assert b"\r\nHost: h.example\r\n" in send.data
    assert b"\r\nProxy-Authorization: Basic dTpwdw==\r\n" in send.data


def test_https_through_an_http_proxy_tunnels_then_starts_tls_to_the_origin() -> None:
    batch = batch_via("http://proxy.example:3128", "https://h.example:8443/f")
    assert batch.prepared(0, OnDisk("fresh"), 0.0) == [Connect(1, "proxy.example", 3128, False)]
    [connect] = batch.connected(1, 0.1)
    assert isinstance(connect, Send) and connect.data.startswith(b"CONNECT h.example:8443 ")
    assert batch.received(1, OK_CONNECT[:10], 0.2) == []
    assert batch.received(1, OK_CONNECT[10:], 0.2) == [StartTls(1, "h.example")]
    [get] = batch.connected(1, 0.3)  # the engine's TLS handshake is done: the request
    assert isinstance(get, Send) and get.data.startswith(b"GET /f HTTP/1.1\r\n")


def test_socks5_asks_for_the_origin_address_first() -> None:
    batch = batch_via("socks5://proxy.example", "http://h.example/f")
    batch.prepared(0, OnDisk("fresh"), 0.0)
    assert batch.connected(1, 0.1) == [Resolve(1, "h.example")]
    assert batch.resolved(1, "192.0.2.7", 0.1) == [Send(1, b"\x05\x01\x00")]
    assert batch.received(1, b"\x05\x00", 0.2) == [
        Send(1, b"\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50")
    ]
    [get] = batch.received(1, SOCKS5_OK_IPV4, 0.2)  # plain http: the request goes at once
    assert isinstance(get, Send) and get.data.startswith(b"GET /f HTTP/1.1\r\n")


def test_a_refused_tunnel_is_retried_then_fails_naming_the_proxy() -> None:
    batch = batch_via("http://u:pw@proxy.example:3128", "https://h.example/f", retries=1)
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    actions = batch.received(1, b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 0.2)
    assert Close(1) in actions
    [retry] = [a for a in actions if isinstance(a, Retrying)]
    assert retry.reason == "via proxy http://proxy.example:3128: CONNECT refused: 502 Bad Gateway"
    [again] = [a for a in batch.timer(10.0) if isinstance(a, Connect)]
    batch.connected(again.conn, 10.1)
    failed = batch.closed(again.conn, 10.2)  # EOF before the proxy answered
    [fail] = [a for a in failed if isinstance(a, Failed)]
    assert "via proxy http://proxy.example:3128: closed before the tunnel" in fail.error.reason
    assert "gave up after 1 retries" in fail.error.reason and "pw" not in fail.error.reason


def test_a_proxy_authentication_failure_is_not_retried() -> None:
    batch = batch_via("http://u:bad@proxy.example:3128", "https://h.example/f")
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    actions = batch.received(1, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", 0.2)
    assert not [a for a in actions if isinstance(a, Retrying)]
    [fail] = [a for a in actions if isinstance(a, Failed)]
    assert fail.error.reason.endswith("CONNECT refused: 407 Proxy Authentication Required")


def test_no_proxy_and_a_batch_without_proxies_connect_directly() -> None:
    batch = batch_via("http://proxy.example:3128", "http://h.example/f", noproxy="h.example")
    assert batch.prepared(0, OnDisk("fresh"), 0.0) == [Connect(1, "h.example", 80, False)]
    assert Batch([], Options())._proxies is None  # nothing about proxies on the hot path


def test_a_407_to_an_absolute_form_request_names_the_proxy() -> None:
    batch = batch_via("http://u:bad@proxy.example:3128", "http://h.example/f")
    batch.prepared(0, OnDisk("fresh"), 0.0)
    batch.connected(1, 0.1)
    head = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    [fail] = [a for a in batch.received(1, head, 0.2) if isinstance(a, Failed)]
    assert fail.error.reason.startswith("via proxy http://proxy.example:3128: HTTP 407")
    assert fail.error.status == 407


def test_a_connection_to_an_http_proxy_is_kept_alive_across_origins() -> None:
    """Absolute-form requests name their origin: the next origin's download reuses the
    proxy's connection instead of a new one (per-host limits count the origin)."""
    jobs = [Job.from_url("http://one.example/a"), Job.from_url("http://two.example/b")]
    batch = Batch(jobs, Options(directory="/d", proxy="http://p:3128", concurrency=1), seed=1)
    batch.start(0.0)
    assert batch.prepared(0, OnDisk("fresh"), 0.0) == [Connect(1, "p", 3128, False)]
    assert batch.prepared(1, OnDisk("fresh"), 0.0) == []  # -j 1: it waits for a connection
    batch.connected(1, 0.1)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    actions = batch.received(1, ok, 0.2)
    [send] = [a for a in actions if isinstance(a, Send)]
    assert send.conn == 1 and send.data.startswith(b"GET http://two.example/b HTTP/1.1\r\n")
    assert not [a for a in actions if isinstance(a, Close | Connect)]
    assert batch._hosts[("http", "one.example", 80)].open == 0
    assert batch._hosts[("http", "two.example", 80)].open == 1


def test_a_proxy_name_that_does_not_resolve_is_named_as_the_proxys() -> None:
    batch = batch_via("http://proxy.example:3128", "http://h.example/f")
    batch.prepared(0, OnDisk("fresh"), 0.0)
    failure = ConnectionFailure("Name or service not known", retryable=False, unresolved=True)
    [fail] = [a for a in batch.closed(1, 0.1, failure) if isinstance(a, Failed)]
    assert fail.error.reason == (
        "via proxy http://proxy.example:3128: cannot resolve proxy.example: "
        "Name or service not known"
    )
