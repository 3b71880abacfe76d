"""Key shares: what one party keeps of a keyring, and its versioned serialisation.

A key share is self-describing CBOR (RFC 8949): a map whose "format" and
"version" fields say how to read the rest, so a share written today can be
told apart from, and migrated to, a later layout. ``from_bytes`` checks every
field, including that the secret share matches the party's public share.

Versions: 2 (written now) holds a BIP-32 chain code agreed at keygen from the
parties' secret random contributions (``tss.keygen``), which only the keyring's
parties know. Version 1 (read only) holds the chain code of a keyring made
before: a hash of its public key, so anyone who sees the public key (the
host) can derive every child key. A version-1 share keeps that chain code:
the addresses already derived from it must stay the wallet's. It is written
back as version 2 with the same chain code; for unlinkable child addresses,
move the funds to a new wallet.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import cbor2

from tss.ecdsa.setup import EcdsaSetup, key_id
from tss.errors import InputError, InvalidEncodingError
from tss.group import Group, group_of

__all__ = ["Scheme", "SCHEMES", "KeyShare"]

Scheme = Literal["bip340", "ecdsa-secp256k1", "ed25519"]
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)

FORMAT = "shardkeep-keyshare"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # see the module docstring
MAX_PARTIES = 32


@dataclass(frozen=True)
class KeyShare:
    """One party's share of a t-of-n keyring.

    Attributes:
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        party_id: the party's 0-based index in the keyring (Shamir point party_id + 1).
        threshold: t, the number of parties needed to sign.
        public_key: the threshold public key: 33-byte compressed secp256k1 (bip340
            uses public_key[1:]), or the 32-byte RFC 8032 key for ed25519.
        public_shares: every party's public share (encoded as ``public_key``), by party id.
        secret_share: this party's Shamir share (never printed).
        chain_code: 32-byte BIP-32 chain code of the keyring, known to its parties
            only (never printed): it makes child keys unlinkable for everyone else
            (ed25519 keyrings carry one too but derive no child keys).
        epoch: incremented by every refresh and reshare; shares of different epochs never mix.
        ecdsa: ecdsa-secp256k1 only: the DKLs23 pairwise setups with the other
            parties (mutable only to burn a pair after a failed check: persist the
            share again after a failed signing ceremony). It may hold none: the
            server party keeps its pair setups in enclave memory, not in its share.
    """

    scheme: Scheme
    party_id: int
    threshold: int
    public_key: bytes
    public_shares: tuple[bytes, ...]
    secret_share: int = field(repr=False)
    chain_code: bytes = field(repr=False)
    epoch: int = 0
    ecdsa: EcdsaSetup | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise InputError(f"unknown scheme {self.scheme!r}")
        n = len(self.public_shares)
        if not 1 <= self.threshold <= n <= MAX_PARTIES:
            raise InputError("need 1 <= threshold <= parties <= 32")
        if not 0 <= self.party_id < n:
            raise InputError("party id out of range")
        group = self.group
        if not 0 < self.secret_share < group.order:
            raise InputError("secret share out of range")
        if len(self.chain_code) != 32 or self.epoch < 0:
            raise InputError("chain code must be 32 bytes and epoch non-negative")
        group.decode(self.public_key)
        for share in self.public_shares:
            group.decode(share)
        if group.encode(group.base_mul(self.secret_share)) != self.public_shares[self.party_id]:
            raise InputError("secret share does not match the party's public share")
        self._check_ecdsa_setup()

    def _check_ecdsa_setup(self) -> None:
        if self.scheme != "ecdsa-secp256k1":
            if self.ecdsa is not None:
                raise InputError(f"a {self.scheme} key share has no ECDSA setup")
            return
        if self.threshold < 2:
            raise InputError("ECDSA keyrings need a threshold of at least 2")
        setup = self.ecdsa
        if setup is None:
            raise InputError("an ECDSA key share needs its pairwise setup")
        if (setup.index, setup.parties, setup.key_id) != (
            self.party_id,
            self.parties,
            key_id(self),
        ):
            raise InputError("the ECDSA setup belongs to another key share")

    @property
    def parties(self) -> int:
        return len(self.public_shares)

    @property
    def group(self) -> Group[Any]:
        """The scheme's group: edwards25519 for ed25519, else secp256k1."""
        return group_of(self.scheme)

    @property
    def secret_share_bytes(self) -> bytes:
        return self.secret_share.to_bytes(32, "big")

    def to_bytes(self) -> bytes:
        """Serialise to versioned CBOR. The result contains the secret share: seal it."""
        return cbor2.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "scheme": self.scheme,
                "party_id": self.party_id,
                "threshold": self.threshold,
                "public_key": self.public_key,
                "public_shares": list(self.public_shares),
                "secret_share": self.secret_share_bytes,
                "chain_code": self.chain_code,
                "epoch": self.epoch,
                "ecdsa_setup": None if self.ecdsa is None else self.ecdsa.to_bytes(),
            }
        )

    @staticmethod
    def from_bytes(data: bytes) -> KeyShare:
        """Parse and validate a serialised key share.

        Raises:
            InvalidEncodingError: not a key share of a known version, or inconsistent fields.
        """
        stream = io.BytesIO(data)
        try:
            fields = cbor2.CBORDecoder(stream).decode()
        except (cbor2.CBORDecodeError, ValueError, TypeError) as e:
            raise InvalidEncodingError("key share is not valid CBOR") from e
        if stream.tell() != len(data):
            raise InvalidEncodingError("trailing bytes after the key share")
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise InvalidEncodingError("not a shardkeep key share")
        if fields.get("version") not in READABLE_VERSIONS:
            raise InvalidEncodingError("unsupported key share version")
        secret = _typed(fields, "secret_share", bytes)
        if len(secret) != 32:
            raise InvalidEncodingError("key share field 'secret_share' must be 32 bytes")
        setup = fields.get("ecdsa_setup")
        if setup is not None and not isinstance(setup, bytes):
            raise InvalidEncodingError("key share field 'ecdsa_setup' must be bytes")
        try:
            return KeyShare(
                scheme=_typed(fields, "scheme", str),
                party_id=_typed(fields, "party_id", int),
                threshold=_typed(fields, "threshold", int),
                public_key=_typed(fields, "public_key", bytes),
                public_shares=tuple(_typed(fields, "public_shares", list)),
                secret_share=int.from_bytes(secret, "big"),
                chain_code=_typed(fields, "chain_code", bytes),
                epoch=_typed(fields, "epoch", int),
                ecdsa=None if setup is None else EcdsaSetup.from_bytes(setup),
            )
        except InputError as e:
            raise InvalidEncodingError(f"invalid key share: {e}") from e


def _typed(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidEncodingError(f"key share field {name!r} missing or of the wrong type")
    return value
