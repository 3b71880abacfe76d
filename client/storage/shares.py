"""Share storage for client parties: share files, passcode encryption, export, host backups.

A party keeps its :class:`tss.keyshare.KeyShare` in a **container**, a
self-describing CBOR map (RFC 8949) of one of two formats:

``shardkeep-encrypted-share`` version 1 (passcode or key encrypted)::

    {"format": "shardkeep-encrypted-share", "version": 1,
     "kdf": {"alg": "argon2id", "salt": bstr(16..64), "time_cost": uint,
             "memory_cost_kib": uint, "parallelism": uint}
          | {"alg": "hkdf-sha256", "salt": bstr(32)},
     "cipher": {"alg": "aes-256-gcm", "nonce": bstr(12)},
     "metadata": {"wallet_id": tstr, "scheme": tstr, "party_id": uint,
                  "public_key": bstr(33; ed25519: 32), "epoch": uint},
     "ciphertext": bstr}                       # AES-GCM ciphertext || 16-byte tag

``shardkeep-plain-share`` version 1 (for device keystores that encrypt at rest)::

    {"format": "shardkeep-plain-share", "version": 1,
     "metadata": {...as above...}, "share": bstr}   # KeyShare.to_bytes()

Encryption (AES-256-GCM, NIST SP 800-38D; 96-bit random nonce, §8.2.2):

- passcode: key = Argon2id(passcode, salt, t, m, p, 32 bytes), RFC 9106. The
  default is the second recommended option of RFC 9106 §4 (t=3, m=64 MiB,
  p=4, 128-bit salt, 256-bit tag), above the OWASP Password Storage Cheat
  Sheet minimums (m=46 MiB with t=1, or m=19 MiB with t=2, ...). A text
  passcode is NFC-normalised (as RFC 8265 §4.2.2, OpaqueString) and UTF-8
  encoded first, so the same passcode typed on another device gives the same key;
- key (a passkey PRF output or a cloud-KMS data key): AES key =
  HKDF-SHA256(key, salt, info) (RFC 5869) with a fresh 32-byte salt per
  container, so one long-lived key never encrypts twice under one AES key.

The metadata stays in the clear, so a user can see what a file or backup is
without the passcode (:func:`inspect_share`), and is authenticated as the
AES-GCM associated data together with the format version and every KDF and
cipher parameter, so none of it can be swapped or edited. The associated data
is an explicit length-prefixed encoding (not the CBOR bytes), so it does not
depend on any CBOR encoder's choices::

    AD = field("shardkeep/encrypted-share") || u8 version
         || field(kdf alg) || kdf params || field(cipher alg) || metadata
    argon2id params = field(salt) || u32 t || u32 m || u32 p
    hkdf-sha256 params = field(salt)
    metadata = field(wallet_id) || field(scheme) || u32 party_id
               || field(public_key) || u64 epoch
    field(x) = u32 len(x) || x                    (integers big-endian)

Hostile files: the KDF parameters are checked against hard bounds (memory at
most 1 GiB, time cost at most 16, parallelism at most 16) before any hashing,
and against the OWASP minimums unless the caller explicitly allows weak
parameters (tests only).

On top of containers: atomic share files (:func:`write_share_file`,
:func:`read_share_file`), a base64 text **armour** for export
(:func:`armour`, :func:`dearmour`) and backups kept by the host, which sees
only ciphertext (:func:`make_backup`, :func:`recover_share`).

Error policy: see ``client.storage.errors``. A wrong passcode or key and any
tampering raise the one opaque ``DecryptionError``; unreadable containers raise
``ShareFormatError`` naming the field; bad arguments raise ``InvalidInput`` (an
``InputError``); every error is a ``client.errors.WalletError``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import os
import re
import secrets
import struct
import tempfile
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NewType

import cbor2
from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.errors import InvalidInput, sdk_boundary
from client.storage.errors import (
    ArmourError,
    DecryptionError,
    KdfParamsError,
    ShareFileExistsError,
    ShareFormatError,
    ShareMismatchError,
    UnsupportedVersionError,
)
from tss.errors import InternalError, InvalidEncodingError
from tss.group import group_of
from tss.keyshare import SCHEMES, KeyShare, Scheme

__all__ = [
    # Functions: containers
    "encrypt_share",
    "encrypt_with_key",
    "encode_plain_share",
    "decrypt_share",
    "decrypt_with_key",
    "open_share",
    "inspect_share",
    # Functions: armour and files
    "armour",
    "dearmour",
    "write_share_file",
    "write_file_atomically",
    "read_share_file",
    # Functions: host backups
    "make_backup",
    "recover_share",
    # Types
    "Argon2Params",
    "BackupBlob",
    "Container",
    "OpenedShare",
    "Passcode",
    "Protection",
    "Random",
    "ShareInfo",
    "ShareMetadata",
    "WrappingKey",
    # Constants
    "DEFAULT_ARGON2_PARAMS",
    "ENCRYPTED_FORMAT",
    "PLAIN_FORMAT",
    "FORMAT_VERSION",
    "MAX_CONTAINER_BYTES",
    "MAX_MEMORY_COST_KIB",
    "MAX_TIME_COST",
    "MAX_PARALLELISM",
    "OWASP_MINIMUMS",
]

Container = NewType("Container", bytes)
"""A share container: CBOR of one of the formats in the module docstring."""
WrappingKey = NewType("WrappingKey", bytes)
"""A 32-byte key from a passkey (WebAuthn PRF) or a cloud KMS that wraps backups."""
Passcode = str | bytes
"""A user's passcode: text (NFC-normalised, UTF-8) or raw bytes."""
Random = Callable[[int], bytes]
"""Returns n uniformly random bytes (``secrets.token_bytes``)."""
Protection = Literal["passcode", "key", "plain"]
"""How a container protects its share: Argon2id passcode, HKDF key, or not at all."""

ENCRYPTED_FORMAT: Final = "shardkeep-encrypted-share"
PLAIN_FORMAT: Final = "shardkeep-plain-share"
FORMAT_VERSION: Final = 1

