"""Errors of client share storage (``client.storage.shares``).

Policy, following pyca/cryptography's recipes:

- everything that can go wrong when a passcode or key meets a ciphertext (wrong
  passcode, wrong key, any authenticated byte changed) is one opaque
  :class:`DecryptionError`, as Fernet collapses every failure into
  ``InvalidToken``: telling the causes apart would help nobody but an attacker;
- a container that cannot even be read (bad CBOR, a missing or mistyped field,
  an unknown version, KDF parameters out of bounds, a corrupt armour) raises a
  :class:`ShareFormatError` whose ``field`` names the offending field;
- a share that decrypts fine but is not the one the caller expects raises
  :class:`ShareMismatchError` naming the field that differs.

Messages name fields, never values: no passcode, key or share byte ever
reaches an exception. Every one is a ``client.errors.WalletError`` with its
stable ``error_code``.
"""

from __future__ import annotations

from client.errors import WalletError
from tss.errors import InvalidEncodingError

__all__ = [
    "StorageError",
    "DecryptionError",
    "ShareFormatError",
    "UnsupportedVersionError",
    "KdfParamsError",
    "ArmourError",
    "ShareMismatchError",
    "ShareFileExistsError",
]


class StorageError(WalletError):
    """Root of the share-storage errors."""

    error_code = "storage"


class DecryptionError(StorageError):
    """Wrong passcode or key, or the container was tampered with (deliberately opaque)."""

    error_code = "decryption_failed"

    def __init__(self) -> None:
        super().__init__("cannot decrypt the share: wrong passcode or key, or a damaged container")


class ShareFormatError(StorageError, InvalidEncodingError):
    """The bytes are not a well-formed share container; ``field`` names the bad field."""

    error_code = "share_format"

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"share container field {field!r}: {problem}")


class UnsupportedVersionError(ShareFormatError):
    """The container's format version is not one this code reads."""

    error_code = "unsupported_version"


class KdfParamsError(ShareFormatError):
    """The key-derivation parameters are too weak, or too costly to be honest.

    Raised before any key derivation runs, so a hostile file cannot make the
    reader spend unbounded memory or time.
    """

    error_code = "kdf_params"


class ArmourError(ShareFormatError):
    """An armoured (base64 text) share is damaged: header, lines, base64 or checksum."""

    error_code = "armour"


class ShareMismatchError(StorageError):
    """A share is valid but not the one expected (wallet, party, public key or epoch)."""

    error_code = "share_mismatch"

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"the share's {field} is not the expected one")


class ShareFileExistsError(StorageError, FileExistsError):
    """A share file already holds another share (or unreadable data); pass ``overwrite=True``."""

    error_code = "share_file_exists"
