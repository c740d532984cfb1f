"""Per-host concurrency that adapts (issue 9): the AIMD policy alone, then in a batch."""

from __future__ import annotations

import random

from midair.core.actions import Finished
from midair.core.politeness import Aimd

from .sim import FileServer, Step, origin, run

H = "http://h.example"
H2 = "http://mirror.example"


def body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_aimd_starts_at_the_ceiling_and_halves_to_a_floor_of_one() -> None:
    policy = Aimd(6)
    assert policy.limit == 6
    seen = []
    for _ in range(4):
        policy.on_congestion()
        seen.append(policy.limit)
    assert seen == [3, 1, 1, 1]


def test_aimd_adds_one_per_window_of_successes_up_to_the_ceiling() -> None:
    policy = Aimd(4)
    policy.on_congestion()
    policy.on_congestion()
    limits, raised = [], []
    for _ in range(12):
        raised.append(policy.on_success())
        limits.append(policy.limit)
    # A window is the limit: 1 success to reach 2, 2 more to 3, 3 more to 4, then stays.
    assert limits == [2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]
    assert [i for i, rose in enumerate(raised) if rose] == [0, 2, 5]  # what the batch heeds


def test_a_push_back_restarts_the_window() -> None:
    policy = Aimd(8)
    policy.on_congestion()  # 4
    for _ in range(3):
        policy.on_success()
    policy.on_congestion()  # 2: the three successes no longer count
    policy.on_success()
    assert policy.limit == 2
    policy.on_success()
    assert policy.limit == 3


def test_503s_halve_a_hosts_connections_and_successes_bring_them_back() -> None:
    server = FileServer(piece=50, gap=0.01)
    for k in range(40):
        steps = (Step(status=503),) if k < 4 else ()
        server.add(f"/f{k}", body(100, k), *steps)
    sim = run([f"{H}/f{k}" for k in range(40)], {H: server}, per_host=4, seed=3)
    assert not sim.failed and len(sim.actions(Finished)) == 40
    first_503 = min(r.time for r in server.requests if r.target in {"/f0", "/f1", "/f2", "/f3"})
    after = [(when, n) for when, _, n in sim.opened if when > first_503]
    resumed = after[0][0]  # when the host's pause ended
    # Four 503s: 4 -> 2 -> 1 (floor), so one connection resumes, not four at once.
    assert max(n for when, n in after if when == resumed) == 1
    counts = [n for _, n in after]
    assert max(counts) == 4  # recovered up to --per-host, never past it (the sim checks)
    assert counts.index(4) > counts.index(3) > counts.index(2)  # one at a time


def test_one_hosts_503s_leave_another_hosts_connections_alone() -> None:
    limited, other = FileServer(piece=50, gap=0.01), FileServer(piece=50, gap=0.01)
    for k in range(8):
        limited.add(f"/f{k}", body(100, k), Step(status=503))
        other.add(f"/g{k}", body(100, k))
    jobs = [f"{H}/f{k}" for k in range(8)] + [f"{H2}/g{k}" for k in range(8)]
    sim = run(jobs, {H: limited, H2: other}, per_host=4, concurrency=8, seed=3)
    assert not sim.failed
    first_503 = min(r.time for r in limited.requests)
    assert sim.max_per_origin[origin(H2)] == 4  # the other host opened at full width
    resumed = min(when for when, key, _ in sim.opened if when > first_503 and key == origin(H))
    assert [n for when, key, n in sim.opened if when == resumed and key == origin(H)] == [1]
