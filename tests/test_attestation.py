"""client.sdk.attestation: a real AWS document, simulated-NSM documents, each way to break them."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from client.sdk.attestation import (
    AWS_NITRO_ROOT_G1_SHA256,
    AttestationDocument,
    AttestationError,
    default_root_certificate,
    verify,
)
from enclave.nsm import SimulatedNitroPki, SimulatedNsm, image_pcrs
from tests.vectors import ATTESTATION
from tss.errors import InputError, ShardkeepError

### The real document (Evervault beta enclave, us-east-1, 2022-10-13)

REAL_PATH = ATTESTATION / "evervault_beta_valid-attestation-doc-bytes.cbor"
REAL_ROOT_PATH = ATTESTATION / "evervault_nitro_root.pem"
REAL_TIME = datetime(2022, 10, 13, 8, 58, 2, 136000, tzinfo=UTC)
REAL_MODULE_ID = "i-020b6af9246d90e92-enc0183d09086c24190"
REAL_LEAF_SUBJECT = (
    "CN=i-020b6af9246d90e92-enc0183d09086c24190.us-east-1.aws,"
    "OU=AWS,O=Amazon,L=Seattle,ST=Washington,C=US"
)
REAL_PCR0 = bytes.fromhex(
    "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b"
)
REAL_PCR8 = bytes.fromhex(
    "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb"
)


@pytest.fixture(scope="module")
def real() -> bytes:
    return REAL_PATH.read_bytes()


def reason_of(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(AttestationError) as info:
        call()
    return info.value.reason, str(info.value)


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def test_bundled_root_is_the_pinned_aws_root() -> None:
    der = default_root_certificate()
    assert hashlib.sha256(der).digest() == AWS_NITRO_ROOT_G1_SHA256
    shared = x509.load_pem_x509_certificate(REAL_ROOT_PATH.read_bytes())
    assert shared.public_bytes(Encoding.DER) == der
    root = x509.load_der_x509_certificate(der)
    assert root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    assert root.not_valid_after_utc == datetime(2049, 10, 28, 14, 28, 5, tzinfo=UTC)


def test_real_document_verifies_at_its_timestamp(real: bytes) -> None:
    doc = verify(real, at=REAL_TIME)
    assert doc.module_id == REAL_MODULE_ID
    assert doc.timestamp == REAL_TIME
    assert doc.digest == "SHA384"
    assert sorted(doc.pcrs) == list(range(16))
    assert all(len(value) == 48 for value in doc.pcrs.values())
    assert doc.pcrs[0] == REAL_PCR0
    assert doc.pcrs[8] == REAL_PCR8
    assert doc.pcrs[5] == bytes(48)
    assert doc.public_key is None
    assert doc.user_data is None
    assert doc.nonce is not None and len(doc.nonce) == 256
    assert doc.nonce.hex().startswith("cb3dc2eb76c0c134")
    assert len(doc.cabundle) == 4
    assert doc.cabundle[0] == default_root_certificate()
    leaf = x509.load_der_x509_certificate(doc.certificate)
    assert leaf.subject.rfc4514_string() == REAL_LEAF_SUBJECT


@pytest.mark.parametrize(
    "root_of",
    [
        lambda: REAL_ROOT_PATH.read_bytes(),
        lambda: default_root_certificate(),
        lambda: b"\n  " + REAL_ROOT_PATH.read_bytes(),
    ],
    ids=["pem", "der", "pem-leading-space"],
)
def test_real_document_with_explicit_root(real: bytes, root_of: Callable[[], bytes]) -> None:
    assert verify(real, root_certificate=root_of(), at=REAL_TIME).module_id == REAL_MODULE_ID


def test_real_document_is_expired_now(real: bytes) -> None:
    reason, message = reason_of(lambda: verify(real))
    assert reason == "expired"
    assert message.startswith(
        f"certificate ({REAL_LEAF_SUBJECT}) expired at 2022-10-13T11:58:02+00:00 "
        "(verification time "
    )
    reason, message = reason_of(lambda: verify(real, at=datetime(2025, 1, 1, tzinfo=UTC)))
    assert (reason, message) == (
        "expired",
        f"certificate ({REAL_LEAF_SUBJECT}) expired at 2022-10-13T11:58:02+00:00 "
        "(verification time 2025-01-01T00:00:00+00:00)",
    )


def test_real_document_validity_window_is_inclusive(real: bytes) -> None:
    # The signing certificate: 2022-10-13 08:57:59 .. 11:58:02 (RFC 5280 §4.1.2.5: inclusive).
    verify(real, at=datetime(2022, 10, 13, 8, 57, 59, tzinfo=UTC))
    verify(real, at=datetime(2022, 10, 13, 11, 58, 2, tzinfo=UTC))
    reason, message = reason_of(
        lambda: verify(real, at=datetime(2022, 10, 13, 8, 57, 58, tzinfo=UTC))
    )
    assert (reason, message) == (
        "not-yet-valid",
        f"certificate ({REAL_LEAF_SUBJECT}) is not valid before 2022-10-13T08:57:59+00:00 "
        "(verification time 2022-10-13T08:57:58+00:00)",
    )
    assert reason_of(lambda: verify(real, at=datetime(2022, 10, 13, 11, 58, 3, tzinfo=UTC)))[0] == (
        "expired"
    )


def test_real_document_in_another_timezone(real: bytes) -> None:
    seattle = REAL_TIME.astimezone(timezone(timedelta(hours=-7)))
    assert verify(real, at=seattle).timestamp == REAL_TIME


def test_real_document_policy(real: bytes) -> None:
    nonce = verify(real, at=REAL_TIME).nonce
    assert nonce is not None
    doc = verify(real, at=REAL_TIME, expected_pcrs={0: REAL_PCR0, 8: REAL_PCR8}, nonce=nonce)
    assert doc.pcrs[0] == REAL_PCR0
    reason, message = reason_of(
        lambda: verify(real, at=REAL_TIME, expected_pcrs={0: REAL_PCR8, 8: REAL_PCR8})
    )
    assert (reason, message) == (
        "pcr-mismatch",
        f"PCR0 is {REAL_PCR0.hex()}, expected {REAL_PCR8.hex()}",
    )
    reason, message = reason_of(lambda: verify(real, at=REAL_TIME, nonce=nonce[:-1]))
    assert (reason, message) == ("nonce-mismatch", "document nonce differs from the expected nonce")


def test_real_document_flipped_payload_byte(real: bytes) -> None:
    position = real.index(REAL_PCR0) + 7
    reason, message = reason_of(lambda: verify(flip(real, position), at=REAL_TIME))
    assert (reason, message) == (
        "bad-signature",
        "COSE signature does not verify under the signing certificate's key",
    )


@pytest.mark.parametrize(
    "offset", [1, 40, 96, 97], ids=["s-last", "s-middle", "r-first", "bstr-length"]
)
def test_real_document_flipped_signature(real: bytes, offset: int) -> None:
    # The signature is the last 96 bytes, after its bstr header 0x58 0x60.
    position = len(real) - offset
    reason, _ = reason_of(lambda: verify(flip(real, position), at=REAL_TIME))
    assert reason == ("bad-signature" if offset <= 96 else "malformed")


def test_real_document_altered_certificate(real: bytes) -> None:
    doc = verify(real, at=REAL_TIME)
    position = real.index(doc.certificate) + doc.certificate.index(b"enc0183d")
    reason, message = reason_of(lambda: verify(flip(real, position), at=REAL_TIME))
    assert reason == "invalid-chain"
    assert message.startswith("certificate (CN=i-020b6af9246d90e92-dnc0183d")
    assert "is not issued by cabundle[3] (CN=i-020b6af9246d90e92.us-east-1.aws.nitro-enclaves" in (
        message
    )


def test_real_document_tagged_and_indefinite_envelope(real: bytes) -> None:
    # Tag 18 (0xd2) in front of the untagged array; then the same array and
    # unprotected map re-encoded with indefinite lengths. Neither touches the
    # signed bytes (RFC 9052 §4.4 signs the bstr contents).
    assert verify(b"\xd2" + real, at=REAL_TIME).module_id == REAL_MODULE_ID
    protected, unprotected, payload, signature = cbor2.loads(real)
    assert unprotected == {}
    indefinite = (
        b"\x9f"
        + cbor2.dumps(protected)
        + b"\xbf\xff"
        + cbor2.dumps(payload)
        + cbor2.dumps(signature)
        + b"\xff"
    )
    assert verify(indefinite, at=REAL_TIME).module_id == REAL_MODULE_ID
    assert verify(b"\xd2" + indefinite, at=REAL_TIME).module_id == REAL_MODULE_ID


def test_real_document_against_another_root(real: bytes) -> None:
    other = SimulatedNitroPki.generate(now=REAL_TIME)
    reason, message = reason_of(
        lambda: verify(real, root_certificate=other.root_certificate_pem, at=REAL_TIME)
    )
    assert reason == "untrusted-root"
    assert message.startswith(
        f"cabundle[0] is not the trusted root certificate (sha256 {AWS_NITRO_ROOT_G1_SHA256.hex()}"
    )


### Simulated NSM documents

NOW = datetime(2031, 5, 17, 9, 30, 15, 250000, tzinfo=UTC)
IMAGE = "shardkeep-enclave:test"


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate(now=NOW)


@pytest.fixture(scope="module")
def nsm(pki: SimulatedNitroPki) -> SimulatedNsm:
    return SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)


@pytest.fixture(scope="module")
def simulated(nsm: SimulatedNsm) -> bytes:
    return nsm.attestation(user_data=b"user data", nonce=b"N" * 32, public_key=b"DER public key")


def check(nsm: SimulatedNsm, document: bytes, **kwargs: Any) -> AttestationDocument:
    kwargs.setdefault("root_certificate", nsm.root_certificate_pem)
    kwargs.setdefault("at", NOW)
    return verify(document, **kwargs)


def resign(nsm: SimulatedNsm, document: bytes, **changes: Any) -> bytes:
    """Change payload fields (``None`` deletes one) and sign the result with the NSM's key."""
    fields = dict(cbor2.loads(cbor2.loads(document)[2]))
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return nsm.insecure_sign_payload(cbor2.dumps(fields))


