"""The KMS operations of the stand-in, free of HTTP (``devkms.server`` carries them).

Each operation takes the decoded JSON request of the AWS KMS API (2014-11-01)
and returns the JSON response, blobs base64-encoded, or raises
:class:`KmsFault` with an AWS error type (KMS API Reference, "Common Errors"
and each operation's "Errors"). Supported: CreateKey, DescribeKey,
GenerateDataKey, Encrypt, Decrypt.

Release rule (docs/architecture.md, "The enclave boundary"): GenerateDataKey and Decrypt return
``Plaintext`` only for a key without attestation conditions and a request
without ``Recipient``. With a ``Recipient``, the attestation document must
verify and satisfy the key's PCR conditions, and the response carries only
``CiphertextForRecipient`` (CMS EnvelopedData to the document's RSA key). A
key with conditions refuses requests without a ``Recipient``
(AccessDeniedException), as a key policy with ``kms:RecipientAttestation``
conditions does.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa

from devkms.envelope import envelope_for_recipient
from devkms.keystore import InvalidBlobError, KeyStore, KeyStoreError, UnknownKeyError
from devkms.policy import (
    KeyPolicy,
    Policy,
    PolicyError,
    RecipientRefused,
    parse_conditions,
    verify_recipient,
)

__all__ = [
    # Exceptions
    "KmsFault",
    # Types
    "KmsService",
    # Constants
    "OPERATIONS",
]

OPERATIONS: Final = ("CreateKey", "DescribeKey", "GenerateDataKey", "Encrypt", "Decrypt")

_KEY_ENCRYPTION_ALGORITHM: Final = "RSAES_OAEP_SHA_256"
_SYMMETRIC: Final = "SYMMETRIC_DEFAULT"
_KEY_SPEC_BYTES: Final = {"AES_256": 32, "AES_128": 16}
_MAX_DATA_KEY_BYTES: Final = 1024  # GenerateDataKey NumberOfBytes: 1..1024
_MAX_ENCRYPT_BYTES: Final = 4096  # Encrypt Plaintext: 1..4096
_MAX_BLOB_BYTES: Final = 6144  # CiphertextBlob: 1..6144
_MAX_DOCUMENT_BYTES: Final = 262144  # RecipientInfo.AttestationDocument

_log = logging.getLogger("devkms")


class KmsFault(Exception):
    """An AWS KMS error response: ``{"__type": type, "message": message}``.

    Attributes:
        error_type: the AWS error code, e.g. ``AccessDeniedException``.
        status: the HTTP status (400 for the caller's faults, 500 for ours).
    """

    def __init__(self, error_type: str, message: str, *, status: int = 400) -> None:
        self.error_type = error_type
        self.status = status
        super().__init__(message)


def _validation(message: str) -> KmsFault:
    return KmsFault("ValidationException", message)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _blob(request: Mapping[str, object], name: str, *, limit: int) -> bytes:
    value = request.get(name)
    if not isinstance(value, str):
        raise _validation(f"{name} is required and must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KmsFault("SerializationException", f"{name} is not valid base64") from e
    if not 1 <= len(data) <= limit:
        raise _validation(f"{name} must be 1..{limit} bytes")
    return data


def _context(request: Mapping[str, object]) -> dict[str, str]:
    context = request.get("EncryptionContext", {})
    if not isinstance(context, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise _validation("EncryptionContext must map strings to strings")
    return dict(context)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KmsService:
    """The stand-in's operations over a :class:`KeyStore` and a :class:`Policy`.

    Keys named in the policy are created on start if the store lacks them.
    Thread-safe (the store locks; everything else is read-only).
    """

    def __init__(
        self,
        store: KeyStore,
        policy: Policy,
        *,
        region: str = "us-east-1",
        account_id: str = "111122223333",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Serve the keys of ``store`` under ``policy``.

        Arguments:
            store: the master keys.
            policy: trust anchor and key policies.
            region: the region in key ARNs.
            account_id: the account in key ARNs.
            clock: the current time (timezone-aware); tests may pass a fixed one.

        Raises:
            PolicyError: a key id in the policy is not a UUID.
        """
        self._store = store
        self._policy = policy
        self._region = region
        self._account_id = account_id
        self._clock = clock
        self._aliases: dict[str, str] = {}
        for key_id, key_policy in policy.keys.items():
            try:
                record = store.ensure(key_id, description=key_policy.description)
            except KeyStoreError as e:
                raise PolicyError(str(e)) from e
            if key_policy.alias is not None:
                self._aliases[key_policy.alias] = record.key_id

    def handle(self, operation: str, request: Mapping[str, object]) -> dict[str, object]:
        """Run one operation.

        Arguments:
            operation: e.g. ``"GenerateDataKey"`` (from ``X-Amz-Target``).
            request: the decoded JSON body.

        Returns:
            The JSON response object.

        Raises:
            KmsFault: the AWS error to return.
        """
        handler = {
            "CreateKey": self._create_key,
            "DescribeKey": self._describe_key,
            "GenerateDataKey": self._generate_data_key,
            "Encrypt": self._encrypt,
            "Decrypt": self._decrypt,
        }.get(operation)
        if handler is None:
            raise KmsFault("UnknownOperationException", f"unsupported operation {operation!r}")
        if request.get("DryRun") is True:
            raise KmsFault("DryRunOperationException", "the request would have succeeded")
        return handler(request)

    ### Keys

    def _arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self._region}:{self._account_id}:key/{key_id}"

    def _resolve(self, request: Mapping[str, object]) -> str:
        """KeyId as key id, key ARN, alias name or alias ARN -> key id."""
        name = request.get("KeyId")
        if not isinstance(name, str) or not name:
            raise _validation("KeyId is required")
        prefix = f"arn:aws:kms:{self._region}:{self._account_id}:"
        reference = name.removeprefix(prefix)
        if reference.startswith("alias/"):
            key_id = self._aliases.get(reference)
            if key_id is None:
                raise KmsFault("NotFoundException", f"Alias {prefix}{reference} is not found.")
            return key_id
        reference = reference.removeprefix("key/") if name.startswith(prefix) else reference
        try:
            key_id = str(uuid.UUID(reference))
            self._store.get(key_id)
        except (ValueError, UnknownKeyError) as e:
            raise KmsFault("NotFoundException", f"Key '{name}' does not exist") from e
        return key_id

    def _key_policy(self, key_id: str) -> KeyPolicy:
        configured = self._policy.keys.get(key_id)
        if configured is not None:
            return configured
        record = self._store.get(key_id)
        if not record.policy:
            return KeyPolicy(record.description)
        try:
            conditions = json.loads(record.policy).get("conditions", {})
            return KeyPolicy(record.description, None, parse_conditions(conditions))
        except (ValueError, AttributeError, PolicyError) as e:
            # Stored policies were validated at CreateKey; refuse rather than
            # fall open if one is somehow unreadable.
            raise KmsFault("KMSInternalException", "key policy unreadable", status=500) from e

    def _metadata(self, key_id: str) -> dict[str, object]:
        record = self._store.get(key_id)
        return {
            "AWSAccountId": self._account_id,
            "KeyId": key_id,
            "Arn": self._arn(key_id),
            "CreationDate": record.created,
            "Enabled": True,
            "Description": record.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": "Enabled",
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": _SYMMETRIC,
            "KeySpec": _SYMMETRIC,
            "EncryptionAlgorithms": [_SYMMETRIC],
            "MultiRegion": False,
        }

    ### Recipient

    def _authorize(self, key_id: str, request: Mapping[str, object]) -> rsa.RSAPublicKey | None:
        """Apply the key policy; return the recipient's key, or None for plaintext."""
        key_policy = self._key_policy(key_id)
        recipient = request.get("Recipient")
        if recipient is None:
            if key_policy.requires_attestation:
                raise KmsFault(
                    "AccessDeniedException",
                    f"the key policy of {self._arn(key_id)} requires a Recipient "
                    "with an attestation document",
                )
            return None
        if not isinstance(recipient, Mapping):
            raise _validation("Recipient must be an object")
        algorithm = recipient.get("KeyEncryptionAlgorithm", _KEY_ENCRYPTION_ALGORITHM)
        if algorithm != _KEY_ENCRYPTION_ALGORITHM:
            raise _validation(f"KeyEncryptionAlgorithm must be {_KEY_ENCRYPTION_ALGORITHM}")
        document = _blob(recipient, "AttestationDocument", limit=_MAX_DOCUMENT_BYTES)
        try:
            return verify_recipient(
                document, policy=self._policy, key=key_policy, now=self._clock()
            )
        except RecipientRefused as e:
            error = "ValidationException" if e.invalid_request else "AccessDeniedException"
            raise KmsFault(error, str(e)) from e

    @staticmethod
    def _release(secret: bytes, recipient: rsa.RSAPublicKey | None) -> dict[str, object]:
        if recipient is None:
            return {"Plaintext": _b64(secret)}
        return {"CiphertextForRecipient": _b64(envelope_for_recipient(secret, recipient))}

    ### Operations

    def _create_key(self, request: Mapping[str, object]) -> dict[str, object]:
        for name, allowed in (("KeySpec", _SYMMETRIC), ("CustomerMasterKeySpec", _SYMMETRIC)):
            if request.get(name, allowed) != allowed:
                raise KmsFault("UnsupportedOperationException", f"only {name} {allowed}")
        if request.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT":
            raise KmsFault("UnsupportedOperationException", "only KeyUsage ENCRYPT_DECRYPT")
        description = request.get("Description", "")
        policy = request.get("Policy", "")
        if not isinstance(description, str) or not isinstance(policy, str):
            raise _validation("Description and Policy must be strings")
        if policy:
            # The stand-in's dialect: {"conditions": {"kms:RecipientAttestation:PCR0": hex}}.
            try:
                parsed = json.loads(policy)
                if not isinstance(parsed, Mapping):
                    raise PolicyError("the policy must be a JSON object")
                parse_conditions(parsed.get("conditions", {}))
            except (ValueError, PolicyError) as e:
                raise KmsFault("MalformedPolicyDocumentException", str(e)) from e
        record = self._store.create(description=description, policy=policy)
        _log.info("CreateKey %s", record.key_id)
        return {"KeyMetadata": self._metadata(record.key_id)}

    def _describe_key(self, request: Mapping[str, object]) -> dict[str, object]:
        return {"KeyMetadata": self._metadata(self._resolve(request))}

    def _generate_data_key(self, request: Mapping[str, object]) -> dict[str, object]:
        key_id = self._resolve(request)
        spec, count = request.get("KeySpec"), request.get("NumberOfBytes")
        if (spec is None) == (count is None):
            raise _validation("give exactly one of KeySpec and NumberOfBytes")
        if spec is not None:
            if spec not in _KEY_SPEC_BYTES:
                raise _validation(f"KeySpec must be one of {sorted(_KEY_SPEC_BYTES)}")
            size = _KEY_SPEC_BYTES[str(spec)]
        elif type(count) is int and 1 <= count <= _MAX_DATA_KEY_BYTES:
            size = count
        else:
            raise _validation(f"NumberOfBytes must be 1..{_MAX_DATA_KEY_BYTES}")
        context = _context(request)
        recipient = self._authorize(key_id, request)
        data_key = os.urandom(size)
        blob = self._store.wrap(key_id, data_key, context)
        _log.info("GenerateDataKey %s recipient=%s", key_id, recipient is not None)
        return {"KeyId": self._arn(key_id), "CiphertextBlob": _b64(blob)} | self._release(
            data_key, recipient
        )

    def _encrypt(self, request: Mapping[str, object]) -> dict[str, object]:
        key_id = self._resolve(request)
        if request.get("EncryptionAlgorithm", _SYMMETRIC) != _SYMMETRIC:
            raise _validation(f"EncryptionAlgorithm must be {_SYMMETRIC}")
        plaintext = _blob(request, "Plaintext", limit=_MAX_ENCRYPT_BYTES)
        blob = self._store.wrap(key_id, plaintext, _context(request))
        return {
            "KeyId": self._arn(key_id),
            "CiphertextBlob": _b64(blob),
            "EncryptionAlgorithm": _SYMMETRIC,
        }

    def _decrypt(self, request: Mapping[str, object]) -> dict[str, object]:
        if request.get("EncryptionAlgorithm", _SYMMETRIC) != _SYMMETRIC:
            raise _validation(f"EncryptionAlgorithm must be {_SYMMETRIC}")
        blob = _blob(request, "CiphertextBlob", limit=_MAX_BLOB_BYTES)
        context = _context(request)
        try:
            key_id = self._store.blob_key_id(blob)
            self._store.get(key_id)
        except (InvalidBlobError, UnknownKeyError) as e:
            raise KmsFault("InvalidCiphertextException", "the ciphertext is invalid") from e
        if "KeyId" in request and self._resolve(request) != key_id:
            raise KmsFault(
                "IncorrectKeyException",
                "the key ID in the request does not identify the key that encrypted the ciphertext",
            )
        recipient = self._authorize(key_id, request)
        try:
            _, plaintext = self._store.unwrap(blob, context)
        except InvalidBlobError as e:
            raise KmsFault("InvalidCiphertextException", "the ciphertext is invalid") from e
        _log.info("Decrypt %s recipient=%s", key_id, recipient is not None)
        return {
            "KeyId": self._arn(key_id),
            "EncryptionAlgorithm": _SYMMETRIC,
        } | self._release(plaintext, recipient)
