"""A signature returns with the devices' verified aggregate; the server's call finishes in the
background (``WalletClient._run_once``, docs/transport.md "A signature returns early").

The SDK against the real stack (devkms, relay, enclave, host as processes). The
server's call is held back after the host answered (a wrapper around the SDK's
host calls), so the signature is certainly in hand before it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import client.sdk.wallet as wallet_module
from client.cli.devstack import DevStack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import Wallet, WalletClient, WalletError
from shardkeep.v1 import ceremony_pb2
from tests.stack_harness import background_stack, wallet_client
from tss.curve import ecdsa_verify, schnorr_verify
from tss.signing import RecoverableSignature

pytestmark = pytest.mark.slow
DIGEST = bytes.fromhex("5e" * 32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("early") / "run") as running:
        yield running


class HeldServer:
    """The SDK's host calls, with each sign result held back until ``release`` (and then,
    with ``fail``, replaced by a refusal naming a culprit)."""

    def __init__(self, calls: Any) -> None:
        self._calls = calls
        self.release = asyncio.Event()
        self.answered = 0
        self.fail: str | None = None

    async def ceremony(self, kind: Any, request: Any, *, timeout: float) -> Any:
        result = await self._calls.ceremony(kind, request, timeout=timeout)
        if kind != ceremony_pb2.CEREMONY_KIND_SIGN:
            return result
        self.answered += 1
        await self.release.wait()
        if self.fail is not None:
            trailers = grpc.aio.Metadata(("shardkeep-culprits", self.fail))
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.ABORTED, grpc.aio.Metadata(), trailers, "a bad share"
            )
        return result

    async def challenge(self, affinity: str, *, timeout: float) -> Any:
        return await self._calls.challenge(affinity, timeout=timeout)

    async def aclose(self) -> None:
        await self._calls.aclose()


def held(client: WalletClient) -> HeldServer:
    server = HeldServer(client._host_calls)
    client._host_calls = server  # type: ignore[assignment]
    return server


def valid(wallet: Wallet, message: bytes, signature: bytes | RecoverableSignature) -> bool:
    if isinstance(signature, RecoverableSignature):
        return ecdsa_verify(message, wallet.public_key, signature.signature)
    if wallet.scheme == "ed25519":
        try:
            Ed25519PublicKey.from_public_bytes(wallet.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True
    return schnorr_verify(message, wallet.public_key[-32:], signature)


def run(stack: DevStack, body: Any) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(120):
            client = wallet_client(stack)
            try:
                return await body(client)
            finally:
                await client.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1", "ed25519"])
def test_a_signature_returns_before_the_servers_result_and_close_waits_for_it(
    stack: DevStack, scheme: str
) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet(scheme, [device], threshold=2)
        server = held(client)
        before = len(client._challenges)
        signature = await client.sign(wallet, DIGEST, {0: device})
        assert valid(wallet, DIGEST, signature)
        # The server's result is held back (or not even there yet): the signature came first.
        assert len(client._background) == 1
        server.release.set()
        await client.aclose()  # waits for the server's side, then closes
        assert server.answered == 1
        assert not client._background and not client.late_failures
        assert len(client._challenges) == before  # used one, the result brought the next

    run(stack, body)


def test_close_cancels_a_servers_call_that_outlasts_its_grace(
    stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wallet_module, "CLOSE_GRACE_S", 0.2)

    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        held(client)  # never released
        assert valid(wallet, DIGEST, await client.sign(wallet, DIGEST, {0: device}))
        (background,) = client._background
        async with asyncio.timeout(5):
            await client.aclose()
        assert background.cancelled() and not client._background

    run(stack, body)


def test_settle_waits_for_the_servers_side_and_leaves_the_client_open(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        server = held(client)
        assert valid(wallet, DIGEST, await client.sign(wallet, DIGEST, {0: device}))
        settling = asyncio.ensure_future(client.settle())
        await asyncio.sleep(0.2)
        assert not settling.done()  # the server's result is still held back
        server.release.set()
        async with asyncio.timeout(10):
            await settling
        assert server.answered == 1 and not client._background and not client.late_failures
        # Settling is not closing: the client signs again.
        assert valid(wallet, DIGEST, await client.sign(wallet, DIGEST, {0: device}))

    run(stack, body)


def test_a_signature_finishing_while_the_client_closes_leaves_no_background_call(
    stack: DevStack,
) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        server = held(client)
        server.release.set()
        client._closed = True  # close has begun while this signature runs
        assert valid(wallet, DIGEST, await client.sign(wallet, DIGEST, {0: device}))
        assert server.answered == 1 and not client._background

    run(stack, body)


def test_a_servers_failure_after_the_signature_is_kept_with_its_culprits(
    stack: DevStack, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        wallet = await client.create_wallet("bip340", [device], threshold=2)
        server = held(client)
        server.fail = device.party_id
        assert valid(wallet, DIGEST, await client.sign(wallet, DIGEST, {0: device}))
        server.release.set()
        await client.settle()
        (late,) = client.late_failures
        assert late.culprits == (device.party_id,) and late.code == grpc.StatusCode.ABORTED

    run(stack, body)
    assert "a returned signature failed" in caplog.text


def test_the_servers_refusal_before_the_signature_is_raised(stack: DevStack) -> None:
    async def body(client: WalletClient) -> None:
        device = PartyIdentity.generate()
        # The default policy set without raw digests: the enclave refuses a bare digest
        # before any round, so the device never gets a signature.
        wallet = await client.create_wallet("bip340", [device], threshold=2, allow_raw_digest=False)
        with pytest.raises(WalletError) as refused:
            await client.sign(wallet, DIGEST, {0: device})
        assert refused.value.reason == "policy-denied"
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert not client._background and not client.late_failures

    run(stack, body)
