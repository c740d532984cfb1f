"""A slow DNS server for the name-resolution tests (stdlib only; run it in a namespace).

    python tests/dns_server.py LOG [--delay S] [--port 53]

Answers every UDP query ``delay`` seconds late, all of them concurrently: an A
query for a name under ``.test`` gets 127.0.0.1, ``nx.test`` is NXDOMAIN, any
other type under ``.test`` is an empty answer (NODATA), and a name outside
``.test`` (a search domain the resolver appended) is NXDOMAIN at once.  Each
query is logged to LOG as ``NAME TYPE TIME`` on its own line (TIME: Unix seconds
of its arrival), so a test can count what the client asked, and how much at once.
Prints ``ready`` once it listens.
"""

from __future__ import annotations

import argparse
import heapq
import select
import socket
import struct
import time

A, NOERROR, NXDOMAIN = 1, 0, 3
TTL = 60


def parse_question(packet: bytes) -> tuple[str, int, int]:
    """The first question's name, type and the offset just past it."""
    labels, offset = [], 12
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    qtype = struct.unpack_from("!H", packet, offset + 1)[0]
    return ".".join(labels), qtype, offset + 5


def answer(packet: bytes, delay: float) -> tuple[bytes, str, int, float]:
    """The reply to ``packet``, the name and type asked, and the delay it is due after."""
    name, qtype, end = parse_question(packet)
    question = packet[12:end]
    ours = name == "test" or name.endswith(".test")
    if not ours or name == "nx.test":
        return _reply(packet, question, NXDOMAIN, b""), name, qtype, delay if ours else 0.0
    record = b""
    if qtype == A:
        record = struct.pack("!HHHIH", 0xC00C, A, 1, TTL, 4) + socket.inet_aton("127.0.0.1")
    return _reply(packet, question, NOERROR, record), name, qtype, delay


def _reply(packet: bytes, question: bytes, rcode: int, record: bytes) -> bytes:
    flags = 0x8180 | rcode  # a response, recursion desired and available
    ident = struct.unpack_from("!H", packet)[0]
    header = struct.pack("!HHHHHH", ident, flags, 1, 1 if record else 0, 0, 0)
    return header + question + record


def serve(sock: socket.socket, log_path: str, delay: float) -> None:
    due: list[tuple[float, int, bytes, tuple[str, int]]] = []
    count = 0
    with open(log_path, "a", buffering=1) as log:
        while True:
            wait = max(0.0, due[0][0] - time.monotonic()) if due else None
            if select.select([sock], [], [], wait)[0]:
                packet, peer = sock.recvfrom(4096)
                reply, name, qtype, delay = answer(packet, delay)
                log.write(f"{name} {qtype} {time.time():.3f}\n")
                count += 1
                heapq.heappush(due, (time.monotonic() + delay, count, reply, peer))
            while due and due[0][0] <= time.monotonic():
                _, _, reply, peer = heapq.heappop(due)
                sock.sendto(reply, peer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", args.port))
    print("ready", flush=True)
    serve(server, args.log, args.delay)
