"""End to end with real processes (devkms, relay, enclave, host on Unix sockets) and the SDK.

Also the at-rest scan (docs/threat-model.md): neither the host's database nor any process log holds
a secret share in the clear.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from coincurve import PrivateKey, PublicKey, PublicKeyXOnly

from client.cli.devstack import DevStack, running_stack
from client.sdk.party import PartyIdentity
from client.sdk.wallet import PAIR_SETUP_REQUIRED, WalletClient, WalletError, _Approvals
from shardkeep.v1 import ceremony_pb2, enclave_pb2, enclave_pb2_grpc, host_pb2
from tests.stack_harness import RawDigestWalletClient
from tss.curve import N
from tss.shamir import eval_point
from tss.signing import NO_OPTIONS, RecoverableSignature

DIGEST = bytes.fromhex("a1" * 32)
pytestmark = pytest.mark.slow


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    return tmp_path


# Every process logs at DEBUG here: the no-plaintext check then reads every line
# a process can write, and a test can wait for a ceremony's first step.
EVERY_LOG_LINE: Final = {
    "relay_args": ("--log-level", "DEBUG"),
    "host_args": ("--log-level", "DEBUG"),
    "enclave_args": ("--log-level", "DEBUG"),
}


def run(stack_dir: Path, body: Any) -> Any:
    async def main() -> Any:
        async with (
            running_stack(stack_dir / "run", **EVERY_LOG_LINE) as stack,
            RawDigestWalletClient(
                stack.host_address,
                stack.relay_address,
                stack.coordinator_key,
                root_certificate=stack.root_certificate,
            ) as wallets,
        ):
            return await body(stack, wallets)

    return asyncio.run(main())


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


def server_secret(shares: dict[int, int], server_index: int) -> int:
    """The server's share f(server+1), interpolated from two device shares of a 2-of-n keyring."""
    ids = list(shares)
    return sum(shares[i] * _lagrange_at(ids, i, eval_point(server_index)) for i in ids) % N


def _lagrange_at(ids: list[int], i: int, x: int) -> int:
    num, den = 1, 1
    for j in ids:
        if j != i:
            num = num * (x - eval_point(j)) % N
            den = den * (eval_point(i) - eval_point(j)) % N
    return num * pow(den, -1, N) % N


def test_wallets_with_the_server_share_and_no_plaintext_at_rest(stack_dir: Path) -> None:
    async def body(stack: DevStack, wallets: WalletClient) -> list[bytes]:
        secrets_seen: list[bytes] = []
        phone, laptop = PartyIdentity.generate(), PartyIdentity.generate()
        for scheme in ("bip340", "ecdsa-secp256k1"):
            # 2-of-2: device + server.
            pair = await wallets.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
            verify(scheme, pair.public_key, await wallets.sign(pair, DIGEST, {0: phone}))
            # 2-of-3: two devices + server; every quorum signs.
            trio = await wallets.create_wallet(scheme, [phone, laptop], threshold=2)  # type: ignore[arg-type]
            verify(scheme, trio.public_key, await wallets.sign(trio, DIGEST, {0: phone}))
            verify(scheme, trio.public_key, await wallets.sign(trio, DIGEST, {1: laptop}))
            both = await wallets.sign(trio, DIGEST, {0: phone, 1: laptop}, with_server=False)
            verify(scheme, trio.public_key, both)
            shares = {i: s.secret_share for i, s in trio.shares.items()}
            secret = server_secret(shares, trio.server_index)
            secrets_seen += [s.secret_share_bytes for s in trio.shares.values()]
            secrets_seen.append(secret.to_bytes(32, "big"))
        return secrets_seen

    secrets_seen = run(stack_dir, body)
    # The host's database and every log: no secret share, raw or hex.
    files = [stack_dir / "run" / "host.db", *sorted((stack_dir / "run").glob("*.log"))]
    files += sorted((stack_dir / "run").glob("host.db-*"))
    for path in files:
        data = path.read_bytes()
        for secret in secrets_seen:
            assert secret not in data, f"a secret share in {path.name}"
            assert secret.hex().encode() not in data, f"a hex secret share in {path.name}"


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_lifecycle_through_the_service(stack_dir: Path, scheme: str) -> None:
    """2-of-2, refresh, reshare to 2-of-3 (a new device), sign with new pairs, export."""

    async def body(stack: DevStack, wallets: WalletClient) -> None:
        phone, laptop, auditor = (PartyIdentity.generate() for _ in range(3))
        wallet = await wallets.create_wallet(scheme, [phone], threshold=2)  # type: ignore[arg-type]
        old_share = wallet.shares[0]

        refreshed = await wallets.refresh(wallet, {0: phone})
        assert refreshed.epoch == wallet.epoch + 1
        assert refreshed.shares[0].secret_share != old_share.secret_share
        verify(scheme, wallet.public_key, await wallets.sign(refreshed, DIGEST, {0: phone}))
        # The old epoch stays signable until every party acknowledged the new one ...
        verify(scheme, wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))
        assert await wallets.acknowledge_epoch(refreshed, {0: phone}) == 1
        with pytest.raises(WalletError):  # ... then it is pruned
            await wallets.sign(wallet, DIGEST, {0: phone})

        trio = await wallets.reshare(refreshed, {0: phone}, [phone, laptop], threshold=2)
        assert trio.public_key == wallet.public_key and trio.threshold == 2
        assert len(trio.parties) == 3 and trio.server_index == 2
        verify(scheme, wallet.public_key, await wallets.sign(trio, DIGEST, {1: laptop}))
        devices_only = await wallets.sign(trio, DIGEST, {0: phone, 1: laptop}, with_server=False)
        verify(scheme, wallet.public_key, devices_only)

        key = await wallets.export(trio, {0: phone}, auditor)
        assert PrivateKey(key).public_key.format() == wallet.public_key

    run(stack_dir, body)


