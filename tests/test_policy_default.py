"""Every wallet is governed by a policy: the coordinator's signature alone never makes the
server share act.

End to end against the real enclave service (devkms, simulated NSM, sealed
shares), a client party and the pinned coordinator:

- a keygen or an import that registers no policy set is refused, and a
  wallet's signature without its owner's approval is refused;
- a raw digest (or an Ed25519 message not declared a Solana message) on a
  wallet whose policy does not name that kind is refused even with the
  device's share, the coordinator's signature and the owner's approval;
- a record sealed before policy sets existed only adopts a set, approved
  under it; once adopted, the host serving the policy-less record again
  drops nothing;
- an organisation allow policy, with its authenticator's approval, governs a
  wallet without a set; an organisation deny beats a wallet's allow.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.sdk.approvals import ApiKey, approvals_of
from client.sdk.default_policy import default_policy_set, owner_approver
from enclave.identity import ServerShare
from enclave.nsm import SimulatedNitroPki
from enclave.policy.organisation import Organisation
from enclave.seal import SealBinding, SealedBlob, SealedShare
from enclave.service import EnclaveDeps
from shardkeep.approvals import activity_hash, approval_challenge
from shardkeep.lifecycle import keyring_to_proto
from shardkeep.policy_documents import authenticator_entry
from shardkeep.policyset import (
    Consensus,
    Policy,
    PolicySet,
    encode,
    organisation_set,
    policy_set_hash,
)
from shardkeep.v1 import ceremony_pb2
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    Stack,
    client_keygen,
    client_lifecycle,
    client_sign,
    devkms,
    enclave_deps,
    host_loop,
    keygen_request,
    lifecycle_request,
    run,
    sign_request,
    sign_request_at,
    signed,
    with_enclave,
)
from tss.curve import schnorr_verify
from tss.dealer import import_dealer
from tss.keyshare import KeyShare

DENIED = grpc.StatusCode.PERMISSION_DENIED
KIND = ceremony_pb2.CeremonyKind


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


async def expect_refusal(call: Any, code: grpc.StatusCode, fault: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert fault in (info.value.details() or ""), info.value.details()


def owner_approves(
    request: ceremony_pb2.SignedCeremonyRequest, owner: Ed25519PrivateKey, under: PolicySet
) -> ceremony_pb2.SignedCeremonyRequest:
    """``request`` with the owner approval key's approval under ``under`` (as the SDK gives it)."""
    del request.approvals[:]
    request.approvals.extend(
        approvals_of(request.request, under, under.epoch, [owner_approver(owner)])
    )
    return request


async def keygen(
    stack: Stack, coordinator: Ed25519PrivateKey, scheme: str, policy: bytes | None = None
) -> tuple[ceremony_pb2.CeremonyRequest, ClientParty, KeyShare, ceremony_pb2.SealedShare]:
    """A wallet of ``scheme`` (the harness's default set unless ``policy`` is given)."""
    client = ClientParty()
    request = keygen_request(scheme, [client.party, stack.party], 2)
    if policy is not None:
        request.policy_set = policy
    session = client_keygen(scheme, client, request)
    await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
    return request, client, session.result, stack.stored[-1]


def unapproved(
    request: ceremony_pb2.CeremonyRequest, coordinator: Ed25519PrivateKey
) -> ceremony_pb2.SignedCeremonyRequest:
    """``request`` signed by the coordinator alone: no authenticator's approval."""
    outer = signed(request, coordinator)
    del outer.approvals[:]
    return outer


