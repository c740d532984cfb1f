"""Proxies end to end: tinyproxy and microsocks, real ones, on every engine.

The origin is nginx allowing only ``OUTGOING`` (127.0.0.2), the address both
proxies connect from: a direct request (from 127.0.0.1) gets a 403, so a file
that arrives came through the proxy.  midair serve (which allows anyone) is the
origin where only the proxy's behaviour matters (a drop mid-body, NO_PROXY).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Midair, require_nginx
from proxies import OUTGOING, Microsocks, Tinyproxy

from midair.serve import ServerThread, expected_bytes
from midair.serve.nginx import Nginx, free_port

PASSWORD = "s3cr%65t"  # percent-encoded in the URL: the proxy gets "s3cret"
FILES = {"a.bin": 150_000, "b.bin": 70_000}
FAST = ("--timeout", "10")  # a hang fails in seconds, not in the default 30 s per attempt


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A trustme CA and a certificate for 127.0.0.1 and localhost: (ca, cert, key)."""
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    paths = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    authority.cert_pem.write_to_path(str(paths[0]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    return paths


def _origin(root: Path, tls: tuple[Path, Path] | None) -> Nginx:
    return Nginx(
        root, tls=tls, extra_locations=f"        allow {OUTGOING};\n        deny all;\n"
    ).start()


@pytest.fixture(scope="module")
def origins(workdir: Path, ca: tuple[Path, Path, Path]) -> Iterator[dict[str, Nginx]]:
    """nginx over http and over https, each refusing every client but ``OUTGOING``."""
    require_nginx()
    root = workdir / "root"
    root.mkdir()
    for name, size in FILES.items():
        (root / name).write_bytes(expected_bytes(name, size))
    servers = {"http": _origin(root, None), "https": _origin(root, (ca[1], ca[2]))}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def tinyproxy(workdir: Path, origins: dict[str, Nginx]) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(workdir, connect_ports=(origins["https"].port,)).start()
    yield proxy  # type: ignore[misc]
    proxy.stop()


@pytest.fixture(scope="module")
def microsocks(workdir: Path) -> Iterator[Microsocks]:
    proxy = Microsocks(workdir).start()
    yield proxy  # type: ignore[misc]
    proxy.stop()


@pytest.fixture
def midair(engine: str, request: pytest.FixtureRequest) -> Midair:
    if engine != "dask":
        return Midair(engine, FAST)
    return Midair(engine, (*FAST, "--scheduler", request.getfixturevalue("dask_cluster")))


def urls(origin: Nginx, host: str = "127.0.0.1") -> list[str]:
    return [f"{origin.scheme}://{host}:{origin.port}/{name}" for name in FILES]


def assert_files(directory: Path) -> None:
    for name, size in FILES.items():
        assert (directory / name).read_bytes() == expected_bytes(name, size), name


def failures(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed:")]


# --- every engine ------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_through_tinyproxy(midair, origins, tinyproxy, ca, tmp_path, scheme):
    """http as absolute-form requests, https through a CONNECT tunnel; the origin's
    certificate is checked against the origin's name inside the tunnel."""
    origin = origins[scheme]
    args = ["-d", str(tmp_path), "--ca-certificate", str(ca[0]), *urls(origin)]
    result = midair.get("--proxy", tinyproxy.url(), *args)
    assert result.returncode == 0, result.stderr
    assert_files(tmp_path)
    log = tinyproxy.log()
    if scheme == "http":
        assert f"GET http://127.0.0.1:{origin.port}/a.bin" in log
    else:
        assert f"CONNECT 127.0.0.1:{origin.port}" in log or "CONNECT" in log


@pytest.mark.parametrize(("kind", "scheme"), [("socks5h", "https"), ("socks5", "http")])
def test_through_microsocks(midair, origins, microsocks, ca, tmp_path, scheme, kind):
    origin = origins[scheme]
    args = ["-d", str(tmp_path), "--ca-certificate", str(ca[0]), *urls(origin, "localhost")]
    result = midair.get("--proxy", microsocks.url(kind), *args)
    assert result.returncode == 0, result.stderr
    assert_files(tmp_path)


def test_a_direct_request_is_refused_by_the_origin(origins, tmp_path):
    """What makes the tests above proofs: without the proxy, nginx answers 403."""
    result = Midair("epoll", FAST).get(
        "--retries", "0", "-d", str(tmp_path), *urls(origins["http"])
    )
    assert result.returncode == 1
    assert "403" in result.stderr


# --- credentials ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tinyproxy_auth(workdir: Path, origins: dict[str, Nginx]) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(
        workdir, credentials=("user", "s3cret"), connect_ports=(origins["https"].port,)
    ).start()
    yield proxy  # type: ignore[misc]
    proxy.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_proxy_credentials(origins, tinyproxy_auth, ca, tmp_path, scheme):
    args = ["-d", str(tmp_path), "--ca-certificate", str(ca[0]), *urls(origins[scheme])]
    good = tinyproxy_auth.url(credentials=("user", PASSWORD))
    result = Midair("epoll", FAST).get("--proxy", good, *args)
    assert result.returncode == 0, result.stderr
    assert_files(tmp_path)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_proxy_wrong_password_fails_clearly_without_retries(
    origins, tinyproxy_auth, ca, tmp_path, scheme
):
    args = ["-d", str(tmp_path), "--ca-certificate", str(ca[0]), *urls(origins[scheme])]
    bad = tinyproxy_auth.url(credentials=("user", "wrong-pass"))
    result = Midair("epoll", FAST).get("--proxy", bad, *args)
    assert result.returncode == 1
    lines = failures(result.stderr)
    assert len(lines) == len(FILES), result.stderr
    # tinyproxy answers 401 where RFC 9110 says 407; either is the proxy's refusal
    assert all("407" in line or "401" in line for line in lines), lines
    assert "retry" not in result.stderr
    assert "wrong-pass" not in result.stderr
    if scheme == "https":
        assert f"via proxy http://127.0.0.1:{tinyproxy_auth.port}: CONNECT refused" in lines[0]


@pytest.fixture(scope="module")
def microsocks_auth(workdir: Path) -> Iterator[Microsocks]:
    proxy = Microsocks(workdir, credentials=("user", "s3cret")).start()
    yield proxy  # type: ignore[misc]
    proxy.stop()


def test_socks5_credentials(origins, microsocks_auth, tmp_path):
    args = ["-d", str(tmp_path), *urls(origins["http"])]
    good = microsocks_auth.url(credentials=("user", PASSWORD))
    assert Midair("epoll", FAST).get("--proxy", good, *args).returncode == 0
    assert_files(tmp_path)
    bad = microsocks_auth.url(credentials=("user", "wrong-pass"))
    args[1] = str(tmp_path / "again")
    result = Midair("epoll", FAST).get("--proxy", bad, *args)
    assert result.returncode == 1
    assert "SOCKS5 authentication failed" in result.stderr
    assert "retry" not in result.stderr and "wrong-pass" not in result.stderr


# --- failures --------------------------------------------------------------------------------
def test_a_proxy_that_is_down_is_named_after_retries(origins, tmp_path):
    port = free_port("127.0.0.1")
    result = Midair("epoll", FAST).get(
        "--proxy",
        f"http://user:hidden@127.0.0.1:{port}",
        "--retries",
        "2",
        "--max-retry-wait",
        "0.1",
        "-d",
        str(tmp_path),
        urls(origins["https"])[0],
    )
    assert result.returncode == 1
    (line,) = failures(result.stderr)
    assert f"via proxy http://127.0.0.1:{port}: connection refused" in line
    assert "gave up after 2 retries" in line
    assert "hidden" not in result.stderr


def test_a_drop_mid_body_resumes_with_range(engine, tinyproxy, server, tmp_path):
    url = server.url(
        0, f"/gen/drop.bin?size=400000&t=proxy-{engine}&reset_after=200000&fail_times=1"
    )
    result = Midair(engine, FAST).get("--proxy", tinyproxy.url(), "-d", str(tmp_path), url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "drop.bin").read_bytes() == expected_bytes("drop.bin", 400_000)
    target = url.split("/", 3)[3]
    requests = [r for r in server.stats().log if r.target == "/" + target]
    assert len(requests) == 2
    assert (requests[1].header("range") or "").startswith("bytes=")


# --- the environment, NO_PROXY ---------------------------------------------------------------
def _env(**variables: str) -> dict[str, str]:
    return {**os.environ, **variables}


def run_with_env(env: dict[str, str], *args: str) -> object:
    import subprocess

    return subprocess.run(
        Midair("epoll", FAST).command(*args), capture_output=True, text=True, env=env, timeout=60
    )


def test_environment_proxies_as_curl_reads_them(origins, tinyproxy, microsocks, ca, tmp_path):
    http = run_with_env(
        _env(http_proxy=tinyproxy.url()), "-d", str(tmp_path / "1"), *urls(origins["http"])
    )
    assert http.returncode == 0, http.stderr  # type: ignore[attr-defined]
    https = run_with_env(
        _env(HTTPS_PROXY=tinyproxy.url()),
        "--ca-certificate",
        str(ca[0]),
        "-d",
        str(tmp_path / "2"),
        *urls(origins["https"]),
    )
    assert https.returncode == 0, https.stderr  # type: ignore[attr-defined]
    every = run_with_env(
        _env(ALL_PROXY=microsocks.url()), "-d", str(tmp_path / "3"), *urls(origins["http"])
    )
    assert every.returncode == 0, every.stderr  # type: ignore[attr-defined]
    for sub in "123":
        assert_files(tmp_path / sub)


def test_upper_case_http_proxy_and_no_proxy_and_empty_proxy_go_direct(server, tmp_path):
    """A dead proxy in HTTP_PROXY (httpoxy: ignored), in http_proxy with NO_PROXY naming
    the host, or with --proxy '': each run reaches midair serve directly."""
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    url = server.url(0, "/gen/direct.bin?size=1000")
    host = url.split("/")[2].split(":")[0]
    cases = [
        (_env(HTTP_PROXY=dead), ()),
        (_env(http_proxy=dead, NO_PROXY=f"example.org, {host}"), ()),
        (_env(http_proxy=dead, no_proxy="127.0.0.0/8"), ()),
        (_env(http_proxy=dead), ("--noproxy", "*")),
        (_env(http_proxy=dead), ("--proxy", "")),
    ]
    for i, (env, extra) in enumerate(cases):
        result = run_with_env(env, *extra, "--retries", "0", "-d", str(tmp_path / str(i)), url)
        assert result.returncode == 0, (i, result.stderr)  # type: ignore[attr-defined]
    refused = run_with_env(_env(http_proxy=dead), "--retries", "0", "-d", str(tmp_path / "x"), url)
    assert refused.returncode == 1 and "via proxy" in refused.stderr  # type: ignore[attr-defined]


# --- SOCKS5h sends the name; socks5 resolves it first ------------------------------------------
def test_socks5h_sends_the_name_the_client_cannot_resolve(
    origins, microsocks, tmp_path, monkeypatch
):
    """In-process, the client's resolver refuses ``localhost``: socks5h still works
    (the proxy resolves it), socks5 fails naming the look-up."""
    import midair

    real = socket.getaddrinfo

    def refuse_localhost(host, *args, **kwargs):
        if host in ("localhost", b"localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", refuse_localhost)
    names = urls(origins["http"], "localhost")
    done = midair.download(names, tmp_path / "h", proxy=microsocks.url("socks5h"), engine="epoll")
    assert done.ok, done
    assert_files(tmp_path / "h")
    failed = midair.download(
        names, tmp_path / "l", proxy=microsocks.url("socks5"), engine="epoll", retries=0
    )
    assert not failed.ok
    assert "cannot resolve host localhost" in str(failed)


# --- SOCKS4a: a small server made for the test (microsocks speaks SOCKS5 only) ---------------
class Socks4aServer(threading.Thread):
    """Accepts one SOCKS4a CONNECT per connection, connects from ``OUTGOING``, relays."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[tuple[str, int, bytes]] = []
        self.sockets: list[socket.socket] = []  # closed by ``close``

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client: socket.socket) -> None:
        head = b""
        while head.count(b"\0") < 2 or len(head) < 9:
            chunk = client.recv(512)
            if not chunk:
                return
            head += chunk
        port = int.from_bytes(head[2:4], "big")
        user, name = head[8:].split(b"\0")[:2]
        self.requests.append((name.decode(), port, user))
        upstream = socket.create_connection((name.decode(), port), source_address=(OUTGOING, 0))
        self.sockets.append(upstream)
        client.sendall(b"\0\x5a" + head[2:8])
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_relay, args=(a, b), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        self.listener.close()
        self.join(5)
        for sock in self.sockets:
            sock.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def test_socks4a_sends_the_name_and_user_id(origins, tmp_path):
    server = Socks4aServer()
    server.start()
    try:
        proxy = f"socks4a://someone@127.0.0.1:{server.port}"
        result = Midair("epoll", FAST).get(
            "--proxy", proxy, "-d", str(tmp_path), *urls(origins["http"], "localhost")
        )
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert_files(tmp_path)
    assert ("localhost", origins["http"].port, b"someone") in server.requests


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(addresses=1) as srv:
        yield srv


def test_tls_inside_a_tunnel_is_verified_against_the_origin(
    origins, tinyproxy, microsocks, tmp_path
):
    """Without the test CA the origin's certificate is refused, at once, whichever proxy
    carries the tunnel: TLS is end to end with the origin, never with the proxy."""
    for proxy in (tinyproxy.url(), microsocks.url()):
        args = ["--proxy", proxy, "-d", str(tmp_path), urls(origins["https"])[0]]
        result = Midair("epoll", FAST).get(*args)
        assert result.returncode == 1
        (line,) = failures(result.stderr)
        assert "certificate" in line and "via proxy" in line
        assert "retry" not in result.stderr


@pytest.fixture(scope="module")
def h2_origin(
    workdir: Path, ca: tuple[Path, Path, Path], origins: dict[str, Nginx]
) -> Iterator[Nginx]:
    """nginx speaking HTTP/2 over TLS, allowing only ``OUTGOING``."""
    server = Nginx(
        workdir / "root",
        tls=(ca[1], ca[2]),
        http2=True,
        access_log=workdir / "h2-access.log",
        extra_locations=f"        allow {OUTGOING};\n        deny all;\n",
    ).start()
    yield server
    server.stop()


def test_http2_inside_a_connect_tunnel(midair, h2_origin, tinyproxy_h2, ca, workdir, tmp_path):
    """ALPN inside the tunnel is the origin's: an h2 origin is spoken HTTP/2 to."""
    log = workdir / "h2-access.log"
    before = _h2_requests(log)
    args = ["-d", str(tmp_path), "--ca-certificate", str(ca[0]), *urls(h2_origin)]
    result = midair.get("--proxy", tinyproxy_h2.url(), *args)
    assert result.returncode == 0, result.stderr
    assert_files(tmp_path)
    deadline = time.monotonic() + 2  # nginx flushes its log buffer every 20 ms
    while _h2_requests(log) < before + len(FILES) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _h2_requests(log) == before + len(FILES)


def _h2_requests(log: Path) -> int:
    return log.read_text().count(" HTTP/2.0") if log.exists() else 0


@pytest.fixture(scope="module")
def tinyproxy_h2(workdir: Path, h2_origin: Nginx) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(workdir, connect_ports=(h2_origin.port,)).start()
    yield proxy  # type: ignore[misc]
    proxy.stop()
