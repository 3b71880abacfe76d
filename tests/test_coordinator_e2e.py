"""A device that holds no coordinator key creates wallets and signs through a coordinator.

The development stack (devkms, relay, enclave, host as processes) plus an
in-process coordinator service; devices talk to the coordinator and the
relay only. The attacks: an unenrolled device, a reused enrollment code, a
replayed device call, a device signing with another device's wallet, and a
coordinator that swaps the server party for a key of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
from coincurve import PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from client.cli.devstack import DevStack
from client.sdk.device import CoordinatorRefused
from client.sdk.transport import Transport
from coordinator.coordinator import Coordinator
from relay.client import RelayClient
from relay.errors import RoomClosedError, UnauthenticatedError
from shardkeep.device_auth import (
    FRESHNESS_MS,
    DeviceCallError,
    ReplayGuard,
    sign_device_call,
    verify_device_call,
)
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc
from tests.coordinator_support import CODES, new_device, socket_dir, stack, with_coordinator
from tss.channel import StaticKey
from tss.curve import schnorr_verify
from tss.dkg.chilldkg import hostpubkey_gen
from tss.signing import RecoverableSignature

__all__ = ["socket_dir", "stack"]  # the fixtures (tests.coordinator_support)

DIGEST = bytes(range(32))
MESSAGE = b"an ed25519 wallet signs this message itself, not a digest of it"


@pytest.mark.parametrize("host_transport", ["call", "session"])
@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1", "ed25519"])
def test_device_creates_a_wallet_and_signs_through_the_coordinator(
    stack: DevStack, socket_dir: Path, scheme: Any, host_transport: str
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet(scheme)
            signed = MESSAGE if scheme == "ed25519" else DIGEST
            signature = await phone.sign(wallet, signed)
        assert wallet.index == 0 and len(wallet.parties) == 2
        record = coordinator.wallet(wallet.wallet_id)
        assert record is not None and record.public_key == wallet.public_key  # public data only
        if scheme == "ed25519":  # RFC 8032 over the message itself, checked by libsodium
            assert isinstance(signature, bytes)
            VerifyKey(wallet.public_key).verify(MESSAGE, signature)
        elif isinstance(signature, RecoverableSignature):
            recovered = PublicKey.from_signature_and_message(
                signature.to_bytes65(), DIGEST, hasher=None
            )
            assert recovered.format() == wallet.public_key
        else:
            assert schnorr_verify(DIGEST, wallet.public_key[1:], signature)

    with_coordinator(stack, socket_dir, body, host_transport=host_transport)


class _UnaryCalls(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, called: list[str]) -> None:
        self.called = called

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        self.called.append(_method(details))
        return await continuation(details, request)


class _StreamCalls(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, called: list[str]) -> None:
        self.called = called

    async def intercept_stream_stream(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, requests: Any
    ) -> Any:
        self.called.append(_method(details))
        return await continuation(details, requests)


def _method(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method


@dataclass(frozen=True)
class WatchedRelayTransport(Transport):
    """The stack's plaintext transport; ``relay_calls`` records the method of every
    relay call (unary, and streams such as Relay.Session)."""

    relay_calls: list[str] = field(default_factory=list)

    def relay_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        assert self.tls is None  # the stack of these tests serves plaintext on Unix sockets
        # One interceptor per kind of call: a channel files each under one kind only.
        watch = [_UnaryCalls(self.relay_calls), _StreamCalls(self.relay_calls)]
        return grpc.aio.insecure_channel(address, options=options, interceptors=watch)


@pytest.mark.parametrize("relay_transport", ["call", "session"])
def test_coordinator_makes_rooms_over_its_relay_transport(
    stack: DevStack, socket_dir: Path, relay_transport: Literal["call", "session"]
) -> None:
    """On the session transport the coordinator signs room specs that the first join
    creates: no CreateRoom (nor CloseRoom) call; on the call fallback, one per ceremony."""
    transport = WatchedRelayTransport(stack.transport.tls, stack.transport.api_token)

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
            signature = await phone.sign(wallet, DIGEST)
        assert schnorr_verify(DIGEST, wallet.public_key[1:], signature)

    with_coordinator(stack, socket_dir, body, relay_transport=relay_transport, transport=transport)
    called = transport.relay_calls
    relay = "/shardkeep.v1.Relay/"
    if relay_transport == "session":
        assert relay + "CreateRoom" not in called and relay + "CloseRoom" not in called
        assert called.count(relay + "Session") == 1  # one stream carries every room close
    else:
        assert called.count(relay + "CreateRoom") == 2  # the keygen's room and the signature's
        assert relay + "Session" not in called


class SpecKeepingCoordinator(Coordinator):
    """Keeps every StartedCeremony it hands a device (room token and signed spec)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[coordinator_pb2.StartedCeremony] = []

    async def start(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.StartedCeremony:
        started = await super().start(call)
        self.started.append(started)
        return started


def test_a_device_replaying_its_room_spec_after_the_ceremony_gets_no_room(
    stack: DevStack, socket_dir: Path
) -> None:
    """A device holds its room's signed spec and its own token (the session transport): once
    the ceremony is over and the coordinator closed the room, joining with them again
    is refused; the spec's single-use credential makes no second room."""

    async def body(coordinator: Coordinator, address: str) -> None:
        assert isinstance(coordinator, SpecKeepingCoordinator)
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            await phone.create_wallet("bip340")
            party = phone.identity.party_id
        (started,) = coordinator.started
        assert started.HasField("relay_room")
        room_id = ceremony_pb2.CeremonyRequest.FromString(started.request).room_id
        async with RelayClient(stack.transport.relay_channel(stack.relay_address)) as relay:
            replay = relay.join(room_id, party, started.join_token, room=started.relay_room)
            # Closed (while its tombstone lasts), else a replayed credential.
            with pytest.raises((RoomClosedError, UnauthenticatedError)):
                async with replay:
                    pass

    with_coordinator(stack, socket_dir, body, SpecKeepingCoordinator)


def test_unenrolled_device_is_refused(stack: DevStack, socket_dir: Path) -> None:
    """Device impersonation: a device key the coordinator never enrolled asks for a keygen."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as stranger:
            with pytest.raises(CoordinatorRefused) as info:
                await stranger.create_wallet("bip340")
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "not enrolled" in str(info.value)

    with_coordinator(stack, socket_dir, body)


def test_enrollment_code_works_once(stack: DevStack, socket_dir: Path) -> None:
    """A leaked, already used enrollment code enrolls no second device."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as first, new_device(stack, address) as second:
            await first.enroll(CODES[0])
            with pytest.raises(CoordinatorRefused) as info:
                await second.enroll(CODES[0])
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    with_coordinator(stack, socket_dir, body)


def test_replayed_device_call_is_refused(stack: DevStack, socket_dir: Path) -> None:
    """A recorded device call sent again (by the network or the host) is refused as a replay."""
    key = Ed25519PrivateKey.generate()

    async def body(coordinator: Coordinator, address: str) -> None:
        coordinator.enroll(CODES[0], key.public_key().public_bytes_raw())
        ask = coordinator_pb2.FinishAsk(ceremony_id="sign-0000").SerializeToString()
        call = sign_device_call(key, "FinishCeremony", ask)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as first:
                await stub.FinishCeremony(call)
            with pytest.raises(grpc.aio.AioRpcError) as replay:
                await stub.FinishCeremony(call)
            wrong_method = sign_device_call(key, "StartCeremony", ask)
            with pytest.raises(grpc.aio.AioRpcError) as moved:
                await stub.FinishCeremony(wrong_method)
        assert first.value.code() == grpc.StatusCode.NOT_FOUND  # admitted, no such ceremony
        assert replay.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "replayed" in (replay.value.details() or "")
        assert moved.value.code() == grpc.StatusCode.UNAUTHENTICATED  # signed for another RPC

    with_coordinator(stack, socket_dir, body)


def test_device_cannot_sign_with_another_devices_wallet(stack: DevStack, socket_dir: Path) -> None:
    """Cross-wallet signing: an enrolled device asks for a signature with a wallet it is not in."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as alice, new_device(stack, address) as bob:
            await alice.enroll(CODES[0])
            await bob.enroll(CODES[1])
            wallet = await alice.create_wallet("bip340")
            with pytest.raises(CoordinatorRefused) as info:
                await bob.sign(wallet, DIGEST)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED

    with_coordinator(stack, socket_dir, body)


class SwappingCoordinator(Coordinator):
    """A malicious coordinator: puts a server party of its own into the keygen."""

    def _server_party(self, document: bytes, nonce: bytes) -> ceremony_pb2.Party:
        impostor = StaticKey.generate(bytes(range(32)))
        return ceremony_pb2.Party(
            party_id=impostor.party_id,
            static_key=bytes(impostor.public_key),
            host_pubkey=hostpubkey_gen(bytes(range(1, 33))),
        )


def test_coordinator_swapping_the_server_party_is_refused_by_the_device(
    stack: DevStack, socket_dir: Path
) -> None:
    """The device checks the attested server party itself and never joins the impostor's room."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            with pytest.raises(CoordinatorRefused, match="attested server"):
                await phone.create_wallet("bip340")

    with_coordinator(stack, socket_dir, body, SwappingCoordinator)


class DigestSwappingCoordinator(Coordinator):
    """A malicious coordinator: asks the server share to sign another digest than the device's."""

    def _wallet_request(self, ask: Any, *args: Any) -> tuple[ceremony_pb2.CeremonyRequest, int]:
        request, index = super()._wallet_request(ask, *args)
        if request.kind == ceremony_pb2.CEREMONY_KIND_SIGN:
            request.digest = bytes(32)
        return request, index


def test_coordinator_swapping_the_digest_is_refused_by_the_device(
    stack: DevStack, socket_dir: Path
) -> None:
    """The device signs only the digest it asked for; a changed request is refused unjoined."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
            with pytest.raises(CoordinatorRefused, match="differs from the ask"):
                await phone.sign(wallet, DIGEST)

    with_coordinator(stack, socket_dir, body, DigestSwappingCoordinator)


class MessageSwappingCoordinator(Coordinator):
    """A malicious coordinator: asks the server share to sign another message (e.g. a
    Solana transfer to itself) than the one the device asked for."""

    def _wallet_request(self, ask: Any, *args: Any) -> tuple[ceremony_pb2.CeremonyRequest, int]:
        request, index = super()._wallet_request(ask, *args)
        if request.kind == ceremony_pb2.CEREMONY_KIND_SIGN:
            request.message = b"pay the coordinator"
        return request, index


def test_coordinator_swapping_the_ed25519_message_is_refused_by_the_device(
    stack: DevStack, socket_dir: Path
) -> None:
    """An ed25519 device signs only the message it asked for; the changed request is
    refused before the device joins, so no signature of the other message exists."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("ed25519")
            with pytest.raises(CoordinatorRefused, match="differs from the ask"):
                await phone.sign(wallet, MESSAGE)

    with_coordinator(stack, socket_dir, body, MessageSwappingCoordinator)


def test_stale_device_call_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    now = [1_000_000]
    guard = ReplayGuard(lambda: now[0])
    call = sign_device_call(key, "StartCeremony", b"body", now_ms=now[0] - FRESHNESS_MS - 1)
    verify_device_call(call, "StartCeremony")  # well signed, but old
    with pytest.raises(DeviceCallError, match="stale"):
        guard.check(call)
    tampered = sign_device_call(key, "StartCeremony", b"body", now_ms=now[0])
    tampered.body = b"other"
    with pytest.raises(DeviceCallError, match="does not verify"):
        verify_device_call(tampered, "StartCeremony")


def test_coordinator_service_process(stack: DevStack, socket_dir: Path) -> None:
    """``python -m coordinator.main`` serves devices: enroll, keygen, sign."""
    codes = socket_dir / "codes"
    codes.write_text("code-process\n")
    address = f"unix:{socket_dir / 'c.sock'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator.main", "--listen", address,
         "--host", stack.host_address, "--relay", stack.relay_address,
         "--coordinator-key", str(stack.directory / "coordinator.key"),
         "--root", str(stack.directory / "pki" / "root.pem"),
         "--enrollment-codes", str(codes), "--registry", str(socket_dir / "registry.db")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"shardkeep-coordinator listening on {address}"

        async def main() -> None:
            async with new_device(stack, address) as phone:
                await phone.enroll("code-process")
                wallet = await phone.create_wallet("bip340")
                signature = await phone.sign(wallet, DIGEST)
            assert isinstance(signature, bytes)
            assert schnorr_verify(DIGEST, wallet.public_key[1:], signature)

        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_ecdsa_device_renews_its_pair_setup_after_an_enclave_restart(
    stack: DevStack, socket_dir: Path
) -> None:
    """The enclave forgets its DKLs23 pair setups on restart; the device runs a new one and signs.

    Last in this module: it restarts the stack's enclave.
    """

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("ecdsa-secp256k1")
            before = wallet.server_setup_id()
            await stack.restart("enclave")
            signature = await phone.sign(wallet, DIGEST)
        assert before is not None and wallet.server_setup_id() not in (None, before)
        assert isinstance(signature, RecoverableSignature)
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), DIGEST, hasher=None
        )
        assert recovered.format() == wallet.public_key

    with_coordinator(stack, socket_dir, body)
