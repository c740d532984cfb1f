"""Credentials, cookies and a Retry-After beyond --max-retry-wait, in virtual time."""

from __future__ import annotations

import base64
import pickle
from email.utils import formatdate

import pytest

from midair.cookies import JarCookies
from midair.core.errors import HTTPStatusError
from midair.core.jobs import Job, Options
from midair.core.retry import parse_retry_after
from midair.core.transfer import Download, basic_authorization
from midair.core.urls import CredentialedURL, parse_url, redact

from .sim import FileServer, Sim, Step, reply, run

H = "http://h.example"
H2 = "http://mirror.example"
SECRET = "p@ss w:rd"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def served(path: str = "/f", body: bytes = b"0123456789") -> FileServer:
    server = FileServer()
    server.add(path, body)
    return server


# --- URLs: userinfo is taken out of the text ----------------------------------------------
def test_userinfo_becomes_credentials_and_leaves_the_text() -> None:
    url = parse_url("http://al%20ice:p%40ss%20w%3Ard@H.example:8080/f?x=1")
    assert isinstance(url, CredentialedURL)
    assert url.credentials == ("al ice", SECRET)
    assert url.text == "http://H.example:8080/f?x=1"
    assert (url.host, url.port, url.target) == ("h.example", 8080, "/f?x=1")
    assert "ss" not in repr(url)
    assert pickle.loads(pickle.dumps(url)).credentials == url.credentials
    assert parse_url("http://h.example/f").credentials is None


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("http://u:secret@h/f", "http://u:***@h/f"),
        ("http://u:sec@ret@h/f", "http://u:***@h/f"),
        ("http://u@h/f", "http://u@h/f"),
        ("http://h/a@b:c", "http://h/a@b:c"),
        ("u:secret@proxy:8080", "u:***@proxy:8080"),  # a proxy given without its scheme
        ("h:8080/a@b", "h:8080/a@b"),
    ],
)
def test_redact_hides_any_password(given: str, shown: str) -> None:
    assert redact(given) == shown


def test_a_bad_url_with_userinfo_is_reported_without_its_password() -> None:
    with pytest.raises(Exception) as caught:
        Job.from_url("http://u:secret@h:99999/f")
    assert "secret" not in str(caught.value) and "u:***@h" in str(caught.value)


# --- which credentials a request carries --------------------------------------------------
@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        (
            f"http://u:{SECRET.replace(' ', '%20').replace('@', '%40')}@h.example/f",
            {},
            ("u", SECRET),
        ),
        ("http://u:x@h.example/f", {"user": "other:y"}, ("u", "x")),  # userinfo > --user
        (f"{H}/f", {"user": "other:y:z"}, ("other", "y:z")),
        (f"{H}/f", {"user": "other:y", "netrc": (("h.example", "n", "q"),)}, ("other", "y")),
        (f"{H}/f", {"netrc": (("h.example", "n", "q"), ("", "d", "e"))}, ("n", "q")),
        (f"{H2}/f", {"netrc": (("h.example", "n", "q"), ("", "d", "e"))}, ("d", "e")),
        (f"{H2}/f", {"netrc": (("h.example", "n", "q"),)}, None),
    ],
)
def test_credentials_follow_curls_precedence(
    url: str, options: dict[str, object], expected: tuple[str, str] | None
) -> None:
    download = Download(0, Job.from_url(url), Options(**options))  # type: ignore[arg-type]
    headers = dict(download.request_headers())
    assert download.credentials == expected
    assert headers.get("Authorization") == (expected and basic(*expected))


def test_a_user_authorization_header_replaces_the_credentials() -> None:
    job = Job.from_url("http://u:x@h.example/f", headers=(("Authorization", "Bearer t"),))
    sent = [v for n, v in Download(0, job, Options()).request_headers() if n == "Authorization"]
    assert sent == ["Bearer t"]


def test_the_options_repr_shows_no_credentials() -> None:
    options = Options(user="u:s3cret", netrc=(("h", "n", "s3cret"),))
    assert "s3cret" not in repr(options)


def test_credentials_reach_the_origin_and_no_other_after_redirects() -> None:
    server, mirror = FileServer(), FileServer()
    server.redirect("/f", "/g")  # same origin: credentials still go
    server.redirect("/g", f"{H2}/f")
    mirror.add("/f", b"0123456789")
    for given in (f"http://u:{SECRET.replace(' ', '%20')}@h.example/f", f"{H}/f"):
        sim = run([given], {H: server, H2: mirror}, user="u:p@ss w:rd")
        assert sim.content(0) == b"0123456789"
        assert [r.header("authorization") for r in server.requests[-2:]] == [basic("u", SECRET)] * 2
        assert mirror.requests[-1].header("authorization") is None


