"""``midair demo``: the whole point in under a minute, with no internet.

Starts ``midair serve`` on ten loopback addresses, each sending slower than
the machine could receive, then fetches one file from each: first one after
another, then all at once.  Every file is checked against its SHA-256, and
the two times show the gap midair exists to close.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

from ..api import Downloader
from ._units import parse_size


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo", help="one-by-one vs all-at-once on local slow servers", description=__doc__
    )
    p.add_argument("--files", type=int, default=10, help="files, one per server (default: 10)")
    p.add_argument("--size", type=parse_size, default=1 << 20, help="bytes per file (default: 1M)")
    p.add_argument(
        "--rate",
        type=parse_size,
        default=256 << 10,
        help="bytes/s each server sends per connection (default: 256K)",
    )
    p.add_argument("--engine", default="asyncio", help="engine to use (see: midair engines)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..serve import ServerThread

    ideal = args.size / args.rate
    print(
        f"midair demo: {args.files} servers on loopback, each sending {args.size >> 10} KiB "
        f"at {args.rate >> 10} KiB/s (about {ideal:.1f} s per file)"
    )
    with ServerThread(addresses=args.files, rate=args.rate) as server:
        urls = [server.url(i, f"/gen/demo{i}.bin?size={args.size}") for i in range(args.files)]
        one_by_one = _timed("one by one", urls, 1, args)
        at_once = _timed("all at once", urls, args.files, args)
    if one_by_one is None or at_once is None:
        return 1
    print(
        f"speed-up: {one_by_one / at_once:.1f}x  (ideal {args.files}x: the batch takes as long "
        "as its slowest file)"
    )
    return 0


def _timed(label: str, urls: list[str], concurrency: int, args: argparse.Namespace) -> float | None:
    print(f"{label:>12}: ", end="", flush=True)
    with tempfile.TemporaryDirectory(prefix="midair-demo-") as tmp:
        downloader = Downloader(
            tmp, engine=args.engine, concurrency=concurrency, per_host=concurrency
        )
        for url in urls:
            downloader.enqueue(url)
        started = time.monotonic()
        results = downloader.run()
        seconds = time.monotonic() - started
        bad = [f.error for f in results.failures] + _mismatches(Path(tmp), args)
    if bad:
        print("FAILED")
        for problem in bad:
            print(f"  {problem}")
        return None
    print(f"{seconds:5.1f} s, {len(urls)} files verified (sha256)")
    return seconds


def _mismatches(directory: Path, args: argparse.Namespace) -> list[str]:
    from ..serve import expected_sha256

    problems = []
    for i in range(args.files):
        path = directory / f"demo{i}.bin"
        if not path.exists():
            problems.append(f"{path.name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected_sha256(
            f"demo{i}.bin", args.size
        ):
            problems.append(f"{path.name}: sha256 mismatch")
    return problems