def test_simulated_document_verifies(nsm: SimulatedNsm, simulated: bytes) -> None:
    doc = check(nsm, simulated, expected_pcrs=image_pcrs(IMAGE), nonce=b"N" * 32)
    assert doc.module_id == nsm.module_id
    assert doc.timestamp == NOW.replace(microsecond=250000)
    assert doc.pcrs[0] == image_pcrs(IMAGE)[0]
    assert doc.user_data == b"user data"
    assert doc.nonce == b"N" * 32
    assert doc.public_key == b"DER public key"
    assert doc.cabundle[0] == nsm.pki.root_certificate_der
    # Root as DER works as well as PEM.
    assert check(nsm, simulated, root_certificate=nsm.pki.root_certificate_der) == doc


def test_simulated_document_without_options(nsm: SimulatedNsm) -> None:
    doc = check(nsm, nsm.attestation())
    assert (doc.public_key, doc.user_data, doc.nonce) == (None, None, None)
    # Present but empty user_data and nonce are allowed (AWS §3.2.2.2: 0..1024).
    doc = check(nsm, nsm.attestation(user_data=b"", nonce=b""), nonce=b"")
    assert (doc.user_data, doc.nonce) == (b"", b"")


def test_simulated_document_wrong_root(nsm: SimulatedNsm, simulated: bytes) -> None:
    other = SimulatedNitroPki.generate(now=NOW)
    assert reason_of(lambda: check(nsm, simulated, root_certificate=other.root_certificate_pem))[
        0
    ] == ("untrusted-root")
    # And not under the AWS root either.
    reason, message = reason_of(lambda: verify(simulated, at=NOW))
    assert reason == "untrusted-root"
    assert message.endswith(f"trusted {AWS_NITRO_ROOT_G1_SHA256.hex()})")