def test_the_coordinator_alone_cannot_make_the_server_share_act_for_a_new_wallet(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the coordinator (or whoever holds its key) creates or imports a wallet that
    registers no policy set, or signs for a wallet without its owner's approval.

    Before, a keygen without a set made a wallet the coordinator's signature
    alone drove. Now the keygen and the import are refused (``policy-required``)
    and store nothing; a signature without the owner's approval is denied."""
    coordinator = Ed25519PrivateKey.generate()

    async def body(stack: Stack) -> None:
        client = ClientParty()
        bare = keygen_request("bip340", [client.party, stack.party], 2)
        bare.ClearField("policy_set")
        session = client_keygen("bip340", client, bare)
        await expect_refusal(
            host_loop(stack, signed(bare, coordinator), {client.party.party_id: session}),
            DENIED, "registers a policy set",
        )  # fmt: skip
        # an import: the server party joins a 1-of-1 keyring of the importer
        importer = ClientParty()
        base = keygen_request("bip340", [importer.party], 1)
        keyring, _ = import_dealer("bip340", bytes(31) + b"\x07", bytes(32))
        owner = Ed25519PrivateKey.generate()
        join = lifecycle_request(
            KIND.CEREMONY_KIND_RESHARE, base, 0, signers=[0],
            new_parties=[importer.party, stack.party], new_threshold=2,
            keyring=keyring_to_proto(keyring), owner_key=owner.public_key().public_bytes_raw(),
        )  # fmt: skip
        join.ClearField("policy_set")
        # refused before any message: no client session is needed
        await expect_refusal(
            host_loop(stack, signed(join, coordinator, owner), {}), DENIED, "registers a policy set"
        )
        assert stack.stored == []

        # A wallet with its set: the coordinator's signature without the owner's approval
        request, client, share, stored = await keygen(stack, coordinator, "bip340")
        sign = sign_request(request, [0, 1])
        signer = client_sign(share, client, sign)
        outer = unapproved(sign, coordinator)
        await expect_refusal(
            host_loop(stack, outer, {client.party.party_id: signer}, [stored]),
            DENIED, "matched with 0 of 1 approvals",
        )  # fmt: skip

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize("scheme", ["bip340", "ed25519"])
def test_a_raw_digest_is_refused_where_the_policy_does_not_name_it_even_with_device_and_coordinator(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the coordinator, with the device's share and even the owner's approval, has
    the server share sign a bare digest (or an Ed25519 message it does not declare a
    Solana message), which no policy can see into.

    Before, an allow policy whose condition held (the default ``true``) let it
    through. Now only an allow policy naming ``SIGN_RAW_DIGEST`` /
    ``SIGN_RAW_MESSAGE`` does: the default set without ``allow_raw_digest``
    refuses, with it the same request signs."""
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    kind = "SIGN_RAW_MESSAGE" if scheme == "ed25519" else "SIGN_RAW_DIGEST"

    async def body(stack: Stack) -> None:
        for allow in (False, True):
            policy = default_policy_set("wallet-1", owner, allow_raw_digest=allow)
            request, client, share, stored = await keygen(
                stack, coordinator, scheme, encode(policy)
            )
            sign = sign_request(request, [0, 1])
            signer = client_sign(share, client, sign)
            outer = owner_approves(signed(sign, coordinator), owner, policy)
            call = host_loop(stack, outer, {client.party.party_id: signer}, [stored])
            if not allow:
                await expect_refusal(call, DENIED, f"a {kind} is signed only where")
                continue
            result = await call
            assert len(result.signature) == 64

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


async def _legacy(deps: EnclaveDeps, stored: ceremony_pb2.SealedShare) -> ceremony_pb2.SealedShare:
    """``stored`` as a release before policy sets sealed it: the same share record, no set."""
    binding = SealBinding(stored.wallet_id, stored.share_index, "bip340", stored.epoch)
    sealed = SealedShare(bytes(stored.encrypted_data_key), SealedBlob(bytes(stored.ciphertext)))
    record = ServerShare.from_bytes(await asyncio.to_thread(deps.sealer.unseal, sealed, binding))
    assert record.policy_set
    plain = dataclasses.replace(record, policy_set=b"").to_bytes()
    again = await asyncio.to_thread(deps.sealer.seal, plain, binding)
    legacy = ceremony_pb2.SealedShare()
    legacy.CopyFrom(stored)
    legacy.encrypted_data_key, legacy.ciphertext = again.encrypted_data_key, again.ciphertext
    return legacy


def test_a_wallet_sealed_before_policy_sets_only_adopts_one_and_its_old_record_drops_no_gate(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: the host serves a wallet's policy-less record (sealed before policy sets
    existed) to have the server share act on the coordinator's signature alone, also
    after the wallet adopted a set.

    Before, a record without a set was not gated: a raw digest signed on the
    coordinator's word. Now such a record acts only to adopt a set (a refresh
    carrying it, every party taking part, approved under the new set); once it
    has, the host serving the old record with a device's old share gets
    ``policy-required``, not a signature."""
    coordinator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    deps = enclave_deps(pki, kms_endpoint, coordinator)

    async def body(stack: Stack) -> None:
        request, client, share, stored = await keygen(stack, coordinator, "bip340")
        legacy = await _legacy(deps, stored)

        async def sign_raw(
            at: ceremony_pb2.SealedShare, key: KeyShare, under: PolicySet | None = None
        ) -> ceremony_pb2.CeremonyResult:
            sign = sign_request_at(request, [0, 1], at.epoch)
            signer = client_sign(key, client, sign)
            outer = signed(sign, coordinator)
            if under is None:
                del outer.approvals[:]
            else:
                owner_approves(outer, owner, under)
            result: ceremony_pb2.CeremonyResult = await host_loop(
                stack, outer, {client.party.party_id: signer}, [at]
            )
            return result

        await expect_refusal(sign_raw(legacy, share), DENIED, "has no policy set")
        plain = lifecycle_request(KIND.CEREMONY_KIND_REFRESH, request, 0)
        party = client_lifecycle(plain, client, share)
        outer = unapproved(plain, coordinator)
        await expect_refusal(
            host_loop(stack, outer, {client.party.party_id: party}, [legacy]),
            DENIED, "adopt one",
        )  # fmt: skip

        # Adoption: a refresh carrying the set, approved under that new set
        adopted = default_policy_set("wallet-1", owner, allow_raw_digest=True, epoch=1)
        adopt = lifecycle_request(
            KIND.CEREMONY_KIND_REFRESH, request, 0, policy_set=encode(adopted)
        )
        party = client_lifecycle(adopt, client, share)
        outer = unapproved(adopt, coordinator)
        await expect_refusal(
            host_loop(stack, outer, {client.party.party_id: party}, [legacy]),
            DENIED, "'owner-approves' matched with 0 of 1",
        )  # fmt: skip
        adopt = lifecycle_request(
            KIND.CEREMONY_KIND_REFRESH, request, 0, policy_set=encode(adopted)
        )
        party = client_lifecycle(adopt, client, share)
        outer = owner_approves(signed(adopt, coordinator), owner, adopted)
        await host_loop(stack, outer, {client.party.party_id: party}, [legacy])
        new_share, new_stored = party.result.share, stack.stored[-1]
        assert new_stored.epoch == 1
        result = await sign_raw(new_stored, new_share, adopted)
        assert schnorr_verify(DIGEST, new_share.public_key[1:], result.signature)
        # The host rolls back to the policy-less record and the device's old share.
        await expect_refusal(sign_raw(legacy, share), DENIED, "has no policy set")

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body, deps=deps))


