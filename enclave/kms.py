"""The enclave's KMS client: data keys that only an attested enclave can read.

See docs/architecture.md, "The enclave boundary". The enclave calls the AWS KMS API (JSON 1.1
protocol, SigV4) through botocore with a custom endpoint: on Nitro, real KMS
reached through vsock-proxy, with TLS ending inside the enclave; elsewhere the
local stand-in ``devkms``. Every ``GenerateDataKey`` and ``Decrypt`` carries

    Recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                 "AttestationDocument": <NSM document with public_key = our RSA key>}

so KMS checks the document against the key policy (PCR conditions
``kms:RecipientAttestation:PCR<n>``) and answers with ``CiphertextForRecipient``
(CMS EnvelopedData to our RSA key, ``enclave.cms``) instead of ``Plaintext``
(AWS KMS API Reference, "RecipientInfo"; KMS Developer Guide, "Cryptographic
attestation support in AWS KMS"). The host relays that traffic but never sees
a data key. A response that carries ``Plaintext`` anyway is refused: the data
key would have crossed the host in clear.

The RSA key (:class:`RecipientKey`) is generated when the enclave starts and
never leaves it; only its DER SubjectPublicKeyInfo goes into documents.

Credentials: the enclave has none of its own. On Nitro the host hands it the
parent instance role's temporary credentials at run time
(``Enclave.SetCredentials``) and again before they expire; they are never
baked into the measured image. :meth:`EnclaveKmsClient.set_credentials`
swaps them in; until the first set, every call fails with ``KmsError``
code ``NoCredentials``. They grant the host nothing it lacks (KMS releases
data keys only to an attested enclave), but they are still never logged or
printed (``KmsCredentials`` redacts them).

Errors from botocore are translated once, here, by one table:
KMS error codes become :class:`KmsError` subclasses carrying ``code``;
transport failures become ``KmsError("Unavailable")``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ParamValidationError,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave.cms import CmsError, open_enveloped_data
from enclave.errors import EnclaveError
from enclave.nsm import Nsm
from tss.errors import InputError

__all__ = [
    # Exceptions
    "KmsError",
    "KmsAccessDeniedError",
    "KmsIncorrectKeyError",
    "KmsInvalidCiphertextError",
    # Types
    "EnclaveKmsClient",
    "KmsCredentials",
    "RecipientKey",
    # Constants
    "DATA_KEY_SPEC",
    "KEY_ENCRYPTION_ALGORITHM",
    "MIN_RSA_KEY_SIZE",
]

KEY_ENCRYPTION_ALGORITHM: Final = "RSAES_OAEP_SHA_256"
"""The only ``RecipientInfo.KeyEncryptionAlgorithm`` KMS accepts."""
DATA_KEY_SPEC: Final = "AES_256"
MIN_RSA_KEY_SIZE: Final = 2048
_DEFAULT_RSA_KEY_SIZE: Final = 3072  # 128-bit strength: recorded traffic stays safe longer
_DATA_KEY_SIZE: Final = 32


### Errors


class KmsError(EnclaveError):
    """KMS refused or failed a request.

    Attributes:
        code: the KMS error code (``__type``, e.g. ``AccessDeniedException``),
            or a local code: ``Unavailable`` (transport), ``InvalidResponse``
            (a response the enclave must not accept).
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")


class KmsAccessDeniedError(KmsError):
    """KMS refused the caller or its attestation document (key policy)."""


class KmsInvalidCiphertextError(KmsError):
    """KMS could not decrypt the ciphertext blob under this key and encryption context."""


class KmsIncorrectKeyError(KmsInvalidCiphertextError):
    """The ``KeyId`` of a Decrypt is not the key that encrypted the blob
    (``IncorrectKeyException``): the blob belongs to another KMS key."""


# KMS error code -> the class it raises; every other code raises KmsError.
_ERROR_CLASSES: Final[Mapping[str, type[KmsError]]] = {
    "AccessDeniedException": KmsAccessDeniedError,
    "InvalidCiphertextException": KmsInvalidCiphertextError,
    "IncorrectKeyException": KmsIncorrectKeyError,
}


