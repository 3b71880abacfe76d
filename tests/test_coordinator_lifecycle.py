"""A device refreshes and exports its wallet through the coordinator service, never holding its key.

End to end on the development stack (processes) with an in-process
coordinator service: refresh (new shares saved before the device agrees, the
new epoch acknowledged through the coordinator, the host prunes the old one),
a signature with the new share, and an export approved by the owner key on
the device. The attacks: an export the owner never approved (a device
without the owner key; a coordinator that starts it unapproved) and a
coordinator that redirects the export to a key of its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from client.cli.devstack import DevStack
from client.sdk.default_policy import owner_approver
from client.sdk.device import (
    CoordinatorRefused,
    Device,
    DeviceKeyChangeInterrupted,
    DeviceWallet,
)
from coordinator.coordinator import Coordinator
from shardkeep.device_auth import sign_device_call
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, host_pb2, host_pb2_grpc
from tests.coordinator_support import CODES, new_device, socket_dir, stack, with_coordinator
from tests.stack_harness import RawDigestDevice
from tss.certificate import sign_party_claim
from tss.curve import schnorr_verify
from tss.group import ED25519
from tss.signing import RecoverableSignature

__all__ = ["socket_dir", "stack"]  # the fixtures (tests.coordinator_support)

pytestmark = pytest.mark.slow
DIGEST = bytes(range(32, 64))


def verifies(wallet: DeviceWallet, signature: Any) -> bool:
    if wallet.scheme == "ed25519":  # RFC 8032 over the message (here DIGEST's bytes)
        try:
            VerifyKey(wallet.public_key).verify(DIGEST, signature)
        except BadSignatureError:
            return False
        return True
    if isinstance(signature, RecoverableSignature):
        key = PublicKey.from_signature_and_message(signature.to_bytes65(), DIGEST, hasher=None)
        return bool(key.format() == wallet.public_key)
    return schnorr_verify(DIGEST, wallet.public_key[1:], signature)


async def host_epochs(stack: DevStack, wallet_id: str) -> dict[int, str]:
    async with grpc.aio.insecure_channel(stack.host_address) as channel:
        host = host_pb2_grpc.HostStub(channel)  # type: ignore[no-untyped-call]
        reply = await host.GetEpochs(host_pb2.GetEpochsRequest(wallet_id=wallet_id))
    return {record.epoch: record.state for record in reply.epochs}


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1", "ed25519"])
def test_device_refreshes_signs_and_exports_through_the_coordinator(
    stack: DevStack, socket_dir: Path, scheme: Any
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        saved: list[DeviceWallet] = []

        async def save_pending(new: DeviceWallet) -> None:
            saved.append(new)

        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            old = await phone.create_wallet(scheme)
            new = await phone.refresh(old, save_pending=save_pending)
            assert [w.share for w in saved] == [new.share]  # saved before the device agreed
            assert (new.epoch, new.public_key) == (1, old.public_key)
            assert new.share.secret_share != old.share.secret_share
            record = coordinator.wallet(old.wallet_id)
            assert record is not None and record.epoch == 1

            assert await phone.acknowledge_epoch(new) == 1  # the host pruned epoch 0
            assert await host_epochs(stack, old.wallet_id) == {1: "committed"}
            assert verifies(new, await phone.sign(new, DIGEST))

            key = await phone.export(new)
        if scheme == "ed25519":  # the expanded secret: scalar || prefix, no seed exists
            assert len(key) == 64
            scalar = int.from_bytes(key[:32], "little")
            assert ED25519.encode(ED25519.base_mul(scalar)) == old.public_key
            return
        public = PrivateKey(key).public_key.format()
        assert public[1:] == old.public_key[1:]
        if scheme == "ecdsa-secp256k1":
            assert public == old.public_key

    with_coordinator(stack, socket_dir, body)


def test_export_without_the_owners_approval_is_refused(stack: DevStack, socket_dir: Path) -> None:
    """Export by a device that lost the owner key: its signature is not the wallet owner's."""

    async def body(coordinator: Coordinator, address: str) -> None:
        phone = new_device(stack, address)
        async with phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
        thief = RawDigestDevice(
            address, stack.relay_address, identity=phone.identity,
            device_key=phone._device_key, owner_key=Ed25519PrivateKey.generate(),
            root_certificate=stack.root_certificate,
        )  # fmt: skip
        async with thief:
            with pytest.raises(CoordinatorRefused) as info:
                await thief.export(wallet)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "not the wallet owner's" in str(info.value)

    with_coordinator(stack, socket_dir, body)


