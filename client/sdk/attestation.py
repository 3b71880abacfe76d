"""Verifier for AWS Nitro Enclaves attestation documents (docs/architecture.md).

A document is a ``COSE_Sign1`` structure (RFC 9052 §4.2), tagged (CBOR tag 18)
or untagged, whose payload is the CBOR attestation document defined in
aws-nitro-enclaves-nsm-api ``docs/attestation_process.md`` §2.2 (below "AWS
§…"). :func:`verify` follows the flow of AWS §3.2 in this order:

1. decode the ``COSE_Sign1`` array and its protected header, which must name
   ES384 (COSE algorithm -35, RFC 9053 §2.1);
2. syntactic validation of the payload (AWS §3.2.2);
3. the certificate chain ``certificate -> cabundle[n-1] -> ... -> cabundle[1]
   -> root`` (AWS §3.2.3): ``cabundle[0]`` must be the trusted root, each
   signature, each validity window at the verification time, then RFC 5280
   path validation by ``cryptography``'s verifier, plus AWS's key-usage rule
   for the signing certificate;
4. the ES384 signature over ``Sig_structure`` (RFC 9052 §4.4) with the signing
   certificate's key, trusted only once its chain is;
5. the caller's policy: the document time lies in the signing certificate's
   window, debug-mode (all-zero) image PCRs, expected PCRs, the nonce.

Error policy: anything wrong with the document raises :class:`AttestationError`
whose ``reason`` is a short code and whose message says precisely what failed;
a bad argument from the caller (an unparsable root, a naive datetime, a PCR of
the wrong size) raises ``InvalidInput`` (an ``InputError``). Both are
``WalletError``s. Attestation documents carry no secret, so messages may quote
PCR values and certificate subjects.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Final, Literal, NewType

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from client.errors import InvalidInput, WalletError, sdk_boundary
from tss.errors import InternalError

__all__ = [
    # Functions
    "verify",
    "default_root_certificate",
    # Exceptions
    "AttestationError",
    # Types
    "AttestationDocument",
    "DerCertificate",
    "Reason",
    # Constants
    "AWS_NITRO_ROOT_G1_SHA256",
]

DerCertificate = NewType("DerCertificate", bytes)
"""An X.509 certificate, DER encoded."""

Reason = Literal[
    "malformed",  # not a well-formed COSE_Sign1 / CBOR item
    "unsupported-algorithm",  # protected header does not name ES384
    "invalid-document",  # payload breaks AWS §3.2.2 (fields, types, sizes)
    "untrusted-root",  # cabundle[0] is not the trusted root
    "invalid-chain",  # a certificate signature, extension or path rule fails
    "not-yet-valid",  # a chain certificate's validity starts after the verification time
    "expired",  # a chain certificate's validity ended before the verification time
    "bad-signature",  # the COSE signature does not verify under the signing certificate
    "invalid-timestamp",  # document time outside the signing certificate's validity
    "debug-mode",  # all-zero image PCRs: the enclave runs in debug mode
    "pcr-mismatch",  # a PCR differs from the expected value
    "nonce-mismatch",  # the nonce is missing or differs from the expected one
]

AWS_NITRO_ROOT_G1_SHA256: Final = bytes.fromhex(
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
)
"""SHA-256 of the DER encoding of the AWS Nitro Enclaves root G1 certificate
(CN=aws.nitro-enclaves, valid 2019-10-28 to 2049-10-28); the bundled
``nitro_root.pem`` must match it."""

# RFC 9052 §4.2 (COSE_Sign1 tag), §3.1 (header labels); RFC 9053 §2.1 (ES384).
_COSE_SIGN1_TAG: Final = 18
_HEADER_ALG: Final = 1
_HEADER_CRIT: Final = 2
_ALG_ES384: Final = -35
_ES384_COORDINATE_SIZE: Final = 48  # r and s are each 48 bytes for P-384
_SIG_CONTEXT: Final = "Signature1"

# AWS §3.1: payload bstr .size (1..16384). The document cap leaves room for
# the COSE envelope and rejects absurd inputs before any decoding.
_MAX_PAYLOAD_SIZE: Final = 16384
_MAX_DOCUMENT_SIZE: Final = 32768
_MAX_CBOR_DEPTH: Final = 8  # the deepest legitimate item is tag/array/map/map

# AWS §2.2 / §3.2.2.2 sizes. The §2.2 CDDL gives user_data and nonce
# 0..1024 bytes while the §3.2.2.2 prose says 0..512; we follow the CDDL.
_MAX_CERT_SIZE: Final = 1024
_MAX_USER_DATA_SIZE: Final = 1024
_PCR_SIZES: Final = frozenset({32, 48, 64})
_PCR_COUNT: Final = 32
_IMAGE_PCRS: Final = (0, 1, 2)  # enclave image, kernel+bootstrap, application

_REQUIRED_FIELDS: Final = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL_FIELDS: Final = ("public_key", "user_data", "nonce")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIMESTAMP_MS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)


class AttestationError(WalletError):
    """An attestation document failed verification.

    Attributes:
        reason: a :data:`Reason` code naming the failed check.
    """

    error_code = "attestation"

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason: Reason = reason


@dataclass(frozen=True)
class AttestationDocument:
    """The payload of a verified attestation document (AWS §2.2).

    ``pcrs`` maps each locked PCR index to its value; ``cabundle`` is in the
    document's order, root first. ``public_key``, ``user_data`` and ``nonce``
    are ``None`` when the enclave did not supply them.
    """

    module_id: str
    timestamp: datetime
    digest: str
    pcrs: dict[int, bytes] = field(hash=False)
    certificate: DerCertificate
    cabundle: tuple[DerCertificate, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None


### Public API


@sdk_boundary
def verify(
    document: bytes,
    *,
    root_certificate: bytes | None = None,
    at: datetime | None = None,
    expected_pcrs: Mapping[int, bytes] | None = None,
    nonce: bytes | None = None,
    allow_debug: bool = False,
) -> AttestationDocument:
    """Verify a Nitro attestation document and return its payload.

    Arguments:
        document: the ``COSE_Sign1`` bytes the NSM returned (tagged or not),
            at most 32 KiB.
        root_certificate: the trust anchor, PEM or DER; ``None`` uses the
            bundled AWS Nitro root G1, pinned by :data:`AWS_NITRO_ROOT_G1_SHA256`.
        at: the time at which every certificate of the chain must be valid,
            timezone-aware; ``None`` means now. Pass the document's own
            timestamp only to inspect an archived document.
        expected_pcrs: PCR index (0-31) -> expected value (32, 48 or 64
            bytes); each must be present and equal.
        nonce: the caller's challenge (at most 1024 bytes); when given, the
            document must carry exactly this nonce.
        allow_debug: accept all-zero image PCRs (0-2), i.e. a debug-mode
            enclave whose memory the host can read. Tests only.

    Returns:
        The verified :class:`AttestationDocument`.

    Raises:
        AttestationError: the document is malformed, not signed by a chain to
            the root valid at ``at``, or fails the PCR / nonce policy;
            ``reason`` says which.
        InvalidInput: a bad argument (root not a certificate, naive ``at``,
            malformed ``expected_pcrs`` or ``nonce``).
    """
    when = datetime.now(UTC) if at is None else _aware(at)
    expected = _check_expected_pcrs(expected_pcrs or {})
    if nonce is not None and len(nonce) > _MAX_USER_DATA_SIZE:
        raise InvalidInput(f"nonce is {len(nonce)} bytes, at most {_MAX_USER_DATA_SIZE}")
    root = _trusted_root(root_certificate)

    protected, payload, signature = _parse_cose_sign1(document)
    doc = _parse_payload(payload)
    leaf = _verify_chain(doc, root, when)
    _verify_cose_signature(leaf, protected, payload, signature)
    _check_timestamp(doc.timestamp, leaf)
    if not allow_debug:
        _check_not_debug(doc.pcrs)
    _check_pcrs(doc.pcrs, expected)
    if nonce is not None:
        _check_nonce(doc.nonce, nonce)
    return doc


@sdk_boundary
def default_root_certificate() -> bytes:
    """Return the bundled AWS Nitro Enclaves root G1 certificate, DER encoded.

    Returns:
        The DER certificate, whose SHA-256 is :data:`AWS_NITRO_ROOT_G1_SHA256`.

    Raises:
        InternalError: the bundled file does not match the pinned hash.
    """
    return _bundled_root().public_bytes(Encoding.DER)


### Trust anchor


@lru_cache(maxsize=1)
def _bundled_root() -> x509.Certificate:
    pem = resources.files(__package__ or "client").joinpath("nitro_root.pem").read_bytes()
    root = x509.load_pem_x509_certificate(pem)
    # Pinned by hash so that a swapped file in an installed package cannot
    # silently change whom we trust (docs/architecture.md, "The enclave boundary").
    if hashlib.sha256(root.public_bytes(Encoding.DER)).digest() != AWS_NITRO_ROOT_G1_SHA256:
        raise InternalError("bundled nitro_root.pem does not match the pinned AWS root G1 hash")
    return root


def _trusted_root(root_certificate: bytes | None) -> x509.Certificate:
    if root_certificate is None:
        return _bundled_root()
    try:
        if root_certificate.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(root_certificate)
        return x509.load_der_x509_certificate(root_certificate)
    except ValueError as e:
        raise InvalidInput("root_certificate is neither a PEM nor a DER X.509 certificate") from e


### COSE_Sign1 (RFC 9052)


def _decode_cbor(data: bytes, what: str) -> object:
    """Decode exactly one CBOR item; duplicate map keys and trailing bytes are errors."""
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(stream, allow_duplicate_keys=False, max_depth=_MAX_CBOR_DEPTH)
        value = decoder.decode()
    except (cbor2.CBORDecodeError, ValueError, OverflowError) as e:
        raise AttestationError("malformed", f"{what} is not valid CBOR: {e}") from e
    trailing = len(data) - stream.tell()
    if trailing:
        raise AttestationError("malformed", f"{what} has {trailing} bytes after its CBOR item")
    return value


def _parse_cose_sign1(document: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (protected header bstr, payload, signature) after the RFC 9052 §4.2 checks."""
    if not isinstance(document, bytes):
        raise InvalidInput("document must be bytes")
    if not 0 < len(document) <= _MAX_DOCUMENT_SIZE:
        raise AttestationError(
            "malformed", f"document is {len(document)} bytes, expected 1..{_MAX_DOCUMENT_SIZE}"
        )
    item = _decode_cbor(document, "document")
    if isinstance(item, cbor2.CBORTag):
        if item.tag != _COSE_SIGN1_TAG:
            raise AttestationError(
                "malformed", f"document has CBOR tag {item.tag}, expected COSE_Sign1 (18) or none"
            )
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise AttestationError("malformed", "document is not a COSE_Sign1 array of 4 elements")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes):
        raise AttestationError("malformed", "COSE protected header is not a byte string")
    if not isinstance(unprotected, Mapping):
        raise AttestationError("malformed", "COSE unprotected header is not a map")
    if not isinstance(payload, bytes):
        raise AttestationError("malformed", "COSE payload is not a byte string (detached?)")
    if not isinstance(signature, bytes):
        raise AttestationError("malformed", "COSE signature is not a byte string")
    if not 0 < len(payload) <= _MAX_PAYLOAD_SIZE:
        raise AttestationError(
            "malformed", f"payload is {len(payload)} bytes, expected 1..{_MAX_PAYLOAD_SIZE}"
        )

    # RFC 9052 §3: a zero-length protected bstr is the empty map.
    header = _decode_cbor(protected, "COSE protected header") if protected else {}
    if not isinstance(header, Mapping):
        raise AttestationError("malformed", "COSE protected header is not a map")
    # We understand no critical parameter, so any "crit" makes the message
    # unprocessable (RFC 9052 §3.1); "alg" must be integrity-protected, so it
    # may not hide in the unprotected bucket either.
    if _HEADER_CRIT in header or _HEADER_CRIT in unprotected:
        raise AttestationError("malformed", "COSE header lists critical parameters")
    if _HEADER_ALG in unprotected:
        raise AttestationError("malformed", "COSE algorithm is in the unprotected header")
    alg = header.get(_HEADER_ALG)
    if type(alg) is not int or alg != _ALG_ES384:
        raise AttestationError(
            "unsupported-algorithm",
            f"COSE protected header algorithm is {alg!r}, expected ES384 (-35)",
        )
    if len(signature) != 2 * _ES384_COORDINATE_SIZE:
        raise AttestationError(
            "bad-signature",
            f"signature is {len(signature)} bytes, ES384 needs {2 * _ES384_COORDINATE_SIZE}",
        )
    return protected, payload, signature


