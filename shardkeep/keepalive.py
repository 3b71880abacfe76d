"""HTTP/2 keepalive for the long-lived session streams (docs/transport.md, "Keepalive").

A session stream may sit idle between ceremonies. A NAT or firewall that sees
no packets for a while forgets the connection without telling either end, and
a peer that vanished (power cut, cable pulled) sends no reset: the next call
written on such a connection waits for TCP to give up, far longer than a
ceremony's deadline. So clients ping every ``KEEPALIVE_MS`` while a call (a
session stream) is open, and drop the connection when a ping goes unanswered
for ``KEEPALIVE_TIMEOUT_MS``: the streams on it fail with UNAVAILABLE, and the
session clients open a new one for the next call. The pings keep NAT state
alive on the way too. A proxy that ends idle streams itself (an L7 load
balancer's stream timeout) ends them with a status, which the session clients
handle the same way.

gRPC servers refuse pings on a connection without data more often than every
five minutes (GOAWAY "too_many_pings" after two), so the servers the session
clients talk to (host, relay) accept them every ``KEEPALIVE_MS`` / 2.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KEEPALIVE_MS", "KEEPALIVE_TIMEOUT_MS", "client_options", "server_options"]

KEEPALIVE_MS: Final = 30_000
"""How often a client pings while a stream is open: below common NAT idle timeouts."""
KEEPALIVE_TIMEOUT_MS: Final = 10_000
"""How long a client waits for a ping's answer before it drops the connection."""


def client_options(
    interval_ms: int = KEEPALIVE_MS, timeout_ms: int = KEEPALIVE_TIMEOUT_MS
) -> list[tuple[str, int]]:
    """Channel options: ping every ``interval_ms`` while a call is open, however long
    no data flows, and drop the connection after ``timeout_ms`` without an answer."""
    return [
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # Any ping's answer, gRPC's own BDP probes' too (one ping in flight at a
        # time: a probe waiting 60 s would hold the keepalive back that long).
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),  # default 2: pings would stop
    ]


def server_options(interval_ms: int = KEEPALIVE_MS) -> list[tuple[str, int]]:
    """Server options that accept the pings of clients made with ``client_options(interval_ms)``
    (half the interval: timers jitter)."""
    return [("grpc.http2.min_ping_interval_without_data_ms", interval_ms // 2)]
