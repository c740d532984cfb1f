"""requests + ThreadPoolExecutor: a Session per thread (Sessions are not thread-safe).

One thread per transfer in flight; each thread's Session keeps its connection
alive for the next file. There is no per-host cap beyond the thread count.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from ._common import CHUNK, PeerArgs, finish, parse

_local = threading.local()


def session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session  # type: ignore[no-any-return]


def fetch(args: PeerArgs, url: str) -> str | None:
    try:
        with session().get(url, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                return f"{url}: HTTP {resp.status_code}"
            with open(args.target(url), "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    f.write(chunk)
    except (requests.RequestException, OSError) as exc:
        return f"{url}: {exc!r}"
    return None


def main(args: PeerArgs) -> int:
    workers = min(args.concurrency, len(args.urls))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda u: fetch(args, u), args.urls))
    return finish([r for r in results if r])


if __name__ == "__main__":
    sys.exit(main(parse()))