def test_simulated_document_expired_and_not_yet_valid(nsm: SimulatedNsm, simulated: bytes) -> None:
    leaf = x509.load_der_x509_certificate(check(nsm, simulated).certificate)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)
    later = leaf.not_valid_after_utc + timedelta(seconds=1)
    reason, message = reason_of(lambda: check(nsm, simulated, at=later))
    assert reason == "expired"
    assert message == (
        f"certificate ({leaf.subject.rfc4514_string()}) expired at "
        f"{leaf.not_valid_after_utc.isoformat()} (verification time {later.isoformat()})"
    )
    # Long after, the intermediates have expired too; the signing certificate is named first.
    reason, message = reason_of(lambda: check(nsm, simulated, at=NOW + timedelta(days=60)))
    assert reason == "expired" and message.startswith("certificate (")
    reason, message = reason_of(lambda: check(nsm, simulated, at=NOW - timedelta(hours=1)))
    assert reason == "not-yet-valid" and message.startswith("certificate (")


def test_simulated_document_pcr_policy(nsm: SimulatedNsm, simulated: bytes) -> None:
    expected = image_pcrs(IMAGE)
    other = image_pcrs("another image")
    reason, message = reason_of(
        lambda: check(nsm, simulated, expected_pcrs={**expected, 2: other[2]})
    )
    assert (reason, message) == (
        "pcr-mismatch",
        f"PCR2 is {expected[2].hex()}, expected {other[2].hex()}",
    )
    reason, message = reason_of(
        lambda: check(nsm, simulated, expected_pcrs={0: other[0], 20: bytes(48)})
    )
    assert reason == "pcr-mismatch"
    assert message == f"PCR0 is {expected[0].hex()}, expected {other[0].hex()}; PCR20 is absent"


def test_simulated_document_nonce_policy(nsm: SimulatedNsm, simulated: bytes) -> None:
    assert reason_of(lambda: check(nsm, simulated, nonce=b"M" * 32)) == (
        "nonce-mismatch",
        "document nonce differs from the expected nonce",
    )
    assert reason_of(lambda: check(nsm, nsm.attestation(), nonce=b"N" * 32)) == (
        "nonce-mismatch",
        "document carries no nonce",
    )


