"""Policies through the SDK against the real stack: approvers follow the wallet across a refresh.

A BIP-340 wallet whose policy wants the owner's passkey for signatures and
key changes: without approvers the server share refuses; with them it
refreshes, and the SDK's approvals follow the set to the new epoch, so the
refreshed wallet still signs. A P-256 API key tagged ``admin`` approves
alongside where two approvals are needed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client.cli.devstack import DevStack
from client.sdk.approvals import ApiKey, SoftwarePasskey
from client.sdk.party import PartyIdentity
from client.sdk.wallet import APPROVAL_REFUSED, POLICY_DENIED, WalletClient, WalletError
from shardkeep.policyset import Consensus, Policy, PolicySet
from tests.stack_harness import background_stack, run_with_client
from tss.curve import schnorr_verify

pytestmark = pytest.mark.slow
DIGEST = bytes.fromhex("c0ffee" * 10 + "0001")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("policy") / "run") as running:
        yield running


def test_approvers_follow_the_policy_set_across_a_refresh(stack: DevStack) -> None:
    passkey = SoftwarePasskey("owner-passkey", "wallet.example", "https://wallet.example")
    admin = ApiKey.generate("ops-key", "p256")
    policies = PolicySet(
        "set-by-the-sdk", 0, 1, (passkey.authenticator("admin"), admin.authenticator("admin")),
        (
            Policy("sign", "allow", "activity.kind == 'SIGN_RAW_DIGEST'", Consensus(1)),
            Policy("refresh", "allow", "activity.kind == 'REFRESH'", Consensus(2, "admin")),
        ),
    )  # fmt: skip

    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2, policy_set=policies)
        assert wallet.policy_set is not None and wallet.policy_set.wallet_id == wallet.wallet_id
        with pytest.raises(WalletError, match="'sign' matched with 0 of 1") as denied:
            await client.sign(wallet, DIGEST, {0: device})
        assert denied.value.reason == POLICY_DENIED
        signature = await client.sign(wallet, DIGEST, {0: device}, approvers=[passkey])
        assert isinstance(signature, bytes) and schnorr_verify(
            DIGEST, wallet.public_key[1:], signature
        )

        with pytest.raises(WalletError, match="1 of 2 approvals tagged 'admin'"):
            await client.refresh(wallet, {0: device}, approvers=[passkey])
        refreshed = await client.refresh(wallet, {0: device}, approvers=[passkey, admin])
        assert refreshed.epoch == 1
        signature = await client.sign(refreshed, DIGEST, {0: device}, approvers=[admin])
        assert isinstance(signature, bytes)
        assert schnorr_verify(DIGEST, refreshed.public_key[1:], signature)

    run_with_client(stack, body)


def test_a_lost_authenticator_is_removed_by_an_approved_policy_change(stack: DevStack) -> None:
    # The owner lost a phone with an API key on it: the passkey approves a
    # refresh that replaces the policy set without that key. From the new
    # epoch on, the lost key's approvals name no authenticator of the set.
    passkey = SoftwarePasskey("owner-passkey", "wallet.example", "https://wallet.example")
    lost = ApiKey.generate("lost-phone", "ed25519")
    sign_any = Policy("sign", "allow", "activity.kind == 'SIGN_RAW_DIGEST'", Consensus(1))
    change = Policy("change", "allow", "activity.kind == 'SET_POLICY'", Consensus(1, "owner"))
    before = PolicySet(
        "set-by-the-sdk", 0, 1, (passkey.authenticator("owner"), lost.authenticator()),
        (sign_any, change),
    )  # fmt: skip
    after = PolicySet("set-by-the-sdk", 0, 2, (passkey.authenticator("owner"),), (sign_any, change))

    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2, policy_set=before)
        assert await client.sign(wallet, DIGEST, {0: device}, approvers=[lost])
        with pytest.raises(WalletError, match="'change' matched with 0 of 1 approvals tagged"):
            await client.refresh(wallet, {0: device}, approvers=[lost], new_policy_set=after)
        with pytest.raises(WalletError, match="version above the current one"):
            await client.refresh(wallet, {0: device}, approvers=[passkey], new_policy_set=before)
        changed = await client.refresh(
            wallet, {0: device}, approvers=[passkey], new_policy_set=after
        )
        assert changed.epoch == 1 and changed.policy_set is not None
        assert changed.policy_set.version == 2
        with pytest.raises(WalletError, match="'lost-phone' refused: not an authenticator") as e:
            await client.sign(changed, DIGEST, {0: device}, approvers=[lost])
        assert e.value.reason == APPROVAL_REFUSED
        signature = await client.sign(changed, DIGEST, {0: device}, approvers=[passkey])
        assert isinstance(signature, bytes)
        assert schnorr_verify(DIGEST, changed.public_key[1:], signature)

    run_with_client(stack, body)
