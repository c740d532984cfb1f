"""``midair serve``: the project's own slow, faulty HTTP/1.1 and HTTP/2 test server.

Used by the test suite, ``midair demo`` and ``midair bench``: many loopback
addresses on one port, a byte rate and latency per connection, and faults asked
for per request in the query string (see ``midair.serve.faults``). Generated
files are deterministic, so a test checks a download with ``expected_sha256``.

Modules: ``content`` (what is served), ``faults`` (query parameters),
``ranges`` (Range/If-Range), ``request`` (request parsing, response heads),
``responder`` (request -> plan), ``sender`` (plan -> bytes on the wire, paced),
``protocol`` (one connection), ``http2`` (one h2 connection, a stream per
request), ``alpn`` (HTTPS: h2 or HTTP/1.1 after the handshake), ``stats``,
``server`` (``SlowServer``), ``thread`` (``ServerThread``). ``nginx`` runs a
real nginx for comparison and is not imported here.
"""

from midair.serve.content import expected_bytes, expected_sha256
from midair.serve.server import SlowServer, loopback_hosts
from midair.serve.stats import AddressStats, RequestRecord, ServerStats
from midair.serve.thread import ServerThread

__all__ = [
    "AddressStats",
    "RequestRecord",
    "ServerStats",
    "ServerThread",
    "SlowServer",
    "expected_bytes",
    "expected_sha256",
    "loopback_hosts",
]
