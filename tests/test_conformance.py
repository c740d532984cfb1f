"""The CLI end to end against ``midair serve``, once per engine.

Every engine must give byte-identical files and the same exit statuses and
messages for the same faults: this file is the conformance suite.  Each test
adds ``t=<engine>`` to its URLs so ``fail_times`` counters never leak between
engines on the shared server.

The cases that depend on the HTTP exchange run over HTTP/2 too (h2c: ``midair
serve --http2`` and ``--http2-prior-knowledge``, the same faults on each
stream, ``over_http2``): on every engine where a case is cheap, on one engine
of each kind of I/O glue (``H2_ENGINES``) where it costs seconds each.  The
HTTPS cases run over h2 by ALPN too (``over_tls_http2``, ``H2_ENGINES``: each
glue reads ALPN its own way) and check from the server's log that the protocol
under test was the one spoken.

``dask`` joins one cluster for the module (``--scheduler``) rather than starting
its own in every run (1-2 s each): what is compared here is what the shards do,
the same on either.  The interruption tests keep the engine's own cluster, as
the contract tests do: a signal to the process group must reach its workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import (
    H2,
    H2_ENGINES,
    H2C,
    HTTP1,
    Midair,
    over_http2,
    over_tls_http2,
    protocol_options,
)

from midair.serve import ServerThread, expected_bytes


@pytest.fixture
def midair(clustered_midair: Midair) -> Midair:
    return clustered_midair


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.midair-*"))


def gen(server: ServerThread, host: int, name: str, size: int, engine: str, **query: object) -> str:
    params = "".join(f"&{k}={v}" for k, v in query.items())
    return server.url(host, f"/gen/{name}?size={size}&t={engine}{params}")


def assert_file(directory: Path, name: str, size: int) -> None:
    data = (directory / name).read_bytes()
    assert len(data) == size
    assert data == expected_bytes(name, size), f"{name}: bytes differ"


@over_http2()
def test_many_files_from_several_hosts_are_byte_exact(midair, server, engine, tmp_path):
    sizes = [0, 1, 1000, 65536, 300_001, 1 << 20]
    urls = [gen(server, i % 3, f"f{i}.bin", size, engine) for i, size in enumerate(sizes)]
    result = midair.get("-d", str(tmp_path), *urls)
    assert result.returncode == 0, result.stderr
    for i, size in enumerate(sizes):
        assert_file(tmp_path, f"f{i}.bin", size)
    assert leftovers(tmp_path) == []


@over_http2()
def test_404_fails_at_once_naming_url_and_status(midair, server, engine, tmp_path):
    good = gen(server, 0, "good.bin", 5000, engine)
    missing = gen(server, 1, "missing.bin", 10, engine, status=404)
    result = midair.get("-d", str(tmp_path), good, missing)
    assert result.returncode == 1
    failure_lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failure_lines) == 1
    assert missing in failure_lines[0] and "HTTP 404" in failure_lines[0]
    assert "retry" not in result.stderr
    assert_file(tmp_path, "good.bin", 5000)
    assert not (tmp_path / "missing.bin").exists()


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "retry_after": 1, "fail_times": 1},
        {"status": 429, "fail_times": 1},
        {"status": 500, "fail_times": 2},
        {"reset_after": 100_000, "fail_times": 1},
        {"truncate": 7000, "fail_times": 1},
        {"goaway_after": 7000, "fail_times": 1},
        {"length": 400_000, "fail_times": 1},
        {"redirect": 3},
        {"chunked": 1},
        {"bad_range": 1, "reset_after": 100_000, "fail_times": 1},
        {"no_range": 1, "reset_after": 100_000, "fail_times": 1},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
@over_http2(H2_ENGINES)
def test_faults_are_survived(midair, server, engine, tmp_path, fault):
    url = gen(server, 2, "faulty.bin", 300_000, engine, **fault)
    result = midair.get("-d", str(tmp_path), url, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "faulty.bin", 300_000)
    assert leftovers(tmp_path) == []


@over_http2()
def test_reset_resumes_with_range_and_if_range(midair, server, engine, tmp_path):
    url = gen(server, 0, "resume.bin", 400_000, engine, reset_after=200_000, fail_times=1)
    result = midair.get("-d", str(tmp_path), url)
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "resume.bin", 400_000)
    target = url.split("/", 3)[3]
    requests = [r for r in server.stats().log if r.target == "/" + target]
    assert len(requests) == 2
    assert requests[1].header(
        "range",
    ) and requests[1].header("range").startswith("bytes=")
    assert int(requests[1].header("range")[6:-1]) > 0
    assert requests[1].header("if-range")


@over_http2(H2_ENGINES)
def test_stall_times_out_then_completes(midair, server, engine, tmp_path):
    url = gen(server, 1, "stall.bin", 200_000, engine, stall_after=50_000, fail_times=1)
    result = midair.get("-d", str(tmp_path), "--timeout", "1", url, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "stall.bin", 200_000)


@over_http2()
def test_too_many_redirects_fail_clearly(midair, server, engine, tmp_path):
    url = gen(server, 0, "loop.bin", 10, engine, redirect=11)
    result = midair.get("-d", str(tmp_path), url)
    assert result.returncode == 1
    assert "more than 10 redirects" in result.stderr
    assert url in result.stderr


@over_http2()
def test_existing_file_is_never_overwritten_without_permission(midair, server, engine, tmp_path):
    (tmp_path / "mine.bin").write_bytes(b"precious")
    url = gen(server, 0, "mine.bin", 1000, engine)
    result = midair.get("-d", str(tmp_path), url)
    assert result.returncode == 1
    assert "--overwrite" in result.stderr and "mine.bin" in result.stderr
    assert (tmp_path / "mine.bin").read_bytes() == b"precious"
    result = midair.get("-d", str(tmp_path), "--overwrite", url)
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "mine.bin", 1000)


@over_http2()
def test_rerun_skips_finished_files_without_a_request(midair, server, engine, tmp_path):
    urls = [gen(server, i, f"again{i}.bin", 20_000, engine) for i in range(3)]
    assert midair.get("-d", str(tmp_path), *urls).returncode == 0
    before = server.stats().requests
    result = midair.get("-d", str(tmp_path), *urls)
    assert result.returncode == 0, result.stderr
    assert server.stats().requests == before
    for i in range(3):
        assert_file(tmp_path, f"again{i}.bin", 20_000)


@over_http2()
def test_names_as_curl_and_wget_give_them_and_a_reversed_rerun_skips_all(
    midair, server, engine, tmp_path
):
    """Names from the URL given (a redirect to a dotfile, a ``/`` URL), the server's
    Content-Disposition, duplicates numbered by URL, a repeated URL fetched once; then the
    list reversed: every file skipped, no request."""
    hidden = quote(f"/gen/.hidden-report.pdf?size=3000&t={engine}", safe="")
    index = quote(f"/gen/index-page?size=400&t={engine}", safe="")
    dups = [gen(server, 1, "dup.bin", 2000, engine, version=v) for v in ("b", "a")]
    urls = [
        gen(server, 0, "report.pdf", 0, engine, location=hidden),
        server.url(2, f"/?t={engine}&location={index}"),
        gen(server, 0, "download", 1500, engine, cd="named.bin"),
        *dups,
        dups[0],
    ]
    result = midair.get("-d", str(tmp_path), "--json", *urls)
    assert result.returncode == 0, result.stderr
    done = [json.loads(line)["url"] for line in result.stdout.splitlines() if '"done"' in line]
    assert sorted(done) == sorted(set(urls))  # the repeated URL: once
    assert (tmp_path / "report.pdf").read_bytes() == expected_bytes(".hidden-report.pdf", 3000)
    assert (tmp_path / "index.html").read_bytes() == expected_bytes("index-page", 400)
    assert (tmp_path / "named.bin").read_bytes() == expected_bytes("download", 1500)
    assert (tmp_path / "dup.bin").read_bytes() == expected_bytes("dup.bin", 2000, "a")
    assert (tmp_path / "dup.bin.1").read_bytes() == expected_bytes("dup.bin", 2000, "b")
    assert sorted(os.listdir(tmp_path)) == [
        "dup.bin",
        "dup.bin.1",
        "index.html",
        "named.bin",
        "report.pdf",
    ]
    before = server.stats().requests
    again = midair.get("-d", str(tmp_path), "--json", *urls[::-1])
    assert again.returncode == 0, again.stderr
    assert server.stats().requests == before
    assert again.stdout.count('"skipped": true') == 5, again.stdout


@over_http2()
def test_checksum_mismatch_fails_and_publishes_nothing(midair, server, engine, tmp_path):
    url = gen(server, 0, "sum.bin", 3000, engine)
    wrong = "sha-256=" + "0" * 64
    right = "sha-256=" + hashlib.sha256(expected_bytes("sum.bin", 3000)).hexdigest()
    result = midair.get("-d", str(tmp_path), "--checksum", wrong, url)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and url in result.stderr
    assert not (tmp_path / "sum.bin").exists() and leftovers(tmp_path) == []
    result = midair.get("-d", str(tmp_path), "--checksum", right, url)
    assert result.returncode == 0, result.stderr


@over_http2(H2_ENGINES)
def test_per_host_limit_holds_at_the_server(midair, engine, protocol, tmp_path):
    with ServerThread(addresses=1, rate=200_000, http2=protocol == H2C) as slow:
        urls = [slow.url(0, f"/gen/p{i}.bin?size=60000") for i in range(12)]
        result = midair.get("-d", str(tmp_path), "--per-host", "3", "-j", "50", *urls)
        stats = slow.stats().addresses[slow.hosts[0]]
    assert result.returncode == 0, result.stderr
    # --per-host counts connections: over h2c, one per loop (each of the 2 workers of
    # ``processes`` has its own), carrying its downloads as streams.
    if protocol == H2C:
        assert stats.max_concurrent == (2 if engine == "processes" else 1)
    else:
        assert stats.max_concurrent == (1 if engine == "sequential" else 3)


def test_refused_connection_is_retried_then_reported(midair, engine, tmp_path):
    result = midair.get(
        "-d",
        str(tmp_path),
        "--retries",
        "2",
        "--max-retry-wait",
        "0.2",
        "http://127.0.0.1:9/nothing.bin",
    )
    assert result.returncode == 1
    assert "connection refused" in result.stderr
    assert "http://127.0.0.1:9/nothing.bin" in result.stderr


# --- interruptions: SIGKILL and Ctrl-C, then the same command again ------------------------
def _start(midair, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        midair.command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for_parts(directory: Path, count: int, min_bytes: int, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        parts = list(directory.glob("*.midair-part"))
        controls = list(directory.glob("*.midair-ctl"))
        if (
            len(parts) == count
            and len(controls) == count
            and all(p.stat().st_size >= min_bytes for p in parts)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"part files never reached {min_bytes} bytes")


def _interrupt(proc: subprocess.Popen[str], how: str) -> None:
    """SIGINT and SIGTERM to the process group, as a terminal sends them; SIGKILL to the
    main process alone, as the OOM killer does: its workers end with it by themselves, and
    multiprocessing's resource tracker lives to unlink its semaphores (killed with the
    group, it would leave a dask cluster's in /dev/shm)."""
    if how == "SIGKILL":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, getattr(signal, how))


