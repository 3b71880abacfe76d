"""Relay.Session end to end over gRPC on 127.0.0.1:0, against both backends:
rooms created on first join from a coordinator-signed spec, every room of a
process on one stream, no acknowledgements, and the attacks the relay must
still refuse (docs/transport.md, docs/threat-model.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.backend import Backend
from relay.client import RelayClient
from relay.errors import (
    DeadlineExceededError,
    LimitExceededError,
    PermissionDeniedError,
    RoomClosedError,
    RoomExistsError,
    RoomNotFoundError,
    UnauthenticatedError,
)
from relay.memory import MemoryBackend
from relay.redis_backend import RedisBackend
from relay.rooms import AppendResult, Message, RelayConfig, RoomId
from relay.service import create_server
from relay.session_client import SessionParty
from shardkeep.framing import unbatched
from shardkeep.v1 import envelope_pb2, relay_pb2, relay_pb2_grpc
from tests.relay_harness import COORDINATOR, delete_keys, harness_admitter, run, unique_prefix

MakeBackend = Callable[..., Backend]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
def make_backend(request: pytest.FixtureRequest) -> Iterator[MakeBackend]:
    if request.param == "memory":
        yield MemoryBackend
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = unique_prefix()
    yield lambda **kw: RedisBackend.from_url(url, prefix=prefix, **kw)
    delete_keys(url, prefix)


@asynccontextmanager
async def relay_target(backend: Backend, config: RelayConfig | None = None) -> AsyncIterator[str]:
    """A relay over ``backend`` pinning the harness coordinator; yields its address."""
    server, port = await create_server(
        "127.0.0.1:0", backend, admitter=harness_admitter(), config=config
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await backend.aclose()


def process(target: str, coordinator: Ed25519PrivateKey | None = None) -> RelayClient:
    """One process's relay client on the session transport (its own stream)."""
    return RelayClient(grpc.aio.insecure_channel(target), coordinator=coordinator, session=True)


def session(party: object) -> SessionParty:
    assert isinstance(party, SessionParty)
    return party


async def take(party: SessionParty, n: int) -> list[tuple[str, int, bytes]]:
    out = []
    for _ in range(n):
        d = await party.receive()
        out.append((d.envelope.sender, d.envelope.seq, d.envelope.payload))
    return out


def test_rooms_are_created_on_first_join_and_carry_envelopes_without_acks(
    make_backend: MakeBackend,
) -> None:
    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator, host = process(target, COORDINATOR), process(target)
            room = await coordinator.create_room(["a", "b"], max_total_bytes=1 << 20)
            assert room.spec is not None
            t = room.join_tokens
            async with (
                session(coordinator.join(room.room_id, "a", t["a"])) as a,
                session(host.join(room.room_id, "b", t["b"], room=room.spec)) as b,
            ):
                assert list(a.accepted.participants) == ["a", "b"]
                for i in range(3):  # one step's envelopes: one frame
                    await a.send(b"a%d" % i, ceremony_id="c", round_=1)
                await b.send(b"b0", ceremony_id="c", round_=1, recipient="a")
                assert await a.flush() >= 3  # the log position of its third envelope
                assert await take(b, 3) == [("a", 1, b"a0"), ("a", 2, b"a1"), ("a", 3, b"a2")]
                assert await take(a, 1) == [("b", 1, b"b0")]
                status = await coordinator.get_room(room.room_id, room.admin_token)
                assert status.messages == 4
                await coordinator.close_room(room.room_id, room.admin_token)
                assert [d async for d in b] == []  # the room ended: iteration stops
                assert b.ended == relay_pb2.ROOM_END_REASON_CLOSED
            await coordinator.aclose()
            await host.aclose()

    run(body)


def test_a_unary_join_creates_the_room_from_its_spec(make_backend: MakeBackend) -> None:
    """The Join call takes the same spec, so processes on either transport share rooms."""

    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator = process(target, COORDINATOR)
            unary = RelayClient(grpc.aio.insecure_channel(target))
            room = await coordinator.create_room(["a", "b"])
            t = room.join_tokens
            async with (
                unary.join(room.room_id, "b", t["b"], room=room.spec) as b,
                session(coordinator.join(room.room_id, "a", t["a"])) as a,
            ):
                assert await b.send(b"x", ceremony_id="c", round_=1) > 0
                assert await take(a, 1) == [("b", 1, b"x")]
            await coordinator.aclose()
            await unary.aclose()

    run(body)


