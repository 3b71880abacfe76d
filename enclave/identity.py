"""The enclave's party identity and the server-share record it seals.

The identity is the server share's long-lived party keys: a static X25519 key
for the end-to-end channels (its party id derives from it) and a secp256k1
ChillDKG host key. Both are made inside the enclave, leave it only sealed, and
the static key is bound into attestation documents (DESIGN.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from enclave.errors import WrongShare
from tss.channel import StaticKey
from tss.dkg.chilldkg import hostpubkey_gen
from tss.errors import InvalidEncodingError
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

    @property
    def host_pubkey(self) -> bytes:
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
class ServerShare:
    """What the enclave seals for one wallet: its key share and the wallet's authorities.

    Attributes:
        key_share: the server party's key share.
        owner_key: the wallet owner's Ed25519 key registered at keygen (may be empty).
        party_ids: the keyring's party ids in index order.
    """

    key_share: KeyShare = field(repr=False)
    owner_key: bytes
    party_ids: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "format": RECORD_FORMAT,
                "version": VERSION,
                "key_share": self.key_share.to_bytes(),
                "owner_key": self.owner_key,
                "party_ids": list(self.party_ids),
            }
        )

    @staticmethod
    def from_bytes(data: bytes) -> ServerShare:
        fields = _load(data, RECORD_FORMAT)
        try:
            return ServerShare(
                KeyShare.from_bytes(fields["key_share"]),
                bytes(fields["owner_key"]),
                tuple(str(p) for p in fields["party_ids"]),
            )
        except (KeyError, TypeError, InvalidEncodingError) as e:
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