def _wait_until_gone(group: int, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"processes of group {group} outlived it by {limit} s")


@over_http2(H2_ENGINES)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_interrupted_run_resumes_byte_exact(engine, protocol, tmp_path, how):
    # dask: its own cluster, in the process group the signal reaches
    midair = Midair(engine, protocol_options(protocol))
    size = 400_000
    in_flight = 1 if engine == "sequential" else 4  # transfers with a part file when stopped
    with ServerThread(addresses=2, rate=150_000, http2=protocol == H2C) as slow:
        urls = [slow.url(i % 2, f"/gen/k{i}.bin?size={size}") for i in range(4)]
        proc = _start(midair, "-d", str(tmp_path), *urls)
        try:
            # Control files appear after a second of receiving (or on an orderly exit).
            _wait_for_parts(tmp_path, in_flight, 100_000 if how == "SIGKILL" else 1)
        finally:
            _interrupt(proc, how)
            _, stderr = proc.communicate(timeout=30)
            _wait_until_gone(proc.pid)  # workers too: none may write while the re-run does
        expected = {"SIGKILL": -9, "SIGINT": 130, "SIGTERM": 143}[how]
        assert proc.returncode == expected, stderr
        assert not any((tmp_path / f"k{i}.bin").exists() for i in range(4))
        assert len(list(tmp_path.glob("*.midair-ctl"))) == in_flight
        slow.reset_stats()
        slow.set_rate(0)  # nothing needs to stay in flight now: the re-run goes at full speed
        result = midair.get("-d", str(tmp_path), *urls, timeout=60)
        log = slow.stats().log
    assert result.returncode == 0, result.stderr
    for i in range(4):
        assert_file(tmp_path, f"k{i}.bin", size)
    assert leftovers(tmp_path) == []
    resumed = [r for r in log if r.header("range")]
    assert len(resumed) == in_flight, "every started file should resume from its part file"


