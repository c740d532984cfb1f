"""Shortcut to the reference loop ``midair bench small`` runs beside the peers.

The loop itself lives in ``midair/bench/peers/python_floor.py`` (so every install of
the bench has it); this is that file with the same arguments:

    python benchmarks/python_floor.py URLS.txt OUT_DIR [--in-flight 100] [--direct | --tag]
"""

from __future__ import annotations

import runpy

if __name__ == "__main__":
    runpy.run_module("midair.bench.peers.python_floor", run_name="__main__")
