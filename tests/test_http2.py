"""HTTP/2 end to end on every engine, against nginx: TLS with ALPN ``h2`` and h2c by prior
knowledge.  nginx's access log (``$server_protocol``, ``$connection``) proves which
protocol carried each request and over how many connections.  The faults nginx will
not play (RST_STREAM, GOAWAY, a wrong length) come from ``midair serve --http2``, whose
request log records the protocol of each request.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Midair, NginxFactory

import midair
from midair.serve import RequestRecord, ServerThread, expected_bytes
from midair.serve.nginx import Nginx, parse_access_line

pytestmark = pytest.mark.nginx
SIZES = [0, 1, 1000, 70_000, 300_001] + [2000 + 37 * i for i in range(15)]


def _bodies() -> dict[str, bytes]:
    rng = random.Random(11)
    return {f"f{i}.bin": rng.randbytes(size) for i, size in enumerate(SIZES)}


BODIES = _bodies()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    where = tmp_path_factory.mktemp("h2-ca")
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
    cert.private_key_pem.write_to_path(str(where / "key.pem"))
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    return where / "cert.pem", where / "key.pem", str(where / "ca.pem")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = tmp_path / "www"
    files.mkdir()
    for name, data in BODIES.items():
        (files / name).write_bytes(data)
    return files


def logged(server: Nginx, count: int) -> list[tuple[str, int, int]]:
    """(protocol, connection, status) of the first ``count`` requests, once logged."""
    assert server.access_log is not None
    deadline = time.monotonic() + 5
    while True:
        text = server.access_log.read_text() if server.access_log.exists() else ""
        lines = [parse_access_line(line) for line in text.splitlines()]
        found = [(r.protocol, r.connection, r.status) for r in lines if r is not None]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)  # nginx flushes its log buffer every 20 ms


def _options(engine: str) -> dict[str, object]:
    if engine in ("processes", "dask"):
        return {"engine": engine, "engine_options": {"workers": 2}}
    return {"engine": engine}


def check(results: midair.Results, names: list[str]) -> None:
    assert results.ok, results.failures
    assert sorted(Path(s.path).name for s in results.successes) == sorted(names)
    for success in results.successes:
        assert Path(success.path).read_bytes() == BODIES[Path(success.path).name]


def test_many_files_over_one_tls_http2_connection(
    engine: str,
    nginx: NginxFactory,
    root: Path,
    tmp_path: Path,
    certificate: tuple[Path, Path, str],
) -> None:
    cert, key, ca = certificate
    server = nginx(root, tls=(cert, key), http2=True, access_log=tmp_path / "access.log")
    names = list(BODIES)
    urls = [server.url(0, name) for name in names]
    results = midair.download(urls, tmp_path / "out", ca_certificate=ca, **_options(engine))
    check(results, names)
    requests = logged(server, len(names))
    assert {protocol for protocol, _, _ in requests} == {"HTTP/2.0"}
    if engine not in ("processes", "dask"):  # a shard per worker: a connection each
        assert len({conn for _, conn, _ in requests}) == 1


def test_http1_1_flag_keeps_to_http_1_1(
    nginx: NginxFactory, root: Path, tmp_path: Path, certificate: tuple[Path, Path, str]
) -> None:
    cert, key, ca = certificate
    server = nginx(root, tls=(cert, key), http2=True, access_log=tmp_path / "access.log")
    names = list(BODIES)[:4]
    urls = [server.url(0, name) for name in names]
    results = midair.download(urls, tmp_path / "out", ca_certificate=ca, http2=False)
    check(results, names)
    assert {protocol for protocol, _, _ in logged(server, 4)} == {"HTTP/1.1"}


def test_h2c_by_prior_knowledge(
    engine: str, nginx: NginxFactory, root: Path, tmp_path: Path
) -> None:
    server = nginx(root, http2=True, access_log=tmp_path / "access.log")
    names = list(BODIES)[:8]
    urls = [server.url(0, name) for name in names]
    options = _options(engine)
    results = midair.download(urls, tmp_path / "out", http2_prior_knowledge=True, **options)
    check(results, names)
    assert {protocol for protocol, _, _ in logged(server, 8)} == {"HTTP/2.0"}


def test_an_interrupted_run_resumes_with_range_over_http2(
    engine: str,
    midair: Midair,
    nginx: NginxFactory,
    root: Path,
    tmp_path: Path,
    certificate: tuple[Path, Path, str],
) -> None:
    """SIGTERM mid-body leaves part files; the re-run asks the rest (206) over HTTP/2."""
    cert, key, ca = certificate
    log = tmp_path / "access.log"
    server = nginx(root, tls=(cert, key), http2=True, access_log=log, limit_rate=150_000)
    out = tmp_path / "out"
    url = server.url(0, "f4.bin")  # 300_001 bytes: two seconds at this rate
    args = ["--ca-certificate", ca, "-d", str(out), url]
    proc = subprocess.Popen(
        midair.command(*args), stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while not list(out.glob("*.midair-ctl")) and time.monotonic() < deadline:
            time.sleep(0.05)  # a control file comes after a second of receiving
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert not (out / "f4.bin").exists()
    again = midair.get(*args, timeout=60)
    assert again.returncode == 0, again.stderr
    assert (out / "f4.bin").read_bytes() == BODIES["f4.bin"]
    requests = logged(server, 2)
    assert [status for _, _, status in requests][-1] == 206
    assert {protocol for protocol, _, _ in requests} == {"HTTP/2.0"}


def test_a_redirect_and_a_404_over_http2(
    nginx: NginxFactory, root: Path, tmp_path: Path, certificate: tuple[Path, Path, str]
) -> None:
    cert, key, ca = certificate
    server = nginx(root, tls=(cert, key), http2=True, access_log=tmp_path / "access.log")
    urls = [server.url(0, "redirect/f2.bin"), server.url(0, "missing.bin")]
    results = midair.download(urls, tmp_path / "out", ca_certificate=ca)
    assert [Path(s.path).name for s in results.successes] == ["f2.bin"]
    assert len(results.failures) == 1 and "404" in str(results.failures[0])
    assert {protocol for protocol, _, _ in logged(server, 3)} == {"HTTP/2.0"}


# --- faults nginx does not play: midair serve --http2 (h2c), each fault on its stream -------
@pytest.fixture(scope="module")
def h2c() -> Iterator[ServerThread]:
    with ServerThread(addresses=1, http2=True) as server:
        yield server


def requests_for(server: ServerThread, name: str) -> list[RequestRecord]:
    return [r for r in server.stats().log if r.target.startswith(f"/gen/{name}?")]


def test_stream_faults_retry_that_download_only(
    engine: str, h2c: ServerThread, tmp_path: Path
) -> None:
    """RST_STREAM, a connection cut mid-DATA and a GOAWAY: each download they hit is
    retried (a cut or reset one resumes with Range), the others on the connection are
    unharmed.  ``t=`` keeps each engine's ``fail_times`` counters apart."""
    tag = f"t={engine}"
    sizes = {f"o{i}.bin": 5000 + 999 * i for i in range(6)}
    faults = {
        "r.bin": (50_000, "reset_after=20000"),
        "c.bin": (200_000, "goaway_after=100000"),
        "g.bin": (3000, "goaway_after=0"),
    }
    queries = [f"/gen/{n}?size={size}&{tag}" for n, size in sizes.items()]
    queries += [
        f"/gen/{n}?size={size}&{fault}&fail_times=1&{tag}" for n, (size, fault) in faults.items()
    ]
    options = {"http2_prior_knowledge": True, "retry_base": 0.01, **_options(engine)}
    results = midair.download([h2c.url(0, q) for q in queries], str(tmp_path), **options)
    assert results.ok, results.failures
    sizes.update({name: size for name, (size, _) in faults.items()})
    for name, size in sizes.items():
        assert (tmp_path / name).read_bytes() == expected_bytes(name, size), name
    for name in faults:
        mine = [r for r in requests_for(h2c, name) if tag in r.target]
        # Retried once; one more when c.bin's GOAWAY names a retried stream unprocessed.
        assert len(mine) in (2, 3) and {r.version for r in mine} == {"HTTP/2"}, name
    resumed = [r for r in requests_for(h2c, "r.bin") if tag in r.target][-1]
    assert resumed.header("range") == "bytes=20000-"  # resumed, not fetched again whole


def test_a_wrong_content_length_fails_and_names_it(
    engine: str, h2c: ServerThread, tmp_path: Path
) -> None:
    wrong = h2c.url(0, f"/gen/w.bin?size=20&length=10&t={engine}")
    fine = h2c.url(0, f"/gen/fine.bin?size=7000&t={engine}")
    options = {"http2_prior_knowledge": True, "retries": 1, "retry_base": 0, **_options(engine)}
    results = midair.download([wrong, fine], str(tmp_path), **options)
    assert [Path(s.path).name for s in results.successes] == ["fine.bin"]
    [failure] = results.failures
    assert "w.bin" in str(failure) and "declared 10 bytes" in str(failure)
    assert not (tmp_path / "w.bin").exists()
