"""CPU the core costs per file: a ``Batch`` driven through many small responses in memory.

No sockets, no store, no engine: the driver answers ``Prepare`` and ``Publish`` (``Save``) at once,
feeds one canned nginx-like response per request and shows every action to a ``Tracker``
(as the session does).  What is left is midair/core's own price per file — head parsing,
framing, the download's rules, scheduling, actions and progress.  Also times response-head
parsing alone, h11 against httptools.

    PYTHONPATH=. python benchmarks/core_per_file.py [--files 20000] [--size 8192] [--reps 5]

h11 is needed only for the comparison (the bench extra installs it, with httpx).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

import h11
import httptools

from midair.core.actions import Connect, OnDisk, Prepare, Publish, Save, Send
from midair.core.batch import Batch
from midair.core.jobs import Job, Options
from midair.core.progress import Tracker

HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
    b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "65920080-2000"\r\nAccept-Ranges: bytes\r\n\r\n'
)


def run_batch(files: int, size: int, in_flight: int, split: bool) -> float:
    """Drive one batch to the end; return the CPU seconds it took."""
    response = HEAD % size + bytes(size)
    pieces = [response[: len(HEAD % size)], response[len(HEAD % size) :]] if split else [response]
    jobs = [Job.from_url(f"http://127.0.0.1:8080/f/{i}.bin") for i in range(files)]
    batch = Batch(jobs, Options(directory="/bench", concurrency=in_flight, per_host=in_flight))
    tracker = Tracker(jobs=files)
    fresh = OnDisk("fresh")
    requests: deque[int] = deque()
    started = time.process_time()
    now = 0.0
    actions = deque(batch.start(now))
    while actions or requests or batch.unprepared or batch.wants_jobs:
        while actions:
            action = actions.popleft()
            kind = type(action)
            tracker.observe(action)
            if kind is Prepare:
                actions.extend(batch.prepared(action.download, fresh, now))
            elif kind is Publish or kind is Save:  # Save: a body that came whole
                actions.extend(batch.published(action.download, now))
            elif kind is Connect:
                actions.extend(batch.connected(action.conn, now))
            elif kind is Send:
                requests.append(action.conn)
        if batch.wants_jobs:  # the session's step: the next window, named, then prepared
            batch.take_jobs()
            actions.extend(batch.name_jobs({}, now))
        if batch.unprepared:
            actions.extend(batch.prepare_more(in_flight, now))
        if requests:
            conn = requests.popleft()
            now += 1e-5
            for piece in pieces:
                actions.extend(batch.received(conn, piece, now))
    assert batch.done and tracker.files_done == files, (tracker.files_done, tracker.files_failed)
    return time.process_time() - started


def parse_h11(head: bytes, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(head)
        event = conn.next_event()
        assert isinstance(event, h11.Response)
    return time.process_time() - started


class _Fields:
    """The least a caller of httptools does: collect the fields, note the end of the head."""

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_httptools(head: bytes, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        fields = _Fields()
        httptools.HttpResponseParser(fields).feed_data(head)
        assert fields.complete
    return time.process_time() - started


class _Sink:
    """Counts heads: what a ``ResponseSink`` needs, and no more."""

    heads = 0

    def on_head(self, head: object) -> None:
        self.heads += 1

    def on_body(self, data: object) -> None:
        pass

    def on_end(self) -> None:
        pass


def parse_midair(head: bytes, count: int) -> float:
    """midair's own ClientConnection: request bytes, then the head with an empty body."""
    from midair.core.http import ClientConnection

    sink = _Sink()
    started = time.process_time()
    for _ in range(count):
        try:
            conn = ClientConnection(sink)  # type: ignore[arg-type]
        except TypeError:  # the h11 version, before the sink: it returns events instead
            conn = ClientConnection()  # type: ignore[call-arg]
            sink.heads += 1
        conn.request("/", [("Host", "x")])
        conn.receive(head)
    assert sink.heads == count
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--split", action="store_true", help="head and body in two reads")
    args = parser.parse_args()
    per_file = [
        run_batch(args.files, args.size, args.in_flight, args.split) / args.files
        for _ in range(args.reps)
    ]
    print(
        f"batch: {args.files} files x {args.size} B, {args.in_flight} in flight: "
        f"{statistics.median(per_file) * 1e6:.1f} us CPU per file "
        f"(min {min(per_file) * 1e6:.1f}, {args.reps} runs)"
    )
    head, count = HEAD % 0, 20_000
    for name, parse in (
        ("h11", parse_h11),
        ("httptools", parse_httptools),
        ("midair http.py", parse_midair),
    ):
        best = min(parse(head, count) for _ in range(args.reps)) / count
        print(f"head parsing, {name}: {best * 1e6:.2f} us per head")


if __name__ == "__main__":
    main()
