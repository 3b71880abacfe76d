"""Relay admission and budget under attack, end to end over gRPC, on both backends.

The attacks: anyone creating rooms without a credential until the room table
is full (which locked out every ceremony), one coordinator taking every room,
closed rooms holding their slot and their bytes until TTL + 10 min, rooms
holding payload bytes without a global bound, and a captured credential
replayed to another relay, after a restart, or by a coordinator filling the
replay record everyone shared.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import grpc
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.admission import CREDENTIAL_METADATA_KEY, create_room_credential
from relay.backend import Backend
from relay.client import RelayClient
from relay.errors import LimitExceededError, QuotaExceededError, UnauthenticatedError
from relay.memory import MemoryBackend
from relay.metrics import RelayMetrics
from relay.redis_backend import RedisBackend
from relay.service import wall_clock_ms
from shardkeep.v1 import relay_pb2, relay_pb2_grpc
from tests.relay_harness import COORDINATOR, delete_keys, policy_for, relay, run, unique_prefix

MakeBackend = Callable[..., Backend]
"""Makes a backend; keyword arguments go to its constructor."""
REDIS: dict[str, str] = {}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
def make_backend(request: pytest.FixtureRequest) -> Iterator[MakeBackend]:
    if request.param == "memory":
        yield MemoryBackend
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = unique_prefix()
    REDIS.update(url=url, prefix=prefix)

    def make(**options: int) -> Backend:
        return RedisBackend.from_url(url, prefix=prefix, **options)

    yield make
    REDIS.clear()
    delete_keys(url, prefix)


async def exchange(client: RelayClient, room_id: str, tokens: dict[str, str]) -> None:
    """Both parties join and one envelope goes from a to b: the room serves."""
    async with (
        client.join(room_id, "a", tokens["a"]) as a,
        client.join(room_id, "b", tokens["b"]) as b,
    ):
        await a.send(b"hello", ceremony_id="c", round_=1)
        assert (await b.receive()).envelope.payload == b"hello"


async def raw_create(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    stub = relay_pb2_grpc.RelayStub(channel)  # type: ignore[no-untyped-call]
    request = relay_pb2.CreateRoomRequest(participants=["a", "b"])
    try:
        await stub.CreateRoom(request, metadata=metadata)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_unauthenticated_create_room_flood_refused(make_backend: MakeBackend) -> None:
    """The flood: thousands of CreateRoom calls without a credential filled the
    room table and locked every ceremony out. Now each is UNAUTHENTICATED, holds
    nothing, and the coordinator's ceremonies go on; forged, replayed, stale and
    re-bound credentials and unpinned keys are refused the same way."""

    async def body() -> None:
        backend = make_backend()
        policy = policy_for({"test": COORDINATOR}, max_rooms=20)
        metrics = RelayMetrics()
        async with relay(backend, policy=policy, metrics=metrics) as client:
            channel = client._channel
            for _ in range(300):
                assert await raw_create(channel, ()) == grpc.StatusCode.UNAUTHENTICATED
            request = relay_pb2.CreateRoomRequest(participants=["a", "b"])
            body_bytes = request.SerializeToString(deterministic=True)
            stranger = Ed25519PrivateKey.generate()
            now = wall_clock_ms()
            good = create_room_credential(COORDINATOR, body_bytes, now)
            raw = bytearray(base64.urlsafe_b64decode(good))
            raw[-1] ^= 1
            forged = base64.urlsafe_b64encode(bytes(raw)).decode()
            bad = [
                "not base64 !",
                "QUJD",  # too short
                create_room_credential(stranger, body_bytes, now),  # unpinned key
                create_room_credential(COORDINATOR, body_bytes, now - 3_600_000),  # stale
                create_room_credential(COORDINATOR, b"another request", now),  # re-bound
                forged,
            ]
            for credential in bad:
                code = await raw_create(channel, ((CREDENTIAL_METADATA_KEY, credential),))
                assert code == grpc.StatusCode.UNAUTHENTICATED, credential
            # A captured credential works once: its replay is refused.
            assert (
                await raw_create(channel, ((CREDENTIAL_METADATA_KEY, good),)) == grpc.StatusCode.OK
            )
            assert (
                await raw_create(channel, ((CREDENTIAL_METADATA_KEY, good),))
                == grpc.StatusCode.UNAUTHENTICATED
            )
            assert (await backend.usage(wall_clock_ms())).rooms == 1
            with pytest.raises(UnauthenticatedError):
                await RelayClient(client._channel).create_room(["a", "b"])
            room = await client.create_room(["a", "b"])
            await exchange(client, room.room_id, dict(room.join_tokens))
        # Counted by refusal, so an operator tells a flood from a replay.
        refused = metrics.credentials_refused
        counts = {r: refused.labels(r)._value.get() for r in ("missing", "invalid", "replayed")}
        assert counts == {"missing": 301, "invalid": len(bad), "replayed": 1}

    run(body)


def test_room_table_exhaustion_by_one_credential_leaves_others_served(
    make_backend: MakeBackend,
) -> None:
    """One coordinator (or a stolen key) creates rooms until it is refused: it
    hits its own quota (RESOURCE_EXHAUSTED naming it), never the table, so the
    other coordinator's ceremonies go on."""
    greedy, honest = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    async def body() -> None:
        policy = policy_for({"greedy": greedy, "honest": honest}, max_rooms=20, max_bytes=1 << 30)
        async with relay(make_backend(), policy=policy, coordinator=greedy) as greedy_client:
            honest_client = RelayClient(greedy_client._channel, coordinator=honest)
            made = 0
            with pytest.raises(
                QuotaExceededError, match="coordinator 'greedy' room quota 10"
            ) as info:
                for _ in range(50):
                    await greedy_client.create_room(["a", "b"], max_total_bytes=1 << 20)
                    made += 1
            assert made == 10
            assert isinstance(info.value, LimitExceededError)  # RESOURCE_EXHAUSTED
            # Bytes too: one room asking for the coordinator's whole byte share is refused.
            with pytest.raises(QuotaExceededError, match="coordinator 'honest' byte quota"):
                await honest_client.create_room(["a", "b"], max_total_bytes=1 << 30)
            for _ in range(10):
                room = await honest_client.create_room(["a", "b"], max_total_bytes=1 << 20)
            await exchange(honest_client, room.room_id, dict(room.join_tokens))
            with pytest.raises(QuotaExceededError, match="coordinator 'honest' room quota 10"):
                await honest_client.create_room(["a", "b"])

    run(body)


