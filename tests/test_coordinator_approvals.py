"""Owner approvals through the coordinator: a phone wallet with a policy set.

The development stack plus an in-process coordinator service. The phone
registers a policy set at keygen through the coordinator: EVM transfers to
one friend's address, approved by the owner's passkey. The passkey approves
the exact request the coordinator returns; the coordinator only attaches
the approval. A transfer to the friend signs; one to a stranger is refused
with reason policy-denied, even with the passkey's approval, the device's
share and the coordinator. The attacks: a coordinator that drops the
approvals, one that swaps in approvals of an earlier request, one that
forges an approval with a key of its own under the passkey's name, and one
that redirects the transfer (the device refuses before anyone approves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from coincurve import PublicKey

from client.chains.ethereum import Eip1559Transaction
from client.cli.devstack import DevStack
from client.sdk.approvals import SoftwarePasskey, approvals_of
from client.sdk.device import CoordinatorRefused, Device, DeviceWallet
from client.sdk.wallet import APPROVAL_REFUSED, POLICY_DENIED, SignedPayload
from coordinator.coordinator import Coordinator, _Running
from shardkeep.policyset import Consensus, Policy, PolicySet, decode
from shardkeep.v1 import ceremony_pb2
from tests.coordinator_support import new_device, socket_dir, stack, with_coordinator
from tss.signing import RecoverableSignature

__all__ = ["socket_dir", "stack"]  # the fixtures (tests.coordinator_support)

pytestmark = pytest.mark.slow
CODE = "code-phone"
FRIEND = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
STRANGER = bytes.fromhex("de" * 20)


def friends_only(passkey: SoftwarePasskey) -> PolicySet:
    return PolicySet(
        "named-by-the-coordinator", 0, 1, (passkey.authenticator("owner"),),
        (Policy("friends-only", "allow",
                f"activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.to == '0x{FRIEND.hex()}'",
                Consensus(1, "owner")),),
    )  # fmt: skip


def transfer(to: bytes, nonce: int = 0) -> Eip1559Transaction:
    return Eip1559Transaction(
        chain_id=1, nonce=nonce, max_priority_fee_per_gas=10**9, max_fee_per_gas=30 * 10**9,
        gas=21_000, to=to, value=10**17,
    )  # fmt: skip


Body = Callable[[Device, DeviceWallet, SoftwarePasskey], Awaitable[None]]


def with_phone_wallet(
    stack: DevStack, socket_dir: Path, body: Body, kind: type[Coordinator] = Coordinator
) -> None:
    """Run ``body`` with an enrolled phone and its new ECDSA wallet under ``friends_only``."""

    async def main(coordinator: Coordinator, address: str) -> None:
        passkey = SoftwarePasskey("owner-phone", "wallet.example", "https://wallet.example")
        async with new_device(stack, address) as phone:
            await phone.enroll(CODE)
            wallet = await phone.create_wallet("ecdsa-secp256k1", policy_set=friends_only(passkey))
            await asyncio.wait_for(body(phone, wallet, passkey), 120)

    # The keygen's budget on top of the body's 120 s.
    with_coordinator(stack, socket_dir, main, kind, codes=[CODE], timeout_s=240)


async def sign_transfer(
    phone: Device, wallet: DeviceWallet, tx: Eip1559Transaction, approvers: Any
) -> RecoverableSignature:
    signature = await phone.sign(
        wallet,
        tx.signing_hash(),
        approvers=approvers,
        payload=SignedPayload(evm_transaction=tx.signing_payload()),
    )
    assert isinstance(signature, RecoverableSignature)
    return signature


def signed_by(signature: RecoverableSignature, digest: bytes, wallet: DeviceWallet) -> bool:
    recovered = PublicKey.from_signature_and_message(signature.to_bytes65(), digest, hasher=None)
    return recovered.format() == wallet.public_key


def test_a_phone_wallet_signs_an_allowed_transfer_and_is_refused_a_stranger(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(phone: Device, wallet: DeviceWallet, passkey: SoftwarePasskey) -> None:
        # The coordinator named the wallet in the set; nothing else changed.
        assert wallet.policy_set is not None
        assert wallet.policy_set.wallet_id == wallet.wallet_id
        assert wallet.policy_set.authenticators == friends_only(passkey).authenticators

        friend = transfer(FRIEND)
        signature = await sign_transfer(phone, wallet, friend, [passkey])
        assert signed_by(signature, friend.signing_hash(), wallet)

        with pytest.raises(CoordinatorRefused, match="no allow policy") as denied:
            await sign_transfer(phone, wallet, transfer(STRANGER), [passkey])
        assert denied.value.reason == POLICY_DENIED

        with pytest.raises(CoordinatorRefused, match="'friends-only' matched with 0 of 1") as bare:
            await sign_transfer(phone, wallet, transfer(FRIEND, 1), [])
        assert bare.value.reason == POLICY_DENIED

    with_phone_wallet(stack, socket_dir, body)


class DroppingCoordinator(Coordinator):
    """Starts the server share's side with no approvals, whatever the device sent."""

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        super()._launch(running, owner_signature=owner_signature)


