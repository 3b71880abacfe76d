"""Prometheus metrics of the host: calls per method and status, ceremony durations, in-flight;
and the enclave's own counters, which the host exports for it.

Each ``HostMetrics`` owns its registry (no module globals), so tests and
several servers in one process do not share counters. Labels are closed sets
(method names, status code names, ceremony kinds), never ids.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardkeep.metrics import MetricsServer
from shardkeep.v1 import enclave_pb2

__all__ = ["EnclaveReport", "HostMetrics", "start_metrics_server", "MetricsServer"]

# Seconds: a sign over a loopback relay takes milliseconds, a DKLs23 keygen
# across the internet seconds to minutes.
_CEREMONY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


# The enclave's method names: the only labels its report may add.
_ENCLAVE_METHODS: Final = frozenset(
    m.name for m in enclave_pb2.DESCRIPTOR.services_by_name["Enclave"].methods
)


class EnclaveReport(Collector):
    """The enclaves' counters as each one's last ``GetStatus`` reported them.

    An enclave has no network of its own: the host asks each of its enclaves
    for its status before a ceremony and every
    ``HostConfig.enclave_status_interval_s``, and exports what it last heard,
    labelled ``enclave`` with the enclave's name (its gRPC target, as the
    host's configuration names it: a closed set). Counts restart from zero
    with the enclave process, which Prometheus reads as a counter reset.

    Exposes ``shardkeep_enclave_malformed_requests_total{enclave, method}``
    (requests the enclave refused as malformed) and
    ``shardkeep_enclave_ceremonies_running{enclave}``. Nothing is exported for
    an enclave before its first report.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the metrics endpoint reads from its own thread
        self._last: dict[str, enclave_pb2.GetStatusResponse] = {}

    def update(self, enclave: str, status: enclave_pb2.GetStatusResponse) -> None:
        """Keep ``status`` as the latest report of the enclave named ``enclave``."""
        with self._lock:
            self._last[enclave] = status

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last = sorted(self._last.items())
        if not last:
            return
        malformed = CounterMetricFamily(
            "shardkeep_enclave_malformed_requests",
            "Requests the enclave refused as malformed, by method (reported by the enclave)",
            labels=("enclave", "method"),
        )
        running = GaugeMetricFamily(
            "shardkeep_enclave_ceremonies_running",
            "Ceremonies the enclave runs now (reported by the enclave)",
            labels=("enclave",),
        )
        for enclave, status in last:
            for method, count in sorted(status.malformed_requests.items()):
                if method in _ENCLAVE_METHODS:  # a closed label set, whatever arrives
                    malformed.add_metric((enclave, method), count)
            running.add_metric((enclave,), status.ceremonies_running)
        yield malformed
        yield running


@dataclass(frozen=True)
class HostMetrics:
    """The host's metrics, in their own registry.

    Attributes:
        registry: where they are registered (serve it with ``start_metrics_server``).
        calls: ``shardkeep_host_calls_total{method, code}``, every public call.
        ceremony_seconds: ``shardkeep_host_ceremony_duration_seconds{kind, code}``.
        in_flight: ``shardkeep_host_ceremonies_in_flight{kind}``.
        enclave_errors: ``shardkeep_host_enclave_errors_total{code}``, statuses the
            enclave returned.
        enclave: the enclaves' own counters, exported for them (``EnclaveReport``).
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    calls: Counter = field(init=False)
    ceremony_seconds: Histogram = field(init=False)
    in_flight: Gauge = field(init=False)
    enclave_errors: Counter = field(init=False)
    enclave: EnclaveReport = field(init=False)

    def __post_init__(self) -> None:
        # Frozen: set the derived fields once, through object.__setattr__.
        reg = self.registry
        object.__setattr__(
            self,
            "calls",
            Counter(
                "shardkeep_host_calls",
                "Host API calls by method and status code",
                ("method", "code"),
                registry=reg,
            ),
        )
        object.__setattr__(
            self,
            "ceremony_seconds",
            Histogram(
                "shardkeep_host_ceremony_duration_seconds",
                "Wall time of ceremonies, from request to result or failure",
                ("kind", "code"),
                buckets=_CEREMONY_BUCKETS,
                registry=reg,
            ),
        )
        object.__setattr__(
            self,
            "in_flight",
            Gauge(
                "shardkeep_host_ceremonies_in_flight",
                "Ceremonies running now",
                ("kind",),
                registry=reg,
            ),
        )
        object.__setattr__(
            self,
            "enclave_errors",
            Counter(
                "shardkeep_host_enclave_errors",
                "Error statuses returned by the enclave",
                ("code",),
                registry=reg,
            ),
        )
        object.__setattr__(self, "enclave", EnclaveReport())
        reg.register(self.enclave)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what the endpoint serves)."""
        return prometheus_client.generate_latest(self.registry)


def start_metrics_server(
    metrics: HostMetrics, port: int, address: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``metrics`` at ``http://address:port/metrics`` from a background thread.

    Arguments:
        metrics: the host's metrics.
        port: TCP port (0 picks a free one).
        address: listen address (loopback by default: scrape through a sidecar).

    Returns:
        The running server.

    Raises:
        OSError: the port cannot be bound.
    """
    return MetricsServer(metrics.registry, port, address)
