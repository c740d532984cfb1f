"""The nginx harness itself: a real nginx on three loopback addresses answers
the way the interop tests and the benchmark assume (200, 206, ETag, 404, 302,
rate limit). If these fail, every nginx-based result is suspect."""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from midair.serve.nginx import Nginx, NginxError, render_config

NginxFactory = Callable[..., Nginx]

pytestmark = pytest.mark.nginx

HOSTS = ["127.0.0.1", "127.0.1.2", "127.0.1.3"]
BODY = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = tmp_path / "www"
    files.mkdir()
    (files / "a.bin").write_bytes(BODY)
    (files / "slow.bin").write_bytes(b"s" * 3 * 32 * 1024)
    return files


def get(
    server: Nginx, host: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; no redirect following, unlike urllib."""
    conn = http.client.HTTPConnection(server.hosts[host], server.port, timeout=5)
    try:
        conn.request("GET", "/" + path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_serves_every_host(nginx: NginxFactory, root: Path) -> None:
    server = nginx(root, hosts=HOSTS)
    assert server.hosts == HOSTS and server.port > 0
    for i in range(len(HOSTS)):
        with urllib.request.urlopen(server.url(i, "a.bin"), timeout=5) as resp:
            assert resp.status == 200
            assert resp.read() == BODY
            assert resp.headers["ETag"]


def test_range_gives_206(nginx: NginxFactory, root: Path) -> None:
    server = nginx(root, hosts=HOSTS)
    status, headers, body = get(server, 1, "a.bin", {"Range": "bytes=100-199"})
    assert status == 206
    assert body == BODY[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(BODY)}"


def test_missing_is_404(nginx: NginxFactory, root: Path) -> None:
    server = nginx(root, hosts=HOSTS)
    assert get(server, 2, "missing")[0] == 404


def test_redirect(nginx: NginxFactory, root: Path) -> None:
    server = nginx(root, hosts=HOSTS)
    status, headers, _ = get(server, 2, "redirect/a.bin")
    assert status == 302
    assert headers["location"].endswith(f":{server.port}/a.bin")
    with urllib.request.urlopen(server.url(2, "redirect/a.bin"), timeout=5) as resp:
        assert resp.read() == BODY


def test_limit_rate_holds(nginx: NginxFactory, root: Path) -> None:
    """96 KiB at 32 KiB/s: nginx lets about one second's worth out at once, then
    paces, so about 2 s. Lower bound only: a loaded machine is only ever slower."""
    rate = 32 * 1024
    server = nginx(root, limit_rate=rate)
    start = time.monotonic()
    status, _, body = get(server, 0, "slow.bin")
    elapsed = time.monotonic() - start
    assert status == 200 and len(body) == 3 * rate
    assert elapsed >= 0.9


def test_tls(nginx: NginxFactory, root: Path, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    server = nginx(root, tls=(cert_path, key_path))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert server.url(0, "a.bin").startswith("https://")
    with urllib.request.urlopen(server.url(0, "a.bin"), context=context, timeout=5) as resp:
        assert resp.read() == BODY


def test_stop_cleans_up(nginx: NginxFactory, root: Path) -> None:
    server = Nginx(root)  # not from the factory: this test owns start and stop
    with server:
        prefix = server.prefix
        assert prefix is not None and prefix.is_dir()
        port = server.port
    assert not prefix.exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/a.bin", timeout=2)


def test_config_keeps_out_of_var(tmp_path: Path) -> None:
    conf = render_config(
        prefix=tmp_path,
        root=tmp_path,
        hosts=["127.0.0.1"],
        port=8080,
        limit_rate=1024,
        tls=None,
        workers=0,
        extra_locations="",
    )
    assert "/var/" not in conf
    assert "limit_rate 1024;" in conf and "worker_processes auto;" in conf


def test_bad_config_raises_with_log(nginx: NginxFactory, root: Path) -> None:
    with pytest.raises(NginxError, match="no_such_directive"):
        nginx(root, extra_locations="no_such_directive on;")
