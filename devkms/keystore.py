"""Master keys of the KMS stand-in, and the CiphertextBlobs they wrap.

Each KMS key is a random AES-256 master key. A data key (or any Encrypt
plaintext) is wrapped with AES-256-GCM; the blob names its key, so Decrypt
needs no KeyId, as with AWS. The associated data binds the key id and the
encryption context, so a blob opens only under the key and context it was
made with (AWS KMS Developer Guide, "Encryption context")::

    blob = version u8 (1) || key id (16-byte UUID) || nonce (12) || AES-GCM ciphertext || tag
    aad  = field(label) || version || key id || u32 count || (field(k) || field(v)) for sorted pairs
    field(x) = u32 len(x) || x

Keys live in memory, or in a JSON file written with mode 0600 and replaced
atomically on every change. The stand-in is for development and CI; its
master keys are not protected beyond file permissions.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    # Exceptions
    "KeyStoreError",
    "UnknownKeyError",
    "InvalidBlobError",
    # Types
    "KeyRecord",
    "KeyStore",
]

_BLOB_VERSION: Final = 1
_BLOB_LABEL: Final = b"shardkeep/devkms/ciphertext-blob"
_NONCE_SIZE: Final = 12
_MASTER_KEY_SIZE: Final = 32
_U32: Final = struct.Struct(">I")
_STATE_FORMAT: Final = "shardkeep-devkms-keys/1"


class KeyStoreError(Exception):
    """Root of the key store's errors (the service maps them to KMS error types)."""


class UnknownKeyError(KeyStoreError):
    """No key has this id."""


class InvalidBlobError(KeyStoreError):
    """A CiphertextBlob is malformed, or does not open under its key and context."""


@dataclass(frozen=True)
class KeyRecord:
    """One KMS key: id, creation time, description, CreateKey policy, master key."""

    key_id: str
    created: float
    description: str
    policy: str
    """The Policy given to CreateKey ("" if none); kept so it survives restarts."""
    material: bytes = field(repr=False)


def _field(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _context_bytes(context: Mapping[str, str]) -> bytes:
    # Canonical: sorted by key, every string length-prefixed, so distinct
    # contexts never encode alike.
    pairs = sorted(context.items())
    return _U32.pack(len(pairs)) + b"".join(
        _field(k.encode()) + _field(v.encode()) for k, v in pairs
    )


def _aad(key_uuid: bytes, context: Mapping[str, str]) -> bytes:
    return _field(_BLOB_LABEL) + bytes([_BLOB_VERSION]) + key_uuid + _context_bytes(context)


class KeyStore:
    """AES-256 master keys by key id; thread-safe.

    Arguments:
        path: a JSON file to load from and persist to (mode 0600); ``None``
            keeps keys in memory only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        if path is not None and path.exists():
            self._keys = _load(path)

    def create(
        self, *, key_id: str | None = None, description: str = "", policy: str = ""
    ) -> KeyRecord:
        """Create a key (a random UUID id unless given) and persist it.

        Raises:
            KeyStoreError: ``key_id`` is not a UUID or already exists.
        """
        key_id = str(uuid.uuid4()) if key_id is None else _canonical_id(key_id)
        record = KeyRecord(key_id, time.time(), description, policy, os.urandom(_MASTER_KEY_SIZE))
        with self._lock:
            if key_id in self._keys:
                raise KeyStoreError(f"key {key_id} already exists")
            self._keys[key_id] = record
            self._save()
        return record

    def ensure(self, key_id: str, *, description: str = "") -> KeyRecord:
        """Return key ``key_id``, creating it if it does not exist yet."""
        key_id = _canonical_id(key_id)
        with self._lock:
            record = self._keys.get(key_id)
        return record if record is not None else self.create(key_id=key_id, description=description)

    def get(self, key_id: str) -> KeyRecord:
        """Return a key by its UUID id.

        Raises:
            UnknownKeyError: no such key.
        """
        with self._lock:
            record = self._keys.get(key_id)
        if record is None:
            raise UnknownKeyError(f"key {key_id!r} does not exist")
        return record

    def wrap(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt ``plaintext`` under key ``key_id``, bound to ``context``.

        Returns:
            The CiphertextBlob (layout in the module docstring).
        """
        record = self.get(key_id)
        key_uuid = uuid.UUID(record.key_id).bytes
        nonce = os.urandom(_NONCE_SIZE)
        sealed = AESGCM(record.material).encrypt(nonce, plaintext, _aad(key_uuid, context))
        return bytes([_BLOB_VERSION]) + key_uuid + nonce + sealed

    def blob_key_id(self, blob: bytes) -> str:
        """The id of the key a CiphertextBlob names (not yet authenticated).

        Raises:
            InvalidBlobError: the blob is malformed.
        """
        if len(blob) < 1 + 16 + _NONCE_SIZE + 16 or blob[0] != _BLOB_VERSION:
            raise InvalidBlobError("the ciphertext blob is malformed")
        return str(uuid.UUID(bytes=blob[1:17]))

    def unwrap(self, blob: bytes, context: Mapping[str, str]) -> tuple[str, bytes]:
        """Decrypt a CiphertextBlob with the key it names, checking ``context``.

        Returns:
            ``(key_id, plaintext)``.

        Raises:
            UnknownKeyError: the blob names an unknown key.
            InvalidBlobError: malformed, tampered, or a different context.
        """
        key_id = self.blob_key_id(blob)
        record = self.get(key_id)
        key_uuid, nonce, sealed = blob[1:17], blob[17 : 17 + _NONCE_SIZE], blob[17 + _NONCE_SIZE :]
        try:
            plaintext = AESGCM(record.material).decrypt(nonce, sealed, _aad(key_uuid, context))
        except InvalidTag as e:
            raise InvalidBlobError("the ciphertext blob does not decrypt") from e
        return key_id, plaintext

    def _save(self) -> None:
        # Called with the lock held. Write a 0600 temporary file next to the
        # target and rename it over, so a crash never leaves a torn file.
        if self._path is None:
            return
        state = {
            "format": _STATE_FORMAT,
            "keys": [
                {
                    "key_id": r.key_id,
                    "created": r.created,
                    "description": r.description,
                    "policy": r.policy,
                    "material": base64.b64encode(r.material).decode(),
                }
                for r in self._keys.values()
            ],
        }
        directory = self._path.parent
        fd, tmp = tempfile.mkstemp(prefix=".devkms-", dir=directory)  # mkstemp creates 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _canonical_id(key_id: str) -> str:
    try:
        return str(uuid.UUID(key_id))
    except (ValueError, TypeError, AttributeError) as e:
        raise KeyStoreError(f"key id {key_id!r} is not a UUID") from e


def _load(path: Path) -> dict[str, KeyRecord]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {mode:o}); expected 0600")
    try:
        state = json.loads(path.read_text())
        if state.get("format") != _STATE_FORMAT:
            raise KeyStoreError(f"{path} is not a devkms key file")
        keys: dict[str, KeyRecord] = {}
        for entry in state["keys"]:
            material = base64.b64decode(entry["material"], validate=True)
            if len(material) != _MASTER_KEY_SIZE:
                raise KeyStoreError(f"{path}: key {entry['key_id']} has bad material")
            key_id = _canonical_id(entry["key_id"])
            keys[key_id] = KeyRecord(
                key_id,
                float(entry["created"]),
                str(entry["description"]),
                str(entry.get("policy", "")),
                material,
            )
        return keys
    except (ValueError, KeyError, TypeError) as e:
        raise KeyStoreError(f"{path} is not a valid devkms key file") from e
