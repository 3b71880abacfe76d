"""A throwaway certificate authority for development stacks and tests.

``write_dev_tls(directory)`` makes a fresh CA (ECDSA P-256), a server
certificate for ``localhost`` / ``127.0.0.1`` (serverAuth) and a client
certificate (clientAuth), all issued by it, and writes them as PEM files
(keys 0600). The same CA plays the server CA clients trust and the client CA
the host requires, as a small deployment might; production uses the
deployment's own PKI (deploy/README.md, "Install and start a parent").
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevTls", "issue_ca", "write_dev_tls"]

_LIFETIME: Final = timedelta(days=30)


@dataclass(frozen=True)
class DevTls:
    """Paths of the PEM files :func:`write_dev_tls` wrote."""

    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path


@dataclass(frozen=True)
class _Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_ca(common_name: str = "shardkeep dev CA") -> tuple[bytes, bytes]:
    """A fresh self-signed CA: ``(certificate PEM, key PEM)``."""
    ca = _ca(common_name)
    return _certificate_pem(ca), _key_pem(ca)


def _ca(common_name: str) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        _builder(_name(common_name), _name(common_name), key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Issued(key, certificate)


def _leaf(ca: _Issued, common_name: str, usage: x509.ObjectIdentifier, server: bool) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca.certificate.subject, key, datetime.now(UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
    )


def _certificate_pem(issued: _Issued) -> bytes:
    return issued.certificate.public_bytes(Encoding.PEM)


def _key_pem(issued: _Issued) -> bytes:
    return issued.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_dev_tls(directory: Path) -> DevTls:
    """Write a fresh CA, a server and a client certificate with keys under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("shardkeep dev CA")
    server = _leaf(ca, "shardkeep dev server", ExtendedKeyUsageOID.SERVER_AUTH, server=True)
    client = _leaf(ca, "shardkeep dev coordinator", ExtendedKeyUsageOID.CLIENT_AUTH, server=False)
    files = DevTls(
        ca=directory / "ca.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
        client_certificate=directory / "client.pem",
        client_key=directory / "client.key",
    )
    _write(files.ca, _certificate_pem(ca), 0o644)
    _write(files.server_certificate, _certificate_pem(server), 0o644)
    _write(files.server_key, _key_pem(server), 0o600)
    _write(files.client_certificate, _certificate_pem(client), 0o644)
    _write(files.client_key, _key_pem(client), 0o600)
    return files