def _verify_cose_signature(
    leaf: x509.Certificate, protected: bytes, payload: bytes, signature: bytes
) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InternalError("signing certificate key type was not checked with its chain")
    # RFC 9052 §4.4: Sig_structure = ["Signature1", body_protected,
    # external_aad, payload] with an empty external_aad. RFC 9053 §2.1: the
    # signature is r || s, fixed width; `cryptography` wants DER.
    to_be_signed = cbor2.dumps([_SIG_CONTEXT, protected, b"", payload])
    r = int.from_bytes(signature[:_ES384_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[_ES384_COORDINATE_SIZE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise AttestationError(
            "bad-signature", "COSE signature does not verify under the signing certificate's key"
        ) from e


### Payload (AWS §3.2.2)


def _invalid(message: str) -> AttestationError:
    return AttestationError("invalid-document", message)


def _parse_payload(payload: bytes) -> AttestationDocument:
    fields = _decode_cbor(payload, "payload")
    if not isinstance(fields, Mapping):
        raise _invalid("payload is not a CBOR map")
    for key in fields:
        if not isinstance(key, str):
            raise _invalid(f"payload key {key!r} is not a text string")
        if key not in _REQUIRED_FIELDS and key not in _OPTIONAL_FIELDS:
            raise _invalid(f"payload has unknown field {key!r}")  # AWS §3.2.2.1
    for name in _REQUIRED_FIELDS:
        if fields.get(name) is None:
            raise _invalid(f"payload lacks mandatory field {name!r}")

    module_id = fields["module_id"]
    if not isinstance(module_id, str) or not module_id:
        raise _invalid("module_id must be a non-empty text string")
    digest = fields["digest"]
    if not isinstance(digest, str) or digest != "SHA384":
        raise _invalid(f"digest is {digest!r}, expected 'SHA384'")
    timestamp = fields["timestamp"]
    if type(timestamp) is not int or not 0 < timestamp <= _MAX_TIMESTAMP_MS:
        raise _invalid(f"timestamp {timestamp!r} is not a positive millisecond count")

    pcrs = fields["pcrs"]
    if not isinstance(pcrs, Mapping) or not 1 <= len(pcrs) <= _PCR_COUNT:
        raise _invalid(f"pcrs must be a map of 1..{_PCR_COUNT} entries")
    parsed_pcrs: dict[int, bytes] = {}
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index < _PCR_COUNT:
            raise _invalid(f"PCR index {index!r} is not an integer in 0..{_PCR_COUNT - 1}")
        if not isinstance(value, bytes) or len(value) not in _PCR_SIZES:
            raise _invalid(f"PCR{index} must be a byte string of 32, 48 or 64 bytes")
        parsed_pcrs[index] = value

    certificate = _bytes_field(fields, "certificate", 1, _MAX_CERT_SIZE)
    if certificate is None:
        raise InternalError("mandatory certificate vanished after the presence check")
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, list | tuple) or not cabundle:
        raise _invalid("cabundle must be a non-empty array")
    for i, cert in enumerate(cabundle):
        if not isinstance(cert, bytes) or not 1 <= len(cert) <= _MAX_CERT_SIZE:
            raise _invalid(f"cabundle[{i}] must be a byte string of 1..{_MAX_CERT_SIZE} bytes")

    return AttestationDocument(
        module_id=module_id,
        timestamp=_EPOCH + timedelta(milliseconds=timestamp),
        digest=digest,
        pcrs=dict(sorted(parsed_pcrs.items())),
        certificate=DerCertificate(certificate),
        cabundle=tuple(DerCertificate(c) for c in cabundle),
        # AWS §3.2.2.2 gives public_key 1..1024 bytes. The NSM encodes an
        # absent optional field as CBOR null (the real documents do), even
        # though AWS §3.2.2.1 says no field may be null: null means absent.
        public_key=_bytes_field(fields, "public_key", 1, _MAX_USER_DATA_SIZE),
        user_data=_bytes_field(fields, "user_data", 0, _MAX_USER_DATA_SIZE),
        nonce=_bytes_field(fields, "nonce", 0, _MAX_USER_DATA_SIZE),
    )


def _bytes_field(
    fields: Mapping[str, object], name: str, min_len: int, max_len: int
) -> bytes | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, bytes) or not min_len <= len(value) <= max_len:
        raise _invalid(f"{name} must be a byte string of {min_len}..{max_len} bytes")
    return value


### Certificate chain (AWS §3.2.3)


def _describe(label: str, cert: x509.Certificate) -> str:
    return f"{label} ({cert.subject.rfc4514_string()})"


def _load_certificate(der: bytes, label: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography decodes names, extensions and the key lazily; decode
        # them now so that a mangled certificate is reported here, by name,
        # rather than escaping from a later check as a bare ValueError.
        _ = (cert.subject, cert.issuer, cert.extensions, cert.public_key())
        _ = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm) as e:
        raise AttestationError(
            "invalid-chain", f"{label} is not a usable DER X.509 certificate: {e}"
        ) from e
    return cert


def _verify_chain(
    doc: AttestationDocument, root: x509.Certificate, at: datetime
) -> x509.Certificate:
    """Validate certificate -> cabundle[n-1] -> ... -> cabundle[1] -> root at ``at``.

    Returns the signing certificate, now trusted.
    """
    root_der = root.public_bytes(Encoding.DER)
    # AWS §3.2.3: the bundle is [ROOT, INTERM_1, ..., INTERM_N]. Its root is
    # only a hint: it must be the anchor we were given, byte for byte.
    if doc.cabundle[0] != root_der:
        raise AttestationError(
            "untrusted-root",
            "cabundle[0] is not the trusted root certificate "
            f"(sha256 {hashlib.sha256(doc.cabundle[0]).hexdigest()}, "
            f"trusted {hashlib.sha256(root_der).hexdigest()})",
        )
    leaf = _load_certificate(doc.certificate, "certificate")
    intermediates = [
        (f"cabundle[{i}]", _load_certificate(doc.cabundle[i], f"cabundle[{i}]"))
        for i in range(len(doc.cabundle) - 1, 0, -1)
    ]
    path = [("certificate", leaf), *intermediates, ("root", root)]

    # Our own pass over the path in the order AWS specifies, so that each
    # failure names the certificate at fault; cryptography's verifier below
    # then applies the full RFC 5280 rules as the final word.
    for (label, cert), (issuer_label, issuer) in itertools.pairwise(path):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise AttestationError(
                "invalid-chain",
                f"{_describe(label, cert)} is not issued by {_describe(issuer_label, issuer)}: "
                f"{e or type(e).__name__}",
            ) from e
    stamp = at.isoformat()
    for label, cert in path:
        if at < cert.not_valid_before_utc:
            raise AttestationError(
                "not-yet-valid",
                f"{_describe(label, cert)} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()} (verification time {stamp})",
            )
        if at > cert.not_valid_after_utc:
            raise AttestationError(
                "expired",
                f"{_describe(label, cert)} expired at "
                f"{cert.not_valid_after_utc.isoformat()} (verification time {stamp})",
            )

    _rfc5280_path_validation(leaf, [cert for _, cert in intermediates], root, at)

    # AWS §3.2.3.3: the signing certificate is an end entity whose key signs.
    # cryptography's end-entity policy does not require keyUsage, so check it.
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as e:
        raise AttestationError("invalid-chain", "certificate has no keyUsage extension") from e
    if not key_usage.digital_signature:
        raise AttestationError("invalid-chain", "certificate keyUsage lacks digitalSignature")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError("invalid-chain", "certificate key is not a P-384 ECDSA key")
    return leaf


def _rfc5280_path_validation(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    root: x509.Certificate,
    at: datetime,
) -> None:
    # cryptography's verifier implements RFC 5280 path validation under the
    # CA/Browser Forum profile: signatures, validity, basicConstraints (CA
    # flag, pathLenConstraint), keyUsage keyCertSign on CAs, unknown critical
    # extensions. Its defaults reject real Nitro chains only because the
    # instance-level CA and the signing certificate carry no
    # authorityKeyIdentifier (which RFC 5280 §4.2.1.1 wants, but which path
    # validation in §6 never uses) and the signing certificate has no
    # subjectAltName (it names no host). So we use its verifier with exactly
    # those two extensions made optional, instead of re-implementing path
    # validation by hand.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None
    )
    ee_policy = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    )
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as e:
        raise AttestationError("invalid-chain", f"certificate path validation failed: {e}") from e


