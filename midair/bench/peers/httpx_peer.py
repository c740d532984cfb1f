"""httpx (async): one AsyncClient with Limits, streamed responses, a semaphore.

httpx has no per-host connection cap: ``max_connections`` is global.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import httpx

from ._common import CHUNK, PeerArgs, finish, parse


async def fetch(
    client: httpx.AsyncClient, args: PeerArgs, url: str, gate: asyncio.Semaphore
) -> str | None:
    async with gate:
        try:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    return f"{url}: HTTP {resp.status_code}"
                with open(args.target(url), "wb") as f:
                    async for chunk in resp.aiter_bytes(CHUNK):
                        f.write(chunk)
        except (httpx.HTTPError, OSError) as exc:
            return f"{url}: {exc!r}"
    return None


async def main(args: PeerArgs) -> int:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    timeout = httpx.Timeout(60.0, pool=None)
    gate = asyncio.Semaphore(args.concurrency)
    # Over TLS (the bench's CA given), HTTP/2 as midair and curl --http2 speak it there.
    verify: ssl.SSLContext | bool = True
    if args.ca is not None:
        verify = ssl.create_default_context(cafile=str(args.ca))
    http2 = args.ca is not None
    async with httpx.AsyncClient(
        limits=limits, timeout=timeout, verify=verify, http2=http2
    ) as client:
        results = await asyncio.gather(*(fetch(client, args, u, gate) for u in args.urls))
    return finish([r for r in results if r])


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
