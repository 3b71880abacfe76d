"""Owner approvals: what an authenticator signs, and the formats both sides share.

An approval binds one activity to the policy set in force
(docs/security/policy.md, "What is signed")::

    activity_hash = SHA-256("shardkeep/v1/activity\\0" || signed request bytes)
    challenge     = SHA-256("shardkeep/v1/approval\\0" || activity_hash || policy_set_hash)

Ed25519 API keys sign ``challenge``; P-256 API keys sign it with
ECDSA-SHA256 (DER signature); a passkey makes a WebAuthn assertion whose
``clientDataJSON.challenge`` is ``base64url(challenge)`` (no padding,
RFC 4648 §5), and the approval carries its authenticator data and client
data as well as the signature. The request bytes include the enclave's
single-use challenge, so an approval counts once.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

import cbor2

from tss.errors import InputError

__all__ = [
    # Functions
    "activity_hash",
    "approval_challenge",
    "b64url",
    "p256_key_from_cose",
    # Types
    "Approval",
]

ACTIVITY_TAG: Final = b"shardkeep/v1/activity\x00"
APPROVAL_TAG: Final = b"shardkeep/v1/approval\x00"


def activity_hash(request: bytes) -> bytes:
    """The 32-byte hash of an activity: the exact signed ``CeremonyRequest`` bytes."""
    return hashlib.sha256(ACTIVITY_TAG + request).digest()


def approval_challenge(activity: bytes, policy_set: bytes) -> bytes:
    """The 32 bytes an authenticator signs to approve ``activity`` under ``policy_set``.

    Arguments:
        activity: the 32-byte ``activity_hash``.
        policy_set: the 32-byte ``shardkeep.policyset.policy_set_hash`` of the set in force.

    Raises:
        InputError: either hash is not 32 bytes.
    """
    if len(activity) != 32 or len(policy_set) != 32:
        raise InputError("the activity and policy set hashes are 32 bytes each")
    return hashlib.sha256(APPROVAL_TAG + activity + policy_set).digest()


def b64url(data: bytes) -> str:
    """Base64url without padding, as WebAuthn's client data spells a challenge."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Approval:
    """One authenticator's approval of one activity.

    Attributes:
        authenticator: the authenticator's name in the policy set.
        signature: Ed25519 (64 bytes) or DER ECDSA over P-256.
        authenticator_data, client_data_json: passkeys only, as the
            authenticator and the browser produced them.
    """

    authenticator: str
    signature: bytes
    authenticator_data: bytes = b""
    client_data_json: bytes = b""


def p256_key_from_cose(cose_key: bytes) -> bytes:
    """The 33-byte compressed SEC1 key of a COSE_Key for ES256 (RFC 9053 §7.1.1, §2.1).

    A passkey's credential public key comes as a COSE_Key: a CBOR map with
    kty (1) = 2 (EC2), alg (3) = -7 (ES256), crv (-1) = 1 (P-256), x (-2) and
    y (-3), 32 bytes each.

    Raises:
        InputError: not such a key (the point itself is checked where it is used).
    """
    try:
        key = cbor2.loads(cose_key)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as e:
        raise InputError("the COSE key does not decode") from e
    if not isinstance(key, dict) or (key.get(1), key.get(3), key.get(-1)) != (2, -7, 1):
        raise InputError("not an ES256 P-256 COSE key (kty 2, alg -7, crv 1)")
    x, y = key.get(-2), key.get(-3)
    if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
        raise InputError("a P-256 COSE key has 32-byte x and y")
    return bytes([2 + (y[-1] & 1)]) + x
