"""--max-rate, --max-overall-rate and --host-delay end to end, on every engine.

``midair serve`` here is unthrottled: any time a transfer takes beyond its round trips
is the limit's doing.  Every timing is a lower bound (load only makes a run slower, so
none can flake from it), measured from the server's own log of when each request came
to the ``done`` event of ``--json``: a limit that did not hold would let the bytes come
as fast as loopback carries them, in a few milliseconds.  (Reports from the sharding
engines' workers reach the parent up to 0.2 s late; the bounds leave room for that.)
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    H2_ENGINES,
    Midair,
    over_http2,
    over_tls_http2,
    stopping,
    test_engines,
)
from test_conformance import tls_server, tls_servers_by_protocol  # noqa: F401 (fixtures)

from midair import Downloader, download
from midair.core.actions import Action, Finished, Started
from midair.core.errors import InputError
from midair.core.jobs import Job, Options
from midair.engines._shards import plan_shards
from midair.run import Run
from midair.serve import ServerThread, expected_bytes


@pytest.fixture
def midair(clustered_midair: Midair) -> Midair:
    return clustered_midair


K = 1024


def urls(server: ServerThread, engine: str, hosts: list[int], size: int) -> list[str]:
    """One generated file per entry of ``hosts`` (a server address each), named apart from
    every other test's and engine's: the server's log is read by name."""
    mark = f"{engine}-{time.time_ns()}"
    return [server.url(host, f"/gen/r{i}.bin?size={size}&t={mark}") for i, host in enumerate(hosts)]


def fetch(midair: Midair, tmp_path, *args: str) -> dict[str, float]:
    """Run ``midair get --json``; each URL's ``done`` time (wall clock)."""
    result = midair.get("--json", "-d", str(tmp_path), *args, timeout=120)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return {e["url"]: e["time"] for e in events if e.get("event") == "done"}


def asked_at(server: ServerThread, url: str) -> list[float]:
    """When the server got each request for ``url`` (wall clock)."""
    target = "/" + url.split("/", 3)[3]
    return sorted(r.time for r in server.stats().log if r.target == target)


def assert_files(tmp_path, count: int, size: int) -> None:
    for i in range(count):
        name = f"r{i}.bin"
        assert (tmp_path / name).read_bytes() == expected_bytes(name, size), name


@over_http2(H2_ENGINES)
def test_max_rate_bounds_each_transfer(midair, server, engine, tmp_path):
    """128 KiB at 256 KiB/s: about half a second each, side by side.  Two share a host:
    over HTTP/2 one connection carries both, and still neither goes faster."""
    files = urls(server, engine, [0, 0, 1], 128 * K)
    done = fetch(midair, tmp_path, "--max-rate", "256K", *files)
    assert_files(tmp_path, 3, 128 * K)
    for url in files:
        [asked] = asked_at(server, url)
        assert done[url] - asked >= 0.4, f"{url} took {done[url] - asked:.2f} s"


@over_tls_http2()
def test_max_rate_holds_over_tls(midair, tls_server, engine, tmp_path):  # noqa: F811
    """TLS may hold decrypted bytes the socket no longer signals (epoll reads them when the
    hold ends); asyncio and reactor pause a TLS transport: each transfer keeps to its rate."""
    srv, ca_path = tls_server
    files = urls(srv, engine, [0, 0], 128 * K)
    done = fetch(midair, tmp_path, "--ca-certificate", str(ca_path), "--max-rate", "256K", *files)
    assert_files(tmp_path, 2, 128 * K)
    for url in files:
        [asked] = asked_at(srv, url)
        assert done[url] - asked >= 0.4, f"{url} took {done[url] - asked:.2f} s"


@pytest.mark.parametrize("engine", [e for e in test_engines() if e != "sequential"])
def test_max_rate_bounds_a_file_fetched_in_segments_as_one_transfer(
    midair, server, engine, tmp_path
):
    """-s 4: four connections carry the file's ranges, and together keep to its rate (as
    aria2's --max-download-limit is per download), not four times it.  (Not sequential:
    one connection at a time, it splits nothing.)"""
    [url] = urls(server, engine, [0], 512 * K)
    split = ("-s", "4", "--min-split-size", "128K", "--per-host", "4")
    done = fetch(midair, tmp_path, *split, "--max-rate", "512K", url)
    assert (tmp_path / "r0.bin").read_bytes() == expected_bytes("r0.bin", 512 * K)
    first, *ranges = asked_at(server, url)
    assert len(ranges) >= 2  # it was split
    assert done[url] - first >= 0.8, f"512 KiB at 512 KiB/s took {done[url] - first:.2f} s"


