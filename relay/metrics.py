"""Prometheus metrics of the relay: calls, rooms, the budget, envelopes, malformed requests.

One registry per ``RelayMetrics`` (no module globals), so tests and several
relays in one process do not share counters. Labels are closed sets: method
names, status code names and the coordinator names of the admission policy,
never room or party ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge

from relay.backend import BackendUsage

__all__ = ["RelayMetrics"]


@dataclass(frozen=True)
class RelayMetrics:
    """The relay's metrics, in their own registry.

    Attributes:
        registry: where they are registered (``shardkeep.metrics.MetricsServer``).
        calls: ``shardkeep_relay_calls_total{method, code}``; a Join counts when it ends.
        malformed: ``shardkeep_relay_malformed_requests_total{method}``.
        rooms_created: ``shardkeep_relay_rooms_created_total{coordinator}``.
        credentials_refused: ``shardkeep_relay_credentials_refused_total{refusal}``,
            CreateRoom credentials refused: ``missing``, ``invalid`` (malformed,
            unpinned key, outside the window, bad signature), ``replayed``,
            ``record_full`` (the coordinator's record of spent ones).
        envelopes: ``shardkeep_relay_envelopes_total``, envelopes stored.
        envelope_bytes: ``shardkeep_relay_envelope_bytes_total``, their payload bytes.
        rooms: ``shardkeep_relay_rooms``, live rooms (over every relay of a shared Redis).
        reserved_bytes: ``shardkeep_relay_reserved_bytes``, bytes they reserve.
        stored_bytes: ``shardkeep_relay_stored_bytes``, payload bytes held
            (in-memory backend; -1 with Redis, whose own metrics tell).
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    calls: Counter = field(init=False)
    malformed: Counter = field(init=False)
    rooms_created: Counter = field(init=False)
    credentials_refused: Counter = field(init=False)
    envelopes: Counter = field(init=False)
    envelope_bytes: Counter = field(init=False)
    rooms: Gauge = field(init=False)
    reserved_bytes: Gauge = field(init=False)
    stored_bytes: Gauge = field(init=False)

    def __post_init__(self) -> None:
        reg = self.registry
        metrics = {
            "calls": Counter(
                "shardkeep_relay_calls", "Relay calls by method and status code",
                ("method", "code"), registry=reg,
            ),
            "malformed": Counter(
                "shardkeep_relay_malformed_requests", "Request bodies that did not parse",
                ("method",), registry=reg,
            ),
            "rooms_created": Counter(
                "shardkeep_relay_rooms_created", "Rooms created, by coordinator",
                ("coordinator",), registry=reg,
            ),
            "credentials_refused": Counter(
                "shardkeep_relay_credentials_refused", "CreateRoom credentials refused, by refusal",
                ("refusal",), registry=reg,
            ),
            "envelopes": Counter("shardkeep_relay_envelopes", "Envelopes stored", registry=reg),
            "envelope_bytes": Counter(
                "shardkeep_relay_envelope_bytes", "Payload bytes of the envelopes stored",
                registry=reg,
            ),
            "rooms": Gauge("shardkeep_relay_rooms", "Live rooms", registry=reg),
            "reserved_bytes": Gauge(
                "shardkeep_relay_reserved_bytes", "Bytes the live rooms reserve", registry=reg
            ),
            "stored_bytes": Gauge(
                "shardkeep_relay_stored_bytes",
                "Payload bytes held in room logs (-1: not counted)", registry=reg,
            ),
        }  # fmt: skip
        for name, metric in metrics.items():
            # Frozen: set the derived fields once, through object.__setattr__.
            object.__setattr__(self, name, metric)

    def observe(self, usage: BackendUsage) -> None:
        """Set the gauges from the backend's usage."""
        self.rooms.set(usage.rooms)
        self.reserved_bytes.set(usage.reserved_bytes)
        self.stored_bytes.set(usage.stored_bytes)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what the endpoint serves)."""
        return prometheus_client.generate_latest(self.registry)