def test_a_signed_url_resumes_its_part_under_a_new_token(engine, tmp_path):
    """A run of ``?token=a`` killed mid-file, then the same file signed anew (``?token=b``):
    the part file is the job's by name, so it resumes with Range from where it stopped."""
    midair = Midair(engine)
    size = 400_000
    with ServerThread(addresses=1, rate=150_000) as slow:
        proc = _start(midair, "-d", str(tmp_path), slow.url(0, f"/gen/s.bin?size={size}&token=a"))
        try:
            _wait_for_parts(tmp_path, 1, 100_000)  # its control file is written by then
        finally:
            _interrupt(proc, "SIGKILL")
            proc.communicate(timeout=30)
            _wait_until_gone(proc.pid)  # workers too: none may write while the re-run does
        kept = (tmp_path / "s.bin.midair-part").stat().st_size
        slow.reset_stats()
        slow.set_rate(0)
        result = midair.get("-d", str(tmp_path), slow.url(0, f"/gen/s.bin?size={size}&token=b"))
        log = slow.stats().log
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "s.bin", size)
    assert leftovers(tmp_path) == [] and not (tmp_path / "s.bin.1").exists()
    [request] = log
    assert "token=b" in request.target
    assert request.header("range") == f"bytes={kept}-" and request.header("if-range")


