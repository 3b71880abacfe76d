"""The whole stack (devkms, relay, enclave, host as processes) with the relay
session transport: the host runs ``--relay-transport session`` and the SDK
``relay_transport="session"``, so every room is created by its first join and
travels on one Relay.Session stream per process (docs/transport.md). The SDK
on the call transport still works with such a host: both share rooms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Literal

import pytest
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import WalletClient
from tests.stack_harness import TEST_TIMEOUT_S, RawDigestWalletClient, background_stack
from tss.signing import RecoverableSignature

DIGEST = bytes.fromhex("b2" * 32)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    directory = tmp_path_factory.mktemp("relay-session") / "run"
    with background_stack(directory, host_args=("--relay-transport", "session")) as running:
        yield running


def client(stack: DevStack, relay_transport: Literal["call", "session"]) -> WalletClient:
    return RawDigestWalletClient(
        stack.host_address,
        stack.relay_address,
        stack.coordinator_key,
        root_certificate=stack.root_certificate,
        transport=stack.transport,
        relay_transport=relay_transport,
    )


def verify(scheme: str, public_key: bytes, signature: bytes | RecoverableSignature) -> None:
    if scheme == "bip340":
        assert isinstance(signature, bytes)
        assert PublicKeyXOnly(public_key[1:]).verify(signature, DIGEST)
    else:
        assert isinstance(signature, RecoverableSignature)
        recovered = PublicKey.from_signature_and_message(
            signature.to_bytes65(), DIGEST, hasher=None
        )
        assert recovered.format() == public_key


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_lifecycle_over_relay_sessions(stack: DevStack, scheme: str) -> None:
    """Keygen, sign, refresh, reshare to 2-of-3, sign and export, every room on the session."""

    async def body() -> None:
        phone, laptop, auditor = (PartyIdentity.generate() for _ in range(3))
        async with asyncio.timeout(TEST_TIMEOUT_S * 2), client(stack, "session") as wallets:
            wallet = await wallets.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
            verify(scheme, wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))
            refreshed = await wallets.refresh(wallet, {0: phone})
            verify(scheme, wallet.public_key, await wallets.sign(refreshed, DIGEST, {0: phone}))
            trio = await wallets.reshare(refreshed, {0: phone}, [phone, laptop], threshold=2)
            verify(scheme, wallet.public_key, await wallets.sign(trio, DIGEST, {1: laptop}))
            key = await wallets.export(trio, {0: phone}, auditor)
            assert PrivateKey(key).public_key.format() == wallet.public_key

    asyncio.run(body())


def test_concurrent_signatures_share_the_streams(stack: DevStack) -> None:
    """Sixteen signatures in flight on one SDK stream and one host stream."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with asyncio.timeout(TEST_TIMEOUT_S * 2), client(stack, "session") as wallets:
            wallet = await wallets.create_wallet("bip340", [phone], threshold=2)
            signatures = await asyncio.gather(
                *(wallets.sign(wallet, DIGEST, {0: phone}) for _ in range(16))
            )
            for signature in signatures:
                verify("bip340", wallet.public_key, signature)

    asyncio.run(body())


def test_a_coordinator_on_the_call_transport_works_with_a_session_host(stack: DevStack) -> None:
    """CreateRoom-made rooms reach the host's session channels as before."""

    async def body() -> None:
        phone = PartyIdentity.generate()
        async with asyncio.timeout(TEST_TIMEOUT_S), client(stack, "call") as wallets:
            wallet = await wallets.create_wallet("bip340", [phone], threshold=2)
            verify("bip340", wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))

    asyncio.run(body())
