"""The vsock<->Unix byte bridge (shardkeep.bridge, docs/architecture.md, "The enclave boundary").

This machine has no vsock loopback transport, so the pumping code is exercised
on AF_UNIX and TCP loopback (the same code path: the bridge only sees
stream sockets); vsock addresses are parse-tested, and a vsock listener is
bound where the kernel allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from shardkeep import bridge as bridge_mod
from shardkeep.bridge import (
    VMADDR_CID_ANY,
    VMADDR_CID_HOST,
    VMADDR_CID_LOCAL,
    VMADDR_PORT_ANY,
    AddressError,
    Bridge,
    BridgeError,
    TcpAddress,
    UnixAddress,
    VsockAddress,
    VsockUnavailableError,
    parse_address,
)
from shardkeep.server import bind, mark_serving, new_server

ROOT = Path(__file__).resolve().parents[1]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    path = Path(tempfile.mkdtemp(prefix="skb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


### Upstream servers the bridge connects to


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo every byte; on EOF, half-close back and finish."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    finally:
        writer.close()


async def digest_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until EOF, then answer with the byte count and SHA-256 of what arrived."""
    hasher = hashlib.sha256()
    total = 0
    while data := await reader.read(65536):
        hasher.update(data)
        total += len(data)
    writer.write(f"{total} {hasher.hexdigest()}".encode())
    await writer.drain()
    writer.close()


async def start_upstream(kind: str, sockdir: Path, handler: Handler) -> tuple[Any, str]:
    if kind == "unix":
        path = sockdir / "up.sock"
        server = await asyncio.start_unix_server(handler, path=str(path))
        return server, f"unix:{path}"
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"tcp:127.0.0.1:{port}"


async def assert_closed_by_bridge(reader: asyncio.StreamReader, timeout: float) -> None:
    """EOF, or a reset when the bridge closed with our unread bytes in its buffer."""
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), timeout) == b""


def listen_address(kind: str, sockdir: Path) -> str:
    return f"unix:{sockdir / 'bridge.sock'}" if kind == "unix" else "tcp:127.0.0.1:0"


async def connect(address: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(address, UnixAddress):
        return await asyncio.open_unix_connection(address.path)
    assert isinstance(address, TcpAddress)
    return await asyncio.open_connection(address.host, address.port)


async def roundtrip(address: Any, payload: bytes) -> bytes:
    """Send ``payload`` while reading the echo concurrently (no deadlock on backpressure)."""
    reader, writer = await connect(address)

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i : i + 100_000])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read(-1)
    await sender
    writer.close()
    return received


KINDS = [("unix", "unix"), ("tcp", "tcp"), ("unix", "tcp"), ("tcp", "unix")]
KIND_IDS = [f"{a}-to-{b}" for a, b in KINDS]


### Addresses


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("unix:/run/shardkeep/enclave.sock", UnixAddress("/run/shardkeep/enclave.sock"), None),
        ("vsock:16:5000", VsockAddress(16, 5000), None),
        ("vsock:3:5000", VsockAddress(3, 5000), None),
        ("vsock:ANY:5000", VsockAddress(VMADDR_CID_ANY, 5000), None),
        ("vsock:any:5000", VsockAddress(VMADDR_CID_ANY, 5000), "vsock:ANY:5000"),
        ("vsock:HOST:8000", VsockAddress(VMADDR_CID_HOST, 8000), None),
        ("vsock:LOCAL:1", VsockAddress(VMADDR_CID_LOCAL, 1), None),
        ("vsock:ANY:ANY", VsockAddress(VMADDR_CID_ANY, VMADDR_PORT_ANY), None),
        (
            "vsock:4294967295:4294967294",
            VsockAddress(0xFFFFFFFF, 0xFFFFFFFE),
            "vsock:ANY:4294967294",
        ),
        ("tcp:127.0.0.1:443", TcpAddress("127.0.0.1", 443), None),
        ("tcp:[::1]:0", TcpAddress("::1", 0), None),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_parse_address(text: str, expected: object, canonical: str | None) -> None:
    parsed = parse_address(text)
    assert parsed == expected
    assert str(parsed) == (canonical or text)
    assert parse_address(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/run/x.sock", "must start with"),
        ("http:example.com", "unknown address scheme"),
        ("unix:", "needs a path"),
        ("unix:/" + "a" * 107, "longer than 107"),
        ("vsock:16", "vsock:CID:PORT"),
        ("vsock::5000", "vsock:CID:PORT"),
        ("vsock:16:", "vsock:CID:PORT"),
        ("vsock:-1:5000", "vsock CID must be a number"),
        ("vsock:guest:5000", "vsock CID must be a number"),
        ("vsock:4294967296:5000", "32 bits"),
        ("vsock:16:4294967296", "32 bits"),
        ("vsock:16:x", "vsock port must be a number"),
        ("tcp:127.0.0.1", "tcp:HOST:PORT"),
        ("tcp::80", "tcp:HOST:PORT"),
        ("tcp:127.0.0.1:65536", "tcp:HOST:PORT"),
    ],
    ids=lambda v: v if isinstance(v, str) and ":" in v else None,
)
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_address(text)
    assert issubclass(AddressError, ValueError)


