"""PNG charts (matplotlib, the ``midair[bench]`` extra): one per scenario.

Throttled scenarios: a bar per client of wall time as a multiple of the floor
(1.0 = every file as fast as one file alone). bulk: GB/s per client with the
loopback ceilings drawn in. small: files per second. Beside each, CPU per file
and, where the server logged them, the start-up and exit costs against issue
8's targets. sweep: wall time, CPU per file and peak RSS per transfer against
N, one line per client, log scales. startup: each command's median wall time.
midair's engines are blue, peers orange, so the two families read apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from midair.bench.report import TARGETS, Row, rows_for, size_text, sweep_metrics
from midair.bench.runner import ScenarioResult
from midair.bench.startup import RUNS, StartupRow

__all__ = ["available", "plot_all"]

MIDAIR, PEER, NEUTRAL = "#1f77b4", "#ff7f0e", "#7f7f7f"  # NEUTRAL: the bare interpreter


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_all(
    results: list[ScenarioResult], out: Path, startup: list[StartupRow] | None = None
) -> list[Path]:
    """Write one PNG per scenario with runs (and startup.png) into ``out``; return them."""
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    if startup and any(r.walls_s for r in startup):
        paths.append(_startup(startup, out / "startup.png"))
    for result in results:
        if not any(r.status == "ok" for r in result.runs):
            continue
        path = out / f"{result.scenario.name}.png"
        if result.scenario.counts:
            _sweep(result, path, result.server)
        else:
            _bars(result, path, result.server)
        paths.append(path)
    return paths


def _bars(result: ScenarioResult, path: Path, server: str) -> None:
    """The scenario's measure, CPU per file and, when the server logged them, start-up
    and exit: one panel each, a bar per client, best first."""
    import matplotlib.pyplot as plt

    scn = result.scenario
    rows = [r for r in rows_for(result) if not r.status.startswith("skipped")]
    value, label, title = _bar_measure(result)
    edges = any(r.first_request_ms is not None for r in rows)
    panels = 3 if edges else 2
    fig, axes = plt.subplots(
        1, panels, sharey=True, dpi=90, figsize=(5 * panels, max(2.4, 0.9 + 0.3 * len(rows)))
    )
    _panel(axes[0], rows, value, label)
    _reference_line(axes[0], result)
    _panel(
        axes[1],
        rows,
        lambda r: r.cpu_ms_per_file,
        "client CPU per file, ms (user + sys; lower is better)",
    )
    if edges:
        _edges_panel(axes[2], rows)
    axes[0].invert_yaxis()
    fig.suptitle(f"{scn.name}: {title} ({server})", fontsize=10)
    _legend_families(fig)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _panel(ax: Any, rows: list[Row], value: Callable[[Row], float | None], label: str) -> None:
    """Horizontal bars, midair blue and peers orange, each with its value written out."""
    names = [r.client for r in rows]
    values = [(value(r) or 0.0) if r.ok else 0.0 for r in rows]
    ax.barh(names, values, color=[_family(n) for n in names])
    for i, (row, v) in enumerate(zip(rows, values, strict=True)):
        text = (f" {v:,.2f}" if v < 100 else f" {v:,.0f}") if row.ok else " FAILED"
        ax.text(v, i, text, va="center", fontsize=8, color="black" if row.ok else "red")
    ax.set_xlabel(label, fontsize=8)
    ax.set_xlim(0, max([*values, 1e-9]) * 1.2)
    ax.tick_params(axis="y", labelsize=8)


def _reference_line(ax: Any, result: ScenarioResult) -> None:
    """The floor (1.0x) or the loopback ceilings (socket only, into a new file), dashed."""
    if result.scenario.throttled:
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        return
    if result.scenario.files != 1:
        return
    for ceiling, label, y in [
        (result.ceiling, "socket only ", -0.6),
        (result.file_ceiling, "into a new file ", -0.15),
    ]:
        if ceiling:
            ax.axvline(ceiling, color="grey", linestyle="--", linewidth=1)
            ax.text(ceiling, y, label, color="grey", fontsize=7, ha="right")
            ax.set_xlim(0, max(ax.get_xlim()[1], ceiling * 1.15))


def _edges_panel(ax: Any, rows: list[Row]) -> None:
    """First request after exec and exit after the last response, with issue 8's targets."""
    series = [
        (
            "exec -> first request",
            [r.first_request_ms for r in rows],
            -0.2,
            "#2ca02c",
            TARGETS["first_request_ms"],
        ),
        ("last response -> exit", [r.exit_ms for r in rows], 0.2, "#9467bd", TARGETS["exit_ms"]),
    ]
    for label, values, shift, colour, target in series:
        spots = [i + shift for i in range(len(rows))]
        lengths = [v or 0.0 for v in values]
        ax.barh(spots, lengths, height=0.4, color=colour, label=label)
        for y, v in zip(spots, values, strict=True):
            ax.text(v or 0.0, y, f" {v:.0f}" if v is not None else " -", va="center", fontsize=7)
        ax.axvline(target, color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("ms, as the server saw it (dotted: targets)", fontsize=8)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.1)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False)


