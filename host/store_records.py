"""The ciphertext store's records: wallets, keyrings, sealed shares, backups.

Frozen dataclasses that validate themselves on construction (``StoreInputError``),
so a record the store accepts, or reads back, is well formed. ``host.store``
re-exports them. Blob fields are ``repr=False``: logs show ids, never blobs.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Final, Literal, NewType, get_args

from host.store_errors import StoreCorruptionError, StoreInputError

__all__ = [
    # Types
    "Scheme",
    "SCHEMES",
    "EpochState",
    "EPOCH_STATES",
    "PublicKey",
    "StaticKey",
    "OwnerKey",
    "EncryptedDataKey",
    "SealedCiphertext",
    "BackupBlob",
    "Party",
    "Keyring",
    "KeyChange",
    "EpochRecord",
    "NewWallet",
    "Wallet",
    "SealedShare",
    "StoredShare",
    "Backup",
    "StoredBackup",
    "BackupInfo",
    "BackupQuota",
    # Validation and encoding (for the store)
    "check_id",
    "check_uint",
    "encode_parties",
    "decode_parties",
    # Limits
    "MAX_PARTIES",
    "MAX_BLOB_BYTES",
    "MAX_OWNER_KEY_BYTES",
    "MAX_SHARE_INDEX",
    "MAX_EPOCH",
]

Scheme = Literal["bip340", "ecdsa-secp256k1", "ed25519"]
SCHEMES: Final[tuple[Scheme, ...]] = get_args(Scheme)
EpochState = Literal["pending", "committed", "retired"]
EPOCH_STATES: Final[tuple[EpochState, ...]] = get_args(EpochState)

PublicKey = NewType("PublicKey", bytes)  # threshold public key (33 bytes; ed25519: 32)
StaticKey = NewType("StaticKey", bytes)  # 32-byte X25519 key of a party (docs/architecture.md)
OwnerKey = NewType("OwnerKey", bytes)  # the wallet owner's registered public key, or empty
EncryptedDataKey = NewType("EncryptedDataKey", bytes)  # KMS ciphertext blob of the data key
SealedCiphertext = NewType("SealedCiphertext", bytes)  # AES-256-GCM nonce || ciphertext || tag
BackupBlob = NewType("BackupBlob", bytes)  # a backup share, encrypted by the client

MAX_PARTIES: Final = 256
MAX_BLOB_BYTES: Final = 8 << 20  # DKLs23 shares carry pairwise OT setups: allow megabytes
MAX_OWNER_KEY_BYTES: Final = 1024
MAX_SHARE_INDEX: Final = (1 << 32) - 1  # uint32 on the wire
MAX_EPOCH: Final = (1 << 63) - 1  # BIGINT; uint64 on the wire
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")  # the relay's id alphabet


def check_id(kind: str, value: object) -> None:
    """Check an id: 1-128 characters of the relay's alphabet [A-Za-z0-9._:@+/=-].

    Arguments:
        kind: what the id names, for the error message.
        value: the id.

    Raises:
        StoreInputError: not such a string.
    """
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise StoreInputError(f"{kind} must be 1-128 characters of [A-Za-z0-9._:@+/=-]")


def check_uint(kind: str, value: object, maximum: int) -> None:
    """Check an integer (not a bool) in [0, maximum].

    Raises:
        StoreInputError: it is not.
    """
    if type(value) is not int or not 0 <= value <= maximum:
        raise StoreInputError(f"{kind} must be an integer in [0, {maximum}]")


def _check_bytes(kind: str, value: object, min_len: int, max_len: int) -> None:
    if not isinstance(value, bytes) or not min_len <= len(value) <= max_len:
        raise StoreInputError(f"{kind} must be {min_len}-{max_len} bytes")


def _check_scheme(value: object) -> None:
    if value not in SCHEMES:
        raise StoreInputError(f"scheme must be one of {', '.join(SCHEMES)}")


def _check_wallet_fields(wallet_id: str, scheme: str, public_key: bytes, owner_key: bytes) -> None:
    check_id("wallet id", wallet_id)
    _check_scheme(scheme)
    if scheme == "ed25519":  # RFC 8032 encoding: the store checks its length only
        _check_bytes("public key", public_key, 32, 32)
    else:
        _check_bytes("public key", public_key, 33, 33)
        if public_key[0] not in (2, 3):
            raise StoreInputError("public key must be a compressed point (02 or 03 prefix)")
    _check_bytes("owner key", owner_key, 0, MAX_OWNER_KEY_BYTES)


@dataclass(frozen=True)
class Party:
    """A ceremony party as the ceremony names it (proto ``Party``).

    Attributes:
        party_id: 1-128 characters of the relay's id alphabet.
        static_key: the party's 32-byte X25519 public key.
    """

    party_id: str
    static_key: StaticKey

    def __post_init__(self) -> None:
        check_id("party id", self.party_id)
        _check_bytes("static key", self.static_key, 32, 32)


@dataclass(frozen=True)
class Keyring:
    """The keyring of one epoch: threshold t and the n parties in index order.

    Party ``i`` of ``parties`` holds share index ``i``.
    """

    threshold: int
    parties: tuple[Party, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.parties, tuple) or not all(
            isinstance(p, Party) for p in self.parties
        ):
            raise StoreInputError("parties must be a tuple of Party")
        n = len(self.parties)
        if not 1 <= n <= MAX_PARTIES:
            raise StoreInputError(f"a keyring has 1-{MAX_PARTIES} parties")
        if type(self.threshold) is not int or not 1 <= self.threshold <= n:
            raise StoreInputError("threshold must be an integer in [1, number of parties]")
        if len({p.party_id for p in self.parties}) != n:
            raise StoreInputError("party ids must be distinct")
        if len({p.static_key for p in self.parties}) != n:
            raise StoreInputError("party static keys must be distinct")


@dataclass(frozen=True)
class KeyChange:
    """What a key change's certificate must complete (proto ``KeyChange``); public.

    Attributes:
        session_id: the ceremony's 32-byte session id.
        transcript: the 32-byte transcript hash every seat signs.
        host_pubkeys: every seat's 33-byte host public key, in seat order.
    """

    session_id: bytes
    transcript: bytes
    host_pubkeys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_bytes("session id", self.session_id, 32, 32)
        _check_bytes("transcript", self.transcript, 32, 32)
        if not isinstance(self.host_pubkeys, tuple) or not 1 <= len(self.host_pubkeys) <= (
            MAX_PARTIES
        ):
            raise StoreInputError(f"a key change has 1-{MAX_PARTIES} host public keys")
        for key in self.host_pubkeys:
            _check_bytes("host public key", key, 33, 33)

    def encode_keys(self) -> bytes:
        """The host public keys as stored: concatenated."""
        return b"".join(self.host_pubkeys)

    @staticmethod
    def decode(session_id: object, transcript: object, keys: object) -> KeyChange | None:
        """The stored columns back (None when the epoch was no certified key change)."""
        if session_id is None:
            return None
        try:
            raw = bytes(keys)  # type: ignore[call-overload]
            if len(raw) % 33:
                raise StoreInputError("host public keys are not 33 bytes each")
            split = tuple(raw[i : i + 33] for i in range(0, len(raw), 33))
            return KeyChange(bytes(session_id), bytes(transcript), split)  # type: ignore[call-overload]
        except (StoreInputError, TypeError) as exc:
            raise StoreCorruptionError("stored key change is malformed") from exc


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a wallet as stored, without its shares.

    Attributes:
        epoch: the epoch number.
        state: "pending", "committed" or "retired".
        keyring: its keyring.
        key_change: what its certificate completes (None for keygen's epoch).
        certificate: the complete certificate (empty while pending, or for keygen).
        deadline_at_ms: a pending epoch is aborted after this (None: no deadline).
        acked: certificate positions of the parties that acknowledged the epoch.
    """

    epoch: int
    state: EpochState
    keyring: Keyring
    key_change: KeyChange | None
    certificate: bytes = field(repr=False)
    deadline_at_ms: int | None
    acked: frozenset[int]


