"""The relay service end to end over gRPC on 127.0.0.1:0, against both backends.

Every test runs once with the in-memory backend and once with Redis (the Redis
run fails in CI and skips elsewhere when Redis is down), which also keeps the
Redis append script equal to ``rooms.check_append``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import Callable, Iterator

import grpc
import pytest
import structlog

from relay.backend import Backend
from relay.client import PartySession, RelayClient
from relay.errors import (
    BackendUnavailableError,
    LimitExceededError,
    MalformedRequestError,
    PermissionDeniedError,
    RoomClosedError,
    RoomExpiredError,
    RoomNotFoundError,
    SequenceError,
)
from relay.memory import MemoryBackend
from relay.redis_backend import RedisBackend
from relay.rooms import RelayConfig
from relay.service import create_server
from shardkeep import logs
from shardkeep.tls import open_channel
from shardkeep.v1 import envelope_pb2, relay_pb2
from tests.relay_harness import (
    COORDINATOR,
    delete_keys,
    harness_admitter,
    relay,
    run,
    unique_prefix,
)

MakeBackend = Callable[[], Backend]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
def make_backend(request: pytest.FixtureRequest) -> Iterator[MakeBackend]:
    if request.param == "memory":
        yield MemoryBackend
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = unique_prefix()
    yield lambda: RedisBackend.from_url(url, prefix=prefix)
    delete_keys(url, prefix)


async def drain(session: PartySession) -> list[relay_pb2.EnvelopeDelivery]:
    """Every delivery until the room ends."""
    return [d async for d in session]


async def take(session: PartySession, n: int) -> list[relay_pb2.EnvelopeDelivery]:
    return [await session.receive() for _ in range(n)]


def summary(deliveries: list[relay_pb2.EnvelopeDelivery]) -> list[tuple[str, str, int, bytes]]:
    return [
        (d.envelope.sender, d.envelope.recipient, d.envelope.seq, d.envelope.payload)
        for d in deliveries
    ]


def test_create_and_get_room(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["alice", "bob", "carol"], ttl_ms=60_000)
            assert sorted(room.join_tokens) == ["alice", "bob", "carol"]
            tokens = [*room.join_tokens.values(), room.admin_token]
            assert len(set(tokens)) == 4
            assert room.admin_token not in repr(room)
            assert all(t not in repr(room) for t in room.join_tokens.values())

            status = await client.get_room(room.room_id, room.join_tokens["bob"])
            assert status.state == relay_pb2.ROOM_STATE_OPEN
            assert [(p.party, p.joined, p.messages_delivered) for p in status.parties] == [
                ("alice", False, 0),
                ("bob", False, 0),
                ("carol", False, 0),
            ]
            assert status.expires_at_ms - status.created_at_ms == 60_000
            assert status.limits.max_messages == RelayConfig().default_limits.max_messages

            named = await client.create_room(["a", "b"], room_id="my-room.1")
            assert named.room_id == "my-room.1"
            with pytest.raises(PermissionDeniedError):
                await client.get_room(room.room_id, "not-a-token")
            with pytest.raises(RoomNotFoundError):
                await client.get_room("no-such-room", room.admin_token)

    run(body)


def test_broadcast_point_to_point_and_order(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b", "c"])
            t = room.join_tokens
            async with (
                client.join(room.room_id, "a", t["a"]) as a,
                client.join(room.room_id, "b", t["b"]) as b,
                client.join(room.room_id, "c", t["c"]) as c,
            ):
                assert a.accepted.next_seq == 1
                assert list(a.accepted.participants) == ["a", "b", "c"]
                positions = [
                    await a.send(b"bc-1", ceremony_id="dkg", round_=1),
                    await a.send(b"to-b", ceremony_id="dkg", round_=1, recipient="b"),
                    await a.send(b"bc-2", ceremony_id="dkg", round_=2),
                    await b.send(b"b-to-c", ceremony_id="dkg", round_=1, recipient="c"),
                ]
                assert positions == sorted(positions)
                assert len(set(positions)) == 4

                got_b = await take(b, 3)
                assert summary(got_b) == [
                    ("a", "", 1, b"bc-1"),
                    ("a", "b", 2, b"to-b"),
                    ("a", "", 3, b"bc-2"),
                ]
                # The relay stamps the room; positions come with the deliveries.
                assert {d.envelope.room_id for d in got_b} == {room.room_id}
                assert [d.position for d in got_b] == positions[:3]
                assert [d.envelope.round for d in got_b] == [1, 1, 2]

                got_c = await take(c, 3)
                assert summary(got_c) == [
                    ("a", "", 1, b"bc-1"),
                    ("a", "", 3, b"bc-2"),
                    ("b", "c", 1, b"b-to-c"),
                ]
                await client.close_room(room.room_id, room.admin_token)
                # Nobody gets their own envelopes or others' point-to-point ones.
                assert await drain(a) == []
                assert await drain(b) == []
                assert await drain(c) == []
            status = await client.get_room(room.room_id, room.admin_token)
            assert [(p.joined, p.messages_delivered) for p in status.parties] == [
                (True, 3),
                (True, 1),
                (True, 0),
            ]
            assert (status.messages, status.total_bytes) == (4, 4 + 4 + 4 + 6)

    run(body)


def test_late_joiner_gets_backlog_and_can_resume(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            t = room.join_tokens
            async with client.join(room.room_id, "a", t["a"]) as a:
                for i in range(5):
                    await a.send(f"m{i}".encode(), ceremony_id="sign", round_=1)
                async with client.join(room.room_id, "b", t["b"]) as b:
                    backlog = await take(b, 3)
                assert [d.envelope.payload for d in backlog] == [b"m0", b"m1", b"m2"]
                # Reconnect after position of m2: only m3, m4 and what follows.
                async with client.join(
                    room.room_id, "b", t["b"], resume_after=backlog[-1].position
                ) as b:
                    await a.send(b"m5", ceremony_id="sign", round_=2)
                    rest = await take(b, 3)
                assert [d.envelope.payload for d in rest] == [b"m3", b"m4", b"m5"]
                assert [d.envelope.seq for d in rest] == [4, 5, 6]
                with pytest.raises(MalformedRequestError):
                    async with client.join(room.room_id, "b", t["b"], resume_after=10**6):
                        pass

    run(body)


def test_sender_spoofing_is_rejected(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            t = room.join_tokens
            async with (
                client.join(room.room_id, "a", t["a"]) as a,
                client.join(room.room_id, "b", t["b"]) as b,
            ):
                # Naming oneself is fine; the relay stamps it anyway.
                await a.send_envelope(
                    envelope_pb2.Envelope(sender="a", ceremony_id="x", round=1, payload=b"ok")
                )
                with pytest.raises(PermissionDeniedError):
                    await a.send_envelope(
                        envelope_pb2.Envelope(sender="b", ceremony_id="x", round=1, payload=b"f")
                    )
                [delivery] = await take(b, 1)
                assert delivery.envelope.sender == "a"
                assert delivery.envelope.payload == b"ok"
                # The forged envelope was never stored.
                status = await client.get_room(room.room_id, room.admin_token)
                assert status.messages == 1

    run(body)


def test_sequence_gaps_and_duplicates_are_rejected(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            t = room.join_tokens
            async with client.join(room.room_id, "a", t["a"]) as a:
                await a.send(b"1", ceremony_id="x", round_=1)
                with pytest.raises(SequenceError):
                    await a.send_envelope(envelope_pb2.Envelope(seq=3, payload=b"gap"))
            async with client.join(room.room_id, "a", t["a"]) as a:
                # A rejoin learns where it stands.
                assert a.accepted.next_seq == 2
                with pytest.raises(SequenceError):
                    await a.send_envelope(envelope_pb2.Envelope(seq=1, payload=b"dup"))
            async with client.join(room.room_id, "a", t["a"]) as a:
                assert await a.send(b"2", ceremony_id="x", round_=1) > 0
            status = await client.get_room(room.room_id, room.admin_token)
            assert status.parties[0].messages_delivered == 2

    run(body)


def test_join_authenticates_the_party(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            other = await client.create_room(["a", "b"])
            t = room.join_tokens
            cases = [
                (room.room_id, "a", t["b"]),  # another party's token
                (room.room_id, "a", other.join_tokens["a"]),  # another room's token
                (room.room_id, "a", room.admin_token),
                (room.room_id, "mallory", t["a"]),  # not a participant
                (room.room_id, "a", ""),
            ]
            for room_id, party, token in cases:
                with pytest.raises(PermissionDeniedError):
                    async with client.join(room_id, party, token):
                        pass
            with pytest.raises(RoomNotFoundError):
                async with client.join("no-such-room", "a", t["a"]):
                    pass
            status = await client.get_room(room.room_id, room.admin_token)
            assert not any(p.joined for p in status.parties)

    run(body)


def test_limits_are_enforced(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(
                ["a", "b"], max_message_bytes=10, max_messages=3, max_total_bytes=25
            )
            assert (room.limits.max_message_bytes, room.limits.max_messages) == (10, 3)
            t = room.join_tokens
            async with client.join(room.room_id, "a", t["a"]) as a:
                await a.send(b"x" * 10, ceremony_id="x", round_=1)
                with pytest.raises(LimitExceededError):
                    await a.send(b"x" * 11, ceremony_id="x", round_=1)
            async with client.join(room.room_id, "a", t["a"]) as a:
                await a.send(b"x" * 10, ceremony_id="x", round_=1)
                with pytest.raises(LimitExceededError):  # 20 + 6 > 25 total bytes
                    await a.send(b"x" * 6, ceremony_id="x", round_=1)
            async with client.join(room.room_id, "b", t["b"]) as b:
                await b.send(b"x" * 5, ceremony_id="x", round_=1)
                with pytest.raises(LimitExceededError):  # a 4th message
                    await b.send(b"", ceremony_id="x", round_=1)
            status = await client.get_room(room.room_id, room.admin_token)
            assert (status.messages, status.total_bytes) == (3, 25)

            maximum = RelayConfig().max_limits
            with pytest.raises(MalformedRequestError):
                await client.create_room(["a", "b"], max_messages=maximum.max_messages + 1)
            with pytest.raises(MalformedRequestError):
                await client.create_room(["a", "b"], ttl_ms=RelayConfig().max_ttl_ms + 1)
            with pytest.raises(MalformedRequestError):
                await client.create_room(["a", "a"])
            with pytest.raises(MalformedRequestError):
                await client.create_room(["a"])
            with pytest.raises(MalformedRequestError):
                await client.create_room(["a", "b c"])

    run(body)


def test_room_expires_after_its_ttl(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            # Long enough for the joins under load: an expired room drops its log at once.
            room = await client.create_room(["a", "b"], ttl_ms=2_000)
            t = room.join_tokens
            async with client.join(room.room_id, "a", t["a"]) as a:
                await a.send(b"early", ceremony_id="x", round_=1)
                async with client.join(room.room_id, "b", t["b"]) as b:
                    # The stream delivers what is there, then ends on expiry.
                    got = await drain(b)
                    assert summary(got) == [("a", "", 1, b"early")]
                    assert b.ended == relay_pb2.ROOM_END_REASON_EXPIRED
                with pytest.raises(RoomExpiredError):
                    await a.send(b"late", ceremony_id="x", round_=1)
            with pytest.raises(RoomExpiredError):
                async with client.join(room.room_id, "b", t["b"]):
                    pass
            status = await client.get_room(room.room_id, room.admin_token)
            assert status.state == relay_pb2.ROOM_STATE_EXPIRED

    run(body)


def test_close_room(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            t = room.join_tokens
            async with (
                client.join(room.room_id, "a", t["a"]) as a,
                client.join(room.room_id, "b", t["b"]) as b,
            ):
                await a.send(b"last words", ceremony_id="x", round_=1)
                assert summary(await take(b, 1)) == [("a", "", 1, b"last words")]
                with pytest.raises(PermissionDeniedError):
                    await client.close_room(room.room_id, t["a"])
                await client.close_room(room.room_id, room.admin_token)
                await client.close_room(room.room_id, room.admin_token)  # idempotent
                # The close ends the streams at once (the log is dropped).
                assert await drain(b) == []
                assert b.ended == relay_pb2.ROOM_END_REASON_CLOSED
                with pytest.raises(RoomClosedError):
                    await b.receive()
                with pytest.raises(RoomClosedError):
                    await a.send(b"too late", ceremony_id="x", round_=1)
            with pytest.raises(RoomClosedError):
                async with client.join(room.room_id, "a", t["a"]):
                    pass
            status = await client.get_room(room.room_id, room.admin_token)
            assert status.state == relay_pb2.ROOM_STATE_CLOSED
            with pytest.raises(RoomNotFoundError):
                await client.close_room("no-such-room", room.admin_token)

    run(body)


def test_await_round_reports_who_did_not_deliver(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b", "c"])
            t = room.join_tokens
            async with (
                client.join(room.room_id, "a", t["a"]) as a,
                client.join(room.room_id, "b", t["b"]) as b,
                client.join(room.room_id, "c", t["c"]) as c,
            ):
                await a.send(b"r1", ceremony_id="dkg", round_=1)
                await b.send(b"r1", ceremony_id="dkg", round_=1, recipient="a")
                await c.send(b"wrong ceremony", ceremony_id="sign", round_=1)
                await c.send(b"wrong round", ceremony_id="dkg", round_=2)

                report = await client.await_round(
                    room.room_id, room.admin_token, ceremony_id="dkg", round_=1, timeout_s=0.3
                )
                assert not report.complete
                assert list(report.delivered) == ["a", "b"]
                assert list(report.missing) == ["c"]
                assert report.state == relay_pb2.ROOM_STATE_OPEN

                only_ab = await client.await_round(
                    room.room_id,
                    t["c"],
                    ceremony_id="dkg",
                    round_=1,
                    timeout_s=5,
                    parties=["a", "b"],
                )
                assert only_ab.complete and list(only_ab.missing) == []

                # A waiting call returns as soon as the last party delivers.
                waiting = asyncio.create_task(
                    client.await_round(
                        room.room_id, t["a"], ceremony_id="dkg", round_=1, timeout_s=15
                    )
                )
                await asyncio.sleep(0.1)
                assert not waiting.done()
                await c.send(b"r1", ceremony_id="dkg", round_=1)
                report = await asyncio.wait_for(waiting, 5)
                assert report.complete
                assert list(report.delivered) == ["a", "b", "c"]

                with pytest.raises(MalformedRequestError):
                    await client.await_round(
                        room.room_id,
                        t["a"],
                        ceremony_id="dkg",
                        round_=1,
                        timeout_s=0,
                        parties=["mallory"],
                    )
                with pytest.raises(PermissionDeniedError):
                    await client.await_round(
                        room.room_id, "bad", ceremony_id="dkg", round_=1, timeout_s=0
                    )

    run(body)


@pytest.mark.parametrize(
    ("envelope", "error"),
    [
        (envelope_pb2.Envelope(recipient="mallory"), MalformedRequestError),
        (envelope_pb2.Envelope(recipient="a"), MalformedRequestError),
        (envelope_pb2.Envelope(room_id="another-room"), MalformedRequestError),
        (envelope_pb2.Envelope(ceremony_id="has space"), MalformedRequestError),
        (envelope_pb2.Envelope(ceremony_id="c" * 129), MalformedRequestError),
        (envelope_pb2.Envelope(sender="b"), PermissionDeniedError),
    ],
    ids=[
        "unknown-recipient",
        "self-recipient",
        "wrong-room",
        "bad-ceremony",
        "long-ceremony",
        "spoofed-sender",
    ],
)
def test_malformed_envelopes_end_the_stream(
    make_backend: MakeBackend, envelope: envelope_pb2.Envelope, error: type[Exception]
) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"])
            async with client.join(room.room_id, "a", room.join_tokens["a"]) as a:
                with pytest.raises(error):
                    await a.send_envelope(envelope)
                with pytest.raises(error):  # the stream is over; its error sticks
                    await a.send(b"", ceremony_id="x", round_=1)
            status = await client.get_room(room.room_id, room.admin_token)
            assert status.messages == 0

    run(body)


def test_stream_must_start_with_a_hello_and_have_only_one(make_backend: MakeBackend) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            call = client._stub.Join()
            await call.write(relay_pb2.JoinRequest(envelopes=[envelope_pb2.Envelope(payload=b"x")]))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            room = await client.create_room(["a", "b"])
            hello = relay_pb2.JoinHello(
                room_id=room.room_id, party="a", join_token=room.join_tokens["a"]
            )
            call = client._stub.Join()
            await call.write(relay_pb2.JoinRequest(hello=hello))
            assert (await call.read()).HasField("accepted")
            await call.write(relay_pb2.JoinRequest(hello=hello))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(body)


def test_stream_without_hello_times_out() -> None:
    async def body() -> None:
        async with relay(MemoryBackend(), config=RelayConfig(hello_timeout_s=0.2)) as client:
            call = client._stub.Join()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    run(body)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (envelope_pb2.Envelope(seq=2, payload=b"x" * 11), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (envelope_pb2.Envelope(seq=2, recipient="zed"), grpc.StatusCode.INVALID_ARGUMENT),
        (envelope_pb2.Envelope(seq=5), grpc.StatusCode.ABORTED),
    ],
    ids=["too-large", "bad-recipient", "seq-gap"],
)
def test_a_batch_stores_the_prefix_before_a_rejected_envelope(
    make_backend: MakeBackend, bad: envelope_pb2.Envelope, code: grpc.StatusCode
) -> None:
    async def body() -> None:
        async with relay(make_backend()) as client:
            room = await client.create_room(["a", "b"], max_message_bytes=10)
            call = client._stub.Join()
            hello = relay_pb2.JoinHello(
                room_id=room.room_id, party="a", join_token=room.join_tokens["a"]
            )
            await call.write(relay_pb2.JoinRequest(hello=hello))
            assert (await call.read()).HasField("accepted")
            batch = [envelope_pb2.Envelope(seq=1, payload=b"ok"), bad]
            batch.append(envelope_pb2.Envelope(seq=3, payload=b"after"))
            await call.write(relay_pb2.JoinRequest(envelopes=batch))
            acks: list[int] = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    response = await call.read()
                    acks += [ack.seq for ack in response.acks]
            assert info.value.code() == code
            assert acks == [1]  # the stored envelope is acknowledged before the error
            status = await client.get_room(room.room_id, room.admin_token)
            assert (status.messages, status.parties[0].messages_delivered) == (1, 1)

    run(body)


def test_logs_carry_no_tokens_or_payloads() -> None:
    canary = b"CANARY-PAYLOAD-7f3a"

    async def body() -> list[str]:
        async with relay(MemoryBackend()) as client:
            room = await client.create_room(["a", "b"], max_message_bytes=64)
            t = room.join_tokens
            with pytest.raises(PermissionDeniedError):
                async with client.join(room.room_id, "a", t["b"]):
                    pass
            async with client.join(room.room_id, "a", t["a"]) as a:
                await a.send(canary, ceremony_id="x", round_=1)
                with pytest.raises(LimitExceededError):
                    await a.send(canary * 10, ceremony_id="x", round_=1)
            await client.close_room(room.room_id, room.admin_token)
            return [room.admin_token, *t.values()]

    out = io.StringIO()
    logs.configure("relay", level=logging.DEBUG, stream=out)
    try:
        secrets = run(body)
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in out.getvalue().splitlines()]  # JSON lines
    assert any(e["event"] == "room created" for e in events)
    assert any(
        e["event"] == "call failed" and e["method"] == "Join" and e["code"] == "RESOURCE_EXHAUSTED"
        for e in events
    )
    for secret in [*secrets, canary.decode()]:
        assert secret not in out.getvalue()


def test_a_client_reaches_a_restarted_relay_while_its_channel_backs_off() -> None:
    """After the relay restarts, the client's channel may still wait out its reconnect
    backoff, and a call made then fails at once with the last connection error
    ("connection refused"). CreateRoom and Join wait for the relay instead."""

    async def start(address: str) -> grpc.aio.Server:
        server, _ = await create_server(address, MemoryBackend(), admitter=harness_admitter())
        await server.start()
        return server

    async def body() -> None:
        with socket.socket() as probe:  # a port to restart the relay on
            probe.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{probe.getsockname()[1]}"
        server = await start(address)
        client = RelayClient(open_channel(address), coordinator=COORDINATOR, connect_seconds=20.0)
        try:
            room = await client.create_room(["a", "b"])
            await server.stop(None)
            with pytest.raises(BackendUnavailableError):  # retried for ~3 s: the channel backs off
                await client.get_room(room.room_id, room.admin_token)
            server = await start(address)
            room = await client.create_room(["a", "b"])
            async with client.join(room.room_id, "a", room.join_tokens["a"]) as session:
                assert list(session.accepted.participants) == ["a", "b"]
        finally:
            await client.aclose()
            await server.stop(None)

    run(body)


def test_a_relay_that_stays_down_fails_calls_after_the_connect_wait() -> None:
    async def body() -> None:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{probe.getsockname()[1]}"
        async with RelayClient(
            open_channel(address), coordinator=COORDINATOR, connect_seconds=0.5
        ) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(BackendUnavailableError, match=r"not reachable within 0\.5 s"):
                await client.create_room(["a", "b"])
            with pytest.raises(BackendUnavailableError, match=r"not reachable within 0\.5 s"):
                await client.join("room", "a", "token").open()
            assert asyncio.get_running_loop().time() - started < 5.0

    run(body)