# Domain separation of this module's keys and associated data.
_AAD_LABEL: Final = b"shardkeep/encrypted-share"
_HKDF_INFO: Final = b"shardkeep/encrypted-share/v1/aes-256-gcm-key"

_KDF_ARGON2ID: Final = "argon2id"
_KDF_HKDF: Final = "hkdf-sha256"
_CIPHER: Final = "aes-256-gcm"
_KEY_SIZE: Final = 32  # AES-256
_NONCE_SIZE: Final = 12  # SP 800-38D §8.2: 96-bit IVs
_TAG_SIZE: Final = 16
_HKDF_SALT_SIZE: Final = 32
_ARGON2_SALT_SIZE: Final = 16  # RFC 9106 §4: 128-bit salt
_MIN_SALT_SIZE: Final = 16  # RFC 9106 §3.1 recommends 128 bits; refuse less
_MAX_SALT_SIZE: Final = 64

MAX_CONTAINER_BYTES: Final = 8 << 20
"""Largest container read or written (the host's backup limit); ECDSA shares take ~25 KiB a peer."""
MAX_MEMORY_COST_KIB: Final = 1 << 20
"""1 GiB: a file asking for more is refused before hashing (a hostile file could exhaust memory)."""
MAX_TIME_COST: Final = 16
MAX_PARALLELISM: Final = 16
OWASP_MINIMUMS: Final[tuple[tuple[int, int], ...]] = (
    (47104, 1),
    (19456, 2),
    (12288, 3),
    (9216, 4),
    (7168, 5),
)
"""(memory KiB, time cost) pairs of the OWASP Password Storage Cheat Sheet (Argon2id,
"equal level of defense"); parameters are strong enough when they reach one pair on both."""

_MAX_PARTY_ID: Final = 255
_MAX_EPOCH: Final = (1 << 63) - 1  # the host stores epochs as BIGINT
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")  # the relay's (and host's) id alphabet


### Types


