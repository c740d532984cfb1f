"""What every Python peer shares: the command line, the URL list, output names."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["CHUNK", "PeerArgs", "finish", "parse"]

CHUNK = 64 * 1024  # read size for every peer: large enough not to be the bottleneck


@dataclass(frozen=True)
class PeerArgs:
    urls: list[str]
    out: Path
    concurrency: int
    per_host: int
    ca: Path | None = None  # TLS: trust this CA (the bench's own)

    def target(self, url: str) -> Path:
        return self.out / urlsplit(url).path.rsplit("/", 1)[-1]


def parse(argv: list[str] | None = None) -> PeerArgs:
    p = argparse.ArgumentParser()
    p.add_argument("list", type=Path, help="one URL a line")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--per-host", type=int, default=0, help="0 = no per-host cap")
    p.add_argument("--ca", type=Path, help="CA certificate to trust (TLS scenarios)")
    args = p.parse_args(argv)
    urls = [u.strip() for u in args.list.read_text().splitlines() if u.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    return PeerArgs(urls, args.out, max(1, args.concurrency), args.per_host, args.ca)


def finish(errors: list[str]) -> int:
    """Print up to ten failures (one line each) and return the exit status."""
    for line in errors[:10]:
        print(line, file=sys.stderr)
    if errors:
        print(f"{len(errors)} failed", file=sys.stderr)
    return 1 if errors else 0