def test_debug_mode_rejected_unless_allowed(pki: SimulatedNitroPki) -> None:
    debug = SimulatedNsm(IMAGE, pki=pki, debug=True, clock=lambda: NOW)
    document = debug.attestation()
    assert reason_of(lambda: check(debug, document)) == (
        "debug-mode",
        "PCR0 is all zeros: the enclave runs in debug mode",
    )
    doc = check(debug, document, allow_debug=True)
    assert all(value == bytes(48) for value in doc.pcrs.values())
    # Expected PCRs still apply in debug mode.
    assert reason_of(
        lambda: check(debug, document, allow_debug=True, expected_pcrs=image_pcrs(IMAGE))
    )[0] == ("pcr-mismatch")


def test_debug_check_needs_image_pcrs(nsm: SimulatedNsm, simulated: bytes) -> None:
    pcrs = {i: v for i, v in check(nsm, simulated).pcrs.items() if i != 1}
    pcrs_zero1 = {**check(nsm, simulated).pcrs, 1: bytes(48)}
    assert reason_of(lambda: check(nsm, resign(nsm, simulated, pcrs=pcrs))) == (
        "debug-mode",
        "document has no PCR1, so the enclave image is not measured",
    )
    assert reason_of(lambda: check(nsm, resign(nsm, simulated, pcrs=pcrs_zero1)))[0] == "debug-mode"
    assert check(nsm, resign(nsm, simulated, pcrs=pcrs), allow_debug=True).pcrs == pcrs


def test_tagged_and_untagged(nsm: SimulatedNsm, simulated: bytes) -> None:
    assert simulated[0] == 0x84  # the NSM emits an untagged array of 4
    assert check(nsm, b"\xd2" + simulated) == check(nsm, simulated)
    assert reason_of(lambda: check(nsm, b"\xd1" + simulated)) == (
        "malformed",
        "document has CBOR tag 17, expected COSE_Sign1 (18) or none",
    )
    assert reason_of(lambda: check(nsm, b"\xd2\xd2" + simulated)) == (
        "malformed",
        "document is not a COSE_Sign1 array of 4 elements",
    )


def _indefinite_map(pairs: list[tuple[Any, bytes]]) -> bytes:
    """A CBOR map of indefinite length (RFC 8949 §3.2.2) from keys and pre-encoded values."""
    return b"\xbf" + b"".join(cbor2.dumps(key) + value for key, value in pairs) + b"\xff"


def test_indefinite_length_payload_maps(nsm: SimulatedNsm, simulated: bytes) -> None:
    fields = cbor2.loads(cbor2.loads(simulated)[2])
    pcrs = _indefinite_map([(i, cbor2.dumps(v)) for i, v in fields["pcrs"].items()])
    cabundle = b"\x9f" + b"".join(cbor2.dumps(c) for c in fields["cabundle"]) + b"\xff"
    encoded = {
        name: pcrs if name == "pcrs" else cabundle if name == "cabundle" else cbor2.dumps(value)
        for name, value in fields.items()
    }
    payload = _indefinite_map(list(encoded.items()))
    assert payload[0] == 0xBF and cbor2.loads(payload) == fields
    document = nsm.insecure_sign_payload(payload)
    assert check(nsm, document) == check(nsm, simulated)
    # An indefinite-length protected header map works too.
    protected = _indefinite_map([(1, cbor2.dumps(-35))])
    assert check(nsm, nsm.insecure_sign_payload(payload, protected=protected)).nonce == b"N" * 32


