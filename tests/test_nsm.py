"""enclave.nsm: the simulated NSM emits real-format documents and behaves like the NSM API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from client.sdk.attestation import verify
from enclave.nsm import (
    ES384_PROTECTED_HEADER,
    Nsm,
    NsmError,
    SimulatedNitroPki,
    SimulatedNsm,
    image_pcrs,
)
from tests.vectors import ATTESTATION
from tss.errors import InternalError

NOW = datetime(2030, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
IMAGE = "shardkeep-enclave:nsm-test"
REAL = ATTESTATION / "evervault_beta_valid-attestation-doc-bytes.cbor"


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate(now=NOW)


@pytest.fixture
def nsm(pki: SimulatedNitroPki) -> SimulatedNsm:
    return SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)


def test_document_has_the_real_format(nsm: SimulatedNsm) -> None:
    document = nsm.attestation(user_data=b"ud", nonce=b"nonce", public_key=b"pk")
    real = REAL.read_bytes()
    # Same envelope prefix as the real document: array(4), bstr {1: -35}, empty map, bstr.
    assert document[:7] == real[:7] == bytes.fromhex("8444a1013822a0")
    protected, unprotected, payload, signature = cbor2.loads(document)
    assert protected == ES384_PROTECTED_HEADER == b"\xa1\x01\x38\x22"
    assert unprotected == {}
    assert len(signature) == 96
    fields = cbor2.loads(payload)
    real_fields = cbor2.loads(cbor2.loads(real)[2])
    assert list(fields) == list(real_fields)  # same keys, same order
    assert fields["module_id"] == nsm.module_id
    assert fields["module_id"].startswith("i-") and "-enc" in fields["module_id"]
    assert fields["digest"] == "SHA384"
    assert fields["timestamp"] == 1896321906789  # NOW in milliseconds
    assert sorted(fields["pcrs"]) == list(range(16))
    assert all(len(v) == 48 for v in fields["pcrs"].values())
    assert (fields["public_key"], fields["user_data"], fields["nonce"]) == (b"pk", b"ud", b"nonce")
    assert len(fields["cabundle"]) == len(real_fields["cabundle"]) == 4
    assert fields["cabundle"][0] == nsm.pki.root_certificate_der
    # Absent optional fields are CBOR null, as in the real document.
    bare = cbor2.loads(cbor2.loads(nsm.attestation())[2])
    assert (bare["public_key"], bare["user_data"], bare["nonce"]) == (None, None, None)
    assert real_fields["public_key"] is None


def test_signature_is_es384_over_sig_structure(nsm: SimulatedNsm) -> None:
    # Independent of client.sdk.attestation: RFC 9052 §4.4 by hand.
    protected, _, payload, signature = cbor2.loads(nsm.attestation(nonce=b"x"))
    leaf = x509.load_der_x509_certificate(cbor2.loads(payload)["certificate"])
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    assert to_be_signed[:12] == b"\x84\x6aSignature1"
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))


def test_certificate_chain_has_the_aws_shape(nsm: SimulatedNsm) -> None:
    fields = cbor2.loads(cbor2.loads(nsm.attestation())[2])
    chain = [
        x509.load_der_x509_certificate(c) for c in [*fields["cabundle"], fields["certificate"]]
    ]
    path_lengths = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value for c in chain
    ]
    assert [(bc.ca, bc.path_length) for bc in path_lengths] == [
        (True, None),
        (True, 2),
        (True, 1),
        (True, 0),
        (False, None),
    ]
    for child, parent in zip(chain[1:], chain, strict=False):
        child.verify_directly_issued_by(parent)
    for cert in chain:
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha384"
        assert all(len(der) <= 1024 for der in [*fields["cabundle"], fields["certificate"]])
    leaf = chain[-1]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)
    assert leaf.not_valid_before_utc <= NOW <= leaf.not_valid_after_utc
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    # Like AWS, the instance CA and the signing certificate carry no key identifiers.
    for cert in chain[3:]:
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert nsm.module_id in leaf.subject.rfc4514_string()
    root = chain[0]
    assert root.subject == root.issuer
    assert root.not_valid_after_utc - root.not_valid_before_utc == timedelta(days=30 * 365)


def test_verifies_with_the_test_root(nsm: SimulatedNsm) -> None:
    document = nsm.attestation(public_key=b"enclave static key")
    doc = verify(
        document,
        root_certificate=nsm.root_certificate_pem,
        at=NOW,
        expected_pcrs=image_pcrs(IMAGE),
    )
    assert doc.public_key == b"enclave static key"
    assert doc.timestamp == NOW


def test_image_pcrs() -> None:
    pcrs = image_pcrs(IMAGE)
    assert sorted(pcrs) == [0, 1, 2]
    assert all(len(v) == 48 for v in pcrs.values())
    assert len(set(pcrs.values())) == 3
    assert image_pcrs(IMAGE) == pcrs
    assert image_pcrs(IMAGE + "!")[0] != pcrs[0]
    assert pcrs[0] == hashlib.sha384(b"shardkeep/simulated-nsm/pcr0\x00" + IMAGE.encode()).digest()


def test_describe_pcr(nsm: SimulatedNsm) -> None:
    assert nsm.describe_pcr(0).data == image_pcrs(IMAGE)[0]
    assert nsm.describe_pcr(0).locked
    assert nsm.describe_pcr(4).data != bytes(48)  # the parent instance id
    assert nsm.describe_pcr(15).locked and nsm.describe_pcr(15).data == bytes(48)
    assert not nsm.describe_pcr(16).locked and nsm.describe_pcr(16).data == bytes(48)
    for index in (-1, 32):
        with pytest.raises(NsmError) as info:
            nsm.describe_pcr(index)
        assert info.value.code == "InvalidIndex"


def test_extend_and_lock_pcr(nsm: SimulatedNsm) -> None:
    value = nsm.extend_pcr(16, b"enclave config")
    assert value == hashlib.sha384(bytes(48) + b"enclave config").digest()
    assert nsm.extend_pcr(16, b"more") == hashlib.sha384(value + b"more").digest()
    value = nsm.describe_pcr(16).data
    # Unlocked PCRs are not attested.
    fields = cbor2.loads(cbor2.loads(nsm.attestation())[2])
    assert 16 not in fields["pcrs"]
    nsm.lock_pcr(16)
    nsm.lock_pcr(16)  # idempotent
    with pytest.raises(NsmError) as info:
        nsm.extend_pcr(16, b"late")
    assert info.value.code == "ReadOnlyIndex"
    with pytest.raises(NsmError) as info:
        nsm.extend_pcr(0, b"x")
    assert info.value.code == "ReadOnlyIndex"
    with pytest.raises(NsmError) as info:
        nsm.extend_pcr(16, bytes(1025))
    assert info.value.code == "InputTooLarge"
    doc = verify(
        nsm.attestation(),
        root_certificate=nsm.root_certificate_pem,
        at=NOW,
        expected_pcrs={16: value},
    )
    assert sorted(doc.pcrs) == list(range(17))


def test_get_random(nsm: SimulatedNsm) -> None:
    first, second = nsm.get_random(32), nsm.get_random(32)
    assert len(first) == 32 and first != second
    assert nsm.get_random(0) == b""
    with pytest.raises(NsmError) as info:
        nsm.get_random(-1)
    assert info.value.code == "InvalidArgument"


@pytest.mark.parametrize("name", ["user_data", "nonce", "public_key"])
def test_attestation_input_limits(nsm: SimulatedNsm, name: str) -> None:
    verify(
        nsm.attestation(**{name: bytes(1024)}),
        root_certificate=nsm.root_certificate_pem,
        at=NOW,
    )
    with pytest.raises(NsmError) as info:
        nsm.attestation(**{name: bytes(1025)})
    assert info.value.code == "InputTooLarge"


def test_empty_public_key_refused(nsm: SimulatedNsm) -> None:
    with pytest.raises(NsmError) as info:
        nsm.attestation(public_key=b"")
    assert info.value.code == "InvalidArgument"


def test_debug_mode_and_pcr_override(pki: SimulatedNitroPki) -> None:
    debug = SimulatedNsm(IMAGE, pki=pki, debug=True, clock=lambda: NOW)
    assert all(debug.describe_pcr(i).data == bytes(48) for i in range(32))
    custom = SimulatedNsm(IMAGE, pki=pki, pcrs={3: b"\x03" * 48}, clock=lambda: NOW)
    assert custom.describe_pcr(3).data == b"\x03" * 48
    assert custom.describe_pcr(0).data == image_pcrs(IMAGE)[0]
    with pytest.raises(NsmError) as info:
        SimulatedNsm(IMAGE, pki=pki, pcrs={16: bytes(48)})
    assert info.value.code == "InvalidIndex"
    with pytest.raises(NsmError) as info:
        SimulatedNsm(IMAGE, pki=pki, pcrs={0: bytes(32)})
    assert info.value.code == "InvalidArgument"


def test_signing_certificate_is_reissued(pki: SimulatedNitroPki) -> None:
    now = [NOW]
    nsm = SimulatedNsm(IMAGE, pki=pki, clock=lambda: now[0])

    def leaf_of(document: bytes) -> bytes:
        certificate: bytes = cbor2.loads(cbor2.loads(document)[2])["certificate"]
        return certificate

    first = leaf_of(nsm.attestation())
    now[0] = NOW + timedelta(hours=1)
    assert leaf_of(nsm.attestation()) == first  # still inside its three hours
    now[0] = NOW + timedelta(hours=3)
    later = nsm.attestation()
    assert leaf_of(later) != first
    verify(later, root_certificate=nsm.root_certificate_pem, at=now[0])
    now[0] = NOW - timedelta(hours=12)  # a clock going backwards gets a certificate valid then
    verify(nsm.attestation(), root_certificate=nsm.root_certificate_pem, at=now[0])


def test_each_nsm_is_its_own_enclave(pki: SimulatedNitroPki) -> None:
    a = SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)
    b = SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)
    assert a.module_id != b.module_id
    assert a.describe_pcr(0) == b.describe_pcr(0)
    assert a.describe_pcr(4) != b.describe_pcr(4)  # different parent instances
    fixed = SimulatedNsm(IMAGE, pki=pki, instance_id="i-0123456789abcdef0", clock=lambda: NOW)
    assert fixed.module_id.startswith("i-0123456789abcdef0-enc")


def test_default_pki_and_clock() -> None:
    nsm = SimulatedNsm()
    doc = verify(nsm.attestation(), root_certificate=nsm.root_certificate_pem)
    assert abs(doc.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_naive_clock_refused(pki: SimulatedNitroPki) -> None:
    nsm = SimulatedNsm(IMAGE, pki=pki, clock=lambda: NOW)
    nsm._clock = lambda: datetime(2030, 1, 1)
    with pytest.raises(InternalError, match="timezone-aware"):
        nsm.attestation()


def test_secrets_stay_out_of_reprs(pki: SimulatedNitroPki) -> None:
    assert "EllipticCurvePrivateKey" not in repr(pki)
    assert "root_key" not in repr(pki)


def test_satisfies_the_nsm_protocol(nsm: SimulatedNsm) -> None:
    backend: Nsm = nsm  # checked by mypy; the call below by pytest
    assert len(backend.get_random(8)) == 8
    assert backend.attestation(nonce=b"n")[:2] == b"\x84\x44"
