"""Credentials, cookies and Retry-After end to end: the CLI against midair serve and nginx.

The main cases run once per engine (as the conformance suite does); each URL
carries ``t=<engine>`` so the server's logs of one engine's run are its own.
The password is a string that appears nowhere but in what the user gives
(``auth=`` holds its SHA-256), so a grep of every output channel can find it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import Midair, test_engines

import midair as library
from midair.serve import ServerThread

SECRET = "Pa55-w0rd@x"  # '@': must be percent-encoded in userinfo, decoded on the wire
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()
SHARDING = [e for e in ("processes", "dask") if e in test_engines()]  # dask: an extra


def gen(server: ServerThread, host: int, name: str, size: int, engine: str, **query: object) -> str:
    params = "".join(f"&{k}={v}" for k, v in query.items())
    return server.url(host, f"/gen/{name}?size={size}&t={engine}{params}")


def with_userinfo(url: str, user: str = "al", password: str = SECRET) -> str:
    return url.replace("http://", f"http://{user}:{quote(password, safe='')}@", 1)


def logged(server: ServerThread, name: str, engine: str) -> list:
    return [
        r for r in server.stats().log if f"/gen/{name}?" in r.target and f"t={engine}" in r.target
    ]


def every_byte_written(directory: Path) -> bytes:
    """Names, contents and extended attributes of everything under ``directory``."""
    found = b""
    for path in directory.rglob("*"):
        found += str(path).encode()
        if path.is_file():
            found += path.read_bytes()
            for attr in os.listxattr(path):
                found += os.getxattr(path, attr)
    return found


def assert_never_shown(result, directory: Path) -> None:
    for secret in (SECRET, quote(SECRET, safe="")):
        assert secret not in result.stdout and secret not in result.stderr
        assert secret.encode() not in every_byte_written(directory)


# --- credentials ---------------------------------------------------------------------------
def test_credentials_reach_their_origin_only_and_are_never_shown(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    auth = f"al:{DIGEST}"
    elsewhere = gen(server, 1, "landed.bin", 10, engine)  # another origin: logs what it got
    urls = [
        with_userinfo(gen(server, 0, "cred.bin", 5000, engine, auth=auth)),
        with_userinfo(gen(server, 0, "moved.bin", 1, engine, auth=auth, location=quote(elsewhere))),
        with_userinfo(gen(server, 0, "wrong.bin", 10, engine, auth=f"al:{'0' * 64}")),
        gen(server, 2, "user.bin", 70, engine, auth=f"bo:{DIGEST}"),  # no userinfo: --user
        # Cut off with no retries left: a part file and its control file stay behind.
        with_userinfo(
            gen(server, 0, "part.bin", 2_000_000, engine, auth=auth, reset_after=900_000)
        ),
    ]
    args = ("-d", str(tmp_path), "--retries", "0", "--user", f"bo:{SECRET}", *urls)
    result = midair.get("--json", *args)
    assert result.returncode == 1, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    failed = {e["url"].split("/gen/")[1].split("?")[0]: e for e in events if e["event"] == "failed"}
    assert set(failed) == {"wrong.bin", "part.bin"}
    assert failed["wrong.bin"]["reason"] == "HTTP 401: the server refused the credentials"
    assert len(logged(server, "wrong.bin", engine)) == 1  # not retried
    assert (tmp_path / "cred.bin").stat().st_size == 5000
    assert (tmp_path / "user.bin").stat().st_size == 70
    [landed] = logged(server, "landed.bin", engine)
    assert landed.header("authorization") is None
    assert [r.header("authorization") for r in logged(server, "moved.bin", engine)] != [None]
    kept = sorted(p.name for p in tmp_path.glob("part.bin.midair-*"))
    assert kept == ["part.bin.midair-ctl", "part.bin.midair-part"]  # the grep reads them too
    assert_never_shown(result, tmp_path)
    again = midair.get(*args)  # the progress lines and summary, and a re-run's matching
    assert again.returncode == 1
    assert_never_shown(again, tmp_path)
    assert len(logged(server, "cred.bin", engine)) == 1  # the re-run skipped it: same URL text


def test_a_401_without_credentials_says_how_to_give_them(midair, server, engine, tmp_path):
    url = gen(server, 0, "locked.bin", 10, engine, auth=f"al:{DIGEST}")
    result = midair.get("-d", str(tmp_path), url)
    assert result.returncode == 1
    assert "HTTP 401: authentication required (give --user, --netrc or user:password@)" in (
        result.stderr
    )


def test_netrc_files_and_precedence(server: ServerThread, tmp_path: Path) -> None:
    midair = Midair("epoll")
    host = server.url(0).split("//")[1].split(":")[0]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host} login al password {SECRET}\ndefault login x password y\n")
    url = gen(server, 0, "netrc.bin", 10, "netrc", auth=f"al:{DIGEST}")
    other = gen(server, 1, "other.bin", 10, "netrc", auth=f"x:{hashlib.sha256(b'y').hexdigest()}")
    out = tmp_path / "out"
    assert midair.get("-d", str(out), "--netrc-file", str(netrc), url, other).returncode == 0
    env_run = Midair("epoll").command("-d", str(tmp_path / "env"), "--netrc", url)
    done = subprocess.run(
        env_run, capture_output=True, text=True, env={**os.environ, "NETRC": str(netrc)}
    )
    assert done.returncode == 0, done.stderr
    # --user beats netrc: a wrong --user fails where netrc alone would have passed.
    beaten = midair.get(
        "-d", str(tmp_path / "u"), "--netrc-file", str(netrc), "--user", "al:no", url
    )
    assert beaten.returncode == 1 and "refused the credentials" in beaten.stderr


def test_a_bad_netrc_or_cookie_file_is_a_one_line_error(tmp_path: Path) -> None:
    midair = Midair("epoll")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine a login b password c\nmachine\n")
    result = midair.get("-d", str(tmp_path), "--netrc-file", str(netrc), "http://127.0.0.1:9/f")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert re.search(rf"{re.escape(str(netrc))}:\d+: ", line)
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("this is not a cookie file\n")
    result = midair.get("-d", str(tmp_path), "--load-cookies", str(cookies), "http://127.0.0.1:9/f")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert str(cookies) in line and "not a Netscape cookie file" in line


def test_a_bad_url_with_userinfo_is_reported_without_its_password(tmp_path: Path) -> None:
    result = Midair("epoll").get("-d", str(tmp_path), f"http://al:{quote(SECRET)}@h:99999/f")
    assert result.returncode == 2 and "al:***@h" in result.stderr
    assert SECRET not in result.stderr and quote(SECRET) not in result.stderr


def test_user_alone_asks_for_the_password_on_the_terminal(server, tmp_path: Path) -> None:
    """curl's ``-u USER``: the password is typed, not given where ps shows it."""
    url = gen(server, 2, "asked.bin", 30, "pty", auth=f"bo:{DIGEST}")
    command = Midair("epoll").command("-d", str(tmp_path), "--user", "bo", url)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, where getpass asks
        os.execv(command[0], command)
    try:
        shown = _read_until(terminal, b"password for user 'bo': ")
        assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.write(terminal, SECRET.encode() + b"\n")
        shown += _read_until(terminal, b"")  # to the end: the run's own output
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, shown
    assert (tmp_path / "asked.bin").stat().st_size == 30
    assert SECRET.encode() not in shown  # not echoed
    piped = Midair("epoll").get("-d", str(tmp_path / "p"), "--user", "bo", url)  # no terminal
    assert piped.returncode == 2 and "--user bo: no password given" in piped.stderr


