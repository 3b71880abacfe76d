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
from collections.abc import Iterator

import pytest
from coincurve import PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack
from client.sdk.key_change import MemoryKeyStore
from client.sdk.party import PartyIdentity
from client.sdk.wallet import KeyChangeInterrupted, Wallet, WalletClient, WalletError
from tests.fault_harness import Fault, FaultPlan, FaultyRelay
from tests.stack_harness import background_stack, wallet_client
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
        faulty = WalletClient(
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
