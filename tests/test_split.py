"""Segments end to end (issue 10, "Segments"): ``-s N`` over every engine against
``midair serve`` (per-connection rate, per-request faults from the second request on)
and against nginx; SIGKILL in the middle and a re-run that keeps the finished ranges.

A file fetched in segments is byte-exact, or failed with nothing under its final name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import H2_ENGINES, Midair, NginxFactory, test_engines

from midair.serve import ServerThread, expected_bytes
from midair.serve.nginx import parse_access_line
from midair.store import CONTROL_SUFFIX, PART_SUFFIX

KiB = 1 << 10
SIZE = 1 << 20
RATE = 512 * KiB  # per connection: one connection takes 2 s, four about 0.5 s
SPLIT = ("-s", "4", "--min-split-size", "256K", "--per-host", "4")
# The faults need a second connection (never ``sequential``'s), and cost a second or two
# an engine: one engine of each kind of I/O glue, as the HTTP/2 suites do.
faulted = pytest.mark.parametrize("engine", [e for e in test_engines() if e in H2_ENGINES])


def gen(server: ServerThread, name: str, engine: str, faults: str = "", size: int = SIZE) -> str:
    return server.url(0, f"/gen/{name}?size={size}&rate={RATE}&t={engine}{faults}")


def asked(server: ServerThread, url: str) -> list:
    target = url.split("/", 3)[3]
    return [r for r in server.stats().log if r.target.lstrip("/") == target]


def test_a_large_file_comes_in_ranges_over_several_connections(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    url = gen(server, "split.bin", engine)
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "split.bin").read_bytes() == expected_bytes("split.bin", SIZE)
    first, *ranges = asked(server, url)
    assert first.header("range") is None
    if engine == "sequential":  # one connection at a time, by definition: it reads on
        assert not ranges
        return
    assert len(ranges) >= 3
    etags = {r.header("if-range") for r in ranges}
    assert len(etags) == 1 and None not in etags
    # In parallel, by the server's own clock: the ranges were all asked for before the
    # first connection could have sent its quarter at the server's pace.
    assert max(r.time for r in ranges[:3]) - first.time < (SIZE / 4) / RATE


@faulted
def test_a_range_answered_by_another_version_restarts_the_file_whole(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    url = gen(server, "changed.bin", engine, "&new_version=2&faults_after=1")
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 0, result.stderr
    # Never spliced: every byte is the new version's.
    assert (tmp_path / "changed.bin").read_bytes() == expected_bytes("changed.bin", SIZE, "2")


@faulted
def test_a_server_ignoring_range_after_the_first_answer_degrades_to_one_connection(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    url = gen(server, "norange.bin", engine, "&no_range=1&faults_after=1")
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "norange.bin").read_bytes() == expected_bytes("norange.bin", SIZE)


@faulted
def test_a_truncated_range_is_fetched_again_and_the_file_completes(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    url = gen(server, "cut.bin", engine, "&truncate=100000&faults_after=1&fail_times=1")
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cut.bin").read_bytes() == expected_bytes("cut.bin", SIZE)
    assert len(asked(server, url)) >= 5  # the cut range was asked for again


@faulted
def test_a_range_refused_for_good_fails_the_file_leaving_nothing_under_its_name(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    url = gen(server, "gone.bin", engine, "&status=404&faults_after=1")
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 1
    assert "HTTP 404 for bytes" in result.stderr
    assert not (tmp_path / "gone.bin").exists()


# --- SIGKILL, then the same command again -----------------------------------------------
KILL_ENGINES = ("asyncio", "threads")  # the default, and the blocking driver


@pytest.mark.parametrize("engine", KILL_ENGINES)
def test_sigkill_keeps_every_finished_range_and_a_rerun_fetches_only_the_rest(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    size = 3 << 20  # 6 s on one connection, 1.5 s on four: killed after a checkpoint
    url = gen(server, "killed.bin", engine, size=size)
    control = tmp_path / f"killed.bin{CONTROL_SUFFIX}"
    proc = subprocess.Popen(
        midair.command("-d", str(tmp_path), *SPLIT, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ranges = _wait_for_ranges(control, deadline=time.monotonic() + 20)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    expected = expected_bytes("killed.bin", size)
    part = (tmp_path / f"killed.bin{PART_SUFFIX}").read_bytes()
    kept = 0
    for start, end in ranges:
        assert part[start:end] == expected[start:end], "a recorded range holds other bytes"
        kept += end - start
    assert 0 < kept < size
    before = len(asked(server, url))
    result = midair.get("-d", str(tmp_path), *SPLIT, url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "killed.bin").read_bytes() == expected
    rerun = asked(server, url)[before:]
    assert rerun and all(r.header("range") and r.header("if-range") for r in rerun)
    fetched = sum(_length(r.header("range"), size) for r in rerun)
    assert fetched <= size - kept + (1 << 20)  # the gaps, and what the kill caught in flight


def _wait_for_ranges(control: Path, deadline: float) -> list[list[int]]:
    """The ranges of a control file once it records at least one."""
    while time.monotonic() < deadline:
        try:
            ranges = json.loads(control.read_text()).get("ranges")
        except (OSError, ValueError):
            ranges = None
        if ranges:
            return ranges
        time.sleep(0.05)
    raise AssertionError("no control file with ranges appeared")


def _length(value: str, size: int) -> int:
    first, _, last = value.removeprefix("bytes=").partition("-")
    return (int(last) + 1 if last else size) - int(first)


# --- a real server: nginx, limit_rate per connection ------------------------------------
def test_segments_against_nginx_are_206_answers_on_several_connections(
    nginx: NginxFactory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "big.bin").write_bytes(data)
    log = tmp_path / "access.log"
    # nginx lets a second's worth go at once, then keeps to the rate: 256K/s makes one
    # connection take 7 s here, four about 1 s.
    server = nginx(root, limit_rate=256 * KiB, access_log=log)
    out = tmp_path / "out"
    result = Midair("asyncio").get("-d", str(out), *SPLIT, server.url(0, "big.bin"))
    assert result.returncode == 0, result.stderr
    assert (out / "big.bin").read_bytes() == data
    lines = _logged(log, expected=4)
    partial = [r for r in lines if r.status == 206]
    assert len(partial) >= 3 and len({r.connection for r in lines}) >= 3


def _logged(log: Path, expected: int, wait: float = 3.0) -> list:
    """nginx's access log lines once ``expected`` are there (it flushes every 20 ms)."""
    deadline = time.monotonic() + wait
    while True:
        text = log.read_text() if log.exists() else ""
        lines = [r for r in map(parse_access_line, text.splitlines()) if r is not None]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


