#!/usr/bin/env python3
"""First-boot check of a parent: is the running enclave the released image, on a real NSM?

Run on the parent, as the ``shardkeep`` user, once the host has provisioned
the enclave (deploy/README.md, "6. Health-check"):

    python first_boot_check.py --pcrs shardkeep-<commit>.pcrs.json

It asks the enclave, through the bridge socket, for an attestation document
on a fresh random nonce and checks it as a client would
(``client.sdk.attestation.verify``): COSE signature, certificate chain to the AWS
Nitro root, the nonce, not a debug-mode enclave. Then it prints every PCR the
live document reports, compares PCR0/1/2 (and PCR8 when present) with the
release's ``pcrs.json`` and checks that the document attests the enclave's
party key (``public_key`` equals ``GetStatus.static_key``). Exit status 0 when
all holds, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import grpc

from client.sdk.attestation import AttestationDocument, AttestationError, verify
from shardkeep import eventloop
from shardkeep.v1 import enclave_pb2, enclave_pb2_grpc

DEFAULT_ENCLAVE: Final = "unix:/run/shardkeep-enclave/enclave.sock"
_PINNED: Final = ("PCR0", "PCR1", "PCR2", "PCR8")  # what build.sh writes and clients pin
_TIMEOUT_SECONDS: Final = 10.0


class CheckFailed(Exception):
    """The running enclave is not the released image, or its document does not verify."""


def expected_pcrs(pcrs_json: Mapping[str, object]) -> dict[int, bytes]:
    """PCR index -> value from a release's ``pcrs.json`` (deploy/kms/policy.py ``pcrs``)."""
    expected: dict[int, bytes] = {}
    for name in _PINNED:
        value = pcrs_json.get(name)
        if value is None and name == "PCR8":
            continue  # an unsigned EIF has no PCR8
        if not isinstance(value, str):
            raise CheckFailed(f"pcrs.json has no {name}")
        expected[int(name[3:])] = bytes.fromhex(value)
    return expected


async def fetch(address: str) -> tuple[bytes, bytes, bytes]:
    """Ask the enclave for its party key and a document on a fresh nonce.

    Returns:
        ``(nonce, document, static_key)``.
    """
    nonce = secrets.token_bytes(32)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = enclave_pb2_grpc.EnclaveStub(channel)
        try:
            status = await stub.GetStatus(enclave_pb2.GetStatusRequest(), timeout=_TIMEOUT_SECONDS)
            reply = await stub.GetAttestation(
                enclave_pb2.GetAttestationRequest(nonce=nonce), timeout=_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as e:
            raise CheckFailed(f"enclave at {address}: {e.code().name}: {e.details()}") from e
    return nonce, reply.document, status.static_key


def verify_live(
    document: bytes, nonce: bytes, root_certificate: bytes | None
) -> AttestationDocument:
    """Verify the live document as a client would (chain, signature, nonce, not debug).

    Raises:
        CheckFailed: the document does not verify, with the verifier's reason.
    """
    try:
        return verify(document, root_certificate=root_certificate, nonce=nonce)
    except AttestationError as e:
        raise CheckFailed(f"the enclave's document does not verify: {e}") from e


def compare(doc: AttestationDocument, static_key: bytes, expected: Mapping[int, bytes]) -> None:
    """Compare a verified document with the release's PCRs and the enclave's party key.

    Raises:
        CheckFailed: naming every PCR that differs, or the unattested key.
    """
    differing = [i for i, value in sorted(expected.items()) if doc.pcrs.get(i) != value]
    if differing:
        names = ", ".join(f"PCR{i}" for i in differing)
        raise CheckFailed(f"{names} of the running enclave differ from the release's pcrs.json")
    if not static_key or doc.public_key != static_key:
        raise CheckFailed("the document does not attest the enclave's party key")


def report(doc: AttestationDocument, expected: Mapping[int, bytes]) -> str:
    """The live PCRs, one per line, marking those pinned by the release."""
    lines = [f"module {doc.module_id}, document of {doc.timestamp.isoformat()}"]
    for index, value in sorted(doc.pcrs.items()):
        mark = "  (pinned by pcrs.json)" if index in expected else ""
        lines.append(f"PCR{index:<2} {value.hex()}{mark}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="first_boot_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--pcrs", type=Path, required=True, help="the release's pcrs.json")
    parser.add_argument(
        "--enclave", default=DEFAULT_ENCLAVE, help=f"the bridge socket (default {DEFAULT_ENCLAVE})"
    )
    parser.add_argument("--root", type=Path, help="trust anchor PEM (default: the AWS Nitro root)")
    args = parser.parse_args(argv)
    root = args.root.read_bytes() if args.root else None
    try:
        expected = expected_pcrs(json.loads(args.pcrs.read_text()))
        nonce, document, static_key = eventloop.run(fetch(args.enclave))
        doc = verify_live(document, nonce, root)
        print(report(doc, expected))  # the live PCRs, also when they differ
        compare(doc, static_key, expected)
    except (CheckFailed, OSError, ValueError) as e:
        print(f"first-boot check FAILED: {e}", file=sys.stderr)
        return 1
    print("first-boot check passed: the enclave runs the released image and attests its key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
