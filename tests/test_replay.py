"""Replay: a coordinator-signed request runs at most once, across enclave restarts and instances.

The enclave issues single-use challenges (``Enclave.GetChallenge``, forwarded by
``Host.GetChallenge``) kept in its process memory only; a signed request must
carry one it issued and has not seen used (``enclave.auth.ChallengeTable``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from coincurve import PublicKeyXOnly
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevStack, running_stack
from client.sdk.party import PartyIdentity, roster_of, run_over_relay
from client.sdk.wallet import WalletClient, _Approvals
from enclave.auth import (
    CHALLENGE_BYTES,
    INSTANCE_TAG_BYTES,
    Authorizer,
    ChallengeTable,
    Policy,
)
from enclave.errors import Overloaded, Unauthorized
from enclave.nsm import SimulatedNitroPki
from shardkeep.lifecycle import lifecycle_session_id
from shardkeep.requests import COORDINATOR_CONTEXT, sign_request
from shardkeep.v1 import ceremony_pb2, enclave_pb2, host_pb2
from tests.enclave_harness import (
    ClientParty,
    Stack,
    client_keygen,
    devkms,
    host_loop,
    keygen_request,
    run,
    signed,
    with_enclave,
)
from tests.stack_harness import RawDigestWalletClient
from tss.signing import NO_OPTIONS, HostKeys, signing_ceremony

DIGEST = bytes.fromhex("c3" * 32)
NOW = 1_800_000_000


### The challenge table (unit)


def table(capacity: int = 4, ttl: int = 600) -> ChallengeTable:
    return ChallengeTable(ttl, capacity, secrets.token_bytes)


def test_a_challenge_is_accepted_once() -> None:
    challenges = table()
    challenge, expires = challenges.issue(NOW)
    assert len(challenge) == CHALLENGE_BYTES and expires == NOW + 600
    assert challenge[:INSTANCE_TAG_BYTES] == challenges.instance_tag
    challenges.consume(challenge, NOW + 1)
    with pytest.raises(Unauthorized, match="unknown or used challenge"):
        challenges.consume(challenge, NOW + 1)


def test_an_unknown_challenge_is_refused() -> None:
    challenges = table()
    issued, _ = challenges.issue(NOW)
    for unknown in (b"", secrets.token_bytes(CHALLENGE_BYTES), issued[:-1], issued + b"\x00"):
        with pytest.raises(Unauthorized, match="unknown or used challenge"):
            challenges.consume(unknown, NOW)
    challenges.consume(issued, NOW)  # the failed attempts did not use it up


def test_an_expired_challenge_is_refused() -> None:
    challenges = table(ttl=60)
    challenge, expires = challenges.issue(NOW)
    with pytest.raises(Unauthorized, match="challenge expired"):
        challenges.consume(challenge, expires + 1)
    with pytest.raises(Unauthorized, match="unknown or used challenge"):
        challenges.consume(challenge, NOW)  # and it is gone


def test_a_full_table_refuses_new_challenges_until_some_expire_or_are_used() -> None:
    challenges = table(capacity=3, ttl=60)
    issued = [challenges.issue(NOW)[0] for _ in range(3)]
    with pytest.raises(Overloaded, match="too many outstanding challenges"):
        challenges.issue(NOW + 1)
    for challenge in issued:  # the outstanding ones still work
        challenges.consume(challenge, NOW + 1)
    fresh = [challenges.issue(NOW + 2)[0] for _ in range(3)]
    with pytest.raises(Overloaded):
        challenges.issue(NOW + 2)
    later = NOW + 2 + 61  # every outstanding one has expired: dropped on the next issue
    challenges.issue(later)
    with pytest.raises(Unauthorized, match="unknown or used challenge"):
        challenges.consume(fresh[0], later)


def test_another_enclave_instance_refuses_a_challenge_it_did_not_issue() -> None:
    """Attack: a host replays a request on a second enclave instance (or a restarted one)."""
    coordinator = Ed25519PrivateKey.generate()
    policy = Policy((coordinator.public_key().public_bytes_raw(),))
    first, second = Authorizer(policy), Authorizer(policy)
    assert first.challenges.instance_tag != second.challenges.instance_tag
    request = keygen_request("bip340", [ClientParty().party, ClientParty().party], 2)
    request.not_after_unix = NOW + 60
    request.challenge = first.challenges.issue(NOW)[0]
    data = request.SerializeToString()
    signed_request = ceremony_pb2.SignedCeremonyRequest(
        request=data, coordinator_signature=sign_request(coordinator, COORDINATOR_CONTEXT, data)
    )
    with pytest.raises(Unauthorized, match="unknown or used challenge"):
        second.authorize(second.verify_coordinator(signed_request), NOW)
    assert first.authorize(first.verify_coordinator(signed_request), NOW).wallet_id == (
        request.wallet_id
    )
    with pytest.raises(Unauthorized, match="unknown or used challenge"):
        first.authorize(first.verify_coordinator(signed_request), NOW)


### The enclave service in process


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Any:
    with devkms(pki) as endpoint:
        yield endpoint


def test_the_enclave_issues_challenges_and_refuses_requests_without_one(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()

    async def body(stack: Stack) -> None:
        reply = await stack.stub.GetChallenge(enclave_pb2.GetChallengeRequest())
        other = await stack.stub.GetChallenge(enclave_pb2.GetChallengeRequest())
        assert len(reply.challenge) == CHALLENGE_BYTES and reply.challenge != other.challenge
        assert reply.challenge[:INSTANCE_TAG_BYTES] == other.challenge[:INSTANCE_TAG_BYTES]
        request = keygen_request("bip340", [client.party, stack.party], 2)
        for challenge in (b"", secrets.token_bytes(CHALLENGE_BYTES)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await host_loop(stack, signed(request, coordinator, challenge=challenge), {})
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert info.value.details() == "unknown or used challenge"
            assert info.value.trailing_metadata().get("shardkeep-reason") == "challenge-refused"
        request.challenge = reply.challenge  # the client binds the one the request carries
        session = client_keygen("bip340", client, request)
        good = signed(request, coordinator, challenge=bytes(reply.challenge))
        await host_loop(stack, good, {client.party.party_id: session})
        assert len(stack.stored) == 1

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_next_challenge_comes_with_a_result_when_asked_and_is_accepted_once(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """The challenge an enclave issues with a result is one of its table's: its instance
    tag, its TTL, single use (a replay is refused with the typed reason)."""
    coordinator = Ed25519PrivateKey.generate()

    async def keygen(stack: Stack, challenge: bytes | None, want: bool) -> Any:
        client = ClientParty()
        request = keygen_request("bip340", [client.party, stack.party], 2)
        request.want_next_challenge = want
        request.challenge = challenge or b""
        session = client_keygen("bip340", client, request)  # binds the request's challenge
        good = signed(request, coordinator, challenge=challenge)
        async with asyncio.timeout(60):
            return await host_loop(stack, good, {client.party.party_id: session})

    async def body(stack: Stack) -> None:
        tag = (await stack.stub.GetStatus(enclave_pb2.GetStatusRequest())).instance_tag
        plain = await keygen(stack, None, want=False)
        assert plain.next_challenge == b"" and plain.next_challenge_not_after_unix == 0
        asked = await keygen(stack, None, want=True)
        issued = bytes(asked.next_challenge)
        assert len(issued) == CHALLENGE_BYTES and issued[:INSTANCE_TAG_BYTES] == tag
        assert 590 <= asked.next_challenge_not_after_unix - time.time() <= 600
        await keygen(stack, issued, want=False)  # accepted once
        with pytest.raises(grpc.aio.AioRpcError) as replayed:
            await keygen(stack, issued, want=False)
        assert replayed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert replayed.value.trailing_metadata().get("shardkeep-reason") == "challenge-refused"

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


### End to end: real processes, the enclave restarted


@pytest.mark.slow
def test_replayed_signed_request_after_enclave_restart_refused(tmp_path: Path) -> None:
    """Attack: the host keeps a coordinator-signed sign request it carried, restarts the
    enclave (which forgets everything it saw) and sends the same request again.

    Before, the enclave's replay check was a nonce table in memory, so after a
    restart the replayed request was accepted and the server share acted again.
    Now the request's challenge is unknown to the new enclave process: refused
    with PERMISSION_DENIED, as it is in the same process once used. A fresh
    request (a new challenge) still signs.
    """

    async def body(stack: DevStack, wallets: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await wallets.create_wallet("bip340", [phone], threshold=2)
        request = wallets._request(wallet, ceremony_pb2.CEREMONY_KIND_SIGN, signers=[0, 1])
        request.digest = DIGEST
        ids = [p.party_id for p in wallet.parties]
        room = await wallets._relay.create_room(ids, ttl_ms=120_000)
        request.room_id = room.room_id
        carried = host_pb2.HostCeremonyRequest(
            request=wallets._signed(
                request, await wallets.challenge(), approvals=_Approvals(wallet, ())
            ),
            relay_token=room.join_tokens[ids[1]],
            relay_room=room.spec,  # the room is made by its first join
        )

        async def phone_signs() -> bytes:
            session_id = lifecycle_session_id(request)  # binds the challenge _signed set
            hostpubkeys = tuple(bytes(p.host_pubkey) for p in wallet.parties)
            signing = signing_ceremony(
                wallet.shares[0], [0, 1], DIGEST, session_id, secrets.token_bytes,
                NO_OPTIONS, HostKeys(phone.hostseckey, hostpubkeys),
            )  # fmt: skip
            async with wallets._relay.join(room.room_id, ids[0], room.join_tokens[ids[0]]) as link:
                result: bytes = await run_over_relay(
                    signing, phone, roster_of(wallet.parties, [0, 1]), request, link
                )
                return result

        result, signature = await asyncio.gather(
            wallets._host.Sign(carried, timeout=60), phone_signs()
        )
        assert PublicKeyXOnly(wallet.public_key[1:]).verify(signature, DIGEST)
        assert bytes(result.signature) == signature

        async def replay() -> grpc.aio.AioRpcError:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await wallets._host.Sign(carried, timeout=60)
            return info.value

        error = await replay()  # the same enclave process: the challenge is used
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "unknown or used challenge" in (error.details() or "")
        await stack.restart("enclave")
        error = await replay()  # a new enclave process: the challenge is unknown
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "unknown or used challenge" in (error.details() or "")
        await wallets._relay.close_room(room.room_id, room.admin_token)

        fresh = await wallets.sign(wallet, DIGEST, {0: phone})
        assert isinstance(fresh, bytes)
        assert PublicKeyXOnly(wallet.public_key[1:]).verify(fresh, DIGEST)

    async def main() -> None:
        async with (
            running_stack(tmp_path / "run") as stack,
            RawDigestWalletClient(
                stack.host_address,
                stack.relay_address,
                stack.coordinator_key,
                root_certificate=stack.root_certificate,
            ) as wallets,
        ):
            await asyncio.wait_for(body(stack, wallets), 180)

    asyncio.run(main())
