"""Sealing of server shares inside the enclave (docs/architecture.md, "The enclave boundary").

A server share leaves the enclave only as a *sealed blob*: AES-256-GCM
(NIST SP 800-38D) under a data key that KMS generates for this one seal and
releases only to an attested enclave (``enclave.kms``). The host stores the
blob and the KMS-encrypted data key; it can read neither.

The host could still try to hand the enclave the wrong blob: another wallet's
share, another party's share, another scheme's, or an older epoch's (a
rollback after a refresh or reshare). So every blob is bound to a
:class:`SealBinding` (wallet id, share index, scheme, epoch) three times over:

1. the AES-GCM associated data is a canonical, versioned, length-prefixed
   encoding of the binding, so a blob opens only under the binding it was
   sealed for;
2. the same binding travels in clear in the blob's header, so a mismatch is
   reported by field (``SealError`` reason ``binding-mismatch``) before any
   decryption; editing the header to match does not help, because step 1
   authenticates the *expected* binding, not the header;
3. :class:`ShareSealer` passes the binding to KMS as the encryption context,
   so KMS refuses to decrypt a data key under any other binding.

KMS key rotation (deploy/kms/README.md, "Re-seal under a new key"): a
:class:`ShareSealer` seals with one KMS key and opens data keys of any key in
its decrypt list. Each Decrypt names the key it tries (``KeyId``), so KMS
itself refuses a blob of any other key (``IncorrectKeyException``) and a
host cannot slip in a data key from a KMS key outside the list (one whose
policy would let it decrypt the data key itself). A share that opened under
an older key is reported as such (:attr:`UnsealedShare.stale`), so the
enclave can re-seal it under the current key.

Blob layout (version 1), all integers big-endian::

    version u8 = 1 || u32 len(binding) || binding || nonce (12) || ciphertext || tag (16)

    binding = field(wallet_id UTF-8) || field(u32 share_index)
              || field(scheme ASCII) || field(u64 epoch)
    field(x) = u32 len(x) || x
    associated data = field(SEAL_AAD_LABEL) || version u8 || binding

Error policy: anything wrong with a blob raises :class:`SealError` whose
``reason`` names the failed check; messages name fields, never values, and
never carry key or share bytes. Bad arguments raise ``InputError``.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, Literal, NamedTuple, NewType, Protocol, cast, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.errors import WrongShare
from enclave.kms import KmsAccessDeniedError, KmsError, KmsInvalidCiphertextError
from tss.errors import InputError, InternalError
from tss.tags import SEAL_AAD_LABEL

__all__ = [
    # Functions
    "seal",
    "unseal",
    "check_binding",
    "wipe",
    # Exceptions
    "SealError",
    # Types
    "DataKeyProvider",
    "SealBinding",
    "SealReason",
    "SealedBlob",
    "SealedShare",
    "Scheme",
    "ShareSealer",
    "UnsealedShare",
    # Constants
    "DATA_KEY_SIZE",
    "NONCE_SIZE",
    "SEAL_VERSION",
]

SealedBlob = NewType("SealedBlob", bytes)
"""A sealed share: the layout in the module docstring."""

Scheme = Literal["ecdsa-secp256k1", "bip340", "ed25519", "enclave-identity"]
"""The signature schemes (``tss.local`` spelling), or
"enclave-identity" for the enclave's own party keys, sealed the same way."""

SealReason = Literal[
    "malformed",  # the blob does not parse (length, framing, field sizes)
    "unsupported-version",  # the blob's version byte is not one we read
    "binding-mismatch",  # the header's binding differs from the expected one
    "authentication",  # AES-GCM rejected the blob under the expected binding and data key
    "data-key",  # KMS would not decrypt the data key under the expected binding
]

SEAL_VERSION: Final = 1
DATA_KEY_SIZE: Final = 32  # AES-256
NONCE_SIZE: Final = 12  # SP 800-38D §8.2: 96-bit IVs; random, and each data key seals once
_TAG_SIZE: Final = 16