# --- HTTPS ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_servers_by_protocol(tmp_path_factory) -> Iterator[tuple[dict[str, ServerThread], Path]]:
    """HTTPS over HTTP/1.1 only (no ALPN), and HTTPS offering h2 by ALPN."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.1.1")
    contexts = [ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) for _ in range(2)]
    for context in contexts:
        cert.configure_cert(context)
    ca_path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with (
        ServerThread(addresses=1, tls=contexts[0]) as http1,
        ServerThread(addresses=1, tls=contexts[1], http2=True) as h2,
    ):
        yield {HTTP1: http1, H2: h2}, ca_path


@pytest.fixture
def tls_server(tls_servers_by_protocol, protocol) -> tuple[ServerThread, Path]:
    servers, ca_path = tls_servers_by_protocol
    return servers[protocol], ca_path


def assert_spoke(srv: ServerThread, protocol: str, marker: str) -> None:
    """The requests naming ``marker`` came over the protocol under test, not a fallback."""
    versions = {r.version for r in srv.stats().log if marker in r.target}
    assert versions == {"HTTP/2" if protocol == H2 else "HTTP/1.1"}


@over_tls_http2()
def test_https_verifies_against_the_given_ca(midair, engine, protocol, tls_server, tmp_path):
    srv, ca_path = tls_server
    url = srv.url(0, f"/gen/secure.bin?size=100000&t={engine}-{protocol}")
    assert url.startswith("https://")
    result = midair.get("-d", str(tmp_path), "--ca-certificate", str(ca_path), url)
    assert result.returncode == 0, result.stderr
    assert_file(tmp_path, "secure.bin", 100_000)
    assert_spoke(srv, protocol, f"t={engine}-{protocol}")


@over_tls_http2()
def test_https_unknown_issuer_fails_without_retry(midair, engine, protocol, tls_server, tmp_path):
    srv, _ = tls_server
    url = srv.url(0, f"/gen/untrusted.bin?size=1000&t={engine}-{protocol}")
    result = midair.get("-d", str(tmp_path), url)
    assert result.returncode == 1
    line = next(x for x in result.stderr.splitlines() if x.startswith("failed:"))
    assert url in line and "certificate" in line
    assert "retry" not in result.stderr
    insecure = midair.get("-d", str(tmp_path), "--insecure", url)
    assert insecure.returncode == 0, insecure.stderr
    assert_file(tmp_path, "untrusted.bin", 1000)
    assert_spoke(srv, protocol, f"t={engine}-{protocol}")


# --- a real nginx ----------------------------------------------------------------------------
def test_nginx_interop_keepalive_range_404_redirect(midair, engine, nginx, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    blobs = {f"n{i}.bin": os.urandom(50_000 + i) for i in range(6)}
    for name, data in blobs.items():
        (root / name).write_bytes(data)
    server = nginx(root, hosts=["127.0.1.1", "127.0.1.2"])
    out = tmp_path / "out"
    # A part file from an earlier run: midair must resume it with Range + If-Range.
    out.mkdir()
    first = blobs["n0.bin"]
    etag = urllib.request.urlopen(server.url(0, "/n0.bin")).headers["ETag"]
    (out / "n0.bin.midair-part").write_bytes(first[:20_000])
    (out / "n0.bin.midair-ctl").write_text(
        json.dumps(
            {
                "url": server.url(0, "/n0.bin"),
                "size": len(first),
                "etag": etag,
                "last_modified": None,
            }
        )
    )
    urls = [server.url(i % 2, f"/{name}") for i, name in enumerate(blobs)]
    urls += [server.url(0, "/redirect/n5.bin"), server.url(1, "/missing.bin")]
    result = midair.get("-d", str(out), "--per-host", "1", *urls[:-2], urls[-1])
    assert result.returncode == 1
    assert "HTTP 404" in result.stderr and urls[-1] in result.stderr
    for name, data in blobs.items():
        assert (out / name).read_bytes() == data
    assert leftovers(out) == []
    redirected = midair.get("-d", str(tmp_path / "r"), urls[-2])
    assert redirected.returncode == 0, redirected.stderr
    assert (tmp_path / "r" / "n5.bin").read_bytes() == blobs["n5.bin"]


# --- user headers: they replace midair's own, and never break a run -----------------------
def test_user_headers_replace_midairs_and_reach_the_server(midair, server, tmp_path):
    target = f"/gen/hdr-{midair.engine}.bin?size=300"
    result = midair.get(
        "-d",
        str(tmp_path),
        "-H",
        "User-Agent: mine/1",
        "-H",
        "Host: vhost.test",
        "-H",
        "X-A: é☃",
        "-H",
        "accept: text/plain",
        server.url(0, target),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"hdr-{midair.engine}.bin").stat().st_size == 300
    [request] = [r for r in server.stats().log if r.target == target]
    assert request.header("user-agent") == "mine/1" and request.header("host") == "vhost.test"
    assert request.header("accept") == "text/plain"
    assert request.header("x-a") == "é☃".encode().decode("latin-1")  # UTF-8 bytes on the wire
    names = [name.lower() for name, _ in request.headers]
    assert names.count("user-agent") == names.count("host") == names.count("accept") == 1


def test_a_framing_header_is_refused_before_anything_starts(midair, server, tmp_path):
    result = midair.get(
        "-d", str(tmp_path), "-H", "Content-Length: 5", server.url(0, "/gen/never.bin?size=5")
    )
    assert result.returncode == 2 and "Content-Length" in result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []
