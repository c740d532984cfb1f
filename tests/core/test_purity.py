"""The core is sans-IO: no module in midair/core imports I/O, threads, clocks or outer layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import midair.core

CORE = Path(midair.core.__file__).parent
FORBIDDEN = {
    "socket",
    "select",
    "selectors",
    "ssl",
    "threading",
    "asyncio",
    "time",
    "multiprocessing",
    "subprocess",
    "midair.store",
    "midair.engines",
    "midair.cli",
    "midair.serve",
    "midair.api",
}
# What relative imports resolve to from inside midair/core (``from .. import store``).
PARENT = "midair"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif node.level == 1:
                base = f"{PARENT}.core" + (f".{node.module}" if node.module else "")
            else:
                base = PARENT + (f".{node.module}" if node.module else "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    bad = sorted(n for n in imported_modules(path) if forbidden(n))
    assert not bad, f"{path.name} imports {bad}"


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import time\nfrom socket import socket\nfrom .. import store\n"
        "from ..engines import asyncio_engine\nimport os.path\n"
    )
    assert sorted(n for n in imported_modules(sample) if forbidden(n)) == [
        "midair.engines",
        "midair.engines.asyncio_engine",
        "midair.store",
        "socket",
        "socket.socket",
        "time",
    ]


def test_every_core_module_is_checked() -> None:
    names = {p.stem for p in CORE.glob("*.py")}
    assert {"batch", "transfer", "http", "naming", "jobs", "urls", "retry"} <= names
