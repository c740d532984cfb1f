"""Benchmark "crowd": 1,000 files of 256 KiB on 100 slow servers (nginx at 128 KiB/s).

Kept as a shortcut; the benchmark itself lives in ``midair.bench`` and this is
``midair bench crowd`` with the same options:

    python benchmarks/crowd.py [--reps 3] [--peers curl,aria2c] [--engines asyncio]
"""

from __future__ import annotations

import sys

from midair.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "crowd", *sys.argv[1:]]))