def _family(client: str) -> str:
    if client.startswith("python"):
        return NEUTRAL
    return MIDAIR if client.startswith("midair") else PEER


def _startup(rows: list[StartupRow], path: Path) -> Path:
    """Median wall time of each start-up command, the --version target dashed."""
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.median_ms is not None]
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(shown)), dpi=90)
    names = [r.label for r in shown]
    values = [r.median_ms or 0.0 for r in shown]
    ax.barh(names, values, color=[_family(n) for n in names])
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    ax.axvline(TARGETS["version_ms"], color="grey", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"wall time from exec to exit, ms (median of {RUNS}; dashed: the midair --version target)"
    )
    ax.set_title("startup: each client doing nothing", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _bar_measure(result: ScenarioResult) -> tuple[Callable[[Row], float | None], str, str]:
    scn = result.scenario
    size = f"{scn.files:,} x {size_text(scn.size)}"
    if scn.throttled:
        return (
            (lambda r: r.ratio),
            "wall time / floor (1.0 = as fast as one file alone; lower is better)",
            f"{size} over {scn.hosts} addresses at {size_text(scn.rate)}/s per connection",
        )
    if scn.files == 1:
        return (
            (lambda r: r.gbps),
            "throughput, GB/s (higher is better)",
            f"{size} from one unthrottled server",
        )
    return (
        (lambda r: r.files_per_s),
        "files per second (higher is better)",
        f"{size} from one unthrottled server, {scn.points()[0].jobs} at a time",
    )


def _legend_families(fig: Any) -> None:
    """Outside the panels, top right: it never hides a bar or its value."""
    from matplotlib.patches import Patch

    handles = [Patch(color=MIDAIR, label="midair engines"), Patch(color=PEER, label="peers")]
    fig.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False
    )


def _sweep(result: ScenarioResult, path: Path, server: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    scn = result.scenario
    counts = sorted({r.files for r in result.runs})
    by_n = {n: {row.client: row for row in rows_for(result, n)} for n in counts}
    clients = list(dict.fromkeys(r.client for r in result.runs))
    metrics = [m for m in sweep_metrics(scn) if m[0] != "x floor"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(14, 4.8), dpi=80)
    for client, style in zip(clients, _styles(clients), strict=True):
        for ax, (_, get, _) in zip(axes, metrics, strict=True):
            pts = [
                (n, get(by_n[n][client]))
                for n in counts
                if client in by_n[n] and by_n[n][client].ok
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], **style)
    units, titles, across, heading = _SWEEP_TEXTS[scn.tiny]
    for ax, unit, title in zip(axes, units, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(across)
        ax.set_ylabel(unit + " (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(
        heading.format(scn=scn, size=size_text(scn.size), rate=size_text(scn.rate), server=server),
        fontsize=11,
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="center left", bbox_to_anchor=(0.995, 0.5), fontsize=8, frameon=False
    )
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# Per kind of N (in flight; list length): axis units, panel titles, x label, heading.
_SWEEP_TEXTS = {
    False: (
        ["wall time, s", "client CPU per file, ms (user + sys)", "peak RSS per transfer, KiB"],
        [
            "wall time (flat = all in the air)",
            "CPU per file",
            "RSS per transfer (falls as fixed cost spreads)",
        ],
        "N = transfers in flight (log scale)",
        "sweep: N x {size} at {rate}/s per connection over min(N, {scn.hosts}) addresses "
        "({server})",
    ),
    True: (
        ["files per second", "client CPU per file, ms", "peak RSS, MiB", "first request, ms"],
        ["files/s", "CPU per file", "peak RSS (flat = constant memory)", "first request"],
        "N = URLs in the list (log scale)",
        "list: N URLs of {size}, {scn.jobs} in flight ({server})",
    ),
}


def _styles(clients: list[str]) -> list[dict[str, Any]]:
    """midair engines: solid lines, tab10 colours; peers: dashed, Dark2; a marker each."""
    import matplotlib.pyplot as plt

    markers = "o^vDsPX*<>ph"
    ours = [c for c in clients if c.startswith("midair")]
    theirs = [c for c in clients if not c.startswith("midair")]
    styles: list[dict[str, Any]] = []
    for client in clients:
        mine = client.startswith("midair")
        i = (ours if mine else theirs).index(client)
        colour = plt.get_cmap("tab10" if mine else "Dark2")(i % (10 if mine else 8))
        styles.append(
            {
                "linestyle": "-" if mine else "--",
                "marker": markers[i % len(markers)],
                "color": colour,
                "label": client,
                "markersize": 5,
                "linewidth": 1.5,
            }
        )
    return styles
