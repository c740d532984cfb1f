"""Per-host concurrency adapts end to end (core/politeness.py's Aimd), as the server sees it.

One address of ``midair serve``; the connections open to it are sampled while a batch
runs: slow files first (the limit starts at --per-host, and the server sees that many),
then files that answer 503 once (each halves the limit: the server sees fewer), then
slow files again (each window of successes adds one back: the server sees growth).
One engine of each glue: the blocking driver (threads), the hand-written loop (epoll),
coroutines (asyncio).
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import midair
from midair.serve import ServerThread

PER_HOST = 8
SAMPLE_EVERY = 0.01  # seconds between looks at the server's open connections


def _urls(server: ServerThread) -> list[str]:
    slow = [server.url(0, f"/gen/a{i}.bin?size=2000&latency=0.25") for i in range(PER_HOST)]
    pushed = [
        server.url(0, f"/gen/b{i}.bin?size=2000&latency=0.02&status=503&fail_times=1")
        for i in range(PER_HOST)
    ]
    recovering = [server.url(0, f"/gen/c{i}.bin?size=2000&latency=0.08") for i in range(40)]
    return slow + pushed + recovering


def _open_connections(server: ServerThread) -> int:
    return server.call(lambda: server.server.stats()).addresses[server.server.hosts[0]].current


@pytest.mark.parametrize("engine", ["threads", "epoll", "asyncio"])
def test_per_host_limit_halves_on_503_and_grows_back(engine, tmp_path):
    with ServerThread(addresses=1) as server:
        urls = _urls(server)
        done: list[midair.Results] = []

        def fetch() -> None:
            done.append(
                midair.download(
                    urls,
                    str(tmp_path),
                    engine=engine,
                    per_host=PER_HOST,
                    concurrency=PER_HOST,
                    retry_base=0.05,
                    fsync=False,
                )
            )

        fetching = threading.Thread(target=fetch)
        fetching.start()
        samples = []
        while fetching.is_alive():
            samples.append(_open_connections(server))
            time.sleep(SAMPLE_EVERY)
        fetching.join()
        stats = server.stats()
    assert done and done[0].ok, done[0].failures if done else "no result"
    assert len(done[0].successes) == len(urls)
    assert [r.status for r in stats.log].count(503) == PER_HOST  # each pushed back once
    assert stats.addresses[server.server.hosts[0]].max_concurrent <= PER_HOST
    peak = samples.index(PER_HOST)  # starts at the ceiling: the slow files all at once
    low = min(samples[peak:])
    assert low <= PER_HOST // 2  # the 503s: fewer connections (none while the host pauses)
    after = samples[samples.index(low, peak) :]
    resumed = list(itertools.takewhile(lambda n: n <= PER_HOST // 2, after))
    # The host resumes at a halved limit (1 after three 503s in a row), not at --per-host:
    # one or two connections for a while, then more as windows of successes go by.
    assert len([n for n in resumed if 1 <= n <= 2]) >= 3, after
    assert max(after) == PER_HOST, after  # and back to the ceiling, never past it