_MAX_WALLET_ID_SIZE: Final = 256
_MAX_SHARE_INDEX: Final = 2**32 - 1
_MAX_EPOCH: Final = 2**64 - 1
_MAX_PLAINTEXT_SIZE: Final = 16 * 2**20  # far above any key share; rejects absurd inputs
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_SCHEMES: Final[frozenset[str]] = frozenset(get_args(Scheme))


class SealError(WrongShare):
    """A sealed share was refused; ``reason`` names the check that failed.

    A ``WrongShare``: the host supplied a share that is stale, tampered with
    or not the one requested.

    Attributes:
        reason: a :data:`SealReason`.
    """

    def __init__(self, reason: SealReason, message: str) -> None:
        self.reason: SealReason = reason
        super().__init__(message)


def _field(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


@dataclass(frozen=True)
class SealBinding:
    """What a sealed share is for: authenticated with it, checked on unseal.

    Attributes:
        wallet_id: the wallet's id (1-256 bytes of UTF-8).
        share_index: the server share's 0-based participant index in the keyring.
        scheme: the keyring's signature scheme.
        epoch: the keyring's epoch; it increases with every refresh/reshare,
            so an older blob no longer opens (0 .. 2**64-1).
    """

    wallet_id: str
    share_index: int
    scheme: Scheme
    epoch: int

    def __post_init__(self) -> None:
        if not isinstance(self.wallet_id, str):
            raise InputError("wallet_id must be a string")
        if not 1 <= len(self.wallet_id.encode()) <= _MAX_WALLET_ID_SIZE:
            raise InputError(f"wallet_id must be 1..{_MAX_WALLET_ID_SIZE} bytes of UTF-8")
        if type(self.share_index) is not int or not 0 <= self.share_index <= _MAX_SHARE_INDEX:
            raise InputError(f"share_index must be an integer in 0..{_MAX_SHARE_INDEX}")
        if self.scheme not in _SCHEMES:
            raise InputError(f"scheme must be one of {sorted(_SCHEMES)}")
        if type(self.epoch) is not int or not 0 <= self.epoch <= _MAX_EPOCH:
            raise InputError("epoch must be an integer in 0..2**64-1")

    def encode(self) -> bytes:
        """The canonical encoding of the binding (the ``binding`` of the blob layout)."""
        return b"".join(
            (
                _field(self.wallet_id.encode()),
                _field(_U32.pack(self.share_index)),
                _field(self.scheme.encode()),
                _field(_U64.pack(self.epoch)),
            )
        )

    def encryption_context(self) -> dict[str, str]:
        """The binding as a KMS encryption context (AWS KMS "Encryption context").

        KMS authenticates the context with the data key, so Decrypt fails
        unless the same binding is presented.

        Returns:
            A fresh dict of four ``shardkeep:…`` string pairs.
        """
        return {
            "shardkeep:wallet-id": self.wallet_id,
            "shardkeep:share-index": str(self.share_index),
            "shardkeep:scheme": self.scheme,
            "shardkeep:epoch": str(self.epoch),
        }


def _associated_data(binding: SealBinding) -> bytes:
    return _field(SEAL_AAD_LABEL) + bytes([SEAL_VERSION]) + binding.encode()


class _Reader:
    """Reads length-prefixed fields; any framing error is ``malformed``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise SealError("malformed", "sealed share is truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def field(self) -> bytes:
        (length,) = _U32.unpack(self.take(_U32.size))
        return self.take(length)

    def rest(self) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out


def _decode_binding(encoded: bytes) -> SealBinding:
    reader = _Reader(encoded)
    wallet_id = reader.field()
    share_index = reader.field()
    scheme = reader.field()
    epoch = reader.field()
    if reader.rest():
        raise SealError("malformed", "sealed share binding has trailing bytes")
    if len(share_index) != _U32.size or len(epoch) != _U64.size:
        raise SealError("malformed", "sealed share binding has a bad integer field")
    try:
        scheme_text = scheme.decode("ascii")
        if scheme_text not in _SCHEMES:
            raise SealError("malformed", "sealed share binding names an unknown scheme")
        return SealBinding(
            wallet_id=wallet_id.decode(),
            share_index=_U32.unpack(share_index)[0],
            scheme=cast(Scheme, scheme_text),  # checked against _SCHEMES above
            epoch=_U64.unpack(epoch)[0],
        )
    except (UnicodeDecodeError, InputError) as e:
        raise SealError("malformed", "sealed share binding does not decode") from e


class _Parsed(NamedTuple):
    binding: SealBinding
    nonce: bytes
    ciphertext: bytes


def _parse(blob: bytes) -> _Parsed:
    if not isinstance(blob, bytes | bytearray):
        raise InputError("a sealed share must be bytes")
    reader = _Reader(bytes(blob))
    version = reader.take(1)[0]
    if version != SEAL_VERSION:
        raise SealError("unsupported-version", f"sealed share version {version} is not supported")
    binding = _decode_binding(reader.field())
    nonce = reader.take(NONCE_SIZE)
    ciphertext = reader.rest()
    if len(ciphertext) < _TAG_SIZE:
        raise SealError("malformed", "sealed share is truncated")
    return _Parsed(binding, nonce, ciphertext)


def _check_data_key(data_key: bytes | bytearray) -> None:
    if not isinstance(data_key, bytes | bytearray) or len(data_key) != DATA_KEY_SIZE:
        raise InputError(f"data_key must be {DATA_KEY_SIZE} bytes")


def _check_binding_type(binding: object) -> None:
    if not isinstance(binding, SealBinding):
        raise InputError("binding must be a SealBinding")


def _compare_bindings(stored: SealBinding, expected: SealBinding) -> None:
    # Field by field, to name the one that differs; none is secret.
    for f in fields(SealBinding):
        if getattr(stored, f.name) != getattr(expected, f.name):
            raise SealError(
                "binding-mismatch",
                f"sealed share is bound to a different {f.name} than expected",
            )
    # Equal fields must encode alike, or the AAD would not match either.
    if not hmac.compare_digest(stored.encode(), expected.encode()):
        raise InternalError("bindings with equal fields encode differently")


### Public API


def seal(
    plaintext: bytes,
    *,
    data_key: bytes | bytearray,
    binding: SealBinding,
    nonce: bytes | None = None,
) -> SealedBlob:
    """Seal a server share with AES-256-GCM, bound to ``binding``.

    Arguments:
        plaintext: the serialised key share (at most 16 MiB).
        data_key: the 32-byte AES-256 data key; the caller wipes it.
        binding: what the share is for (authenticated as associated data).
        nonce: the 12-byte GCM nonce; ``None`` draws one from ``os.urandom``.
            Never reuse a nonce under the same data key.

    Returns:
        The sealed blob (module docstring layout): 1 + 4 + len(binding) + 12
        + len(plaintext) + 16 bytes.

    Raises:
        InputError: a bad argument (sizes, types).
    """
    _check_data_key(data_key)
    _check_binding_type(binding)
    if not isinstance(plaintext, bytes | bytearray) or len(plaintext) > _MAX_PLAINTEXT_SIZE:
        raise InputError(f"plaintext must be bytes of at most {_MAX_PLAINTEXT_SIZE} bytes")
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise InputError(f"nonce must be {NONCE_SIZE} bytes")
    ciphertext = AESGCM(data_key).encrypt(nonce, bytes(plaintext), _associated_data(binding))
    header = bytes([SEAL_VERSION]) + _field(binding.encode())
    return SealedBlob(header + nonce + ciphertext)


def check_binding(blob: bytes, binding: SealBinding) -> None:
    """Check a blob's clear header against the expected binding, without any key.

    A cheap early refusal (before asking KMS for a data key) that names the
    field that differs. It authenticates nothing: :func:`unseal` does that.

    Arguments:
        blob: a sealed share.
        binding: the binding the caller expects.

    Raises:
        SealError: ``malformed``, ``unsupported-version`` or
            ``binding-mismatch`` (naming the first differing field).
        InputError: ``binding`` is not a :class:`SealBinding`.
    """
    _check_binding_type(binding)
    _compare_bindings(_parse(blob).binding, binding)


def unseal(blob: bytes, *, data_key: bytes | bytearray, binding: SealBinding) -> bytes:
    """Open a sealed share, authenticating it against the expected binding.

    Arguments:
        blob: a sealed share from :func:`seal`.
        data_key: the 32-byte data key it was sealed under; the caller wipes it.
        binding: the binding the caller expects (not the one in the header).

    Returns:
        The plaintext share.

    Raises:
        SealError: ``malformed``, ``unsupported-version``, ``binding-mismatch``
            or ``authentication`` (wrong data key, or any tampered byte).
        InputError: a bad argument.
    """
    _check_data_key(data_key)
    _check_binding_type(binding)
    parsed = _parse(blob)
    _compare_bindings(parsed.binding, binding)
    try:
        return AESGCM(data_key).decrypt(parsed.nonce, parsed.ciphertext, _associated_data(binding))
    except InvalidTag as e:
        raise SealError(
            "authentication", "sealed share does not authenticate under the expected binding"
        ) from e


def wipe(buffer: bytearray) -> None:
    """Overwrite a secret buffer with zeros in place.

    Python may still hold copies made by libraries (e.g. ``cryptography``'s
    key schedule); this clears the copy we own.
    """
    buffer[:] = bytes(len(buffer))


### KMS-backed sealing


class DataKeyProvider(Protocol):
    """What :class:`ShareSealer` needs from KMS; ``enclave.kms.EnclaveKmsClient``."""

    def generate_data_key(
        self, key_id: str, *, encryption_context: Mapping[str, str] | None = None
    ) -> tuple[bytearray, bytes]:
        """Return (plaintext data key, KMS CiphertextBlob)."""
        ...

    def decrypt(
        self,
        ciphertext_blob: bytes,
        *,
        key_id: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> bytearray:
        """Return the plaintext data key of a CiphertextBlob."""
        ...


class SealedShare(NamedTuple):
    """What the host stores for one server share; both parts are opaque to it."""

    encrypted_data_key: bytes
    """The KMS CiphertextBlob of the data key."""
    ciphertext: SealedBlob
    """The sealed share (:func:`seal`)."""


# KMS refusals that concern one key (not the connection): with a decrypt
# list, Decrypt goes on to the next key after one of these (AWS KMS API
# Reference, Decrypt, "Errors").
_NEXT_KEY_CODES: Final[frozenset[str]] = frozenset(
    {"NotFoundException", "DisabledException", "KMSInvalidStateException"}
)


def _tries_next_key(error: KmsError) -> bool:
    return isinstance(error, KmsInvalidCiphertextError | KmsAccessDeniedError) or (
        error.code in _NEXT_KEY_CODES
    )


@dataclass(frozen=True)
class UnsealedShare:
    """An opened share and the KMS key whose data key opened it.

    Attributes:
        plaintext: the share (never printed).
        key_id: the decrypt-list entry KMS accepted for the data key.
        stale: sealed under an older key than the current sealing key;
            re-seal it (:meth:`ShareSealer.seal`) to migrate it.
    """

    plaintext: bytes = field(repr=False)
    key_id: str
    stale: bool


class ShareSealer:
    """Seals server shares under fresh KMS data keys (docs/architecture.md, "The enclave boundary").

    Each :meth:`seal` asks KMS for a new data key of the current sealing key
    (GenerateDataKey with an attestation-document Recipient, so the key
    reaches only this enclave), uses it once and wipes it. :meth:`unseal`
    asks KMS to decrypt the data key, again to the enclave only, under the
    sealing key or any older key still in the decrypt list. Both bind the
    :class:`SealBinding` as the KMS encryption context and as AES-GCM
    associated data.
    """

    def __init__(
        self, kms: DataKeyProvider, key_id: str, *, decrypt_key_ids: Sequence[str] = ()
    ) -> None:
        """Seal with data keys of one KMS key; open those of it and of older ones.

        Arguments:
            kms: the enclave's KMS client.
            key_id: the KMS key (id, ARN or alias) whose data keys seal shares.
            decrypt_key_ids: further KMS keys whose data keys may open shares
                (older sealing keys during a rotation). The sealing key is
                always accepted; repeats are ignored.

        Raises:
            InputError: an empty key id.
        """
        keys = [key_id, *decrypt_key_ids]
        if not all(isinstance(k, str) and k for k in keys):
            raise InputError("KMS key ids must be non-empty strings")
        self._kms = kms
        self._key_id = key_id
        # The sealing key first: current shares open with one KMS call.
        self._decrypt_key_ids = tuple(dict.fromkeys(keys))

    @property
    def key_id(self) -> str:
        """The KMS key new shares are sealed under."""
        return self._key_id

    @property
    def decrypt_key_ids(self) -> tuple[str, ...]:
        """The KMS keys whose data keys may open shares, in the order tried."""
        return self._decrypt_key_ids

    def seal(self, share: bytes, binding: SealBinding) -> SealedShare:
        """Seal a server share under a fresh data key of the sealing key.

        Arguments:
            share: the serialised key share.
            binding: what the share is for.

        Returns:
            The encrypted data key and the sealed blob, for the host to store.

        Raises:
            KmsError: KMS refused or failed (``enclave.kms``).
            InputError: a bad argument.
            InternalError: the blob does not open again (self-check).
        """
        _check_binding_type(binding)
        data_key, encrypted_data_key = self._kms.generate_data_key(
            self._key_id, encryption_context=binding.encryption_context()
        )
        try:
            blob = seal(share, data_key=data_key, binding=binding)
            # Self-check before the only copy leaves the enclave.
            if not hmac.compare_digest(
                unseal(blob, data_key=data_key, binding=binding), bytes(share)
            ):
                raise InternalError("a freshly sealed share does not open to itself")
        finally:
            wipe(data_key)
        return SealedShare(encrypted_data_key, blob)

    def unseal(self, sealed: SealedShare, binding: SealBinding) -> bytes:
        """Open a sealed share the host returned (:meth:`unseal_with_key`, plaintext only).

        Arguments:
            sealed: the stored encrypted data key and blob.
            binding: the binding the enclave expects (from its own request
                and keyring metadata, never from the host's say-so).

        Returns:
            The plaintext share.

        Raises:
            SealError: as :meth:`unseal_with_key`.
            KmsError: as :meth:`unseal_with_key`.
        """
        return self.unseal_with_key(sealed, binding).plaintext

    def unseal_with_key(self, sealed: SealedShare, binding: SealBinding) -> UnsealedShare:
        """Open a sealed share and report which KMS key's data key opened it.

        Decrypt names each key of the decrypt list in turn (``KeyId``), the
        sealing key first, so KMS opens the data key only under a listed key.
        A refusal about the key (wrong key, blob or context, access denied,
        disabled or unknown key) moves on to the next key; a transport or
        response failure ends the search.

        Arguments:
            sealed: the stored encrypted data key and blob.
            binding: the binding the enclave expects (from its own request
                and keyring metadata, never from the host's say-so).

        Returns:
            The plaintext share, the key, and whether it is stale (sealed
            under an older key than the current one).

        Raises:
            SealError: a failed check (``binding-mismatch`` before contacting
                KMS; ``data-key`` when no listed key decrypts the encrypted
                data key under this binding; ``authentication``; ``malformed``).
            KmsError: KMS refused or failed for another reason (e.g. access
                denied for every listed key: the key policy lacks this image).
        """
        encrypted_data_key, blob = sealed
        check_binding(blob, binding)
        refusals: list[KmsError] = []
        for key_id in self._decrypt_key_ids:
            try:
                data_key = self._kms.decrypt(
                    encrypted_data_key,
                    key_id=key_id,
                    encryption_context=binding.encryption_context(),
                )
            except KmsError as e:
                if not _tries_next_key(e):
                    raise
                refusals.append(e)
                continue
            try:
                plaintext = unseal(blob, data_key=data_key, binding=binding)
            finally:
                wipe(data_key)
            return UnsealedShare(plaintext, key_id, stale=key_id != self._key_id)
        # Report the most telling refusal: one that is not about the blob
        # (e.g. AccessDenied: the key policy does not list this image).
        other = [e for e in refusals if not isinstance(e, KmsInvalidCiphertextError)]
        if other:
            raise other[0]
        raise SealError(
            "data-key", "KMS does not decrypt the data key under the expected binding"
        ) from (refusals[0] if refusals else None)