def test_an_enclave_killed_mid_ceremony_loses_no_share(stack_dir: Path) -> None:
    """The enclave dies while it waits in a refresh; after a restart the old share still signs."""

    async def body(stack: DevStack, wallets: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await wallets.create_wallet("bip340", [phone], threshold=2)
        # Only the server share's side of a refresh (the SDK's own request and
        # room helpers): the phone never shows up, so the enclave sits in round 1.
        request = wallets._request(wallet, ceremony_pb2.CEREMONY_KIND_REFRESH)
        room = await wallets._relay.create_room([p.party_id for p in wallet.parties])
        request.room_id = room.room_id
        server_id = wallet.parties[1].party_id
        challenge = await wallets.challenge()
        call = wallets._host.Refresh(
            host_pb2.HostCeremonyRequest(
                request=wallets._signed(request, challenge, approvals=_Approvals(wallet, ())),
                relay_token=room.join_tokens[server_id],
                relay_room=room.spec,  # the room is made by its first join
            ),
            timeout=60,
        )
        await _running_in_enclave(stack.enclave_address)
        await stack.restart("enclave")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # The host re-provisions the restarted enclave; the share of epoch 0 still signs.
        verify("bip340", wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))

    run(stack_dir, body)


async def _running_in_enclave(address: str, timeout: float = 30.0) -> None:
    """Wait until the enclave reports a ceremony running (its status, not its log:
    a ceremony's start logs at DEBUG only)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = enclave_pb2_grpc.EnclaveStub(channel)  # type: ignore[no-untyped-call]
        while (await stub.GetStatus(enclave_pb2.GetStatusRequest())).ceremonies_running < 1:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no ceremony reached the enclave")
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("scheme", ["bip340", "ecdsa-secp256k1"])
def test_three_of_five_with_the_server_share_reports_progress(stack_dir: Path, scheme: str) -> None:
    async def body(stack: DevStack, wallets: WalletClient) -> None:
        devices = [PartyIdentity.generate() for _ in range(4)]
        events: list[str] = []
        wallet = await wallets.create_wallet(
            scheme,  # type: ignore[arg-type]
            devices,
            threshold=3,
            progress=events.append,
        )
        assert len(wallet.parties) == 5 and wallet.server_index == 4
        assert events and all(e.startswith("round ") for e in events)
        signature = await wallets.sign(wallet, DIGEST, {1: devices[1], 3: devices[3]})
        verify(scheme, wallet.public_key, signature)

    run(stack_dir, body)


def test_after_an_enclave_restart_the_sdk_runs_a_pair_setup_and_signs(stack_dir: Path) -> None:
    """The enclave keeps its DKLs23 pair setups in memory only: the first signature after a
    restart is refused (pair-setup-required), the SDK runs a pair setup and signs."""

    async def body(stack: DevStack, wallets: WalletClient) -> None:
        phone = PartyIdentity.generate()
        wallet = await wallets.create_wallet("ecdsa-secp256k1", [phone], threshold=2)
        keygen_share = wallet.shares[0]
        verify("ecdsa-secp256k1", wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))
        assert wallet.shares[0] is keygen_share  # the keygen's setup served: no pair setup

        await stack.restart("enclave")
        with pytest.raises(WalletError) as refused:  # the raw refusal the SDK acts on
            owner = _Approvals(wallet, ())  # the owner's approval, as sign gives it
            await wallets._sign(wallet, DIGEST, {0: phone}, 1, NO_OPTIONS, None, owner)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.reason == PAIR_SETUP_REQUIRED
        verify("ecdsa-secp256k1", wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))
        old, new = keygen_share.ecdsa, wallet.shares[0].ecdsa
        assert old is not None and new is not None
        assert old.peer(1).setup_id != new.peer(1).setup_id
        assert wallet.shares[0].secret_share == keygen_share.secret_share

        # A pair the device itself burned (its own check failed) is set up anew first.
        burned_id = new.peer(1).setup_id
        new.mark_burned(1)
        verify("ecdsa-secp256k1", wallet.public_key, await wallets.sign(wallet, DIGEST, {0: phone}))
        renewed = wallet.shares[0].ecdsa
        assert renewed is not None and not renewed.is_burned(1)
        assert renewed.peer(1).setup_id != burned_id

    run(stack_dir, body)
