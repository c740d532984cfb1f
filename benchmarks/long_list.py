"""Peak memory of ``midair get -i`` on a list too long for ``midair bench list``.

``midair bench list:counts=...`` keeps every file it fetched to check it, so its list
length is bound by the tmpfs (a one-byte file still takes a page: 10,000,000 of them are
~40 GB).  This runs the same thing as a user would — nginx on loopback answering every
``/tiny/`` path with one byte, ``midair get -j 100 --per-host 100 -q -i LIST -d DIR`` —
while a second process deletes finished files behind midair's back (never its part or
control files), so the directory stays small.  It prints midair's exit status, wall and
CPU time and peak RSS (``/usr/bin/time -v``).  The deleter shares the machine's cores, so
read the wall time as a lower bound of the speed; the RSS is what this is for.

    PYTHONPATH=. python benchmarks/long_list.py 10000000 [--dir /dev/shm/long-list]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from midair.serve.nginx import Nginx

TINY = 'location /tiny/ { default_type application/octet-stream; return 200 "x"; }'
TIME_LINES = ("Maximum resident", "User time", "System time", "Elapsed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", type=int)
    parser.add_argument("--dir", default="/dev/shm/long-list", help="downloads (made afresh)")
    args = parser.parse_args()
    out = Path(args.dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as work, Nginx(Path(work), extra_locations=TINY) as nginx:
        listing = Path(work) / "urls.txt"
        with listing.open("w") as f:
            f.writelines(f"{nginx.url(0, f'/tiny/f{i}')}\n" for i in range(args.urls))
        deleter = subprocess.Popen(["sh", "-c", _deleting(out)])
        started = time.monotonic()
        try:
            done = subprocess.run(_midair(listing, out), capture_output=True, text=True)
        finally:
            deleter.kill()
        wall = time.monotonic() - started
    print(f"{args.urls:,} URLs: exit {done.returncode}, {wall:.1f} s")
    for line in done.stderr.splitlines():
        if line.strip().startswith(TIME_LINES):
            print(" ", line.strip())
    if done.returncode:
        print(done.stderr[-2000:])
    shutil.rmtree(out, ignore_errors=True)


def _midair(listing: Path, out: Path) -> list[str]:
    get = [sys.executable, "-m", "midair", "get", "-j", "100", "--per-host", "100", "-q"]
    return ["/usr/bin/time", "-v", *get, "-i", str(listing), "-d", str(out)]


def _deleting(out: Path) -> str:
    """A shell loop deleting finished files (not ``*.midair-*``) every 2 s."""
    return f"while :; do find {out} -maxdepth 1 -type f ! -name '*.midair-*' -delete; sleep 2; done"


if __name__ == "__main__":
    main()