def test_bridge_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Bridge("tcp:127.0.0.1:0", "tcp:127.0.0.1:1", max_connections=0)
    with pytest.raises(AddressError):
        Bridge("vsock:x:1", "tcp:127.0.0.1:1")


### vsock


def test_vsock_missing_from_python_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "AF_VSOCK", raising=False)

    async def scenario() -> None:
        with pytest.raises(VsockUnavailableError, match="AF_VSOCK is not available"):
            await Bridge("vsock:ANY:5000", "unix:/nonexistent.sock").start()

    run(scenario())
    assert issubclass(VsockUnavailableError, OSError)


def test_vsock_refused_by_kernel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    family = getattr(socket, "AF_VSOCK", 40)
    monkeypatch.setattr(socket, "AF_VSOCK", family, raising=False)
    real_socket = socket.socket

    def no_vsock(fam: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if fam == family:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(fam, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", no_vsock)

    async def scenario() -> None:
        with pytest.raises(VsockUnavailableError, match="no vsock transport") as info:
            await Bridge("vsock:ANY:5000", "unix:/nonexistent.sock").start()
        assert info.value.errno == errno.EAFNOSUPPORT

    run(scenario())


def vsock_or_skip() -> None:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        pytest.skip("this Python has no AF_VSOCK")
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
    except OSError as e:
        pytest.skip(f"this kernel has no vsock transport ({e})")


def test_vsock_listener_binds_where_the_kernel_has_vsock(sockdir: Path) -> None:
    vsock_or_skip()

    async def scenario() -> None:
        async with Bridge("vsock:ANY:ANY", f"unix:{sockdir}/up.sock") as bridge:
            bound = bridge.bound_address
            assert isinstance(bound, VsockAddress)
            assert bound.cid == VMADDR_CID_ANY
            assert bound.port not in (0, VMADDR_PORT_ANY)

    run(scenario())


def test_unreachable_vsock_target_closes_the_client(sockdir: Path) -> None:
    vsock_or_skip()

    async def scenario() -> None:
        # CID 1 (local loopback) with no vsock_loopback transport: the connect
        # fails or hangs; either way the client's connection must be closed.
        async with Bridge(
            f"unix:{sockdir}/b.sock", "vsock:LOCAL:5999", connect_timeout=0.5
        ) as bridge:
            reader, writer = await connect(bridge.bound_address)
            await assert_closed_by_bridge(reader, 5.0)
            writer.close()
            assert bridge.stats.target_failures == 1

    run(scenario())


### Byte pumping


@pytest.mark.parametrize(("listen_kind", "target_kind"), KINDS, ids=KIND_IDS)
def test_bytes_flow_both_ways(sockdir: Path, listen_kind: str, target_kind: str) -> None:
    async def scenario() -> None:
        upstream, target = await start_upstream(target_kind, sockdir, echo)
        async with upstream, Bridge(listen_address(listen_kind, sockdir), target) as bridge:
            reader, writer = await connect(bridge.bound_address)
            for message in (b"ping", b"\x00\xff" * 1000, b"last"):
                writer.write(message)
                await writer.drain()
                assert await reader.readexactly(len(message)) == message
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            stats = bridge.stats
            expected = 4 + 2000 + 4
            assert (stats.bytes_to_target, stats.bytes_from_target) == (expected, expected)
            assert (stats.accepted, stats.active) == (1, 0)

    run(scenario())


@pytest.mark.parametrize(("listen_kind", "target_kind"), KINDS[:2], ids=KIND_IDS[:2])
def test_large_transfer_is_intact(sockdir: Path, listen_kind: str, target_kind: str) -> None:
    payload = random.Random(7).randbytes(8 * 1024 * 1024)

    async def scenario() -> None:
        upstream, target = await start_upstream(target_kind, sockdir, echo)
        # Small buffers make backpressure (drain) do real work.
        bridge = Bridge(listen_address(listen_kind, sockdir), target, buffer_bytes=16 * 1024)
        async with upstream, bridge:
            received = await roundtrip(bridge.bound_address, payload)
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()

    run(scenario())


def test_many_concurrent_connections(sockdir: Path) -> None:
    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, echo)
        async with upstream, Bridge(listen_address("unix", sockdir), target) as bridge:
            payloads = [random.Random(i).randbytes(20_000 + i * 997) for i in range(60)]
            results = await asyncio.gather(*(roundtrip(bridge.bound_address, p) for p in payloads))
            assert results == payloads
            await asyncio.sleep(0.05)
            assert bridge.stats.accepted == 60
            assert bridge.stats.active == 0
            assert bridge.stats.bytes_to_target == sum(map(len, payloads))

    run(scenario())


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_half_close_keeps_the_other_direction_open(sockdir: Path, kind: str) -> None:
    payload = random.Random(3).randbytes(300_000)

    async def scenario() -> None:
        upstream, target = await start_upstream(kind, sockdir, digest_after_eof)
        async with upstream, Bridge(listen_address(kind, sockdir), target) as bridge:
            reader, writer = await connect(bridge.bound_address)
            writer.write(payload)
            writer.write_eof()  # the server answers only after it sees our EOF
            await writer.drain()
            answer = await reader.read()
            assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}".encode()
            writer.close()

    run(scenario())


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_target_down_closes_the_client_promptly(sockdir: Path, kind: str) -> None:
    async def scenario() -> None:
        if kind == "unix":
            target = f"unix:{sockdir}/nobody.sock"
        else:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            target = f"tcp:127.0.0.1:{probe.getsockname()[1]}"
            probe.close()  # nothing listens there now
        async with Bridge(listen_address("unix", sockdir), target) as bridge:
            reader, writer = await connect(bridge.bound_address)
            writer.write(b"hello")
            await assert_closed_by_bridge(reader, 1.0)
            writer.close()
            assert bridge.stats.target_failures == 1
            assert bridge.stats.active == 0

    run(scenario())


