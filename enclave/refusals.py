"""Counts of the requests the enclave refused as malformed, by method.

The enclave has no network to serve metrics on: ``GetStatus`` reports these
counts and the host exports them (``shardkeep_enclave_malformed_requests_total``).
They live in this process's memory and start from zero after a restart, which
Prometheus reads as a counter reset. Method names come from the service's own
method table, so the label set is closed.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["MalformedCounts"]


class MalformedCounts:
    """Thread-safe per-method counts (handlers run on the event loop and in worker threads)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, method: str) -> None:
        """Count one malformed request to ``method`` (its short name, e.g. "GetAttestation")."""
        with self._lock:
            self._counts[method] += 1

    def snapshot(self) -> dict[str, int]:
        """The counts so far, by method."""
        with self._lock:
            return dict(self._counts)
