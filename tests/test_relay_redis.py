"""The Redis backend: two relay servers over one Redis serve the same rooms.

Needs Redis on 127.0.0.1:6379 (the ``redis_url`` fixture fails in CI and
skips elsewhere when it is down). Each test uses its own key prefix and
deletes its keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis
import redis.asyncio as aioredis

from relay.budget import Quota
from relay.client import RelayClient
from relay.errors import (
    BackendUnavailableError,
    QuotaExceededError,
    RoomNotFoundError,
    SequenceError,
)
from relay.redis_backend import RedisBackend
from relay.rooms import RelayConfig, RoomId, RoomLimits, RoomSpec, new_room
from relay.service import wall_clock_ms
from shardkeep.v1 import envelope_pb2, relay_pb2
from tests.relay_harness import delete_keys, relay, run, unique_prefix

pytestmark = pytest.mark.services


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = unique_prefix()
    yield prefix
    delete_keys(redis_url, prefix)


@asynccontextmanager
async def two_relays(url: str, prefix: str) -> AsyncIterator[tuple[RelayClient, RelayClient]]:
    """Two relay servers, each with its own Redis connection pool."""
    async with (
        relay(RedisBackend.from_url(url, prefix=prefix)) as one,
        relay(RedisBackend.from_url(url, prefix=prefix)) as two,
    ):
        yield one, two


def test_parties_on_different_relays_exchange_in_order(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        async with two_relays(redis_url, redis_prefix) as (relay1, relay2):
            room = await relay1.create_room(["a", "b", "c"])
            t = room.join_tokens
            async with (
                relay1.join(room.room_id, "a", t["a"]) as a,
                relay2.join(room.room_id, "b", t["b"]) as b,
            ):
                n = 20

                async def a_sends() -> None:
                    for i in range(n):
                        await a.send(f"a{i}".encode(), ceremony_id="dkg", round_=1)

                async def b_sends() -> None:
                    for i in range(n):
                        await b.send(f"b{i}".encode(), ceremony_id="dkg", round_=1, recipient="a")

                await asyncio.gather(a_sends(), b_sends())
                to_b = [await b.receive() for _ in range(n)]
                to_a = [await a.receive() for _ in range(n)]
                assert [d.envelope.payload for d in to_b] == [f"a{i}".encode() for i in range(n)]
                assert [d.envelope.seq for d in to_b] == list(range(1, n + 1))
                assert [d.envelope.payload for d in to_a] == [f"b{i}".encode() for i in range(n)]
                assert {d.envelope.sender for d in to_a} == {"b"}
                positions = [d.position for d in to_a]
                assert positions == sorted(positions)

                # A late joiner on relay 2 gets the backlog written via relay 1.
                async with relay2.join(room.room_id, "c", t["c"]) as c:
                    backlog = [await c.receive() for _ in range(n)]
                    assert [d.envelope.payload for d in backlog] == [
                        f"a{i}".encode() for i in range(n)
                    ]
                    report = await relay2.await_round(
                        room.room_id, t["c"], ceremony_id="dkg", round_=1, timeout_s=0
                    )
                    assert list(report.missing) == ["c"]
                    # Closing through relay 1 ends the streams on relay 2.
                    await relay1.close_room(room.room_id, room.admin_token)
                    assert [d async for d in c] == []
                    assert c.ended == relay_pb2.ROOM_END_REASON_CLOSED
                assert [d async for d in b] == []
                assert b.ended == relay_pb2.ROOM_END_REASON_CLOSED

            status = await relay2.get_room(room.room_id, room.admin_token)
            assert [(p.joined, p.messages_delivered) for p in status.parties] == [
                (True, n),
                (True, n),
                (True, 0),
            ]
            assert status.state == relay_pb2.ROOM_STATE_CLOSED

    run(body)


def test_sequence_is_enforced_across_relays(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        async with two_relays(redis_url, redis_prefix) as (relay1, relay2):
            room = await relay1.create_room(["a", "b"])
            t = room.join_tokens
            async with relay1.join(room.room_id, "a", t["a"]) as a:
                for _ in range(3):
                    await a.send(b"x", ceremony_id="c", round_=1)
            # The party fails over to relay 2 and resumes where it was.
            async with relay2.join(room.room_id, "a", t["a"]) as a:
                assert a.accepted.next_seq == 4
                await a.send(b"y", ceremony_id="c", round_=1)
            async with relay1.join(room.room_id, "a", t["a"]) as a:
                with pytest.raises(SequenceError):
                    await a.send_envelope(envelope_pb2.Envelope(seq=4))

    run(body)


def test_keys_expire_and_stay_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        backend = RedisBackend.from_url(redis_url, prefix=redis_prefix, retention_ms=5_000)
        sync = redis.Redis.from_url(redis_url)
        try:
            async with relay(backend) as client:
                room = await client.create_room(["a", "b"], ttl_ms=60_000, max_messages=5)
                async with client.join(room.room_id, "a", room.join_tokens["a"]) as a:
                    for _ in range(5):
                        await a.send(b"x", ceremony_id="c", round_=1)
                meta = f"{redis_prefix}room:{{{room.room_id}}}"
                budget = [f"{redis_prefix}{{budget}}:{k}" for k in ("exp", "res", "use")]
                spent = f"{redis_prefix}{{spent:test}}"  # the CreateRoom credential's nonce
                keys = sorted(k.decode() for k in sync.scan_iter(match=f"{redis_prefix}*"))
                assert keys == sorted([meta, f"{meta}:log", f"{meta}:rounds", spent, *budget])
                # Kept until the credential lapses: two 60 s windows after its issue.
                assert 100_000 < sync.pttl(spent) <= 120_000
                for key in (meta, f"{meta}:log", f"{meta}:rounds"):
                    # TTL = room TTL + retention, give or take the test's runtime.
                    assert 60_000 < sync.pttl(key) <= 65_000, key
                assert sync.xlen(f"{meta}:log") == 5
                # Only token digests are stored.
                stored = sync.hgetall(meta)
                for token in [room.admin_token, *room.join_tokens.values()]:
                    assert all(token.encode() not in v for v in stored.values())
                await client.close_room(room.room_id, room.admin_token)
                # Closed: the log is down to the close marker, the rounds are
                # gone and the tombstone goes after the retention.
                assert sync.xlen(f"{meta}:log") == 1
                assert not sync.exists(f"{meta}:rounds")
                for key in (meta, f"{meta}:log"):
                    assert 0 < sync.pttl(key) <= 5_000, key
                assert sync.hget(budget[2], "rooms") == b"0"
        finally:
            sync.close()

    run(body)


def test_blocking_reads_stay_inside_the_socket_timeout(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        # redis-py applies socket_timeout to XREAD BLOCK replies; the backend
        # must block for less than that, not fail with UNAVAILABLE.
        client = aioredis.Redis.from_url(redis_url, socket_timeout=0.4)
        backend = RedisBackend(client, prefix=redis_prefix)
        now = wall_clock_ms()
        spec = new_room(
            room_id="quiet-room", participants=["a", "b"], ttl_ms=60_000,
            limits=RoomLimits(0, 0, 0), config=RelayConfig(), now_ms=now,
        ).spec  # fmt: skip
        budget = Quota(max_rooms=10, max_bytes=1 << 30)
        try:
            await backend.create_room(spec, now, quota=budget, budget=budget)
            result = await backend.read(RoomId("quiet-room"), 0, 10, max_wait_s=1.0)
            assert result.entries == () and not result.closed
            # A room that is not there is reported, not waited on until its TTL.
            with pytest.raises(RoomNotFoundError):
                await backend.read(RoomId("no-such-room"), 0, 10, max_wait_s=0.1)
        finally:
            await backend.aclose()

    run(body)


def test_unreachable_redis_is_unavailable() -> None:
    async def body() -> None:
        # Port 1 on loopback: nothing listens there.
        backend = RedisBackend.from_url("redis://127.0.0.1:1/0", prefix=unique_prefix())
        with pytest.raises(BackendUnavailableError):
            await backend.snapshot(RoomId("any"))
        async with relay(backend) as client:  # UNAVAILABLE through gRPC too
            with pytest.raises(BackendUnavailableError):
                await client.create_room(["a", "b"])

    run(body)


class RelayDied(Exception):
    """Stands for a relay process dying at this point (nothing after it runs)."""


async def dies(*args: object, **kwargs: object) -> None:
    raise RelayDied


def room_spec(room_id: str, now: int, ttl_ms: int = 3_600_000) -> RoomSpec:
    return new_room(
        room_id=room_id, participants=["a", "b"], ttl_ms=ttl_ms,
        limits=RoomLimits(0, 0, 1 << 20), config=RelayConfig(), now_ms=now, owner="test",
    ).spec  # fmt: skip


ONE_ROOM = Quota(max_rooms=1, max_bytes=1 << 30)
LEASE_MS = 2_000


def test_relay_crash_between_reserve_and_create_leaks_no_reservation(
    redis_url: str, redis_prefix: str
) -> None:
    """A relay dies after reserving a room's slot and bytes but before writing the
    room: the reservation used to stay until the room's expiry (up to 24 h), so a
    few crashes could lock a coordinator out. Now it lapses with its lease."""

    async def body() -> None:
        dying = RedisBackend.from_url(redis_url, prefix=redis_prefix, reservation_lease_ms=LEASE_MS)
        survivor = RedisBackend.from_url(redis_url, prefix=redis_prefix)
        now = wall_clock_ms()
        try:
            dying._create = dies  # type: ignore[method-assign]
            with pytest.raises(RelayDied):
                await dying.create_room(
                    room_spec("doomed", now), now, quota=ONE_ROOM, budget=ONE_ROOM
                )
            assert (await survivor.usage(now)).rooms == 1  # held under the lease
            with pytest.raises(QuotaExceededError):
                await survivor.create_room(
                    room_spec("next", now), now, quota=ONE_ROOM, budget=ONE_ROOM
                )
            later = now + LEASE_MS
            usage = await survivor.usage(later)
            assert (usage.rooms, usage.reserved_bytes) == (0, 0)
            await survivor.create_room(
                room_spec("next", later), later, quota=ONE_ROOM, budget=ONE_ROOM
            )
            with pytest.raises(RoomNotFoundError):
                await survivor.snapshot(RoomId("doomed"))
        finally:
            await dying.aclose()
            await survivor.aclose()

    run(body)


def test_relay_crash_between_create_and_confirm_closes_the_unconfirmed_room(
    redis_url: str, redis_prefix: str
) -> None:
    """A relay dies after writing the room, before confirming its reservation until
    the room's expiry: the lease lapses, the next sweep returns the reservation and
    closes the room (never handed to anyone), so no room lives unreserved."""

    async def body() -> None:
        dying = RedisBackend.from_url(redis_url, prefix=redis_prefix, reservation_lease_ms=LEASE_MS)
        survivor = RedisBackend.from_url(redis_url, prefix=redis_prefix)
        now = wall_clock_ms()
        try:
            dying._reschedule = dies  # type: ignore[method-assign]
            with pytest.raises(RelayDied):
                await dying.create_room(
                    room_spec("orphan", now), now, quota=ONE_ROOM, budget=ONE_ROOM
                )
            assert not (await survivor.snapshot(RoomId("orphan"))).closed
            usage = await survivor.usage(now + LEASE_MS)
            assert (usage.rooms, usage.reserved_bytes) == (0, 0)
            assert (await survivor.snapshot(RoomId("orphan"))).closed
        finally:
            await dying.aclose()
            await survivor.aclose()

    run(body)


@pytest.mark.parametrize("dies_at", ["_close", "_release"])
def test_relay_crash_while_closing_a_room_leaks_no_reservation(
    redis_url: str, redis_prefix: str, dies_at: str
) -> None:
    """A relay dies halfway through CloseRoom (before closing the room, or after
    closing it but before returning its reservation): the reservation was made to
    lapse first, so the next sweep on any relay returns it at once and the room
    ends closed; it used to stay reserved until the room's expiry."""

    async def body() -> None:
        dying = RedisBackend.from_url(redis_url, prefix=redis_prefix)
        survivor = RedisBackend.from_url(redis_url, prefix=redis_prefix)
        now = wall_clock_ms()
        try:
            await dying.create_room(room_spec("room", now), now, quota=ONE_ROOM, budget=ONE_ROOM)
            setattr(dying, dies_at, dies)
            with pytest.raises(RelayDied):
                await dying.close_room(RoomId("room"), now)
            usage = await survivor.usage(now)
            assert (usage.rooms, usage.reserved_bytes) == (0, 0)
            assert (await survivor.snapshot(RoomId("room"))).closed
            await survivor.create_room(room_spec("next", now), now, quota=ONE_ROOM, budget=ONE_ROOM)
        finally:
            await dying.aclose()
            await survivor.aclose()

    run(body)