def _translate(error: Exception) -> Exception:
    """Map a botocore exception to the project's errors (the one boundary table)."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code") or "UnknownError")
        message = str(details.get("Message") or "no message")
        return _ERROR_CLASSES.get(code, KmsError)(code, message)
    if isinstance(error, ParamValidationError):
        return InputError(f"invalid KMS request: {error}")
    return KmsError("Unavailable", f"KMS request failed: {type(error).__name__}")


### The enclave's RSA recipient key


class RecipientKey:
    """The enclave's ephemeral RSA key pair for KMS ``Recipient`` responses.

    Generate one when the enclave starts (:meth:`generate`); it lives only in
    enclave memory. Prints as ``<redacted>``.
    """

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        """Wrap an existing RSA private key.

        Arguments:
            private_key: an RSA key of at least 2048 bits with e = 65537.

        Raises:
            InputError: the key is not such a key.
        """
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise InputError("the recipient key must be an RSA private key")
        if private_key.key_size < MIN_RSA_KEY_SIZE:
            raise InputError(f"the recipient key must have at least {MIN_RSA_KEY_SIZE} bits")
        if private_key.public_key().public_numbers().e != 65537:
            raise InputError("the recipient key's public exponent must be 65537")
        self._private_key = private_key
        self._public_key_der = private_key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def generate(cls, key_size: int = _DEFAULT_RSA_KEY_SIZE) -> RecipientKey:
        """Make a fresh key pair.

        Arguments:
            key_size: RSA modulus bits, at least 2048 (default 3072).

        Returns:
            The new key.
        """
        if key_size < MIN_RSA_KEY_SIZE:
            raise InputError(f"key_size must be at least {MIN_RSA_KEY_SIZE}")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=key_size))

    @property
    def public_key_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (the document's ``public_key``)."""
        return self._public_key_der

    def open(self, ciphertext_for_recipient: bytes, *, content_length: int) -> bytearray:
        """Decrypt a ``CiphertextForRecipient`` addressed to this key.

        Arguments:
            ciphertext_for_recipient: KMS's CMS EnvelopedData.
            content_length: the exact plaintext length expected.

        Returns:
            The plaintext, in a buffer the caller wipes.

        Raises:
            CmsError: malformed, or not for this key.
        """
        return open_enveloped_data(
            ciphertext_for_recipient, self._private_key, content_length=content_length
        )

    def __repr__(self) -> str:
        return "RecipientKey(<redacted>)"


### The client


