"""The wallet owner's side of approvals: API keys and a software passkey that sign challenges.

What is signed is fixed in ``shardkeep.approvals``. ``ApiKey`` holds an
Ed25519 or P-256 private key (for servers and scripts). ``SoftwarePasskey``
behaves as a WebAuthn authenticator and its browser together (W3C WebAuthn
Level 3: authenticator data §6.1, client data §5.8.1, ES256 over
``authenticatorData || SHA-256(clientDataJSON)``): for tests and the demo,
where no hardware authenticator is at hand. It is no security key: its
private key lives in this process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client.errors import sdk_boundary
from shardkeep.approvals import Approval, activity_hash, approval_challenge, b64url
from shardkeep.policyset import Authenticator, PolicySet, policy_set_hash
from shardkeep.v1 import ceremony_pb2

__all__ = ["Approver", "ApiKey", "SoftwarePasskey", "approvals_of"]

FLAGS_USER_PRESENT_AND_VERIFIED = 0x05  # UP (bit 0) | UV (bit 2)


class Approver(Protocol):
    """Anything that approves: signs a 32-byte approval challenge under its registered name."""

    def approve(self, challenge: bytes) -> Approval:
        """The approval of ``challenge`` (``shardkeep.approvals.approval_challenge``)."""
        ...


@sdk_boundary
def approvals_of(
    request: bytes, policy_set: PolicySet, epoch: int, approvers: Sequence[Approver]
) -> list[ceremony_pb2.Approval]:
    """Every approver's approval of the exact signed request bytes under the set in force.

    The server share binds the wallet's set to each keyring epoch (refresh,
    reshare), so the set in force is ``policy_set`` at the wallet's ``epoch``.
    """
    in_force = replace(policy_set, epoch=epoch)
    challenge = approval_challenge(activity_hash(request), policy_set_hash(in_force))
    return [
        ceremony_pb2.Approval(
            authenticator=a.authenticator,
            signature=a.signature,
            authenticator_data=a.authenticator_data,
            client_data_json=a.client_data_json,
        )
        for a in (approver.approve(challenge) for approver in approvers)
    ]


def _compressed(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


@sdk_boundary
@dataclass(repr=False)
class ApiKey:
    """An API key that approves activities: Ed25519 or P-256 (ECDSA-SHA256)."""

    name: str
    kind: Literal["ed25519", "p256"]
    _key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, name: str, kind: Literal["ed25519", "p256"] = "ed25519") -> ApiKey:
        """A new key under ``name`` (the name it is registered by in the policy set)."""
        key = (
            Ed25519PrivateKey.generate()
            if kind == "ed25519"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(name, kind, key)

    def authenticator(self, *tags: str) -> Authenticator:
        """This key as an authenticator of a policy set."""
        if isinstance(self._key, Ed25519PrivateKey):
            public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        else:
            public = _compressed(self._key)
        return Authenticator(self.name, self.kind, public, tags)

    def private_key(self) -> Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
        """The private key (to store it; ``client.sdk.policy_files.save_api_key``)."""
        return self._key

    def approve(self, challenge: bytes) -> Approval:
        """Sign a 32-byte ``shardkeep.approvals.approval_challenge``."""
        if isinstance(self._key, Ed25519PrivateKey):
            return Approval(self.name, self._key.sign(challenge))
        return Approval(self.name, self._key.sign(challenge, ec.ECDSA(hashes.SHA256())))

    def __repr__(self) -> str:
        return f"ApiKey({self.name!r}, {self.kind}, <redacted>)"


@sdk_boundary
@dataclass(repr=False)
class SoftwarePasskey:
    """A passkey in software: an ES256 key bound to an RP id and origin, with a counter."""

    name: str
    rp_id: str
    origin: str
    _key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    sign_count: int = 0

    def authenticator(self, *tags: str) -> Authenticator:
        """This passkey as an authenticator of a policy set."""
        return Authenticator(
            self.name, "webauthn-es256", _compressed(self._key), tags, self.rp_id, self.origin
        )

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The private key (to store it; ``client.sdk.policy_files.save_passkey``)."""
        return self._key

    def cose_public_key(self) -> bytes:
        """The credential public key as a COSE_Key (what a real registration returns)."""
        numbers = self._key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def approve(self, challenge: bytes) -> Approval:
        """A WebAuthn assertion over ``challenge`` (the counter goes up by one)."""
        self.sign_count += 1
        authenticator_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([FLAGS_USER_PRESENT_AND_VERIFIED])
            + self.sign_count.to_bytes(4, "big")
        )
        client_data_json = json.dumps(
            {"type": "webauthn.get", "challenge": b64url(challenge), "origin": self.origin,
             "crossOrigin": False},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        signature = self._key.sign(
            authenticator_data + hashlib.sha256(client_data_json).digest(),
            ec.ECDSA(hashes.SHA256()),
        )
        return Approval(self.name, signature, authenticator_data, client_data_json)

    def __repr__(self) -> str:
        return f"SoftwarePasskey({self.name!r}, {self.rp_id!r}, <redacted>)"