@dataclass(frozen=True)
class NewWallet:
    """What keygen (or import) registers: the wallet and its first epoch's keyring.

    Attributes:
        wallet_id: 1-128 characters of the relay's id alphabet.
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        public_key: the threshold public key: 33-byte compressed secp256k1, or
            32 bytes (RFC 8032) for ed25519.
        keyring: threshold and parties of the first epoch.
        owner_key: the wallet owner's registered public key (0-1024 bytes; empty for none).
        epoch: the first epoch: 0 for keygen; an import's is its reshare's
            (1: the epoch after the importing party's 1-of-1 keyring).
    """

    wallet_id: str
    scheme: Scheme
    public_key: PublicKey
    keyring: Keyring
    owner_key: OwnerKey = OwnerKey(b"")
    epoch: int = 0

    def __post_init__(self) -> None:
        _check_wallet_fields(self.wallet_id, self.scheme, self.public_key, self.owner_key)
        if not isinstance(self.keyring, Keyring):
            raise StoreInputError("keyring must be a Keyring")
        check_uint("epoch", self.epoch, MAX_EPOCH)


@dataclass(frozen=True)
class Wallet:
    """A stored wallet.

    Attributes:
        wallet_id, scheme, public_key, owner_key: as registered (see ``NewWallet``).
        keyring: the current epoch's keyring (the first epoch's while it is uncommitted).
        current_epoch: the committed epoch in use, or None before the first is committed.
        pending_epoch: the epoch being written by a ceremony, or None.
        created_at_ms, updated_at_ms: Unix milliseconds.
    """

    wallet_id: str
    scheme: Scheme
    public_key: PublicKey
    owner_key: OwnerKey
    keyring: Keyring
    current_epoch: int | None
    pending_epoch: int | None
    created_at_ms: int
    updated_at_ms: int

    def __post_init__(self) -> None:
        _check_wallet_fields(self.wallet_id, self.scheme, self.public_key, self.owner_key)
        for epoch in (self.current_epoch, self.pending_epoch):
            if epoch is not None:
                check_uint("epoch", epoch, MAX_EPOCH)

    @property
    def threshold(self) -> int:
        """The current keyring's threshold t."""
        return self.keyring.threshold

    @property
    def parties(self) -> tuple[Party, ...]:
        """The current keyring's parties, in index order."""
        return self.keyring.parties