### Policy checks


def _check_timestamp(timestamp: datetime, leaf: x509.Certificate) -> None:
    # The NSM signs with a short-lived certificate (three hours on AWS); a
    # document dated outside its window was not produced while it was valid.
    if not leaf.not_valid_before_utc <= timestamp <= leaf.not_valid_after_utc:
        raise AttestationError(
            "invalid-timestamp",
            f"document timestamp {timestamp.isoformat()} is outside the signing "
            f"certificate's validity {leaf.not_valid_before_utc.isoformat()} .. "
            f"{leaf.not_valid_after_utc.isoformat()}",
        )


def _check_not_debug(pcrs: Mapping[int, bytes]) -> None:
    # An enclave started with --debug-mode reports all-zero PCRs; its memory
    # is readable from the host, so it must never hold a server share.
    for index in _IMAGE_PCRS:
        value = pcrs.get(index)
        if value is None:
            raise AttestationError(
                "debug-mode", f"document has no PCR{index}, so the enclave image is not measured"
            )
        if not any(value):
            raise AttestationError(
                "debug-mode", f"PCR{index} is all zeros: the enclave runs in debug mode"
            )


def _check_expected_pcrs(expected: Mapping[int, bytes]) -> dict[int, bytes]:
    checked: dict[int, bytes] = {}
    for index, value in expected.items():
        if type(index) is not int or not 0 <= index < _PCR_COUNT:
            raise InvalidInput(f"expected PCR index {index!r} is not in 0..{_PCR_COUNT - 1}")
        if not isinstance(value, bytes) or len(value) not in _PCR_SIZES:
            raise InvalidInput(f"expected PCR{index} must be 32, 48 or 64 bytes")
        checked[index] = value
    return checked


def _check_pcrs(pcrs: Mapping[int, bytes], expected: Mapping[int, bytes]) -> None:
    problems = []
    for index in sorted(expected):
        actual = pcrs.get(index)
        if actual is None:
            problems.append(f"PCR{index} is absent")
        elif not hmac.compare_digest(actual, expected[index]):
            problems.append(f"PCR{index} is {actual.hex()}, expected {expected[index].hex()}")
    if problems:
        raise AttestationError("pcr-mismatch", "; ".join(problems))


def _check_nonce(actual: bytes | None, expected: bytes) -> None:
    if actual is None:
        raise AttestationError("nonce-mismatch", "document carries no nonce")
    if not hmac.compare_digest(actual, expected):
        raise AttestationError("nonce-mismatch", "document nonce differs from the expected nonce")


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput("at must be a timezone-aware datetime")
    return at.astimezone(UTC)