def _read_until(terminal: int, marker: bytes, limit: float = 30) -> bytes:
    """What the terminal shows until ``marker`` (b"": until the child closes it)."""
    shown, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline and not (marker and marker in shown):
        ready, _, _ = select.select([terminal], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            shown += chunk
    assert not marker or marker in shown, shown
    return shown


# --- cookies -------------------------------------------------------------------------------
def test_cookies_loaded_set_on_a_redirect_sent_back_and_saved(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    host = server.url(0).split("//")[1].split(":")[0]
    jar = tmp_path / "in.txt"
    jar.write_text(f"# Netscape HTTP Cookie File\n{host}\tFALSE\t/\tFALSE\t0\tpre\tloaded\n")
    target = gen(server, 0, "fed.bin", 10, engine, cookie="late=set")
    urls = [
        gen(server, 0, "needs.bin", 10, engine, cookie="pre=loaded"),
        gen(
            server,
            0,
            "setter.bin",
            1,
            engine,
            set_cookie=quote("late=set; Path=/"),
            location=quote(target),
        ),
    ]
    saved = tmp_path / "out.txt"
    args = ["-d", str(tmp_path / "d"), "--load-cookies", str(jar), "--save-cookies", str(saved)]
    result = midair.get(*args, *urls)  # sharded: workers load the file, send cookies home
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "needs.bin").stat().st_size == 10
    [fed] = logged(server, "fed.bin", engine)
    assert "late=set" in fed.header("cookie")
    text = saved.read_text()
    assert "\tpre\tloaded" in text and "\tlate\tset" in text


@pytest.mark.parametrize("engine", SHARDING)
def test_cookies_set_in_different_shards_are_saved_in_one_file(
    server: ServerThread, engine: str, tmp_path: Path
) -> None:
    """Two origins, so two shards (``--workers 2``): each worker's jar goes home with its
    last summary and the caller saves them together, as one session would."""
    urls = [gen(server, h, f"s{h}.bin", 10, engine, set_cookie=quote(f"c{h}=v{h}")) for h in (0, 1)]
    saved = tmp_path / "out.txt"
    args = ["-d", str(tmp_path / "d"), "--save-cookies", str(saved)]
    result = Midair(engine).get(*args, *urls)  # with --workers 2
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in saved.read_text().splitlines() if "\t" in line]
    assert sorted((row[0], row[5], row[6]) for row in rows) == [
        ("127.0.1.1", "c0", "v0"),
        ("127.0.1.2", "c1", "v1"),
    ]


