"""Helpers for the relay tests: an in-process relay on 127.0.0.1:0, Redis key
cleanup, and a clock tests can move."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import redis

from relay.backend import Backend
from relay.client import RelayClient
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


@asynccontextmanager
async def relay(
    backend: Backend,
    *,
    config: RelayConfig | None = None,
    clock: Clock = wall_clock_ms,
    address: str = "127.0.0.1:0",
) -> AsyncIterator[RelayClient]:
    """Start a relay over ``backend``; yield a client; stop both at the end."""
    server, port = await create_server(address, backend, config=config, clock=clock)
    await server.start()
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    client = RelayClient.insecure(target)
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
