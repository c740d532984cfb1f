"""Where a download is in its life, and the moves allowed between: one table.

h11's ``_state.py`` shape: the states are an enum, the transitions plain data, and
``Download.move`` the one place that checks them, so a move the table does not allow
is a bug that stops the run at once instead of a download lost in between.  The
check is one dict lookup and one set membership: cheap enough for every move of
every file (about five in a file's life).

A file's usual life is NEW, PREPARING, QUEUED, FETCHING, PUBLISHING, FINISHED;
WAITING is a retry's timer, and FAILED can follow every state but the two ends.
``MOVES`` below is the whole rule, and tests/core/test_state.py
walks every pair of states against it.
"""

from __future__ import annotations

from enum import IntEnum


class DownloadState(IntEnum):
    """An IntEnum, not an Enum, for speed alone: a plain Enum hashes in Python (its
    ``__hash__`` is a def), which made every lookup in ``MOVES`` a Python call; an
    IntEnum's hash is int's.  Nothing reads the numbers."""

    NEW = 1  # made, nothing asked yet
    PREPARING = 2  # its path is claimed, the store's answer to Prepare to come
    QUEUED = 3  # waiting at its host for a connection or a stream
    WAITING = 4  # a retry's timer runs
    FETCHING = 5  # on a connection (or an HTTP/2 stream): request, head, body
    PUBLISHING = 6  # every byte given to the store, its answer to Publish to come
    FINISHED = 7  # reported Finished (downloaded, or found complete)
    FAILED = 8  # reported Failed


S = DownloadState
ENDS = frozenset({S.FINISHED, S.FAILED})  # reported Finished or Failed: no move out

MOVES: dict[DownloadState, frozenset[DownloadState]] = {
    S.NEW: frozenset({S.PREPARING, S.FAILED}),
    # Again PREPARING: the path was another URL's file, or a redirect renames it.
    S.PREPARING: frozenset({S.PREPARING, S.QUEUED, S.FINISHED, S.FAILED}),
    # Again QUEUED: a mirror on another host takes over from a host that does not exist.
    S.QUEUED: frozenset({S.QUEUED, S.FETCHING, S.FAILED}),
    S.WAITING: frozenset({S.QUEUED, S.FAILED}),
    S.FETCHING: frozenset({S.QUEUED, S.WAITING, S.PREPARING, S.PUBLISHING, S.FAILED}),
    # Back to FETCHING: a piece failed its digest as the file's last byte landed.
    S.PUBLISHING: frozenset({S.FINISHED, S.FAILED, S.FETCHING}),
    S.FINISHED: frozenset(),
    S.FAILED: frozenset(),
}


class StateError(RuntimeError):
    """A move the table does not allow: a bug in the batch, never the network's doing."""
