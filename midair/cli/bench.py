"""``midair bench``: midair's engines against curl, aria2c, wget2 and Python peers.

    midair bench [startup] [SCENARIO[:key=value,...]...] [--engines LIST] [--peers LIST]
                 [--reps N] [--out DIR] [--quick] [--server auto|nginx|midair]
                 [--downloads tmpfs|disk|DIR]

Scenarios: seed, crowd, c10k, bulk, small, sweep, and ``startup`` (each
client's start-up alone: ``midair --version`` beside ``curl --version``...);
default: all. See ``midair.bench.scenarios`` for what each measures and the
fields to override (``c10k:reps=1`` repeats c10k fewer times than --reps).
Every run is checked file by file against a sha256 manifest, has a time limit,
and counts as failed on a timeout, a non-zero exit or any wrong file.

Downloads go to tmpfs by default (/dev/shm or another tmpfs with room), so the
clients and not the disk are measured; ``--downloads disk`` puts them on the
data cache's file system and then also runs the default ``midair get`` with
--no-fsync, to show what durable publication costs. Writes OUT/bench.md (a
table per scenario), OUT/bench.json (every run, with its command line) and,
with matplotlib installed (``pip install 'midair[bench]'``), OUT/SCENARIO.png.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..bench import plots
from ..bench.clients import (
    DEFAULT,
    DEFAULT_CLIENT,
    NO_FSYNC,
    PEER_GROUPS,
    PEERS,
    Client,
    compile_midair,
    default_engines,
    no_fsync_client,
    select_clients,
)
from ..bench.downloads import Downloads, choose_downloads
from ..bench.measure import machine_info
from ..bench.report import markdown, write_json
from ..bench.runner import Context, ScenarioResult, run_scenario
from ..bench.scenarios import NAMES, OPT_IN, Scenario, parse_scenario
from ..bench.servers import choose_server, server_version
from ..bench.startup import StartupRow, measure_startup
from . import raise_open_file_limit

STARTUP = "startup"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="benchmark midair's engines against other clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"{STARTUP}, {', '.join(NAMES)}, optionally NAME:field=value,... (default: all "
        f"of these); also {', '.join(OPT_IN)} (nginx only)",
    )
    p.add_argument(
        "--engines",
        help="comma-separated midair engines ('default' = no "
        "--engine), 'all' or 'none' (default: default and every available "
        "engine except dask)",
    )
    p.add_argument(
        "--peers",
        help=f"comma-separated subset of {','.join([*PEERS, *PEER_GROUPS])}, or 'none' "
        "(default: all; each used only if installed; python-floor is the reference loop's "
        "three rows, small only)",
    )
    p.add_argument("--reps", type=int, default=1, help="runs per client; medians shown (1)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="directory for bench.md, bench.json and PNGs (./bench-results)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a small version of every scenario (under 2 minutes)"
    )
    p.add_argument(
        "--server",
        choices=["auto", "nginx", "midair"],
        default="auto",
        help="nginx, midair serve, or nginx when installed (auto)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "midair-bench",
        help="where generated data sets are kept between runs",
    )
    p.add_argument(
        "--downloads",
        default="tmpfs",
        metavar="tmpfs|disk|DIR",
        help="where clients download to: a tmpfs (default), the data cache's file system, or DIR",
    )
    p.add_argument("--timeout", type=float, help="seconds per client run (default: per scenario)")
    p.add_argument("--nginx-workers", type=int, default=1, help="0 = one per core (1)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    p.set_defaults(run=run)


def _list(text: str | None, default: list[str], everything: list[str]) -> list[str]:
    if text is None:
        return default
    if text in ("all", "none"):
        return everything if text == "all" else []
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    from ..engines import ENGINES

    names = args.scenarios or [STARTUP, *NAMES]
    try:
        scenarios = [parse_scenario(s, args.quick) for s in names if s != STARTUP]
        engines = _list(args.engines, default_engines(), [DEFAULT, *ENGINES])
        clients = select_clients(engines, _list(args.peers, list(PEERS), list(PEERS)))
        server = choose_server(args.server)
        downloads = choose_downloads(args.downloads, args.cache, _largest_output(scenarios))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"midair bench: {exc}", file=sys.stderr)
        return 2
    durability = _add_no_fsync(clients, downloads)
    bytecode = compile_midair()
    versions = {name: c.version() for name, c in clients.items()}
    ctx = Context(
        server=server,
        cache=args.cache,
        work=Path(),
        reps=max(1, args.reps),
        clients=clients,
        versions=versions,
        nofile=raise_open_file_limit(),
        timeout=args.timeout,
        nginx_workers=args.nginx_workers,
        prefault=not downloads.durable,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    startup, results = _run_all(scenarios, ctx, downloads, STARTUP in names)
    meta = _meta(args, ctx, time.monotonic() - started)
    meta["work"] = str(ctx.work)
    meta["machine"]["load_1m_at_start"] = round(load, 2)
    meta["downloads"] = downloads.as_dict() | {
        "durable_publication": durability,
        "prefault": ctx.prefault,
    }
    meta["bytecode"] = bytecode
    return _report(args, meta, results, startup)


def _largest_output(scenarios: list[Scenario]) -> int:
    """Bytes one client run writes at most: each run's files are deleted after checking."""
    return max((max(p.files for p in s.points()) * s.size for s in scenarios), default=0)


