"""The SDK's side of key changes against the real stack: pending before agreement, resume.

Attack (the issue's first): a 2-of-2 refresh in which the phone loses the
server's last message. The host commits the new epoch; before, the phone had
no new share and the server refused the old one for ever. Now the SDK saved the
new share as pending before the phone agreed, raises a typed
``KeyChangeInterrupted``, the old epoch keeps signing, and ``resume`` promotes
the pending share with the host's certificate; once every seat acknowledged,
the old epoch is pruned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from coincurve import PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack
from client.sdk.approvals import ApiKey, SoftwarePasskey
from client.sdk.key_change import MemoryKeyStore, PendingChange
from client.sdk.party import PartyIdentity
from client.sdk.wallet import (
    APPROVAL_REFUSED,
    KeyChangeInterrupted,
    KeyChangeUndecided,
    Wallet,
    WalletClient,
    WalletError,
)
from shardkeep.policyset import Consensus, Policy, PolicySet
from tests.fault_harness import Fault, FaultPlan, FaultyRelay
from tests.stack_harness import RawDigestWalletClient, background_stack, wallet_client
from tss.keyshare import Scheme
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
DIGEST = bytes.fromhex("5a" * 32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("keychange") / "run") as running:
        yield running


async def signs(client: WalletClient, wallet: Wallet, device: PartyIdentity) -> bool:
    signature = await client.sign(wallet, DIGEST, {0: device})
    if isinstance(signature, RecoverableSignature):
        sig65 = signature.signature + bytes([signature.recovery_id])
        recovered = PublicKey.from_signature_and_message(sig65, DIGEST, hasher=None)
        return bool(recovered.format() == wallet.public_key)
    return bool(PublicKeyXOnly(wallet.public_key[1:]).verify(signature, DIGEST))


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_refresh_last_message_lost_sdk_resumes_and_old_epoch_signs_meanwhile(
    stack: DevStack, scheme: Scheme
) -> None:
    async def body() -> None:
        phone = PartyIdentity.generate()
        async with wallet_client(stack) as client:
            wallet = await client.create_wallet(scheme, [phone], threshold=2)
        last_round = 3 if scheme == "bip340" else 4  # the certificate signatures
        plan = FaultPlan(Fault("drop", (last_round, "server", "device0")), stack.kill, 0.0)
        plan.roles = {phone.party_id: "device0"}
        store = MemoryKeyStore()
        faulty = RawDigestWalletClient(
            stack.host_address, stack.relay_address, stack.coordinator_key,
            root_certificate=stack.root_certificate, timeout=6.0,
            relay=FaultyRelay.to(stack.relay_address, plan, stack.coordinator_key),
        )  # fmt: skip
        async with faulty:
            with pytest.raises(KeyChangeInterrupted) as caught:
                await faulty.refresh(wallet, {0: phone}, store=store)
        assert plan.fired
        pending = caught.value.pending
        assert store.pending[wallet.wallet_id] is pending and pending.epoch == 1
        assert wallet.wallet_id not in store.committed

        async with wallet_client(stack) as client:
            assert await signs(client, wallet, phone)  # the old epoch, meanwhile
            resumed = await client.resume(wallet, pending, devices={0: phone}, store=store)
            assert resumed is not None and resumed.epoch == 1
            assert store.committed[wallet.wallet_id] is resumed and not store.pending
            assert await signs(client, resumed, phone)
            # Every seat acknowledged epoch 1 (the phone on resume): epoch 0 is pruned.
            with pytest.raises(WalletError):
                await client.sign(wallet, DIGEST, {0: phone})

    asyncio.run(asyncio.wait_for(body(), 120))


class OrderedStore(MemoryKeyStore):
    """A memory store that records the order of its calls and the rounds seen by then."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.plan = plan

    def save_pending(self, change: PendingChange) -> None:
        seen = self.plan.seen if self.plan else []
        # No CertEq signature (keygen round 2) of a local party has reached the relay yet.
        assert not [m for m in seen if m[0] >= 2 and m[1] == "device0"], seen
        self.calls.append(f"pending:{change.kind}:{change.epoch}")
        super().save_pending(change)

    def save(self, wallet: Wallet, devices: dict[int, PartyIdentity]) -> None:
        self.calls.append("save")
        self.pending.pop(wallet.wallet_id, None)
        super().save(wallet, devices)

    def commit(self, change: PendingChange) -> None:
        self.calls.append("commit")
        super().commit(change)

    def discard(self, change: PendingChange) -> None:
        self.calls.append("discard")
        super().discard(change)