class SwappingCoordinator(Coordinator):
    """Keeps the first approvals a device sent and attaches them to every later request."""

    kept: list[ceremony_pb2.Approval] | None = None

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        approvals = list(approvals)
        if approvals and self.kept is None:
            self.kept = approvals
        super()._launch(running, owner_signature=owner_signature, approvals=self.kept or ())


class ForgingCoordinator(Coordinator):
    """Approves with a passkey of its own under the owner's passkey's name, over the
    policy set it saw at keygen."""

    policy_set: PolicySet | None = None

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        request = running.request
        if request.kind == ceremony_pb2.CEREMONY_KIND_KEYGEN:
            self.policy_set = decode(request.policy_set)
        elif self.policy_set is not None:
            forger = SoftwarePasskey("owner-phone", "wallet.example", "https://wallet.example")
            approvals = approvals_of(running.data, self.policy_set, request.epoch, [forger])
        super()._launch(running, owner_signature=owner_signature, approvals=approvals)


def test_a_coordinator_that_drops_the_approvals_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(phone: Device, wallet: DeviceWallet, passkey: SoftwarePasskey) -> None:
        with pytest.raises(CoordinatorRefused, match="'friends-only' matched with 0 of 1") as info:
            await sign_transfer(phone, wallet, transfer(FRIEND), [passkey])
        assert info.value.reason == POLICY_DENIED

    with_phone_wallet(stack, socket_dir, body, DroppingCoordinator)


def test_a_coordinator_that_swaps_in_earlier_approvals_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(phone: Device, wallet: DeviceWallet, passkey: SoftwarePasskey) -> None:
        first = transfer(FRIEND)
        assert signed_by(
            await sign_transfer(phone, wallet, first, [passkey]), first.signing_hash(), wallet
        )
        # The second request has its own single-use challenge: the first approval does not cover it.
        with pytest.raises(CoordinatorRefused, match="approval by 'owner-phone' refused") as info:
            await sign_transfer(phone, wallet, transfer(FRIEND, 1), [passkey])
        assert info.value.reason == APPROVAL_REFUSED

    with_phone_wallet(stack, socket_dir, body, SwappingCoordinator)


def test_a_coordinator_that_forges_an_approval_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(phone: Device, wallet: DeviceWallet, passkey: SoftwarePasskey) -> None:
        with pytest.raises(CoordinatorRefused, match="approval by 'owner-phone' refused") as info:
            await sign_transfer(phone, wallet, transfer(FRIEND), [passkey])
        assert info.value.reason == APPROVAL_REFUSED

    with_phone_wallet(stack, socket_dir, body, ForgingCoordinator)


class RedirectingCoordinator(Coordinator):
    """Builds the signature request for a transfer to a stranger instead of the asked one."""

    def _wallet_request(self, ask: Any, *args: Any) -> Any:
        stranger = transfer(STRANGER)
        ask.digest = stranger.signing_hash()
        ask.evm_transaction = stranger.signing_payload()
        return super()._wallet_request(ask, *args)


def test_a_coordinator_that_redirects_the_transfer_gets_no_approval(
    stack: DevStack, socket_dir: Path
) -> None:
    approved: list[bytes] = []

    class CountingPasskey(SoftwarePasskey):
        def approve(self, challenge: bytes) -> Any:
            approved.append(challenge)
            return super().approve(challenge)

    async def body(phone: Device, wallet: DeviceWallet, passkey: SoftwarePasskey) -> None:
        counting = CountingPasskey(passkey.name, passkey.rp_id, passkey.origin, passkey._key)
        with pytest.raises(CoordinatorRefused, match="signing request differs from the ask"):
            await sign_transfer(phone, wallet, transfer(FRIEND), [counting])
        assert approved == []  # the device checked the request before anyone approved it

    with_phone_wallet(stack, socket_dir, body, RedirectingCoordinator)
