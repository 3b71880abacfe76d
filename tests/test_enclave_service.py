"""The enclave's gRPC service end to end: devkms, simulated NSM, sealed shares, client parties.

The test plays the host: it carries envelopes between the enclave's
RunCeremony stream and client parties running the same ``tss`` ceremonies.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.attestation import verify
from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA, create_server
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, envelope_pb2
from tests.enclave_harness import ClientParty, devkms, enclave_deps, signed
from tss.channel import Roster, StaticKey
from tss.curve import ecdsa_verify, schnorr_verify
from tss.keygen import Keygen
from tss.keyshare import KeyShare
from tss.session import Outbound, SecureSession
from tss.signing import Bip340Signing, EcdsaSigning

SCHEMES = {
    "bip340": ceremony_pb2.SCHEME_BIP340,
    "ecdsa-secp256k1": ceremony_pb2.SCHEME_ECDSA_SECP256K1,
}
DIGEST = bytes(range(32))
Tamper = Callable[[envelope_pb2.Envelope], envelope_pb2.Envelope]


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


class Stack:
    """An enclave on a Unix socket plus the host's view: its stub and what it stored."""

    def __init__(
        self, stub: enclave_pb2_grpc.EnclaveStub, identity: enclave_pb2.ProvisionResponse
    ) -> None:
        self.stub = stub
        self.identity = identity
        self.party = ceremony_pb2.Party(
            party_id=StaticKeyId.of(identity.static_key),
            static_key=identity.static_key,
            host_pubkey=identity.host_pubkey,
        )
        self.stored: list[ceremony_pb2.SealedShare] = []


class StaticKeyId:
    @staticmethod
    def of(static_key: bytes) -> str:
        from tss.channel import party_id

        return party_id(static_key)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def with_enclave(
    pki: SimulatedNitroPki,
    endpoint: str,
    tmp_path: Path,
    coordinator: Ed25519PrivateKey,
    body: Any,
    sealed_identity: bytes = b"",
) -> Any:
    running = await create_server(
        f"unix:{tmp_path / 'enclave.sock'}", enclave_deps(pki, endpoint, coordinator)
    )
    try:
        async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'enclave.sock'}") as channel:
            stub = enclave_pb2_grpc.EnclaveStub(channel)
            identity = await stub.Provision(
                enclave_pb2.ProvisionRequest(sealed_identity=sealed_identity)
            )
            return await body(Stack(stub, identity))
    finally:
        await running.server.stop(None)


async def host_loop(
    stack: Stack,
    request: ceremony_pb2.SignedCeremonyRequest,
    clients: dict[str, SecureSession[Any]],
    sealed: list[ceremony_pb2.SealedShare] = (),  # type: ignore[assignment]
    tamper: Tamper | None = None,
) -> ceremony_pb2.CeremonyResult:
    """Carry one ceremony between the enclave stream and the client sessions."""
    call = stack.stub.RunCeremony()

    write_failed = False

    async def write(item: enclave_pb2.CeremonyInput) -> None:
        # A write can lose the race with the enclave aborting the stream; then
        # stop writing and let the next read report the stream's own status.
        nonlocal write_failed
        if write_failed:
            return
        try:
            await call.write(item)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            write_failed = True

    await write(
        enclave_pb2.CeremonyInput(
            start=enclave_pb2.CeremonyStart(request=request, sealed_shares=sealed)
        )
    )
    enclave_id = stack.party.party_id

    async def route(outs: list[Outbound], sender: str) -> None:
        for o in outs:
            env = envelope_pb2.Envelope(
                sender=sender, recipient=o.recipient_id, round=o.round, payload=o.envelope
            )
            if o.recipient_id == enclave_id:
                await write(enclave_pb2.CeremonyInput(inbound=tamper(env) if tamper else env))
            else:
                await route(clients[o.recipient_id].receive(o.envelope), o.recipient_id)

    for pid, session in clients.items():
        await route(session.start(), pid)
    while True:
        out = await call.read()
        if out is grpc.aio.EOF:
            raise AssertionError("the enclave ended the stream without a result")
        kind = out.WhichOneof("output")
        if kind == "outbound":
            await route(
                clients[out.outbound.recipient].receive(out.outbound.payload),
                out.outbound.recipient,
            )
        elif kind == "store":
            stack.stored.append(out.store)
            await write(
                enclave_pb2.CeremonyInput(store_ack=enclave_pb2.StoreAck(epoch=out.store.epoch))
            )
        else:
            await call.done_writing()
            assert all(s.done for s in clients.values())
            return out.result


def keygen_request(
    scheme: str,
    parties: list[ceremony_pb2.Party],
    threshold: int,
    owner: Ed25519PrivateKey | None = None,
) -> ceremony_pb2.CeremonyRequest:
    return ceremony_pb2.CeremonyRequest(
        ceremony_id=f"keygen-{secrets.token_hex(4)}",
        room_id="room-1",
        kind=ceremony_pb2.CEREMONY_KIND_KEYGEN,
        scheme=SCHEMES[scheme],
        wallet_id="wallet-1",
        threshold=threshold,
        parties=parties,
        owner_key=owner.public_key().public_bytes_raw() if owner else b"",
    )