def test_duplicate_payload_keys_rejected(nsm: SimulatedNsm, simulated: bytes) -> None:
    fields = cbor2.loads(cbor2.loads(simulated)[2])
    pairs = [(k, cbor2.dumps(v)) for k, v in fields.items()] + [("nonce", cbor2.dumps(b"x"))]
    document = nsm.insecure_sign_payload(_indefinite_map(pairs))
    reason, message = reason_of(lambda: check(nsm, document))
    assert reason == "malformed"
    assert message.startswith("payload is not valid CBOR: ") and "uplicate" in message


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "document is 0 bytes, expected 1..32768"),
        (lambda d: d[:-1], "document is not valid CBOR: "),
        (lambda d: d + b"\x00", "document has 1 bytes after its CBOR item"),
        (lambda d: b"\xff" + d, "document is not valid CBOR: "),
        (lambda d: bytes(40000), "document is 40000 bytes, expected 1..32768"),
        (lambda d: cbor2.dumps({"a": 1}), "document is not a COSE_Sign1 array of 4 elements"),
        (lambda d: b"\x83" + d[1:], "document has "),  # array(3): one item left over
        (lambda d: b"\x85" + d[1:], "document is not valid CBOR: "),
        (
            lambda d: cbor2.dumps(["a1013822", {}, b"p", bytes(96)]),
            "COSE protected header is not a byte string",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", [], b"p", bytes(96)]),
            "COSE unprotected header is not a map",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", {}, None, bytes(96)]),
            "COSE payload is not a byte string (detached?)",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"p", "sig"]),
            "COSE signature is not a byte string",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"", bytes(96)]),
            "payload is 0 bytes, expected 1..16384",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", {1: -35}, b"p", bytes(96)]),
            "COSE algorithm is in the unprotected header",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22\x00", {}, b"p", bytes(96)]),
            "COSE protected header has 1 bytes after its CBOR item",
        ),
        (
            lambda d: cbor2.dumps([b"\x82\x01\x02", {}, b"p", bytes(96)]),
            "COSE protected header is not a map",
        ),
        (
            lambda d: cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"\xa1", bytes(96)]),
            "payload is not valid CBOR: ",
        ),
    ],
    ids=[
        "empty",
        "truncated",
        "trailing-byte",
        "leading-break",
        "oversized",
        "not-an-array",
        "array-of-3",
        "array-of-5",
        "protected-not-bstr",
        "unprotected-not-map",
        "detached-payload",
        "signature-not-bstr",
        "empty-payload",
        "alg-unprotected",
        "protected-trailing",
        "protected-not-map",
        "payload-truncated",
    ],
)
def test_malformed_cbor(simulated: bytes, mangle: Callable[[bytes], bytes], message: str) -> None:
    reason, actual = reason_of(lambda: verify(mangle(simulated), at=NOW))
    assert reason == "malformed"
    assert actual.startswith(message)


@pytest.mark.parametrize(
    ("protected", "reason", "message"),
    [
        (cbor2.dumps({1: -7}), "unsupported-algorithm", "COSE protected header algorithm is -7,"),
        (cbor2.dumps({1: -36}), "unsupported-algorithm", "COSE protected header algorithm is -36,"),
        (b"", "unsupported-algorithm", "COSE protected header algorithm is None,"),
        (cbor2.dumps({}), "unsupported-algorithm", "COSE protected header algorithm is None,"),
        (cbor2.dumps({1: "ES384"}), "unsupported-algorithm", "COSE protected header algorithm is"),
        (cbor2.dumps({1: -35, 2: [1]}), "malformed", "COSE header lists critical parameters"),
    ],
    ids=["es256", "es512", "empty-bstr", "empty-map", "text-alg", "crit"],
)
def test_wrong_algorithm(
    nsm: SimulatedNsm, simulated: bytes, protected: bytes, reason: str, message: str
) -> None:
    payload = cbor2.loads(simulated)[2]
    document = nsm.insecure_sign_payload(payload, protected=protected)
    actual_reason, actual = reason_of(lambda: check(nsm, document))
    assert actual_reason == reason
    assert actual.startswith(message)
    if reason == "unsupported-algorithm":
        assert actual.endswith("expected ES384 (-35)")


def test_signature_checks(nsm: SimulatedNsm, simulated: bytes) -> None:
    protected, unprotected, payload, signature = cbor2.loads(simulated)

    def with_signature(bad: bytes) -> tuple[str, str]:
        document = cbor2.dumps([protected, unprotected, payload, bad])
        return reason_of(lambda: check(nsm, document))

    for bad in (signature[:-1], signature + b"\x00", b""):
        assert with_signature(bad) == (
            "bad-signature",
            f"signature is {len(bad)} bytes, ES384 needs 96",
        )
    for bad in (flip(signature, 0), flip(signature, 95), bytes(96), b"\xff" * 96):
        assert with_signature(bad)[0] == "bad-signature"
    # A flipped payload byte (inside user_data) keeps the CBOR valid but breaks the signature.
    position = simulated.index(b"user data")
    assert reason_of(lambda: check(nsm, flip(simulated, position)))[0] == "bad-signature"
    # The signature covers the protected header bytes: the same header, encoded
    # differently (indefinite length), must not reuse the signature.
    other_header = _indefinite_map([(1, cbor2.dumps(-35))])
    document = cbor2.dumps([other_header, unprotected, payload, signature])
    assert reason_of(lambda: check(nsm, document))[0] == "bad-signature"


def test_signature_from_another_enclave(pki: SimulatedNitroPki, simulated: bytes) -> None:
    # A certificate that chains fine, but not the key that signed: swap in
    # another enclave's signing certificate and chain.
    nsm = SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)
    other = SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)
    document = nsm.attestation()
    theirs = cbor2.loads(cbor2.loads(other.attestation())[2])
    fields = dict(cbor2.loads(cbor2.loads(document)[2]))
    fields["certificate"], fields["cabundle"] = theirs["certificate"], theirs["cabundle"]
    protected, unprotected, _, signature = cbor2.loads(document)
    forged = cbor2.dumps([protected, unprotected, cbor2.dumps(fields), signature])
    assert reason_of(lambda: check(nsm, forged)) == (
        "bad-signature",
        "COSE signature does not verify under the signing certificate's key",
    )


