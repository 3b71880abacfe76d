"""The enclave's KMS client against the local KMS stand-in (DESIGN.md §5 "KMS").

Real HTTP on 127.0.0.1 (port 0), botocore with SigV4 (dummy credentials),
and attestation documents from ``SimulatedNsm``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from devkms.keystore import KeyStore
from devkms.policy import KeyPolicy, Policy
from devkms.server import make_server, serve_in_background
from devkms.service import KmsService
from enclave.kms import (
    EnclaveKmsClient,
    KmsAccessDeniedError,
    KmsCredentials,
    KmsError,
    KmsInvalidCiphertextError,
    RecipientKey,
)
from enclave.nsm import Nsm, SimulatedNitroPki, SimulatedNsm, image_pcrs
from tss.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "shardkeep-enclave:test"
SEAL_KEY = "6f1c2d3e-0000-4000-8000-000000000001"  # PCR0, 1, 2 and 8 conditions
OPEN_KEY = "6f1c2d3e-0000-4000-8000-000000000002"  # no conditions
SEAL_ALIAS = "alias/shardkeep-seal"
PCR8 = bytes.fromhex("88" * 48)  # stands for the EIF signing certificate's hash
CREDENTIALS = KmsCredentials("AKIDEXAMPLE", "dummy-secret")
REGION = "us-east-1"


### Fixtures


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def nsm(pki: SimulatedNitroPki) -> SimulatedNsm:
    return SimulatedNsm(IMAGE, pki=pki, pcrs={8: PCR8})


@pytest.fixture(scope="module")
def recipient_key() -> RecipientKey:
    return RecipientKey.generate(2048)  # the minimum, to keep the tests fast


@pytest.fixture(scope="module")
def endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    policy = Policy(
        root_certificate=pki.root_certificate_pem,
        keys={
            SEAL_KEY: KeyPolicy("server-share sealing", SEAL_ALIAS, image_pcrs(IMAGE) | {8: PCR8}),
            OPEN_KEY: KeyPolicy("no conditions"),
        },
    )
    server, port = make_server(KmsService(KeyStore(), policy, region=REGION))
    thread = serve_in_background(server)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def enclave_client(endpoint: str, nsm: Nsm, recipient_key: RecipientKey) -> EnclaveKmsClient:
    return EnclaveKmsClient.connect(
        endpoint_url=endpoint,
        region=REGION,
        credentials=CREDENTIALS,
        nsm=nsm,
        recipient_key=recipient_key,
    )


@pytest.fixture(scope="module")
def kms(endpoint: str, nsm: SimulatedNsm, recipient_key: RecipientKey) -> EnclaveKmsClient:
    return enclave_client(endpoint, nsm, recipient_key)


def raw_client(endpoint: str) -> Any:
    """A plain botocore KMS client, as any caller (the host, say) could make."""
    return botocore.session.Session().create_client(
        "kms",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS.access_key_id,
        aws_secret_access_key=CREDENTIALS.secret_access_key,
    )


def error_code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def public_key_of(recipient_key: RecipientKey) -> rsa.RSAPublicKey:
    key = load_der_public_key(recipient_key.public_key_der)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


class TamperingNsm:
    """Returns documents whose last signature byte is flipped."""

    def __init__(self, inner: SimulatedNsm) -> None:
        self._inner = inner

    def attestation(
        self,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        document = bytearray(self._inner.attestation(user_data, nonce, public_key))
        document[-1] ^= 0x01
        return bytes(document)

    def get_random(self, n: int) -> bytes:
        return self._inner.get_random(n)


### Release to an attested enclave


def test_generate_and_decrypt_round_trip(kms: EnclaveKmsClient) -> None:
    context = {"shardkeep:wallet-id": "w1"}
    key, blob = kms.generate_data_key(SEAL_KEY, encryption_context=context)
    assert isinstance(key, bytearray) and len(key) == 32
    assert bytes(key) not in blob
    assert kms.decrypt(blob, key_id=SEAL_KEY, encryption_context=context) == key
    # Key ARN, alias name and alias ARN name the key too; and the blob names its key.
    arn_prefix = f"arn:aws:kms:{REGION}:111122223333:"
    for name in (f"{arn_prefix}key/{SEAL_KEY}", SEAL_ALIAS, f"{arn_prefix}{SEAL_ALIAS}", None):
        assert kms.decrypt(blob, key_id=name, encryption_context=context) == key


def test_data_keys_are_fresh(kms: EnclaveKmsClient) -> None:
    first, blob1 = kms.generate_data_key(SEAL_KEY)
    second, blob2 = kms.generate_data_key(SEAL_KEY)
    assert first != second and blob1 != blob2


def test_key_without_conditions(kms: EnclaveKmsClient, endpoint: str) -> None:
    key, blob = kms.generate_data_key(OPEN_KEY)
    # Without a Recipient such a key gives plaintext (like a permissive AWS
    # key policy); the enclave client never asks that way.
    response = raw_client(endpoint).decrypt(CiphertextBlob=blob)
    assert response["Plaintext"] == key
    assert "CiphertextForRecipient" not in response


### Refusals


@pytest.mark.parametrize("index", [0, 1, 2, 8], ids=lambda i: f"PCR{i}")
def test_refuses_a_different_pcr(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey, index: int
) -> None:
    other = SimulatedNsm(IMAGE, pki=pki, pcrs={8: PCR8} | {index: bytes.fromhex("ab" * 48)})
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, other, recipient_key).generate_data_key(SEAL_KEY)
    assert info.value.code == "AccessDeniedException"
    assert "pcr-mismatch" in str(info.value) and f"PCR{index} " in str(info.value)


def test_refuses_decrypt_to_another_image(
    kms: EnclaveKmsClient, endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    _, blob = kms.generate_data_key(SEAL_KEY)
    evil = SimulatedNsm("evil-image", pki=pki, pcrs={8: PCR8})
    with pytest.raises(KmsAccessDeniedError):
        enclave_client(endpoint, evil, recipient_key).decrypt(blob, key_id=SEAL_KEY)


def test_refuses_a_wrong_root(endpoint: str, recipient_key: RecipientKey) -> None:
    foreign = SimulatedNsm(IMAGE, pki=SimulatedNitroPki.generate(), pcrs={8: PCR8})
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, foreign, recipient_key).generate_data_key(SEAL_KEY)
    assert "untrusted-root" in str(info.value)


def test_refuses_an_expired_document(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    old = SimulatedNsm(IMAGE, pki=pki, pcrs={8: PCR8}, clock=lambda: yesterday)
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, old, recipient_key).generate_data_key(SEAL_KEY)
    assert "expired" in str(info.value)


def test_refuses_a_stale_document(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    # Its certificates are still valid, but the document is 10 minutes old.
    earlier = datetime.now(UTC) - timedelta(minutes=10)
    stale = SimulatedNsm(IMAGE, pki=pki, pcrs={8: PCR8}, clock=lambda: earlier)
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, stale, recipient_key).generate_data_key(SEAL_KEY)
    assert "not fresh" in str(info.value)


def test_refuses_an_invalid_signature(
    endpoint: str, nsm: SimulatedNsm, recipient_key: RecipientKey
) -> None:
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, TamperingNsm(nsm), recipient_key).generate_data_key(SEAL_KEY)
    assert "bad-signature" in str(info.value)


def test_refuses_a_debug_mode_enclave(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    debug = SimulatedNsm(IMAGE, pki=pki, debug=True)
    with pytest.raises(KmsAccessDeniedError) as info:
        enclave_client(endpoint, debug, recipient_key).generate_data_key(OPEN_KEY)
    assert "debug-mode" in str(info.value)


def test_refuses_a_missing_recipient(kms: EnclaveKmsClient, endpoint: str) -> None:
    client = raw_client(endpoint)
    with pytest.raises(ClientError) as info:
        client.generate_data_key(KeyId=SEAL_KEY, KeySpec="AES_256")
    assert error_code(info) == "AccessDeniedException"
    assert "Plaintext" not in info.value.response
    _, blob = kms.generate_data_key(SEAL_KEY)
    with pytest.raises(ClientError) as info:
        client.decrypt(CiphertextBlob=blob)
    assert error_code(info) == "AccessDeniedException"
    assert "Plaintext" not in info.value.response


@pytest.mark.parametrize(
    ("document", "expected"),
    [("no-public-key", "ValidationException"), ("junk", "AccessDeniedException")],
)
def test_refuses_unusable_documents(
    endpoint: str, nsm: SimulatedNsm, document: str, expected: str
) -> None:
    body = nsm.attestation() if document == "no-public-key" else b"junk"
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": body}
    with pytest.raises(ClientError) as info:
        raw_client(endpoint).generate_data_key(
            KeyId=SEAL_KEY, KeySpec="AES_256", Recipient=recipient
        )
    assert error_code(info) == expected


def test_wrong_context_key_or_blob_is_invalid_ciphertext(kms: EnclaveKmsClient) -> None:
    _, blob = kms.generate_data_key(SEAL_KEY, encryption_context={"epoch": "1"})
    with pytest.raises(KmsInvalidCiphertextError):
        kms.decrypt(blob, encryption_context={"epoch": "2"})
    with pytest.raises(KmsInvalidCiphertextError):
        kms.decrypt(blob)
    with pytest.raises(KmsInvalidCiphertextError) as info:
        kms.decrypt(blob, key_id=OPEN_KEY, encryption_context={"epoch": "1"})
    assert info.value.code == "IncorrectKeyException"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(KmsInvalidCiphertextError):
        kms.decrypt(bytes(tampered), encryption_context={"epoch": "1"})


def test_unknown_key_and_bad_arguments(kms: EnclaveKmsClient) -> None:
    with pytest.raises(KmsError) as info:
        kms.generate_data_key("6f1c2d3e-0000-4000-8000-0000000000ff")
    assert info.value.code == "NotFoundException"
    with pytest.raises(InputError):
        kms.generate_data_key("")
    with pytest.raises(InputError):
        kms.decrypt(b"")


def test_unreachable_endpoint(nsm: SimulatedNsm, recipient_key: RecipientKey) -> None:
    client = EnclaveKmsClient.connect(
        endpoint_url="http://127.0.0.1:9",
        region=REGION,
        credentials=CREDENTIALS,
        nsm=nsm,
        recipient_key=recipient_key,
        timeout=1.0,
    )
    with pytest.raises(KmsError) as info:
        client.generate_data_key(SEAL_KEY)
    assert info.value.code == "Unavailable"
