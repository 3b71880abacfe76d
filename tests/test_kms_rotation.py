"""KMS key rotation and run-time credentials, against devkms (deploy/kms/README.md).

- ``ShareSealer`` seals under ``key_id`` and opens data keys of any key in its
  decrypt list, naming each key in Decrypt so KMS refuses blobs of other keys.
- The enclave service re-seals its identity under the current key at
  Provision, and a refresh moves a wallet to the current key.
- ``EnclaveKmsClient`` without credentials fails until ``SetCredentials``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devkms.keystore import KeyStore
from devkms.policy import KeyPolicy, Policy
from devkms.server import make_server, serve_in_background
from devkms.service import KmsService
from enclave.auth import Authorizer
from enclave.auth import Policy as AuthPolicy
from enclave.config import ConfigError, EnclaveConfig
from enclave.kms import (
    EnclaveKmsClient,
    KmsAccessDeniedError,
    KmsCredentials,
    KmsError,
    RecipientKey,
)
from enclave.nsm import SimulatedNitroPki, SimulatedNsm, image_pcrs
from enclave.seal import SealBinding, SealError, ShareSealer
from enclave.service import EnclaveDeps, create_server
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc
from tests.enclave_harness import (
    DIGEST,
    ClientParty,
    Stack,
    client_keygen,
    client_lifecycle,
    client_sign,
    host_loop,
    issuing_challenges,
    keygen_request,
    lifecycle_request,
    run,
    sign_request_at,
    signed,
)
from tss.curve import schnorr_verify
from tss.keyshare import KeyShare

IMAGE = "shardkeep-enclave:test"
REGION = "us-east-1"
ACCOUNT = "111122223333"
KEY_A = "a0000000-0000-4000-8000-00000000000a"  # the old sealing key
KEY_B = "b0000000-0000-4000-8000-00000000000b"  # the new sealing key
KEY_C = "c0000000-0000-4000-8000-00000000000c"  # a key the enclave is not configured for
KEY_D = "d0000000-0000-4000-8000-00000000000d"  # its policy names another image
SECRET = "CANARY-secret-access-key-4b1d"
TOKEN = "CANARY-session-token-77aa"
BINDING = SealBinding("wallet-r", 1, "bip340", 0)
DEV_CREDENTIALS = KmsCredentials("AKIDTEST", SECRET)


def arn(key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def endpoint(pki: SimulatedNitroPki) -> Iterator[str]:
    pcrs = image_pcrs(IMAGE)
    policy = Policy(
        root_certificate=pki.root_certificate_pem,
        keys={
            KEY_A: KeyPolicy("old sealing key", "alias/shardkeep-seal", pcrs),
            KEY_B: KeyPolicy("new sealing key", "alias/shardkeep-seal-2", pcrs),
            KEY_C: KeyPolicy("not configured", None, pcrs),
            KEY_D: KeyPolicy("another image only", None, image_pcrs("someone-else:1")),
        },
    )
    server, port = make_server(KmsService(KeyStore(), policy, region=REGION, account_id=ACCOUNT))
    thread = serve_in_background(server)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def recipient_key() -> RecipientKey:
    return RecipientKey.generate(2048)  # the minimum, to keep the tests fast


def kms_client(
    endpoint: str,
    pki: SimulatedNitroPki,
    recipient_key: RecipientKey,
    credentials: KmsCredentials | None = DEV_CREDENTIALS,
) -> EnclaveKmsClient:
    return EnclaveKmsClient.connect(
        endpoint_url=endpoint,
        region=REGION,
        credentials=credentials,
        nsm=SimulatedNsm(IMAGE, pki=pki),
        recipient_key=recipient_key,
    )


class CountingKms:
    """Counts the Decrypt calls and the key each names."""

    def __init__(self, inner: EnclaveKmsClient) -> None:
        self.inner = inner
        self.decrypts: list[str | None] = []

    def generate_data_key(
        self, key_id: str, *, encryption_context: Mapping[str, str] | None = None
    ) -> tuple[bytearray, bytes]:
        return self.inner.generate_data_key(key_id, encryption_context=encryption_context)

    def decrypt(
        self,
        ciphertext_blob: bytes,
        *,
        key_id: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> bytearray:
        self.decrypts.append(key_id)
        return self.inner.decrypt(
            ciphertext_blob, key_id=key_id, encryption_context=encryption_context
        )


### ShareSealer with a decrypt list


def test_shares_of_the_old_key_open_after_the_switch_and_new_ones_use_the_new_key(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    kms = CountingKms(kms_client(endpoint, pki, recipient_key))
    old = ShareSealer(kms, KEY_A).seal(b"sealed before the rotation", BINDING)

    # The configuration moves to seal-key B with decrypt list [A] (B is implied).
    sealer = ShareSealer(kms, arn(KEY_B), decrypt_key_ids=[arn(KEY_A), arn(KEY_B)])
    assert sealer.decrypt_key_ids == (arn(KEY_B), arn(KEY_A))
    opened = sealer.unseal_with_key(old, BINDING)
    assert (opened.plaintext, opened.key_id, opened.stale) == (
        b"sealed before the rotation",
        arn(KEY_A),
        True,
    )
    assert kms.decrypts[-2:] == [arn(KEY_B), arn(KEY_A)], "each try names its key"
    assert b"sealed before" not in repr(opened).encode()

    new = sealer.seal(b"sealed after the rotation", BINDING)
    kms.decrypts.clear()
    fresh = sealer.unseal_with_key(new, BINDING)
    assert (fresh.key_id, fresh.stale) == (arn(KEY_B), False)
    assert kms.decrypts == [arn(KEY_B)], "a current share costs one Decrypt"
    # The new share is really under B: a sealer that knows only A cannot open it.
    with pytest.raises(SealError) as info:
        ShareSealer(kms, KEY_A).unseal(new, BINDING)
    assert info.value.reason == "data-key"
    # Aliases and key ARNs name the same keys.
    assert ShareSealer(kms, "alias/shardkeep-seal-2").unseal(new, BINDING) == fresh.plaintext


def test_a_key_not_in_the_list_is_refused(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    kms = CountingKms(kms_client(endpoint, pki, recipient_key))
    foreign = ShareSealer(kms, KEY_C).seal(b"sealed under an unlisted key", BINDING)
    kms.decrypts.clear()
    with pytest.raises(SealError) as info:
        ShareSealer(kms, KEY_B, decrypt_key_ids=[KEY_A]).unseal(foreign, BINDING)
    assert info.value.reason == "data-key"
    assert kms.decrypts == [KEY_B, KEY_A], "never a Decrypt without KeyId, never key C"
    # Once the old key leaves the list, its shares no longer open.
    old = ShareSealer(kms, KEY_A).seal(b"old", BINDING)
    with pytest.raises(SealError) as info:
        ShareSealer(kms, KEY_B).unseal(old, BINDING)
    assert info.value.reason == "data-key"


def test_a_tampered_binding_is_still_refused_with_a_decrypt_list(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    kms = kms_client(endpoint, pki, recipient_key)
    sealer = ShareSealer(kms, KEY_B, decrypt_key_ids=[KEY_A])
    mine = ShareSealer(kms, KEY_A).seal(b"wallet r", BINDING)
    other_binding = SealBinding("wallet-s", 1, "bip340", 0)
    theirs = ShareSealer(kms, KEY_A).seal(b"wallet s", other_binding)
    with pytest.raises(SealError) as info:
        sealer.unseal(mine._replace(encrypted_data_key=theirs.encrypted_data_key), BINDING)
    assert info.value.reason == "data-key"


def test_access_denied_on_one_key_moves_on_and_is_reported_when_nothing_opens(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    kms = kms_client(endpoint, pki, recipient_key)
    old = ShareSealer(kms, KEY_A).seal(b"share", BINDING)
    # Key D's policy does not list this image: its refusal does not stop the search.
    assert ShareSealer(kms, KEY_D, decrypt_key_ids=[KEY_A]).unseal(old, BINDING) == b"share"
    # A share of D itself (sealed by the image D's policy names) cannot open here:
    # the operator sees AccessDenied (the policy), not a generic data-key error.
    other_image = EnclaveKmsClient.connect(
        endpoint_url=endpoint,
        region=REGION,
        credentials=KmsCredentials("AKIDTEST", SECRET),
        nsm=SimulatedNsm("someone-else:1", pki=pki),
        recipient_key=recipient_key,
    )
    theirs = ShareSealer(other_image, KEY_D).seal(b"d share", BINDING)
    with pytest.raises(KmsAccessDeniedError):
        ShareSealer(kms, KEY_B, decrypt_key_ids=[KEY_D]).unseal(theirs, BINDING)


### Credentials handed in at run time


def test_a_client_without_credentials_fails_until_they_are_set(
    endpoint: str, pki: SimulatedNitroPki, recipient_key: RecipientKey
) -> None:
    kms = kms_client(endpoint, pki, recipient_key, credentials=None)
    assert not kms.has_credentials
    with pytest.raises(KmsError) as info:
        kms.generate_data_key(KEY_B)
    assert info.value.code == "NoCredentials"
    kms.set_credentials(KmsCredentials("ASIATEST", SECRET, TOKEN))
    assert kms.has_credentials
    headers: list[dict[str, str]] = []
    kms._client.meta.events.register(
        "before-send.kms.*",
        lambda request, **_: headers.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        ),
    )
    data_key, blob = kms.generate_data_key(KEY_B)
    assert len(data_key) == 32 and blob
    (sent,) = headers
    assert sent["X-Amz-Security-Token"] == TOKEN  # SigV4 with the session token
    assert "Credential=ASIATEST/" in sent["Authorization"]
    for shown in (repr(KmsCredentials("ASIATEST", SECRET, TOKEN)), repr(kms)):
        assert SECRET not in shown and TOKEN not in shown


### Configuration


def write_config(tmp_path: Path, kms: dict[str, Any], mode: str = "nitro") -> Path:
    config = {
        "listen": "unix:/tmp/x.sock",
        "coordinator_keys": [],
        "kms": {"endpoint": f"https://kms.{REGION}.amazonaws.com", "region": REGION, **kms},
        "nsm": {"mode": mode, "pki_dir": str(tmp_path)},
    }
    path = tmp_path / "enclave.json"
    path.write_text(json.dumps(config))
    return path


def test_configuration_names_seal_and_decrypt_keys(tmp_path: Path) -> None:
    alias = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/shardkeep-seal-2"
    config = EnclaveConfig.load(
        write_config(tmp_path, {"key_id": alias, "decrypt_key_ids": [arn(KEY_A)]})
    )
    assert (config.kms.key_id, config.kms.decrypt_key_ids) == (alias, (arn(KEY_A),))
    assert config.kms.credentials is None
    # Development: bare ids and fixed credentials are fine off Nitro.
    dev = EnclaveConfig.load(
        write_config(
            tmp_path,
            {"key_id": KEY_B, "access_key_id": "AKIDDEV", "secret_access_key": SECRET},
            mode="simulated",
        )
    )
    assert dev.kms.credentials == KmsCredentials("AKIDDEV", SECRET)
    assert SECRET not in repr(dev)


@pytest.mark.parametrize(
    ("kms", "message"),
    [
        ({"key_id": "alias/shardkeep-seal"}, "ARN"),
        ({"key_id": KEY_B}, "ARN"),
        ({"key_id": arn(KEY_B), "decrypt_key_ids": ["alias/old"]}, "ARN"),
        ({"key_id": arn(KEY_B).replace(REGION, "eu-west-1")}, "not in kms.region"),
        ({"key_id": arn(KEY_B), "decrypt_key_ids": arn(KEY_A)}, "must be a list"),
        ({"key_id": arn(KEY_B), "decrypt_key_ids": [""]}, "non-empty"),
        ({"key_id": arn(KEY_B), "access_key_id": "AKID", "secret_access_key": SECRET}, "image"),
        ({"key_id": arn(KEY_B), "secret_access_key": SECRET}, "go together"),
    ],
    ids=[
        "bare-alias",
        "bare-key-id",
        "bare-decrypt-key",
        "other-region",
        "decrypt-not-a-list",
        "empty-decrypt-key",
        "baked-credentials",
        "half-credentials",
    ],
)
def test_nitro_configuration_refuses(tmp_path: Path, kms: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        EnclaveConfig.load(write_config(tmp_path, kms))
    assert SECRET not in str(info.value)


### The enclave service: SetCredentials, identity re-seal, wallet migration by refresh


def deps(
    endpoint: str,
    pki: SimulatedNitroPki,
    coordinator: Ed25519PrivateKey,
    key_id: str,
    decrypt_key_ids: Sequence[str] = (),
) -> EnclaveDeps:
    kms = kms_client(endpoint, pki, RecipientKey.generate(2048), credentials=None)
    sealer = ShareSealer(kms, key_id, decrypt_key_ids=decrypt_key_ids)
    pinned = AuthPolicy((coordinator.public_key().public_bytes_raw(),))
    return EnclaveDeps(SimulatedNsm(IMAGE, pki=pki), sealer, Authorizer(pinned), kms=kms)


def credentials(expires_at: int = 0) -> enclave_pb2.SetCredentialsRequest:
    return enclave_pb2.SetCredentialsRequest(
        access_key_id="ASIATEST",
        secret_access_key=SECRET,
        session_token=TOKEN,
        expires_at_unix=expires_at or int(time.time()) + 3600,
    )


async def with_enclave(
    tmp_path: Path,
    enclave_deps: EnclaveDeps,
    body: Callable[[enclave_pb2_grpc.EnclaveStub], Awaitable[Any]],
) -> Any:
    address = f"unix:{tmp_path / 'enclave.sock'}"
    running = await create_server(address, enclave_deps)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            with issuing_challenges(enclave_deps.authorizer):
                return await body(enclave_pb2_grpc.EnclaveStub(channel))  # type: ignore[no-untyped-call]
    finally:
        await running.server.stop(None)


def test_set_credentials_rpc(
    endpoint: str, pki: SimulatedNitroPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coordinator = Ed25519PrivateKey.generate()

    async def body(stub: enclave_pb2_grpc.EnclaveStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Provision(enclave_pb2.ProvisionRequest())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "NoCredentials" in (info.value.details() or "")
        bad = [
            enclave_pb2.SetCredentialsRequest(secret_access_key=SECRET),
            enclave_pb2.SetCredentialsRequest(access_key_id="ASIATEST"),
            credentials(expires_at=int(time.time()) - 1),
            enclave_pb2.SetCredentialsRequest(
                access_key_id="ASIATEST", secret_access_key=SECRET, session_token="t" * 20000
            ),
        ]
        for request in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SetCredentials(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert SECRET not in (info.value.details() or "")
        await stub.SetCredentials(credentials())
        provisioned = await stub.Provision(enclave_pb2.ProvisionRequest())
        assert len(provisioned.static_key) == 32

    run(with_enclave(tmp_path, deps(endpoint, pki, coordinator, KEY_B), body))
    printed = capsys.readouterr()
    for text in (printed.out, printed.err):
        assert SECRET not in text and TOKEN not in text


def test_an_enclave_without_a_sink_refuses_credentials(
    endpoint: str, pki: SimulatedNitroPki, tmp_path: Path
) -> None:
    coordinator = Ed25519PrivateKey.generate()
    without = deps(endpoint, pki, coordinator, KEY_B)
    without = EnclaveDeps(without.nsm, without.sealer, without.authorizer)

    async def body(stub: enclave_pb2_grpc.EnclaveStub) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SetCredentials(credentials())
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    run(with_enclave(tmp_path, without, body))


def test_rotation_reseals_the_identity_and_a_refresh_migrates_the_wallet(
    endpoint: str, pki: SimulatedNitroPki, tmp_path: Path
) -> None:
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()
    scheme = "bip340"
    state: dict[str, Any] = {}

    async def before(stub: enclave_pb2_grpc.EnclaveStub) -> None:
        # The old image: seals under key A.
        await stub.SetCredentials(credentials())
        stack = Stack(stub, await stub.Provision(enclave_pb2.ProvisionRequest()))
        wallet = keygen_request(scheme, [client.party, stack.party], 2)
        session = client_keygen(scheme, client, wallet)
        await host_loop(stack, signed(wallet, coordinator), {client.party.party_id: session})
        state.update(stack=stack, wallet=wallet, share=session.result)

    run(with_enclave(tmp_path, deps(endpoint, pki, coordinator, KEY_A), before))
    old: Stack = state["stack"]
    wallet, share = state["wallet"], state["share"]
    (sealed_under_a,) = old.stored

    async def after(stub: enclave_pb2_grpc.EnclaveStub) -> None:
        # The new image: seals under B, still opens A.
        await stub.SetCredentials(credentials())
        identity = await stub.Provision(
            enclave_pb2.ProvisionRequest(sealed_identity=old.identity.sealed_identity)
        )
        assert identity.static_key == old.identity.static_key, "the same party keys"
        assert identity.sealed_identity != old.identity.sealed_identity, "re-sealed under B"
        state["resealed"] = identity.sealed_identity
        stack = Stack(stub, identity)
        # The A-sealed wallet share still signs.
        signature = await sign_at(stack, wallet, share, client, coordinator, 0, [sealed_under_a])
        assert schnorr_verify(DIGEST, bytes(share.public_key)[1:], signature)
        # A refresh seals the wallet's new epoch under B.
        refresh = lifecycle_request(ceremony_pb2.CEREMONY_KIND_REFRESH, wallet, 0)
        session = client_lifecycle(refresh, client, share)
        result = await host_loop(
            stack,
            signed(refresh, coordinator),
            {client.party.party_id: session},
            [sealed_under_a],
        )
        assert result.epoch == 1
        state.update(new_share=session.result.share, sealed_under_b=stack.stored[-1])

    run(with_enclave(tmp_path, deps(endpoint, pki, coordinator, KEY_B, [KEY_A]), after))

    async def retired(stub: enclave_pb2_grpc.EnclaveStub) -> None:
        # The old key leaves the list: identity and wallet were migrated.
        await stub.SetCredentials(credentials())
        identity = await stub.Provision(
            enclave_pb2.ProvisionRequest(sealed_identity=state["resealed"])
        )
        assert identity.sealed_identity == state["resealed"], "nothing left to re-seal"
        stack = Stack(stub, identity)
        new_share: KeyShare = state["new_share"]
        signature = await sign_at(
            stack, wallet, new_share, client, coordinator, 1, [state["sealed_under_b"]]
        )
        assert schnorr_verify(DIGEST, bytes(share.public_key)[1:], signature)
        # The old identity blob no longer opens.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Provision(
                enclave_pb2.ProvisionRequest(sealed_identity=old.identity.sealed_identity)
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    run(with_enclave(tmp_path, deps(endpoint, pki, coordinator, KEY_B), retired))


async def sign_at(
    stack: Stack,
    wallet: Any,
    share: KeyShare,
    client: ClientParty,
    coordinator: Ed25519PrivateKey,
    epoch: int,
    sealed: list[Any],
) -> bytes:
    request = sign_request_at(wallet, [0, 1], epoch)
    signer = client_sign(share, client, request)
    result = await host_loop(
        stack, signed(request, coordinator), {client.party.party_id: signer}, sealed
    )
    return bytes(result.signature)
