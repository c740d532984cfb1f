"""aiohttp: one ClientSession, a TCPConnector with limit/limit_per_host, gather."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from ._common import CHUNK, PeerArgs, finish, parse


async def fetch(
    session: aiohttp.ClientSession, args: PeerArgs, url: str, gate: asyncio.Semaphore
) -> str | None:
    async with gate:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return f"{url}: HTTP {resp.status}"
                with open(args.target(url), "wb") as f:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        f.write(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"{url}: {exc!r}"
    return None


async def main(args: PeerArgs) -> int:
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.per_host)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    gate = asyncio.Semaphore(args.concurrency)  # bounds open files, not just sockets
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(fetch(session, args, u, gate) for u in args.urls))
    return finish([r for r in results if r])


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
