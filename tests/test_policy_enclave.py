"""The enclave decides: a wallet with a policy set signs only what its owners approved.

End to end against the real enclave service (devkms, simulated NSM, sealed
shares), a client party and the pinned coordinator: the policy set is
registered at keygen and sealed with the share; an EVM transfer to an
address on the allow-list, approved by the owner's passkey, is signed; a
transfer to any other address is refused even with the device's share and
the coordinator's signature; so is one without approvals, a raw digest, a
digest that is not the transaction's, and a keygen with a bad policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.chains.ethereum import Eip1559Transaction
from client.sdk.approvals import ApiKey, SoftwarePasskey
from enclave.nsm import SimulatedNitroPki
from shardkeep.approvals import activity_hash, approval_challenge
from shardkeep.policyset import Consensus, Policy, PolicySet, encode, policy_set_hash
from shardkeep.v1 import ceremony_pb2
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    Stack,
    client_keygen,
    client_lifecycle,
    client_pair_setup,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    lifecycle_request,
    pair_setup_request,
    run,
    sign_request,
    sign_request_at,
    signed,
    with_enclave,
)
from tss.curve import ecdsa_verify, schnorr_verify

FRIEND = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
STRANGER = bytes.fromhex("de" * 20)


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    with devkms(pki) as endpoint:
        yield endpoint


PASSKEY = SoftwarePasskey("owner-phone", "wallet.example", "https://wallet.example")
ADMIN = ApiKey.generate("ops", "p256")


def wallet_policy(condition: str = f"eth.tx.to == '0x{FRIEND.hex()}'") -> PolicySet:
    return PolicySet(
        "wallet-1", 0, 1,
        (PASSKEY.authenticator(), ADMIN.authenticator("admin")),
        (
            Policy("friends-only", "allow",
                   f"activity.kind == 'SIGN_EVM_TRANSACTION' && {condition}", Consensus(1)),
            Policy("no-contract-calls", "deny",
                   "activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.data_size > 0"),
        ),
    )  # fmt: skip


def transfer(to: bytes) -> Eip1559Transaction:
    return Eip1559Transaction(
        chain_id=1, nonce=0, max_priority_fee_per_gas=10**9, max_fee_per_gas=30 * 10**9,
        gas=21_000, to=to, value=10**17,
    )  # fmt: skip


def approved(
    request: ceremony_pb2.SignedCeremonyRequest, policy: PolicySet, *signers: Any
) -> ceremony_pb2.SignedCeremonyRequest:
    challenge = approval_challenge(activity_hash(request.request), policy_set_hash(policy))
    for signer in signers:
        a = signer.approve(challenge)
        request.approvals.append(
            ceremony_pb2.Approval(
                authenticator=a.authenticator,
                signature=a.signature,
                authenticator_data=a.authenticator_data,
                client_data_json=a.client_data_json,
            )
        )
    return request


async def expect_refusal(call: Any, code: grpc.StatusCode, fault: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert fault in (info.value.details() or ""), info.value.details()


def test_a_transfer_off_the_allow_list_is_refused_even_with_device_and_coordinator(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()
    policy = wallet_policy()

    async def body(stack: Stack) -> None:
        keygen = keygen_request("ecdsa-secp256k1", [client.party, stack.party], 2)
        keygen.policy_set = encode(policy)
        session = client_keygen("ecdsa-secp256k1", client, keygen)
        await host_loop(stack, signed(keygen, coordinator), {client.party.party_id: session})
        (stored,) = stack.stored
        # The server keeps DKLs23 pair setups in memory only: make one (not gated:
        # it signs nothing and moves no key).
        setup_request = pair_setup_request(keygen, [0, 1])
        setup = client_pair_setup(session.result, client, setup_request)
        await host_loop(
            stack, signed(setup_request, coordinator), {client.party.party_id: setup}, [stored]
        )
        assert session.result.ecdsa is not None
        share = dataclasses.replace(
            session.result, ecdsa=session.result.ecdsa.with_peer(setup.result)
        )

        async def sign(
            tx: Eip1559Transaction, *signers: Any, digest: bytes | None = None, raw: bool = False
        ) -> ceremony_pb2.CeremonyResult:
            request = sign_request(keygen, [0, 1])
            request.digest = tx.signing_hash() if digest is None else digest
            if not raw:
                request.evm_transaction = tx.signing_payload()
            party = client_sign(share, client, request)  # names the pair setup in the request
            outer = approved(signed(request, coordinator), policy, *signers)
            result: ceremony_pb2.CeremonyResult = await host_loop(
                stack, outer, {client.party.party_id: party}, [stored]
            )
            return result

        # allowed: to the friend, approved by the owner's passkey
        friend = transfer(FRIEND)
        result = await sign(friend, PASSKEY)
        assert ecdsa_verify(friend.signing_hash(), share.public_key, result.signature)

        denied = grpc.StatusCode.PERMISSION_DENIED
        # a stranger: the device's share and the coordinator are not enough
        await expect_refusal(sign(transfer(STRANGER), PASSKEY, ADMIN), denied, "no allow policy")
        # no approval at all
        await expect_refusal(sign(friend), denied, "'friends-only' matched with 0 of 1")
        # deny wins over approvals
        call = Eip1559Transaction(**{**friend.__dict__, "data": b"\xa9\x05\x9c\xbb"})
        await expect_refusal(sign(call, PASSKEY), denied, "no-contract-calls")
        # a raw digest: no policy names SIGN_RAW_DIGEST
        await expect_refusal(
            sign(friend, PASSKEY, raw=True), denied, "only where an allow policy names that kind"
        )
        # the transaction of a friend with the digest of a stranger's
        await expect_refusal(
            sign(friend, PASSKEY, digest=transfer(STRANGER).signing_hash()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not the EVM transaction's signing digest",
        )
        # an approval under another policy set (what the host's rollback would need)
        older = wallet_policy("true")
        request = sign_request(keygen, [0, 1])
        request.digest = friend.signing_hash()
        request.evm_transaction = friend.signing_payload()
        party = client_sign(share, client, request)
        outer = approved(signed(request, coordinator), older, PASSKEY)
        await expect_refusal(
            host_loop(stack, outer, {client.party.party_id: party}, [stored]),
            denied,
            "approval by 'owner-phone' refused",
        )  # fmt: skip

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize(
    ("policy_set", "fault"),
    [
        (encode(wallet_policy("eth.tx.to ==")), "does not compile"),
        (encode(wallet_policy("wallet.owner == 1")), "names wallet"),
        (b"\xa1\x61v\x02", "not a version-1 policy set"),
        (encode(PolicySet("wallet-2", 0, 1, wallet_policy().authenticators,
                          wallet_policy().policies)), "must name wallet 'wallet-1'"),
    ],
)  # fmt: skip
def test_a_keygen_with_a_bad_policy_is_refused(
    policy_set: bytes, fault: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()

    async def body(stack: Stack) -> None:
        keygen = keygen_request("bip340", [client.party, stack.party], 2)
        keygen.policy_set = policy_set
        session = client_keygen("bip340", client, keygen)
        await expect_refusal(
            host_loop(stack, signed(keygen, coordinator), {client.party.party_id: session}),
            grpc.StatusCode.INVALID_ARGUMENT,
            fault,
        )
        assert stack.stored == []

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_a_refresh_rebinds_the_policy_set_to_the_new_epoch(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    # A refresh is itself approved; the sealed set moves to epoch 1 with the
    # share, so approvals under the epoch-0 set stop counting.
    coordinator = Ed25519PrivateKey.generate()
    client = ClientParty()
    policy = PolicySet(
        "wallet-1", 0, 1, (PASSKEY.authenticator(),),
        (Policy("owner-approves", "allow",
                "activity.kind in ['SIGN_RAW_DIGEST', 'REFRESH']", Consensus(1)),),
    )  # fmt: skip
    at_epoch_1 = dataclasses.replace(policy, epoch=1)

    async def body(stack: Stack) -> None:
        keygen = keygen_request("bip340", [client.party, stack.party], 2)
        keygen.policy_set = encode(policy)
        session = client_keygen("bip340", client, keygen)
        await host_loop(stack, signed(keygen, coordinator), {client.party.party_id: session})
        (sealed,) = stack.stored
        denied = grpc.StatusCode.PERMISSION_DENIED

        refresh = lifecycle_request(ceremony_pb2.CEREMONY_KIND_REFRESH, keygen, 0)
        party = client_lifecycle(refresh, client, session.result)
        await expect_refusal(
            host_loop(stack, signed(refresh, coordinator), {client.party.party_id: party},
                      [sealed]),
            denied, "0 of 1",
        )  # fmt: skip
        refresh = lifecycle_request(ceremony_pb2.CEREMONY_KIND_REFRESH, keygen, 0)
        party = client_lifecycle(refresh, client, session.result)
        outer = approved(signed(refresh, coordinator), policy, PASSKEY)
        await host_loop(stack, outer, {client.party.party_id: party}, [sealed])
        share, new_sealed = party.result.share, stack.stored[-1]
        assert new_sealed.epoch == 1

        async def sign(
            under: PolicySet, stored: ceremony_pb2.SealedShare = new_sealed
        ) -> ceremony_pb2.CeremonyResult:
            request = sign_request_at(keygen, [0, 1], 1)
            signer = client_sign(share, client, request)
            outer = approved(signed(request, coordinator), under, PASSKEY)
            result: ceremony_pb2.CeremonyResult = await host_loop(
                stack, outer, {client.party.party_id: signer}, [stored]
            )
            return result

        await expect_refusal(sign(policy), denied, "approval by 'owner-phone' refused")
        # The host rolls back to the epoch-0 record (and its set): it is not the
        # epoch the request names, so the enclave refuses it before any policy.
        await expect_refusal(sign(at_epoch_1, sealed), grpc.StatusCode.FAILED_PRECONDITION, "epoch")
        result = await sign(at_epoch_1)
        assert schnorr_verify(DIGEST, share.public_key[1:], result.signature)

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))
