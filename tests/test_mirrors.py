"""Several URIs for one file (issue 10, "Mirrors"): aria2's tab-separated input lines and
``enqueue(urls=[...])``, end to end against ``midair serve``, once per engine.

A file moves to its next mirror when one fails for good, resumes there only when the
validator matches, drops a mirror serving another size, and fails only when every
mirror failed, naming each one's reason.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import Midair, midair_for

from midair import Downloader
from midair.serve import ServerThread, expected_bytes


@pytest.fixture
def midair(engine: str, request: pytest.FixtureRequest) -> Midair:
    return midair_for(engine, request, "--retries", "1")


def gen(
    server: ServerThread, host: int, name: str, size: int, engine: str, faults: str = ""
) -> str:
    return server.url(host, f"/gen/{name}?size={size}&t={engine}{faults}")


def dead_url() -> str:
    """A loopback port nobody listens on: the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gen/x.bin"


def input_file(tmp_path: Path, *lines: list[str]) -> str:
    path = tmp_path / "list.txt"
    path.write_text("".join("\t".join(uris) + "\n" for uris in lines))
    return str(path)


def get(midair: Midair, tmp_path: Path, *lines: list[str]):
    out = tmp_path / "out"
    return midair.get("-d", str(out), "-i", input_file(tmp_path, *lines))


def failures(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed:")]


def test_dead_first_mirror_then_good_second(midair, server, engine, tmp_path):
    first = gen(server, 0, "m1.bin", 70_000, engine, "&status=404")
    second = gen(server, 1, "m1.bin", 70_000, engine)
    result = get(midair, tmp_path, [first, second])
    assert result.returncode == 0, result.stderr
    # Named after the first URI (as aria2), the bytes of the second.
    assert (tmp_path / "out" / "m1.bin").read_bytes() == expected_bytes("m1.bin", 70_000)


def test_a_mirror_cut_mid_file_resumes_on_the_next(midair, server, engine, tmp_path):
    size = 400_000
    first = gen(server, 0, "m2.bin", size, engine, "&reset_after=150000")
    second = gen(server, 1, "m2.bin", size, engine, "&mirror=2")
    result = get(midair, tmp_path, [first, second])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "m2.bin").read_bytes() == expected_bytes("m2.bin", size)
    host = server.hosts[1]
    asked = [r for r in server.stats().log if r.host == host and "mirror=2" in r.target]
    assert asked and all(r.header("range") for r in asked), "the second mirror resumed"
    assert asked[0].header("if-range"), "resumed only on the first mirror's validator"


def test_a_mirror_serving_another_size_is_dropped(midair, server, engine, tmp_path):
    first = gen(server, 0, "m3.bin", 100_000, engine, "&reset_after=500")
    other = gen(server, 1, "m3.bin", 200_000, engine)  # another file under the same name
    result = get(midair, tmp_path, [first, other])
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "serves 200000 bytes where another mirror served 100000" in line
    assert not (tmp_path / "out" / "m3.bin").exists()


def test_every_mirror_dead_fails_once_with_each_reason(midair, server, engine, tmp_path):
    gone = gen(server, 0, "m4.bin", 100, engine, "&status=404")
    busy = gen(server, 1, "m4.bin", 100, engine, "&status=503")
    refused = dead_url()
    good = gen(server, 2, "m5.bin", 100, engine)
    result = get(midair, tmp_path, [gone, refused, busy], [good])
    assert result.returncode == 1
    [line] = failures(result.stderr)
    assert "every mirror failed" in line
    assert f"{gone}: HTTP 404" in line
    assert f"{busy}: HTTP 503" in line and "gave up after 1 retries" in line
    assert refused in line
    assert (tmp_path / "out" / "m5.bin").read_bytes() == expected_bytes("m5.bin", 100)


def test_the_library_takes_several_urls_for_one_file(http1_server, tmp_path):
    first = gen(http1_server, 0, "m6.bin", 5000, "lib", "&status=500")
    second = gen(http1_server, 1, "m6.bin", 5000, "lib")
    downloader = Downloader(str(tmp_path), retries=0)
    results = downloader.enqueue(urls=[first, second]).run()
    assert results.ok, results
    assert (tmp_path / "m6.bin").read_bytes() == expected_bytes("m6.bin", 5000)


@pytest.mark.parametrize(
    ("url", "urls"), [(None, []), ("http://a/x", ["http://b/x"]), (None, "http://a/x")]
)
def test_enqueue_refuses_no_or_both_url_forms(url, urls):
    from midair.core.errors import InputError

    with pytest.raises(InputError, match="url"):
        Downloader().enqueue(url, urls=urls)
