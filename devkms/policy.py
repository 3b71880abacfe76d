"""Key policies of the KMS stand-in, and the check of a ``Recipient``.

AWS expresses "release this key only to enclave image X" as key-policy
conditions on the attestation document (KMS Developer Guide, "Condition keys
for AWS Nitro Enclaves"): ``kms:RecipientAttestation:PCR<n>`` and
``kms:RecipientAttestation:ImageSha384`` (= PCR0), compared case-insensitively
with the hex PCR value. A request without a valid attestation document fails
such conditions. The stand-in reads the same condition names from a JSON
policy file::

    {
      "attestation_root_file": "root.pem",        # or "attestation_root_pem": "-----BEGIN…";
                                                  # neither: the AWS Nitro root G1
      "max_document_age_seconds": 300,
      "keys": {
        "6f1c…-uuid": {
          "description": "server-share sealing",
          "alias": "alias/shardkeep-seal",
          "conditions": {"kms:RecipientAttestation:PCR0": "<96 hex digits>", …}
        }
      }
    }

A key with conditions releases secrets only to a ``Recipient`` whose document
verifies (``client.sdk.attestation.verify`` against the root, at the current
time) and whose PCRs match; a key without conditions behaves like a KMS key
whose policy lets the caller have plaintext.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from client.sdk.attestation import AttestationError, verify

__all__ = [
    # Functions
    "load_policy",
    "parse_conditions",
    "parse_policy",
    "verify_recipient",
    # Exceptions
    "PolicyError",
    "RecipientRefused",
    # Types
    "KeyPolicy",
    "Policy",
    # Constants
    "MIN_RECIPIENT_RSA_BITS",
]

MIN_RECIPIENT_RSA_BITS: Final = 2048
_PCR_CONDITION: Final = re.compile(r"kms:RecipientAttestation:PCR([0-9]|[12][0-9]|3[01])")
_IMAGE_CONDITION: Final = "kms:RecipientAttestation:ImageSha384"
_PCR_SIZE: Final = 48  # SHA-384
_DEFAULT_MAX_AGE: Final = timedelta(minutes=5)
_CLOCK_SKEW: Final = timedelta(seconds=30)
_ALIAS: Final = re.compile(r"alias/[A-Za-z0-9/_-]{1,250}")


class PolicyError(Exception):
    """The policy file or a CreateKey policy is invalid."""


class RecipientRefused(Exception):
    """A ``Recipient`` does not satisfy the key policy.

    Attributes:
        invalid_request: True when the request itself is malformed (KMS
            ValidationException) rather than refused (AccessDeniedException).
    """

    def __init__(self, message: str, *, invalid_request: bool = False) -> None:
        self.invalid_request = invalid_request
        super().__init__(message)


@dataclass(frozen=True)
class KeyPolicy:
    """What one key requires of a recipient."""

    description: str = ""
    alias: str | None = None
    recipient_pcrs: Mapping[int, bytes] = field(default_factory=dict)
    """PCR index -> required value; empty means no attestation is required."""

    @property
    def requires_attestation(self) -> bool:
        """Whether secrets go only to an attested ``Recipient``."""
        return bool(self.recipient_pcrs)


@dataclass(frozen=True)
class Policy:
    """The stand-in's configuration: trust anchor, document age, key policies."""

    root_certificate: bytes | None = None
    """PEM or DER; ``None`` is the AWS Nitro Enclaves root G1."""
    max_document_age: timedelta = _DEFAULT_MAX_AGE
    keys: Mapping[str, KeyPolicy] = field(default_factory=dict)
    """Key id (UUID) -> its policy."""


def parse_conditions(conditions: object) -> dict[int, bytes]:
    """Parse ``{"kms:RecipientAttestation:PCR<n>": hex, …}`` into PCR values.

    Raises:
        PolicyError: an unknown condition key or a value that is not 48 bytes of hex.
    """
    if not isinstance(conditions, Mapping):
        raise PolicyError("conditions must be an object")
    pcrs: dict[int, bytes] = {}
    for name, value in conditions.items():
        match = _PCR_CONDITION.fullmatch(name) if isinstance(name, str) else None
        if name == _IMAGE_CONDITION:
            index = 0
        elif match is not None:
            index = int(match.group(1))
        else:
            raise PolicyError(f"unsupported condition key {name!r}")
        try:
            pcr = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError as e:
            raise PolicyError(f"{name} is not hex") from e
        if len(pcr) != _PCR_SIZE:
            raise PolicyError(f"{name} must be {_PCR_SIZE} bytes of hex")
        if index in pcrs and pcrs[index] != pcr:
            raise PolicyError(f"conflicting conditions for PCR{index}")
        pcrs[index] = pcr
    return pcrs


