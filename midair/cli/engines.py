"""``midair engines``: every engine, whether it can run here, and its model."""

from __future__ import annotations

import argparse

from ..engines import ENGINES


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("engines", help="list the engines and their concurrency models")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    width = max(len(name) for name in ENGINES)
    for info in ENGINES.values():
        state = "available" if info.available else f"needs: pip install 'midair[{info.extra}]'"
        print(f"{info.name:<{width}}  {info.model}  [{state}]")
    return 0
