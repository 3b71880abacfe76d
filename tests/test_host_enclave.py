"""The host in front of the real enclave: coordinator -> host -> enclave, traffic over the relay.

Everything is real except the hardware: the enclave service (enclave/service.py)
on a Unix socket with the simulated NSM and devkms, the in-memory relay, the
SQLite store, and a client party running the ``tss`` ceremony over the relay.
The host's own behaviour (failures, epochs, logs) is tested against a fake
enclave in tests/test_host_service.py; this file checks that the two
processes agree on the stream contract.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.attestation import verify
from enclave import service as enclave_service
from enclave.errors import NotProvisioned
from enclave.nsm import SimulatedNitroPki
from enclave.service import create_server as create_enclave_server
from host import errors as host_errors
from host.enclave_link import LinkConfig
from host.service import create_server
from host.store import Store
from host.stores import open_store
from relay.client import CreatedRoom, RelayClient
from relay.memory import MemoryBackend
from relay.service import create_server as create_relay_server
from shardkeep import logs
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, host_pb2, host_pb2_grpc
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    client_keygen,
    client_sign,
    devkms,
    enclave_deps,
    keygen_request,
    sign_request,
    signed,
)
from tests.relay_harness import COORDINATOR, harness_admitter, run
from tss.channel import party_id
from tss.curve import schnorr_verify
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


@dataclass
class Stack:
    host: host_pb2_grpc.HostStub
    relay: RelayClient
    store: Store
    server_party: ceremony_pb2.Party
    restart_enclave: Callable[[], Awaitable[None]]


async def attested_server_party(
    host: host_pb2_grpc.HostStub, pki: SimulatedNitroPki
) -> ceremony_pb2.Party:
    """What a coordinator learns of the server party: both its keys, attested, via the host."""
    nonce = secrets.token_bytes(32)
    reply = await host.GetAttestation(host_pb2.HostAttestationRequest(nonce=nonce))
    document = verify(reply.document, root_certificate=pki.root_certificate_pem, nonce=nonce)
    if document.public_key is None or document.user_data is None:
        raise AssertionError("the attestation lacks the server party's keys")
    return ceremony_pb2.Party(
        party_id=party_id(document.public_key),
        static_key=document.public_key,
        host_pubkey=document.user_data,
    )


@asynccontextmanager
async def real_stack(
    pki: SimulatedNitroPki,
    endpoint: str,
    tmp_path: Path,
    coordinator: Ed25519PrivateKey,
    link_config: LinkConfig | None = None,
) -> AsyncIterator[Stack]:
    enclave_address = f"unix:{tmp_path / 'enclave.sock'}"
    enclave = await create_enclave_server(enclave_address, enclave_deps(pki, endpoint, coordinator))

    async def restart_enclave() -> None:
        """A new enclave process on the same socket: no identity until provisioned."""
        nonlocal enclave
        await enclave.server.stop(None)
        enclave = await create_enclave_server(
            enclave_address, enclave_deps(pki, endpoint, coordinator)
        )

    backend = MemoryBackend()
    relay_server, relay_port = await create_relay_server(
        "127.0.0.1:0", backend, admitter=harness_admitter()
    )
    await relay_server.start()
    store = open_store(f"sqlite:///{tmp_path / 'host.db'}")
    enclave_channel = grpc.aio.insecure_channel(enclave_address)
    host_relay = RelayClient.insecure(f"127.0.0.1:{relay_port}")
    coordinator_relay = RelayClient.insecure(f"127.0.0.1:{relay_port}", coordinator=COORDINATOR)
    channel: grpc.aio.Channel | None = None
    server: grpc.aio.Server | None = None
    try:
        server, port = await create_server(
            "127.0.0.1:0", store=store, enclave_channel=enclave_channel, relay=host_relay,
            link_config=link_config,
        )  # fmt: skip
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        host = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
        party = await attested_server_party(host, pki)
        yield Stack(host, coordinator_relay, store, party, restart_enclave)
    finally:
        if channel is not None:
            await channel.close(None)
        if server is not None:
            await server.stop(None)
        await host_relay.aclose()
        await coordinator_relay.aclose()
        await enclave_channel.close(None)
        await relay_server.stop(None)
        await backend.aclose()
        await enclave.server.stop(None)
        store.close()


async def play(
    relay: RelayClient,
    room: CreatedRoom,
    me: str,
    ceremony_id: str,
    session: SecureSession[Any],
) -> None:
    """Run a client party's ceremony over the relay until its session is done."""
    async with relay.join(room.room_id, me, room.join_tokens[me]) as link:

        async def send(outs: list[Outbound]) -> None:
            for out in outs:
                await link.send(
                    out.envelope,
                    ceremony_id=ceremony_id,
                    round_=out.round,
                    recipient=out.recipient_id,
                )

        async def step(outs: list[Outbound]) -> None:
            await send(outs)
            if session.ceremony.awaiting_save:  # saved at once (test memory)
                await send(session.confirm_saved())

        await step(session.start())
        while not session.done:
            delivery = await link.receive()
            await step(session.receive(bytes(delivery.envelope.payload)))


