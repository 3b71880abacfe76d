"""The Nitro Secure Module (NSM) interface and a simulated NSM (docs/architecture.md).

Inside a Nitro enclave the NSM is the device ``/dev/nsm``: each request
(``DescribePCR``, ``ExtendPCR``, ``LockPCR``, ``DescribeNSM``, ``Attestation``,
``GetRandom``) is a CBOR-encoded message passed through one ``ioctl`` on that
device, as defined by aws-nitro-enclaves-nsm-api (``src/api/mod.rs``,
``src/driver/mod.rs``); :class:`enclave.nsm_device.DeviceNsm` is that backend.

:class:`SimulatedNsm` stands in for it on machines without Nitro (dev, CI). It
produces attestation documents in exactly the real format: an untagged
``COSE_Sign1`` (RFC 9052 §4.2) with protected header ``{1: -35}`` (ES384),
an empty unprotected header, the payload map in the NSM's field order
(module_id, digest, timestamp, pcrs, certificate, cabundle, public_key,
user_data, nonce; absent options as CBOR null) and a 96-byte r || s
signature, by a short-lived per-enclave certificate that chains through three
intermediates to a test root, as AWS's PKI does (docs/attestation_process.md
§2.1, §3.2.3). Clients verify such documents with
``client.sdk.attestation.verify(..., root_certificate=nsm.root_certificate_pem)``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import NameOID

from tss.errors import InternalError, ShardkeepError

__all__ = [
    # Functions
    "image_pcrs",
    # Exceptions
    "NsmError",
    # Types
    "Nsm",
    "NsmErrorCode",
    "PcrDescription",
    "SimulatedNitroPki",
    "SimulatedNsm",
    # Constants
    "ES384_PROTECTED_HEADER",
    "MAX_USER_DATA_SIZE",
    "PCR_COUNT",
    "PCR_SIZE",
]

PCR_COUNT: Final = 32
"""PCRs 0-31 (AWS docs/attestation_process.md §2.2: index = 0..31)."""
PCR_SIZE: Final = 48
"""Bytes of a SHA-384 PCR."""
MAX_USER_DATA_SIZE: Final = 1024
"""Largest user_data, nonce or public_key the NSM accepts (AWS §2.2)."""
ES384_PROTECTED_HEADER: Final = cbor2.dumps({1: -35})
"""The protected header of every NSM document: {alg: ES384} (RFC 9053 §2.1)."""

# PCRs 0-15 are measured at boot and read-only; 16-31 start at zero and the
# enclave may extend and lock them (Nitro Enclaves user guide, "Where to get
# an enclave's measurements").
_BOOT_LOCKED_PCRS: Final = 16
_ES384_COORDINATE_SIZE: Final = 48
_PCR_TAG: Final = b"shardkeep/simulated-nsm/pcr"  # domain separation, simulator only
_LEAF_LIFETIME: Final = timedelta(hours=3)  # what AWS issues (seen on real documents)
_LEAF_REISSUE_MARGIN: Final = timedelta(minutes=5)

NsmErrorCode = Literal[
    "InvalidArgument",
    "InvalidIndex",
    "InvalidResponse",
    "ReadOnlyIndex",
    "InvalidOperation",
    "BufferTooSmall",
    "InputTooLarge",
    "InternalError",
]
"""nsm-api's ``ErrorCode`` values other than ``Success`` (``src/api/mod.rs``)."""


class NsmError(ShardkeepError):
    """The NSM refused a request; ``code`` is its nsm-api ``ErrorCode``."""

    def __init__(self, code: NsmErrorCode, message: str) -> None:
        self.code: NsmErrorCode = code
        super().__init__(f"{code}: {message}")


