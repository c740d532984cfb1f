"""A real nginx on loopback, started from a config we write.

Why: midair must never be tested only against its own server. nginx is the
reference static file server most users will meet, so the interop tests and
``midair bench`` run it with a private config: a temp prefix holding the pid
file, logs and every temp path, so it runs as root or as a plain user and never
touches ``/etc/nginx`` or ``/var``.

    with Nginx(root, hosts=["127.0.1.1", "127.0.1.2"], limit_rate=128 * 1024) as ng:
        ng.url(1, "a.bin")  # -> "http://127.0.1.2:PORT/a.bin"

Routes: ``/NAME`` serves ``root/NAME`` (Range, ETag, keep-alive), a missing file
is a plain 404, and ``/redirect/NAME`` answers 302 to ``/NAME``.

``access_log=PATH`` logs when each request started and ended, to the
millisecond, for ``midair bench``'s start-up and exit times (``parse_access_line``
reads it back); without it nothing is logged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["LoggedRequest", "Nginx", "NginxError", "find_nginx", "parse_access_line"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5
_TEMP_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# $msec: when the line is logged (= the response's end); $request_time: since the
# request's first bytes were read. Both from nginx's millisecond clock.
_TIMING_FORMAT = "$msec $request_time $connection $status $bytes_sent $server_protocol"
_LOG_BUFFER = "buffer=64k flush=20ms"  # a write per 64 KiB, not per request


class NginxError(RuntimeError):
    """nginx could not be started; the message carries its error log."""


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One line of the timing access log: epoch seconds, millisecond resolution."""

    start: float
    end: float
    connection: int
    status: int
    bytes_sent: int
    protocol: str = ""  # "HTTP/1.1", "HTTP/2.0": what the request came over


def parse_access_line(line: str) -> LoggedRequest | None:
    """A line written with ``_TIMING_FORMAT``, or None for anything else (a torn line)."""
    fields = line.split()
    try:
        end, took = float(fields[0]), float(fields[1])
        return LoggedRequest(
            round(end - took, 3), end, int(fields[2]), int(fields[3]), int(fields[4]), *fields[5:6]
        )
    except (IndexError, ValueError):
        return None


