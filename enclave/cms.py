"""Opening KMS's ``CiphertextForRecipient`` inside the enclave (docs/architecture.md).

When a KMS request carries a ``Recipient`` (an attestation document holding
the enclave's RSA public key), KMS returns the secret as CMS EnvelopedData
(RFC 5652 §6) instead of plaintext. What AWS sends, as seen in the sample
response of aws-nitro-enclaves-sdk-c (``tests/cms_test.c``) and parsed by its
``source/cms.c``:

- ``ContentInfo`` with contentType id-envelopedData, BER with *indefinite*
  lengths for the outer SEQUENCEs and a constructed ``[0]`` encryptedContent;
- ``EnvelopedData`` version 2 with exactly one ``KeyTransRecipientInfo``
  (RFC 5652 §6.2.1) of version 2, whose ``rid`` is a 32-byte
  ``subjectKeyIdentifier`` (we have no certificate, so no issuerAndSerialNumber);
- keyEncryptionAlgorithm id-RSAES-OAEP with explicit parameters SHA-256 and
  MGF1-SHA-256 and the default empty label (RFC 4055 §3.1, RFC 8017 §7.1);
- encryptedContentInfo of type id-data, contentEncryptionAlgorithm
  aes256-CBC (2.16.840.1.101.3.4.1.42) whose parameter is the 16-byte IV,
  content padded as RFC 5652 §6.3 says (PKCS #7 padding).

Why these libraries: ``cryptography`` 50's ``pkcs7_decrypt_der`` supports
only RSA PKCS #1 v1.5 key transport and finds the recipient by certificate
(issuerAndSerialNumber), so it cannot open this format. ``asn1crypto``
parses the ASN.1 (BER included), and ``cryptography`` does RSA-OAEP and
AES-CBC; nothing here encodes or decrypts by hand.

CBC is not authenticated. The enclave reaches real KMS over TLS that ends
inside the enclave, so the host cannot alter responses; still, every failure
after parsing raises the same opaque :class:`CmsError`, and the content must
have exactly the length the caller expects, so a tampered response is no
padding oracle.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Final

from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tss.errors import InputError, ShardkeepError

__all__ = [
    # Functions
    "parse_enveloped_data",
    "open_enveloped_data",
    # Exceptions
    "CmsError",
    # Types
    "KeyTransEnvelope",
]

_AES_BLOCK: Final = 16
_AES_256_KEY_SIZE: Final = 32
# KMS never returns more than 4 KiB of plaintext; the cap rejects absurd inputs.
_MAX_CONTENT_SIZE: Final = 64 * 1024
_OAEP_SHA256: Final = {
    "hash_algorithm": {"algorithm": "sha256", "parameters": None},
    "mask_gen_algorithm": {
        "algorithm": "mgf1",
        "parameters": {"algorithm": "sha256", "parameters": None},
    },
    "p_source_algorithm": {"algorithm": "p_specified", "parameters": b""},
}


class CmsError(ShardkeepError):
    """A ``CiphertextForRecipient`` did not parse or did not open.

    Parse failures say what is wrong (the structure is not secret); every
    decryption failure has the same message.
    """


@dataclass(frozen=True)
class KeyTransEnvelope:
    """The parts of a KMS EnvelopedData that decryption needs (RFC 5652 §6)."""

    subject_key_identifier: bytes | None
    """The recipient's key id when ``rid`` is a subjectKeyIdentifier (AWS: 32 bytes)."""
    encrypted_key: bytes = field(repr=False)
    """The content-encryption key, RSA-OAEP-SHA-256 encrypted to the recipient."""
    iv: bytes
    """The 16-byte AES-CBC IV."""
    encrypted_content: bytes = field(repr=False)
    """The AES-256-CBC ciphertext (chunks of a constructed encoding joined)."""


def _malformed(message: str) -> CmsError:
    return CmsError(f"CiphertextForRecipient is not KMS EnvelopedData: {message}")