class Nsm(Protocol):
    """What the enclave needs from an NSM; ``/dev/nsm`` or :class:`SimulatedNsm`."""

    def attestation(
        self,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Return a signed attestation document (untagged COSE_Sign1, ES384)."""
        ...

    def get_random(self, n: int) -> bytes:
        """Return ``n`` bytes from the NSM's hardware random source."""
        ...


@dataclass(frozen=True)
class PcrDescription:
    """Answer to ``DescribePCR``: whether the PCR is read-only, and its value."""

    locked: bool
    data: bytes


def image_pcrs(image: str) -> dict[int, bytes]:
    """The PCR0-2 values the simulator reports for an enclave image.

    On Nitro, PCR0 measures the enclave image file, PCR1 the kernel and
    bootstrap, PCR2 the application; the simulator derives stand-ins from
    the image name, so that a client or the local KMS can pin them.

    Arguments:
        image: a name for the enclave image, e.g. ``"shardkeep-enclave:1.0"``.

    Returns:
        ``{0: pcr0, 1: pcr1, 2: pcr2}``, 48 bytes each.
    """
    return {i: _measure(f"{i}".encode(), image.encode()) for i in range(3)}


def _measure(index_tag: bytes, data: bytes) -> bytes:
    return hashlib.sha384(_PCR_TAG + index_tag + b"\x00" + data).digest()


### Simulated PKI


def _name(common_name: str, **extra: str) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shardkeep simulated NSM"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "test"),
    ]
    if "locality" in extra:
        attributes.append(x509.NameAttribute(NameOID.LOCALITY_NAME, extra["locality"]))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(
    *, sign: bool, commit: bool = False, cert_sign: bool, crl_sign: bool
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=commit,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
        crl_sign=crl_sign,
    )


def _whole_seconds(t: datetime) -> datetime:
    # X.509 validity has second precision; round down so that a certificate
    # issued "now" is already valid at the document's millisecond timestamp.
    return t.replace(microsecond=0)


@dataclass(frozen=True)
class _Issuer:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate


def _issue(
    issuer: _Issuer | None,
    subject: x509.Name,
    *,
    not_before: datetime,
    lifetime: timedelta,
    path_length: int | None,
    is_ca: bool,
    key_usage: x509.KeyUsage,
    key_usage_critical: bool,
    key_identifiers: bool,
) -> _Issuer:
    """Make a P-384 key and a certificate for it (self-signed when ``issuer`` is None)."""
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(key_usage, critical=key_usage_critical)
    )
    # AWS's instance CA and signing certificates carry no key identifiers;
    # we mirror that so the verifier is tested against the real shape.
    if key_identifiers:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
    signer = key if issuer is None else issuer.key
    return _Issuer(key, builder.sign(signer, hashes.SHA384()))


