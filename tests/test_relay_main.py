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
from relay.main import BACKEND_ENV, backend_spec, make_backend
from relay.main import main as relay_main
from relay.memory import MemoryBackend
from relay.rooms import RelayConfig
from relay.service import SERVICE_NAME
from tests.relay_harness import COORDINATOR, relay, run, write_admission_file

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


def test_process_drains_on_sigterm(tmp_path: Path) -> None:
    admission = write_admission_file(tmp_path)

    async def body() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.main", "--listen", "127.0.0.1:0", "--grace", "0.5",
            "--log-level", "WARNING", "--admission", str(admission),
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
                client = RelayClient(channel, coordinator=COORDINATOR)
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


### Where the backend comes from (a Redis URL may carry a password)

SECRET_URL = "rediss://shardkeep-relay:CANARY-relay-password@redis.internal:6380/0"


def test_backend_spec_precedence(tmp_path: Path) -> None:
    file = tmp_path / "relay-backend"
    file.write_text(f"# the relay's Redis\n\n  {SECRET_URL}  \n")
    env = {BACKEND_ENV: "redis://from-env:6379/0"}
    assert backend_spec(flag=None, file=str(file), environ=env) == SECRET_URL
    assert backend_spec(flag="memory", file=None, environ=env) == "memory"
    assert backend_spec(flag=None, file=None, environ=env) == "redis://from-env:6379/0"
    assert backend_spec(flag=None, file=None, environ={}) == "memory"
    assert backend_spec(flag=None, file=None, environ={BACKEND_ENV: "  "}) == "memory"


@pytest.mark.parametrize(
    ("content", "flag", "message"),
    [
        ("# nothing but a comment\n\n", None, "names no backend"),
        (None, None, "cannot read"),
        (SECRET_URL, "memory", "not both"),
        ("x" * 5000, None, "larger than"),
    ],
    ids=["empty", "missing", "both", "too-large"],
)
def test_backend_file_errors(
    tmp_path: Path, content: str | None, flag: str | None, message: str
) -> None:
    file = tmp_path / "relay-backend"
    if content is not None:
        file.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        backend_spec(flag=flag, file=str(file), environ={})
    assert "CANARY" not in str(info.value)


def test_errors_never_repeat_the_backend_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "relay-backend"
    file.write_text("postgres://relay:CANARY-relay-password@db/0\n")
    with pytest.raises(SystemExit):
        relay_main(
            ["--backend-file", str(file), "--admission", str(write_admission_file(tmp_path))]
        )
    err = capsys.readouterr().err
    assert "unknown backend" in err and "CANARY" not in err


def test_process_reads_its_backend_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "relay-backend"
    file.write_text("memory\n")

    async def body() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.main", "--listen", f"unix:{tmp_path}/r.sock",
            "--backend-file", str(file), "--log-level", "WARNING",
            "--admission", str(write_admission_file(tmp_path)),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert line.startswith("shardkeep-relay listening on unix:"), line
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    run(body)