def find_nginx() -> str | None:
    """Path of the nginx binary, or None. Debian puts it in /usr/sbin, often off PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    fallback = Path("/usr/sbin/nginx")
    return str(fallback) if os.access(fallback, os.X_OK) else None


def _compiled_temp_modules(binary: str) -> list[str]:
    """Temp-path directives this build knows; naming a left-out module is a config error."""
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    flags = out.stdout + out.stderr
    return [m for m in _TEMP_MODULES if f"--without-http_{m}_module" not in flags]


def free_port(host: str) -> int:
    """A port free right now on ``host``; racy by nature, so callers retry on conflict."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _user_line() -> str:
    """As root, keep workers as the current user: ``nobody`` may not read a private root."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def render_config(
    *,
    prefix: Path,
    root: Path,
    hosts: Sequence[str],
    port: int,
    limit_rate: int,
    tls: tuple[Path, Path] | None,
    workers: int,
    extra_locations: str,
    temp_modules: Sequence[str] = _TEMP_MODULES,
    access_log: Path | None = None,
    http2: bool = False,
) -> str:
    """The whole nginx.conf as text: pure, so a test can read it without nginx.

    ``http2``: the listeners speak HTTP/2 too (nginx 1.22's ``listen ... http2``): by
    ALPN with TLS, else by prior knowledge only (h2c, no HTTP/1.1 on that port)."""
    ssl = (" ssl" if tls else "") + (" http2" if http2 else "")
    reuse = " reuseport" if workers != 1 else ""  # a socket per worker: the kernel balances
    listens = "".join(f"        listen {_bracket(h)}:{port}{ssl}{reuse};\n" for h in hosts)
    temps = "".join(f"    {m}_temp_path {_quote(prefix / 'temp' / m)};\n" for m in temp_modules)
    tls_lines = ""
    if tls:
        tls_lines = (
            f"        ssl_certificate {_quote(tls[0])};\n"
            f"        ssl_certificate_key {_quote(tls[1])};\n"
        )
    rate = f"            limit_rate {limit_rate};\n" if limit_rate > 0 else ""
    logging = "    access_log off;\n"
    if access_log is not None:
        logging = (
            f"    log_format timing '{_TIMING_FORMAT}';\n"
            f"    access_log {_quote(access_log)} timing {_LOG_BUFFER};\n"
        )
    return f"""# written by midair.serve.nginx
{_user_line()}daemon off;
master_process on;
worker_processes {workers if workers > 0 else "auto"};
worker_rlimit_nofile 65536;
pid {_quote(prefix / "nginx.pid")};
error_log {_quote(prefix / "logs" / "error.log")} warn;
events {{ worker_connections 20000; }}
http {{
    default_type application/octet-stream;
{logging}    keepalive_requests 100000;
    keepalive_timeout 65;
    sendfile on;
    tcp_nopush on;
    etag on;
{temps}    server {{
{listens}        server_name _;
{tls_lines}        root {_quote(root)};
        location / {{
{rate}        }}
        location ~ ^/redirect/(.*)$ {{
            return 302 /$1;
        }}
{extra_locations}
    }}
}}
"""


class Nginx:
    """A context manager running one nginx master (own process group) until exit."""

    def __init__(
        self,
        root: Path,
        hosts: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        limit_rate: int = 0,
        tls: tuple[Path, Path] | None = None,
        workers: int = 1,
        extra_locations: str = "",
        access_log: Path | None = None,
        http2: bool = False,
    ) -> None:
        if not hosts:
            raise ValueError("Nginx needs at least one host")
        self.root = Path(root).resolve()
        self.hosts: list[str] = list(hosts)
        self.port = port
        self.limit_rate = limit_rate
        self.tls = (Path(tls[0]), Path(tls[1])) if tls else None
        self.workers = workers
        self.extra_locations = extra_locations
        self.access_log = Path(access_log).resolve() if access_log else None
        self.http2 = http2
        self.prefix: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, host_index: int, path: str) -> str:
        """URL of ``path`` on the ``host_index``-th address."""
        host = _bracket(self.hosts[host_index])
        return f"{self.scheme}://{host}:{self.port}/{path.lstrip('/')}"

    def error_log(self) -> str:
        """nginx's error log so far (empty before start)."""
        if self.prefix is None:
            return ""
        log = self.prefix / "logs" / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def start(self) -> Nginx:
        """Write the config and start nginx; return once every address accepts."""
        binary = find_nginx()
        if binary is None:
            raise NginxError("nginx not installed: apt-get install nginx-light")
        self.prefix = Path(tempfile.mkdtemp(prefix="midair-nginx-"))
        for sub in ["logs", "temp"]:
            (self.prefix / sub).mkdir()
        temp_modules = _compiled_temp_modules(binary)
        pick = self.port == 0
        try:
            for attempt in range(_PORT_ATTEMPTS):
                if pick:
                    self.port = free_port(self.hosts[0])
                try:
                    self._launch(binary, temp_modules)
                    return self
                except NginxError:
                    retry = pick and "in use" in self._logs() and attempt < _PORT_ATTEMPTS - 1
                    if not retry:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _launch(self, binary: str, temp_modules: Sequence[str]) -> None:
        assert self.prefix is not None
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            render_config(
                prefix=self.prefix,
                root=self.root,
                hosts=self.hosts,
                port=self.port,
                limit_rate=self.limit_rate,
                tls=self.tls,
                workers=self.workers,
                extra_locations=self.extra_locations,
                temp_modules=temp_modules,
                access_log=self.access_log,
                http2=self.http2,
            )
        )
        log = self.prefix / "logs" / "error.log"
        log.write_text("")
        with open(self.prefix / "logs" / "stderr.log", "ab") as stderr:
            self._proc = subprocess.Popen(
                [binary, "-p", f"{self.prefix}/", "-e", str(log), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                process_group=0,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll until every host:port accepts a TCP connection, or fail with the log."""
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.hosts)
        while pending:
            if self._proc.poll() is not None:
                self._reap()
                raise NginxError(f"nginx exited with {self._proc.returncode}:\n{self._logs()}")
            if time.monotonic() > deadline:
                self._kill()
                raise NginxError(
                    f"nginx not listening on {pending} after {START_TIMEOUT:.0f}s:\n{self._logs()}"
                )
            pending = [h for h in pending if not _accepts(h, self.port)]
            if pending:
                time.sleep(0.02)

    def _logs(self) -> str:
        assert self.prefix is not None
        stderr = self.prefix / "logs" / "stderr.log"
        extra = stderr.read_text(errors="replace") if stderr.exists() else ""
        return (self.error_log() + extra).strip()

    def _reap(self) -> None:
        """Kill whatever is left of the group after the master died on its own."""
        assert self._proc is not None
        _signal_group(self._proc.pid, signal.SIGKILL)

    def _kill(self) -> None:
        assert self._proc is not None
        self._reap()
        self._proc.wait()

    def stop(self) -> None:
        """SIGQUIT (graceful), SIGKILL the group after STOP_TIMEOUT; always remove the prefix."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                _signal_group(proc.pid, signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_TIMEOUT)
            if proc is not None:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            if self.prefix is not None:
                shutil.rmtree(self.prefix, ignore_errors=True)
                self.prefix = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _bracket(host: str) -> str:
    """IPv6 literals need brackets in URLs and in ``listen``."""
    return f"[{host}]" if ":" in host else host


def _quote(path: Path) -> str:
    """Quote a path for nginx.conf so spaces in a temp dir cannot split a directive."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
