"""Owner approvals of a device wallet's key changes and export through the coordinator.

The development stack plus an in-process coordinator service. The phone's
ECDSA wallet has a policy set: transfers to one friend, and refresh,
reshare, export and policy changes, each approved by the owner's passkey.
The passkey approves the exact request the coordinator returns, after the
phone checked it; the coordinator attaches the approvals unchanged. The set
survives every key change: a refresh, a policy change (and one resumed
after its answer was lost, or joined by another device), reshares that add
and remove a laptop, and a restore from a backup; each new wallet's
approvals verify under the set in force.

The attacks: a coordinator that starts an export, a reshare or a policy
change without the owner's approvals (the server share refuses:
policy-denied); one that slips a policy change of its own into a refresh
(the phone refuses before anyone approves); one that moves the approval of
a refresh to an export (approval-refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from client.cli.devstack import DevStack
from client.sdk.approvals import SoftwarePasskey
from client.sdk.device import (
    CoordinatorRefused,
    Device,
    DeviceKeyChangeInterrupted,
    DeviceWallet,
)
from client.sdk.wallet import APPROVAL_REFUSED, POLICY_DENIED
from coordinator.coordinator import Coordinator, _Running
from shardkeep.policyset import Consensus, Policy, PolicySet, encode
from shardkeep.v1 import ceremony_pb2, coordinator_pb2
from tests.coordinator_support import new_device, socket_dir, stack, with_coordinator
from tests.test_coordinator_approvals import (
    FRIEND,
    STRANGER,
    sign_transfer,
    signed_by,
    transfer,
)

__all__ = ["socket_dir", "stack"]  # the fixtures (tests.coordinator_support)

pytestmark = pytest.mark.slow
PHONE, LAPTOP, NEW_PHONE = "code-phone", "code-laptop", "code-new-phone"
PASSCODE = "a passphrase only the owner knows"
MANAGED = "activity.kind in ['REFRESH', 'RESHARE', 'EXPORT', 'SET_POLICY']"


def owner_managed(passkey: SoftwarePasskey, *allowed: bytes, version: int = 1) -> PolicySet:
    """Transfers to ``allowed`` and every key change or export, each approved by the passkey."""
    to = " || ".join(f"eth.tx.to == '0x{address.hex()}'" for address in allowed)
    return PolicySet(
        "named-by-the-coordinator", 0, version, (passkey.authenticator("owner"),),
        (Policy("transfers", "allow", f"activity.kind == 'SIGN_EVM_TRANSACTION' && ({to})",
                Consensus(1, "owner")),
         Policy("owner-manages", "allow", MANAGED, Consensus(1, "owner"))),
    )  # fmt: skip


class OneOwner(Coordinator):
    """Enrollment codes of one owner's account: the phone, a laptop and a later new phone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["enrollment_codes"] = [(PHONE, "owner"), (LAPTOP, "owner"), (NEW_PHONE, "owner")]
        super().__init__(*args, **kwargs)


def passkey_of(name: str = "owner-phone") -> SoftwarePasskey:
    return SoftwarePasskey(name, "wallet.example", "https://wallet.example")


async def phone_wallet(phone: Device, passkey: SoftwarePasskey) -> DeviceWallet:
    await phone.enroll(PHONE)
    return await phone.create_wallet("ecdsa-secp256k1", policy_set=owner_managed(passkey, FRIEND))


async def signs_to(phone: Device, wallet: DeviceWallet, to: bytes, passkey: Any) -> bool:
    tx = transfer(to, nonce=wallet.epoch)
    return signed_by(await sign_transfer(phone, wallet, tx, [passkey]), tx.signing_hash(), wallet)