ORGANISATION_ADMIN = ApiKey.generate("cfo")
ORGANISATION_ALLOW = Policy(
    "cfo-approves-raw", "allow", "activity.kind == 'SIGN_RAW_DIGEST'", Consensus(1, "admin")
)


def test_an_organisation_allow_with_its_authenticator_signs_and_an_organisation_deny_wins(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """The organisation's measured configuration: an allow policy with an organisation
    authenticator governs a wallet created without a set of its own (its approval,
    named ``organisation/cfo``, lets a raw digest be signed; none, or one under another
    set, does not), and an organisation deny refuses what a wallet's own set allows."""
    coordinator = Ed25519PrivateKey.generate()
    organisation = Organisation.from_config(
        {
            ORGANISATION_ALLOW.name: {
                "effect": "allow",
                "condition": ORGANISATION_ALLOW.condition,
                "consensus": {"min_approvals": 1, "tag": "admin"},
            },
            "frozen": "activity.wallet == 'wallet-2'",
        },
        [authenticator_entry(ORGANISATION_ADMIN.authenticator("admin"))],
    )
    deps = dataclasses.replace(
        enclave_deps(pki, kms_endpoint, coordinator), organisation=organisation
    )
    under = organisation_set((ORGANISATION_ADMIN.authenticator("admin"),), (ORGANISATION_ALLOW,))

    def cfo_approves(outer: ceremony_pb2.SignedCeremonyRequest, hash_of: PolicySet) -> None:
        del outer.approvals[:]
        challenge = approval_challenge(activity_hash(outer.request), policy_set_hash(hash_of))
        approval = ORGANISATION_ADMIN.approve(challenge)
        outer.approvals.append(
            ceremony_pb2.Approval(authenticator="organisation/cfo", signature=approval.signature)
        )

    async def body(stack: Stack) -> None:
        request, client, share, stored = await keygen(stack, coordinator, "bip340", b"")

        async def sign(approve: PolicySet | None) -> ceremony_pb2.CeremonyResult:
            sign = sign_request(request, [0, 1])
            signer = client_sign(share, client, sign)
            outer = unapproved(sign, coordinator)
            if approve is not None:
                cfo_approves(outer, approve)
            result: ceremony_pb2.CeremonyResult = await host_loop(
                stack, outer, {client.party.party_id: signer}, [stored]
            )
            return result

        await expect_refusal(sign(None), DENIED, "'organisation/cfo-approves-raw' matched with 0")
        other = dataclasses.replace(under, wallet_id="wallet-1")
        await expect_refusal(sign(other), DENIED, "approval by 'cfo' refused")
        result = await sign(under)
        assert schnorr_verify(DIGEST, share.public_key[1:], result.signature)

        # wallet-2's own set (the harness's) allows a raw digest with its owner's
        # approval; the organisation's deny refuses it
        frozen = keygen_request("bip340", [client.party, stack.party], 2)
        frozen.wallet_id = "wallet-2"
        session = client_keygen("bip340", client, frozen)
        await host_loop(stack, signed(frozen, coordinator), {client.party.party_id: session})
        sign_frozen = sign_request(frozen, [0, 1])
        signer = client_sign(session.result, client, sign_frozen)
        await expect_refusal(
            host_loop(stack, signed(sign_frozen, coordinator), {client.party.party_id: signer},
                      [stack.stored[-1]]),
            DENIED, "denied by policy 'organisation/frozen'",
        )  # fmt: skip

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body, deps=deps))
