"""Relay throughput and round-trip latency on loopback (docs/benchmarks.md: the
service's added latency per round should stay within a few milliseconds).

The relay runs as its own process (``python -m relay.main``) on 127.0.0.1:0,
so its CPU is not shared with the clients' event loop; both parties' clients
run here. Per backend:

- round trip: party a sends a 256-byte point-to-point envelope to b, b echoes
  it back, a receives it: two relay hops, each stored and acknowledged;
- throughput: a streams 256-byte broadcasts with up to 64 unacknowledged, and
  b receives them all; messages/s counts envelopes delivered to b.

Counts and wall time are bounded. The Redis backend runs only when Redis
answers on 127.0.0.1:6379, under a unique key prefix deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.client import RelayClient, RoomParty
from shardkeep import eventloop

__all__ = ["main"]

PAYLOAD = b"\xa5" * 256
RTT_ROUNDS = 500
THROUGHPUT_MESSAGES = 5_000
WINDOW = 64
TIME_BUDGET_S = 8.0  # per measurement
REDIS_URL = "redis://127.0.0.1:6379/0"
COORDINATOR = Ed25519PrivateKey.generate()


def _admission_file(directory: str) -> str:
    """Pin the bench's coordinator key (the relay admits no one else)."""
    path = Path(directory) / "relay-admission.json"
    public_key = COORDINATOR.public_key().public_bytes_raw().hex()
    policy = {
        "max_rooms": 100,
        "max_bytes": 1 << 32,
        "coordinators": [{"name": "bench", "public_key": public_key}],
    }
    path.write_text(json.dumps(policy))
    return str(path)


async def _start_relay(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    directory = tempfile.mkdtemp(prefix="shardkeep-bench-relay-")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.main", "--listen", "127.0.0.1:0", "--grace", "1",
        "--log-level", "WARNING", "--admission", _admission_file(directory), *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if process.stdout is None:
        raise RuntimeError("no stdout from the relay process")
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"relay did not start: {line!r}")
    return process, line.rsplit(" ", 1)[1].strip()


async def _round_trips(a: RoomParty, b: RoomParty) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + TIME_BUDGET_S
    while len(samples) < RTT_ROUNDS and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        await a.send(PAYLOAD, ceremony_id="bench-rtt", round_=1, recipient="b")
        ping = await b.receive()
        await b.send(ping.envelope.payload, ceremony_id="bench-rtt", round_=1, recipient="a")
        await a.receive()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


async def _throughput(a: RoomParty, b: RoomParty) -> tuple[int, float]:
    deadline = time.perf_counter() + TIME_BUDGET_S
    window = asyncio.Semaphore(WINDOW)
    sent = 0

    async def send_one() -> None:
        try:
            await a.send(PAYLOAD, ceremony_id="bench-tput", round_=1)
        finally:
            window.release()

    async def sender() -> None:
        nonlocal sent
        pending: set[asyncio.Task[None]] = set()
        while sent < THROUGHPUT_MESSAGES and time.perf_counter() < deadline:
            await window.acquire()
            task = asyncio.create_task(send_one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)

    t0 = time.perf_counter()
    send_task = asyncio.create_task(sender())
    received = 0
    receiving: asyncio.Task[object] | None = None
    # The sender decides the count (it may stop on the time budget), so wait
    # on the sender and the next delivery together.
    while not (send_task.done() and received >= sent):
        receiving = receiving or asyncio.create_task(b.receive())
        if send_task.done():
            await receiving
        else:
            await asyncio.wait({receiving, send_task}, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done():
            receiving.result()
            received += 1
            receiving = None
    if receiving is not None:
        receiving.cancel()
    await send_task
    return received, time.perf_counter() - t0


async def _measure(label: str, *relay_args: str) -> None:
    process, address = await _start_relay(*relay_args)
    try:
        async with RelayClient.insecure(address, coordinator=COORDINATOR) as client:
            room = await client.create_room(["a", "b"], ttl_ms=120_000)
            t = room.join_tokens
            async with (
                client.join(room.room_id, "a", t["a"]) as a,
                client.join(room.room_id, "b", t["b"]) as b,
            ):
                await _round_trips(a, b)  # warm-up: connections, caches
                samples = sorted(await _round_trips(a, b))
                count, seconds = await _throughput(a, b)
            await client.close_room(room.room_id, room.admin_token)
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(
            f"relay {label:<6} round trip (2 hops, 256 B): median {statistics.median(samples):6.3f}"
            f" ms, p99 {p99:6.3f} ms ({len(samples)} rounds)"
        )
        print(
            f"relay {label:<6} throughput (256 B broadcast, window {WINDOW}):"
            f" {count / seconds:8.0f} msg/s ({count} in {seconds:.2f} s)"
        )
    finally:
        process.terminate()
        await process.wait()


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def _delete_redis_keys(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match=f"{prefix}*"))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


async def _run() -> None:
    await _measure("memory")
    if not _redis_reachable():
        print("relay redis: skipped (Redis not reachable on 127.0.0.1:6379)")
        return
    prefix = f"shardkeep-bench:{uuid.uuid4().hex}:"
    try:
        await _measure("redis", "--backend", REDIS_URL, "--redis-prefix", prefix)
    finally:
        _delete_redis_keys(prefix)


def main() -> None:
    """Measure relay round-trip latency and throughput on 127.0.0.1."""
    eventloop.run(_run())


if __name__ == "__main__":
    main()
