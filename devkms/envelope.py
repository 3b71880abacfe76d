"""``CiphertextForRecipient``: CMS EnvelopedData to an enclave's RSA key.

What AWS KMS returns to a ``Recipient`` (RFC 5652 §6, in the shape of the
sample response in aws-nitro-enclaves-sdk-c ``tests/cms_test.c``):

- ``ContentInfo { id-envelopedData, EnvelopedData }``, EnvelopedData version 2;
- one ``KeyTransRecipientInfo`` version 2 whose ``rid`` is a 32-byte
  subjectKeyIdentifier. AWS does not document how it derives those 32 bytes;
  we use SHA-256 of the recipient's DER SubjectPublicKeyInfo. Recipients do
  not rely on it (there is only one recipient);
- key transport id-RSAES-OAEP with SHA-256 / MGF1-SHA-256 / empty label
  (RFC 4055 §3.1), encrypting a fresh 32-byte content-encryption key;
- content id-data encrypted with aes256-CBC (fresh 16-byte IV as the
  algorithm parameter), PKCS #7 padded (RFC 5652 §6.3).

AWS sends BER with indefinite lengths; we send DER, a valid BER subset.

Why these libraries: ``cryptography`` 50's PKCS7EnvelopeBuilder does only
RSA PKCS #1 v1.5 key transport to certificates, so it cannot build this;
``asn1crypto`` encodes the ASN.1, ``cryptography`` does RSA-OAEP, AES-CBC and
the padding.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    # Functions
    "envelope_for_recipient",
    "recipient_key_identifier",
]

_CONTENT_KEY_SIZE: Final = 32  # AES-256
_IV_SIZE: Final = 16
# With an explicit NULL parameter, as AWS encodes it.
_SHA256_ALGORITHM: Final = {"algorithm": "sha256", "parameters": core.Null()}
# id-RSAES-OAEP with SHA-256 / MGF1-SHA-256 / empty label (RFC 4055 §3.1),
# encoded once; the same bytes as AWS's sample.
_OAEP_SHA256_DER: Final[bytes] = cms.KeyEncryptionAlgorithm(
    {
        "algorithm": "rsaes_oaep",
        "parameters": algos.RSAESOAEPParams(
            {
                "hash_algorithm": _SHA256_ALGORITHM,
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": _SHA256_ALGORITHM},
            }
        ),
    }
).dump()


def recipient_key_identifier(public_key_der: bytes) -> bytes:
    """The subjectKeyIdentifier we put in ``rid``: SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_key_der).digest()


def envelope_for_recipient(plaintext: bytes, public_key: rsa.RSAPublicKey) -> bytes:
    """Encrypt ``plaintext`` to an enclave's RSA key as KMS does.

    Arguments:
        plaintext: the secret (a data key, at most 4096 bytes in KMS).
        public_key: the RSA public key from the attestation document.

    Returns:
        The DER ``ContentInfo`` bytes for ``CiphertextForRecipient``.
    """
    content_key = os.urandom(_CONTENT_KEY_SIZE)
    iv = os.urandom(_IV_SIZE)
    padder = symmetric_padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    encrypted_content = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = public_key.encrypt(
        content_key,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    recipient = cms.KeyTransRecipientInfo(
        {
            "version": "v2",  # RFC 5652 §6.2.1: 2 with a subjectKeyIdentifier rid
            "rid": cms.RecipientIdentifier(
                name="subject_key_identifier", value=recipient_key_identifier(spki)
            ),
            # Parsed from its encoding: asn1crypto builds nested values slowly.
            "key_encryption_algorithm": cms.KeyEncryptionAlgorithm.load(_OAEP_SHA256_DER),
            "encrypted_key": encrypted_key,
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v2",  # RFC 5652 §6.1: 2 because the recipient info is version 2
            "recipient_infos": [cms.RecipientInfo(name="ktri", value=recipient)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                "encrypted_content": encrypted_content,
            },
        }
    )
    encoded: bytes = cms.ContentInfo(
        {"content_type": "enveloped_data", "content": enveloped}
    ).dump()
    return encoded