def test_altered_certificate(nsm: SimulatedNsm, simulated: bytes) -> None:
    # Re-signed so that only the certificate is wrong.
    fields = cbor2.loads(cbor2.loads(simulated)[2])
    leaf = fields["certificate"]
    altered = flip(leaf, leaf.index(nsm.module_id.encode()))
    reason, message = reason_of(lambda: check(nsm, resign(nsm, simulated, certificate=altered)))
    assert reason == "invalid-chain"
    assert message.startswith("certificate (") and "is not issued by cabundle[3] (" in message
    reason, message = reason_of(
        lambda: check(nsm, resign(nsm, simulated, certificate=b"\x30\x03abc"))
    )
    assert reason == "invalid-chain"
    assert message.startswith("certificate is not a usable DER X.509 certificate: ")
    # An altered intermediate.
    cabundle = list(fields["cabundle"])
    cabundle[2] = flip(cabundle[2], len(cabundle[2]) - 10)  # inside its signature
    reason, message = reason_of(lambda: check(nsm, resign(nsm, simulated, cabundle=cabundle)))
    assert reason == "invalid-chain"
    assert message.startswith("cabundle[2] (") and "is not issued by cabundle[1] (" in message


def test_cabundle_order_and_completeness(nsm: SimulatedNsm, simulated: bytes) -> None:
    cabundle = cbor2.loads(cbor2.loads(simulated)[2])["cabundle"]
    reordered = [cabundle[0], cabundle[2], cabundle[1], cabundle[3]]
    reason, message = reason_of(lambda: check(nsm, resign(nsm, simulated, cabundle=reordered)))
    assert reason == "invalid-chain" and "is not issued by" in message
    missing = [cabundle[0], cabundle[1], cabundle[3]]
    reason, message = reason_of(lambda: check(nsm, resign(nsm, simulated, cabundle=missing)))
    assert reason == "invalid-chain"
    assert message.startswith("cabundle[2] (") and "is not issued by cabundle[1]" in message
    root_only_last = [*cabundle[1:], cabundle[0]]
    assert reason_of(lambda: check(nsm, resign(nsm, simulated, cabundle=root_only_last)))[0] == (
        "untrusted-root"
    )


