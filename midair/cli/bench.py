"""``midair bench``: midair's engines against curl, aria2c, wget2 and Python peers.

    midair bench [SCENARIO[:key=value,...]...] [--engines LIST] [--peers LIST]
                 [--reps N] [--out DIR] [--quick] [--server auto|nginx|midair]

Scenarios: seed, crowd, c10k, bulk, small, sweep (default: all; see
``midair.bench.scenarios`` for what each measures and the fields to override).
Every run is checked file by file against a sha256 manifest, has a time limit,
and counts as failed on a timeout, a non-zero exit or any wrong file. Writes
OUT/bench.md (a table per scenario), OUT/bench.json (every run) and, with
matplotlib installed (``pip install 'midair[bench]'``), OUT/SCENARIO.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..bench import plots
from ..bench.clients import PEERS, default_engines, select_clients
from ..bench.measure import machine_info, raise_nofile_limit
from ..bench.report import markdown, write_json
from ..bench.runner import Context, ScenarioResult, run_scenario
from ..bench.scenarios import NAMES, Scenario, parse_scenario
from ..bench.servers import choose_server, server_version


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmark midair's engines against other clients",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"{', '.join(NAMES)}, optionally NAME:field=value,... (default: all)")
    p.add_argument("--engines", help="comma-separated midair engines, 'all' or 'none' "
                   "(default: every available engine except dask)")
    p.add_argument("--peers", help=f"comma-separated subset of {','.join(PEERS)}, or 'none' "
                   "(default: all; each used only if installed)")
    p.add_argument("--reps", type=int, default=1, help="runs per client; medians shown (1)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="directory for bench.md, bench.json and PNGs (./bench-results)")
    p.add_argument("--quick", action="store_true",
                   help="a small version of every scenario (under 2 minutes)")
    p.add_argument("--server", choices=["auto", "nginx", "midair"], default="auto",
                   help="nginx, midair serve, or nginx when installed (auto)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "midair-bench",
                   help="where generated data sets are kept between runs")
    p.add_argument("--work", type=Path, default=None,
                   help="where clients download to (default: the system temp directory)")
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

    try:
        scenarios = [parse_scenario(s, args.quick) for s in args.scenarios or NAMES]
        engines = _list(args.engines, default_engines(), list(ENGINES))
        clients = select_clients(engines, _list(args.peers, list(PEERS), list(PEERS)))
        server = choose_server(args.server)
    except (ValueError, RuntimeError) as exc:
        print(f"midair bench: {exc}", file=sys.stderr)
        return 2
    versions = {name: c.version() for name, c in clients.items()}
    ctx = Context(server=server, cache=args.cache, work=Path(), reps=max(1, args.reps),
                  clients=clients, versions=versions, nofile=raise_nofile_limit(),
                  timeout=args.timeout, nginx_workers=args.nginx_workers)
    args.out.mkdir(parents=True, exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    results = _run_all(scenarios, ctx, args.work)
    meta = _meta(args, ctx, time.monotonic() - started)
    meta["machine"]["load_1m_at_start"] = round(load, 2)
    return _report(args, meta, results)


def _run_all(scenarios: list[Scenario], ctx: Context, work: Path | None
             ) -> list[ScenarioResult]:
    with tempfile.TemporaryDirectory(prefix="midair-bench-", dir=work) as tmp:
        ctx.work = Path(tmp)
        return [run_scenario(s, ctx) for s in scenarios]


def _meta(args: argparse.Namespace, ctx: Context, seconds: float) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "server": {"kind": ctx.server, "version": server_version(ctx.server),
                   "nginx_workers": ctx.nginx_workers if ctx.server == "nginx" else None},
        "versions": {n: v or "not installed" for n, v in ctx.versions.items()},
        "notes": {n: c.note for n, c in ctx.clients.items() if c.note},
        "reps": ctx.reps, "quick": args.quick, "seconds": round(seconds, 1),
        "command": "midair bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "",
    }


def _header(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    server = meta["server"]
    lines = [
        "## midair bench",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}, RLIMIT_NOFILE {m['nofile']}, "
        f"load average {m['load_1m_at_start']} at the start, {m['load_1m']} at the end. "
        f"Server: {server['kind']} {server['version']}"
        + (f" ({server['nginx_workers']} worker unless a scenario says more)"
           if server["nginx_workers"] else "")
        + f". Reps: {meta['reps']} (medians). Took {meta['seconds']:.0f} s.",
        "| client | version | how it was run |\n|---|---|---|\n" + "\n".join(
            f"| {n} | {v} | {meta['notes'].get(n, '')} |" for n, v in meta["versions"].items()),
    ]
    return "\n\n".join(lines)


def _report(args: argparse.Namespace, meta: dict[str, Any], results: list[ScenarioResult]
            ) -> int:
    text = markdown(_header(meta), results)
    (args.out / "bench.md").write_text(text)
    write_json(args.out / "bench.json", meta, results)
    print(text)
    if not args.no_plots:
        if plots.available():
            for path in plots.plot_all(results, args.out):
                print(f"plot: {path}", file=sys.stderr)
        else:
            print("no plots: pip install 'midair[bench]' for matplotlib", file=sys.stderr)
    print(f"wrote {args.out / 'bench.md'} and {args.out / 'bench.json'}", file=sys.stderr)
    failed = [r for res in results for r in res.runs if r.status == "FAILED"]
    return 1 if failed else 0