def faulty_client(stack: DevStack, plan: FaultPlan, timeout: float) -> WalletClient:
    return RawDigestWalletClient(
        stack.host_address, stack.relay_address, stack.coordinator_key,
        root_certificate=stack.root_certificate, timeout=timeout,
        relay=FaultyRelay.to(stack.relay_address, plan, stack.coordinator_key),
    )  # fmt: skip


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_keygen_saves_pending_before_agreeing_and_finishes_from_the_host_certificate(
    stack: DevStack, scheme: Scheme
) -> None:
    """Pending before agreement for keygen: the device's new share is in the store before
    its CertEq signature leaves. Fault: the phone loses the server's last message; the
    host commits the wallet, and the SDK finishes it from the host's certificate (ECDSA:
    without a pair setup, made on demand at the first signature)."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        watch = FaultPlan(None, stack.kill, 0.0)
        watch.roles = {phone.party_id: "device0"}
        clean = OrderedStore(watch)
        async with faulty_client(stack, watch, 60.0) as client:
            wallet = await client.create_wallet(scheme, [phone], threshold=2, store=clean)
            assert clean.calls == ["pending:keygen:0", "save"] and not clean.pending
            assert clean.committed[wallet.wallet_id] is wallet
            assert await signs(client, wallet, phone)

        last = 2 if scheme == "bip340" else 4
        plan = FaultPlan(Fault("drop", (last, "server", "device0")), stack.kill, 0.0)
        plan.roles = {phone.party_id: "device0"}
        store = OrderedStore(plan)
        async with faulty_client(stack, plan, 6.0) as faulty:
            lost = await faulty.create_wallet(scheme, [phone], threshold=2, store=store)
        assert plan.fired and store.calls == ["pending:keygen:0", "commit"]
        assert store.committed[lost.wallet_id] is lost and not store.pending
        if scheme == "ecdsa-secp256k1":
            assert lost.shares[0].ecdsa is not None and not lost.shares[0].ecdsa.held
        async with wallet_client(stack) as client:
            assert await signs(client, lost, phone)

    asyncio.run(body())


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_failed_keygen_pending_share_is_discarded_and_the_wallet_id_is_free(
    stack: DevStack, scheme: Scheme
) -> None:
    """Fault: the server never gets the phone's CertEq signature, so the host never commits
    the keygen (and aborts it, freeing the id), though the phone may hold the whole
    certificate. The SDK keeps the pending share until the host can no longer commit,
    then discards it; the same wallet id makes a new wallet."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        wallet_id = f"kg-free-{scheme[:5]}-{id(phone) & 0xFFFF:x}"
        plan = FaultPlan(Fault("drop", (2, "device0", "server")), stack.kill, 0.0)
        plan.roles = {phone.party_id: "device0"}
        store = OrderedStore(plan)
        async with faulty_client(stack, plan, 4.0) as faulty:
            with pytest.raises(KeyChangeInterrupted) as caught:
                await faulty.create_wallet(
                    scheme, [phone], threshold=2, wallet_id=wallet_id, store=store
                )
        pending = caught.value.pending
        assert plan.fired and store.pending[wallet_id] is pending and pending.kind == "keygen"
        async with wallet_client(stack) as client:
            with pytest.raises(KeyChangeUndecided):  # the host could still be storing it
                await client.resume(None, pending, store=store)
            await asyncio.sleep(max(0.0, pending.deadline_unix - time.time()) + 1.0)
            assert await client.resume(None, pending, store=store) is None
            assert store.calls[-1] == "discard" and not store.pending and not store.committed
            wallet = await client.create_wallet(scheme, [phone], threshold=2, wallet_id=wallet_id)
            assert await signs(client, wallet, phone)

    asyncio.run(body())


def test_an_interrupted_policy_change_resumes_with_the_new_set(stack: DevStack) -> None:
    """A refresh that changes the policy set loses its last message: the pending wallet
    carries the new set, so the resumed wallet's approvals verify under it."""
    passkey = SoftwarePasskey("owner-passkey", "wallet.example", "https://wallet.example")
    lost = ApiKey.generate("lost-phone")
    sign = Policy("sign", "allow", "activity.kind == 'SIGN_RAW_DIGEST'", Consensus(1))
    change = Policy("change", "allow", "activity.kind == 'SET_POLICY'", Consensus(1, "owner"))
    before = PolicySet(
        "set-by-the-sdk", 0, 1, (passkey.authenticator("owner"), lost.authenticator()),
        (sign, change),
    )  # fmt: skip
    after = PolicySet("set-by-the-sdk", 0, 2, (passkey.authenticator("owner"),), (sign, change))

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with wallet_client(stack) as client:
            wallet = await client.create_wallet("bip340", [phone], threshold=2, policy_set=before)
        plan = FaultPlan(Fault("drop", (3, "server", "device0")), stack.kill, 0.0)
        plan.roles = {phone.party_id: "device0"}
        store = MemoryKeyStore()
        async with faulty_client(stack, plan, 6.0) as faulty:
            with pytest.raises(KeyChangeInterrupted) as caught:
                await faulty.refresh(
                    wallet, {0: phone}, store=store, approvers=[passkey], new_policy_set=after
                )
        assert plan.fired
        async with wallet_client(stack) as client:
            resumed = await client.resume(
                wallet, caught.value.pending, devices={0: phone}, store=store
            )
            assert resumed is not None and resumed.epoch == 1
            assert resumed.policy_set == replace(after, wallet_id=wallet.wallet_id, epoch=1)
            signature = await client.sign(resumed, DIGEST, {0: phone}, approvers=[passkey])
            assert PublicKeyXOnly(resumed.public_key[1:]).verify(signature, DIGEST)
            with pytest.raises(WalletError, match="'lost-phone' refused") as refused:
                await client.sign(resumed, DIGEST, {0: phone}, approvers=[lost])
            assert refused.value.reason == APPROVAL_REFUSED

    asyncio.run(asyncio.wait_for(body(), 120))