def test_stalled_create_whose_lease_lapsed_is_refused_and_leaves_no_room(
    redis_url: str, redis_prefix: str
) -> None:
    """A relay stalls between reserving and writing a room for longer than the
    lease, and another relay sweeps the reservation meanwhile: the late room is
    deleted and the create fails UNAVAILABLE, instead of a room held unreserved."""

    async def body() -> None:
        slow = RedisBackend.from_url(redis_url, prefix=redis_prefix, reservation_lease_ms=LEASE_MS)
        sweeper = RedisBackend.from_url(redis_url, prefix=redis_prefix)
        now = wall_clock_ms()
        create = slow._create

        async def stalled(*args: object, **kwargs: object) -> object:
            await sweeper.usage(now + LEASE_MS)  # the lease lapses meanwhile
            return await create(*args, **kwargs)

        try:
            slow._create = stalled  # type: ignore[method-assign]
            with pytest.raises(BackendUnavailableError, match="reservation lapsed"):
                await slow.create_room(room_spec("late", now), now, quota=ONE_ROOM, budget=ONE_ROOM)
            with pytest.raises(RoomNotFoundError):
                await sweeper.snapshot(RoomId("late"))
            assert (await sweeper.usage(now)).rooms == 0
        finally:
            await slow.aclose()
            await sweeper.aclose()

    run(body)


def test_concurrent_creates_and_closes_on_two_relays_leave_nothing_reserved(
    redis_url: str, redis_prefix: str
) -> None:
    """Leases, lapses and sweeps race with each other across relays: after 200
    rooms made and closed concurrently through two relays, nothing is held."""

    async def body() -> None:
        async with two_relays(redis_url, redis_prefix) as (relay1, relay2):

            async def cycle(i: int) -> None:
                maker, closer = (relay1, relay2) if i % 2 else (relay2, relay1)
                room = await maker.create_room(["a", "b"], max_total_bytes=1 << 20)
                await closer.close_room(room.room_id, room.admin_token)

            await asyncio.gather(*(cycle(i) for i in range(200)))
            backend = RedisBackend.from_url(redis_url, prefix=redis_prefix)
            try:
                usage = await backend.usage(wall_clock_ms())
                assert (usage.rooms, usage.reserved_bytes) == (0, 0)
            finally:
                await backend.aclose()

    run(body)
