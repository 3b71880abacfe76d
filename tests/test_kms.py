"""The enclave's KMS client against the local KMS stand-in (docs/architecture.md).

Real HTTP on 127.0.0.1 (port 0), botocore with SigV4 (dummy credentials),
and attestation documents from ``SimulatedNsm``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session  # type: ignore[import-untyped]
import pytest
from asn1crypto import cms  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from botocore.stub import Stubber  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from devkms.envelope import envelope_for_recipient
from devkms.keystore import KeyStore, KeyStoreError
from devkms.main import main as devkms_main
from devkms.policy import KeyPolicy, Policy
from devkms.server import KmsHttpServer, make_server, serve_in_background
from devkms.service import KmsService
from enclave.cms import CmsError, open_enveloped_data, parse_enveloped_data
from enclave.kms import (
    EnclaveKmsClient,
    KmsAccessDeniedError,
    KmsCredentials,
    KmsError,
    KmsInvalidCiphertextError,
    RecipientKey,
)
from enclave.nsm import Nsm, SimulatedNitroPki, SimulatedNsm, image_pcrs
from enclave.seal import SealBinding, SealError, ShareSealer
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


### The enclave never takes plaintext


def stubbed(nsm: SimulatedNsm, recipient_key: RecipientKey) -> tuple[EnclaveKmsClient, Stubber]:
    raw = raw_client("http://127.0.0.1:9")
    return EnclaveKmsClient(raw, nsm=nsm, recipient_key=recipient_key), Stubber(raw)


def test_enclave_refuses_plaintext_or_missing_envelope(
    nsm: SimulatedNsm, recipient_key: RecipientKey
) -> None:
    client, stub = stubbed(nsm, recipient_key)
    envelope = envelope_for_recipient(bytes(32), public_key_of(recipient_key))
    stub.add_response(
        "generate_data_key",
        {"CiphertextBlob": b"blob", "Plaintext": bytes(32), "CiphertextForRecipient": envelope},
    )
    stub.add_response("decrypt", {"Plaintext": bytes(32)})
    stub.add_response("generate_data_key", {"CiphertextBlob": b"blob"})
    calls: list[Callable[[], object]] = [
        lambda: client.generate_data_key(SEAL_KEY),
        lambda: client.decrypt(b"blob"),
        lambda: client.generate_data_key(SEAL_KEY),
    ]
    with stub:
        for call in calls:
            with pytest.raises(KmsError) as info:
                call()
            assert info.value.code == "InvalidResponse"


def test_enclave_refuses_an_envelope_for_another_key(
    nsm: SimulatedNsm, recipient_key: RecipientKey
) -> None:
    client, stub = stubbed(nsm, recipient_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    stub.add_response(
        "generate_data_key",
        {"CiphertextBlob": b"blob", "CiphertextForRecipient": envelope_for_recipient(b"k", other)},
    )
    with stub, pytest.raises(KmsError) as info:
        client.generate_data_key(SEAL_KEY)
    assert info.value.code == "InvalidResponse"


### What the host sees


class WireTap:
    """Records every request and response body botocore sends and receives."""

    def __init__(self, client: EnclaveKmsClient) -> None:
        self.bodies: list[bytes] = []
        events = client._client.meta.events
        events.register("before-send.kms.*", self._request)
        events.register("response-received.kms.*", self._response)

    def _request(self, request: Any, **_: object) -> None:
        self.bodies.append(bytes(request.body or b""))

    def _response(self, response_dict: Mapping[str, Any], **_: object) -> None:
        self.bodies.append(bytes(response_dict["body"]))

    def visible(self) -> list[bytes]:
        """Every body, and every string inside the JSON bodies, base64-decoded too."""
        out = list(self.bodies)
        for body in self.bodies:
            out.extend(_strings(json.loads(body)))
        return out


def _strings(value: object) -> Iterator[bytes]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, str):
        yield value.encode()
        with contextlib.suppress(binascii.Error, ValueError):
            yield base64.b64decode(value, validate=True)


def test_host_visible_values_never_contain_secrets(
    endpoint: str,
    nsm: SimulatedNsm,
    recipient_key: RecipientKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = enclave_client(endpoint, nsm, recipient_key)
    tap = WireTap(client)
    share = b"CANARY-SHARE:" + os.urandom(48)
    binding = SealBinding("wallet-canary", 1, "bip340", 0)
    with caplog.at_level(logging.DEBUG):  # botocore logs whole bodies at DEBUG
        data_key, blob = client.generate_data_key(SEAL_KEY)
        sealer = ShareSealer(client, SEAL_KEY)
        stored = sealer.seal(share, binding)
        assert sealer.unseal(stored, binding) == share
    assert len(tap.bodies) == 6  # three requests, three responses
    visible = [blob, stored.encrypted_data_key, stored.ciphertext, *tap.visible()]
    visible.append(caplog.text.encode())
    for secret in (bytes(data_key), share, share[13:29]):
        for value in visible:
            assert secret not in value
            assert secret.hex().encode() not in value


def test_sealer_over_kms_detects_swaps_and_rollbacks(kms: EnclaveKmsClient) -> None:
    sealer = ShareSealer(kms, SEAL_KEY)
    binding = SealBinding("wallet-a", 0, "ecdsa-secp256k1", 3)
    stored = sealer.seal(b"share at epoch 3", binding)
    newer = SealBinding("wallet-a", 0, "ecdsa-secp256k1", 4)
    sealer.seal(b"share at epoch 4", newer)
    with pytest.raises(SealError) as info:
        sealer.unseal(stored, newer)  # the host replays the old epoch
    assert info.value.reason == "binding-mismatch"
    theirs = sealer.seal(b"wallet b share", SealBinding("wallet-b", 0, "ecdsa-secp256k1", 3))
    with pytest.raises(SealError) as info:
        # Wallet b's data key paired with wallet a's blob: KMS refuses it
        # under wallet a's encryption context.
        sealer.unseal(stored._replace(encrypted_data_key=theirs.encrypted_data_key), binding)
    assert info.value.reason == "data-key"


### The HTTP protocol


def post(endpoint: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(endpoint + "/", data=body, method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


SIGNED = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "TrentService.DescribeKey",
    "X-Amz-Date": "20260101T000000Z",
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/kms/"
    "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64,
}


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({}, 200, None),
        ({"Authorization": None}, 400, "MissingAuthenticationTokenException"),
        ({"Authorization": "Bearer token"}, 400, "IncompleteSignatureException"),
        ({"X-Amz-Date": None}, 400, "IncompleteSignatureException"),
        ({"X-Amz-Target": "TrentService.ScheduleKeyDeletion"}, 400, "UnknownOperationException"),
        ({"X-Amz-Target": "DynamoDB_20120810.GetItem"}, 400, "UnknownOperationException"),
        ({"Content-Type": "application/json"}, 400, "SerializationException"),
    ],
    ids=["signed", "no-auth", "not-sigv4", "no-date", "unsupported-op", "other-service", "json"],
)
def test_request_shape(
    endpoint: str, change: Mapping[str, str | None], status: int, error: str | None
) -> None:
    headers = {k: v for k, v in (SIGNED | dict(change)).items() if v is not None}
    got_status, body = post(endpoint, json.dumps({"KeyId": SEAL_KEY}).encode(), headers)
    assert got_status == status
    if error is None:
        assert body["KeyMetadata"]["KeyId"] == SEAL_KEY
    else:
        assert body["__type"] == error and isinstance(body["message"], str)


def test_malformed_body(endpoint: str) -> None:
    status, body = post(endpoint, b"{not json", SIGNED)
    assert (status, body["__type"]) == (400, "SerializationException")


def test_create_and_describe_key_with_a_policy(endpoint: str, kms: EnclaveKmsClient) -> None:
    client = raw_client(endpoint)
    conditions = {f"kms:RecipientAttestation:PCR{i}": v.hex() for i, v in image_pcrs(IMAGE).items()}
    created = client.create_key(
        Description="per-test key", Policy=json.dumps({"conditions": conditions})
    )["KeyMetadata"]
    described = client.describe_key(KeyId=created["KeyId"])["KeyMetadata"]
    assert described["Arn"] == created["Arn"] and described["Description"] == "per-test key"
    assert described["KeyState"] == "Enabled" and described["KeySpec"] == "SYMMETRIC_DEFAULT"
    with pytest.raises(ClientError) as info:
        client.generate_data_key(KeyId=created["KeyId"], NumberOfBytes=32)
    assert error_code(info) == "AccessDeniedException"
    key, _ = kms.generate_data_key(created["Arn"])
    assert len(key) == 32
    with pytest.raises(ClientError) as info:
        client.create_key(Policy=json.dumps({"conditions": {"kms:ViaService": "x"}}))
    assert error_code(info) == "MalformedPolicyDocumentException"


def test_encrypt_and_decrypt_without_conditions(endpoint: str) -> None:
    client = raw_client(endpoint)
    blob = client.encrypt(KeyId=OPEN_KEY, Plaintext=b"hello", EncryptionContext={"a": "b"})
    assert b"hello" not in blob["CiphertextBlob"]
    plain = client.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert plain["Plaintext"] == b"hello"
    assert plain["KeyId"].endswith(OPEN_KEY)


### CMS EnvelopedData (enclave/cms.py, devkms/envelope.py)

# A real GenerateDataKey CiphertextForRecipient from AWS KMS, from the test of
# aws-nitro-enclaves-sdk-c (tests/cms_test.c, Apache-2.0): BER with indefinite
# lengths, a 32-byte subjectKeyIdentifier, RSA-OAEP-SHA-256 to a 2048-bit key,
# AES-256-CBC content of 48 bytes (a 32-byte key plus a block of padding).
# Its private key is not public, so it checks parsing only.
AWS_CIPHERTEXT_FOR_RECIPIENT = bytes.fromhex(
    "308006092a864886f70d010703a08030800201023182016b3082016702010280207087b55df94ba3255cdf3c"
    "01840a2aa3ec93620625d601cf56f97bde7a3d2eb1303c06092a864886f70d010107302fa00f300d060960"
    "86480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500048201"
    "00a0614593a030ee336bfff076618b0130d045de9f4d183d83c5da882f13abc1f4bf0d1364586939344"
    "2ab582e6a04d697d52d5623e367e7e92db6ebd2bd07735b153f2826bee5df8e16c713a1e85cb6ba85e8868"
    "1335c7e941a94abf0c0113e030916e2b6e1826db4ffb919b8e1b6f59ec277e58de40b0ffeecaa0d94fbcb"
    "290374ed3dfc35d31a8f43ae1300fe20fdd986d4b8565657451f9dc693e134678920221c58a28da5e71ab6"
    "b31caa445825a6385c6c4f5d5d5ebbc2c2570e9647fded36b559647bcb27e58886255f582c63d863ecec30"
    "7d15763abce0b1b812a550938ca4e2d28a74563db52367558d3e2e82ac2a27fe5c9391a007c15f75b90ab0"
    "dd308006092a864886f70d010701301d060960864801650304012a0410688c6d5f7f31b0fecedf09f2e7c9"
    "9ac9a080043070e5caaffd49ad24efe15bf903be9d19895b777d269b57b025f6f67e7ef93f94464515f2eb"
    "e034ea0b7621a1ff19292e00000000000000000000"
)
# Its keyEncryptionAlgorithm: id-RSAES-OAEP, SHA-256 (NULL params), MGF1-SHA-256.
OAEP_SHA256_ALGORITHM = bytes.fromhex(
    "303c06092a864886f70d010107302fa00f300d06096086480165030402010500a11c301a06092a864886"
    "f70d010108300d06096086480165030402010500"
)


def test_parses_a_real_kms_response() -> None:
    envelope = parse_enveloped_data(AWS_CIPHERTEXT_FOR_RECIPIENT)
    assert envelope.subject_key_identifier == bytes.fromhex(
        "7087b55df94ba3255cdf3c01840a2aa3ec93620625d601cf56f97bde7a3d2eb1"
    )
    assert envelope.iv == bytes.fromhex("688c6d5f7f31b0fecedf09f2e7c99ac9")
    assert len(envelope.encrypted_key) == 256
    assert envelope.encrypted_key.startswith(bytes.fromhex("a0614593a030ee33"))
    assert len(envelope.encrypted_content) == 48
    assert envelope.encrypted_content.startswith(bytes.fromhex("70e5caaffd49ad24"))


def test_real_kms_response_does_not_open_with_another_key(recipient_key: RecipientKey) -> None:
    with pytest.raises(CmsError, match="does not decrypt"):
        recipient_key.open(AWS_CIPHERTEXT_FOR_RECIPIENT, content_length=32)


def test_our_envelope_has_the_kms_shape() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = os.urandom(32)
    ours = envelope_for_recipient(secret, key.public_key())
    assert OAEP_SHA256_ALGORITHM in AWS_CIPHERTEXT_FOR_RECIPIENT
    assert OAEP_SHA256_ALGORITHM in ours
    parts = parse_enveloped_data(ours)
    assert len(parts.subject_key_identifier or b"") == 32
    assert len(parts.encrypted_content) == 48
    assert open_enveloped_data(ours, key, content_length=32) == secret


@pytest.mark.parametrize("where", ["iv", "content-first", "content-last", "encrypted-key"])
def test_tampered_envelopes(where: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = os.urandom(32)
    envelope = envelope_for_recipient(secret, key.public_key())
    parts = parse_enveloped_data(envelope)
    target = {
        "iv": parts.iv,
        "content-first": parts.encrypted_content[:16],
        "content-last": parts.encrypted_content[-16:],
        "encrypted-key": parts.encrypted_key[:16],
    }[where]
    tampered = bytearray(envelope)
    tampered[envelope.index(target)] ^= 0x80
    if where in ("iv", "content-first"):
        # CBC is malleable: the data key changes silently, and the AES-GCM
        # seal that uses it fails instead.
        assert open_enveloped_data(bytes(tampered), key, content_length=32) != secret
    else:
        with pytest.raises(CmsError) as info:
            open_enveloped_data(bytes(tampered), key, content_length=32)
        assert str(info.value) == "CiphertextForRecipient does not decrypt"


def test_wrong_length_and_sha1_oaep_are_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    short = envelope_for_recipient(os.urandom(16), key.public_key())
    with pytest.raises(CmsError, match="does not decrypt"):
        open_enveloped_data(short, key, content_length=32)
    info = cms.ContentInfo.load(envelope_for_recipient(os.urandom(32), key.public_key()))
    ktri = info["content"]["recipient_infos"][0].chosen
    # id-RSAES-OAEP with empty parameters: RFC 4055's SHA-1 defaults.
    sha1_oaep = bytes.fromhex("300d06092a864886f70d0101073000")
    ktri["key_encryption_algorithm"] = cms.KeyEncryptionAlgorithm.load(sha1_oaep)
    with pytest.raises(CmsError, match="SHA-256"):
        parse_enveloped_data(info.dump(force=True))
    with pytest.raises(CmsError, match="not KMS EnvelopedData"):
        parse_enveloped_data(b"\x30\x03\x02\x01\x00")


def test_recipient_key_rules() -> None:
    key = RecipientKey.generate(2048)
    assert "redacted" in repr(key)
    assert load_der_public_key(key.public_key_der).key_size == 2048  # type: ignore[union-attr]
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InputError, match="2048"):
        RecipientKey(small)


### Key store and the standalone process


def test_key_store_persists_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    record = store.create(description="persisted")
    blob = store.wrap(record.key_id, b"data key", {"ctx": "1"})
    assert path.stat().st_mode & 0o777 == 0o600
    reloaded = KeyStore(path)
    assert reloaded.unwrap(blob, {"ctx": "1"}) == (record.key_id, b"data key")
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="0600"):
        KeyStore(path)


def test_devkms_runs_standalone(tmp_path: Path, pki: SimulatedNitroPki) -> None:
    (tmp_path / "root.pem").write_bytes(pki.root_certificate_pem)
    conditions = {f"kms:RecipientAttestation:PCR{i}": v.hex() for i, v in image_pcrs(IMAGE).items()}
    policy = {
        "attestation_root_file": "root.pem",
        "keys": {SEAL_KEY: {"alias": SEAL_ALIAS, "conditions": conditions}},
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    command = [sys.executable, "-m", "devkms", "--listen", "127.0.0.1:0"]
    command += ["--policy", str(tmp_path / "policy.json"), "--state", str(tmp_path / "k.json")]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("devkms listening on http://127.0.0.1:"), line
        address = line.rsplit(" ", 1)[1]
        described = raw_client(address).describe_key(KeyId=SEAL_ALIAS)["KeyMetadata"]
        assert described["KeyId"] == SEAL_KEY
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_devkms_binds_only_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        devkms_main(["--listen", "0.0.0.0:0"])
    assert "loopback" in capsys.readouterr().err
    server, port = make_server(KmsService(KeyStore(), Policy()))
    try:
        assert isinstance(server, KmsHttpServer)
        assert server.server_address == ("127.0.0.1", port) and port > 0
    finally:
        server.server_close()