@dataclass(frozen=True)
class KmsCredentials:
    """AWS credentials for SigV4 (on Nitro: the instance role's, relayed by the host).

    Attributes:
        access_key_id: the access key id.
        secret_access_key: the secret key (never printed).
        session_token: the STS session token of temporary credentials, or None.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("access_key_id", "secret_access_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a non-empty string")
        if self.session_token is not None and (
            not isinstance(self.session_token, str) or not self.session_token
        ):
            raise InputError("session_token must be None or a non-empty string")


_ClientFactory = Callable[[KmsCredentials], Any]
"""Makes a botocore KMS client that signs with the given credentials."""


class EnclaveKmsClient:
    """``GenerateDataKey`` / ``Decrypt`` with an attestation-document Recipient.

    Thread-safe (botocore clients are; swapping credentials takes a lock).
    Make one with :meth:`connect`, or wrap a botocore KMS client you
    configured yourself.
    """

    def __init__(
        self,
        client: Any | None,
        *,
        nsm: Nsm,
        recipient_key: RecipientKey,
        client_factory: _ClientFactory | None = None,
    ) -> None:
        """Wrap a botocore KMS client.

        Arguments:
            client: a botocore KMS client, or None until :meth:`set_credentials`.
            nsm: the NSM that signs attestation documents for this enclave.
            recipient_key: the enclave's RSA key pair.
            client_factory: makes a client for new credentials
                (:meth:`set_credentials`); :meth:`connect` passes one.
        """
        self._client = client
        self._nsm = nsm
        self._recipient_key = recipient_key
        self._client_factory = client_factory
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        *,
        endpoint_url: str,
        region: str,
        credentials: KmsCredentials | None,
        nsm: Nsm,
        recipient_key: RecipientKey | None = None,
        verify_tls: bool | str = True,
        timeout: float = 10.0,
    ) -> EnclaveKmsClient:
        """Build a client for a KMS endpoint.

        Arguments:
            endpoint_url: e.g. ``https://kms.us-east-1.amazonaws.com`` reached
                through vsock-proxy on Nitro, ``http://127.0.0.1:PORT`` for devkms.
            region: the AWS region (part of the SigV4 scope).
            credentials: SigV4 credentials, or None: the host hands them in
                later (:meth:`set_credentials`); calls fail until then.
            nsm: the NSM for attestation documents.
            recipient_key: the enclave's RSA key; default a fresh 3072-bit one.
            verify_tls: botocore's ``verify`` (True, False, or a CA bundle path).
            timeout: connect and read timeout in seconds.

        Returns:
            The client.
        """
        # One session, so each new client reuses the loaded service model.
        session = botocore.session.Session()
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
        )

        def factory(given: KmsCredentials) -> Any:
            # Explicit keys: botocore then never searches its provider chain
            # (environment, files, IMDS), none of which exists in an enclave.
            return session.create_client(
                "kms",
                region_name=region,
                endpoint_url=endpoint_url,
                verify=verify_tls,
                aws_access_key_id=given.access_key_id,
                aws_secret_access_key=given.secret_access_key,
                aws_session_token=given.session_token,
                config=config,
            )

        return cls(
            None if credentials is None else factory(credentials),
            nsm=nsm,
            recipient_key=recipient_key or RecipientKey.generate(),
            client_factory=factory,
        )

    def set_credentials(self, credentials: KmsCredentials) -> None:
        """Sign later requests with new credentials (the host's refresh).

        Requests already in flight finish with the client they started with.

        Arguments:
            credentials: the new credentials.

        Raises:
            InputError: not :class:`KmsCredentials`, or this client was built
                around a fixed botocore client (no factory).
        """
        if not isinstance(credentials, KmsCredentials):
            raise InputError("credentials must be KmsCredentials")
        if self._client_factory is None:
            raise InputError("this KMS client was built without a client factory")
        with self._lock:
            # Created under the lock: one botocore session is not meant for
            # concurrent create_client calls. The old client is not closed:
            # a request may still be using it; it is released with it.
            self._client = self._client_factory(credentials)

    @property
    def has_credentials(self) -> bool:
        """Whether requests can be signed (credentials were given)."""
        return self._client is not None

    @property
    def recipient_public_key_der(self) -> bytes:
        """The enclave's RSA public key (DER SubjectPublicKeyInfo) put into documents."""
        return self._recipient_key.public_key_der

    def _recipient(self) -> dict[str, object]:
        # A fresh document per request, so it is never stale when checked
        # (devkms refuses documents older than its max age); the NSM signs
        # one in about 2 ms.
        document = self._nsm.attestation(public_key=self._recipient_key.public_key_der)
        return {"KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM, "AttestationDocument": document}

    def _call(self, operation: str, **params: object) -> Mapping[str, object]:
        with self._lock:
            client = self._client
        if client is None:
            raise KmsError("NoCredentials", "the host has not handed the enclave KMS credentials")
        try:
            response = getattr(client, operation)(**params)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e) from e
        if not isinstance(response, Mapping):
            raise KmsError("InvalidResponse", f"{operation} returned no response object")
        # Never accept a data key in clear: it would have crossed the host.
        if response.get("Plaintext"):
            raise KmsError("InvalidResponse", f"{operation} returned Plaintext to a Recipient")
        return response

    def _open(self, response: Mapping[str, object], operation: str) -> bytearray:
        envelope = response.get("CiphertextForRecipient")
        if not isinstance(envelope, bytes) or not envelope:
            raise KmsError("InvalidResponse", f"{operation} returned no CiphertextForRecipient")
        try:
            return self._recipient_key.open(envelope, content_length=_DATA_KEY_SIZE)
        except CmsError as e:
            raise KmsError("InvalidResponse", f"{operation}: {e}") from e

    def generate_data_key(
        self, key_id: str, *, encryption_context: Mapping[str, str] | None = None
    ) -> tuple[bytearray, bytes]:
        """Ask KMS for a fresh AES-256 data key, released only to this enclave.

        Arguments:
            key_id: the KMS key id, ARN, alias name or alias ARN.
            encryption_context: string pairs KMS binds to the encrypted key;
                Decrypt must present the same ones.

        Returns:
            ``(plaintext_key, ciphertext_blob)``: the 32-byte data key in a
            buffer the caller wipes, and KMS's CiphertextBlob for storage.

        Raises:
            KmsAccessDeniedError: the key policy refused this enclave.
            KmsError: any other refusal, an invalid response, or no connection.
            InputError: a bad argument.
        """
        if not isinstance(key_id, str) or not key_id:
            raise InputError("key_id must be a non-empty string")
        params: dict[str, object] = {
            "KeyId": key_id,
            "KeySpec": DATA_KEY_SPEC,
            "Recipient": self._recipient(),
        }
        if encryption_context:
            params["EncryptionContext"] = dict(encryption_context)
        response = self._call("generate_data_key", **params)
        blob = response.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise KmsError("InvalidResponse", "GenerateDataKey returned no CiphertextBlob")
        return self._open(response, "GenerateDataKey"), blob

    def decrypt(
        self,
        ciphertext_blob: bytes,
        *,
        key_id: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> bytearray:
        """Ask KMS to decrypt a data key, released only to this enclave.

        Arguments:
            ciphertext_blob: a CiphertextBlob from :meth:`generate_data_key`.
            key_id: the KMS key expected to have encrypted it (recommended:
                KMS then refuses blobs of any other key).
            encryption_context: the context given when the key was generated.

        Returns:
            The 32-byte data key, in a buffer the caller wipes.

        Raises:
            KmsInvalidCiphertextError: the blob, key or context do not match.
            KmsAccessDeniedError: the key policy refused this enclave.
            KmsError: any other refusal, an invalid response, or no connection.
        """
        if not isinstance(ciphertext_blob, bytes) or not ciphertext_blob:
            raise InputError("ciphertext_blob must be non-empty bytes")
        params: dict[str, object] = {
            "CiphertextBlob": ciphertext_blob,
            "Recipient": self._recipient(),
        }
        if key_id is not None:
            params["KeyId"] = key_id
        if encryption_context:
            params["EncryptionContext"] = dict(encryption_context)
        return self._open(self._call("decrypt", **params), "Decrypt")

    def close(self) -> None:
        """Close the client's connections."""
        with self._lock:
            client = self._client
        if client is not None:
            client.close()