def test_an_https_to_http_redirect_on_the_same_host_drops_the_credentials() -> None:
    secure, plain = FileServer(), served()
    secure.redirect("/f", f"{H}/f")
    sim = run(["https://u:x@h.example/f"], {"https://h.example": secure, H: plain})
    assert sim.content(0) == b"0123456789"
    assert secure.requests[0].header("authorization") == basic("u", "x")
    assert plain.requests[0].header("authorization") is None


def test_one_host_two_users_keep_their_own_credentials() -> None:
    server = FileServer()
    server.add("/a", b"a")
    server.add("/b", b"b")
    sim = run(["http://ann:1@h.example/a", "http://bob:2@h.example/b"], {H: server}, per_host=1)
    assert len(sim.finished) == 2
    sent = {r.target: r.header("authorization") for r in server.requests}
    assert sent == {"/a": basic("ann", "1"), "/b": basic("bob", "2")}


def test_basic_authorization_is_utf8() -> None:
    assert basic_authorization("ü", "x") == "Basic " + base64.b64encode("ü:x".encode()).decode()


# --- 401 ---------------------------------------------------------------------------------
def test_a_401_with_credentials_fails_at_once_saying_so() -> None:
    server = FileServer()
    server.add("/f", b"x", Step(status=401), Step(status=401))
    sim = run(["http://u:wrong@h.example/f"], {H: server})
    [failed] = sim.failed.values()
    assert len(server.requests) == 1 and not sim.retrying
    assert str(failed.error) == f"{H}/f: HTTP 401: the server refused the credentials"
    assert "wrong" not in str(failed.error)


def test_a_401_without_credentials_says_how_to_give_them() -> None:
    server = FileServer()
    server.add("/f", b"x", Step(status=401))
    [failed] = run([f"{H}/f"], {H: server}).failed.values()
    assert "authentication required (give --user, --netrc or user:password@)" in str(failed.error)


# --- Retry-After beyond --max-retry-wait ----------------------------------------------------
def too_long(headers: tuple[tuple[str, str], ...], epoch: float | None = None) -> Sim:
    server = FileServer()
    server.add("/f", b"x", Step(status=503, headers=headers))
    server.add("/g", b"0123456789")
    options = Options(directory="/sim", max_retry_wait=60.0, per_host=1)
    return Sim([f"{H}/f", f"{H}/g"], options, {H: server}, epoch=epoch).run()


@pytest.mark.parametrize(
    ("headers", "epoch"),
    [
        ((("Retry-After", "86400"),), None),
        (
            (
                ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Retry-After", "Thu, 22 Oct 2015 07:28:00 GMT"),
            ),
            None,
        ),
        # No Date: the date is measured against the wall clock the caller passes in.
        ((("Retry-After", formatdate(1_000_086_400, usegmt=True)),), 1_000_000_000.0),
    ],
)
def test_a_retry_after_beyond_the_cap_ends_the_file_at_once(
    headers: tuple[tuple[str, str], ...], epoch: float | None
) -> None:
    sim = too_long(headers, epoch)
    [failed] = sim.failed.values()
    assert not sim.retrying and sim.now < 1.0  # no wait at all
    assert str(failed.error) == (
        f"{H}/f: HTTP 503: server asks to wait 86400 s, more than --max-retry-wait 60 s"
    )
    assert isinstance(failed.error, HTTPStatusError) and failed.error.status == 503
    assert sim.content(1) == b"0123456789"  # the host's other file goes on at once


def test_a_retry_after_within_the_cap_is_still_waited() -> None:
    sim = run([f"{H}/f"], {H: FileServer()}, max_retry_wait=60.0)  # 404: fails, no retry
    assert sim.failed
    server = FileServer()
    server.add("/f", b"x", Step(status=429, headers=(("Retry-After", "60"),)))
    sim = run([f"{H}/f"], {H: server}, max_retry_wait=60.0)
    assert sim.content(0) == b"x" and [r.delay for _, r in sim.retrying] == [60.0]


def test_parse_retry_after_uses_the_wall_clock_only_without_a_date() -> None:
    when = formatdate(1_000_000_090, usegmt=True)
    assert parse_retry_after(when, None, 1_000_000_000.0) == 90.0
    assert parse_retry_after(when, formatdate(1_000_000_080, usegmt=True), 0.0) == 10.0
    assert parse_retry_after(when, None, None) is None


# --- cookies through the session layer's jar ----------------------------------------------
def cookie_run(
    jobs: list[str], servers: dict[str, FileServer], jar: JarCookies | None = None
) -> tuple[Sim, JarCookies]:
    """Run ``jobs`` one at a time per host, so each sees the cookies set before it."""
    jar = jar or JarCookies()
    options = Options(directory="/sim", per_host=1)
    sim = Sim(jobs, options, servers, cookies=jar).run()  # type: ignore[arg-type]
    return sim, jar


