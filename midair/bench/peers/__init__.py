"""Python peers: each library's recommended batch download, as a small program.

Each runs in its own process (``python -m midair.bench.peers.NAME LIST OUTDIR
--concurrency N --per-host M``) so the bench measures its CPU and RSS alone.
LIST has one URL a line; each file is saved under OUTDIR by the last segment
of its URL path. Exit status 0 only when every file was fetched with a 200.
"""