def test_session_channel_with_a_wrong_token_gets_nothing(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator, attacker = process(target, COORDINATOR), process(target)
            room = await coordinator.create_room(["a", "b"])
            async with session(coordinator.join(room.room_id, "a", room.join_tokens["a"])) as a:
                await a.send(b"secret", ceremony_id="c", round_=1)
                await a.flush()
                for presented in (room.spec, None):
                    spy = session(attacker.join(room.room_id, "b", "guessed", room=presented))
                    with pytest.raises(PermissionDeniedError):
                        await spy.open()
                    with pytest.raises(PermissionDeniedError):
                        await spy.receive()  # nothing was delivered before the refusal
                # The attacker's stream goes on, and the room is untouched.
                b = session(attacker.join(room.room_id, "b", room.join_tokens["b"]))
                async with b:
                    assert await take(b, 1) == [("a", 1, b"secret")]
            await coordinator.aclose()
            await attacker.aclose()

    run(body)


def test_second_room_spec_with_the_same_id_and_other_participants_is_refused(
    make_backend: MakeBackend,
) -> None:
    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator = process(target, COORDINATOR)
            room = await coordinator.create_room(["a", "b"])
            async with session(coordinator.join(room.room_id, "a", room.join_tokens["a"])) as a:
                # The same pinned coordinator key signs a second spec under the
                # same id: other participants, its own tokens.
                other = process(target, COORDINATOR)
                rival = await other.create_room(["a", "mallory"], room_id=room.room_id)
                for party in ("mallory", "a"):
                    with pytest.raises(RoomExistsError):
                        await session(
                            other.join(room.room_id, party, rival.join_tokens[party])
                        ).open()
                await a.send(b"still mine", ceremony_id="c", round_=1)
                async with session(coordinator.join(room.room_id, "b", room.join_tokens["b"])) as b:
                    assert await take(b, 1) == [("a", 1, b"still mine")]
                await other.aclose()
            await coordinator.aclose()

    run(body)


def test_replayed_room_spec_credential_is_refused(make_backend: MakeBackend) -> None:
    """A captured spec replayed after its room is gone (tombstone collected)
    would recreate the room: the spent-credential record refuses it."""

    async def body() -> None:
        config = RelayConfig(room_race_s=0.2)
        backend = make_backend(retention_ms=1)
        async with relay_target(backend, config) as target:
            coordinator = process(target, COORDINATOR)
            room = await coordinator.create_room(["a", "b"])
            token = room.join_tokens["a"]
            async with session(coordinator.join(room.room_id, "a", token)):
                pass
            await coordinator.close_room(room.room_id, room.admin_token)
            await asyncio.sleep(0.05)  # past the tombstone's retention
            await backend.usage(time.time_ns() // 10**6)  # other traffic would collect it
            with pytest.raises(RoomNotFoundError):
                await coordinator.get_room(room.room_id, room.admin_token)
            replayer = process(target)
            with pytest.raises(UnauthenticatedError, match="replayed"):
                await session(replayer.join(room.room_id, "a", token, room=room.spec)).open()
            await replayer.aclose()
            await coordinator.aclose()

    run(body)


def test_flood_of_channels_on_one_stream_hits_the_limit_and_others_go_on(
    make_backend: MakeBackend,
) -> None:
    async def body() -> None:
        config = RelayConfig(max_session_channels=4)
        async with relay_target(make_backend(), config) as target:
            coordinator, flooder = process(target, COORDINATOR), process(target)
            rooms = [await coordinator.create_room(["a", "b"]) for _ in range(5)]
            parties = [
                session(flooder.join(r.room_id, "b", r.join_tokens["b"], room=r.spec))
                for r in rooms
            ]
            for party in parties[:4]:
                await party.open()
            with pytest.raises(LimitExceededError, match="channels"):
                await parties[4].open()
            # The channels within the limit still carry their rooms.
            first = rooms[0]
            async with session(coordinator.join(first.room_id, "a", first.join_tokens["a"])) as a:
                await a.send(b"hi", ceremony_id="c", round_=1)
                assert await take(parties[0], 1) == [("a", 1, b"hi")]
            # A channel that leaves frees its place.
            await parties[3].aclose()
            last = rooms[4]
            late = session(flooder.join(last.room_id, "b", last.join_tokens["b"], room=last.spec))
            for _ in range(50):  # the relay sees the close frame first, then the join
                try:
                    await late.open()
                    break
                except LimitExceededError:
                    await asyncio.sleep(0.05)
                    late = session(
                        flooder.join(last.room_id, "b", last.join_tokens["b"], room=last.spec)
                    )
            assert late.accepted.party == "b"
            for party in (*parties, late):
                await party.aclose()
            await coordinator.aclose()
            await flooder.aclose()

    run(body)


class _GatedBackend(MemoryBackend):
    """A memory backend whose appends wait for a gate (a slow room store)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def append(
        self, room_id: RoomId, messages: Sequence[Message], now_ms: int
    ) -> AppendResult:
        await self.gate.wait()
        return await super().append(room_id, messages, now_ms)


def test_channel_overrunning_its_inbox_is_closed_and_the_stream_lives() -> None:
    async def body() -> None:
        backend = _GatedBackend()
        config = RelayConfig(session_inbox_frames=2)
        async with relay_target(backend, config) as target:
            coordinator, sender = process(target, COORDINATOR), process(target)
            flooded = await coordinator.create_room(["a", "b"])
            calm = await coordinator.create_room(["a", "b"])
            t = flooded.join_tokens
            a = session(sender.join(flooded.room_id, "a", t["a"], room=flooded.spec))
            await a.open()
            with pytest.raises(LimitExceededError, match="frames waiting"):
                for i in range(100):  # separate frames while the store is stuck
                    await a.send(b"%d" % i, ceremony_id="c", round_=1)
                    await asyncio.sleep(0.01)
            with pytest.raises(LimitExceededError, match="frames waiting"):
                await a.receive()
            backend.gate.set()
            # Another channel on the same stream goes on.
            async with (
                session(sender.join(calm.room_id, "a", calm.join_tokens["a"], room=calm.spec)) as x,
                session(coordinator.join(calm.room_id, "b", calm.join_tokens["b"])) as y,
            ):
                await x.send(b"ok", ceremony_id="c", round_=1)
                assert await take(y, 1) == [("a", 1, b"ok")]
            await coordinator.aclose()
            await sender.aclose()

    run(body)


def test_refused_envelope_gets_a_non_delivery_report_and_the_stream_lives(
    make_backend: MakeBackend,
) -> None:
    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator = process(target, COORDINATOR)
            room = await coordinator.create_room(["a", "b"], max_message_bytes=16)
            t = room.join_tokens
            async with (
                session(coordinator.join(room.room_id, "a", t["a"])) as a,
                session(coordinator.join(room.room_id, "b", t["b"])) as b,
            ):
                await a.send(b"fits", ceremony_id="c", round_=1)
                await a.send(b"x" * 17, ceremony_id="c", round_=1)
                with pytest.raises(LimitExceededError, match="envelope 2 not delivered"):
                    await a.flush()
                with pytest.raises(LimitExceededError):
                    await a.send(b"later", ceremony_id="c", round_=1)
                # The stored prefix was delivered; b's channel goes on.
                assert await take(b, 1) == [("a", 1, b"fits")]
                await b.send(b"back", ceremony_id="c", round_=1)
                assert await b.flush() > 0
            await coordinator.aclose()

    run(body)


def test_a_channel_ends_at_its_deadline(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay_target(make_backend()) as target:
            coordinator = process(target, COORDINATOR)
            room = await coordinator.create_room(["a", "b"])
            t = room.join_tokens
            a = session(coordinator.join(room.room_id, "a", t["a"], deadline_s=0.3))
            async with a, session(coordinator.join(room.room_id, "b", t["b"])) as b:
                with pytest.raises(DeadlineExceededError):
                    await a.receive()
                await b.send(b"b goes on", ceremony_id="c", round_=1)
                assert await b.flush() > 0
            await coordinator.close_room(room.room_id, room.admin_token)
            with pytest.raises(RoomClosedError):
                await session(coordinator.join(room.room_id, "b", t["b"])).open()
            await coordinator.aclose()

    run(body)


def test_envelopes_sent_before_a_channel_leaves_are_stored() -> None:
    """A party that sends its last envelope and leaves at once (no acknowledgement
    to wait for) must not lose it: the close waits behind the envelopes."""

    async def body() -> None:
        backend = _GatedBackend()
        async with relay_target(backend) as target:
            coordinator, sender = process(target, COORDINATOR), process(target)
            room = await coordinator.create_room(["a", "b"])
            t = room.join_tokens
            async with session(coordinator.join(room.room_id, "b", t["b"])) as b:
                a = session(sender.join(room.room_id, "a", t["a"], room=room.spec))
                await a.open()
                await a.send(b"last words", ceremony_id="c", round_=1)
                await a.aclose()  # the store is still stuck
                await asyncio.sleep(0.05)
                backend.gate.set()
                assert await take(b, 1) == [("a", 1, b"last words")]
            await coordinator.aclose()
            await sender.aclose()

    run(body)


def _envelopes(*payloads: bytes, first_seq: int, flush: int = 0) -> relay_pb2.EnvelopeList:
    return relay_pb2.EnvelopeList(
        envelopes=[
            envelope_pb2.Envelope(ceremony_id="c", round=1, seq=first_seq + i, payload=p)
            for i, p in enumerate(payloads)
        ],
        flush=flush,
    )


def test_a_batch_is_handled_in_order_and_a_flush_rides_on_its_envelopes() -> None:
    """One message carrying a channel's join, its envelopes in two lists and a flush
    on the last list: the relay joins, stores the envelopes in order and answers the
    flush once they are stored (its answers may come batched too)."""

    async def body() -> None:
        async with relay_target(MemoryBackend()) as target:
            coordinator = process(target, COORDINATOR)
            room = await coordinator.create_room(["a", "b"])
            t = room.join_tokens
            hello = relay_pb2.JoinHello(room_id=room.room_id, party="a", join_token=t["a"])
            hello.room.CopyFrom(room.spec)
            R = relay_pb2.RelaySessionRequest
            batch = relay_pb2.RelaySessionRequests(
                frames=[
                    R(channel=1, join=relay_pb2.ChannelJoin(hello=hello)),
                    R(channel=1, envelopes=_envelopes(b"one", first_seq=1)),
                    R(channel=1, envelopes=_envelopes(b"two", b"three", first_seq=2, flush=9)),
                ]
            )
            async with grpc.aio.insecure_channel(target) as channel:
                call = relay_pb2_grpc.RelayStub(channel).Session()
                await call.write(R(batch=batch))
                answers: list[relay_pb2.RelaySessionResponse] = []
                while not any(a.HasField("flushed") for a in answers):
                    answers += unbatched(await call.read())
                assert [a.WhichOneof("frame") for a in answers] == ["accepted", "flushed"]
                assert answers[1].flushed.flush == 9 and answers[1].flushed.position >= 3
                async with session(coordinator.join(room.room_id, "b", t["b"])) as b:
                    assert await take(b, 3) == [
                        ("a", 1, b"one"),
                        ("a", 2, b"two"),
                        ("a", 3, b"three"),
                    ]
                call.cancel()
            await coordinator.aclose()

    run(body)


@pytest.mark.parametrize(
    ("batch", "fault"),
    [
        (relay_pb2.RelaySessionRequest(batch=relay_pb2.RelaySessionRequests()), "no frames"),
        (
            relay_pb2.RelaySessionRequest(
                batch=relay_pb2.RelaySessionRequests(
                    frames=[relay_pb2.RelaySessionRequest(batch=relay_pb2.RelaySessionRequests())]
                )
            ),
            "a batch inside a batch",
        ),
        (
            relay_pb2.RelaySessionRequest(
                channel=4,
                batch=relay_pb2.RelaySessionRequests(
                    frames=[relay_pb2.RelaySessionRequest(channel=4, flush=1)]
                ),
            ),
            "a batch names channel 4",
        ),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_fault(
    batch: relay_pb2.RelaySessionRequest, fault: str
) -> None:
    """Attack: a batch that breaks the framing rules ends the stream with
    INVALID_ARGUMENT naming the fault, as any frame that cannot be read does."""

    async def body() -> None:
        async with (
            relay_target(MemoryBackend()) as target,
            grpc.aio.insecure_channel(target) as channel,
        ):
            call = relay_pb2_grpc.RelayStub(channel).Session()
            await call.write(batch)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert fault in (refused.value.details() or "")

    run(body)