def test_timestamp_outside_signing_certificate(nsm: SimulatedNsm, simulated: bytes) -> None:
    doc = check(nsm, simulated)
    leaf = x509.load_der_x509_certificate(doc.certificate)
    before = leaf.not_valid_before_utc - timedelta(minutes=1)
    stamp = int(before.timestamp() * 1000)
    reason, message = reason_of(lambda: check(nsm, resign(nsm, simulated, timestamp=stamp)))
    assert (reason, message) == (
        "invalid-timestamp",
        f"document timestamp {before.isoformat()} is outside the signing certificate's "
        f"validity {leaf.not_valid_before_utc.isoformat()} .. "
        f"{leaf.not_valid_after_utc.isoformat()}",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"module_id": ""}, "module_id must be a non-empty text string"),
        ({"module_id": b"i-0"}, "module_id must be a non-empty text string"),
        ({"digest": "SHA256"}, "digest is 'SHA256', expected 'SHA384'"),
        ({"timestamp": 0}, "timestamp 0 is not a positive millisecond count"),
        ({"timestamp": -5}, "timestamp -5 is not a positive millisecond count"),
        ({"timestamp": True}, "timestamp True is not a positive millisecond count"),
        ({"timestamp": 2**64 - 1}, f"timestamp {2**64 - 1} is not a positive millisecond count"),
        ({"timestamp": 1.5e12}, "timestamp 1500000000000.0 is not a positive millisecond count"),
        ({"pcrs": {}}, "pcrs must be a map of 1..32 entries"),
        ({"pcrs": [bytes(48)]}, "pcrs must be a map of 1..32 entries"),
        ({"pcrs": {i: bytes(48) for i in range(33)}}, "pcrs must be a map of 1..32 entries"),
        ({"pcrs": {32: bytes(48)}}, "PCR index 32 is not an integer in 0..31"),
        ({"pcrs": {-1: bytes(48)}}, "PCR index -1 is not an integer in 0..31"),
        ({"pcrs": {"0": bytes(48)}}, "PCR index '0' is not an integer in 0..31"),
        ({"pcrs": {0: bytes(47)}}, "PCR0 must be a byte string of 32, 48 or 64 bytes"),
        ({"pcrs": {0: "00" * 48}}, "PCR0 must be a byte string of 32, 48 or 64 bytes"),
        ({"certificate": b""}, "certificate must be a byte string of 1..1024 bytes"),
        ({"certificate": bytes(1025)}, "certificate must be a byte string of 1..1024 bytes"),
        ({"cabundle": []}, "cabundle must be a non-empty array"),
        ({"cabundle": b"root"}, "cabundle must be a non-empty array"),
        ({"cabundle": [b""]}, "cabundle[0] must be a byte string of 1..1024 bytes"),
        ({"public_key": b""}, "public_key must be a byte string of 1..1024 bytes"),
        ({"public_key": bytes(1025)}, "public_key must be a byte string of 1..1024 bytes"),
        ({"user_data": bytes(1025)}, "user_data must be a byte string of 0..1024 bytes"),
        ({"user_data": "text"}, "user_data must be a byte string of 0..1024 bytes"),
        ({"nonce": bytes(1025)}, "nonce must be a byte string of 0..1024 bytes"),
        ({"extra": b"x"}, "payload has unknown field 'extra'"),
        ({"module_id": None}, "payload lacks mandatory field 'module_id'"),
        ({"cabundle": None}, "payload lacks mandatory field 'cabundle'"),
        ({"certificate": None}, "payload lacks mandatory field 'certificate'"),
    ],
    ids=lambda value: None if isinstance(value, dict) else value[:40],
)
def test_invalid_document_fields(
    nsm: SimulatedNsm, simulated: bytes, changes: dict[str, Any], message: str
) -> None:
    document = resign(nsm, simulated, **changes)
    assert reason_of(lambda: check(nsm, document)) == ("invalid-document", message)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (cbor2.dumps([1, 2]), "payload is not a CBOR map"),
        (cbor2.dumps({1: "x"}), "payload key 1 is not a text string"),
        (cbor2.dumps({b"module_id": "x"}), "payload key b'module_id' is not a text string"),
    ],
    ids=["array", "int-key", "bytes-key"],
)
def test_invalid_payload_shape(nsm: SimulatedNsm, payload: bytes, message: str) -> None:
    document = nsm.insecure_sign_payload(payload)
    assert reason_of(lambda: check(nsm, document)) == ("invalid-document", message)


def test_null_mandatory_field_and_null_optionals(nsm: SimulatedNsm, simulated: bytes) -> None:
    fields = dict(cbor2.loads(cbor2.loads(simulated)[2]))
    fields["digest"] = None
    document = nsm.insecure_sign_payload(cbor2.dumps(fields))
    assert reason_of(lambda: check(nsm, document)) == (
        "invalid-document",
        "payload lacks mandatory field 'digest'",
    )
    # Absent optional fields are encoded as null by the NSM, or left out: both mean absent.
    document = resign(nsm, simulated, public_key=None, user_data=None, nonce=None)
    assert check(nsm, document).user_data is None


### Path validation by cryptography's verifier (RFC 5280 rules our own pass does not cover)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    path_length: int | None = None,
    digital_signature: bool = True,
    cert_sign: bool | None = None,
) -> bytes:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (
        (name, key)
        if issuer is None
        else (x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, issuer[0])]), issuer[1])
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca if cert_sign is None else cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(issuer_key, hashes.SHA384())
    )
    return certificate.public_bytes(Encoding.DER)


