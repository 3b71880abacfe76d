"""HTTP/2 keepalive on a long-lived ``Host.Session`` stream (``shardkeep.keepalive``):
an idle stream survives its client's pings (the server accepts them), and a peer
that falls silent without a reset is found by the pings, so the stream fails
UNAVAILABLE at once instead of hanging the next call, and the next call reopens it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from client.sdk.host_session import HostSession
from host.host_session import SessionStream
from host.metrics import HostMetrics
from shardkeep import keepalive
from shardkeep.v1 import host_pb2, host_pb2_grpc
from tests.relay_harness import run

PING_MS = 100  # the tests' keepalive interval


class _ChallengeHost(host_pb2_grpc.HostServicer):
    """A host whose Session channels answer challenges (the host's own session code)."""

    async def Session(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async def challenge(request: object, request_id: str) -> host_pb2.HostChallengeResponse:
            return host_pb2.HostChallengeResponse(challenge=b"c" * 40)

        async def no_ceremony(*_: object) -> Any:
            raise AssertionError("no ceremony here")

        stream = SessionStream(
            run_ceremony=no_ceremony,
            challenge=challenge,
            request_id=lambda given: given or "test",
            metrics=HostMetrics(),
        )
        async for output in stream.serve(request_iterator):
            yield output


@contextlib.asynccontextmanager
async def host(options: list[tuple[str, int]]) -> AsyncIterator[int]:
    server = grpc.aio.server(options=options)
    host_pb2_grpc.add_HostServicer_to_server(_ChallengeHost(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


class _Proxy:
    """A TCP proxy whose open connections can fall silent (no data, no reset),
    as behind a NAT that forgot them; connections opened later pass."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._pumps: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]
        self._pumps += [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    def silence(self) -> None:
        """Stop forwarding on every open connection, leaving the sockets open."""
        for pump in self._pumps:
            pump.cancel()
        self._pumps.clear()

    async def aclose(self) -> None:
        self.silence()
        for writer in self._writers:
            writer.close()
        self._server.close()


def test_an_idle_session_stream_survives_its_keepalive_pings() -> None:
    """Idle for many ping intervals, the stream is still the one the first call opened:
    the server takes the pings (no GOAWAY "too_many_pings") and the next call uses it."""

    async def body() -> None:
        async with host(keepalive.server_options(PING_MS)) as port:
            options = keepalive.client_options(PING_MS, 1000)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                session = HostSession(host_pb2_grpc.HostStub(channel))  # type: ignore[no-untyped-call]
                await session.challenge("", timeout=5)
                stream = session._call
                await asyncio.sleep(30 * PING_MS / 1000)
                answer = await session.challenge("", timeout=5)
                assert answer.challenge == b"c" * 40
                assert session._call is stream
                await session.aclose()

    run(body)


def test_a_silent_dead_peer_fails_the_session_and_the_next_call_reopens() -> None:
    """Attack/fault: the connection under an idle stream falls silent (a NAT forgot
    it). The unanswered pings drop the connection within interval + timeout, so the
    stream fails (no call hangs on it); the next call opens a new stream and works."""

    async def body() -> None:
        async with host(keepalive.server_options(PING_MS)) as port:
            proxy = _Proxy(port)
            proxy_port = await proxy.start()
            options = keepalive.client_options(PING_MS, 300)
            address = f"127.0.0.1:{proxy_port}"
            async with grpc.aio.insecure_channel(address, options=options) as channel:
                session = HostSession(host_pb2_grpc.HostStub(channel))  # type: ignore[no-untyped-call]
                await session.challenge("", timeout=5)
                stream = session._call
                assert stream is not None
                proxy.silence()
                async with asyncio.timeout(5):  # far below TCP's own give-up time
                    while session._call is not None:
                        await asyncio.sleep(0.05)
                assert stream.done()
                await asyncio.wait_for(channel.channel_ready(), 10)
                answer = await session.challenge("", timeout=5)
                assert answer.challenge == b"c" * 40
                assert session._call is not stream
                await session.aclose()
            await proxy.aclose()

    run(body)
