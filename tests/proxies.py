"""Real proxies for the tests: tinyproxy (HTTP, CONNECT) and microsocks (SOCKS5).

Each is started on a free loopback port with a written config, makes its own
outgoing connections from ``OUTGOING`` (127.0.0.2), and is stopped by the
fixture that started it.  An origin that allows only ``OUTGOING`` then proves
that bytes went through the proxy: a direct request from 127.0.0.1 is refused.
Without the binary a test skips locally and fails in CI, as the nginx one does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from midair.serve.nginx import free_port

OUTGOING = "127.0.0.2"  # the proxies' outgoing address: the only one origins allow
START_TIMEOUT = 10.0


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{binary} not installed, but CI must have it: apt-get install {binary}")
    pytest.skip(f"{binary} not installed: apt-get install {binary}")


class Proxy:
    """One proxy process on 127.0.0.1:``port``; ``url`` as midair's --proxy takes it."""

    scheme = "http"

    def __init__(self, workdir: Path, credentials: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.credentials = credentials
        self.port = free_port("127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, scheme: str | None = None, credentials: tuple[str, str] | None = None) -> str:
        user, word = credentials or self.credentials or (None, None)
        auth = f"{user}:{word}@" if user is not None else ""
        return f"{scheme or self.scheme}://{auth}127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Proxy:
        out = self.workdir / f"{type(self).__name__.lower()}-{self.port}.out"
        with out.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.command()} did not start: {self.output()}")
            time.sleep(0.02)
        return self

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob(f"*-{self.port}.*"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tinyproxy(Proxy):
    """tinyproxy: absolute-form HTTP and CONNECT to ``connect_ports``; Basic auth if asked."""

    def __init__(
        self,
        workdir: Path,
        credentials: tuple[str, str] | None = None,
        connect_ports: tuple[int, ...] = (),
    ) -> None:
        super().__init__(workdir, credentials)
        self.connect_ports = connect_ports

    def config(self) -> str:
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            f"Bind {OUTGOING}",
            "Timeout 30",
            "Allow 127.0.0.1",
            "MaxClients 200",
            "LogLevel Connect",
            f'LogFile "{self.workdir / f"tinyproxy-{self.port}.log"}"',
            "DisableViaHeader Yes",
        ]
        if os.geteuid() == 0:
            lines.append("User root\nGroup root")
        lines += [f"ConnectPort {port}" for port in self.connect_ports]
        if self.credentials:
            lines.append(f"BasicAuth {self.credentials[0]} {self.credentials[1]}")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        path = self.workdir / f"tinyproxy-{self.port}.conf"
        path.write_text(self.config())
        return [require("tinyproxy"), "-d", "-c", str(path)]

    def log(self) -> str:
        path = self.workdir / f"tinyproxy-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Microsocks(Proxy):
    """microsocks: SOCKS5, with username/password if asked."""

    scheme = "socks5h"

    def command(self) -> list[str]:
        args = [require("microsocks"), "-i", "127.0.0.1", "-p", str(self.port), "-b", OUTGOING]
        if self.credentials:
            args += ["-u", self.credentials[0], "-P", self.credentials[1]]
        return args


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