def test_closed_rooms_freed_immediately(make_backend: MakeBackend) -> None:
    """Rooms were kept until TTL + 10 min after CloseRoom, so sustained signing
    ran into the room limit within minutes. Now a close returns the room's slot
    and bytes at once: 60 ceremonies in a row fit a budget of 3 rooms."""

    async def body() -> None:
        backend = make_backend()
        policy = policy_for({"test": COORDINATOR}, max_rooms=3)
        async with relay(backend, policy=policy) as client:
            for _ in range(60):
                room = await client.create_room(["a", "b"], ttl_ms=24 * 3600 * 1000)
                await exchange(client, room.room_id, dict(room.join_tokens))
                await client.close_room(room.room_id, room.admin_token)
            usage = await backend.usage(wall_clock_ms())
            assert (usage.rooms, usage.reserved_bytes) == (0, 0)
            assert usage.stored_bytes in (0, -1)  # -1: Redis (checked below)
            if REDIS:
                r = redis.Redis.from_url(REDIS["url"])
                try:
                    logs = list(r.scan_iter(match=f"{REDIS['prefix']}room:*:log"))
                    assert logs and all(r.xlen(k) == 1 for k in logs)  # the close marker
                    assert not list(r.scan_iter(match=f"{REDIS['prefix']}room:*:rounds"))
                finally:
                    r.close()

    run(body)


