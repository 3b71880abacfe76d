"""Signed ceremony requests: the one place that fixes how they are signed.

A coordinator (and, for export and reshare, the wallet owner) signs the exact
serialised ``CeremonyRequest`` bytes with Ed25519, under a context label so the
signature cannot be replayed as anything else. The enclave verifies the bytes
before it parses them (docs/architecture.md, "The enclave boundary").
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COORDINATOR_CONTEXT = b"shardkeep/v1/ceremony-request/coordinator\x00"
OWNER_CONTEXT = b"shardkeep/v1/ceremony-request/owner\x00"


MAX_ED25519_MESSAGE = 65536
"""The longest message a sign request carries for an ed25519 wallet (``CeremonyRequest.message``;
a Solana transaction message is at most 1232 bytes)."""


RETIRE_EPOCH_CONTEXT = b"shardkeep/v1/retire-epoch\x00"
"""Context of the owner's signature that retires an epoch (host ``RetireEpoch``)."""


def retire_epoch_message(wallet_id: str, epoch: int) -> bytes:
    """What the owner signs (under ``RETIRE_EPOCH_CONTEXT``) to retire ``epoch`` of a wallet."""
    return wallet_id.encode() + b"\x00" + epoch.to_bytes(8, "big")


def sign_request(key: Ed25519PrivateKey, context: bytes, request: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``context || request``."""
    return key.sign(context + request)


def request_signature_valid(public_key: bytes, context: bytes, request: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is a valid signature of ``context || request`` under a 32-byte key."""
    if len(public_key) != 32 or len(sig) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, context + request)
    except (InvalidSignature, ValueError):
        return False
    return True
