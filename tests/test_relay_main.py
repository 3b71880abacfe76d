"""The relay process: health service, Unix sockets, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from relay.client import RelayClient
from relay.errors import RelayError
from relay.main import make_backend
from relay.memory import MemoryBackend
from relay.rooms import RelayConfig
from relay.service import SERVICE_NAME
from tests.relay_harness import relay, run

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_and_unix_socket(tmp_path: Path) -> None:
    async def body() -> None:
        address = f"unix:{tmp_path}/relay.sock"
        async with relay(MemoryBackend(), address=address) as client:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", SERVICE_NAME):
                    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                    assert answer.status == SERVING
            room = await client.create_room(["a", "b"])
            async with client.join(room.room_id, "a", room.join_tokens["a"]) as a:
                assert await a.send(b"over a unix socket", ceremony_id="c", round_=1) == 1

    run(body)


def test_make_backend_rejects_unknown_specs() -> None:
    assert isinstance(make_backend("memory", redis_prefix="x", config=RelayConfig()), MemoryBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("postgres://db", redis_prefix="x", config=RelayConfig())


def test_process_drains_on_sigterm() -> None:
    async def body() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.main", "--listen", "127.0.0.1:0", "--grace", "0.5",
            "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert line.startswith("shardkeep-relay listening on 127.0.0.1:"), line
            address = line.rsplit(" ", 1)[1].strip()

            async with grpc.aio.insecure_channel(address) as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                )
                assert (await watch.read()).status == SERVING
                client = RelayClient(channel)
                room = await client.create_room(["a", "b"])
                async with client.join(room.room_id, "a", room.join_tokens["a"]) as session:
                    process.send_signal(signal.SIGTERM)
                    # Health turns NOT_SERVING before the server stops ...
                    assert (await watch.read()).status == NOT_SERVING
                    # ... and the open stream is cut at the end of the grace period.
                    with pytest.raises(RelayError, match=r"UNAVAILABLE|CANCELLED"):
                        await asyncio.wait_for(session.receive(), 10)
            assert await asyncio.wait_for(process.wait(), 10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    run(body)