@sdk_boundary
@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters (RFC 9106 §3.1).

    Attributes:
        time_cost: t, the number of passes.
        memory_cost_kib: m, memory in KiB.
        parallelism: p, the number of lanes.
    """

    time_cost: int
    memory_cost_kib: int
    parallelism: int

    def __post_init__(self) -> None:
        for value in (self.time_cost, self.memory_cost_kib, self.parallelism):
            if type(value) is not int:
                raise InvalidInput("Argon2id parameters must be integers")

    def is_strong(self) -> bool:
        """True when (m, t) reaches one of the ``OWASP_MINIMUMS`` pairs."""
        return any(self.memory_cost_kib >= m and self.time_cost >= t for m, t in OWASP_MINIMUMS)


DEFAULT_ARGON2_PARAMS: Final = Argon2Params(time_cost=3, memory_cost_kib=1 << 16, parallelism=4)
"""RFC 9106 §4, second recommended option: t=3, m=64 MiB, p=4."""


def insecure_test_params() -> Argon2Params:
    """HAZARDOUS: tiny Argon2id parameters (t=1, m=8 KiB, p=1) that keep tests fast.

    A passcode protected with them falls to a brute-force search in moments.
    Encrypting or decrypting with them needs ``insecure_allow_weak_kdf=True``.
    """
    return Argon2Params(time_cost=1, memory_cost_kib=8, parallelism=1)


@sdk_boundary
@dataclass(frozen=True)
class ShareMetadata:
    """What a container says in the clear about its share (authenticated when encrypted).

    Attributes:
        wallet_id: the wallet, 1-128 characters of [A-Za-z0-9._:@+/=-] (the host's ids).
        scheme: "bip340", "ecdsa-secp256k1" or "ed25519".
        party_id: the party's 0-based index in the keyring.
        public_key: the keyring's public key (33 bytes compressed; ed25519: 32).
        epoch: the share's epoch (refresh and reshare increment it).
    """

    wallet_id: str
    scheme: Scheme
    party_id: int
    public_key: bytes
    epoch: int

    def __post_init__(self) -> None:
        problem = _metadata_problem(
            self.wallet_id, self.scheme, self.party_id, self.public_key, self.epoch
        )
        if problem is not None:
            raise InvalidInput(f"metadata {problem[0]}: {problem[1]}")

    @staticmethod
    def of(share: KeyShare, wallet_id: str) -> ShareMetadata:
        """The metadata describing ``share`` as a share of wallet ``wallet_id``."""
        return ShareMetadata(
            wallet_id=wallet_id,
            scheme=share.scheme,
            party_id=share.party_id,
            public_key=share.public_key,
            epoch=share.epoch,
        )

    def describes(self, share: KeyShare) -> bool:
        """True when scheme, party id, public key and epoch are those of ``share``."""
        return (self.scheme, self.party_id, self.public_key, self.epoch) == (
            share.scheme,
            share.party_id,
            share.public_key,
            share.epoch,
        )

    def encode(self) -> bytes:
        """The metadata part of the associated data (module docstring)."""
        return b"".join(
            (
                _field(self.wallet_id.encode()),
                _field(self.scheme.encode()),
                struct.pack(">I", self.party_id),
                _field(self.public_key),
                struct.pack(">Q", self.epoch),
            )
        )

    def to_cbor_map(self) -> dict[str, Any]:
        """The metadata as the container's CBOR map holds it."""
        return {
            "wallet_id": self.wallet_id,
            "scheme": self.scheme,
            "party_id": self.party_id,
            "public_key": self.public_key,
            "epoch": self.epoch,
        }


@dataclass(frozen=True)
class ShareInfo:
    """What anyone can read from a container without the passcode or key.

    The metadata of an encrypted container is authenticated only once it is
    decrypted: until then, treat it as a claim.

    Attributes:
        metadata: the share's metadata.
        protection: "passcode", "key" or "plain".
        argon2: the Argon2id parameters of a passcode container, else None.
    """

    metadata: ShareMetadata
    protection: Protection
    argon2: Argon2Params | None


@dataclass(frozen=True)
class OpenedShare:
    """A share read from a container, with its metadata (consistent with it)."""

    metadata: ShareMetadata
    share: KeyShare


@dataclass(frozen=True)
class BackupBlob:
    """A backup share as the host's ``backups`` table keeps it (only ciphertext).

    Attributes:
        wallet_id: the wallet it backs up.
        backup_id: 1-128 characters of [A-Za-z0-9._:@+/=-], chosen by the client.
        party_id: the backed-up party's 0-based index (the host RPC may send it as text).
        epoch: the epoch of the backed-up share.
        blob: an encrypted container (``shardkeep-encrypted-share``).
    """

    wallet_id: str
    backup_id: str
    party_id: int
    epoch: int
    blob: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_id("wallet id", self.wallet_id)
        _check_id("backup id", self.backup_id)
        if type(self.party_id) is not int or not 0 <= self.party_id <= _MAX_PARTY_ID:
            raise InvalidInput(f"party id must be an integer in [0, {_MAX_PARTY_ID}]")
        if type(self.epoch) is not int or not 0 <= self.epoch <= _MAX_EPOCH:
            raise InvalidInput("epoch must be a non-negative 64-bit integer")
        if not isinstance(self.blob, bytes) or not 0 < len(self.blob) <= MAX_CONTAINER_BYTES:
            raise InvalidInput(f"blob must be 1 to {MAX_CONTAINER_BYTES} bytes")


### Encryption


@sdk_boundary
def encrypt_share(
    share: KeyShare,
    passcode: Passcode,
    *,
    wallet_id: str,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    random: Random = secrets.token_bytes,
) -> Container:
    """Encrypt a key share under a passcode (Argon2id + AES-256-GCM).

    Arguments:
        share: the key share.
        passcode: the user's passcode (non-empty).
        wallet_id: the wallet the share belongs to (stored as metadata).
        params: Argon2id costs; ``DEFAULT_ARGON2_PARAMS`` unless the device needs less.
        insecure_allow_weak_kdf: accept parameters below ``OWASP_MINIMUMS`` (tests only).
        random: source of the 16-byte salt and the 12-byte nonce.

    Returns:
        A ``shardkeep-encrypted-share`` container.

    Raises:
        InvalidInput: empty passcode, a bad wallet id, parameters out of bounds or
            (without the flag) too weak, or a random source returning the wrong length.
    """
    metadata = ShareMetadata.of(share, wallet_id)
    try:
        _check_argon2(params, allow_weak=insecure_allow_weak_kdf)
    except KdfParamsError as e:
        raise InvalidInput(f"Argon2id parameters refused: {e}") from e
    kdf = _Kdf(_KDF_ARGON2ID, _draw(random, _ARGON2_SALT_SIZE), params)
    key = _argon2_key(_passcode_bytes(passcode), kdf)
    return _seal(share, metadata, kdf, key, _draw(random, _NONCE_SIZE))


@sdk_boundary
def encrypt_with_key(
    share: KeyShare,
    key: bytes,
    *,
    wallet_id: str,
    random: Random = secrets.token_bytes,
) -> Container:
    """Encrypt a key share under a 32-byte key (passkey PRF output, cloud-KMS data key).

    The AES-256-GCM key is HKDF-SHA256(key, salt) with a fresh 32-byte salt,
    so each container has its own AES key.

    Arguments:
        share: the key share.
        key: 32 uniformly random bytes (not a passcode: it is not stretched).
        wallet_id: the wallet the share belongs to (stored as metadata).
        random: source of the 32-byte salt and the 12-byte nonce.

    Returns:
        A ``shardkeep-encrypted-share`` container.

    Raises:
        InvalidInput: a key that is not 32 bytes, a bad wallet id, or a random
            source returning the wrong length.
    """
    metadata = ShareMetadata.of(share, wallet_id)
    kdf = _Kdf(_KDF_HKDF, _draw(random, _HKDF_SALT_SIZE), None)
    aes_key = _hkdf_key(_check_key(key), kdf)
    return _seal(share, metadata, kdf, aes_key, _draw(random, _NONCE_SIZE))


@sdk_boundary
def encode_plain_share(share: KeyShare, *, wallet_id: str) -> Container:
    """Wrap a key share, unencrypted, with its metadata (``shardkeep-plain-share``).

    Only for storage that encrypts at rest (an OS keystore): the result holds
    the secret share in the clear.

    Raises:
        InvalidInput: a bad wallet id.
    """
    metadata = ShareMetadata.of(share, wallet_id)
    return Container(
        cbor2.dumps(
            {
                "format": PLAIN_FORMAT,
                "version": FORMAT_VERSION,
                "metadata": metadata.to_cbor_map(),
                "share": share.to_bytes(),
            }
        )
    )


@sdk_boundary
def decrypt_share(
    data: bytes | str, passcode: Passcode, *, insecure_allow_weak_kdf: bool = False
) -> OpenedShare:
    """Decrypt a passcode container (binary or armoured).

    The KDF parameters are checked before Argon2id runs: at most
    ``MAX_MEMORY_COST_KIB``, ``MAX_TIME_COST`` and ``MAX_PARALLELISM``, and at
    least one ``OWASP_MINIMUMS`` pair unless ``insecure_allow_weak_kdf``.

    Arguments:
        data: the container, or its armour.
        passcode: the passcode it was encrypted with.
        insecure_allow_weak_kdf: accept parameters below ``OWASP_MINIMUMS`` (tests only).

    Returns:
        The share and its (authenticated) metadata.

    Raises:
        DecryptionError: wrong passcode, or the container was tampered with.
        ShareFormatError: not a passcode container (``KdfParamsError`` for
            parameters out of bounds, ``UnsupportedVersionError``, ``ArmourError``).
        InvalidInput: empty passcode.
    """
    parsed = _parse(data)
    if parsed.kdf is None or parsed.kdf.alg != _KDF_ARGON2ID:
        raise ShareFormatError("kdf.alg", "not a passcode-encrypted share")
    return _open_encrypted(parsed, passcode=passcode, key=None, allow_weak=insecure_allow_weak_kdf)


@sdk_boundary
def decrypt_with_key(data: bytes | str, key: bytes) -> OpenedShare:
    """Decrypt a container made by :func:`encrypt_with_key` (binary or armoured).

    Returns:
        The share and its (authenticated) metadata.

    Raises:
        DecryptionError: wrong key, or the container was tampered with.
        ShareFormatError: not a key-encrypted container.
        InvalidInput: a key that is not 32 bytes.
    """
    parsed = _parse(data)
    if parsed.kdf is None or parsed.kdf.alg != _KDF_HKDF:
        raise ShareFormatError("kdf.alg", "not a key-encrypted share")
    return _open_encrypted(parsed, passcode=None, key=key, allow_weak=False)


@sdk_boundary
def open_share(
    data: bytes | str,
    *,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> OpenedShare:
    """Open any container (plain, passcode or key; binary or armoured).

    Arguments:
        data: the container, or its armour.
        passcode: needed for a passcode container.
        key: the 32-byte key, needed for a key container.
        insecure_allow_weak_kdf: as in :func:`decrypt_share`.

    Returns:
        The share and its metadata, checked against each other.

    Raises:
        InvalidInput: the container needs a passcode or key that was not given.
        DecryptionError, ShareFormatError: as in :func:`decrypt_share`.
    """
    parsed = _parse(data)
    if parsed.kdf is None:
        return _open_plain(parsed)
    if parsed.kdf.alg == _KDF_ARGON2ID:
        if passcode is None:
            raise InvalidInput("this share is passcode-encrypted: pass its passcode")
        return _open_encrypted(
            parsed, passcode=passcode, key=None, allow_weak=insecure_allow_weak_kdf
        )
    if key is None:
        raise InvalidInput("this share is key-encrypted: pass its 32-byte key")
    return _open_encrypted(parsed, passcode=None, key=key, allow_weak=False)


@sdk_boundary
def inspect_share(data: bytes | str) -> ShareInfo:
    """Read what a container says about its share, without passcode or key.

    Raises:
        ShareFormatError: not a well-formed container.
    """
    parsed = _parse(data)
    if parsed.kdf is None:
        return ShareInfo(parsed.metadata, "plain", None)
    if parsed.kdf.alg == _KDF_ARGON2ID:
        return ShareInfo(parsed.metadata, "passcode", parsed.kdf.argon2)
    return ShareInfo(parsed.metadata, "key", None)


### Container internals


@dataclass(frozen=True)
class _Kdf:
    alg: str
    salt: bytes
    argon2: Argon2Params | None  # set iff alg is argon2id

    def encode(self) -> bytes:
        """The KDF part of the associated data."""
        out = _field(self.alg.encode()) + _field(self.salt)
        if self.argon2 is not None:
            p = self.argon2
            out += struct.pack(">III", p.time_cost, p.memory_cost_kib, p.parallelism)
        return out

    def to_cbor_map(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"alg": self.alg, "salt": self.salt}
        if self.argon2 is not None:
            fields["time_cost"] = self.argon2.time_cost
            fields["memory_cost_kib"] = self.argon2.memory_cost_kib
            fields["parallelism"] = self.argon2.parallelism
        return fields


@dataclass(frozen=True)
class _Parsed:
    """A container whose structure and bounds are checked (nothing decrypted yet)."""

    metadata: ShareMetadata
    kdf: _Kdf | None  # None for a plain container
    nonce: bytes
    body: bytes = field(repr=False)  # ciphertext || tag, or the plain KeyShare bytes


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _associated_data(version: int, kdf: _Kdf, metadata: ShareMetadata) -> bytes:
    return b"".join(
        (
            _field(_AAD_LABEL),
            bytes([version]),
            kdf.encode(),
            _field(_CIPHER.encode()),
            metadata.encode(),
        )
    )


def _seal(
    share: KeyShare, metadata: ShareMetadata, kdf: _Kdf, key: bytes, nonce: bytes
) -> Container:
    plaintext = share.to_bytes()
    aad = _associated_data(FORMAT_VERSION, kdf, metadata)
    aead = AESGCM(key)
    ciphertext = aead.encrypt(nonce, plaintext, aad)
    # Self-check: the container opens under the same key.
    if not hmac.compare_digest(aead.decrypt(nonce, ciphertext, aad), plaintext):
        raise InternalError("AES-GCM round trip failed")
    return Container(
        cbor2.dumps(
            {
                "format": ENCRYPTED_FORMAT,
                "version": FORMAT_VERSION,
                "kdf": kdf.to_cbor_map(),
                "cipher": {"alg": _CIPHER, "nonce": nonce},
                "metadata": metadata.to_cbor_map(),
                "ciphertext": ciphertext,
            }
        )
    )


def _open_encrypted(
    parsed: _Parsed, *, passcode: Passcode | None, key: bytes | None, allow_weak: bool
) -> OpenedShare:
    kdf = parsed.kdf
    if kdf is None:
        raise InternalError("a plain container reached decryption")
    if kdf.alg == _KDF_ARGON2ID:
        if passcode is None or kdf.argon2 is None:
            raise InternalError("passcode container without passcode or parameters")
        # Policy before any hashing: the hard bounds were checked by _parse.
        _check_argon2(kdf.argon2, allow_weak=allow_weak)
        aes_key = _argon2_key(_passcode_bytes(passcode), kdf)
    else:
        if key is None:
            raise InternalError("key container without key")
        aes_key = _hkdf_key(_check_key(key), kdf)
    aad = _associated_data(FORMAT_VERSION, kdf, parsed.metadata)
    try:
        plaintext = AESGCM(aes_key).decrypt(parsed.nonce, parsed.body, aad)
    except InvalidTag:
        raise DecryptionError() from None
    return _share_for(parsed.metadata, plaintext, "ciphertext")


def _open_plain(parsed: _Parsed) -> OpenedShare:
    return _share_for(parsed.metadata, parsed.body, "share")


def _share_for(metadata: ShareMetadata, share_bytes: bytes, name: str) -> OpenedShare:
    try:
        share = KeyShare.from_bytes(share_bytes)
    except InvalidEncodingError as e:
        raise ShareFormatError(name, "does not hold a valid key share") from e
    if not metadata.describes(share):
        raise ShareFormatError("metadata", "does not describe the share it holds")
    return OpenedShare(metadata, share)


def _parse(data: bytes | str) -> _Parsed:
    """Check a container's structure and bounds; no cryptography (cheap on hostile input)."""
    raw = dearmour(data) if _looks_armoured(data) else data
    if not isinstance(raw, bytes):
        raise InternalError("dearmour returned text")
    fields = _decode_map(raw)
    fmt = fields.get("format")
    if fmt not in (ENCRYPTED_FORMAT, PLAIN_FORMAT):
        raise ShareFormatError("format", "not a shardkeep share container")
    version = fields.get("version")
    if type(version) is not int:
        raise ShareFormatError("version", "missing or not an integer")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError("version", f"version {version} is not supported")
    if fmt == PLAIN_FORMAT:
        _exact_keys(fields, {"format", "version", "metadata", "share"}, "")
        metadata = _parse_metadata(fields.get("metadata"))
        return _Parsed(metadata, None, b"", _typed(fields, "share", bytes, ""))
    _exact_keys(fields, {"format", "version", "kdf", "cipher", "metadata", "ciphertext"}, "")
    kdf = _parse_kdf(fields.get("kdf"))
    cipher = fields.get("cipher")
    if not isinstance(cipher, dict):
        raise ShareFormatError("cipher", "missing or not a map")
    _exact_keys(cipher, {"alg", "nonce"}, "cipher.")
    if cipher.get("alg") != _CIPHER:
        raise ShareFormatError("cipher.alg", f"only {_CIPHER} is supported")
    nonce = _typed(cipher, "nonce", bytes, "cipher.")
    if len(nonce) != _NONCE_SIZE:
        raise ShareFormatError("cipher.nonce", f"must be {_NONCE_SIZE} bytes")
    metadata = _parse_metadata(fields.get("metadata"))
    ciphertext = _typed(fields, "ciphertext", bytes, "")
    if len(ciphertext) < _TAG_SIZE:
        raise ShareFormatError("ciphertext", "shorter than the authentication tag")
    return _Parsed(metadata, kdf, nonce, ciphertext)


def _decode_map(raw: bytes) -> dict[Any, Any]:
    if len(raw) > MAX_CONTAINER_BYTES:
        raise ShareFormatError("container", f"larger than {MAX_CONTAINER_BYTES} bytes")
    stream = io.BytesIO(raw)
    try:
        value = cbor2.CBORDecoder(stream, max_depth=4, allow_duplicate_keys=False).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as e:
        raise ShareFormatError("container", "not valid CBOR") from e
    if stream.tell() != len(raw):
        raise ShareFormatError("container", "trailing bytes after the CBOR map")
    if not isinstance(value, dict):
        raise ShareFormatError("container", "not a CBOR map")
    return value


def _parse_kdf(value: object) -> _Kdf:
    if not isinstance(value, dict):
        raise ShareFormatError("kdf", "missing or not a map")
    alg = value.get("alg")
    if alg == _KDF_HKDF:
        _exact_keys(value, {"alg", "salt"}, "kdf.")
        salt = _typed(value, "salt", bytes, "kdf.")
        if len(salt) != _HKDF_SALT_SIZE:
            raise ShareFormatError("kdf.salt", f"must be {_HKDF_SALT_SIZE} bytes")
        return _Kdf(_KDF_HKDF, salt, None)
    if alg != _KDF_ARGON2ID:
        raise ShareFormatError("kdf.alg", f"only {_KDF_ARGON2ID} and {_KDF_HKDF} are supported")
    _exact_keys(value, {"alg", "salt", "time_cost", "memory_cost_kib", "parallelism"}, "kdf.")
    salt = _typed(value, "salt", bytes, "kdf.")
    if not _MIN_SALT_SIZE <= len(salt) <= _MAX_SALT_SIZE:
        raise KdfParamsError("kdf.salt", f"must be {_MIN_SALT_SIZE}-{_MAX_SALT_SIZE} bytes")
    params = Argon2Params(
        time_cost=_typed(value, "time_cost", int, "kdf."),
        memory_cost_kib=_typed(value, "memory_cost_kib", int, "kdf."),
        parallelism=_typed(value, "parallelism", int, "kdf."),
    )
    _check_argon2_bounds(params)
    return _Kdf(_KDF_ARGON2ID, salt, params)


def _parse_metadata(value: object) -> ShareMetadata:
    if not isinstance(value, dict):
        raise ShareFormatError("metadata", "missing or not a map")
    _exact_keys(value, {"wallet_id", "scheme", "party_id", "public_key", "epoch"}, "metadata.")
    wallet_id = _typed(value, "wallet_id", str, "metadata.")
    scheme = _typed(value, "scheme", str, "metadata.")
    party_id = _typed(value, "party_id", int, "metadata.")
    public_key = _typed(value, "public_key", bytes, "metadata.")
    epoch = _typed(value, "epoch", int, "metadata.")
    problem = _metadata_problem(wallet_id, scheme, party_id, public_key, epoch)
    if problem is not None:
        raise ShareFormatError(f"metadata.{problem[0]}", problem[1])
    return ShareMetadata(wallet_id, scheme, party_id, public_key, epoch)


def _metadata_problem(
    wallet_id: object, scheme: object, party_id: object, public_key: object, epoch: object
) -> tuple[str, str] | None:
    """The first invalid metadata field and why, or None."""
    if not isinstance(wallet_id, str) or _ID_RE.fullmatch(wallet_id) is None:
        return "wallet_id", "must be 1-128 characters of [A-Za-z0-9._:@+/=-]"
    if scheme not in SCHEMES:
        return "scheme", f"must be one of {', '.join(SCHEMES)}"
    if type(party_id) is not int or not 0 <= party_id <= _MAX_PARTY_ID:
        return "party_id", f"must be an integer in [0, {_MAX_PARTY_ID}]"
    group = group_of(scheme)
    if not isinstance(public_key, bytes) or len(public_key) != group.element_size:
        kind = "an RFC 8032" if scheme == "ed25519" else "a compressed"
        return "public_key", f"must be {kind} {group.element_size}-byte point"
    try:
        group.decode(public_key)
    except InvalidEncodingError:
        return "public_key", f"is not a point on {group.name}"
    if type(epoch) is not int or not 0 <= epoch <= _MAX_EPOCH:
        return "epoch", "must be a non-negative 64-bit integer"
    return None


def _exact_keys(fields: Mapping[Any, Any], expected: set[str], prefix: str) -> None:
    unknown = sorted(str(k) for k in fields if k not in expected)
    if unknown:
        raise ShareFormatError(prefix + unknown[0], "unknown field")


def _typed(fields: Mapping[Any, Any], name: str, kind: type, prefix: str) -> Any:
    value = fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ShareFormatError(prefix + name, f"missing or not of type {kind.__name__}")
    return value


### Key derivation


def _check_argon2_bounds(p: Argon2Params) -> None:
    """Hard bounds, whatever the policy: Argon2's own floors (RFC 9106 §3.1) and our caps."""
    if not 1 <= p.time_cost <= MAX_TIME_COST:
        raise KdfParamsError("kdf.time_cost", f"must be in [1, {MAX_TIME_COST}]")
    if not 1 <= p.parallelism <= MAX_PARALLELISM:
        raise KdfParamsError("kdf.parallelism", f"must be in [1, {MAX_PARALLELISM}]")
    if not 8 * p.parallelism <= p.memory_cost_kib <= MAX_MEMORY_COST_KIB:
        raise KdfParamsError(
            "kdf.memory_cost_kib", f"must be in [8 * parallelism, {MAX_MEMORY_COST_KIB}]"
        )


def _check_argon2(p: Argon2Params, *, allow_weak: bool) -> None:
    _check_argon2_bounds(p)
    if not allow_weak and not p.is_strong():
        raise KdfParamsError("kdf.memory_cost_kib", "with this time_cost, below the OWASP minimums")


def _passcode_bytes(passcode: Passcode) -> bytes:
    if isinstance(passcode, str):
        # RFC 8265 §4.2.2 (OpaqueString): NFC, so every device encodes it alike.
        passcode = unicodedata.normalize("NFC", passcode).encode("utf-8")
    if not isinstance(passcode, bytes) or not passcode:
        raise InvalidInput("passcode must be a non-empty str or bytes")
    return passcode


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != _KEY_SIZE:
        raise InvalidInput(f"key must be {_KEY_SIZE} bytes")
    return key


def _argon2_key(passcode: bytes, kdf: _Kdf) -> bytes:
    p = kdf.argon2
    if p is None:
        raise InternalError("argon2id KDF without parameters")
    try:
        return hash_secret_raw(
            secret=passcode,
            salt=kdf.salt,
            time_cost=p.time_cost,
            memory_cost=p.memory_cost_kib,
            parallelism=p.parallelism,
            hash_len=_KEY_SIZE,
            type=Type.ID,
            version=ARGON2_VERSION,  # 0x13, RFC 9106 §3.1
        )
    except HashingError as e:  # e.g. out of memory: never the passcode's content
        raise InternalError("Argon2id failed") from e


def _hkdf_key(key: bytes, kdf: _Kdf) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=kdf.salt, info=_HKDF_INFO).derive(
        key
    )


def _draw(random: Random, n: int) -> bytes:
    value = random(n)
    if not isinstance(value, bytes) or len(value) != n:
        raise InvalidInput(f"random source must return {n} bytes")
    return value


def _check_id(kind: str, value: object) -> None:
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InvalidInput(f"{kind} must be 1-128 characters of [A-Za-z0-9._:@+/=-]")


### Armour (base64 text for copy and paste)
# Shaped like OpenPGP's ASCII armour (RFC 4880 §6.2): BEGIN line, "Key: value"
# headers, a blank line, base64 lines, END line. A SHA-256 checksum header
# replaces OpenPGP's CRC-24 so a copy/paste error is reported as such.

_ARMOUR_LABEL: Final = "SHARDKEEP SHARE"
_BEGIN: Final = f"-----BEGIN {_ARMOUR_LABEL}-----"
_END: Final = f"-----END {_ARMOUR_LABEL}-----"
_LINE: Final = 64
_CHECKSUM_PREFIX: Final = "sha256:"
_CHECKSUM_BYTES: Final = 4
_MAX_ARMOUR_CHARS: Final = 2 * MAX_CONTAINER_BYTES


def _checksum(payload: bytes) -> str:
    return _CHECKSUM_PREFIX + hashlib.sha256(payload).digest()[:_CHECKSUM_BYTES].hex()


@sdk_boundary
def armour(container: bytes) -> str:
    """Encode a container as copy-and-paste text.

    Example::

        -----BEGIN SHARDKEEP SHARE-----
        Format: shardkeep-encrypted-share
        Checksum: sha256:1a2b3c4d

        pmZmb3JtYXR4GXNoYXJka2VlcC1lbmNyeXB0ZWQtc2hhcmVndmVyc2lvbgFja2Rm
        ...
        -----END SHARDKEEP SHARE-----

    The Format header tells a reader whether the text holds a secret in the
    clear; the checksum covers the decoded bytes.

    Arguments:
        container: a container (``encrypt_share`` / ``encrypt_with_key`` / ``encode_plain_share``).

    Returns:
        The armoured text, ending in a newline.

    Raises:
        ShareFormatError: ``container`` is not a well-formed container.
    """
    if not isinstance(container, bytes):
        raise InvalidInput("container must be bytes")
    fmt = _decode_map(container).get("format")
    if fmt not in (ENCRYPTED_FORMAT, PLAIN_FORMAT):
        raise ShareFormatError("format", "not a shardkeep share container")
    body = base64.b64encode(container).decode("ascii")
    lines = [
        _BEGIN,
        f"Format: {fmt}",
        f"Checksum: {_checksum(container)}",
        "",
        *(body[i : i + _LINE] for i in range(0, len(body), _LINE)),
        _END,
    ]
    return "\n".join(lines) + "\n"


@sdk_boundary
def dearmour(text: bytes | str) -> bytes:
    """Decode armoured text back to the container bytes.

    Text around the armour (an e-mail's) is ignored; lines may end in CRLF and
    carry surrounding spaces.

    Returns:
        The container bytes (still to be opened).

    Raises:
        ArmourError: missing BEGIN/END lines, a malformed or unknown header,
            bad base64, a checksum mismatch, or a Format header that does not
            match the container.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ArmourError("armour", "not ASCII text") from None
    if len(text) > _MAX_ARMOUR_CHARS:
        raise ArmourError("armour", "too long")
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index(_BEGIN)
        end = lines.index(_END, start + 1)
    except ValueError:
        raise ArmourError("armour", f"needs '{_BEGIN}' and '{_END}' lines") from None
    inner = lines[start + 1 : end]
    try:
        blank = inner.index("")
    except ValueError:
        raise ArmourError("armour.headers", "no blank line after the headers") from None
    headers: dict[str, str] = {}
    for line in inner[:blank]:
        name, sep, value = line.partition(":")
        if not sep or name not in ("Format", "Checksum") or name in headers:
            raise ArmourError("armour.headers", "malformed, unknown or repeated header")
        headers[name] = value.strip()
    if set(headers) != {"Format", "Checksum"}:
        raise ArmourError("armour.headers", "needs Format and Checksum headers")
    body = "".join(inner[blank + 1 :])
    try:
        payload = base64.b64decode(body, validate=True)
    except ValueError:
        raise ArmourError("armour.body", "not valid base64") from None
    if not payload:
        raise ArmourError("armour.body", "empty")
    if headers["Checksum"] != _checksum(payload):  # an integrity check, not a secret
        raise ArmourError("armour.checksum", "does not match the content (damaged in transit?)")
    try:
        fmt = _decode_map(payload).get("format")
    except ShareFormatError as e:
        raise ArmourError("armour.body", "does not hold a share container") from e
    if headers["Format"] != fmt:
        raise ArmourError("armour.headers", "Format header does not match the container")
    return payload


def _looks_armoured(data: bytes | str) -> bool:
    if isinstance(data, str):
        return True
    # A binary container starts with a CBOR map header (major type 5: 0xa0-0xbf),
    # which no text byte is; anything else is either armour or garbage.
    return not (data and 0xA0 <= data[0] <= 0xBF) and b"-----BEGIN " in data[:4096]


### Share files


@sdk_boundary
def write_share_file(
    path: str | os.PathLike[str],
    share: KeyShare,
    *,
    wallet_id: str,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    plain: bool = False,
    armoured: bool = False,
    overwrite: bool = False,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    random: Random = secrets.token_bytes,
) -> None:
    """Write a share file atomically, readable by its owner only (mode 0600).

    The container is written to a temporary file in the same directory,
    flushed and fsync'ed, then renamed over ``path`` (POSIX rename is atomic)
    and the directory fsync'ed: a crash leaves either the old file or the new
    one, never a torn one.

    Exactly one protection must be chosen: ``passcode``, ``key`` or
    ``plain=True`` (for a keystore that encrypts at rest).

    Arguments:
        path: the file; its directory must exist.
        share: the key share.
        wallet_id: the wallet the share belongs to.
        passcode: encrypt under this passcode (:func:`encrypt_share`).
        key: encrypt under this 32-byte key (:func:`encrypt_with_key`).
        plain: store the share unencrypted (:func:`encode_plain_share`).
        armoured: write the base64 text armour (export) instead of binary CBOR.
        overwrite: replace a file holding another share, or unreadable data.
            Without it, only a file holding the same share (same wallet,
            scheme, party, public key and epoch, e.g. after an ECDSA pair was
            burned) is replaced.
        params, insecure_allow_weak_kdf, random: as in :func:`encrypt_share`.

    Raises:
        InvalidInput: not exactly one protection, or a bad argument.
        ShareFileExistsError: ``path`` holds another share and not ``overwrite``.
        OSError: the file system failed (the old file, if any, is intact).
    """
    chosen = (passcode is not None) + (key is not None) + bool(plain)
    if chosen != 1:
        raise InvalidInput("choose exactly one of passcode, key or plain=True")
    target = Path(path)
    if not overwrite:  # before the costly encryption
        _refuse_other_share(target, ShareMetadata.of(share, wallet_id))
    if passcode is not None:
        container = encrypt_share(
            share,
            passcode,
            wallet_id=wallet_id,
            params=params,
            insecure_allow_weak_kdf=insecure_allow_weak_kdf,
            random=random,
        )
    elif key is not None:
        container = encrypt_with_key(share, key, wallet_id=wallet_id, random=random)
    else:
        container = encode_plain_share(share, wallet_id=wallet_id)
    data = armour(container).encode("ascii") if armoured else bytes(container)
    write_file_atomically(target, data)


@sdk_boundary
def read_share_file(
    path: str | os.PathLike[str],
    *,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> OpenedShare:
    """Read and validate a share file (binary or armoured, any protection).

    Raises:
        ShareFormatError: not a share container (or too large).
        DecryptionError: wrong passcode or key, or tampered with.
        InvalidInput: the file needs a passcode or key that was not given.
        OSError: the file cannot be read.
    """
    return open_share(
        _read_bounded(Path(path)),
        passcode=passcode,
        key=key,
        insecure_allow_weak_kdf=insecure_allow_weak_kdf,
    )


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(_MAX_ARMOUR_CHARS + 1)
    if len(data) > _MAX_ARMOUR_CHARS:
        raise ShareFormatError("container", "file too large for a share")
    return data


def _refuse_other_share(path: Path, metadata: ShareMetadata) -> None:
    try:
        existing = _read_bounded(path)
    except FileNotFoundError:
        return
    except ShareFormatError:
        existing = b""
    try:
        same = inspect_share(existing).metadata == metadata
    except ShareFormatError:
        same = False
    if not same:
        raise ShareFileExistsError(
            f"{path} holds another share or unreadable data; pass overwrite=True to replace it"
        )


@sdk_boundary
def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, all or nothing, durably.

    A temporary file in the same directory is written, fsynced and renamed
    over ``path``; then the directory is fsynced and the file read back.

    Raises:
        OSError: the file system refused; the old file is left as it was.
        InternalError: the file does not read back as written.
    """
    directory = path.parent
    # mkstemp creates the file with mode 0600 and O_EXCL, in the target's
    # directory so the rename stays on one file system (rename(2) is atomic).
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask or platform default
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    # Self-check: what is on disk is what we meant to write.
    if not hmac.compare_digest(_read_bounded(path), data):
        raise InternalError(f"{path.name} does not read back as written")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX: fsync the directory entry)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