def parse_enveloped_data(data: bytes) -> KeyTransEnvelope:
    """Parse a ``CiphertextForRecipient`` and check it is what KMS sends.

    Arguments:
        data: the BER or DER ``ContentInfo`` (at most 64 KiB).

    Returns:
        The encrypted key, IV and encrypted content.

    Raises:
        CmsError: not an EnvelopedData with one RSA-OAEP-SHA-256 key-transport
            recipient and AES-256-CBC content.
    """
    if not isinstance(data, bytes | bytearray):
        raise InputError("CiphertextForRecipient must be bytes")
    if len(data) > _MAX_CONTENT_SIZE:
        raise _malformed("too large")
    try:
        # asn1crypto parses lazily: field access below may raise too.
        info = cms.ContentInfo.load(bytes(data), strict=True)
        if info["content_type"].native != "enveloped_data":
            raise _malformed(f"content type is {info['content_type'].native!r}")
        enveloped = info["content"]
        if enveloped["version"].native not in ("v0", "v2"):
            raise _malformed(f"EnvelopedData version is {enveloped['version'].native!r}")
        # originatorInfo and unprotectedAttrs play no part in key transport;
        # KMS sends neither, and we ignore them as aws-nitro-enclaves-sdk-c does.
        recipients = enveloped["recipient_infos"]
        if len(recipients) != 1:
            raise _malformed(f"{len(recipients)} RecipientInfos, expected 1")
        if recipients[0].name != "ktri":
            raise _malformed(f"RecipientInfo is {recipients[0].name!r}, expected ktri")
        ktri = recipients[0].chosen
        rid = ktri["rid"]
        # RFC 5652 §6.2.1: version 0 goes with issuerAndSerialNumber, 2 with
        # subjectKeyIdentifier.
        expected_version = "v2" if rid.name == "subject_key_identifier" else "v0"
        if ktri["version"].native != expected_version:
            raise _malformed("KeyTransRecipientInfo version does not match its rid")
        key_algorithm = ktri["key_encryption_algorithm"]
        if key_algorithm["algorithm"].native != "rsaes_oaep":
            raise _malformed(f"key transport is {key_algorithm['algorithm'].native!r}")
        # asn1crypto fills absent OAEP parameters with RFC 4055's SHA-1
        # defaults, so this rejects a SHA-1 OAEP envelope too.
        if key_algorithm["parameters"].native != _OAEP_SHA256:
            raise _malformed("RSA-OAEP parameters are not SHA-256 / MGF1-SHA-256 / empty label")

        content_info = enveloped["encrypted_content_info"]
        if content_info["content_type"].native != "data":
            raise _malformed(f"encrypted content type is {content_info['content_type'].native!r}")
        content_algorithm = content_info["content_encryption_algorithm"]
        if content_algorithm["algorithm"].native != "aes256_cbc":
            raise _malformed(f"content cipher is {content_algorithm['algorithm'].native!r}")
        iv = content_algorithm.encryption_iv
        encrypted_content = content_info["encrypted_content"].native
        subject_key_identifier = rid.chosen.native if rid.name == "subject_key_identifier" else None
        encrypted_key = ktri["encrypted_key"].native
    except (ValueError, TypeError, KeyError) as e:
        raise _malformed(f"{type(e).__name__} while parsing") from e
    if not isinstance(iv, bytes) or len(iv) != _AES_BLOCK:
        raise _malformed("AES-CBC IV is not 16 bytes")
    if not isinstance(encrypted_content, bytes) or not encrypted_content:
        raise _malformed("encrypted content is absent")
    if len(encrypted_content) % _AES_BLOCK:
        raise _malformed("encrypted content is not a whole number of AES blocks")
    if not isinstance(encrypted_key, bytes) or not encrypted_key:
        raise _malformed("encrypted key is empty")
    return KeyTransEnvelope(subject_key_identifier, encrypted_key, iv, encrypted_content)


def open_enveloped_data(
    data: bytes, private_key: rsa.RSAPrivateKey, *, content_length: int
) -> bytearray:
    """Decrypt a ``CiphertextForRecipient`` with the enclave's RSA key.

    Arguments:
        data: the ``CiphertextForRecipient`` bytes.
        private_key: the enclave's RSA private key (the document's public_key).
        content_length: the exact plaintext length expected (32 for an
            AES-256 data key); anything else is refused.

    Returns:
        The plaintext in a buffer the caller wipes after use.

    Raises:
        CmsError: malformed (message says how), or does not decrypt (one
            opaque message, whatever failed).
        InputError: ``content_length`` out of range.
    """
    if not 1 <= content_length <= _MAX_CONTENT_SIZE:
        raise InputError("content_length out of range")
    envelope = parse_enveloped_data(data)
    pad = _AES_BLOCK - content_length % _AES_BLOCK
    if len(envelope.encrypted_content) != content_length + pad:
        raise CmsError("CiphertextForRecipient does not decrypt")
    padded = bytearray(len(envelope.encrypted_content) + _AES_BLOCK - 1)
    try:
        content_key = private_key.decrypt(
            envelope.encrypted_key,
            padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA256()),
                algorithm=hashes.SHA256(),
                label=None,
            ),
        )
        if len(content_key) != _AES_256_KEY_SIZE:
            raise ValueError("content-encryption key is not 32 bytes")
        decryptor = Cipher(algorithms.AES(content_key), modes.CBC(envelope.iv)).decryptor()
        del content_key  # an immutable bytes: dropped, cannot be wiped
        # update_into writes into a buffer we own, so the plaintext can be wiped.
        written = decryptor.update_into(envelope.encrypted_content, padded)
        decryptor.finalize()
        if written != len(envelope.encrypted_content):
            raise ValueError("AES-CBC did not decrypt every block")
        # RFC 5652 §6.3 padding. The length is known exactly, so this is a
        # comparison with the one valid padding rather than a general unpad.
        if not hmac.compare_digest(bytes(padded[content_length:written]), bytes([pad]) * pad):
            raise ValueError("bad padding")
        return padded[:content_length]
    except ValueError as e:
        raise CmsError("CiphertextForRecipient does not decrypt") from e
    finally:
        padded[:] = bytes(len(padded))