def _key_policy(entry: object) -> KeyPolicy:
    if not isinstance(entry, Mapping):
        raise PolicyError("a key policy must be an object")
    unknown = set(entry) - {"description", "alias", "conditions"}
    if unknown:
        raise PolicyError(f"unknown key policy fields {sorted(unknown)}")
    alias = entry.get("alias")
    if alias is not None and (not isinstance(alias, str) or not _ALIAS.fullmatch(alias)):
        raise PolicyError(f"alias {alias!r} must look like alias/name")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise PolicyError("description must be a string")
    return KeyPolicy(description, alias, parse_conditions(entry.get("conditions", {})))


def parse_policy(document: object, *, base_dir: Path | None = None) -> Policy:
    """Parse a policy object (the file format in the module docstring).

    Arguments:
        document: the decoded JSON.
        base_dir: where ``attestation_root_file`` is relative to.

    Raises:
        PolicyError: the policy is invalid.
    """
    if not isinstance(document, Mapping):
        raise PolicyError("the policy must be a JSON object")
    unknown = set(document) - {
        "attestation_root_pem",
        "attestation_root_file",
        "max_document_age_seconds",
        "keys",
    }
    if unknown:
        raise PolicyError(f"unknown policy fields {sorted(unknown)}")
    root: bytes | None = None
    if "attestation_root_pem" in document:
        root = str(document["attestation_root_pem"]).encode()
    elif "attestation_root_file" in document:
        path = Path(str(document["attestation_root_file"]))
        root = ((base_dir or Path.cwd()) / path).read_bytes()
    age = document.get("max_document_age_seconds", _DEFAULT_MAX_AGE.total_seconds())
    if not isinstance(age, int | float) or not 0 < age <= 3 * 3600:
        raise PolicyError("max_document_age_seconds must be in (0, 10800]")
    keys = document.get("keys", {})
    if not isinstance(keys, Mapping):
        raise PolicyError("keys must be an object")
    return Policy(
        root_certificate=root,
        max_document_age=timedelta(seconds=age),
        keys={str(key_id): _key_policy(entry) for key_id, entry in keys.items()},
    )


def load_policy(path: Path) -> Policy:
    """Read and parse a policy file.

    Raises:
        PolicyError: unreadable or invalid.
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PolicyError(f"cannot read policy {path}: {e}") from e
    return parse_policy(document, base_dir=path.parent)


def verify_recipient(
    document: bytes, *, policy: Policy, key: KeyPolicy, now: datetime
) -> rsa.RSAPublicKey:
    """Check a ``Recipient``'s attestation document against a key's policy.

    Arguments:
        document: the attestation document bytes.
        policy: gives the trust anchor and the maximum document age.
        key: gives the required PCR values.
        now: the current time (timezone-aware).

    Returns:
        The document's RSA public key, to encrypt the response to.

    Raises:
        RecipientRefused: the document does not verify, is stale, fails the
            PCR conditions, or carries no usable RSA key.
    """
    try:
        verified = verify(
            document,
            root_certificate=policy.root_certificate,
            at=now,
            expected_pcrs=key.recipient_pcrs,
        )
    except AttestationError as e:
        raise RecipientRefused(f"attestation document refused ({e.reason}): {e}") from e
    age = now - verified.timestamp
    if age > policy.max_document_age or age < -_CLOCK_SKEW:
        raise RecipientRefused("attestation document is not fresh")
    if verified.public_key is None:
        raise RecipientRefused("attestation document has no public key", invalid_request=True)
    try:
        public_key = load_der_public_key(verified.public_key)
    except (ValueError, TypeError) as e:
        raise RecipientRefused(
            "attestation document public key is not DER SubjectPublicKeyInfo",
            invalid_request=True,
        ) from e
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_RECIPIENT_RSA_BITS:
        raise RecipientRefused(
            f"attestation document public key is not RSA-{MIN_RECIPIENT_RSA_BITS} or larger",
            invalid_request=True,
        )
    return public_key
