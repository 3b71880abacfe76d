"""Attacks on what one Relay.Session stream can make the relay hold, over
gRPC on 127.0.0.1:0 against the real relay service (docs/threat-model.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from relay.backend import Backend
from relay.client import RelayClient
from relay.errors import LimitExceededError
from relay.memory import MemoryBackend
from relay.rooms import AppendResult, Message, RelayConfig, RoomId
from relay.service import create_server
from relay.session_client import SessionParty
from shardkeep.v1 import relay_pb2, relay_pb2_grpc
from tests.relay_harness import COORDINATOR, harness_admitter, run


@asynccontextmanager
async def relay_target(backend: Backend, config: RelayConfig) -> AsyncIterator[str]:
    server, port = await create_server(
        "127.0.0.1:0", backend, admitter=harness_admitter(), config=config
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await backend.aclose()


def test_a_stream_that_never_reads_cannot_pile_up_closing_channels() -> None:
    """An unauthenticated process opens channel after channel (joins of rooms
    that do not exist) and never reads the answers. Once its answers back up,
    every refused channel waits to write its close: the relay must count it
    against the stream's channel limit and stop reading, not keep a task (and
    its join frame) per channel without bound."""

    async def body() -> None:
        config = RelayConfig(max_session_channels=8)
        async with relay_target(MemoryBackend(), config) as target:
            # A small receive window, so the relay's answers back up quickly.
            options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
            channel = grpc.aio.insecure_channel(target, options=options)
            call = relay_pb2_grpc.RelayStub(channel).Session()
            baseline = len(asyncio.all_tasks())
            junk = "x" * 1000  # each join frame ~1 KB, kept while its channel lives
            for number in range(1, 4001):
                hello = relay_pb2.JoinHello(room_id="no-such-room", party="a", join_token=junk)
                frame = relay_pb2.RelaySessionRequest(
                    channel=number, join=relay_pb2.ChannelJoin(hello=hello)
                )
                try:
                    await asyncio.wait_for(call.write(frame), 10)
                except TimeoutError:
                    break  # the relay stopped reading this stream: what it should do
            held = len(asyncio.all_tasks()) - baseline
            assert held <= config.max_session_channels + 50, f"{held} tasks for one stream"
            call.cancel()
            await channel.close()

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


def test_frames_past_the_streams_byte_budget_close_the_channel() -> None:
    """A party sends large envelope lists faster than its room stores them:
    below the per-channel frame count, the bytes the stream makes the relay
    hold are still bounded (RESOURCE_EXHAUSTED), and the stream goes on."""

    async def body() -> None:
        backend = _GatedBackend()
        config = RelayConfig(session_stream_bytes=1 << 20)
        async with relay_target(backend, config) as target:
            coordinator = RelayClient(
                grpc.aio.insecure_channel(target), coordinator=COORDINATOR, session=True
            )
            sender = RelayClient(grpc.aio.insecure_channel(target), session=True)
            flooded = await coordinator.create_room(["a", "b"], max_total_bytes=64 << 20)
            calm = await coordinator.create_room(["a", "b"])
            a = sender.join(flooded.room_id, "a", flooded.join_tokens["a"], room=flooded.spec)
            assert isinstance(a, SessionParty)
            await a.open()
            with pytest.raises(LimitExceededError, match="bytes waiting"):
                for _ in range(16):  # 16 frames of 256 KiB, far below 64 frames
                    await a.send(bytes(256 * 1024), ceremony_id="c", round_=1)
                    await asyncio.sleep(0.05)
                await a.receive()
            backend.gate.set()
            # The stream's other channels go on once the flood is dropped.
            x = sender.join(calm.room_id, "a", calm.join_tokens["a"], room=calm.spec)
            y = coordinator.join(calm.room_id, "b", calm.join_tokens["b"])
            assert isinstance(x, SessionParty) and isinstance(y, SessionParty)
            async with x, y:
                await x.send(b"ok", ceremony_id="c", round_=1)
                delivery = await y.receive()
                assert delivery.envelope.payload == b"ok"
            await coordinator.aclose()
            await sender.aclose()

    run(body)


def test_many_streams_cannot_together_pass_the_relays_byte_budget() -> None:
    """Streams cost nothing to open, so a per-stream bound alone bounds
    nothing: two streams, each below its own budget, together pass the relay's
    and the frame past it closes its channel (RESOURCE_EXHAUSTED)."""

    async def body() -> None:
        backend = _GatedBackend()
        config = RelayConfig(session_stream_bytes=1 << 20, session_relay_bytes=5 << 18)
        async with relay_target(backend, config) as target:
            coordinator = RelayClient(
                grpc.aio.insecure_channel(target), coordinator=COORDINATOR, session=True
            )
            rooms = [await coordinator.create_room(["a", "b"]) for _ in range(2)]
            senders = [RelayClient(grpc.aio.insecure_channel(target), session=True) for _ in rooms]
            parties = []
            for sender, room in zip(senders, rooms, strict=True):
                party = sender.join(room.room_id, "a", room.join_tokens["a"], room=room.spec)
                assert isinstance(party, SessionParty)
                await party.open()
                parties.append(party)
            for _ in range(3):  # 768 KiB and a little each: below a stream's 1 MiB
                for party in parties:
                    await party.send(bytes(256 * 1024), ceremony_id="c", round_=1)
                await asyncio.sleep(0.05)
            waits = [asyncio.create_task(party.receive()) for party in parties]
            done, pending = await asyncio.wait(
                waits, timeout=60, return_when=asyncio.FIRST_COMPLETED
            )
            assert done, "no channel was closed past the relay's budget"
            for task in done:
                with pytest.raises(LimitExceededError, match="relay's streams"):
                    task.result()
            backend.gate.set()
            for task in pending:
                task.cancel()
            for client in (coordinator, *senders):
                await client.aclose()

    run(body)