def test_room_byte_budget_enforced_and_freed(make_backend: MakeBackend) -> None:
    """One room could take 1 GiB, and 400 MiB sent into a room stayed allocated
    after its close. Now every room reserves its byte limit within the global
    byte budget, cannot hold more than it, and gives it back on close."""
    room_bytes = 256 * 1024

    async def body() -> None:
        backend = make_backend()
        policy = policy_for({"test": COORDINATOR}, max_bytes=3 * room_bytes)
        async with relay(backend, policy=policy) as client:
            rooms = [
                await client.create_room(["a", "b"], max_total_bytes=room_bytes) for _ in range(3)
            ]
            with pytest.raises(QuotaExceededError, match=r"byte quota|byte budget"):
                await client.create_room(["a", "b"], max_total_bytes=room_bytes)
            first = rooms[0]
            async with client.join(first.room_id, "a", first.join_tokens["a"]) as a:
                chunk = b"\x00" * (64 * 1024)
                for _ in range(4):
                    await a.send(chunk, ceremony_id="c", round_=1)
                with pytest.raises(LimitExceededError, match="room byte limit"):
                    await a.send(b"one byte too many", ceremony_id="c", round_=1)
            assert (await backend.usage(wall_clock_ms())).reserved_bytes == 3 * room_bytes
            if isinstance(backend, MemoryBackend):
                assert (await backend.usage(wall_clock_ms())).stored_bytes == 4 * len(chunk)
            await client.close_room(first.room_id, first.admin_token)
            usage = await backend.usage(wall_clock_ms())
            assert usage.reserved_bytes == 2 * room_bytes
            assert usage.stored_bytes in (0, -1)
            if REDIS:
                r = redis.Redis.from_url(REDIS["url"])
                try:
                    log = f"{REDIS['prefix']}room:{{{first.room_id}}}:log"
                    assert r.xlen(log) == 1
                    assert (r.memory_usage(log) or 0) < 16 * 1024  # 256 KiB were stored
                finally:
                    r.close()
            room = await client.create_room(["a", "b"], max_total_bytes=room_bytes)
            await exchange(client, room.room_id, dict(room.join_tokens))

    run(body)


def test_coordinator_filling_its_credential_record_leaves_others_admitted(
    make_backend: MakeBackend,
) -> None:
    """The replay record was one table for every coordinator: one that minted
    credentials fast enough filled it and locked every other coordinator out.
    Now each has its own: past its bound it alone is refused (RESOURCE_EXHAUSTED
    naming it, fail closed: never a replay let through) and the others go on."""
    greedy, honest = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    async def body() -> None:
        backend = make_backend(max_spent_credentials=3)
        policy = policy_for({"greedy": greedy, "honest": honest})
        metrics = RelayMetrics()
        async with relay(
            backend, policy=policy, coordinator=greedy, metrics=metrics
        ) as greedy_client:
            honest_client = RelayClient(greedy_client._channel, coordinator=honest)
            for _ in range(3):
                await greedy_client.create_room(["a", "b"])
            with pytest.raises(QuotaExceededError, match="coordinator 'greedy' credential record"):
                await greedy_client.create_room(["a", "b"])
            assert metrics.credentials_refused.labels("record_full")._value.get() == 1
            room = await honest_client.create_room(["a", "b"])
            await exchange(honest_client, room.room_id, dict(room.join_tokens))
            # Once the spent credentials lapse (two windows) the record has room again.
            later = wall_clock_ms() + 120_001
            await backend.spend_credential("greedy", b"n" * 16, later + 120_000, later)

    run(body)


@pytest.mark.services
def test_credential_replayed_to_another_relay_or_after_a_restart_is_refused(
    redis_url: str,
) -> None:
    """A captured CreateRoom credential was spent only in the relay process that
    took it: replayed to another relay of the same Redis, or to the same relay
    after a restart, it made a second room within its minute. Now it is spent in
    Redis, with the rooms."""
    prefix = unique_prefix()

    async def body() -> None:
        request = relay_pb2.CreateRoomRequest(participants=["a", "b"])
        credential = create_room_credential(
            COORDINATOR, request.SerializeToString(deterministic=True), wall_clock_ms()
        )
        metadata = ((CREDENTIAL_METADATA_KEY, credential),)
        async with (
            relay(RedisBackend.from_url(redis_url, prefix=prefix)) as first,
            relay(RedisBackend.from_url(redis_url, prefix=prefix)) as second,
        ):
            assert await raw_create(first._channel, metadata) == grpc.StatusCode.OK
            assert await raw_create(second._channel, metadata) == grpc.StatusCode.UNAUTHENTICATED
        backend = RedisBackend.from_url(redis_url, prefix=prefix)
        async with relay(backend) as restarted:
            code = await raw_create(restarted._channel, metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert (await backend.usage(wall_clock_ms())).rooms == 1

    try:
        run(body)
    finally:
        delete_keys(redis_url, prefix)