def test_target_that_never_answers_times_out(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connect that hangs (a vsock peer that never answers, a blackholed
    # route): the bridge gives up after connect_timeout and closes the client.
    async def hang(address: object, limit: int) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(bridge_mod, "_connect", hang)

    async def scenario() -> None:
        async with Bridge(
            listen_address("unix", sockdir), f"unix:{sockdir}/up.sock", connect_timeout=0.2
        ) as bridge:
            reader, writer = await connect(bridge.bound_address)
            await assert_closed_by_bridge(reader, 3.0)
            writer.close()
            assert bridge.stats.target_failures == 1

    with capture_logs() as logs:
        run(scenario())
    failure = next(e for e in logs if e["event"] == "bridge.target_unreachable")
    assert failure["error"] == "TimeoutError"


def test_connection_limit(sockdir: Path) -> None:
    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, echo)
        async with (
            upstream,
            Bridge(listen_address("unix", sockdir), target, max_connections=2) as bridge,
        ):
            held = [await connect(bridge.bound_address) for _ in range(2)]
            for i, (reader, writer) in enumerate(held):
                writer.write(b"x%d" % i)
                assert await reader.readexactly(2) == b"x%d" % i
            reader, writer = await connect(bridge.bound_address)
            await assert_closed_by_bridge(reader, 1.0)
            writer.close()
            assert bridge.stats.rejected == 1
            # A freed slot is usable again.
            held[0][1].close()
            await asyncio.sleep(0.1)
            assert await roundtrip(bridge.bound_address, b"again") == b"again"
            held[1][1].close()

    run(scenario())


### Lifecycle


def test_close_cuts_open_connections_and_removes_the_socket(sockdir: Path) -> None:
    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, echo)
        async with upstream:
            bridge = Bridge(listen_address("unix", sockdir), target)
            await bridge.start()
            path = sockdir / "bridge.sock"
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
            reader, writer = await connect(bridge.bound_address)
            writer.write(b"abc")
            assert await reader.readexactly(3) == b"abc"
            await bridge.close()
            assert await asyncio.wait_for(reader.read(), 1.0) == b""
            assert not path.exists()
            assert bridge.stats.active == 0
            await bridge.close()  # idempotent
            await bridge.serve_forever()  # returns at once once closed
            writer.close()

    run(scenario())


def test_close_with_grace_lets_connections_finish(sockdir: Path) -> None:
    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, digest_after_eof)
        async with upstream:
            bridge = Bridge(listen_address("unix", sockdir), target)
            await bridge.start()
            reader, writer = await connect(bridge.bound_address)
            writer.write(b"in flight")
            await writer.drain()
            await asyncio.sleep(0.05)
            closing = asyncio.create_task(bridge.close(grace=5.0))
            await asyncio.sleep(0.1)
            # New connections are refused while the open one may finish.
            with pytest.raises(OSError):
                await connect(bridge.bound_address)
            writer.write_eof()
            assert await reader.read() == f"9 {hashlib.sha256(b'in flight').hexdigest()}".encode()
            await closing
            writer.close()

    run(scenario())