def _add_no_fsync(clients: dict[str, Client], downloads: Downloads) -> str:
    """On a disk, add the default ``midair get`` with --no-fsync; say what was done."""
    if DEFAULT_CLIENT not in clients:
        return "not measured: the default midair get is not among the clients"
    if not downloads.durable:
        return (
            f"not measured: downloads on {downloads.fstype}, where fsync writes "
            "nothing (--downloads disk measures it)"
        )
    client = no_fsync_client()
    if client is None:
        return f"not measured: `midair get --help` does not list {NO_FSYNC}"
    clients[client.name] = client
    return f"measured: {client.name} beside midair-default"


def _run_all(
    scenarios: list[Scenario], ctx: Context, downloads: Downloads, startup: bool
) -> tuple[list[StartupRow], list[ScenarioResult]]:
    with tempfile.TemporaryDirectory(prefix="midair-bench-", dir=downloads.path) as tmp:
        ctx.work = Path(tmp)
        ctx.say(f"downloads in {tmp} ({downloads.fstype}, mounted on {downloads.mount})")
        rows = measure_startup(ctx.work / STARTUP) if startup else []
        return rows, [run_scenario(s, ctx) for s in scenarios]


def _meta(args: argparse.Namespace, ctx: Context, seconds: float) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "server": {
            "kind": ctx.server,
            "version": server_version(ctx.server),
            "nginx_workers": ctx.nginx_workers if ctx.server == "nginx" else None,
        },
        "versions": {n: v or "not installed" for n, v in ctx.versions.items()},
        "notes": {n: c.note for n, c in ctx.clients.items() if c.note},
        "reps": ctx.reps,
        "quick": args.quick,
        "seconds": round(seconds, 1),
        "command": "midair bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "",
    }


def _header(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    server = meta["server"]
    where = meta["downloads"]
    lines = [
        "## midair bench",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}, RLIMIT_NOFILE {m['nofile']}, "
        f"load average {m['load_1m_at_start']} at the start, {m['load_1m']} at the end. "
        f"Server: {server['kind']} {server['version']}"
        + (
            f" ({server['nginx_workers']} worker unless a scenario says more)"
            if server["nginx_workers"]
            else ""
        )
        + f". Reps: {meta['reps']} unless a scenario says otherwise (medians; one-at-a-time "
        "clients and runs that timed out are not repeated). "
        f"Took {meta['seconds']:.0f} s.",
        f"Downloads: {where['path']} ({where['fstype']}, mounted on {where['mount']}; "
        f"--downloads {where['choice']}){'. ' + where['note'] if where['note'] else ''}. "
        f"Durable publication: {where['durable_publication']}."
        + (
            " Before each run (and each ceiling writer) the bench wrote as many bytes there "
            "as the run writes and deleted them, so every writer starts on memory the host "
            "backs (midair.bench.downloads)."
            if where.get("prefault")
            else ""
        ),
        f"midair's modules: {meta['bytecode']}.",
        f"Command: `{meta['command']}`; every run's exact command line is in bench.json.",
        "| client | version | how it was run | first command line ($WORK: the work "
        "directory) |\n|---|---|---|---|\n"
        + "\n".join(
            f"| {n} | {v} | {meta['notes'].get(n, '')} | {_code(meta['commands'].get(n, ''))} |"
            for n, v in meta["versions"].items()
        ),
    ]
    return "\n\n".join(lines)


def _first_commands(results: list[ScenarioResult], work: str) -> dict[str, str]:
    """client -> the command line of its first measured run, with the work dir as $WORK."""
    commands: dict[str, str] = {}
    for run in (r for res in results for r in res.runs):
        if run.measurement is not None:
            argv = shlex.join(run.measurement.argv)
            commands.setdefault(run.client, argv.replace(work, "$WORK"))
    return commands


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _report(
    args: argparse.Namespace,
    meta: dict[str, Any],
    results: list[ScenarioResult],
    startup: list[StartupRow],
) -> int:
    meta["commands"] = _first_commands(results, meta["work"])
    text = markdown(_header(meta), results, startup)
    (args.out / "bench.md").write_text(text)
    write_json(args.out / "bench.json", meta, results, startup)
    print(text)
    if not args.no_plots:
        if plots.available():
            for path in plots.plot_all(results, args.out, startup):
                print(f"plot: {path}", file=sys.stderr)
        else:
            print("no plots: pip install 'midair[bench]' for matplotlib", file=sys.stderr)
    print(f"wrote {args.out / 'bench.md'} and {args.out / 'bench.json'}", file=sys.stderr)
    failed = [r for res in results for r in res.runs if r.status == "FAILED"]
    return 1 if failed else 0