def test_a_cookie_set_on_a_redirect_is_sent_to_its_target_and_later_requests() -> None:
    server = served("/real")
    server.add("/later", b"l")
    server.route(
        "/f",
        lambda req: reply(302, headers=[("Location", "/real"), ("Set-Cookie", "sid=abc; Path=/")]),
    )
    sim, jar = cookie_run([f"{H}/f", f"{H}/later"], {H: server})
    sent = {r.target: r.header("cookie") for r in server.requests}
    assert sent["/f"] is None and sent["/real"] == sent["/later"] == "sid=abc"
    assert len(sim.finished) == 2
    assert [c.name for c in jar.jar or ()] == ["sid"]


def test_cookies_keep_to_their_domain_path_and_secure_flag() -> None:
    server, mirror = served("/a/f"), served("/h")
    server.add("/b/g", b"b")
    server.add("/set", b"s")
    server.resources["/set"].steps.append(
        Step(status=200, headers=(("Set-Cookie", "p=1; Path=/a"), ("Set-Cookie", "s=2; Secure")))
    )
    jar = JarCookies()
    cookie_run([f"{H}/set"], {H: server}, jar)
    cookie_run([f"{H}/a/f", f"{H}/b/g", f"{H2}/h"], {H: server, H2: mirror}, jar)
    sent = {r.target: r.header("cookie") for r in server.requests}
    assert sent["/a/f"] == "p=1" and sent["/b/g"] is None  # path; "s" is https only
    assert mirror.requests[0].header("cookie") is None  # another domain


def test_a_user_cookie_header_rules_over_the_jar() -> None:
    server = served()
    jar = JarCookies()
    jar.store_cookies(parse_url(f"{H}/"), ["sid=jar"])
    job = Job.from_url(f"{H}/f", headers=(("Cookie", "sid=mine"),))
    Sim([job], Options(directory="/sim"), {H: server}, cookies=jar).run()
    assert server.requests[0].header("cookie") == "sid=mine"


def test_a_locations_userinfo_is_dropped() -> None:
    from midair.core.urls import resolve_location

    url = resolve_location(parse_url(f"{H}/f"), "http://evil:pw@mirror.example/g")
    assert type(url) is type(parse_url(f"{H}/f")) and url.text == f"{H2}/g"
    assert url.credentials is None


def test_each_set_cookie_value_stays_whole() -> None:
    from midair.core.http import Head, field_key

    raw = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\n"
        b"Content-Length: 0\r\nset-cookie: b=2\r\n\r\n"
    )
    assert Head(200, raw).every(field_key(b"set-cookie")) == [
        "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        "b=2",
    ]


@pytest.mark.parametrize(
    "options", [{"user": 5}, {"user": "u:p\r\nX: y"}, {"netrc": [("h", "l", "p")]}]
)
def test_bad_credentials_options_are_refused_without_echoing_them(
    options: dict[str, object],
) -> None:
    from midair.core.errors import InputError

    with pytest.raises(InputError) as caught:
        Options(**options)  # type: ignore[arg-type]
    assert "p\r" not in str(caught.value) and "'p'" not in str(caught.value)


def test_a_401_to_a_users_authorization_header_says_it_was_refused() -> None:
    server = FileServer()
    server.add("/f", b"x", Step(status=401))
    job = Job.from_url(f"{H}/f", headers=(("Authorization", "Bearer t"),))
    [failed] = run([job], {H: server}).failed.values()
    assert str(failed.error).endswith("HTTP 401: the server refused the credentials")


def test_saved_cookies_load_again_and_a_curl_session_cookie_survives(tmp_path) -> None:
    from midair.cookies import load_jar
    from midair.core.errors import InputError

    jar = JarCookies()
    jar.store_cookies(parse_url(f"{H}/"), ["sid=1; Path=/", "keep=2; Max-Age=3600"])
    jar.save(str(tmp_path / "c.txt"))
    assert sorted(c.name for c in load_jar(str(tmp_path / "c.txt"))) == ["keep", "sid"]
    (tmp_path / "curl.txt").write_text(
        "# Netscape HTTP Cookie File\nh.example\tFALSE\t/\tFALSE\t0\ts\tv\n"
    )
    assert [c.name for c in load_jar(str(tmp_path / "curl.txt"))] == ["s"]  # 0: a session cookie
    with pytest.raises(InputError, match="cannot write cookies"):
        jar.save(str(tmp_path / "missing" / "c.txt"))
