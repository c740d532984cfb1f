"""``midair bench``: midair's engines against named peers, on loopback, in one run.

Why a package and not a script: every scenario must measure every client the
same way, or the ratios mean nothing. So each rule lives in one module:

- ``data`` — deterministic files generated once into a cache, with a manifest
  of sizes and sha256; ``verify`` checks a client's output file by file;
- ``measure`` — one client run in its own process group, with a time limit,
  and the rusage (CPU, peak RSS) of exactly that child and what it reaped;
- ``servers`` — a real nginx (``limit_rate`` per connection, many loopback
  addresses) or ``midair serve`` when nginx is not installed;
- ``clients`` — command lines for curl, aria2c, wget2, the Python peers in
  ``peers/`` and one ``midair-ENGINE`` client per engine;
- ``downloads`` — where clients write: tmpfs by default, a disk when asked,
  and which file system it was;
- ``timeline`` — each run's start-up and exit costs from the server's log
  (nginx's millisecond access log, checked against the bench's clock);
- ``scenarios`` — seed, crowd, c10k, bulk, small and sweep, with overrides;
  ``startup`` — each client's bare start and exit;
- ``runner`` — floor/ceiling, every client x rep, judged pass or fail;
- ``report`` — medians, ranked Markdown tables, JSON; ``plots`` — PNG charts.
"""
