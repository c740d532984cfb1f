"""Credentials read at the surface: netrc files become ``Options.netrc`` entries.

The core gets data, never a file: (machine, login, password) tuples, machine ""
for netrc's ``default`` entry.  A file that does not parse is a one-line input
error naming the file and the line.
"""

from __future__ import annotations

import os

from .core.errors import InputError
from .core.jobs import NetrcEntry


def default_netrc() -> str:
    """$NETRC, else ~/.netrc (curl's and wget's order)."""
    return os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")


def read_netrc(path: str, *, missing_ok: bool = False) -> tuple[NetrcEntry, ...]:
    """The entries of the netrc file ``path``; none if it is absent and ``missing_ok``."""
    if missing_ok and not os.path.exists(path):
        return ()
    import netrc  # here: with shlex, start-up a run without a netrc file need not pay

    try:
        parsed = netrc.netrc(path)
    except netrc.NetrcParseError as exc:
        raise InputError(f"{exc.filename}:{exc.lineno}: {exc.msg}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read netrc: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: netrc is not text") from None
    return tuple(
        _entry(host, login, password) for host, (login, _, password) in parsed.hosts.items()
    )


def _entry(host: str, login: str, password: str) -> NetrcEntry:
    return ("" if host == "default" else host.lower(), login, password)