### Backups through the host


@sdk_boundary
def make_backup(
    share: KeyShare,
    *,
    wallet_id: str,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    backup_id: str | None = None,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    random: Random = secrets.token_bytes,
) -> BackupBlob:
    """Encrypt a share for the host's backups table (the host sees only ciphertext).

    Arguments:
        share: the key share to back up.
        wallet_id: its wallet.
        passcode: encrypt under a passcode (Argon2id), or
        key: under a 32-byte passkey/KMS key (HKDF); exactly one of the two.
        backup_id: the id to store it under; by default "bk-" and 32 hex digits
            of SHA-256 of the blob, so an upload retried with the same blob is
            idempotent at the host.
        params, insecure_allow_weak_kdf, random: as in :func:`encrypt_share`.

    Returns:
        The backup record to hand to the host.

    Raises:
        InvalidInput: not exactly one of passcode and key, or a bad argument.
    """
    if (passcode is None) == (key is None):
        raise InvalidInput("a backup needs exactly one of passcode or key")
    if passcode is not None:
        blob = encrypt_share(
            share,
            passcode,
            wallet_id=wallet_id,
            params=params,
            insecure_allow_weak_kdf=insecure_allow_weak_kdf,
            random=random,
        )
    elif key is not None:
        blob = encrypt_with_key(share, key, wallet_id=wallet_id, random=random)
    else:
        raise InternalError("unreachable: neither passcode nor key")
    if backup_id is None:
        backup_id = "bk-" + hashlib.sha256(blob).hexdigest()[:32]
    return BackupBlob(wallet_id, backup_id, share.party_id, share.epoch, bytes(blob))


