"""Device backups: a key share together with the party identity that signs with it.

A key share alone cannot sign from a new device: the keyring lists each party
by its static X25519 key (its relay party id derives from it) and ChillDKG host
key, and the enclave accepts a signing request only for the wallet's own party
ids. So a device backup carries the party's identity too (and, optionally, the
wallet owner's Ed25519 key, which authorises export and reshare, and the
wallet's policy set, whose hash its approvals sign).

Format (CBOR, RFC 8949), version 1, or version 2 for a wallet with a policy set::

    {"format": "shardkeep-device-backup", "version": 1 or 2,
     "share": bstr,          # a client.storage.shares "shardkeep-encrypted-share" container
     "identity": {"alg": "hkdf-sha256/aes-256-gcm", "salt": bstr(32),
                  "nonce": bstr(12), "ciphertext": bstr},
     "policy_set": {"nonce": bstr(12), "ciphertext": bstr}}     # version 2 only

The identity is sealed with AES-256-GCM (NIST SP 800-38D, random 96-bit
nonce) under ``HKDF-SHA256(ikm = the share's 32-byte secret share, salt,
info = "shardkeep/device-identity/v1")`` (RFC 5869): the secret share is a
uniformly random scalar known only to its party, so the identity opens exactly
when the share does, after the share container's one passcode (Argon2id) or
key derivation; no second costly derivation is needed. A fresh salt per backup
gives each one its own AES key. The plaintext is ``static X25519 private key
(32) || ChillDKG host secret key (32) [|| owner Ed25519 private key (32)]``.
The associated data binds the identity to its share::

    AD = field("shardkeep/device-identity") || u8 version || field(wallet_id)
         || field(scheme) || u32 party_id || field(public_key) || u64 epoch || field(salt)
    field(x) = u32 len(x) || x                    (integers big-endian)

so an identity cannot be moved to another wallet, party or epoch unnoticed.

The policy set (its canonical encoding, ``shardkeep.policyset.encode``) is
sealed the same way under its own key, ``HKDF-SHA256(ikm = the secret share,
salt = the identity's salt, info = "shardkeep/device-policy-set/v1")``, with a
fresh nonce and the same associated data under the label
``"shardkeep/device-policy-set"``: the host can neither read, swap nor drop it
without the backup failing to open (a version-1 backup carries no set).

Error policy as in ``client.storage.errors``: ``DecryptionError`` (opaque) for
a wrong passcode or key or any tampering, ``ShareFormatError`` naming the field
of a malformed backup, ``InvalidInput`` for bad arguments.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.errors import InvalidInput, sdk_boundary
from client.sdk.party import PartyIdentity
from client.storage.errors import DecryptionError, ShareFormatError
from client.storage.shares import (
    DEFAULT_ARGON2_PARAMS,
    MAX_CONTAINER_BYTES,
    Argon2Params,
    BackupBlob,
    Passcode,
    Random,
    make_backup,
    recover_share,
)
from shardkeep.policyset import InvalidPolicy, PolicySet, decode, encode
from tss.channel import StaticKey
from tss.errors import InternalError
from tss.keyshare import KeyShare

__all__ = [
    # Functions
    "make_device_backup",
    "open_device_backup",
    "is_device_backup",
    "seal_identity",
    "open_identity",
    # Types
    "RecoveredDevice",
    # Constants
    "DEVICE_BACKUP_FORMAT",
    "DEVICE_BACKUP_VERSION",
]

DEVICE_BACKUP_FORMAT: Final = "shardkeep-device-backup"
DEVICE_BACKUP_VERSION: Final = 2  # 1: no policy set (still read)
_AD_VERSION: Final = 1  # the associated data's layout, unchanged by version 2

_IDENTITY_ALG: Final = "hkdf-sha256/aes-256-gcm"
_AAD_LABEL: Final = b"shardkeep/device-identity"
_HKDF_INFO: Final = b"shardkeep/device-identity/v1"
_POLICY_AAD_LABEL: Final = b"shardkeep/device-policy-set"
_POLICY_HKDF_INFO: Final = b"shardkeep/device-policy-set/v1"
_MAX_POLICY_SET: Final = 1 << 20  # far above any set of MAX_AUTHENTICATORS and their policies
_SALT_SIZE: Final = 32
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_KEY_SIZE: Final = 32


@dataclass(frozen=True)
class RecoveredDevice:
    """What a device backup gives back: the share and the identity that signs with it.

    Attributes:
        wallet_id: the wallet.
        share: the validated key share.
        identity: the party's static and host keys.
        owner_key: the wallet owner's key, if the backup carried it.
        policy_set: the wallet's policy set, if the backup carried it.
    """

    wallet_id: str
    share: KeyShare = field(repr=False)
    identity: PartyIdentity = field(repr=False)
    owner_key: Ed25519PrivateKey | None = field(default=None, repr=False)
    policy_set: PolicySet | None = field(default=None, repr=False)


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _associated_data(
    share: KeyShare, wallet_id: str, salt: bytes, label: bytes = _AAD_LABEL
) -> bytes:
    return b"".join(
        (
            _field(label),
            bytes([_AD_VERSION]),
            _field(wallet_id.encode()),
            _field(share.scheme.encode()),
            struct.pack(">I", share.party_id),
            _field(share.public_key),
            struct.pack(">Q", share.epoch),
            _field(salt),
        )
    )


def _identity_key(share: KeyShare, salt: bytes, info: bytes = _HKDF_INFO) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=salt, info=info).derive(
        share.secret_share_bytes
    )


def _seal_policy_set(
    policy_set: PolicySet, share: KeyShare, wallet_id: str, salt: bytes, random: Random
) -> dict[str, bytes]:
    """The policy set sealed under its own key from the share (module docstring)."""
    nonce = _draw(random, _NONCE_SIZE)
    key = _identity_key(share, salt, _POLICY_HKDF_INFO)
    ad = _associated_data(share, wallet_id, salt, _POLICY_AAD_LABEL)
    return {"nonce": nonce, "ciphertext": AESGCM(key).encrypt(nonce, encode(policy_set), ad)}


def _open_policy_set(sealed: object, share: KeyShare, wallet_id: str, salt: bytes) -> PolicySet:
    """Open what :func:`_seal_policy_set` sealed; the set must name the backup's wallet."""
    if not isinstance(sealed, dict) or set(sealed) != {"nonce", "ciphertext"}:
        raise ShareFormatError("policy_set", "expected nonce and ciphertext")
    nonce, ciphertext = sealed["nonce"], sealed["ciphertext"]
    if not isinstance(nonce, bytes) or len(nonce) != _NONCE_SIZE:
        raise ShareFormatError("policy_set.nonce", f"expected {_NONCE_SIZE} bytes")
    if not isinstance(ciphertext, bytes) or not _TAG_SIZE < len(ciphertext) <= _MAX_POLICY_SET:
        raise ShareFormatError("policy_set.ciphertext", "wrong length")
    key = _identity_key(share, salt, _POLICY_HKDF_INFO)
    ad = _associated_data(share, wallet_id, salt, _POLICY_AAD_LABEL)
    try:
        data = AESGCM(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise DecryptionError() from None
    try:
        policy_set = decode(data)
    except InvalidPolicy as e:  # sealed by whoever held the share: report it, do not guess
        raise ShareFormatError("policy_set", f"not a policy set: {e}") from e
    if policy_set.wallet_id != wallet_id:
        raise ShareFormatError("policy_set", "the policy set names another wallet")
    return policy_set


def _draw(random: Random, n: int) -> bytes:
    data = random(n)
    if len(data) != n:
        raise InvalidInput(f"the random source returned {len(data)} bytes, not {n}")
    return data


@sdk_boundary
def seal_identity(
    identity: PartyIdentity,
    share: KeyShare,
    *,
    wallet_id: str,
    owner_key: Ed25519PrivateKey | None = None,
    random: Random = secrets.token_bytes,
) -> dict[str, Any]:
    """Seal a party identity (and owner key) under a key derived from its share.

    Arguments:
        identity: the party's keys.
        share: the party's key share (its secret share keys the sealing).
        wallet_id: the wallet (bound into the associated data).
        owner_key: the wallet owner's Ed25519 key, to recover it too.
        random: source of the 32-byte salt and 12-byte nonce.

    Returns:
        The ``identity`` map of the device-backup format.
    """
    salt, nonce = _draw(random, _SALT_SIZE), _draw(random, _NONCE_SIZE)
    plaintext = identity.static_key.private_bytes() + identity.hostseckey
    if owner_key is not None:
        plaintext += owner_key.private_bytes_raw()
    ciphertext = AESGCM(_identity_key(share, salt)).encrypt(
        nonce, plaintext, _associated_data(share, wallet_id, salt)
    )
    return {"alg": _IDENTITY_ALG, "salt": salt, "nonce": nonce, "ciphertext": ciphertext}


@sdk_boundary
def open_identity(
    sealed: object, share: KeyShare, *, wallet_id: str
) -> tuple[PartyIdentity, Ed25519PrivateKey | None]:
    """Open an identity sealed by :func:`seal_identity`.

    Returns:
        The party identity and the owner key (None if not sealed with it).

    Raises:
        ShareFormatError: not a sealed identity map.
        DecryptionError: another share, wallet, party or epoch, or tampered with.
    """
    if not isinstance(sealed, dict) or set(sealed) != {"alg", "salt", "nonce", "ciphertext"}:
        raise ShareFormatError("identity", "expected alg, salt, nonce and ciphertext")
    if sealed["alg"] != _IDENTITY_ALG:
        raise ShareFormatError("identity.alg", "unknown algorithm")
    salt, nonce, ciphertext = sealed["salt"], sealed["nonce"], sealed["ciphertext"]
    if not isinstance(salt, bytes) or len(salt) != _SALT_SIZE:
        raise ShareFormatError("identity.salt", f"expected {_SALT_SIZE} bytes")
    if not isinstance(nonce, bytes) or len(nonce) != _NONCE_SIZE:
        raise ShareFormatError("identity.nonce", f"expected {_NONCE_SIZE} bytes")
    if not isinstance(ciphertext, bytes) or len(ciphertext) not in (
        64 + _TAG_SIZE,
        96 + _TAG_SIZE,
    ):
        raise ShareFormatError("identity.ciphertext", "wrong length")
    try:
        plaintext = AESGCM(_identity_key(share, salt)).decrypt(
            nonce, ciphertext, _associated_data(share, wallet_id, salt)
        )
    except InvalidTag:
        raise DecryptionError() from None
    identity = PartyIdentity(StaticKey.from_private_bytes(plaintext[:32]), plaintext[32:64])
    owner = Ed25519PrivateKey.from_private_bytes(plaintext[64:]) if len(plaintext) > 64 else None
    return identity, owner


@sdk_boundary
def make_device_backup(
    share: KeyShare,
    identity: PartyIdentity,
    *,
    wallet_id: str,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    owner_key: Ed25519PrivateKey | None = None,
    policy_set: PolicySet | None = None,
    backup_id: str | None = None,
    params: Argon2Params = DEFAULT_ARGON2_PARAMS,
    insecure_allow_weak_kdf: bool = False,
    random: Random = secrets.token_bytes,
) -> BackupBlob:
    """Encrypt a share and its party identity into one backup for the host.

    Arguments:
        share: the key share.
        identity: the party identity that signs with it.
        wallet_id: the wallet.
        passcode, key: exactly one: how ``client.storage.shares.make_backup`` encrypts the share.
        owner_key: also back up the wallet owner's key.
        policy_set: also back up the wallet's policy set (a version-2 backup).
        backup_id: as in ``make_backup`` (default: derived from the blob).
        params, insecure_allow_weak_kdf, random: as in ``make_backup``.

    Returns:
        The backup record whose blob is a device backup (module docstring).

    Raises:
        InvalidInput: not exactly one of passcode and key, or a bad argument.
    """
    share_backup = make_backup(
        share,
        wallet_id=wallet_id,
        passcode=passcode,
        key=key,
        backup_id="pending",  # replaced below, once the whole blob is known
        params=params,
        insecure_allow_weak_kdf=insecure_allow_weak_kdf,
        random=random,
    )
    sealed = seal_identity(identity, share, wallet_id=wallet_id, owner_key=owner_key, random=random)
    contents: dict[str, Any] = {
        "format": DEVICE_BACKUP_FORMAT,
        "version": 1,
        "share": share_backup.blob,
        "identity": sealed,
    }
    if policy_set is not None:
        if policy_set.wallet_id != wallet_id:
            raise InvalidInput("the policy set names another wallet")
        contents["version"] = DEVICE_BACKUP_VERSION
        contents["policy_set"] = _seal_policy_set(
            policy_set, share, wallet_id, sealed["salt"], random
        )
    blob = cbor2.dumps(contents)
    if backup_id is None:  # as make_backup: a retried upload of one blob is idempotent
        backup_id = "bk-" + hashlib.sha256(blob).hexdigest()[:32]
    return BackupBlob(wallet_id, backup_id, share.party_id, share.epoch, blob)


def _parse_device_backup(blob: bytes) -> dict[str, Any] | None:
    """The device-backup map, or None if ``blob`` is another (share) container."""
    if len(blob) > MAX_CONTAINER_BYTES:
        raise ShareFormatError("container", "too large")
    try:
        decoded = cbor2.loads(blob)
    except Exception:  # cbor2 raises several types; the share parser reports it better
        return None
    if not isinstance(decoded, dict) or decoded.get("format") != DEVICE_BACKUP_FORMAT:
        return None
    version = decoded.get("version")
    if version not in (1, DEVICE_BACKUP_VERSION):
        raise ShareFormatError("version", "unsupported device-backup version")
    expected = {"format", "version", "share", "identity"} | (
        {"policy_set"} if version == DEVICE_BACKUP_VERSION else set()
    )
    if set(decoded) != expected:
        raise ShareFormatError("device backup", f"expected {', '.join(sorted(expected))}")
    if not isinstance(decoded["share"], bytes):
        raise ShareFormatError("share", "expected a byte string")
    return decoded


@sdk_boundary
def is_device_backup(blob: bytes) -> bool:
    """True if ``blob`` is a device backup (share and identity), False for a share container.

    Raises:
        ShareFormatError: a device backup of an unknown version or shape.
    """
    return _parse_device_backup(blob) is not None


@sdk_boundary
def open_device_backup(
    backup: BackupBlob,
    *,
    public_key: bytes,
    epoch: int,
    party_id: int | None = None,
    passcode: Passcode | None = None,
    key: bytes | None = None,
    insecure_allow_weak_kdf: bool = False,
) -> RecoveredDevice:
    """Recover a share and its party identity from a device backup the host returned.

    The share goes through ``client.storage.shares.recover_share`` (the record, the
    container's metadata and the caller's expectations must all agree); the
    identity must then open under that share.

    Arguments:
        backup: the record from the host (untrusted).
        public_key, epoch, party_id, passcode, key, insecure_allow_weak_kdf:
            as in ``client.storage.shares.recover_share``.

    Returns:
        The share, the identity, and the owner key and policy set if they were backed up.

    Raises:
        ShareFormatError: not a device backup, or malformed.
        ShareMismatchError: not this wallet's, public key's, epoch's or party's.
        DecryptionError: wrong passcode or key, or tampered with.
        InvalidInput: not exactly one of passcode and key.
    """
    parsed = _parse_device_backup(backup.blob)
    if parsed is None:
        raise ShareFormatError("format", "not a device backup (a share without its identity)")
    share_record = BackupBlob(
        backup.wallet_id, backup.backup_id, backup.party_id, backup.epoch, parsed["share"]
    )
    share = recover_share(
        share_record,
        public_key=public_key,
        epoch=epoch,
        party_id=party_id,
        passcode=passcode,
        key=key,
        insecure_allow_weak_kdf=insecure_allow_weak_kdf,
    )
    identity, owner = open_identity(parsed["identity"], share, wallet_id=backup.wallet_id)
    if share.party_id != backup.party_id:  # recover_share checked it; keep the invariant explicit
        raise InternalError("recovered share is of another party than its record")
    policy_set = None
    if "policy_set" in parsed:  # open_identity checked the salt
        salt = parsed["identity"]["salt"]
        policy_set = _open_policy_set(parsed["policy_set"], share, backup.wallet_id, salt)
    return RecoveredDevice(backup.wallet_id, share, identity, owner, policy_set)
