"""Malformed requests to every RPC of the host, the relay and the enclave.

The attack: 360 of 360 malformed protobuf bodies got UNKNOWN with Python's
exception text, before the API-token check, with no log line and no metric; a
1 MiB nonce to the enclave got INTERNAL. Now every such body is
UNAUTHENTICATED (no credential) or INVALID_ARGUMENT (after authentication),
never UNKNOWN or INTERNAL, and its status text carries no Python internals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import descriptor_pool, message_factory

from enclave.nsm import SimulatedNitroPki
from relay.memory import MemoryBackend
from shardkeep.v1 import enclave_pb2, host_pb2, relay_pb2  # noqa: F401  (registers the services)
from tests.enclave_harness import Stack, devkms, with_enclave
from tests.enclave_harness import run as run_enclave
from tests.relay_harness import relay, run
from tests.test_host_service import stack

ACCEPTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}
# Bodies that break the wire format in different ways; each is used only for
# the request types it really fails to parse (checked below).
CANDIDATES = [
    b"\xff" * 12,  # a varint that never ends
    b"\x08",  # a truncated varint
    b"\x0a\x05ab",  # a length-delimited field cut short
    b"\x0a\xff\xff\xff\xff\x0f",  # a field claiming 4 GiB
    b"\x0c",  # an end-group with no start
    b"\x0f",  # wire type 7 does not exist
    b"\x0a\x02\xc3\x28",  # field 1 (a string or a message everywhere) as invalid UTF-8
    b"\x12\x03\x0a\x01",  # a nested message cut short
]


def methods(service: str) -> Iterator[tuple[str, Any, bool, bool]]:
    """(path, request class, client streams, server streams) of each method."""
    descriptor = descriptor_pool.Default().FindServiceByName(service)
    for method in descriptor.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        yield (
            f"/{service}/{method.name}",
            request_class,
            method.client_streaming,
            method.server_streaming,
        )


def malformed_for(request_class: Any) -> list[bytes]:
    bodies = []
    for body in CANDIDATES:
        try:
            request_class.FromString(body)
        except Exception:
            bodies.append(body)
    assert len(bodies) >= 4, request_class
    return bodies


async def call_raw(
    channel: grpc.aio.Channel,
    path: str,
    body: bytes,
    client_streams: bool,
    server_streams: bool,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.aio.AioRpcError:
    """Send ``body`` as the (first) request of ``path``; return the failure."""
    try:
        if client_streams:
            stream = channel.stream_stream(path, None, None)
            call = stream(None, metadata=metadata, timeout=10)
            await call.write(body)
            async for _ in call:
                pass
        elif server_streams:
            async for _ in channel.unary_stream(path, None, None)(
                body, metadata=metadata, timeout=10
            ):
                pass
        else:
            await channel.unary_unary(path, None, None)(body, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError(f"{path} accepted a malformed body")


def check(error: grpc.aio.AioRpcError, path: str, expected: set[grpc.StatusCode]) -> None:
    assert error.code() in expected, (path, error.code(), error.details())
    details = error.details() or ""
    for internal in ("Traceback", "DecodeError", "Exception", "Error parsing", "<class"):
        assert internal not in details, (path, details)


async def fuzz(
    channel: grpc.aio.Channel,
    service: str,
    expected: dict[str, set[grpc.StatusCode]] | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> int:
    return sum((await fuzz_by_method(channel, service, expected, metadata)).values())


async def fuzz_by_method(
    channel: grpc.aio.Channel,
    service: str,
    expected: dict[str, set[grpc.StatusCode]] | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> dict[str, int]:
    """Send every malformed body to every method; return how many each method got."""
    sent: dict[str, int] = {}
    for path, request_class, client_streams, server_streams in methods(service):
        for body in malformed_for(request_class):
            error = await call_raw(channel, path, body, client_streams, server_streams, metadata)
            check(error, path, (expected or {}).get(path, {grpc.StatusCode.INVALID_ARGUMENT}))
            name = path.rsplit("/", 1)[-1]
            sent[name] = sent.get(name, 0) + 1
    return sent


def test_malformed_bodies_to_every_host_rpc(tmp_path: Path) -> None:
    """Without the API token: UNAUTHENTICATED (the token is checked first); with
    it: INVALID_ARGUMENT, counted by method and code."""

    async def body() -> None:
        async with stack(f"sqlite:///{tmp_path / 'host.db'}", api_tokens=("good",)) as s:
            everything = {
                p: {grpc.StatusCode.UNAUTHENTICATED} for p, *_ in methods("shardkeep.v1.Host")
            }
            sent = await fuzz(s.channel, "shardkeep.v1.Host", everything)
            authorized = (("authorization", "Bearer good"),)
            sent += await fuzz(s.channel, "shardkeep.v1.Host", metadata=authorized)
            assert sent >= 2 * 4 * len(everything)
            counted = s.metrics.calls.labels("PutBackup", "INVALID_ARGUMENT")._value.get()
            assert counted == len(malformed_for(host_pb2.PutBackupRequest))

    run(body)


def test_malformed_bodies_to_every_relay_rpc() -> None:
    """CreateRoom without a coordinator credential: UNAUTHENTICATED; every other
    call (room tokens travel in the body): INVALID_ARGUMENT, streams included."""

    async def body() -> None:
        async with relay(MemoryBackend()) as client:
            channel = client._channel
            expected = {"/shardkeep.v1.Relay/CreateRoom": {grpc.StatusCode.UNAUTHENTICATED}}
            assert await fuzz(channel, "shardkeep.v1.Relay", expected) >= 5 * 4

    run(body)


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


def test_malformed_bodies_to_every_enclave_rpc(pki: SimulatedNitroPki, tmp_path: Path) -> None:
    """The host's calls into the enclave, the ceremony stream included: INVALID_ARGUMENT,
    each counted by method in the enclave's status report (which the host exports)."""

    async def body(enclave: Stack) -> None:
        address = f"unix:{tmp_path / 'enclave.sock'}"
        async with grpc.aio.insecure_channel(address) as channel:
            sent = await fuzz_by_method(channel, "shardkeep.v1.Enclave")
        assert sum(sent.values()) >= 4 * 4
        assert "RunCeremony" in sent and "GetAttestation" in sent
        status = await enclave.stub.GetStatus(enclave_pb2.GetStatusRequest())
        assert dict(status.malformed_requests) == sent

    with devkms(pki) as endpoint:
        run_enclave(with_enclave(pki, endpoint, tmp_path, Ed25519PrivateKey.generate(), body))


def test_oversized_attestation_nonce_is_invalid_argument(
    pki: SimulatedNitroPki, tmp_path: Path
) -> None:
    """A 1 MiB nonce sent to the enclave gave INTERNAL; every field is bounded."""

    async def body(enclave: Stack) -> None:
        request = enclave_pb2.GetAttestationRequest(nonce=b"\x00" * (1 << 20))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await enclave.stub.GetAttestation(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nonce must be at most 1024 bytes" in (caught.value.details() or "")
        ok = await enclave.stub.GetAttestation(enclave_pb2.GetAttestationRequest(nonce=b"n" * 1024))
        assert ok.document
        status = await enclave.stub.GetStatus(enclave_pb2.GetStatusRequest())
        assert dict(status.malformed_requests) == {"GetAttestation": 1}

    with devkms(pki) as endpoint:
        run_enclave(with_enclave(pki, endpoint, tmp_path, Ed25519PrivateKey.generate(), body))