Method = Callable[..., Awaitable[ceremony_pb2.CeremonyResult]]


async def ceremony(
    s: Stack,
    method: Method,
    request: ceremony_pb2.CeremonyRequest,
    coordinator: Ed25519PrivateKey,
    client: ClientParty,
    session_for: Callable[[ceremony_pb2.CeremonyRequest], SecureSession[Any]],
) -> ceremony_pb2.CeremonyResult:
    """Run one ceremony: the coordinator's call through the host, the client over the relay."""
    room = await s.relay.create_room(
        [client.party.party_id, s.server_party.party_id], ttl_ms=60_000
    )
    request.room_id = room.room_id
    # The client binds the enclave's challenge (session id and channels): fetch it first.
    issued = await s.host.GetChallenge(host_pb2.HostChallengeRequest())
    request.challenge = issued.challenge
    session = session_for(request)
    peer = asyncio.create_task(
        play(s.relay, room, client.party.party_id, request.ceremony_id, session)
    )
    try:
        result = await method(
            host_pb2.HostCeremonyRequest(
                request=signed(request, coordinator, challenge=issued.challenge),
                relay_token=room.join_tokens[s.server_party.party_id],
            ),
            timeout=30,
        )
        await asyncio.wait_for(peer, 10)
    finally:
        peer.cancel()
        await s.relay.close_room(room.room_id, room.admin_token)
    return result