async def add_laptop(
    phone: Device, laptop: Device, wallet: DeviceWallet, passkey: SoftwarePasskey
) -> tuple[DeviceWallet, DeviceWallet]:
    """The phone adds the laptop to ``wallet`` (the passkey approves); both new wallets."""
    await laptop.enroll(LAPTOP)
    laptop_key = laptop._device_key.public_key().public_bytes_raw()
    return await asyncio.gather(
        phone.add_party(wallet, laptop.identity.party, laptop_key, approvers=[passkey]),
        laptop.join_wallet(
            wallet.wallet_id, public_key=wallet.public_key, policy_set=wallet.policy_set
        ),
    )


def test_after_a_refresh_the_devices_approvals_still_verify(
    stack: DevStack, socket_dir: Path
) -> None:
    """A refresh and an export approved by the passkey; the refreshed wallet keeps its set,
    re-bound to the new epoch, so the passkey's approvals of a transfer verify."""

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            old = await phone_wallet(phone, passkey)
            new = await phone.refresh(old, approvers=[passkey])
            assert new.epoch == 1 and new.policy_set is not None and old.policy_set is not None
            assert new.policy_set == replace(old.policy_set, epoch=1)
            assert await phone.acknowledge_epoch(new) == 1
            assert await signs_to(phone, new, FRIEND, passkey)
            key = await phone.export(new, approvers=[passkey])
        assert PrivateKey(key).public_key.format() == old.public_key

    with_coordinator(stack, socket_dir, body, OneOwner)


def test_a_policy_change_through_the_coordinator_takes_effect(
    stack: DevStack, socket_dir: Path
) -> None:
    """SET_POLICY on a refresh: approved under the set in force, the new set allows the
    stranger; the phone's new wallet carries it and its approvals verify under it."""

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            old = await phone_wallet(phone, passkey)
            with pytest.raises(CoordinatorRefused) as denied:
                await signs_to(phone, old, STRANGER, passkey)
            assert denied.value.reason == POLICY_DENIED
            wider = owner_managed(passkey, FRIEND, STRANGER, version=2)
            new = await phone.refresh(old, approvers=[passkey], new_policy_set=wider)
            assert new.policy_set == replace(wider, wallet_id=old.wallet_id, epoch=1)
            assert await signs_to(phone, new, STRANGER, passkey)

    with_coordinator(stack, socket_dir, body, OneOwner)


class LostAnswerCoordinator(OneOwner):
    """The answer to a refresh's FinishCeremony is lost after the host committed it."""

    lost = False

    async def finish(self, call: coordinator_pb2.DeviceCall) -> ceremony_pb2.CeremonyResult:
        result = await super().finish(call)
        if result.epoch > 0 and not self.lost:
            self.lost = True
            raise ConnectionError("the coordinator lost its answer")
        return result