@dataclass(frozen=True)
class _SigningIdentity:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: bytes
    cabundle: tuple[bytes, ...]  # root first, as in the document (AWS §3.2.3)
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class SimulatedNitroPki:
    """A test stand-in for the AWS Nitro Attestation PKI: a self-signed P-384 root.

    Make one with :meth:`generate`; share it between simulated enclaves that
    a client should trust alike.
    """

    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    root_certificate: x509.Certificate

    @classmethod
    def generate(
        cls, *, now: datetime | None = None, partition: str = "shardkeep-test"
    ) -> SimulatedNitroPki:
        """Create a root CA valid for 30 years from a day before ``now``.

        Arguments:
            now: the creation time (default: the current time).
            partition: names the root ``CN=<partition>.nitro-enclaves``, like AWS's
                ``aws.nitro-enclaves``.

        Returns:
            A new PKI with a fresh root key.
        """
        start = _whole_seconds(now or datetime.now(UTC)) - timedelta(days=1)
        root = _issue(
            None,
            _name(f"{partition}.nitro-enclaves"),
            not_before=start,
            lifetime=timedelta(days=30 * 365),
            path_length=None,
            is_ca=True,
            key_usage=_key_usage(sign=True, cert_sign=True, crl_sign=True),
            key_usage_critical=True,
            key_identifiers=True,
        )
        return cls(root.key, root.certificate)

    @property
    def root_certificate_pem(self) -> bytes:
        """The root certificate, PEM encoded."""
        return self.root_certificate.public_bytes(Encoding.PEM)

    @property
    def root_certificate_der(self) -> bytes:
        """The root certificate, DER encoded."""
        return self.root_certificate.public_bytes(Encoding.DER)

    def save(self, directory: Path) -> None:
        """Write ``root.key`` (0600) and ``root.pem`` so other processes share this PKI.

        The key plays AWS's root CA: in a real deployment it does not exist on
        the machine at all; the simulated NSM, the devkms stand-in and clients
        of a dev setup read it (or just the certificate) from here.
        """
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / "root.key"
        key_pem = self.root_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        (directory / "root.pem").write_bytes(self.root_certificate_pem)

    @classmethod
    def load(cls, directory: Path) -> SimulatedNitroPki:
        """Read a PKI written by :meth:`save`."""
        key = load_pem_private_key((directory / "root.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise NsmError("InvalidArgument", "root.key is not an EC private key")
        certificate = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
        return cls(key, certificate)


def _issue_identity(
    pki: SimulatedNitroPki, now: datetime, module_id: str, instance_id: str, region: str
) -> _SigningIdentity:
    # The shape of AWS's chain: regional CA (pathLen 2), zonal CA
    # (pathLen 1), instance CA (pathLen 0, keyCertSign only, no key
    # identifiers), then the end-entity signing certificate that lives
    # three hours, digitalSignature + nonRepudiation.
    start = _whole_seconds(now)
    root = _Issuer(pki.root_key, pki.root_certificate)
    suffix = f"{region}.nitro-enclaves"
    regional = _issue(
        root,
        _name(f"{secrets.token_hex(8)}.{suffix}"),
        not_before=start - timedelta(days=5),
        lifetime=timedelta(days=20),
        path_length=2,
        is_ca=True,
        key_usage=_key_usage(sign=True, cert_sign=True, crl_sign=True),
        key_usage_critical=True,
        key_identifiers=True,
    )
    zonal = _issue(
        regional,
        _name(f"{secrets.token_hex(8)}.zonal.{suffix}", locality="Seattle"),
        not_before=start - timedelta(hours=8),
        lifetime=timedelta(days=5),
        path_length=1,
        is_ca=True,
        key_usage=_key_usage(sign=True, cert_sign=True, crl_sign=True),
        key_usage_critical=True,
        key_identifiers=True,
    )
    instance = _issue(
        zonal,
        _name(f"{instance_id}.{suffix}", locality="Seattle"),
        not_before=start - timedelta(minutes=15),
        lifetime=timedelta(days=1),
        path_length=0,
        is_ca=True,
        key_usage=_key_usage(sign=False, cert_sign=True, crl_sign=False),
        key_usage_critical=True,
        key_identifiers=False,
    )
    leaf_start = start - timedelta(seconds=3)
    leaf = _issue(
        instance,
        _name(f"{module_id}.{region}.aws", locality="Seattle"),
        not_before=leaf_start,
        lifetime=_LEAF_LIFETIME,
        path_length=None,
        is_ca=False,
        key_usage=_key_usage(sign=True, commit=True, cert_sign=False, crl_sign=False),
        key_usage_critical=False,
        key_identifiers=False,
    )
    return _SigningIdentity(
        key=leaf.key,
        certificate=leaf.certificate.public_bytes(Encoding.DER),
        cabundle=tuple(
            c.certificate.public_bytes(Encoding.DER) for c in (root, regional, zonal, instance)
        ),
        not_before=leaf_start,
        not_after=leaf_start + _LEAF_LIFETIME,
    )


### Simulated NSM


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedNsm:
    """An NSM for machines without Nitro hardware; documents in the real format.

    PCR0-2 come from :func:`image_pcrs` (or ``pcrs``), PCR4 measures the
    instance id as on AWS, the rest of PCR0-15 are zero and locked; PCR16-31
    start at zero and may be extended and locked. In ``debug`` mode PCR0-15
    are all zero, as AWS reports for an enclave run with ``--debug-mode``.
    The signing certificate is re-issued when it nears the end of its
    three-hour life. Safe to share between threads.
    """

    def __init__(
        self,
        image: str = "shardkeep-enclave",
        *,
        pki: SimulatedNitroPki | None = None,
        pcrs: Mapping[int, bytes] | None = None,
        debug: bool = False,
        instance_id: str | None = None,
        region: str = "us-east-1",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Start a simulated enclave's NSM.

        Arguments:
            image: the enclave image name PCR0-2 are derived from.
            pki: the root to chain to; default a fresh :class:`SimulatedNitroPki`.
            pcrs: values replacing boot PCRs (indices 0-15, 48 bytes each).
            debug: report all-zero PCR0-15, like a debug-mode enclave.
            instance_id: the parent instance id; default a random ``i-…``.
            region: the AWS region named in certificate subjects.
            clock: returns the current time (timezone-aware); tests pass a fixed one.

        Raises:
            NsmError: a PCR in ``pcrs`` has a bad index or size.
        """
        self._clock = clock
        self._pki = pki or SimulatedNitroPki.generate(now=clock())
        self._instance_id = instance_id or f"i-{secrets.token_hex(9)[:17]}"
        self._region = region
        self._module_id = f"{self._instance_id}-enc{secrets.token_hex(8)}"
        self._lock = threading.Lock()
        self._identity: _SigningIdentity | None = None

        bank = [bytes(PCR_SIZE)] * PCR_COUNT
        if not debug:
            for index, value in image_pcrs(image).items():
                bank[index] = value
            bank[4] = _measure(b"4", self._instance_id.encode())
            for index, value in (pcrs or {}).items():
                _check_index(index, limit=_BOOT_LOCKED_PCRS)
                if len(value) != PCR_SIZE:
                    raise NsmError("InvalidArgument", f"PCR{index} must be {PCR_SIZE} bytes")
                bank[index] = bytes(value)
        self._pcrs = bank
        self._locked = [i < _BOOT_LOCKED_PCRS for i in range(PCR_COUNT)]

    @property
    def module_id(self) -> str:
        """The NSM's module id, ``<instance id>-enc<16 hex digits>`` as on AWS."""
        return self._module_id

    @property
    def root_certificate_pem(self) -> bytes:
        """The test root the documents chain to, PEM encoded (for ``root_certificate=``)."""
        return self._pki.root_certificate_pem

    @property
    def pki(self) -> SimulatedNitroPki:
        """The simulated PKI this NSM's certificates chain to."""
        return self._pki

    def describe_pcr(self, index: int) -> PcrDescription:
        """Read a PCR (nsm-api ``DescribePCR``).

        Arguments:
            index: 0-31.

        Returns:
            Whether it is locked, and its 48-byte value.

        Raises:
            NsmError: ``InvalidIndex`` for an index outside 0-31.
        """
        _check_index(index)
        with self._lock:
            return PcrDescription(self._locked[index], self._pcrs[index])

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend a PCR: ``PCR = SHA-384(PCR || data)`` (nsm-api ``ExtendPCR``).

        Arguments:
            index: 16-31 (0-15 are locked at boot).
            data: at most 1024 bytes.

        Returns:
            The new 48-byte value.

        Raises:
            NsmError: ``InvalidIndex``, ``ReadOnlyIndex`` for a locked PCR,
                ``InputTooLarge``.
        """
        _check_index(index)
        _check_size("data", data)
        with self._lock:
            if self._locked[index]:
                raise NsmError("ReadOnlyIndex", f"PCR{index} is locked")
            self._pcrs[index] = hashlib.sha384(self._pcrs[index] + data).digest()
            return self._pcrs[index]

    def lock_pcr(self, index: int) -> None:
        """Make a PCR read-only; from then on it appears in attestation documents.

        Arguments:
            index: 0-31 (locking a locked PCR is a no-op, as on Nitro).

        Raises:
            NsmError: ``InvalidIndex``.
        """
        _check_index(index)
        with self._lock:
            self._locked[index] = True

    def get_random(self, n: int) -> bytes:
        """Return ``n`` random bytes (nsm-api ``GetRandom``; here the OS CSPRNG).

        Raises:
            NsmError: ``InvalidArgument`` for a negative ``n``.
        """
        if n < 0:
            raise NsmError("InvalidArgument", "n must be non-negative")
        return secrets.token_bytes(n)

    def attestation(
        self,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Produce a signed attestation document (nsm-api ``Attestation``).

        Arguments:
            user_data: up to 1024 bytes the enclave wants signed.
            nonce: the verifier's challenge, up to 1024 bytes.
            public_key: a DER public key for the verifier to use, 1-1024 bytes.

        Returns:
            An untagged COSE_Sign1 document, ES384, over the AWS payload
            listing every locked PCR.

        Raises:
            NsmError: ``InputTooLarge`` or ``InvalidArgument`` (empty public_key).
            InternalError: the document's own signature does not verify.
        """
        for name, value in (("user_data", user_data), ("nonce", nonce), ("public_key", public_key)):
            if value is not None:
                _check_size(name, value)
        if public_key is not None and not public_key:
            raise NsmError("InvalidArgument", "public_key must not be empty")
        now = self._now()
        with self._lock:
            identity = self._identity_at(now)
            pcrs = {i: self._pcrs[i] for i in range(PCR_COUNT) if self._locked[i]}
        # Field order and null-for-absent follow nsm-api's AttestationDoc
        # serialisation (src/api/mod.rs), which real documents show.
        payload = cbor2.dumps(
            {
                "module_id": self._module_id,
                "digest": "SHA384",
                "timestamp": (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1),
                "pcrs": pcrs,
                "certificate": identity.certificate,
                "cabundle": list(identity.cabundle),
                "public_key": public_key,
                "user_data": user_data,
                "nonce": nonce,
            }
        )
        return _sign_cose(identity, payload, ES384_PROTECTED_HEADER)

    def insecure_sign_payload(
        self, payload: bytes, *, protected: bytes = ES384_PROTECTED_HEADER
    ) -> bytes:
        """Sign arbitrary bytes as a COSE_Sign1 document with the current signing key.

        Test-only hazard: a real NSM never signs caller-chosen payloads. Tests
        use it to build well-signed documents with malformed contents.

        Arguments:
            payload: the COSE payload bytes.
            protected: the protected header bstr contents (default ES384).

        Returns:
            An untagged COSE_Sign1 document.
        """
        with self._lock:
            identity = self._identity_at(self._now())
        return _sign_cose(identity, payload, protected)

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise InternalError("the simulated NSM's clock must return timezone-aware times")
        return now

    def _identity_at(self, now: datetime) -> _SigningIdentity:
        identity = self._identity
        if (
            identity is None
            or now < identity.not_before
            or now > identity.not_after - _LEAF_REISSUE_MARGIN
        ):
            identity = _issue_identity(
                self._pki, now, self._module_id, self._instance_id, self._region
            )
            self._identity = identity
        return identity


def _sign_cose(identity: _SigningIdentity, payload: bytes, protected: bytes) -> bytes:
    # RFC 9052 §4.4 Sig_structure with empty external_aad; RFC 9053 §2.1:
    # the signature is r || s, each left-padded to 48 bytes.
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(identity.key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(_ES384_COORDINATE_SIZE, "big") + s.to_bytes(
        _ES384_COORDINATE_SIZE, "big"
    )
    # Self-check: the document must verify under the key we certify.
    try:
        identity.key.public_key().verify(
            encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature as e:
        raise InternalError("simulated NSM produced a signature that does not verify") from e
    return cbor2.dumps([protected, {}, payload, signature])


def _check_index(index: int, *, limit: int = PCR_COUNT) -> None:
    if type(index) is not int or not 0 <= index < limit:
        raise NsmError("InvalidIndex", f"PCR index {index!r} is not in 0..{limit - 1}")


def _check_size(name: str, value: bytes) -> None:
    if len(value) > MAX_USER_DATA_SIZE:
        raise NsmError(
            "InputTooLarge", f"{name} is {len(value)} bytes, at most {MAX_USER_DATA_SIZE}"
        )