def client_keygen(
    scheme: str, client: ClientParty, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[KeyShare]:
    roster = Roster.from_parties([(p.party_id, bytes(p.static_key)) for p in request.parties])
    ceremony = Keygen(
        scheme,  # type: ignore[arg-type]
        client.hostseckey,
        [bytes(p.host_pubkey) for p in request.parties],
        request.threshold,
        secrets.token_bytes,
    )
    return SecureSession(
        ceremony,
        client.static_key,
        roster,
        request.room_id,
        request.ceremony_id,
        secrets.token_bytes,
    )


def sign_request(
    request: ceremony_pb2.CeremonyRequest, signers: list[int]
) -> ceremony_pb2.CeremonyRequest:
    return ceremony_pb2.CeremonyRequest(
        ceremony_id=f"sign-{secrets.token_hex(4)}",
        room_id=request.room_id,
        kind=ceremony_pb2.CEREMONY_KIND_SIGN,
        scheme=request.scheme,
        wallet_id=request.wallet_id,
        parties=request.parties,
        digest=DIGEST,
        signers=signers,
        epoch=0,
    )


def client_sign(
    share: KeyShare, key: StaticKey, request: ceremony_pb2.CeremonyRequest
) -> SecureSession[Any]:
    signers = list(request.signers)
    roster = Roster.from_parties(
        [(request.parties[i].party_id, bytes(request.parties[i].static_key)) for i in signers],
        signers,
    )
    session_id = f"{request.room_id}/{request.ceremony_id}".encode()
    kind = Bip340Signing if share.scheme == "bip340" else EcdsaSigning
    ceremony = kind(share, signers, bytes(request.digest), session_id, secrets.token_bytes)
    return SecureSession(
        ceremony, key, roster, request.room_id, request.ceremony_id, secrets.token_bytes
    )


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_keygen_and_sign_with_the_server_share(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request(scheme, [client.party, stack.party], 2)
        session = client_keygen(scheme, client, request)
        result = await host_loop(
            stack, signed(request, coordinator), {client.party.party_id: session}
        )
        share = session.result
        assert result.public_key == share.public_key and result.epoch == 0
        (stored,) = stack.stored
        assert (stored.wallet_id, stored.share_index, stored.epoch) == ("wallet-1", 1, 0)
        # The host only ever sees ciphertext: no secret of either party is in it.
        for secret in (share.secret_share_bytes,):
            assert secret not in stored.ciphertext and secret not in stored.encrypted_data_key

        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client.static_key, sign)
        result = await host_loop(
            stack, signed(sign, coordinator), {client.party.party_id: signer}, [stored]
        )
        if scheme == "bip340":
            assert schnorr_verify(DIGEST, share.public_key[1:], result.signature)
        else:
            assert ecdsa_verify(DIGEST, share.public_key, result.signature)
        assert (
            signer.result in (result.signature,)
            or getattr(signer.result, "signature", None) == result.signature
        )

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_attestation_binds_the_static_key(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()

    async def body(stack: Stack) -> None:
        nonce = secrets.token_bytes(32)
        reply = await stack.stub.GetAttestation(enclave_pb2.GetAttestationRequest(nonce=nonce))
        document = verify(reply.document, root_certificate=pki.root_certificate_pem, nonce=nonce)
        assert document.public_key == stack.identity.static_key

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_the_sealed_identity_survives_a_restart(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    first: list[enclave_pb2.ProvisionResponse] = []

    async def remember(stack: Stack) -> None:
        first.append(stack.identity)

    async def reload(stack: Stack) -> None:
        again = stack.identity
        assert again.static_key == first[0].static_key and again.host_pubkey == first[0].host_pubkey
        # Once provisioned, the host cannot swap in another identity.
        fresh = stack.stub.Provision(enclave_pb2.ProvisionRequest())
        await expect_status(fresh, grpc.StatusCode.FAILED_PRECONDITION)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, remember))
    sealed = first[0].sealed_identity
    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, reload, sealed))


async def expect_status(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


def test_authorisation_is_checked_inside_the_enclave(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        forged = signed(request, Ed25519PrivateKey.generate())  # not the pinned coordinator
        session = client_keygen("bip340", client, request)
        await expect_status(
            host_loop(stack, forged, {client.party.party_id: session}),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        good = signed(request, coordinator)
        session = client_keygen("bip340", client, request)
        await host_loop(stack, good, {client.party.party_id: session})
        replay = client_keygen("bip340", client, request)
        await expect_status(
            host_loop(stack, good, {client.party.party_id: replay}),
            grpc.StatusCode.PERMISSION_DENIED,
        )

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_tampering_host_gets_typed_errors(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request("bip340", [client.party, stack.party], 2)
        session = client_keygen("bip340", client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        share, (stored,) = session.result, stack.stored
        sign = sign_request(request, [0, 1])

        def sign_with(sealed: list[ceremony_pb2.SealedShare], tamper: Tamper | None = None) -> Any:
            signer = client_sign(share, client.static_key, sign)
            return host_loop(
                stack, signed(sign, coordinator), {client.party.party_id: signer}, sealed, tamper
            )

        flipped = ceremony_pb2.SealedShare()
        flipped.CopyFrom(stored)
        flipped.ciphertext = stored.ciphertext[:-1] + bytes([stored.ciphertext[-1] ^ 1])
        await expect_status(sign_with([flipped]), grpc.StatusCode.FAILED_PRECONDITION)
        other_wallet = ceremony_pb2.SealedShare()
        other_wallet.CopyFrom(stored)
        other_wallet.wallet_id = (
            "wallet-2"  # the host relabels another wallet's share: the binding differs
        )
        sign.wallet_id = "wallet-2"
        await expect_status(sign_with([other_wallet]), grpc.StatusCode.FAILED_PRECONDITION)
        sign.wallet_id = "wallet-1"
        await expect_status(sign_with([]), grpc.StatusCode.FAILED_PRECONDITION)

        def flip_payload(env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
            env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 1])
            return env

        error = await expect_status(sign_with([stored], flip_payload), grpc.StatusCode.ABORTED)
        culprits = dict(error.trailing_metadata() or ()).get(CULPRITS_METADATA)
        assert culprits == client.party.party_id
        # The stored share is untouched: signing still works.
        await sign_with([stored])

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
