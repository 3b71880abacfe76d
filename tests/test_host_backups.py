"""The host's backup RPCs (PutBackup, GetBackup, ListBackups) over the real store.

The host keeps whatever ciphertext a client uploads, never interprets it, never
replaces a stored backup, and names the failing field in its errors without
echoing the blob. The service runs as in tests/test_host_service.py: real relay
(in memory), fake enclave, SQLite store.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import grpc
import pytest
import structlog

from shardkeep import logs
from shardkeep.v1 import host_pb2
from tests.fake_enclave import CANARY
from tests.relay_harness import run
from tests.test_host_service import WALLET, keygen, stack

BLOB = CANARY + b"client-ciphertext" * 10


def backup(backup_id: str = "bk-1", *, blob: bytes = BLOB, epoch: int = 0) -> host_pb2.Backup:
    return host_pb2.Backup(
        wallet_id=WALLET, backup_id=backup_id, party_id="1", epoch=epoch, blob=blob
    )


def get_request(backup_id: str) -> host_pb2.GetBackupRequest:
    return host_pb2.GetBackupRequest(wallet_id=WALLET, backup_id=backup_id)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.db'}"


def test_put_get_list_round_trip(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("bk-2", epoch=3)))
            await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup("bk-1")))

            got = await s.host.GetBackup(get_request("bk-1"))
            assert (got.wallet_id, got.backup_id, got.party_id, got.epoch) == (
                WALLET,
                "bk-1",
                "1",
                0,
            )
            assert got.blob == BLOB
            assert got.blob_bytes == len(BLOB)
            assert got.created_at_ms > 0

            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            # By backup id, without the blobs, with their sizes.
            assert [(b.backup_id, b.epoch, b.party_id) for b in listed.backups] == [
                ("bk-1", 0, "1"),
                ("bk-2", 3, "1"),
            ]
            assert all(b.blob == b"" and b.blob_bytes == len(BLOB) for b in listed.backups)
            # The store holds exactly the client's bytes.
            assert s.store.get_backup(WALLET, "bk-2").backup.blob == BLOB

    run(body)


def test_put_is_idempotent_and_never_replaces(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            request = host_pb2.PutBackupRequest(backup=backup())
            await s.host.PutBackup(request)
            await s.host.PutBackup(request)  # a retried upload: no-op
            for other in (backup(blob=b"other ciphertext"), backup(epoch=1)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await s.host.PutBackup(host_pb2.PutBackupRequest(backup=other))
                assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
            got = await s.host.GetBackup(get_request("bk-1"))
            assert (got.blob, got.epoch) == (BLOB, 0)

    run(body)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"backup_id": "bad id!"}, "backup id"),
        ({"backup_id": ""}, "backup id"),
        ({"party_id": ""}, "party id"),
        ({"party_id": "x" * 129}, "party id"),
        ({"blob": b""}, "backup blob"),
        ({"wallet_id": "bad wallet!"}, "wallet id"),
    ],
    ids=[
        "backup-id-alphabet",
        "backup-id-empty",
        "party-empty",
        "party-long",
        "empty-blob",
        "wallet-id",
    ],
)
def test_malformed_backups_are_invalid_argument(
    sqlite_url: str, fields: dict[str, object], field_name: str
) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            bad = backup()
            for name, value in fields.items():
                setattr(bad, name, value)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=bad))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_name in (caught.value.details() or "")
            assert s.store.list_backups(WALLET) == []

    run(body)


def test_unknown_wallet_and_backup_are_not_found(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            for call in (
                s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup())),
                s.host.GetBackup(get_request("bk-1")),
                s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            await keygen(s)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.GetBackup(get_request("bk-9"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert list(listed.backups) == []

    run(body)


def test_an_oversized_blob_is_refused(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url) as s:
            await keygen(s)
            huge = backup(blob=b"\x00" * ((8 << 20) + 1))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=huge))
            # The message cap (RESOURCE_EXHAUSTED) or the store's limit (INVALID_ARGUMENT).
            assert caught.value.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert s.store.list_backups(WALLET) == []

    run(body)


def test_the_api_token_guards_backups(sqlite_url: str) -> None:
    async def body() -> None:
        async with stack(sqlite_url, api_tokens=("good-token",)) as s:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(body)


def test_logs_name_the_calls_but_never_carry_the_blob(sqlite_url: str) -> None:
    out = io.StringIO()
    logs.configure("host", level=logging.DEBUG, stream=out)
    try:

        async def body() -> None:
            async with stack(sqlite_url) as s:
                await keygen(s)
                await s.host.PutBackup(host_pb2.PutBackupRequest(backup=backup()))
                await s.host.GetBackup(get_request("bk-1"))
                await s.host.ListBackups(host_pb2.ListBackupsRequest(wallet_id=WALLET))

        run(body)
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    events = [json.loads(line) for line in text.splitlines()]
    finished = [(e["method"], e["code"]) for e in events if e["event"] == "rpc finished"]
    assert finished[1:] == [("PutBackup", "OK"), ("GetBackup", "OK"), ("ListBackups", "OK")]
    stored = [e for e in events if e["event"] == "backup stored"]
    assert [(e["wallet_id"], e["backup_id"], e["blob_bytes"]) for e in stored] == [
        (WALLET, "bk-1", len(BLOB))
    ]
    for form in (CANARY, CANARY.hex().encode(), base64.b64encode(CANARY)):
        assert form.decode() not in text