def test_keygen_sign_and_attestation_through_the_host(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body() -> None:
        async with real_stack(pki, kms_endpoint, tmp_path, coordinator) as s:
            keygen = keygen_request("bip340", [client.party, s.server_party], 2)
            sessions: list[SecureSession[KeyShare]] = []

            def keygen_session(request: ceremony_pb2.CeremonyRequest) -> SecureSession[Any]:
                sessions.append(client_keygen("bip340", client, request))
                return sessions[-1]

            result = await ceremony(s, s.host.Keygen, keygen, coordinator, client, keygen_session)
            share = sessions[0].result
            assert result.public_key == share.public_key and result.epoch == 0
            wallet = s.store.get_wallet("wallet-1")
            assert (wallet.current_epoch, wallet.public_key) == (0, share.public_key)
            (stored,) = s.store.current_shares("wallet-1")
            assert (stored.share.share_index, stored.share.epoch) == (1, 0)
            assert stored.share.ciphertext.find(share.secret_share_bytes) == -1

            sign = sign_request(keygen, [0, 1])
            signature = await ceremony(
                s,
                s.host.Sign,
                sign,
                coordinator,
                client,
                lambda r: client_sign(share, client, r),
            )
            assert schnorr_verify(DIGEST, share.public_key[1:], signature.signature)

    run(body)


def test_the_enclave_verdict_reaches_the_coordinator(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    impostor = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body() -> None:
        async with real_stack(pki, kms_endpoint, tmp_path, coordinator) as s:
            keygen = keygen_request("bip340", [client.party, s.server_party], 2)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ceremony(
                    s,
                    s.host.Keygen,
                    keygen,
                    impostor,
                    client,
                    lambda r: client_keygen("bip340", client, r),
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert caught.value.details() == "no valid coordinator signature"
            assert s.store.list_wallets() == []

    run(body)


@pytest.mark.parametrize("transport", ["call", "session"])
def test_a_restarted_enclave_is_provisioned_again_when_it_refuses(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, transport: str
) -> None:
    """The host checks no status before a ceremony: the new enclave process refuses the
    signature as not provisioned, the host provisions it and runs the ceremony again
    (on the session transport, on a new session stream)."""
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()
    out = io.StringIO()
    logs.configure("host", stream=out)
    link = LinkConfig(session_transport=transport == "session")

    async def body() -> None:
        async with real_stack(pki, kms_endpoint, tmp_path, coordinator, link) as s:
            keygen = keygen_request("bip340", [client.party, s.server_party], 2)
            sessions: list[SecureSession[KeyShare]] = []

            def keygen_session(request: ceremony_pb2.CeremonyRequest) -> SecureSession[Any]:
                sessions.append(client_keygen("bip340", client, request))
                return sessions[-1]

            await ceremony(s, s.host.Keygen, keygen, coordinator, client, keygen_session)
            share = sessions[0].result
            await s.restart_enclave()

            sign = sign_request(keygen, [0, 1])
            signature = await ceremony(
                s, s.host.Sign, sign, coordinator, client, lambda r: client_sign(share, client, r)
            )

            assert schnorr_verify(DIGEST, share.public_key[1:], signature.signature)
            assert "provisioning it again" in out.getvalue()
            # The same identity came back: the attested server party is unchanged.
            assert await attested_server_party(s.host, pki) == s.server_party

    run(body)


def test_host_and_enclave_name_the_not_provisioned_reason_alike() -> None:
    assert host_errors.NOT_PROVISIONED == enclave_service.NOT_PROVISIONED
    assert enclave_service.reason_for(NotProvisioned("x")) == host_errors.NOT_PROVISIONED


class _CountingEnclave(enclave_service.EnclaveServicer):
    """The real enclave service, counting the calls that carry ceremonies."""

    calls: ClassVar[Counter[str]] = Counter()

    async def RunCeremony(self, request_iterator: Any, context: Any) -> Any:
        self.calls["RunCeremony"] += 1
        async for output in super().RunCeremony(request_iterator, context):
            yield output

    async def GetChallenge(self, request: Any, context: Any) -> Any:
        self.calls["GetChallenge"] += 1
        return await super().GetChallenge(request, context)

    async def Session(self, request_iterator: Any, context: Any) -> Any:
        self.calls["Session"] += 1
        async for output in super().Session(request_iterator, context):
            yield output


def test_ceremonies_share_one_enclave_session_stream(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the session transport, keygen, signatures in parallel and a refused
    ceremony all run as channels of one Enclave.Session stream, their challenges too."""
    monkeypatch.setattr(enclave_service, "EnclaveServicer", _CountingEnclave)
    _CountingEnclave.calls.clear()
    coordinator = Ed25519PrivateKey.generate()
    impostor = Ed25519PrivateKey.generate()
    client = ClientParty()
    session = LinkConfig(session_transport=True)

    async def body() -> None:
        async with real_stack(pki, kms_endpoint, tmp_path, coordinator, session) as s:
            keygen = keygen_request("bip340", [client.party, s.server_party], 2)
            sessions: list[SecureSession[KeyShare]] = []

            def keygen_session(request: ceremony_pb2.CeremonyRequest) -> SecureSession[Any]:
                sessions.append(client_keygen("bip340", client, request))
                return sessions[-1]

            await ceremony(s, s.host.Keygen, keygen, coordinator, client, keygen_session)
            share = sessions[0].result

            async def sign() -> bytes:
                request = sign_request(keygen, [0, 1])
                result = await ceremony(
                    s, s.host.Sign, request, coordinator, client,
                    lambda r: client_sign(share, client, r),
                )  # fmt: skip
                return bytes(result.signature)

            signatures = await asyncio.gather(*(sign() for _ in range(3)))
            for signature in signatures:
                assert schnorr_verify(DIGEST, share.public_key[1:], signature)

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ceremony(
                    s, s.host.Sign, sign_request(keygen, [0, 1]), impostor, client,
                    lambda r: client_sign(share, client, r),
                )  # fmt: skip
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert caught.value.details() == "no valid coordinator signature"
            # The stream outlives a refused ceremony.
            assert schnorr_verify(DIGEST, share.public_key[1:], await sign())

    run(body)
    assert _CountingEnclave.calls == Counter({"Session": 1})


def test_a_ceremony_past_its_deadline_is_cancelled_in_the_enclave_and_the_session_goes_on(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body() -> None:
        link = LinkConfig(session_transport=True, deadline_margin_s=0.0)
        async with real_stack(pki, kms_endpoint, tmp_path, coordinator, link) as s:
            keygen = keygen_request("bip340", [client.party, s.server_party], 2)
            sessions: list[SecureSession[KeyShare]] = []

            def keygen_session(request: ceremony_pb2.CeremonyRequest) -> SecureSession[Any]:
                sessions.append(client_keygen("bip340", client, request))
                return sessions[-1]

            await ceremony(s, s.host.Keygen, keygen, coordinator, client, keygen_session)
            share = sessions[0].result

            # The device never plays: the enclave waits for its round 1 until the deadline.
            request = sign_request(keygen, [0, 1])
            room = await s.relay.create_room(
                [client.party.party_id, s.server_party.party_id], ttl_ms=60_000
            )
            request.room_id = room.room_id
            issued = await s.host.GetChallenge(host_pb2.HostChallengeRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.Sign(
                    host_pb2.HostCeremonyRequest(
                        request=signed(request, coordinator, challenge=issued.challenge),
                        relay_token=room.join_tokens[s.server_party.party_id],
                    ),
                    timeout=1.0,
                )
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await s.relay.close_room(room.room_id, room.admin_token)

            async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'enclave.sock'}") as channel:
                stub = enclave_pb2_grpc.EnclaveStub(channel)  # type: ignore[no-untyped-call]
                for _ in range(100):  # the cancel frame reaches the enclave
                    status = await stub.GetStatus(enclave_pb2.GetStatusRequest())
                    if status.ceremonies_running == 0:
                        break
                    await asyncio.sleep(0.02)
                assert status.ceremonies_running == 0

            signature = await ceremony(
                s, s.host.Sign, sign_request(keygen, [0, 1]), coordinator, client,
                lambda r: client_sign(share, client, r),
            )  # fmt: skip
            assert schnorr_verify(DIGEST, share.public_key[1:], signature.signature)

    run(body)