def test_stale_socket_is_replaced_but_live_ones_and_files_are_not(sockdir: Path) -> None:
    path = sockdir / "bridge.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens

    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, echo)
        async with upstream, Bridge(f"unix:{path}", target) as bridge:
            assert await roundtrip(bridge.bound_address, b"hi") == b"hi"
            with pytest.raises(BridgeError, match="another process is listening"):
                await Bridge(f"unix:{path}", target).start()
        regular = sockdir / "file"
        regular.write_text("keep me")
        with pytest.raises(BridgeError, match="not a socket"):
            await Bridge(f"unix:{regular}", target).start()
        assert regular.read_text() == "keep me"

    run(scenario())


def test_start_twice_and_unbound_use_are_errors(sockdir: Path) -> None:
    async def scenario() -> None:
        bridge = Bridge("tcp:127.0.0.1:0", f"unix:{sockdir}/x.sock")
        with pytest.raises(BridgeError):
            _ = bridge.bound_address
        with pytest.raises(BridgeError):
            await bridge.serve_forever()
        async with bridge:
            with pytest.raises(BridgeError, match="already started"):
                await bridge.start()

    run(scenario())


def test_logs_count_bytes_and_never_carry_payloads(sockdir: Path) -> None:
    canary = b"CANARY-" + os.urandom(8).hex().encode()

    async def scenario() -> None:
        upstream, target = await start_upstream("unix", sockdir, echo)
        async with upstream, Bridge(listen_address("unix", sockdir), target) as bridge:
            assert await roundtrip(bridge.bound_address, canary * 10) == canary * 10
            await asyncio.sleep(0.05)

    with capture_logs() as logs:
        run(scenario())
    assert canary.decode() not in repr(logs)
    closed = [e for e in logs if e["event"] == "bridge.connection_closed"]
    assert len(closed) == 1
    assert closed[0]["bytes_to_target"] == closed[0]["bytes_from_target"] == len(canary) * 10
    assert closed[0]["reason"] == "closed"
    events = {e["event"] for e in logs}
    assert {"bridge.listening", "bridge.stopped"} <= events


### gRPC through the bridge


def test_grpc_health_check_through_the_bridge(sockdir: Path) -> None:
    async def scenario() -> None:
        server, health = new_server()
        bind(server, f"unix:{sockdir}/enclave.sock")
        await server.start()
        await mark_serving(health, ["shardkeep.v1.Test"])
        try:
            async with (
                Bridge(f"unix:{sockdir}/bridge.sock", f"unix:{sockdir}/enclave.sock"),
                grpc.aio.insecure_channel(f"unix:{sockdir}/bridge.sock") as channel,
            ):
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", "shardkeep.v1.Test"):
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=5
                    )
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await server.stop(None)

    run(scenario())


### Command line


def test_cli_bridges_and_stops_on_sigterm(sockdir: Path) -> None:
    up_path = sockdir / "up.sock"
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.bind(str(up_path))
    upstream.listen(1)
    listen = sockdir / "cli.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardkeep.bridge", "--listen", f"unix:{listen}",
         "--target", f"unix:{up_path}", "--unix-mode", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.strip() == f"shardkeep-bridge listening on unix:{listen}"
        assert stat.S_IMODE(listen.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(listen))
            accepted, _ = upstream.accept()
            with accepted:
                accepted.settimeout(5)
                client.sendall(b"to-target")
                assert accepted.recv(100) == b"to-target"
                accepted.sendall(b"to-client")
                assert client.recv(100) == b"to-client"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
        upstream.close()
    assert proc.returncode == 0
    events = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "bridge.listening" in names and "bridge.stopped" in names
    assert all(e["component"] == "bridge" for e in events)
    assert b"to-target" not in stderr and b"to-client" not in stderr
    assert not listen.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "vsock:ANY", "--target", "unix:/x"], "vsock:CID:PORT"),
        (["--listen", "unix:/x", "--target", "udp:1:2"], "unknown address scheme"),
        (["--listen", "unix:/x", "--target", "unix:/y", "--unix-mode", "9"], "octal"),
    ],
    ids=["bad-vsock", "bad-scheme", "bad-mode"],
)
def test_cli_rejects_bad_arguments(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shardkeep.bridge", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr.decode()


def test_cli_reports_a_bind_failure(sockdir: Path) -> None:
    regular = sockdir / "file"
    regular.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "shardkeep.bridge", "--listen", f"unix:{regular}",
         "--target", "unix:/nonexistent.sock"],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    event = json.loads(proc.stderr.decode().splitlines()[-1])
    assert event["event"] == "bridge.start_failed"
    assert "not a socket" in event["error"]