@dataclass(frozen=True)
class SealedShare:
    """A server share sealed by the enclave (proto ``SealedShare``); opaque to the host.

    Attributes:
        wallet_id: the wallet the share belongs to.
        share_index: the server's 0-based index in the epoch's keyring (< 2^32).
        scheme: must equal the wallet's scheme.
        epoch: the key epoch (< 2^63).
        encrypted_data_key: KMS ciphertext blob of the AES-256 data key (1 byte to 8 MiB).
        ciphertext: AES-256-GCM nonce || ciphertext || tag (1 byte to 8 MiB).
    """

    wallet_id: str
    share_index: int
    scheme: Scheme
    epoch: int
    encrypted_data_key: EncryptedDataKey = field(repr=False)
    ciphertext: SealedCiphertext = field(repr=False)

    def __post_init__(self) -> None:
        check_id("wallet id", self.wallet_id)
        check_uint("share index", self.share_index, MAX_SHARE_INDEX)
        _check_scheme(self.scheme)
        check_uint("epoch", self.epoch, MAX_EPOCH)
        _check_bytes("encrypted data key", self.encrypted_data_key, 1, MAX_BLOB_BYTES)
        _check_bytes("ciphertext", self.ciphertext, 1, MAX_BLOB_BYTES)

    def same_bytes(self, other: SealedShare) -> bool:
        """Whether both blobs equal ``other``'s (constant-time comparison)."""
        return hmac.compare_digest(self.encrypted_data_key, other.encrypted_data_key) & (
            hmac.compare_digest(self.ciphertext, other.ciphertext)
        )


@dataclass(frozen=True)
class StoredShare:
    """A sealed share as stored, with the state of its epoch and the epoch's certificate."""

    share: SealedShare
    state: EpochState
    created_at_ms: int
    certificate: bytes = field(default=b"", repr=False)  # empty: none (keygen, pending)


@dataclass(frozen=True)
class Backup:
    """A backup share the client encrypted (passcode, passkey or cloud key) before upload.

    Attributes:
        wallet_id: the wallet it backs up.
        backup_id: 1-128 characters of the relay's id alphabet, chosen by the client.
        party_id: the party whose share this is.
        epoch: the epoch of the backed-up share (shares of different epochs never combine).
        blob: the encrypted backup (1 byte to 8 MiB), never interpreted by the host.
    """

    wallet_id: str
    backup_id: str
    party_id: str
    epoch: int
    blob: BackupBlob = field(repr=False)

    def __post_init__(self) -> None:
        check_id("wallet id", self.wallet_id)
        check_id("backup id", self.backup_id)
        check_id("party id", self.party_id)
        check_uint("epoch", self.epoch, MAX_EPOCH)
        _check_bytes("backup blob", self.blob, 1, MAX_BLOB_BYTES)


@dataclass(frozen=True)
class StoredBackup:
    """A backup as stored."""

    backup: Backup
    created_at_ms: int


@dataclass(frozen=True)
class BackupInfo:
    """A stored backup without its blob (what a listing reads)."""

    wallet_id: str
    backup_id: str
    party_id: str
    epoch: int
    blob_bytes: int
    created_at_ms: int


@dataclass(frozen=True)
class BackupQuota:
    """Most backups, and most blob bytes over them, one wallet may keep."""

    max_count: int = 16
    max_bytes: int = 32 << 20


def encode_parties(parties: tuple[Party, ...]) -> str:
    """The party list as stored: compact JSON, in index order, static keys in hex."""
    return json.dumps(
        [{"party_id": p.party_id, "static_key": p.static_key.hex()} for p in parties],
        separators=(",", ":"),
        sort_keys=True,
    )


def decode_parties(text: object) -> tuple[Party, ...]:
    """Parse a stored party list (the inverse of ``encode_parties``).

    Raises:
        StoreCorruptionError: the text is not a well-formed party list.
    """
    if not isinstance(text, str):
        raise StoreCorruptionError("stored party list is not text")
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("not a list")
        parties = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"party_id", "static_key"}:
                raise ValueError("not a party object")
            parties.append(Party(item["party_id"], StaticKey(bytes.fromhex(item["static_key"]))))
        return tuple(parties)
    except (ValueError, TypeError) as exc:  # StoreInputError is a ValueError
        raise StoreCorruptionError("stored party list is malformed") from exc
