"""``auto``: the engine that measured fastest for the batch's shape (the default).

Measured on 2 cores against nginx, downloads on tmpfs (README, "Choosing an
engine"): one loop (``epoll``) is as fast as any other engine while the
network is the limit — slow servers, few or many — and costs the least CPU
and start-up.  When the core's CPU is the limit, ``processes`` runs the batch on
every core: many small files from one fast server (the busiest origin's jobs and
its ``--per-host`` are split between the workers, which pays only where
``--per-host`` lets that origin use more than one connection), or thousands of
transfers in flight at once (origins are sharded between the workers: at c10k,
10,000 in flight over 100 origins, one loop spent 4.5 s of CPU in 5.5 s; on two
cores 4.8-5.2 s, three runs each; at 2,000 in flight the two were even).  Either
pays off only for a batch big enough to cover starting the workers, and only
where there is more than one core.  ``--loop`` asks for an asyncio loop, so the
single loop is then ``reactor`` on it; ``--workers`` counts as the cores to use.
"""

from __future__ import annotations

import os
from collections import Counter

from ..run import Run

TYPE_CHECKING = False  # not typing's: importing typing costs ~2 ms of start-up
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AutoEngine", "choose"]

MANY_JOBS = 2_000  # below this, starting worker processes costs more than it saves
MANY_IN_FLIGHT = 2_000  # transfers at once past which one loop's CPU is the limit
# Past this, a list is streamed by one loop: its first request leaves at once and its
# memory stays flat (reading 50,000 jobs ahead to decide costs ~0.2 s).  ``processes``
# streams such a list too (``_streamed``), but in three interpreters, each holding what
# a batch keeps per job (its claimed names); one loop stays the cheaper in memory.
LONG_LIST = 50_000
SINGLE_LOOP = "epoll"
MULTI_CORE = "processes"


def choose(run: Run, cores: int | None = None) -> str:
    """The engine for ``run``'s batch: ``processes`` for a big batch one origin holds most
    of, or one that keeps ``MANY_IN_FLIGHT`` transfers going, unless it is longer than
    ``LONG_LIST`` (the processes engine plans over every job)."""
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    jobs, whole = run.head(LONG_LIST)
    if cores < 2 or len(jobs) < MANY_JOBS or not whole:
        return SINGLE_LOOP
    per_origin = Counter(job.url.origin for job in jobs)
    per_host, concurrency = run.options.per_host, run.options.concurrency
    in_flight = min(concurrency, sum(min(per_host, count) for count in per_origin.values()))
    if in_flight >= MANY_IN_FLIGHT:
        return MULTI_CORE
    if min(per_host, concurrency) < 2:  # one origin's jobs cannot be split
        return SINGLE_LOOP
    busiest = per_origin.most_common(1)[0][1]
    return MULTI_CORE if 2 * busiest > len(jobs) else SINGLE_LOOP


class AutoEngine:
    name = "auto"

    def __init__(self, workers: int | None = None, loop: str | None = None) -> None:
        self.workers = workers  # for ``processes``, when chosen
        self.loop = loop  # for ``reactor``, then the single loop

    def run(self, run: Run) -> None:
        self.engine(run).run(run)

    def engine(self, run: Run) -> Any:
        """The chosen engine, given the options it takes."""
        from . import get_engine
        from ._common import collector_paused

        with collector_paused():  # ``choose`` may read the whole list ahead
            chosen = choose(run, self.workers)
        if chosen == MULTI_CORE:
            return get_engine(MULTI_CORE, workers=self.workers)
        if self.loop is not None:
            return get_engine("reactor", loop=self.loop)
        return get_engine(SINGLE_LOOP)
