"""The Prometheus endpoint every service serves its own registry on."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer"]


class MetricsServer:
    """The HTTP endpoint serving one registry at ``/metrics``; ``close`` stops it."""

    def __init__(self, registry: CollectorRegistry, port: int, address: str) -> None:
        """Serve from a background thread.

        Arguments:
            registry: what to serve.
            port: TCP port (0 picks a free one).
            address: listen address (loopback by default: scrape through a sidecar).

        Raises:
            OSError: the port cannot be bound.
        """
        self._server, self._thread = prometheus_client.start_http_server(
            port, addr=address, registry=registry
        )

    @property
    def port(self) -> int:
        """The bound TCP port (useful when asked for port 0)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and join the server thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