def _document(leaf_key: ec.EllipticCurvePrivateKey, leaf: bytes, cabundle: list[bytes]) -> bytes:
    payload = cbor2.dumps(
        {
            "module_id": "i-test-enc0",
            "digest": "SHA384",
            "timestamp": int(NOW.timestamp() * 1000),
            "pcrs": image_pcrs(IMAGE),
            "certificate": leaf,
            "cabundle": cabundle,
            "public_key": None,
            "user_data": None,
            "nonce": None,
        }
    )
    protected = cbor2.dumps({1: -35})
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    if isinstance(leaf_key.curve, ec.SECP384R1):
        r, s = decode_dss_signature(leaf_key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    else:
        r, s = 1, 1
    return cbor2.dumps([protected, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


@pytest.fixture(scope="module")
def keys() -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP384R1()) for _ in range(3)]


def _chain_document(
    keys: list[ec.EllipticCurvePrivateKey],
    *,
    intermediate: dict[str, Any],
    leaf: dict[str, Any],
    leaf_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[bytes, bytes]:
    root_key, ca_key, default_leaf_key = keys
    root = _cert("root", root_key, None, ca=True)
    ca = _cert("ca", ca_key, ("root", root_key), **intermediate)
    signer = leaf_key or default_leaf_key
    end = _cert("leaf", signer, ("ca", ca_key), **leaf)
    return root, _document(signer, end, [root, ca])


def test_custom_chain_baseline(keys: list[ec.EllipticCurvePrivateKey]) -> None:
    root, document = _chain_document(
        keys, intermediate={"ca": True, "path_length": 0}, leaf={"ca": False}
    )
    assert verify(document, root_certificate=root, at=NOW).module_id == "i-test-enc0"


@pytest.mark.parametrize(
    ("intermediate", "leaf", "message"),
    [
        (
            {"ca": False, "cert_sign": True},
            {"ca": False},
            "basicConstraints.cA must be asserted in a CA certificate",
        ),
        (
            {"ca": True, "cert_sign": False},
            {"ca": False},
            "keyUsage.keyCertSign must be asserted in a CA certificate",
        ),
        (
            {"ca": True},
            {"ca": True, "path_length": 0},
            "basicConstraints.cA must not be asserted in an EE certificate",
        ),
    ],
    ids=["intermediate-not-ca", "intermediate-no-keycertsign", "leaf-is-ca"],
)
def test_path_validation_rules(
    keys: list[ec.EllipticCurvePrivateKey],
    intermediate: dict[str, Any],
    leaf: dict[str, Any],
    message: str,
) -> None:
    # Signatures and validity pass our own walk; cryptography's RFC 5280 verifier rejects.
    root, document = _chain_document(keys, intermediate=intermediate, leaf=leaf)
    reason, actual = reason_of(lambda: verify(document, root_certificate=root, at=NOW))
    assert reason == "invalid-chain"
    assert actual.startswith("certificate path validation failed: ")
    assert message in actual


def test_signing_certificate_needs_digital_signature(
    keys: list[ec.EllipticCurvePrivateKey],
) -> None:
    # AWS §3.2.3.3; cryptography's end-entity policy does not check this one.
    root, document = _chain_document(
        keys, intermediate={"ca": True}, leaf={"ca": False, "digital_signature": False}
    )
    assert reason_of(lambda: verify(document, root_certificate=root, at=NOW)) == (
        "invalid-chain",
        "certificate keyUsage lacks digitalSignature",
    )


def test_path_length_constraint(keys: list[ec.EllipticCurvePrivateKey]) -> None:
    # root -> ca (pathLen 0) -> sub-ca -> leaf: the sub-CA breaks ca's constraint.
    root_key, ca_key, leaf_key = keys
    sub_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("root", root_key, None, ca=True)
    ca = _cert("ca", ca_key, ("root", root_key), ca=True, path_length=0)
    sub = _cert("sub", sub_key, ("ca", ca_key), ca=True)
    leaf = _cert("leaf", leaf_key, ("sub", sub_key), ca=False)
    document = _document(leaf_key, leaf, [root, ca, sub])
    reason, message = reason_of(lambda: verify(document, root_certificate=root, at=NOW))
    assert reason == "invalid-chain"
    assert message.startswith("certificate path validation failed: ")


def test_signing_key_must_be_p384(keys: list[ec.EllipticCurvePrivateKey]) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    root, document = _chain_document(
        keys, intermediate={"ca": True}, leaf={"ca": False}, leaf_key=p256
    )
    assert reason_of(lambda: verify(document, root_certificate=root, at=NOW)) == (
        "invalid-chain",
        "certificate key is not a P-384 ECDSA key",
    )


### Caller errors


def test_caller_errors(nsm: SimulatedNsm, simulated: bytes) -> None:
    with pytest.raises(InputError, match="timezone-aware"):
        check(nsm, simulated, at=datetime(2031, 5, 17, 9, 30))
    with pytest.raises(InputError, match="neither a PEM nor a DER"):
        check(nsm, simulated, root_certificate=b"not a certificate")
    with pytest.raises(InputError, match="neither a PEM nor a DER"):
        check(nsm, simulated, root_certificate=b"-----BEGIN CERTIFICATE-----\nAA==\n")
    with pytest.raises(InputError, match="expected PCR0 must be 32, 48 or 64 bytes"):
        check(nsm, simulated, expected_pcrs={0: b"short"})
    with pytest.raises(InputError, match=r"expected PCR index 32 is not in 0\.\.31"):
        check(nsm, simulated, expected_pcrs={32: bytes(48)})
    with pytest.raises(InputError, match="nonce is 1025 bytes"):
        check(nsm, simulated, nonce=bytes(1025))
    with pytest.raises(InputError, match="document must be bytes"):
        check(nsm, bytearray(simulated))  # type: ignore[arg-type]


def test_document_is_frozen(nsm: SimulatedNsm, simulated: bytes) -> None:
    doc = check(nsm, simulated)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.module_id = "other"  # type: ignore[misc]
    assert issubclass(AttestationError, ShardkeepError)