def test_an_interrupted_policy_change_resumes_with_the_new_set(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            old = await phone_wallet(phone, passkey)
            wider = owner_managed(passkey, FRIEND, STRANGER, version=2)
            with pytest.raises(DeviceKeyChangeInterrupted) as info:
                await phone.refresh(old, approvers=[passkey], new_policy_set=wider)
            new = await phone.resume(old, info.value)
            assert new.epoch == 1
            assert new.policy_set == replace(wider, wallet_id=old.wallet_id, epoch=1)
            assert await signs_to(phone, new, STRANGER, passkey)

    with_coordinator(stack, socket_dir, body, LostAnswerCoordinator)


def test_a_restored_device_approves_under_the_right_set(stack: DevStack, socket_dir: Path) -> None:
    """The set survives a policy change, a backup and a restore on a new phone: the
    restored wallet's approvals verify (under the old set they would be refused)."""

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            old = await phone_wallet(phone, passkey)
            wider = owner_managed(passkey, FRIEND, STRANGER, version=2)
            wallet = await phone.refresh(old, approvers=[passkey], new_policy_set=wider)
            await phone.acknowledge_epoch(wallet)
            await phone.backup(wallet, passcode=PASSCODE, insecure_allow_weak_kdf=True)
        async with new_device(stack, address) as new_phone:
            await new_phone.enroll(NEW_PHONE)
            restored = await new_phone.restore(
                wallet.wallet_id, public_key=wallet.public_key, passcode=PASSCODE,
                insecure_allow_weak_kdf=True,
            )  # fmt: skip
            assert restored.policy_set == wallet.policy_set
            assert await signs_to(new_phone, restored, STRANGER, passkey)

    with_coordinator(stack, socket_dir, body, OneOwner)


def test_reshares_that_add_and_remove_a_device_keep_the_set(
    stack: DevStack, socket_dir: Path
) -> None:
    """The phone adds a laptop, then removes it (the passkey approves each): every new
    wallet carries the set, and each device's approvals verify under it."""

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            old = await phone_wallet(phone, passkey)
            mine, theirs = await add_laptop(phone, laptop, old, passkey)
            assert mine.policy_set is not None and mine.policy_set == theirs.policy_set
            assert mine.policy_set.epoch == 1
            await phone.acknowledge_epoch(mine)
            await laptop.acknowledge_epoch(theirs)
            assert await signs_to(laptop, theirs, FRIEND, passkey)

            alone = await phone.remove_party(mine, theirs.index, approvers=[passkey])
            assert (alone.epoch, len(alone.parties)) == (2, 2)
            assert alone.policy_set == replace(mine.policy_set, epoch=2)
            await phone.acknowledge_epoch(alone)
            assert await signs_to(phone, alone, FRIEND, passkey)

    with_coordinator(stack, socket_dir, body, OneOwner)


def test_a_device_that_joins_a_policy_change_learns_the_new_set(
    stack: DevStack, socket_dir: Path
) -> None:
    """The phone changes the set of its wallet with the laptop; the laptop, joining the
    refresh, keeps the new set from the request once the change is through."""

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            old = await phone_wallet(phone, passkey)
            mine, theirs = await add_laptop(phone, laptop, old, passkey)
            wider = owner_managed(passkey, FRIEND, STRANGER, version=2)
            mine, theirs = await asyncio.gather(
                phone.refresh(mine, approvers=[passkey], new_policy_set=wider),
                laptop.join_refresh(theirs),
            )
            expected = replace(wider, wallet_id=old.wallet_id, epoch=2)
            assert mine.policy_set == theirs.policy_set == expected
            assert await signs_to(laptop, theirs, STRANGER, passkey)

    with_coordinator(stack, socket_dir, body, OneOwner)


class DroppingCoordinator(OneOwner):
    """Starts the server share's side without the approvals the device sent (the owner's
    signature of an export or reshare it keeps)."""

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        super()._launch(running, owner_signature=owner_signature)


def test_a_coordinator_that_starts_an_export_without_the_owners_approval_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            wallet = await phone_wallet(phone, passkey)
            with pytest.raises(
                CoordinatorRefused, match="'owner-manages' matched with 0 of 1"
            ) as info:
                await phone.export(wallet, approvers=[passkey])
        assert info.value.reason == POLICY_DENIED

    with_coordinator(stack, socket_dir, body, DroppingCoordinator)


def test_a_coordinator_that_starts_a_policy_change_without_the_owners_approval_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            wallet = await phone_wallet(phone, passkey)
            wider = owner_managed(passkey, FRIEND, STRANGER, version=2)
            with pytest.raises(
                CoordinatorRefused, match="'owner-manages' matched with 0 of 1"
            ) as info:
                await phone.refresh(wallet, approvers=[passkey], new_policy_set=wider)
            assert info.value.reason == POLICY_DENIED
            record = coordinator.wallet(wallet.wallet_id)
            assert record is not None and record.epoch == 0  # nothing changed
            with pytest.raises(CoordinatorRefused) as still:
                await signs_to(phone, wallet, STRANGER, passkey)
            assert still.value.reason == POLICY_DENIED

    with_coordinator(stack, socket_dir, body, DroppingCoordinator)


def test_a_coordinator_that_starts_a_reshare_without_the_owners_approval_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            wallet = await phone_wallet(phone, passkey)
            await laptop.enroll(LAPTOP)
            laptop_key = laptop._device_key.public_key().public_bytes_raw()
            added, joined = await asyncio.gather(
                phone.add_party(wallet, laptop.identity.party, laptop_key, approvers=[passkey]),
                # The refused reshare may be gone before the laptop asks for its seat: it
                # would ask until its own timeout, so the test stops waiting earlier.
                asyncio.wait_for(
                    laptop.join_wallet(wallet.wallet_id, public_key=wallet.public_key), 30
                ),
                return_exceptions=True,
            )
            assert isinstance(added, CoordinatorRefused), added
            assert added.reason == POLICY_DENIED
            assert "'owner-manages' matched with 0 of 1" in str(added)
            assert isinstance(joined, Exception)  # the laptop got no share
            record = coordinator.wallet(wallet.wallet_id)
            assert record is not None and (record.epoch, len(record.parties)) == (0, 2)

    with_coordinator(stack, socket_dir, body, DroppingCoordinator)


class PolicySwappingCoordinator(OneOwner):
    """Turns a plain refresh into a policy change to a set of its own: its own passkey
    under the owner's name, everything allowed."""

    def _wallet_request(self, ask: Any, *args: Any) -> Any:
        request, index = super()._wallet_request(ask, *args)
        if request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
            its_own = passkey_of("owner-phone").authenticator("owner")
            request.policy_set = encode(PolicySet(
                request.wallet_id, request.epoch + 1, 9, (its_own,),
                (Policy("anything", "allow", "true", Consensus(1, "owner")),),
            ))  # fmt: skip
        return request, index


def test_a_coordinator_that_slips_a_policy_change_into_a_refresh_gets_no_approval(
    stack: DevStack, socket_dir: Path
) -> None:
    approved: list[bytes] = []

    class CountingPasskey(SoftwarePasskey):
        def approve(self, challenge: bytes) -> Any:
            approved.append(challenge)
            return super().approve(challenge)

    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = CountingPasskey("owner-phone", "wallet.example", "https://wallet.example")
        async with new_device(stack, address) as phone:
            wallet = await phone_wallet(phone, passkey)
            with pytest.raises(CoordinatorRefused, match="changes the policy set otherwise"):
                await phone.refresh(wallet, approvers=[passkey])
        assert approved == []  # the phone checked the request before anyone approved it

    with_coordinator(stack, socket_dir, body, PolicySwappingCoordinator)


class MovingCoordinator(OneOwner):
    """Keeps the approvals of the device's refresh and attaches them to its export."""

    kept: list[ceremony_pb2.Approval] | None = None

    def _launch(
        self,
        running: _Running,
        *,
        owner_signature: bytes = b"",
        approvals: Iterable[ceremony_pb2.Approval] = (),
    ) -> None:
        approvals = list(approvals)
        if running.request.kind == ceremony_pb2.CEREMONY_KIND_REFRESH:
            self.kept = approvals
        elif running.request.kind == ceremony_pb2.CEREMONY_KIND_EXPORT and self.kept:
            approvals = self.kept
        super()._launch(running, owner_signature=owner_signature, approvals=approvals)


def test_a_coordinator_that_moves_a_refresh_approval_to_an_export_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        passkey = passkey_of()
        async with new_device(stack, address) as phone:
            old = await phone_wallet(phone, passkey)
            new = await phone.refresh(old, approvers=[passkey])
            await phone.acknowledge_epoch(new)
            with pytest.raises(
                CoordinatorRefused, match="approval by 'owner-phone' refused"
            ) as info:
                await phone.export(new, approvers=[passkey])
        assert info.value.reason == APPROVAL_REFUSED

    with_coordinator(stack, socket_dir, body, MovingCoordinator)
