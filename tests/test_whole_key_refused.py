"""The key never exists whole outside an explicit export: no threshold of 1 with the server share.

With t = 1 every Shamir share is the private key itself, so a keygen, import
or reshare that gives the server party a share of a 1-of-n keyring would hand
the enclave (and anything that ever opens its sealed record) the whole key.
The enclave refuses such requests whoever signed them; the SDK and the CLI
refuse them before any network call, with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from client.cli.main import main
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet
from enclave.nsm import SimulatedNitroPki
from shardkeep.lifecycle import keyring_to_proto
from shardkeep.v1 import ceremony_pb2
from tests.enclave_harness import (
    DIGEST,
    SCHEMES,
    ClientParty,
    Stack,
    client_keygen,
    client_sign,
    devkms,
    host_loop,
    keygen_request,
    lifecycle_request,
    run,
    sign_request,
    signed,
    with_enclave,
)
from tests.stack_harness import RawDigestWalletClient
from tss.curve import schnorr_verify
from tss.dealer import import_dealer
from tss.errors import InputError
from tss.keyshare import KeyShare
from tss.reshare import PublicKeyring

RESHARE = ceremony_pb2.CEREMONY_KIND_RESHARE
REFUSAL = "threshold 1 refused"


@pytest.fixture(scope="module")
def pki() -> SimulatedNitroPki:
    return SimulatedNitroPki.generate()


@pytest.fixture(scope="module")
def kms_endpoint(pki: SimulatedNitroPki) -> Any:
    with devkms(pki) as endpoint:
        yield endpoint


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert REFUSAL in (info.value.details() or "")
    return info.value


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_coordinator_keygen_threshold_one_refused(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: a coordinator-signed keygen with t = 1 (client and server share).

    Before, a BIP-340 keygen with threshold 1 ran to the end and the enclave
    sealed a degree-0 share, which is the wallet's whole private key. Now the
    enclave refuses it before the first round and stores nothing.
    """
    coordinator, client = Ed25519PrivateKey.generate(), ClientParty()

    async def body(stack: Stack) -> None:
        request = keygen_request(scheme, [client.party, stack.party], 1)
        await refused(host_loop(stack, signed(request, coordinator), {}))
        assert stack.stored == []
        # The same request with t = 2 is an ordinary keygen.
        request = keygen_request(scheme, [client.party, stack.party], 2)
        session = client_keygen(scheme, client, request)
        await host_loop(stack, signed(request, coordinator), {client.party.party_id: session})
        assert len(stack.stored) == 1

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_owner_signed_reshare_to_threshold_one_refused(
    pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: an owner-signed reshare of a 2-of-2 wallet to 1-of-2, the server keeping a share.

    Before, the reshare succeeded and the enclave's new share was the whole
    key. Now the enclave refuses it, stores nothing, and the wallet's sealed
    share still signs.
    """
    coordinator, owner, client = (
        Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), ClientParty()
    )  # fmt: skip

    async def body(stack: Stack) -> None:
        wallet = keygen_request("bip340", [client.party, stack.party], 2, owner)
        session = client_keygen("bip340", client, wallet)
        await host_loop(stack, signed(wallet, coordinator), {client.party.party_id: session})
        share: KeyShare = session.result
        (sealed,) = stack.stored

        for new_parties in ([client.party, stack.party], [stack.party, ClientParty().party]):
            reshare = lifecycle_request(
                RESHARE, wallet, 0, signers=[0, 1], new_parties=new_parties, new_threshold=1,
                keyring=keyring_to_proto(PublicKeyring.from_share(share)),
            )  # fmt: skip
            await refused(host_loop(stack, signed(reshare, coordinator, owner), {}, [sealed]))
        assert stack.stored == [sealed]

        sign = sign_request(wallet, [0, 1])
        signer = client_sign(share, client, sign)
        result = await host_loop(
            stack, signed(sign, coordinator), {client.party.party_id: signer}, [sealed]
        )
        assert schnorr_verify(DIGEST, share.public_key[1:], bytes(result.signature))

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_import_to_threshold_one_with_the_server_refused(
    scheme: str, pki: SimulatedNitroPki, kms_endpoint: str, tmp_path: Path
) -> None:
    """Attack: an import (the importer's 1-of-1 keyring reshared) that keeps t = 1 with the server.

    The enclave would receive the imported key itself; it refuses and stores nothing.
    """
    coordinator, owner, importer = (
        Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), ClientParty()
    )  # fmt: skip
    keyring, _ = import_dealer(scheme, bytes(31) + b"\x07", bytes(32))  # type: ignore[arg-type]

    async def body(stack: Stack) -> None:
        base = keygen_request(scheme, [importer.party], 1)
        request = lifecycle_request(
            RESHARE, base, 0, signers=[0], new_parties=[importer.party, stack.party],
            new_threshold=1, keyring=keyring_to_proto(keyring),
            owner_key=owner.public_key().public_bytes_raw(),
        )  # fmt: skip
        await refused(host_loop(stack, signed(request, coordinator, owner), {}))
        assert stack.stored == []

    run(with_enclave(pki, kms_endpoint, tmp_path, coordinator, body))


def test_sdk_refuses_threshold_one_before_any_call() -> None:
    """The SDK says why before it talks to the host (the addresses here lead nowhere)."""
    device = PartyIdentity.generate()

    async def attempts() -> None:
        async with RawDigestWalletClient(
            "unix:/nonexistent/host.sock", "unix:/nonexistent/relay.sock",
            Ed25519PrivateKey.generate(), timeout=1,
        ) as client:  # fmt: skip
            with pytest.raises(InputError, match=REFUSAL):
                await client.create_wallet("bip340", [device], threshold=1)
            with pytest.raises(InputError, match=REFUSAL):
                await client.import_key("bip340", bytes(31) + b"\x07", [device], threshold=1)
            server = ceremony_pb2.Party(party_id="server")
            wallet = Wallet(
                "w", "bip340", 2, [device.party, server], 1, b"", 0, {},
                Ed25519PrivateKey.generate(),
            )  # fmt: skip
            with pytest.raises(InputError, match=REFUSAL):
                await client.reshare(wallet, {0: device}, [device], threshold=1)

    run(attempts())


def test_cli_refuses_threshold_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "coordinator.key"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    passcode = tmp_path / "passcode"
    passcode.write_text("a long passphrase for the CLI\n")
    status = main(
        [
            "wallet", "create", "--scheme", "bip340", "--threshold", "1",
            "--host", "unix:/nonexistent/host.sock", "--relay", "unix:/nonexistent/relay.sock",
            "--coordinator-key", str(key), "--state", str(tmp_path / "state"),
            "--passcode-file", str(passcode), "--insecure-weak-kdf",
        ]
    )  # fmt: skip
    assert status == 2
    assert REFUSAL in capsys.readouterr().err
