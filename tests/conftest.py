"""Shared fixtures.

``nginx`` starts real nginx servers (see ``midair.serve.nginx``) so midair is
never tested only against its own server. Without nginx the tests that need it
skip locally, but fail in CI (``CI`` set): there a skip would hide a broken setup.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from midair.serve.nginx import Nginx, find_nginx

NginxFactory = Callable[..., Nginx]


def require_nginx() -> str:
    """Path of nginx, or skip (locally) / fail (CI) the calling test."""
    binary = find_nginx()
    if binary is not None:
        return binary
    if os.environ.get("CI"):
        pytest.fail("nginx not installed, but CI must have it: apt-get install nginx-light")
    pytest.skip("nginx not installed: apt-get install nginx-light")


@pytest.fixture
def nginx() -> Iterator[NginxFactory]:
    """Factory: ``nginx(root, hosts=[...], limit_rate=...)`` -> a started ``Nginx``.

    Function-scoped because tests want different roots and rates; a start costs
    a few milliseconds. Every server started is stopped at teardown.
    """
    require_nginx()
    started: list[Nginx] = []

    def start(root: Path, **options: Any) -> Nginx:
        server = Nginx(root, **options)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()