class UnapprovedExportCoordinator(Coordinator):
    """A malicious coordinator: starts an export at the host without the owner's approval
    (and swallows the approvals the device then sends)."""

    def approve(self, call: coordinator_pb2.DeviceCall) -> None:
        return None

    async def start(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.StartedCeremony:
        started = await super().start(call)
        if started.needs_owner_approval:
            request = ceremony_pb2.CeremonyRequest.FromString(started.request)
            self._launch(self._running[request.ceremony_id])
            started.needs_owner_approval = False
        return started


def test_coordinator_exporting_without_the_owner_is_refused_by_the_enclave(
    stack: DevStack, socket_dir: Path
) -> None:
    """The coordinator key alone does not export: the enclave wants the owner's signature."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
            with pytest.raises(CoordinatorRefused) as info:
                await phone.export(wallet)
        assert "server share refused" in str(info.value)
        assert "owner" in str(info.value)

    with_coordinator(stack, socket_dir, body, UnapprovedExportCoordinator)


class RedirectingCoordinator(Coordinator):
    """A malicious coordinator: sends the export to a one-time key of its own."""

    approvals = 0

    def _wallet_request(self, ask: Any, *args: Any) -> tuple[ceremony_pb2.CeremonyRequest, int]:
        request, index = super()._wallet_request(ask, *args)
        if request.kind == ceremony_pb2.CEREMONY_KIND_EXPORT:
            request.export_recipient_key = (
                X25519PrivateKey.generate().public_key().public_bytes_raw()
            )
        return request, index

    def approve(self, call: coordinator_pb2.DeviceCall) -> None:
        RedirectingCoordinator.approvals += 1
        super().approve(call)


def test_coordinator_redirecting_the_export_gets_no_approval(
    stack: DevStack, socket_dir: Path
) -> None:
    """The device checks the recipient key before its owner key signs anything."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
            with pytest.raises(CoordinatorRefused, match="export request differs"):
                await phone.export(wallet)
        assert RedirectingCoordinator.approvals == 0

    with_coordinator(stack, socket_dir, body, RedirectingCoordinator)


def test_refresh_of_a_wallet_the_device_is_not_in_is_denied(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as alice, new_device(stack, address) as bob:
            await alice.enroll(CODES[0])
            await bob.enroll(CODES[1])
            wallet = await alice.create_wallet("bip340")
            with pytest.raises(CoordinatorRefused) as info:
                await bob.refresh(wallet)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED

    with_coordinator(stack, socket_dir, body)


THREE_CODES = (*CODES, "code-carol")  # a third enrollment code (a third device)


def test_device_adds_a_second_device_and_both_sign_through_the_coordinator(
    stack: DevStack, socket_dir: Path
) -> None:
    """ECDSA 2-of-2 -> 2-of-3: the phone deals with the server share (owner-approved), the
    laptop joins with its own room token; both acknowledge, then each signs with the server."""

    async def body(coordinator: Coordinator, address: str) -> None:
        saved: dict[str, list[DeviceWallet]] = {"phone": [], "laptop": []}

        def saver(name: str) -> Any:
            async def save(new: DeviceWallet) -> None:
                saved[name].append(new)

            return save

        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            await phone.enroll(CODES[0])
            await laptop.enroll(CODES[1])
            old = await phone.create_wallet("ecdsa-secp256k1")
            laptop_key = laptop._device_key.public_key().public_bytes_raw()
            mine, theirs = await asyncio.gather(
                phone.add_party(
                    old, laptop.identity.party, laptop_key, save_pending=saver("phone")
                ),
                laptop.join_wallet(
                    old.wallet_id,
                    public_key=old.public_key,
                    save_pending=saver("laptop"),
                    policy_set=old.policy_set,
                ),
            )
            assert [w.share for w in saved["phone"]] == [mine.share]
            assert [w.share for w in saved["laptop"]] == [theirs.share]
            assert (mine.index, theirs.index, mine.parties) == (0, 1, theirs.parties)
            assert len(mine.parties) == 3 and mine.parties[2] == old.parties[1]
            assert (mine.threshold, mine.epoch, theirs.public_key) == (2, 1, old.public_key)
            record = coordinator.wallet(old.wallet_id)
            assert record is not None and sorted(record.devices.values()) == [0, 1]

            assert await phone.acknowledge_epoch(mine) == 0  # the laptop has not yet
            assert await laptop.acknowledge_epoch(theirs) == 1
            assert await host_epochs(stack, old.wallet_id) == {1: "committed"}
            # the wallet's owner approves what the laptop signs (its default set)
            owner = [owner_approver(phone._owner_key)]
            assert verifies(mine, await laptop.sign(theirs, DIGEST, approvers=owner))
            assert verifies(mine, await phone.sign(mine, DIGEST))

    with_coordinator(stack, socket_dir, body, codes=THREE_CODES)


def test_uninvited_device_cannot_take_the_new_seat(stack: DevStack, socket_dir: Path) -> None:
    """Seat hijack: an enrolled device that was not invited asks to join a running reshare."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with (
            new_device(stack, address) as phone,
            new_device(stack, address) as laptop,
            new_device(stack, address) as intruder,
        ):
            for device, code in ((phone, CODES[0]), (laptop, CODES[1]), (intruder, "code-carol")):
                await device.enroll(code)
            old = await phone.create_wallet("bip340")
            intruder._timeout = 3.0  # it keeps asking for an invitation that never comes
            laptop_key = laptop._device_key.public_key().public_bytes_raw()
            added, joined, hijack = await asyncio.gather(
                phone.add_party(old, laptop.identity.party, laptop_key),
                laptop.join_wallet(old.wallet_id, public_key=old.public_key),
                intruder.join_wallet(old.wallet_id, public_key=old.public_key),
                return_exceptions=True,
            )
        assert isinstance(added, DeviceWallet) and isinstance(joined, DeviceWallet)
        assert isinstance(hijack, CoordinatorRefused)
        assert hijack.code == grpc.StatusCode.NOT_FOUND

    with_coordinator(stack, socket_dir, body, codes=THREE_CODES)


def test_reshare_to_a_device_that_is_not_enrolled_is_refused(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            old = await phone.create_wallet("bip340")
            stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
            other = new_device(stack, address)
            with pytest.raises(CoordinatorRefused) as info:
                await phone.add_party(old, other.identity.party, stranger)
            await other.__aexit__(None, None, None)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "enrolled" in str(info.value)

    with_coordinator(stack, socket_dir, body)


# Enrollment codes with their accounts: alice's phone's, and later her new phone's.
ONE_ACCOUNT = (
    (CODES[0], "alice"), ("code-new-phone", "alice"), (CODES[1], "mallory"),
    ("code-alice-2", "alice"),
)  # fmt: skip


PASSCODE = "a passphrase only alice knows"


def test_lost_phone_restored_from_its_backup_signs_again(stack: DevStack, socket_dir: Path) -> None:
    """Backup through the coordinator, the phone lost, a new phone of the same account fetches
    the backup, opens it with the passcode, claims the party with its host key and signs."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")
            backup_id = await phone.backup(wallet, passcode=PASSCODE, insecure_allow_weak_kdf=True)
        lost_key = phone._device_key.public_key().public_bytes_raw()
        async with new_device(stack, address) as new_phone:
            await new_phone.enroll("code-new-phone")
            restored = await new_phone.restore(
                wallet.wallet_id, public_key=wallet.public_key, passcode=PASSCODE,
                insecure_allow_weak_kdf=True,
            )  # fmt: skip
            assert restored.share.secret_share == wallet.share.secret_share
            assert new_phone.identity.party == phone.identity.party
            record = coordinator.wallet(wallet.wallet_id)
            assert record is not None and lost_key not in record.devices  # the lost phone is out
            assert verifies(restored, await new_phone.sign(restored, DIGEST))
            key = await new_phone.export(restored)  # the owner key came back with the backup
        assert PrivateKey(key).public_key.format()[1:] == wallet.public_key[1:]
        assert backup_id.startswith("bk-")

    with_coordinator(stack, socket_dir, body, codes=ONE_ACCOUNT)


def test_other_account_cannot_fetch_or_claim_a_wallets_backup(
    stack: DevStack, socket_dir: Path
) -> None:
    """Backup theft: an enrolled device of another account asks for the wallet's backup (to
    guess the passcode offline) and claims its party; a device of the same account that could
    not open the backup claims the party with a host key of its own."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone, new_device(stack, address) as mallory:
            await phone.enroll(CODES[0])
            await mallory.enroll(CODES[1])
            wallet = await phone.create_wallet("bip340")
            await phone.backup(wallet, passcode=PASSCODE, insecure_allow_weak_kdf=True)
            with pytest.raises(CoordinatorRefused) as fetched:
                await mallory.restore(
                    wallet.wallet_id, public_key=wallet.public_key, passcode=PASSCODE,
                    insecure_allow_weak_kdf=True,
                )  # fmt: skip
            assert fetched.value.code == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(CoordinatorRefused) as stored:
                await mallory.backup(wallet, passcode=PASSCODE, insecure_allow_weak_kdf=True)
            assert stored.value.code == grpc.StatusCode.PERMISSION_DENIED
        async with new_device(stack, address) as impostor:
            await impostor.enroll("code-alice-2")
            claim = coordinator_pb2.PartyClaim(
                wallet_id=wallet.wallet_id, party=0,
                signature=sign_party_claim(
                    impostor.identity.hostseckey, wallet.wallet_id, 0,
                    impostor._device_key.public_key().public_bytes_raw(), bytes(32),
                ),
            )  # fmt: skip
            with pytest.raises(CoordinatorRefused) as claimed:
                await impostor._unary(
                    impostor._coordinator.ClaimParty,
                    sign_device_call(impostor._device_key, "ClaimParty", claim.SerializeToString()),
                )
            assert claimed.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "host key" in str(claimed.value)
        record = coordinator.wallet(wallet.wallet_id)
        assert record is not None
        assert record.devices == {phone._device_key.public_key().public_bytes_raw(): 0}

    with_coordinator(stack, socket_dir, body, codes=ONE_ACCOUNT)


class LostAnswerCoordinator(Coordinator):
    """The coordinator's answer to a refresh's FinishCeremony is lost (it fails after the host's
    side committed), so the device cannot tell whether the change happened."""

    lost = False

    async def finish(self, call: coordinator_pb2.DeviceCall) -> ceremony_pb2.CeremonyResult:
        result = await super().finish(call)
        if result.epoch > 0 and not self.lost:  # the refresh's answer, once
            self.lost = True
            raise ConnectionError("the coordinator lost its answer")
        return result


class ForgingSettleCoordinator(LostAnswerCoordinator):
    """Also claims the change committed with a certificate that is not the seats'."""

    async def settle(self, call: coordinator_pb2.DeviceCall) -> coordinator_pb2.SettledKeyChange:
        settled = await super().settle(call)
        settled.certificate = bytes(len(settled.certificate))
        return settled


def refresh_interrupted(phone: Device, wallet: DeviceWallet) -> Any:
    async def run() -> DeviceKeyChangeInterrupted:
        with pytest.raises(DeviceKeyChangeInterrupted) as info:
            await phone.refresh(wallet)
        return info.value

    return run()


def test_interrupted_refresh_resumes_to_the_committed_epoch(
    stack: DevStack, socket_dir: Path
) -> None:
    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            old = await phone.create_wallet("bip340")
            interrupted = await refresh_interrupted(phone, old)
            assert interrupted.pending.epoch == 1 and interrupted.certificate
            new = await phone.resume(old, interrupted)
            assert new is interrupted.pending
            assert await phone.acknowledge_epoch(new) == 1
            assert verifies(new, await phone.sign(new, DIGEST))

    with_coordinator(stack, socket_dir, body, LostAnswerCoordinator)


def test_coordinator_forging_a_commit_is_refused_by_the_device(
    stack: DevStack, socket_dir: Path
) -> None:
    """A forged certificate does not make the device drop its old share for the pending one."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            old = await phone.create_wallet("bip340")
            interrupted = await refresh_interrupted(phone, old)
            interrupted.certificate = b""  # the device lost it too: it must trust the answer
            with pytest.raises(CoordinatorRefused, match="does not verify"):
                await phone.resume(old, interrupted)

    with_coordinator(stack, socket_dir, body, ForgingSettleCoordinator)


def test_abandoned_ceremonies_are_dropped(stack: DevStack, socket_dir: Path) -> None:
    """Resource exhaustion: an enrolled device starts exports it never approves nor finishes;
    the coordinator forgets them (and closes their rooms) once twice the timeout passed."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone:
            await phone.enroll(CODES[0])
            wallet = await phone.create_wallet("bip340")

            async def start_export() -> coordinator_pb2.StartedCeremony:
                ask = coordinator_pb2.CeremonyAsk(
                    kind=ceremony_pb2.CEREMONY_KIND_EXPORT, wallet_id=wallet.wallet_id,
                    party=phone.identity.party, export_recipient_key=bytes(range(32)),
                    attestation_nonce=bytes(32),
                )  # fmt: skip
                call = sign_device_call(phone._device_key, "StartCeremony", ask.SerializeToString())
                started: coordinator_pb2.StartedCeremony = await phone._unary(
                    phone._coordinator.StartCeremony, call
                )
                return started

            abandoned = ceremony_pb2.CeremonyRequest.FromString((await start_export()).request)
            coordinator._timeout = 0.5  # twice that passes before the next start
            await asyncio.sleep(1.2)
            await start_export()
            finish = coordinator_pb2.FinishAsk(ceremony_id=abandoned.ceremony_id)
            with pytest.raises(CoordinatorRefused) as info:
                await phone._unary(
                    phone._coordinator.FinishCeremony,
                    sign_device_call(
                        phone._device_key, "FinishCeremony", finish.SerializeToString()
                    ),
                )
        assert info.value.code == grpc.StatusCode.NOT_FOUND

    with_coordinator(stack, socket_dir, body)


def test_two_devices_refresh_their_wallet_together(stack: DevStack, socket_dir: Path) -> None:
    """Every party deals in a refresh: the phone asks, the laptop (the wallet's other device)
    is invited and joins; both acknowledge the new epoch, then each signs with the server."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            await phone.enroll(CODES[0])
            await laptop.enroll(CODES[1])
            old = await phone.create_wallet("bip340")
            laptop_key = laptop._device_key.public_key().public_bytes_raw()
            mine, theirs = await asyncio.gather(
                phone.add_party(old, laptop.identity.party, laptop_key),
                laptop.join_wallet(
                    old.wallet_id, public_key=old.public_key, policy_set=old.policy_set
                ),
            )
            await phone.acknowledge_epoch(mine)
            await laptop.acknowledge_epoch(theirs)
            mine2, theirs2 = await asyncio.gather(phone.refresh(mine), laptop.join_refresh(theirs))
            assert (mine2.epoch, theirs2.epoch) == (2, 2)
            assert mine2.share.secret_share != mine.share.secret_share
            record = coordinator.wallet(old.wallet_id)
            assert record is not None and record.epoch == 2
            assert await phone.acknowledge_epoch(mine2) == 0
            assert await laptop.acknowledge_epoch(theirs2) == 1
            assert await host_epochs(stack, old.wallet_id) == {2: "committed"}
            owner = [owner_approver(phone._owner_key)]  # the wallet's owner approves
            assert verifies(mine2, await laptop.sign(theirs2, DIGEST, approvers=owner))
            assert verifies(mine2, await phone.sign(mine2, DIGEST))

    with_coordinator(stack, socket_dir, body)


def test_lost_device_is_removed_from_the_wallet(stack: DevStack, socket_dir: Path) -> None:
    """The laptop is lost: the phone reshares the 2-of-3 wallet to 2-of-2 without its party
    (owner-approved); once the phone acknowledges, the laptop's device may not use it."""

    async def body(coordinator: Coordinator, address: str) -> None:
        async with new_device(stack, address) as phone, new_device(stack, address) as laptop:
            await phone.enroll(CODES[0])
            await laptop.enroll(CODES[1])
            old = await phone.create_wallet("bip340")
            laptop_key = laptop._device_key.public_key().public_bytes_raw()
            mine, theirs = await asyncio.gather(
                phone.add_party(old, laptop.identity.party, laptop_key),
                laptop.join_wallet(old.wallet_id, public_key=old.public_key),
            )
            await phone.acknowledge_epoch(mine)
            await laptop.acknowledge_epoch(theirs)

            alone = await phone.remove_party(mine, theirs.index)
            assert alone.parties == [mine.parties[0], mine.parties[2]]
            assert (alone.index, alone.threshold, alone.epoch) == (0, 2, 2)
            record = coordinator.wallet(old.wallet_id)
            assert record is not None and record.devices == {
                phone._device_key.public_key().public_bytes_raw(): 0
            }
            assert await phone.acknowledge_epoch(alone) == 1
            assert await host_epochs(stack, old.wallet_id) == {2: "committed"}
            assert verifies(alone, await phone.sign(alone, DIGEST))
            with pytest.raises(CoordinatorRefused) as info:
                await laptop.sign(theirs, DIGEST)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED

    with_coordinator(stack, socket_dir, body)
