"""parfive: ``Downloader(max_conn=N, max_splits=1)``, one file per connection.

parfive's default aiohttp session keeps aiohttp's 100-connection pool, which
would cap ``max_conn`` silently; the session generator below sizes the pool to
``max_conn`` (and ``limit_per_host``), and the chunk size is raised from 1 KiB
to the 64 KiB every peer uses.
"""

from __future__ import annotations

import sys

import aiohttp
import parfive  # type: ignore[import-untyped]

from ._common import CHUNK, PeerArgs, finish, parse


def main(args: PeerArgs) -> int:
    def session(config: parfive.SessionConfig) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.per_host)
        return aiohttp.ClientSession(
            connector=connector, headers=config.headers, requote_redirect_url=False
        )

    config = parfive.SessionConfig(
        aiohttp_session_generator=session, chunksize=CHUNK, file_progress=False
    )
    downloader = parfive.Downloader(
        max_conn=args.concurrency, max_splits=1, progress=False, overwrite=True, config=config
    )
    for url in args.urls:
        downloader.enqueue_file(url, path=args.out, filename=args.target(url).name)
    results = downloader.download()
    return finish([f"{e.url}: {e.exception!r}" for e in results.errors])


if __name__ == "__main__":
    sys.exit(main(parse()))