def test_max_overall_rate_bounds_all_transfers_together(midair, server, engine, tmp_path):
    """Four files of 128 KiB over two hosts at 512 KiB/s in all: about a second, though
    each connection alone could go as fast as loopback carries it."""
    files = urls(server, engine, [0, 1, 0, 1], 128 * K)
    done = fetch(midair, tmp_path, "--max-overall-rate", "512K", *files)
    assert_files(tmp_path, 4, 128 * K)
    first = min(asked_at(server, url)[0] for url in files)
    assert max(done.values()) - first >= 0.8, f"{max(done.values()) - first:.2f} s in all"


@over_http2(H2_ENGINES)
def test_host_delay_spaces_the_requests_to_one_host(midair, server, engine, tmp_path):
    """Four files on one host, --host-delay 0.2: the server sees the requests that far apart
    (less the jitter of one request's way over loopback)."""
    files = urls(server, engine, [2, 2, 2, 2], 1000)
    fetch(midair, tmp_path, "--host-delay", "0.2", *files)
    assert_files(tmp_path, 4, 1000)
    times = sorted(t for url in files for t in asked_at(server, url))
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.15, f"requests {gaps} s apart"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-rate", "fast"),
        ("--max-rate", "-1"),
        ("--max-overall-rate", "2X"),
        ("--max-overall-rate", "-5K"),
        ("--host-delay", "soon"),
        ("--host-delay", "-1"),
    ],
)
def test_bad_values_exit_2_naming_the_option(option: str, value: str, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "midair", "get", "-d", str(tmp_path), option, value, "http://x/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert option in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) < 200  # one clear line, no traceback
    assert "Traceback" not in result.stderr


def test_the_library_takes_rates_as_text_or_bytes_per_second(http1_server, tmp_path) -> None:
    files = urls(http1_server, "library", [0], 64 * K)
    results = download(files, str(tmp_path), max_rate="128K", max_overall_rate=1 << 20)
    assert results.ok
    with pytest.raises(InputError, match="--max-rate: 'quick' is not an amount"):
        download(files, str(tmp_path), max_rate="quick")


# --- sharding: the plan alone --------------------------------------------------------------
def test_shards_share_the_overall_rate_evenly() -> None:
    jobs = [Job.from_url(f"http://h{i}.example/f{i}") for i in range(8)]
    plan = plan_shards(jobs, Options(max_overall_rate=1 << 20, max_rate=4096), 4)
    assert len(plan) == 4
    assert {s.options.max_overall_rate for s in plan} == {1 << 18}  # a quarter each
    assert {s.options.max_rate for s in plan} == {4096}  # per transfer: the same everywhere


def test_a_spaced_host_is_never_split_between_shards() -> None:
    """One host with most jobs is spread over shards (each with a share of --per-host) unless
    --host-delay: the gap between its requests is kept by one batch."""
    jobs = [Job.from_url(f"http://big.example/f{i}") for i in range(8)]
    assert len(plan_shards(jobs, Options(), 4)) > 1
    [shard] = plan_shards(jobs, Options(host_delay=1.0), 4)
    assert len(shard.indexes) == 8


# --- a stop while held or spaced ends the run at once ---------------------------------------
def stopped_run(engine: str, tmp_path, files: list[str], **options: object) -> float:
    """Run ``files`` in process, stopped 0.3 s after the first transfer starts; the seconds
    from the stop to the run's end."""
    begun, stopped = threading.Event(), []

    def listen(action: Action) -> None:
        if type(action) in (Started, Finished):
            begun.set()

    def around(run: Run):
        def stop() -> None:
            begun.wait(timeout=30)
            time.sleep(0.3)
            stopped.append(time.monotonic())
            run.request_stop()

        return stopping(stop)

    dl = Downloader(
        str(tmp_path),
        engine=engine,
        engine_options={"workers": 2} if engine in ("processes", "dask") else {},
        on_event=listen,
        **options,
    )
    for url in files:
        dl.enqueue(url)
    results = dl.run(around=around)
    assert results.failures == []
    return time.monotonic() - stopped[0]


def test_a_stop_while_held_ends_the_run_at_once(server, engine, tmp_path):
    """Files of 10 s each at --max-rate: a stop ends the run in far less, part files kept."""
    files = urls(server, engine, [0, 1], 1000 * K)
    assert stopped_run(engine, tmp_path, files, max_rate=100 * K) < 5
    assert len(list(tmp_path.glob("r*.bin.midair-part"))) >= 1


def test_a_stop_while_a_request_waits_its_turn_ends_the_run_at_once(server, engine, tmp_path):
    files = urls(server, engine, [2, 2], 1000)
    assert stopped_run(engine, tmp_path, files, host_delay=60.0) < 5
    assert len(list(tmp_path.glob("r*.bin"))) == 1  # the first; the second never asked
