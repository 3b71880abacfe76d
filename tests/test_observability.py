"""Observability beyond the host: relay and bridge Prometheus metrics, the enclave's
counters exported by the host, the relay's JSON logs, gRPC reflection on the relay
and the host."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from enclave.nsm import SimulatedNitroPki
from enclave.service import create_server as create_enclave_server
from host.main import HostConfig, serve
from host.metrics import HostMetrics
from relay.client import RelayClient
from relay.errors import UnauthenticatedError
from relay.memory import MemoryBackend
from relay.metrics import RelayMetrics
from relay.service import create_server as create_relay_server
from shardkeep.bridge import Bridge, bridge_registry
from shardkeep.metrics import MetricsServer
from shardkeep.v1 import enclave_pb2
from tests.enclave_harness import devkms, enclave_deps
from tests.relay_harness import harness_admitter, relay, run, write_admission_file
from tests.test_host_service import stack


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    return {s.name for s in reply.list_services_response.service}


def test_relay_metrics_count_calls_rooms_envelopes_and_malformed_requests() -> None:
    async def body() -> None:
        metrics = RelayMetrics()
        async with relay(MemoryBackend(), metrics=metrics) as client:
            room = await client.create_room(["a", "b"], max_total_bytes=1 << 20)
            got = samples(metrics.exposition())
            assert got[("shardkeep_relay_rooms", ())] == 1
            assert got[("shardkeep_relay_reserved_bytes", ())] == 1 << 20
            async with client.join(room.room_id, "a", room.join_tokens["a"]) as a:
                await a.send(b"x" * 100, ceremony_id="c", round_=1)
            await client.close_room(room.room_id, room.admin_token)
            with pytest.raises(UnauthenticatedError):
                await RelayClient(client._channel).create_room(["a", "b"])
            raw = client._channel.unary_unary("/shardkeep.v1.Relay/GetRoom", None, None)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\xff" * 8)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "shardkeep.v1.Relay" in await services(client._channel)
        got = samples(metrics.exposition())
        assert got[("shardkeep_relay_rooms", ())] == 0  # freed on close
        assert got[("shardkeep_relay_reserved_bytes", ())] == 0
        assert got[("shardkeep_relay_envelopes_total", ())] == 1
        assert got[("shardkeep_relay_envelope_bytes_total", ())] == 100
        assert got[("shardkeep_relay_rooms_created_total", (("coordinator", "test"),))] == 1
        calls = "shardkeep_relay_calls_total"
        assert got[(calls, (("code", "OK"), ("method", "CreateRoom")))] == 1
        assert got[(calls, (("code", "UNAUTHENTICATED"), ("method", "CreateRoom")))] == 1
        assert got[(calls, (("code", "OK"), ("method", "CloseRoom")))] == 1
        assert got[("shardkeep_relay_malformed_requests_total", (("method", "GetRoom"),))] == 1

    run(body)


def test_relay_process_logs_json_and_serves_metrics(tmp_path: Path) -> None:
    """The ``shardkeep-relay`` process: structlog JSON lines on stderr, and the
    Prometheus endpoint on --metrics-port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "relay.main", "--listen", f"unix:{tmp_path}/relay.sock",
            "--admission", str(write_admission_file(tmp_path)),
            "--metrics-port", str(metrics_port), "--grace", "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"shardkeep-relay listening on unix:")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b"shardkeep_relay_rooms" in r.read()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert {"relay serving", "stopped"} <= {e["event"] for e in events}
    assert all(e["component"] == "relay" for e in events)


def test_bridge_metrics_follow_its_counters(tmp_path: Path) -> None:
    async def body() -> None:
        echo = await asyncio.start_unix_server(_echo, path=str(tmp_path / "echo.sock"))
        async with Bridge(f"unix:{tmp_path}/bridge.sock", f"unix:{tmp_path}/echo.sock") as bridge:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "bridge.sock"))
            writer.write(b"ping")
            await writer.drain()
            assert await reader.readexactly(4) == b"ping"
            server = MetricsServer(bridge_registry(bridge), 0, "127.0.0.1")
            try:
                url = f"http://127.0.0.1:{server.port}/metrics"
                text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
            finally:
                server.close()
            writer.close()
        echo.close()
        got = samples(text)
        assert got[("shardkeep_bridge_connections_accepted_total", ())] == 1
        assert got[("shardkeep_bridge_connections_active", ())] == 1
        assert got[("shardkeep_bridge_bytes_to_target_total", ())] == 4
        assert got[("shardkeep_bridge_bytes_from_target_total", ())] == 4

    run(body)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readexactly(4))
    await writer.drain()
    writer.close()


