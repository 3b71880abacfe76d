"""The demo's policy story: the enclave refuses what the owner's policy forbids.

An ECDSA wallet is created with a policy set: the owner's passkey (a
software passkey here) must approve every signature, and only transfers to
one address, of at most 1 ETH, are allowed. A transfer there, approved, is
signed; a transfer anywhere else is refused by the enclave, although the
device's share, the coordinator's signature and the passkey's approval are
all there (docs/security/policy.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from client.chains.ethereum import Eip1559Transaction, checksum_address, sign_transaction
from client.errors import WalletError
from client.sdk.approvals import SoftwarePasskey
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient
from shardkeep.policyset import Consensus, Policy, PolicySet

FRIEND = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
STRANGER = bytes.fromhex("de" * 20)


def _transfer(to: bytes, nonce: int) -> Eip1559Transaction:
    return Eip1559Transaction(
        chain_id=1, nonce=nonce, max_priority_fee_per_gas=10**9, max_fee_per_gas=30 * 10**9,
        gas=21_000, to=to, value=10**17,
    )  # fmt: skip


async def policy_story(
    wallets: WalletClient,
    device: PartyIdentity,
    step: Callable[[str, Awaitable[Any]], Awaitable[Any]],
    say: Callable[[str], None],
) -> None:
    """Create the wallet, sign an allowed transfer and show a forbidden one refused."""
    passkey = SoftwarePasskey("owner-passkey", "wallet.example", "https://wallet.example")
    condition = (
        f"activity.kind == 'SIGN_EVM_TRANSACTION' && eth.tx.to == '0x{FRIEND.hex()}' "
        "&& eth.tx.value_gwei <= 1000000000"
    )
    policies = PolicySet(
        "set-by-the-sdk", 0, 1, (passkey.authenticator(),),
        (Policy("one-friend-up-to-1-eth", "allow", condition, Consensus(1)),),
    )  # fmt: skip
    wallet = await step(
        "create a 2-of-2 ECDSA wallet whose policy the enclave enforces",
        wallets.create_wallet("ecdsa-secp256k1", [device], threshold=2, policy_set=policies),
    )
    say(f"  policy: {condition}; every signature needs the owner's passkey")
    signed = await step(
        f"sign 0.1 ETH to {checksum_address(FRIEND)}, approved by the owner's passkey",
        sign_transaction(wallets, wallet, _transfer(FRIEND, 0), {0: device}, approvers=[passkey]),
    )
    say(f"  allowed: transaction {signed.hash.hex()[:16]}... from {signed.sender_address}")
    try:
        await step(
            f"try 0.1 ETH to {checksum_address(STRANGER)} (device, coordinator and passkey agree)",
            sign_transaction(
                wallets, wallet, _transfer(STRANGER, 1), {0: device}, approvers=[passkey]
            ),
        )
    except WalletError as e:
        say(f"\n  refused by the enclave: {e}")
        return
    raise RuntimeError("the enclave signed a transfer its policy forbids")
