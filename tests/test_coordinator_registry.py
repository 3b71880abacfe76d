"""The coordinator's registry survives restarts: devices stay enrolled, codes used, replays refused.

Unit tests of ``coordinator.registry`` (a file reopened plays the restart),
and end to end: the coordinator service runs as a process of the development
stack, is killed (SIGKILL, no graceful drain) and started again on the same
registry file; the device goes on signing with its wallet, a device call
recorded before the restart is refused as a replay after it, and a used
enrollment code stays used.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli.devstack import DevStack
from client.sdk.device import CoordinatorRefused, Device
from coordinator.policy import WalletRecord
from coordinator.registry import Registry, RegistryError
from shardkeep.device_auth import DeviceCallError, ReplayGuard, sign_device_call
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc
from tests.coordinator_support import new_device
from tests.stack_harness import background_stack
from tss.curve import schnorr_verify

DIGEST = bytes(range(64, 96))


def device_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def a_record(devices: dict[bytes, int]) -> WalletRecord:
    parties = [
        ceremony_pb2.Party(
            party_id=f"party-{i}", static_key=bytes([i]) * 32, host_pubkey=b"\x02" * 33
        )
        for i in range(2)
    ]
    return WalletRecord(
        "wallet-1", ceremony_pb2.SCHEME_BIP340, 2, parties, server_index=1,
        public_key=b"\x03" * 33, epoch=3, devices=devices, owner_key=b"\x07" * 32,
    )  # fmt: skip


def test_devices_codes_and_wallets_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    phone, laptop, stranger = device_key(), device_key(), device_key()
    registry = Registry(path)
    registry.add_codes(["code-a", "code-b"])
    assert registry.enroll("code-a", phone)
    assert not registry.enroll("code-a", stranger)  # one use only
    record = a_record({phone: 0})
    registry.save_wallet(record)
    registry.close()

    restarted = Registry(path)
    restarted.add_codes(["code-a", "code-b"])  # the same codes file, read again
    assert restarted.enrolled(phone) and not restarted.enrolled(stranger)
    assert not restarted.enroll("code-a", stranger)  # a used code stays used
    assert restarted.enroll("code-b", laptop)
    assert restarted.wallet("wallet-1") == record
    assert restarted.wallet("wallet-2") is None
    restarted.close()


def test_replayed_device_call_is_refused_after_a_restart(tmp_path: Path) -> None:
    """A call recorded before the coordinator restarts, sent again within its freshness window."""
    path = tmp_path / "coordinator.db"
    key = Ed25519PrivateKey.generate()
    now = [1_700_000_000_000]
    call = sign_device_call(key, "StartCeremony", b"ask", now_ms=now[0])
    before = Registry(path)
    ReplayGuard(lambda: now[0], seen=before).check(call)
    before.close()
    now[0] += 5_000
    after = Registry(path)
    with pytest.raises(DeviceCallError, match="replayed"):
        ReplayGuard(lambda: now[0], seen=after).check(call)
    fresh = sign_device_call(key, "StartCeremony", b"ask", now_ms=now[0])
    ReplayGuard(lambda: now[0], seen=after).check(fresh)  # the device itself goes on
    after.close()


def test_seen_calls_are_forgotten_once_stale(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "coordinator.db")
    assert registry.remember(b"k" * 32, b"n" * 16, 1_000, 0)
    assert not registry.remember(b"k" * 32, b"n" * 16, 2_000, 0)
    # Forgotten only once older than the cut-off, when its timestamp is refused as stale anyway.
    assert registry.remember(b"k" * 32, b"n" * 16, 500_000, 400_000)
    registry.close()


def test_a_malformed_wallet_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    Registry(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO wallets (wallet_id, record) VALUES ('wallet-9', '{\"scheme\": 1}')")
    registry = Registry(path)
    with pytest.raises(RegistryError, match="wallet-9"):
        registry.wallet("wallet-9")
    registry.close()


def test_an_unopenable_registry_is_named(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=str(tmp_path)):
        Registry(tmp_path)  # a directory


### End to end: the coordinator process restarts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with background_stack(tmp_path_factory.mktemp("registry"), coordinator=True) as running:
        yield running


def phone_of(stack: DevStack, key: Ed25519PrivateKey) -> Device:
    assert stack.coordinator_address is not None
    return new_device(stack, stack.coordinator_address, device_key=key)


@pytest.mark.slow
def test_device_keeps_its_wallet_when_the_coordinator_restarts(stack: DevStack) -> None:
    assert stack.enrollment_codes is not None
    first_code, second_code = stack.enrollment_codes.read_text().split()[:2]
    assert stack.coordinator_address is not None
    address = stack.coordinator_address

    async def main() -> None:
        key = Ed25519PrivateKey.generate()
        recorded = sign_device_call(
            key,
            "FinishCeremony",
            coordinator_pb2.FinishAsk(ceremony_id="sign-0").SerializeToString(),
        )
        async with phone_of(stack, key) as phone, grpc.aio.insecure_channel(address) as channel:
            stub = coordinator_pb2_grpc.CoordinatorStub(channel)  # type: ignore[no-untyped-call]
            await phone.enroll(first_code)
            wallet = await phone.create_wallet("bip340")
            with pytest.raises(grpc.aio.AioRpcError) as admitted:
                await stub.FinishCeremony(recorded)
            assert admitted.value.code() == grpc.StatusCode.NOT_FOUND  # admitted: no such ceremony

            await stack.restart("coordinator")  # SIGKILL: no graceful drain

            signature = await phone.sign(wallet, DIGEST)
            assert isinstance(signature, bytes)
            assert schnorr_verify(DIGEST, wallet.public_key[1:], signature)
            with pytest.raises(grpc.aio.AioRpcError) as replayed:
                await stub.FinishCeremony(recorded)
            assert replayed.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "replayed" in (replayed.value.details() or "")
        async with phone_of(stack, Ed25519PrivateKey.generate()) as other:
            with pytest.raises(CoordinatorRefused) as used:
                await other.enroll(first_code)
            assert used.value.code == grpc.StatusCode.UNAUTHENTICATED
            await other.enroll(second_code)

    asyncio.run(asyncio.wait_for(main(), 180))


def test_accounts_bind_devices_and_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    phone, new_phone, other = device_key(), device_key(), device_key()
    registry = Registry(path)
    registry.add_codes([("code-a", "alice"), ("code-b", "alice"), "code-c"])
    assert registry.enroll("code-a", phone) and registry.enroll("code-c", other)
    registry.close()
    restarted = Registry(path)
    assert restarted.enroll("code-b", new_phone)
    assert restarted.account_of(phone) == restarted.account_of(new_phone) == "alice"
    assert restarted.account_of(other) not in (None, "alice")  # an account of its own
    assert restarted.account_of(device_key()) is None
    restarted.close()


def test_a_registry_written_before_accounts_opens(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    phone = device_key()
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE enrollment_codes (code_sha256 BLOB PRIMARY KEY, used_at_ms INTEGER);"
            "CREATE TABLE devices (device_key BLOB PRIMARY KEY, enrolled_at_ms INTEGER NOT NULL);"
        )
        db.execute("INSERT INTO devices VALUES (?, 1)", (phone,))
    registry = Registry(path)
    assert registry.enrolled(phone) and registry.account_of(phone) == "device:" + phone.hex()
    registry.close()
