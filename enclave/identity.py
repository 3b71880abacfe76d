"""The enclave's party identity and the server-share record it seals.

The identity is the server share's long-lived party keys: a static X25519 key
for the end-to-end channels (its party id derives from it) and a secp256k1
ChillDKG host key. Both are made inside the enclave, leave it only sealed, and
the static key is bound into attestation documents (docs/architecture.md, "Parties and identities").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from enclave.errors import WrongShare
from tss.certificate import PendingKeyChange, verify_certificate
from tss.channel import StaticKey
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import InputError, InvalidEncodingError, ProtocolError
from tss.keyshare import KeyShare

IDENTITY_FORMAT = "shardkeep-enclave-identity"
RECORD_FORMAT = "shardkeep-server-share"
VERSION = 1


@dataclass(frozen=True)
class Identity:
    """The server share's party keys (never printed)."""

    static_key: StaticKey = field(repr=False)
    hostseckey: bytes = field(repr=False)

    @staticmethod
    def generate(rand: Callable[[int], bytes]) -> Identity:
        hostseckey = rand(32)
        hostpubkey_gen(hostseckey)  # validates the key (nonzero, below n)
        return Identity(StaticKey.generate(rand(32)), hostseckey)

    @property
    def party_id(self) -> str:
        return self.static_key.party_id

    @property
    def static_public_key(self) -> bytes:
        return bytes(self.static_key.public_key)

    @functools.cached_property
    def host_pubkey(self) -> bytes:
        # Every ceremony compares it with the request's: derived once, not per signature.
        return hostpubkey_gen(self.hostseckey)

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "format": IDENTITY_FORMAT,
                "version": VERSION,
                "static_key": self.static_key.private_bytes(),
                "hostseckey": self.hostseckey,
            }
        )

    @staticmethod
    def from_bytes(data: bytes) -> Identity:
        fields = _load(data, IDENTITY_FORMAT)
        try:
            return Identity(
                StaticKey.from_private_bytes(fields["static_key"]), bytes(fields["hostseckey"])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise WrongShare("the sealed enclave identity is malformed") from e


@dataclass(frozen=True)
class KeyChangeProof:
    """What a key change's certificate must complete (``tss.certificate``); public.

    Sealed with the share a refresh, reshare or import made: the enclave uses
    that share only with a certificate it verified against these fields.
    """

    session_id: bytes
    transcript: bytes
    hostpubkeys: tuple[bytes, ...]

    @staticmethod
    def of(pending: PendingKeyChange) -> KeyChangeProof:
        return KeyChangeProof(pending.session_id, pending.transcript, pending.hostpubkeys)

    def check(self, certificate: bytes, epoch: int) -> None:
        """Raise ``WrongShare`` unless ``certificate`` completes this key change."""
        if not certificate:
            raise WrongShare(f"epoch {epoch} has no certificate: its key change never completed")
        try:
            verify_certificate(self.hostpubkeys, self.session_id, self.transcript, certificate)
        except (InputError, ProtocolError) as e:
            raise WrongShare(f"the certificate of epoch {epoch} does not verify: {e}") from e


@dataclass(frozen=True)
class ServerShare:
    """What the enclave seals for one wallet: its key share and the wallet's authorities.

    Attributes:
        key_share: the server party's key share.
        owner_key: the wallet owner's Ed25519 key registered at keygen (may be empty).
        party_ids: the keyring's party ids in index order.
        key_change: for a share a refresh, reshare or import made, what its
            certificate must complete (None for keygen's, certified by ChillDKG itself).
        policy_set: the wallet's policy set (``shardkeep.policyset`` encoding), or
            empty: sealed with the share, so the host can neither drop nor edit it
            (docs/security/policy.md).
    """

    key_share: KeyShare = field(repr=False)
    owner_key: bytes
    party_ids: tuple[str, ...]
    key_change: KeyChangeProof | None = None
    policy_set: bytes = b""

    def to_bytes(self) -> bytes:
        fields: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "version": VERSION,
            "key_share": self.key_share.to_bytes(),
            "owner_key": self.owner_key,
            "party_ids": list(self.party_ids),
        }
        if self.key_change is not None:
            kc = self.key_change
            fields["key_change"] = [kc.session_id, kc.transcript, list(kc.hostpubkeys)]
        if self.policy_set:
            fields["policy_set"] = self.policy_set
        return cbor2.dumps(fields)

    @staticmethod
    def from_bytes(data: bytes) -> ServerShare:
        fields = _load(data, RECORD_FORMAT)
        try:
            kc = fields.get("key_change")
            proof = (
                None
                if kc is None
                else KeyChangeProof(bytes(kc[0]), bytes(kc[1]), tuple(bytes(k) for k in kc[2]))
            )
            return ServerShare(
                KeyShare.from_bytes(fields["key_share"]),
                bytes(fields["owner_key"]),
                tuple(str(p) for p in fields["party_ids"]),
                proof,
                bytes(fields.get("policy_set", b"")),
            )
        except (KeyError, TypeError, IndexError, InvalidEncodingError) as e:
            raise WrongShare("the sealed server share is malformed") from e


def _load(data: bytes, expected_format: str) -> dict[str, Any]:
    try:
        fields = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError) as e:
        raise WrongShare(f"{expected_format} does not decode") from e
    if not isinstance(fields, dict) or fields.get("format") != expected_format:
        raise WrongShare(f"not a {expected_format}")
    if fields.get("version") != VERSION:
        raise WrongShare(f"unsupported {expected_format} version")
    return fields
