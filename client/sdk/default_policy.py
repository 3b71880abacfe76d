"""The policy set a wallet gets when its creator names none: its owner approves every activity.

The server share never acts on the coordinator's signature alone
(docs/security/policy.md), so ``WalletClient.create_wallet`` (and
``import_key``, and a device through the coordinator service) registers this
set unless given another. Its one authenticator is the **owner approval
key**, an Ed25519 key derived from the wallet's owner key (HKDF-SHA256,
RFC 5869, with its own label), so it lives wherever the owner key does:
encrypted with the client's share material and in its backups. A separate
key, not the owner key itself, because the two sign different things.

Policies: ``owner-approves``, the owner approves every parsed activity and
every key change (condition ``true``: a raw digest is not among them, see
``enclave.policy.engine``); with ``allow_raw_digest``, ``owner-approves-raw``
also lets the owner approve a bare digest or an Ed25519 message that is not
a Solana message (``SIGN_RAW_DIGEST``, ``SIGN_RAW_MESSAGE``).
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.errors import sdk_boundary
from client.sdk.approvals import ApiKey
from shardkeep.policyset import Consensus, Policy, PolicySet

__all__ = ["owner_approver", "default_policy_set", "OWNER_APPROVER"]

OWNER_APPROVER: Final = "owner"
OWNER_POLICY: Final = Policy("owner-approves", "allow", "true", Consensus(1))
RAW_POLICY: Final = Policy(
    "owner-approves-raw",
    "allow",
    "activity.kind == 'SIGN_RAW_DIGEST' || activity.kind == 'SIGN_RAW_MESSAGE'",
    Consensus(1),
)
_LABEL: Final = b"shardkeep/v1/owner-approval-key"


@sdk_boundary
def owner_approver(owner_key: Ed25519PrivateKey) -> ApiKey:
    """The wallet's owner approval key, derived from its owner key."""
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=_LABEL).derive(owner_key.private_bytes_raw())
    return ApiKey(OWNER_APPROVER, "ed25519", Ed25519PrivateKey.from_private_bytes(seed))


@sdk_boundary
def default_policy_set(
    wallet_id: str, owner_key: Ed25519PrivateKey, *, allow_raw_digest: bool = False, epoch: int = 0
) -> PolicySet:
    """The owner-approves set of ``wallet_id`` (module docstring), at ``epoch``."""
    policies = (OWNER_POLICY, RAW_POLICY) if allow_raw_digest else (OWNER_POLICY,)
    return PolicySet(wallet_id, epoch, 1, (owner_approver(owner_key).authenticator(),), policies)