def test_host_offers_reflection(tmp_path: Path) -> None:
    async def body() -> None:
        async with stack(f"sqlite:///{tmp_path / 'host.db'}") as s:
            assert {"shardkeep.v1.Host", "grpc.health.v1.Health"} <= await services(s.channel)

    run(body)


def test_host_exports_each_enclaves_malformed_request_counts(tmp_path: Path) -> None:
    """The enclaves have no network: each one's refusals of malformed requests reach
    Prometheus through the host's endpoint, labelled by enclave and method, and follow
    its status reports; a host with two enclaves exports both, not only the first."""
    pki = SimulatedNitroPki.generate()
    addresses = [f"unix:{tmp_path / f'enclave-{i}.sock'}" for i in (1, 2)]
    counted = "shardkeep_enclave_malformed_requests_total"
    running = "shardkeep_enclave_ceremonies_running"

    async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{port}/metrics"
        return samples(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))

    async def malformed(address: str, times: int) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            attest = channel.unary_unary("/shardkeep.v1.Enclave/GetAttestation", None, None)
            for _ in range(times - 1):
                with pytest.raises(grpc.aio.AioRpcError):
                    await attest(b"\xff" * 12)  # does not parse
            oversized = enclave_pb2.GetAttestationRequest(nonce=bytes(4096))
            with pytest.raises(grpc.aio.AioRpcError):
                await attest(oversized.SerializeToString())  # out of bounds

    async def body(endpoint: str) -> None:
        key = Ed25519PrivateKey.generate()
        enclaves = [
            await create_enclave_server(address, enclave_deps(pki, endpoint, key))
            for address in addresses
        ]
        backend = MemoryBackend()
        relay_server, relay_port = await create_relay_server(
            "127.0.0.1:0", backend, admitter=harness_admitter()
        )
        await relay_server.start()
        config = HostConfig(
            listen="127.0.0.1:0",
            enclave=addresses[0],
            more_enclaves=(addresses[1],),
            relay=f"127.0.0.1:{relay_port}",
            store=f"sqlite:///{tmp_path / 'host.db'}",
            metrics_port=0,
            enclave_status_interval_s=0.1,
        )
        stop = asyncio.Event()
        ports: list[int | None] = []
        task = asyncio.create_task(serve(config, stop, on_ready=lambda _, m: ports.append(m)))
        expected = {
            (counted, (("enclave", addresses[0]), ("method", "GetAttestation"))): 4,
            (counted, (("enclave", addresses[1]), ("method", "GetAttestation"))): 2,
            (running, (("enclave", addresses[0]),)): 0,
            (running, (("enclave", addresses[1]),)): 0,
        }
        try:
            async with asyncio.timeout(30):
                while not ports:
                    await asyncio.sleep(0.01)
                metrics_port = ports[0]
                assert metrics_port is not None
                await malformed(addresses[0], 4)
                await malformed(addresses[1], 2)
                while {k: v for k, v in (await scrape(metrics_port)).items() if k in expected} != (
                    expected
                ):
                    await asyncio.sleep(0.05)
                got = await scrape(metrics_port)
                assert {k: v for k, v in got.items() if k[0] in (counted, running)} == expected
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await relay_server.stop(None)
            await backend.aclose()
            for enclave in enclaves:
                await enclave.server.stop(None)

    with devkms(pki) as endpoint:
        run(lambda: body(endpoint))


def test_enclave_report_exports_only_the_enclaves_method_names() -> None:
    """Labels come from the enclave's reply: names outside the Enclave service's
    method table are dropped, so the label set stays closed whatever arrives."""
    metrics = HostMetrics()
    assert not any(k[0].startswith("shardkeep_enclave") for k in samples(metrics.exposition()))
    metrics.enclave.update(
        "enclave-a",
        enclave_pb2.GetStatusResponse(
            ceremonies_running=2, malformed_requests={"RunCeremony": 5, "x" * 200: 9}
        ),
    )
    got = samples(metrics.exposition())
    named = (("enclave", "enclave-a"), ("method", "RunCeremony"))
    assert got[("shardkeep_enclave_malformed_requests_total", named)] == 5
    assert got[("shardkeep_enclave_ceremonies_running", (("enclave", "enclave-a"),))] == 2
    assert len([k for k in got if k[0] == "shardkeep_enclave_malformed_requests_total"]) == 1