# --- over mirrors -----------------------------------------------------------------------
@faulted
def test_ranges_over_mirrors_survive_a_truncating_a_slow_and_a_refusing_one(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    """The issue's mirrors: one 10x slower, one cutting every answer short, one refusing
    connections; the good one and the slow one finish the file, byte-exact."""
    name = "mirrored.bin"
    query = f"/gen/{name}?size={SIZE}&t={engine}"
    good = server.url(0, f"{query}&rate={RATE}")
    slow = server.url(1, f"{query}&rate={RATE // 10}")
    cutting = server.url(2, f"{query}&rate={RATE}&truncate=50000")
    refusing = f"http://127.0.0.1:{_dead_port()}{query}"
    lines = tmp_path / "list.txt"
    lines.write_text("\t".join([good, slow, cutting, refusing]) + "\n")
    result = midair.get("-d", str(tmp_path / "out"), *SPLIT, "--retries", "2", "-i", str(lines))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / name).read_bytes() == expected_bytes(name, SIZE)
    served = {
        u: sum(_length(r.header("range"), SIZE) for r in asked(server, u) if r.header("range"))
        for u in (good, slow)
    }
    assert served[good] > served[slow], served


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@faulted
def test_a_metalinks_piece_digests_catch_a_mirror_serving_other_bytes(
    midair: Midair, server: ServerThread, engine: str, tmp_path: Path
) -> None:
    """The second mirror serves another version of the same size: each of its pieces fails
    its digest as it lands, it is blamed, and the first mirror fetches them again."""
    import hashlib

    name, piece = "pieces.bin", 256 * KiB
    data = expected_bytes(name, SIZE)
    hashes = "".join(
        f"<hash>{hashlib.sha256(data[i : i + piece]).hexdigest()}</hash>"
        for i in range(0, SIZE, piece)
    )
    good = server.url(0, f"/gen/{name}?size={SIZE}&rate={RATE}&t={engine}")
    other = server.url(1, f"/gen/{name}?size={SIZE}&rate={RATE}&t={engine}&version=2")
    doc = tmp_path / "f.meta4"
    doc.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<metalink xmlns="urn:ietf:params:xml:ns:metalink">'
        f'<file name="{name}"><size>{SIZE}</size>'
        f'<pieces length="{piece}" type="sha-256">{hashes}</pieces>'
        f'<url priority="1">{good.replace("&", "&amp;")}</url>'
        f'<url priority="2">{other.replace("&", "&amp;")}</url>'
        "</file></metalink>\n"
    )
    result = midair.get("-d", str(tmp_path / "out"), *SPLIT, "-M", str(doc))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / name).read_bytes() == data
    assert asked(server, other), "the other mirror was asked (and blamed)"


def test_metalink_http_duplicates_and_digest_from_nginx_are_used(
    nginx: NginxFactory, tmp_path: Path
) -> None:
    """RFC 6249 from a real server: nginx names a second nginx ``rel=duplicate`` and the
    file's ``Digest``; midair -s fetches ranges from both and checks the digest."""
    import base64
    import hashlib

    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "big.bin").write_bytes(data)
    log_b = tmp_path / "b.log"
    mirror = nginx(root, hosts=["127.0.1.2"], limit_rate=256 * KiB, access_log=log_b)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    hints = (
        "        location = /big.bin {\n"
        "            limit_rate 256k;\n"
        f'            add_header Link "<{mirror.url(0, "big.bin")}>; rel=duplicate";\n'
        f'            add_header Digest "SHA-256={digest}";\n'
        "        }\n"
    )
    first = nginx(root, limit_rate=256 * KiB, extra_locations=hints)
    out = tmp_path / "out"
    result = Midair("asyncio").get("-d", str(out), *SPLIT, first.url(0, "big.bin"))
    assert result.returncode == 0, result.stderr
    assert (out / "big.bin").read_bytes() == data
    assert [r for r in _logged(log_b, expected=1) if r.status == 206], "the duplicate served ranges"


def test_a_wrong_digest_from_nginx_fails_the_file_leaving_nothing(
    nginx: NginxFactory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(b"x" * 100_000)
    wrong = "SHA-256=" + "A" * 43 + "="
    hints = f'        location = /f.bin {{\n            add_header Digest "{wrong}";\n        }}\n'
    server = nginx(root, extra_locations=hints)
    out = tmp_path / "out"
    result = Midair("asyncio").get("-d", str(out), server.url(0, "f.bin"))
    assert result.returncode == 1 and "checksum mismatch" in result.stderr
    assert not (out / "f.bin").exists()
