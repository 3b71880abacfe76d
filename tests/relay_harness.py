"""Helpers for the relay tests: an in-process relay on 127.0.0.1:0 that pins a
test coordinator, Redis key cleanup, and a clock tests can move."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.admission import AdmissionPolicy, Admitter, parse_policy
from relay.backend import Backend
from relay.client import RelayClient
from relay.metrics import RelayMetrics
from relay.rooms import RelayConfig
from relay.service import Clock, create_server, wall_clock_ms

T = TypeVar("T")

# Bounds every test coroutine, so a relay bug shows as a failure, not a hang.
TEST_TIMEOUT_S = 20.0


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body on a fresh event loop with a timeout."""

    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            return await coro_fn()

    return asyncio.run(bounded())


# The coordinator every harness relay pins, unless a test passes its own policy.
COORDINATOR = Ed25519PrivateKey.generate()


def policy_for(
    coordinators: dict[str, Ed25519PrivateKey],
    *,
    max_rooms: int = 10_000,
    max_bytes: int = 1 << 40,
    quotas: dict[str, tuple[int, int]] | None = None,
) -> AdmissionPolicy:
    """An admission policy pinning ``coordinators`` (name -> key); ``quotas``
    gives some of them (max_rooms, max_bytes)."""
    entries = []
    for name, key in coordinators.items():
        entry: dict[str, object] = {
            "name": name,
            "public_key": key.public_key().public_bytes_raw().hex(),
        }
        if quotas and name in quotas:
            entry["max_rooms"], entry["max_bytes"] = quotas[name]
        entries.append(entry)
    return parse_policy({"max_rooms": max_rooms, "max_bytes": max_bytes, "coordinators": entries})


def harness_admitter() -> Admitter:
    """An admitter pinning the harness coordinator alone."""
    return Admitter(policy_for({"test": COORDINATOR}))


def write_admission_file(directory: Path, key: Ed25519PrivateKey = COORDINATOR) -> Path:
    """Write an admission file pinning ``key`` (as ``shardkeep-relay --admission`` reads it)."""
    path = directory / "relay-admission.json"
    public_key = key.public_key().public_bytes_raw().hex()
    policy = {
        "max_rooms": 1000,
        "max_bytes": 1 << 34,
        "coordinators": [{"name": "test", "public_key": public_key}],
    }
    path.write_text(json.dumps(policy))
    return path


@asynccontextmanager
async def relay(
    backend: Backend,
    *,
    config: RelayConfig | None = None,
    clock: Clock = wall_clock_ms,
    address: str = "127.0.0.1:0",
    policy: AdmissionPolicy | None = None,
    coordinator: Ed25519PrivateKey | None = COORDINATOR,
    metrics: RelayMetrics | None = None,
) -> AsyncIterator[RelayClient]:
    """Start a relay over ``backend`` that pins ``policy`` (default: the harness
    coordinator alone); yield a client that signs as ``coordinator``; stop both
    at the end."""
    admitter = Admitter(policy) if policy else harness_admitter()
    server, port = await create_server(
        address, backend, admitter=admitter, config=config, clock=clock, metrics=metrics
    )
    await server.start()
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    client = RelayClient.insecure(target, coordinator=coordinator)
    try:
        yield client
    finally:
        await client.aclose()
        await server.stop(None)
        await backend.aclose()


def unique_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"shardkeep-test:{uuid.uuid4().hex}:"


def delete_keys(url: str, prefix: str) -> list[str]:
    """Delete every key under ``prefix``; return their names."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        return [k.decode() for k in keys]
    finally:
        client.close()


class FakeClock:
    """A Unix-ms clock that moves only when told."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms
