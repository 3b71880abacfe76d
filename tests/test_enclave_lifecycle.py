"""Refresh, reshare and export with the server share: the real enclave service in process.

As in test_enclave_service.py the test plays the host (devkms, simulated NSM,
sealed shares) and the client parties, which lay out each ceremony with
``shardkeep.lifecycle`` exactly as the enclave does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from enclave import identity
from enclave.nsm import SimulatedNitroPki
from enclave.service import CULPRITS_METADATA
from shardkeep.lifecycle import keyring_to_proto
from shardkeep.v1 import ceremony_pb2
from tests.enclave_harness import (
    DIGEST,
    SCHEMES,
    ClientParty,
    Stack,
    Tolerant,
    client_keygen,
    client_lifecycle,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    keyring_request,
    lifecycle_request,
    run,
    sign_request_at,
    signed,
    with_enclave,
)
from tss import local
from tss.ceremony import Message
from tss.certificate import verify_certificate
from tss.curve import Point, ecdsa_verify, schnorr_verify
from tss.ed25519_keys import sign_expanded
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring, Reshare

K = ceremony_pb2.CeremonyKind
REFRESH, RESHARE, EXPORT = K.CEREMONY_KIND_REFRESH, K.CEREMONY_KIND_RESHARE, K.CEREMONY_KIND_EXPORT


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


### Helpers


def verifies(public_key: bytes, signature: bytes) -> bool:
    if len(public_key) == 32:  # ed25519: RFC 8032 over the message (the harness signs DIGEST)
        try:
            VerifyKey(public_key).verify(DIGEST, signature)
        except BadSignatureError:
            return False
        return True
    if len(signature) == 64 and schnorr_verify(DIGEST, public_key[1:], signature):
        return True
    return ecdsa_verify(DIGEST, public_key, signature)


async def expect_status(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


def culprits_of(error: grpc.aio.AioRpcError) -> str | None:
    metadata: Any = error.trailing_metadata() or ()
    value = dict(metadata).get(CULPRITS_METADATA)
    return None if value is None else str(value)


def misbehaving(to_seat: int, tamper: Callable[[int, bytes], bytes]) -> type[Reshare]:
    """A ``Reshare`` whose messages to ``to_seat`` pass through ``tamper(round, payload)``:
    what a cheating client may send (the channels authenticate, they do not vouch)."""

    class Misbehaving(Reshare):
        def _out(self, messages: list[Message]) -> list[Message]:
            return [
                Message(m.round, m.sender, m.recipient, tamper(m.round, m.payload))
                if m.recipient == to_seat
                else m
                for m in messages
            ]

        def _start(self) -> list[Message]:
            return self._out(super()._start())

        def _run_round(self, round_: int, payloads: Mapping[int, bytes]) -> list[Message]:
            return self._out(super()._run_round(round_, payloads))

    return Misbehaving


async def keygen_2of2(
    stack: Stack, scheme: str, client: ClientParty, coordinator: Ed25519PrivateKey, owner: Any
) -> tuple[ceremony_pb2.CeremonyRequest, KeyShare]:
    """Client (index 0) and server (index 1), 2-of-2: the keygen request and the client share."""
    request = keygen_request(scheme, [client.party, stack.party], 2, owner)
    session = client_keygen(scheme, client, request)
    await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
    share: KeyShare = session.result
    return request, share


async def sign_with_server(
    stack: Stack,
    wallet: ceremony_pb2.CeremonyRequest,
    coordinator: Ed25519PrivateKey,
    share: KeyShare,
    client: ClientParty,
    server_index: int,
    epoch: int,
) -> bytes:
    """One client and the server share sign DIGEST; returns the signature."""
    request = sign_request_at(wallet, sorted([share.party_id, server_index]), epoch)
    signer = client_sign(share, client, request)
    result = await host_loop(
        stack, signed(request, coordinator), {client.party.party_id: signer}, stack.stored
    )
    return bytes(result.signature)


### Refresh


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_refresh_renews_both_shares_and_old_ones_no_longer_combine(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()

    async def body(stack: Stack) -> None:
        wallet, old = await keygen_2of2(stack, scheme, client, coordinator, None)
        (old_sealed,) = stack.stored

        refresh = lifecycle_request(REFRESH, wallet, 0)
        session = client_lifecycle(refresh, client, old)
        result = await host_loop(
            stack, signed(refresh, coordinator), {client.party.party_id: session}, [old_sealed]
        )
        new = session.result.share
        assert (result.epoch, result.public_key) == (1, old.public_key)
        assert (new.epoch, new.public_key, new.party_id) == (1, old.public_key, 0)
        assert new.secret_share != old.secret_share and new.public_shares != old.public_shares
        new_sealed = stack.stored[-1]
        assert (new_sealed.share_index, new_sealed.epoch) == (1, 1)

        # The new client share and the new server share sign together.
        signature = await sign_with_server(stack, wallet, coordinator, new, client, 1, 1)
        assert verifies(old.public_key, signature)

        # An old client share does not combine with the new server share: the
        # enclave's own checks fail and blame the client ...
        request = sign_request_at(wallet, [0, 1], 1)
        stale = Tolerant(client_sign(old, client, request))
        if new.ecdsa is not None:  # name the new pair setup (else the enclave refuses at once)
            request.pair_setup_ids[0] = new.ecdsa.peer(1).setup_id
        error = await expect_status(
            host_loop(
                stack,
                signed(request, coordinator),
                {client.party.party_id: stale},
                [new_sealed],
            ),
            grpc.StatusCode.ABORTED,
        )
        assert culprits_of(error) == client.party.party_id
        # ... and a request for the old epoch finds no share: the host offers the new one.
        request = sign_request_at(wallet, [0, 1], 0)
        await expect_status(
            host_loop(stack, signed(request, coordinator), {}, [new_sealed]),
            grpc.StatusCode.FAILED_PRECONDITION,
        )

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_tampered_certificate_is_refused_after_the_genuine_one_verified(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the host hands a refreshed share with a forged certificate. The enclave
    verifies a record's certificate once per certificate bytes, so the genuine one is
    not verified again for every signature, and any other bytes are verified afresh."""
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    verified: list[bytes] = []

    def counting(hostpubkeys: Any, session_id: bytes, transcript: bytes, cert: bytes) -> None:
        verified.append(cert)
        verify_certificate(hostpubkeys, session_id, transcript, cert)

    monkeypatch.setattr(identity, "verify_certificate", counting)

    async def body(stack: Stack) -> None:
        wallet, old = await keygen_2of2(stack, "bip340", client, coordinator, None)
        refresh = lifecycle_request(REFRESH, wallet, 0)
        session = client_lifecycle(refresh, client, old)
        await host_loop(
            stack, signed(refresh, coordinator), {client.party.party_id: session}, stack.stored
        )
        new, new_sealed = session.result.share, stack.stored[-1]
        genuine = bytes(new_sealed.certificate)
        for _ in range(2):
            signature = await sign_with_server(stack, wallet, coordinator, new, client, 1, 1)
            assert verifies(old.public_key, signature)
        assert verified == [genuine]

        forged = ceremony_pb2.SealedShare()
        forged.CopyFrom(new_sealed)
        forged.certificate = genuine[:-1] + bytes([genuine[-1] ^ 1])
        request = sign_request_at(wallet, [0, 1], 1)
        error = await expect_status(
            host_loop(stack, signed(request, coordinator), {}, [forged]),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "does not verify" in (error.details() or "")
        assert verified == [genuine, bytes(forged.certificate)]
        forged.certificate = b""
        error = await expect_status(
            host_loop(stack, signed(sign_request_at(wallet, [0, 1], 1), coordinator), {}, [forged]),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "no certificate" in (error.details() or "")

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### Reshare


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_reshare_adds_a_second_client_and_every_new_pair_signs(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    client, client2 = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        wallet, old = await keygen_2of2(stack, scheme, client, coordinator, owner)
        new_parties = [client.party, client2.party, stack.party]
        reshare = lifecycle_request(
            RESHARE, wallet, 0, signers=[0, 1], new_parties=new_parties, new_threshold=2
        )
        sessions = {
            client2.party.party_id: client_lifecycle(
                reshare, client2, None, keyring=PublicKeyring.from_share(old)
            ),
            client.party.party_id: client_lifecycle(reshare, client, old),
        }
        result = await host_loop(
            stack, signed(reshare, coordinator, owner), sessions, list(stack.stored)
        )
        assert (result.epoch, result.public_key) == (1, old.public_key)
        stored = stack.stored[-1]
        assert (stored.share_index, stored.epoch) == (2, 1)  # the server's new index
        c1, c2 = (sessions[c.party.party_id].result.share for c in (client, client2))
        assert (c1.party_id, c2.party_id, c1.threshold, c1.parties) == (0, 1, 2, 3)

        new_wallet = keyring_request(wallet, new_parties)
        for share, party in ((c1, client), (c2, client2)):
            signature = await sign_with_server(stack, new_wallet, coordinator, share, party, 2, 1)
            assert verifies(old.public_key, signature)
        assert verifies(old.public_key, local.sign([c1, c2], DIGEST))  # without the server

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_reshare_moves_the_server_share_in_and_out(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, b = ClientParty(), ClientParty()
    sa, sb = local.keygen("bip340", threshold=2, parties=2)  # a wallet without the server

    async def body(stack: Stack) -> None:
        wallet = keygen_request("bip340", [a.party, b.party], 2)
        # In: the server joins as a holder, told the keyring and the owner key.
        joined = [a.party, b.party, stack.party]
        reshare = lifecycle_request(
            RESHARE, wallet, 0, signers=[0, 1], new_parties=joined, new_threshold=2,
            keyring=keyring_to_proto(PublicKeyring.from_share(sa)),
            owner_key=owner.public_key().public_bytes_raw(),
        )  # fmt: skip
        sessions = {a.party.party_id: client_lifecycle(reshare, a, sa)}
        sessions[b.party.party_id] = client_lifecycle(reshare, b, sb)
        result = await host_loop(stack, signed(reshare, coordinator, owner), sessions)
        assert (result.epoch, result.public_key) == (1, sa.public_key)
        (stored,) = stack.stored
        assert (stored.share_index, stored.epoch) == (2, 1)
        na, nb = (sessions[p.party.party_id].result.share for p in (a, b))
        in_wallet = keyring_request(wallet, joined)
        signature = await sign_with_server(stack, in_wallet, coordinator, nb, b, 2, 1)
        assert verifies(sa.public_key, signature)

        # Out: a and the server deal, b only receives; the server stores nothing.
        reshare = lifecycle_request(
            RESHARE, in_wallet, 1, signers=[0, 2], new_parties=[a.party, b.party],
            new_threshold=2,
        )  # fmt: skip
        sessions = {a.party.party_id: client_lifecycle(reshare, a, na)}
        sessions[b.party.party_id] = client_lifecycle(reshare, b, nb)  # seat 3 + 1
        result = await host_loop(stack, signed(reshare, coordinator, owner), sessions, [stored])
        assert (result.epoch, result.public_key) == (2, sa.public_key)
        assert len(stack.stored) == 1  # no new sealed share: the host retires the old one
        fa, fb = (sessions[p.party.party_id].result.share for p in (a, b))
        assert (fa.epoch, fb.epoch, fa.parties) == (2, 2, 2)
        assert verifies(sa.public_key, local.sign([fa, fb], DIGEST))

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_cheating_reshare_party_is_named(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    client, client2 = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        wallet, old = await keygen_2of2(stack, scheme, client, coordinator, owner)
        new_parties = [client.party, client2.party, stack.party]
        keyring = PublicKeyring.from_share(old)

        async def reshare_with(cheat: ClientParty, cls: type[Reshare]) -> grpc.aio.AioRpcError:
            request = lifecycle_request(
                RESHARE, wallet, 0, signers=[0, 1], new_parties=new_parties, new_threshold=2
            )
            sessions: dict[str, Any] = {}
            for party, share in ((client, old), (client2, None)):
                cls_ = cls if party is cheat else None
                session = client_lifecycle(
                    request, party, share, keyring=keyring, reshare_class=cls_
                )
                sessions[party.party.party_id] = session if party is cheat else Tolerant(session)
            return await expect_status(
                host_loop(
                    stack,
                    signed(request, coordinator, owner),
                    sessions,
                    stack.stored[:1],
                ),
                grpc.StatusCode.ABORTED,
            )

        def bad_subshare(round_: int, payload: bytes) -> bytes:  # the dealing's last byte
            return payload[:-1] + bytes([payload[-1] ^ 1]) if round_ == 1 else payload

        # The client (old index 0, seat 0) deals the server a sub-share off its commitment.
        error = await reshare_with(client, misbehaving(1, bad_subshare))
        assert culprits_of(error) == client.party.party_id
        # The new client (seat 3 = 2 old parties + new index 1) garbles its agreement.
        error = await reshare_with(client2, misbehaving(1, lambda r, p: p[:8] if r == 2 else p))
        assert culprits_of(error) == client2.party.party_id
        assert len(stack.stored) == 1  # nothing new was sealed

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### Export


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_export_reaches_only_the_recipient(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    client, outsider = ClientParty(), ClientParty()

    async def body(stack: Stack) -> None:
        wallet, share = await keygen_2of2(stack, scheme, client, coordinator, owner)
        for recipient in (client, outsider):  # a keyring party, then an outside party
            key = X25519PrivateKey.generate()
            request = lifecycle_request(
                EXPORT, wallet, 0, signers=[0, 1], export_recipient=recipient.party,
                export_recipient_key=key.public_key().public_bytes_raw(),
            )  # fmt: skip
            sessions = {}
            if recipient is outsider:
                sessions[outsider.party.party_id] = client_lifecycle(
                    request, outsider, None, keyring=PublicKeyring.from_share(share),
                    recipient_key=key.private_bytes_raw(),
                )  # fmt: skip
            sessions[client.party.party_id] = client_lifecycle(
                request, client, share,
                recipient_key=key.private_bytes_raw() if recipient is client else None,
            )  # fmt: skip
            result = await host_loop(
                stack, signed(request, coordinator, owner), sessions, stack.stored
            )
            assert (result.public_key, result.epoch, result.encrypted_export) == (
                share.public_key, 0, b"",
            )  # fmt: skip
            exported = sessions[recipient.party.party_id].result.private_key
            if scheme == "ed25519":  # the expanded secret s || prefix: it signs for the key
                assert verifies(share.public_key, sign_expanded(exported, DIGEST))
            else:
                assert (
                    Point.base_mul(int.from_bytes(exported, "big")).to_bytes() == share.public_key
                )
            if recipient is outsider:
                assert sessions[client.party.party_id].result.private_key is None
        assert len(stack.stored) == 1  # an export stores nothing

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### Refusals


def test_lifecycle_requests_are_authorised_and_checked(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        wallet, _ = await keygen_2of2(stack, "bip340", client, coordinator, owner)
        key = X25519PrivateKey.generate().public_key().public_bytes_raw()

        def export(recipient: ceremony_pb2.Party, recipient_key: bytes = key) -> Any:
            return lifecycle_request(
                EXPORT, wallet, 0, signers=[0, 1], export_recipient=recipient,
                export_recipient_key=recipient_key,
            )  # fmt: skip

        def attempt(signed_request: ceremony_pb2.SignedCeremonyRequest) -> Any:
            return host_loop(stack, signed_request, {}, stack.stored)

        denied, invalid = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT
        reshare = lifecycle_request(
            RESHARE, wallet, 0, signers=[0, 1], new_parties=list(wallet.parties), new_threshold=2
        )
        # Export and reshare need the wallet owner's signature: missing or by another key.
        for request in (export(client.party), reshare):
            await expect_status(attempt(signed(request, coordinator)), denied)
            forged = signed(request, coordinator, Ed25519PrivateKey.generate())
            await expect_status(attempt(forged), denied)
        # The server party is never the export recipient, nor is its static key.
        await expect_status(attempt(signed(export(stack.party), coordinator, owner)), invalid)
        static_key = bytes(stack.party.static_key)
        await expect_status(
            attempt(signed(export(client.party, static_key), coordinator, owner)), invalid
        )
        # A new keyring that cannot exist: 3-of-2, or no new parties at all.
        for t, parties in ((3, list(wallet.parties)), (2, [])):
            bad = lifecycle_request(
                RESHARE, wallet, 0, signers=[0, 1], new_parties=parties, new_threshold=t
            )
            await expect_status(attempt(signed(bad, coordinator, owner)), invalid)
        # Too few dealers, and a refresh that tries to change the threshold.
        few = lifecycle_request(
            RESHARE, wallet, 0, signers=[1], new_parties=list(wallet.parties), new_threshold=2
        )
        await expect_status(attempt(signed(few, coordinator, owner)), invalid)
        await expect_status(
            attempt(signed(lifecycle_request(REFRESH, wallet, 0, new_threshold=1), coordinator)),
            invalid,
        )
        # The request's epoch must be the sealed share's.
        await expect_status(
            attempt(signed(lifecycle_request(REFRESH, wallet, 1), coordinator)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert len(stack.stored) == 1

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