@sdk_boundary
def recover_share(
    backup: BackupBlob,
    *,
    public_key: bytes,
    epoch: int,
    party_id: int | None = None,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> KeyShare:
    """Recover a key share on a new device from a backup the host returned.

    The host is untrusted: it could hand back another wallet's, party's or
    epoch's backup, or an old one after a refresh. So the record's fields and
    the container's metadata must agree, the metadata must match what the
    caller expects (checked before the costly key derivation), and decryption
    then authenticates that metadata.

    Arguments:
        backup: the record from the host.
        public_key: the wallet's 33-byte public key, as the caller knows it
            (e.g. from its address), not as the host says.
        epoch: the wallet's current epoch.
        party_id: the party the caller means to recover, if it knows.
        passcode: the backup's passcode, or
        key: its 32-byte key; exactly one of the two.
        insecure_allow_weak_kdf: as in :func:`decrypt_share`.

    Returns:
        The validated key share.

    Raises:
        ShareMismatchError: the backup is not of this wallet, public key,
            epoch or party (``field`` says which).
        DecryptionError: wrong passcode or key, or the blob was tampered with.
        ShareFormatError: the blob is not an encrypted container.
        InvalidInput: not exactly one of passcode and key.
    """
    if (passcode is None) == (key is None):
        raise InvalidInput("recovery needs exactly one of passcode or key")
    info = inspect_share(backup.blob)
    if info.protection == "plain":
        raise ShareFormatError("format", "a backup must be encrypted")
    claimed = info.metadata
    # The host's record against the container's own metadata.
    for name, stored, inner in (
        ("wallet_id", backup.wallet_id, claimed.wallet_id),
        ("party_id", backup.party_id, claimed.party_id),
        ("epoch", backup.epoch, claimed.epoch),
    ):
        if stored != inner:
            raise ShareMismatchError(f"backup record {name}")
    # The caller's expectations, before spending an Argon2id run.
    if claimed.public_key != public_key:
        raise ShareMismatchError("public key")
    if claimed.epoch != epoch:
        raise ShareMismatchError("epoch")
    if party_id is not None and claimed.party_id != party_id:
        raise ShareMismatchError("party id")
    if passcode is not None:
        opened = decrypt_share(
            backup.blob, passcode, insecure_allow_weak_kdf=insecure_allow_weak_kdf
        )
    elif key is not None:
        opened = decrypt_with_key(backup.blob, key)
    else:
        raise InternalError("unreachable: neither passcode nor key")
    share = opened.share
    # Decryption authenticated the metadata and _share_for matched it to the share.
    if not (
        opened.metadata == claimed
        and share.public_key == public_key
        and share.epoch == epoch
        and opened.metadata.wallet_id == backup.wallet_id
    ):
        raise InternalError("recovered share does not match its checked metadata")
    return share
