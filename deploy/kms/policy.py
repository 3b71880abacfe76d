#!/usr/bin/env python3
"""Enclave measurements and the KMS key policy that releases data keys only to them.

Standard library only, so it runs on the build machine and the parent instance
without the project's virtualenv. Three commands (deploy/README.md, "2. Build
and measure" and deploy/kms/README.md):

    policy.py pcrs BUILD_JSON [--commit C] [--eif PATH]   # nitro-cli output -> pcrs.json
    policy.py same-pcrs A.pcrs.json B.pcrs.json           # reproducibility check
    policy.py render --account ID --host-role R --admin-role A IMAGE.pcrs.json...

The rendered policy (AWS KMS Developer Guide, "Condition keys for AWS Nitro
Enclaves"; "Key policies in AWS KMS"):

- ``KeyAdministration``: the admin role manages the key but has no
  cryptographic operation, and there is no ``arn:aws:iam::ACCOUNT:root``
  statement, so no IAM policy can grant Decrypt on the side.
- ``EnclaveImage<pcr0 prefix>``, one per allowed image: the parent's role may
  call ``kms:Decrypt`` and ``kms:GenerateDataKey`` only with a ``Recipient``
  attestation document whose PCR0, PCR1, PCR2 (and PCR8, the signing
  certificate, for signed images) equal the image's
  (``kms:RecipientAttestation:PCR<n>``, ``StringEqualsIgnoreCase``; PCR0 is
  also ``kms:RecipientAttestation:ImageSha384``), and only with exactly the
  encryption-context keys the enclave binds (enclave/seal.py). One statement
  per image keeps each image's PCRs together: a mix of two images' PCRs
  matches none.
- ``DenyUnattestedUse``: everyone, admins included, is denied those operations
  unless the document's PCR0 is one of the allowed images'. A condition key
  missing from the request (no attestation) makes the negated condition
  true, so the deny applies.
- ``DenyReEncrypt``: ReEncrypt would move a sealed data key under another
  KMS key without attestation; the enclave never uses it.

During an upgrade the policy lists both the running and the new image; after
the rollback window the old one is removed (deploy/kms/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ENCRYPTION_CONTEXT_KEYS",
    "ENCLAVE_ACTIONS",
    "MeasurementError",
    "load_pcrs",
    "main",
    "pcrs_document",
    "render_key_policy",
]

PCR_CONDITION: Final = "kms:RecipientAttestation:PCR{}"
ENCLAVE_ACTIONS: Final = ("kms:Decrypt", "kms:GenerateDataKey")
ENCRYPTION_CONTEXT_KEYS: Final = (
    "shardkeep:wallet-id",
    "shardkeep:share-index",
    "shardkeep:scheme",
    "shardkeep:epoch",
)
"""The keys of ``SealBinding.encryption_context()`` (enclave/seal.py)."""
ADMIN_ACTIONS: Final = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)
MEASURED_PCRS: Final = ("PCR0", "PCR1", "PCR2")
SIGNING_PCR: Final = "PCR8"
_PCR_HEX: Final = re.compile(r"[0-9a-f]{96}")
_ACCOUNT: Final = re.compile(r"[0-9]{12}")
_ROLE: Final = re.compile(r"[A-Za-z0-9+=,.@_/-]{1,512}")


class MeasurementError(ValueError):
    """A measurements file is malformed, or describes a debug-mode or unusable image."""


def _pcr_value(name: str, value: object) -> str:
    if not isinstance(value, str) or not _PCR_HEX.fullmatch(value.lower()):
        raise MeasurementError(f"{name} must be 96 hex digits (SHA-384)")
    if set(value) == {"0"}:
        # A debug-mode enclave attests all-zero PCRs: never pin those.
        raise MeasurementError(f"{name} is all zeros")
    return value.lower()


def load_pcrs(document: Mapping[str, Any]) -> dict[str, str]:
    """Extract PCR0-2 (and PCR8 if present) from nitro-cli output or a pcrs.json.

    Arguments:
        document: ``nitro-cli build-enclave`` / ``describe-eif`` JSON (with a
            ``Measurements`` object) or a pcrs.json written by ``pcrs``.

    Returns:
        ``{"PCR0": hex, "PCR1": hex, "PCR2": hex[, "PCR8": hex]}``, lower-case.

    Raises:
        MeasurementError: a PCR is missing, not SHA-384 hex, or all zeros, or
            the hash algorithm is not SHA-384.
    """
    measurements = document.get("Measurements", document)
    if not isinstance(measurements, Mapping):
        raise MeasurementError("Measurements must be an object")
    algorithm = measurements.get("HashAlgorithm", measurements.get("hash_algorithm", "Sha384"))
    if "sha384" not in str(algorithm).lower():
        raise MeasurementError(f"unexpected hash algorithm {algorithm!r}")
    pcrs: dict[str, str] = {}
    for name in MEASURED_PCRS:
        if name not in measurements:
            raise MeasurementError(f"{name} is missing")
        pcrs[name] = _pcr_value(name, measurements[name])
    if SIGNING_PCR in measurements:
        pcrs[SIGNING_PCR] = _pcr_value(SIGNING_PCR, measurements[SIGNING_PCR])
    return pcrs


def pcrs_document(
    pcrs: Mapping[str, str], *, commit: str | None = None, eif_sha256: str | None = None
) -> dict[str, str]:
    """The release record clients pin: PCRs, and what they were built from."""
    record = {"hash_algorithm": "SHA384"}
    if commit:
        record["commit"] = commit
    if eif_sha256:
        record["eif_sha256"] = eif_sha256
    record.update(pcrs)
    return record


def _statement_id(pcrs: Mapping[str, str]) -> str:
    return "EnclaveImage" + pcrs["PCR0"][:16]


def render_key_policy(
    *,
    account_id: str,
    host_role: str,
    admin_role: str,
    images: Sequence[Mapping[str, str]],
    require_signed: bool = True,
) -> dict[str, Any]:
    """Render the key policy for the sealing key.

    Arguments:
        account_id: the 12-digit AWS account id.
        host_role: the parent instance's IAM role name (path allowed).
        admin_role: the key administrators' IAM role name.
        images: the allowed images' PCRs (:func:`load_pcrs`), newest last.
        require_signed: refuse images without PCR8 (unsigned EIFs).

    Returns:
        The policy document (serialise with ``json.dumps``).

    Raises:
        MeasurementError: no image, a duplicate image, an unsigned image when
            signatures are required.
        ValueError: a malformed account id or role name.
    """
    if not _ACCOUNT.fullmatch(account_id):
        raise ValueError("account_id must be 12 digits")
    for role in (host_role, admin_role):
        if not _ROLE.fullmatch(role):
            raise ValueError(f"invalid IAM role name {role!r}")
    if host_role == admin_role:
        raise ValueError("the host role must not be the key administrator")
    if not images:
        raise MeasurementError("at least one image must be allowed")
    pcr0s = [image["PCR0"] for image in images]
    if len(set(pcr0s)) != len(pcr0s):
        raise MeasurementError("an image is listed twice")
    for image in images:
        if require_signed and SIGNING_PCR not in image:
            raise MeasurementError(f"image {image['PCR0'][:16]}… is not signed (no PCR8)")

    def arn(role: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{role}"

    statements: list[dict[str, Any]] = [
        {
            "Sid": "KeyAdministration",
            "Effect": "Allow",
            "Principal": {"AWS": arn(admin_role)},
            "Action": list(ADMIN_ACTIONS),
            "Resource": "*",
        }
    ]
    for image in images:
        attested = {
            PCR_CONDITION.format(name[3:]): image[name]
            for name in (*MEASURED_PCRS, SIGNING_PCR)
            if name in image
        }
        statements.append(
            {
                "Sid": _statement_id(image),
                "Effect": "Allow",
                "Principal": {"AWS": arn(host_role)},
                "Action": list(ENCLAVE_ACTIONS),
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": attested,
                    "ForAllValues:StringEquals": {
                        "kms:EncryptionContextKeys": list(ENCRYPTION_CONTEXT_KEYS)
                    },
                    "Null": {"kms:EncryptionContextKeys": "false"},
                },
            }
        )
    statements.append(
        {
            "Sid": "DenyUnattestedUse",
            "Effect": "Deny",
            "Principal": "*",
            "Action": [*ENCLAVE_ACTIONS, "kms:GenerateDataKeyPair", "kms:DeriveSharedSecret"],
            "Resource": "*",
            "Condition": {
                "StringNotEqualsIgnoreCase": {PCR_CONDITION.format(0): pcr0s},
            },
        }
    )
    statements.append(
        {
            "Sid": "DenyReEncrypt",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["kms:ReEncrypt*"],
            "Resource": "*",
        }
    )
    return {"Version": "2012-10-17", "Id": "shardkeep-seal", "Statement": statements}


def _read_json(path: Path) -> Mapping[str, Any]:
    document = json.loads(path.read_text())
    if not isinstance(document, Mapping):
        raise MeasurementError(f"{path} is not a JSON object")
    return document


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(prog="policy.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pcrs = commands.add_parser("pcrs", help="nitro-cli build output -> pcrs.json")
    pcrs.add_argument("build_json", type=Path)
    pcrs.add_argument("--commit")
    pcrs.add_argument("--eif", type=Path)
    same = commands.add_parser("same-pcrs", help="exit 1 unless two builds have equal PCRs")
    same.add_argument("first", type=Path)
    same.add_argument("second", type=Path)
    render = commands.add_parser("render", help="render the KMS key policy")
    render.add_argument("--account", required=True)
    render.add_argument("--host-role", required=True)
    render.add_argument("--admin-role", required=True)
    render.add_argument("--allow-unsigned", action="store_true", help="images without PCR8")
    render.add_argument("images", type=Path, nargs="+", help="pcrs.json of each allowed image")
    args = parser.parse_args(argv)
    try:
        if args.command == "pcrs":
            values = load_pcrs(_read_json(args.build_json))
            eif_sha256 = _sha256_file(args.eif) if args.eif else None
            record = pcrs_document(values, commit=args.commit, eif_sha256=eif_sha256)
            print(json.dumps(record, indent=2))
        elif args.command == "same-pcrs":
            first = load_pcrs(_read_json(args.first))
            second = load_pcrs(_read_json(args.second))
            if first != second:
                differ = sorted(
                    k for k in first.keys() | second.keys() if first.get(k) != second.get(k)
                )
                print(f"policy.py: the builds differ in {', '.join(differ)}", file=sys.stderr)
                return 1
        else:
            policy = render_key_policy(
                account_id=args.account,
                host_role=args.host_role,
                admin_role=args.admin_role,
                images=[load_pcrs(_read_json(path)) for path in args.images],
                require_signed=not args.allow_unsigned,
            )
            print(json.dumps(policy, indent=2))
    except (OSError, ValueError) as e:
        print(f"policy.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
