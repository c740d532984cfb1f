"""The virtual-time run of midair/bench/virtual.py, small: its checks hold on every step.

The benchmark drives the real core over simulated hosts (serving, throttling with 429,
refusing, breaking); these runs pin that the driver's invariants are the batch's:
limits held, each job ended once, exactly the jobs of bad hosts failed.
"""

from __future__ import annotations

import pytest

from midair.bench.virtual import BREAKS, REFUSES, THROTTLES, VirtualNet
from midair.core.jobs import Options


@pytest.mark.parametrize(
    ("urls", "hosts", "per_host"), [(3000, 300, 4), (2000, 20, 1), (500, 500, 2)]
)
def test_a_virtual_run_keeps_every_invariant(urls: int, hosts: int, per_host: int) -> None:
    options = Options(
        directory="/v", concurrency=200, per_host=per_host, retries=2, max_retry_wait=4.0
    )
    net = VirtualNet(urls, hosts, options, seed=urls)
    outcome = net.run()
    assert outcome.finished + outcome.failed == urls
    assert outcome.max_open <= 200 and outcome.max_per_host <= per_host
    tempers = {h.temper for h in net.hosts}
    assert {REFUSES, BREAKS, THROTTLES} <= tempers or hosts < 100
    if THROTTLES in tempers:
        assert outcome.retries > 0  # 429s were retried, after their Retry-After


def test_a_virtual_run_over_many_windows_keeps_every_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch takes its jobs a window at a time: 3,000 jobs in windows of 200."""
    from midair.core import intake as intake_module

    monkeypatch.setattr(intake_module, "WINDOW", 200)
    options = Options(directory="/v", concurrency=50, per_host=4, retries=2, max_retry_wait=4.0)
    net = VirtualNet(3000, 300, options, seed=7)
    outcome = net.run()
    assert outcome.finished + outcome.failed == 3000
    assert outcome.max_open <= 50 and outcome.max_per_host <= 4