# --- Retry-After beyond --max-retry-wait ---------------------------------------------------
def test_a_retry_after_beyond_the_cap_ends_the_file_at_once(midair, server, engine, tmp_path):
    url = gen(server, 2, "later.bin", 10, engine, status=503, retry_after=86400)
    good = gen(server, 2, "now.bin", 10, engine)
    started = time.monotonic()
    result = midair.get("-d", str(tmp_path), url, good)
    assert result.returncode == 1
    assert "HTTP 503: server asks to wait 86400 s, more than --max-retry-wait 2 s" in result.stderr
    assert len(logged(server, "later.bin", engine)) == 1
    assert (tmp_path / "now.bin").stat().st_size == 10
    assert time.monotonic() - started < 30  # no wait at all (5 x 2 s would show)


# --- nginx, the library ----------------------------------------------------------------------
def test_nginx_auth_basic(nginx, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "private").mkdir(parents=True)
    (root / "private" / "doc.bin").write_bytes(b"x" * 1000)
    users = tmp_path / "htpasswd"
    users.write_text(f"al:{{PLAIN}}{SECRET}\n")
    server = nginx(
        root,
        extra_locations=f'location /private/ {{ auth_basic "m"; auth_basic_user_file {users}; }}',
    )
    url = server.url(0, "/private/doc.bin")
    out = tmp_path / "out"
    midair = Midair("epoll")
    assert midair.get("-d", str(out), url).returncode == 1  # 401 without credentials
    result = midair.get("-d", str(out), with_userinfo(url))
    assert result.returncode == 0, result.stderr
    assert (out / "doc.bin").read_bytes() == b"x" * 1000


def test_the_library_takes_user_and_netrc(server: ServerThread, tmp_path: Path) -> None:
    host = server.url(0).split("//")[1].split(":")[0]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {host} login al password {SECRET}\n")
    url = gen(server, 0, "lib.bin", 10, "lib", auth=f"al:{DIGEST}")
    by_netrc = library.download([url], str(tmp_path / "a"), netrc=str(netrc), engine="epoll")
    by_user = library.download([url], str(tmp_path / "b"), user=f"al:{SECRET}", engine="epoll")
    assert by_netrc.ok and by_user.ok
