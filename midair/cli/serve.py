"""``midair serve``: run the slow, faulty test server from the command line.

    midair serve --addresses 10 --rate 256K --latency 0.2 --duration 60

prints one base URL per line (so a script can read them) and serves until
Ctrl-C, SIGTERM or ``--duration`` seconds. Faults are asked for per request in
the query string; ``GET /__stats`` returns the statistics as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midair.cli._units import parse_size

if TYPE_CHECKING:
    import ssl

__all__ = ["add_parser", "run"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``serve`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "serve",
        help="run the slow, faulty HTTP test server on loopback addresses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--addresses",
        type=int,
        default=10,
        metavar="N",
        help="listen on 127.0.1.1 .. 127.0.1.N (default 10)",
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="IP",
        help="listen on this loopback IP instead (repeatable), e.g. 127.0.0.1",
    )
    parser.add_argument("--port", type=int, default=8080, help="port, 0 = any free (default 8080)")
    parser.add_argument(
        "--rate",
        type=parse_size,
        default=0,
        metavar="BYTES_PER_S",
        help="per-connection byte rate, e.g. 256K or 1M (default unlimited)",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="seconds before each response head (default 0)",
    )
    parser.add_argument("--root", type=Path, metavar="DIR", help="also serve DIR at /files/")
    parser.add_argument(
        "--http2",
        action="store_true",
        help="serve HTTP/2, every fault per stream: by prior knowledge (h2c), or with "
        "--tls-cert as ALPN settles (h2, else HTTP/1.1)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve HTTPS with this certificate chain (and its key, unless --tls-key)",
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the --tls-cert's private key")
    parser.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    parser.set_defaults(run=run)


async def _wait_for_stop(duration: float | None) -> None:
    """Until SIGTERM or ``duration``; Ctrl-C arrives as cancellation from asyncio.run."""
    import asyncio

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off main thread
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP; a bad file is a ValueError."""
    if cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        return None
    import ssl  # here, not at the top, as asyncio in run()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert {cert}: cannot load the certificate and key: {exc}") from exc
    return context


async def _serve(args: argparse.Namespace) -> int:
    from midair.serve.server import SlowServer

    server = SlowServer(
        args.addresses,
        hosts=args.host or None,
        port=args.port,
        rate=args.rate,
        latency=args.latency,
        root=args.root,
        tls=_tls_context(args.tls_cert, args.tls_key),
        http2=args.http2,
    )
    await server.start()
    try:
        for url in server.urls():
            print(url, flush=True)
        await _wait_for_stop(args.duration)
    finally:
        await server.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; 0 on a clean stop (Ctrl-C included), 2 on bad options."""
    if args.root is not None and not args.root.is_dir():
        print(f"midair serve: --root {args.root}: not a directory", file=sys.stderr)
        return 2
    import asyncio  # here, not at the top: `midair get` should not pay for it

    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"midair serve: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"midair serve: {exc}", file=sys.stderr)
        return 2
